//! Reading Sailthru data-exporter zip archives.
//!
//! Planning ([`scan_archive`]) finds each data member `<table>.<YYYYMMDD>.json`, its data
//! offset, compressed size and compression, and counts its lines by decompressing it, so a
//! member can be split into line ranges ([`Slice`]). The central directory is read with the
//! `zip` crate; when it is missing (a truncated or damaged download) the local headers are
//! walked in order instead ([`scan_local_headers`]), deflate streams being decompressed to
//! find where each member ends (macOS archives carry their sizes in data descriptors).
//!
//! Fetching ([`read_slice`]) reads only one member's bytes with a ranged GET, decompresses
//! them as a stream and hands over the lines of one slice; memory stays bounded by a buffer
//! and the longest line, whatever the member's size.

use std::io::{self, Read};
use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use async_compression::tokio::bufread::DeflateDecoder;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use serde_json::json;
use sluice_contracts::{Compression, FileSlice, RejectedRecord};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, BufReader, ReadBuf,
};
use tokio_util::io::StreamReader;

use super::records::Member;
use super::timestamps::compact_date;

/// How a member name is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberName {
    /// Directories and macOS resource forks (`__MACOSX/…`): not data, skipped (with a
    /// warning naming the member, except for directories).
    Junk,
    /// `<table>.<YYYYMMDD>.json`: the table and the export date (`YYYY-MM-DD`).
    Data {
        /// The table part of the name (`message_blast`); may be unknown to the connector.
        table: String,
        /// The export date, `YYYY-MM-DD`.
        date: String,
    },
    /// Anything else: skipped with a warning.
    Other,
}

/// Classifies a member name. Only the last path component is matched, so
/// `export/blast.20160401.json` is a `blast` member too.
pub fn classify_member(name: &str) -> MemberName {
    if name.ends_with('/') || name.starts_with("__MACOSX/") || name.contains("/__MACOSX/") {
        return MemberName::Junk;
    }
    let base = name.rsplit('/').next().unwrap_or(name);
    if base.starts_with("._") {
        return MemberName::Junk;
    }
    let Some(stem) = base.strip_suffix(".json") else {
        return MemberName::Other;
    };
    let Some((table, compact)) = stem.rsplit_once('.') else {
        return MemberName::Other;
    };
    let table_ok = !table.is_empty()
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match compact_date(compact) {
        Some(date) if table_ok => MemberName::Data {
            table: table.to_string(),
            date: date.format("%Y-%m-%d").to_string(),
        },
        _ => MemberName::Other,
    }
}

/// A line range of a member: first line (1-based) and number of lines, blank ones included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// First line, 1-based.
    pub first_line: u64,
    /// Lines in the slice.
    pub line_count: u64,
}

/// Counts the lines of a member as its bytes stream by, and cuts them into slices of at most
/// `page_size` non-blank lines (blank lines stay with the slice before them).
#[derive(Debug)]
pub struct LineCounter {
    page_size: u64,
    lines: u64,
    nonblank_total: u64,
    current_len: u64,
    current_nonblank: bool,
    slice_start: u64,
    slice_nonblank: u64,
    slices: Vec<Slice>,
}

impl LineCounter {
    /// A counter cutting slices of at most `page_size` (≥ 1) non-blank lines.
    pub fn new(page_size: u64) -> Self {
        Self {
            page_size: page_size.max(1),
            lines: 0,
            nonblank_total: 0,
            current_len: 0,
            current_nonblank: false,
            slice_start: 1,
            slice_nonblank: 0,
            slices: Vec::new(),
        }
    }

    /// Feeds the next decompressed bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.end_line();
            } else {
                self.current_len += 1;
                if !b.is_ascii_whitespace() {
                    self.current_nonblank = true;
                }
            }
        }
    }

    fn end_line(&mut self) {
        let line = self.lines + 1;
        if self.current_nonblank {
            if self.slice_nonblank == self.page_size {
                self.slices.push(Slice {
                    first_line: self.slice_start,
                    line_count: line - self.slice_start,
                });
                self.slice_start = line;
                self.slice_nonblank = 0;
            }
            self.slice_nonblank += 1;
            self.nonblank_total += 1;
        }
        self.lines = line;
        self.current_len = 0;
        self.current_nonblank = false;
    }

    /// Lines completed so far (ended by a newline).
    pub fn complete_lines(&self) -> u64 {
        self.lines
    }

    /// Ends the member. When `complete`, a last line without newline counts; otherwise (a
    /// member cut short) the partial line is dropped. Returns the slices and the line count.
    pub fn finish(mut self, complete: bool) -> (Vec<Slice>, u64, u64) {
        if complete && self.current_len > 0 {
            self.end_line();
        }
        if self.slice_nonblank > 0 {
            self.slices.push(Slice {
                first_line: self.slice_start,
                line_count: self.lines - self.slice_start + 1,
            });
        }
        (self.slices, self.lines, self.nonblank_total)
    }
}

/// One data member found in the archive, with its slices.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberPlan {
    /// The member's name in the archive.
    pub name: String,
    /// The member's table.
    pub member: Member,
    /// The export date from the name, `YYYY-MM-DD`.
    pub date: String,
    /// Byte offset of the member's compressed data in the archive.
    pub data_offset: u64,
    /// Compressed length; `None` for a member cut short by the end of the archive.
    pub compressed_size: Option<u64>,
    /// Stored or deflate.
    pub compression: Compression,
    /// Line ranges of at most `page_size` non-blank lines.
    pub slices: Vec<Slice>,
    /// Lines in the member (complete lines only for a member cut short).
    pub lines: u64,
    /// Non-blank lines (records) in the member.
    pub records: u64,
}

/// What scanning an archive found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// The data members, in archive order.
    pub members: Vec<MemberPlan>,
    /// Members skipped on purpose (unexpected names).
    pub warnings: Vec<String>,
    /// Members that could not be planned, or only partly (unknown tables, unsupported
    /// compression, truncation).
    pub rejected: Vec<RejectedRecord>,
    /// True when the central directory was unreadable and local headers were walked.
    pub recovered: bool,
}

fn rejected(member: &str, error: String) -> RejectedRecord {
    RejectedRecord {
        source: member.to_string(),
        table: None,
        error,
        raw: json!({ "member": member }),
    }
}

/// Why an archive could not be scanned at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// No zip structure could be read (neither a central directory nor a first local header).
    #[error("not a readable zip archive: {0}")]
    NotZip(String),
    /// Reading the file failed.
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
}

/// What a name check decided for one member.
enum Decision {
    Plan(Member, String),
    Skip,
}

fn decide(name: &str, result: &mut ScanResult) -> Decision {
    match classify_member(name) {
        MemberName::Junk => {
            // Directories are structure, not input; anything else skipped is named.
            if !name.ends_with('/') {
                result.warnings.push(format!(
                    "skipped member '{name}': macOS metadata (__MACOSX/ or ._ resource fork), not data"
                ));
            }
            Decision::Skip
        }
        MemberName::Other => {
            result.warnings.push(format!(
                "skipped member '{name}': its name does not match <table>.<YYYYMMDD>.json"
            ));
            Decision::Skip
        }
        MemberName::Data { table, date } => match Member::from_name(&table) {
            Some(member) => Decision::Plan(member, date),
            None => {
                result.rejected.push(rejected(
                    name,
                    format!(
                        "unknown table '{table}' in member {name}; known tables: {}",
                        Member::NAMES.join(", ")
                    ),
                ));
                Decision::Skip
            }
        },
    }
}

/// Scans the archive at `path` (a local file) and plans its members.
///
/// # Errors
/// [`ScanError::NotZip`] when nothing of a zip archive is readable; [`ScanError::Io`] for
/// read failures of the file itself.
pub async fn scan_archive(path: &FsPath, page_size: u64) -> Result<ScanResult, ScanError> {
    let owned = path.to_path_buf();
    let central = tokio::task::spawn_blocking(move || scan_central_directory(&owned, page_size))
        .await
        .map_err(|e| ScanError::Io(io::Error::other(e)))??;
    match central {
        Some(result) => Ok(result),
        None => scan_local_headers(path, page_size).await,
    }
}

/// Plans the members listed by the central directory. `Ok(None)` when the archive has no
/// readable central directory.
fn scan_central_directory(path: &FsPath, page_size: u64) -> Result<Option<ScanResult>, ScanError> {
    let file = std::fs::File::open(path)?;
    let mut archive = match zip::ZipArchive::new(io::BufReader::new(file)) {
        Ok(archive) => archive,
        Err(e) => {
            tracing::info!(error = %e, "zip central directory unreadable; walking local headers");
            return Ok(None);
        }
    };
    let mut result = ScanResult::default();
    for index in 0..archive.len() {
        let (name, is_dir, method, encrypted) = match archive.by_index_raw(index) {
            Ok(entry) => (
                entry
                    .name()
                    .map(|n| n.into_owned())
                    .unwrap_or_else(|_| String::from_utf8_lossy(entry.name_raw()).into_owned()),
                entry.is_dir(),
                entry.compression(),
                entry.encrypted(),
            ),
            Err(e) => {
                result.rejected.push(rejected(
                    &format!("member #{index}"),
                    format!("member #{index} of the archive is unreadable: {e}"),
                ));
                continue;
            }
        };
        if is_dir {
            continue;
        }
        let Decision::Plan(member, date) = decide(&name, &mut result) else {
            continue;
        };
        let compression = match method {
            zip::CompressionMethod::Stored => Compression::Stored,
            zip::CompressionMethod::Deflated => Compression::Deflate,
            other => {
                result.rejected.push(rejected(
                    &name,
                    format!("member {name} uses compression method {other:?}; only stored and deflate are supported"),
                ));
                continue;
            }
        };
        if encrypted {
            result
                .rejected
                .push(rejected(&name, format!("member {name} is encrypted")));
            continue;
        }
        let mut file = match archive.by_index(index) {
            Ok(file) => file,
            Err(e) => {
                result
                    .rejected
                    .push(rejected(&name, format!("member {name} is unreadable: {e}")));
                continue;
            }
        };
        let data_offset = file.data_start().unwrap_or_default();
        let compressed_size = file.compressed_size();
        let mut counter = LineCounter::new(page_size);
        let mut buf = vec![0u8; 64 * 1024];
        let mut failure = None;
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => counter.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let complete = failure.is_none();
        let (slices, lines, records) = counter.finish(complete);
        if let Some(e) = failure {
            result.rejected.push(rejected(
                &name,
                format!("member {name} is unreadable after line {lines}: {e}"),
            ));
        }
        result.members.push(MemberPlan {
            name,
            member,
            date,
            data_offset,
            compressed_size: Some(compressed_size),
            compression,
            slices,
            lines,
            records,
        });
    }
    Ok(Some(result))
}

const LOCAL_HEADER: [u8; 4] = *b"PK\x03\x04";
const CENTRAL_HEADER: [u8; 4] = *b"PK\x01\x02";
const END_OF_CENTRAL: [u8; 4] = *b"PK\x05\x06";
const ZIP64_END: [u8; 4] = *b"PK\x06\x06";
const DATA_DESCRIPTOR: [u8; 4] = *b"PK\x07\x08";

/// Counts bytes read through it.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.count += (buf.filled().len() - before) as u64;
        }
        poll
    }
}

/// The outcome of decompressing one member while walking local headers.
struct Walked {
    /// Compressed bytes the member's data occupies, when its end was found.
    consumed: Option<u64>,
    counter: LineCounter,
}

/// Decompresses (or copies) the member data starting at `data_start`, feeding `counter`.
/// `size` is the compressed size when the local header knows it.
async fn walk_member(
    path: &FsPath,
    data_start: u64,
    size: Option<u64>,
    compression: Compression,
    mut counter: LineCounter,
) -> io::Result<Walked> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(io::SeekFrom::Start(data_start)).await?;
    let limited = file.take(size.unwrap_or(u64::MAX));
    let mut buf = vec![0u8; 64 * 1024];
    match compression {
        Compression::Stored => {
            let mut reader = Counting {
                inner: limited,
                count: 0,
            };
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                counter.feed(&buf[..n]);
            }
            let complete = size.is_some_and(|s| reader.count == s);
            Ok(Walked {
                consumed: complete.then_some(reader.count),
                counter,
            })
        }
        Compression::Deflate => {
            let buffered = BufReader::new(Counting {
                inner: limited,
                count: 0,
            });
            let mut decoder = DeflateDecoder::new(buffered);
            let clean = loop {
                match decoder.read(&mut buf).await {
                    Ok(0) => break true,
                    Ok(n) => counter.feed(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break false,
                }
            };
            let buffered = decoder.into_inner();
            let consumed = buffered.get_ref().count - buffered.buffer().len() as u64;
            Ok(Walked {
                consumed: clean.then_some(consumed),
                counter,
            })
        }
    }
}

async fn read_at(path: &FsPath, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(io::SeekFrom::Start(offset)).await?;
    let mut out = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut out).await?;
    Ok(out)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The zip64 compressed size from a local header's extra field, if present.
fn zip64_compressed_size(extra: &[u8], uncompressed_is_max: bool) -> Option<u64> {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let id = u16_at(extra, at);
        let len = usize::from(u16_at(extra, at + 2));
        let body = extra.get(at + 4..at + 4 + len)?;
        if id == 0x0001 {
            // Local zip64 extra: uncompressed size then compressed size, each 8 bytes,
            // each present only when the header field is 0xFFFFFFFF.
            let offset = if uncompressed_is_max { 8 } else { 0 };
            return (body.len() >= offset + 8).then(|| u64_at(body, offset));
        }
        at += 4 + len;
    }
    None
}

/// Plans an archive without a readable central directory by walking its local headers in
/// order (a truncated download). Complete members are planned in full; a member cut short
/// is planned up to its last complete line and reported in `rejected`.
///
/// # Errors
/// [`ScanError::NotZip`] when not even the first local header is readable.
pub async fn scan_local_headers(path: &FsPath, page_size: u64) -> Result<ScanResult, ScanError> {
    let archive_len = tokio::fs::metadata(path).await?.len();
    let mut result = ScanResult {
        recovered: true,
        ..ScanResult::default()
    };
    let mut pos = 0u64;
    let mut headers = 0usize;
    loop {
        let header = read_at(path, pos, 30).await?;
        if header.len() < 4 {
            break;
        }
        let signature: [u8; 4] = [header[0], header[1], header[2], header[3]];
        if signature == CENTRAL_HEADER || signature == END_OF_CENTRAL || signature == ZIP64_END {
            break;
        }
        if signature != LOCAL_HEADER {
            if headers == 0 {
                return Err(ScanError::NotZip(
                    "no zip local file header at byte 0".into(),
                ));
            }
            result.warnings.push(format!(
                "stopped reading the archive at byte {pos}: no zip header there (damaged archive)"
            ));
            break;
        }
        if header.len() < 30 {
            result.warnings.push(format!(
                "the archive ends inside a member header at byte {pos} (archive ends at byte {archive_len})"
            ));
            break;
        }
        headers += 1;
        let flags = u16_at(&header, 6);
        let method = u16_at(&header, 8);
        let mut size = u64::from(u32_at(&header, 18));
        let uncompressed = u32_at(&header, 22);
        let name_len = usize::from(u16_at(&header, 26));
        let extra_len = usize::from(u16_at(&header, 28));
        let names = read_at(path, pos + 30, name_len + extra_len).await?;
        if names.len() < name_len + extra_len {
            result.warnings.push(format!(
                "the archive ends inside a member header at byte {pos} (archive ends at byte {archive_len})"
            ));
            break;
        }
        let name = String::from_utf8_lossy(&names[..name_len]).into_owned();
        if size == u64::from(u32::MAX)
            && let Some(big) = zip64_compressed_size(&names[name_len..], uncompressed == u32::MAX)
        {
            size = big;
        }
        let data_start = pos + 30 + (name_len + extra_len) as u64;
        let uses_descriptor = flags & 0x0008 != 0;
        let known_size = (!uses_descriptor).then_some(size);
        let compression = match method {
            0 => Compression::Stored,
            8 => Compression::Deflate,
            other => {
                // Skippable only when the size is known.
                if let MemberName::Data { .. } = classify_member(&name) {
                    result.rejected.push(rejected(
                        &name,
                        format!("member {name} uses compression method {other}; only stored and deflate are supported"),
                    ));
                }
                match known_size {
                    Some(s) => {
                        pos = data_start + s;
                        continue;
                    }
                    None => {
                        result.warnings.push(format!(
                            "stopped reading the archive at member {name}: its end cannot be found"
                        ));
                        break;
                    }
                }
            }
        };
        if flags & 0x0001 != 0 {
            result
                .rejected
                .push(rejected(&name, format!("member {name} is encrypted")));
            match known_size {
                Some(s) => {
                    pos = data_start + s;
                    continue;
                }
                None => break,
            }
        }
        if compression == Compression::Stored && known_size.is_none() {
            if !name.ends_with('/') {
                result.rejected.push(rejected(
                    &name,
                    format!("member {name} is stored without sizes in its header; its end cannot be found in a damaged archive"),
                ));
                break;
            }
            // A directory entry: no data; its descriptor (if any) follows.
            pos = next_header(path, data_start).await?.unwrap_or(archive_len);
            if pos >= archive_len {
                break;
            }
            continue;
        }
        let decision = decide(&name, &mut result);
        let walked = walk_member(
            path,
            data_start,
            known_size,
            compression,
            LineCounter::new(page_size),
        )
        .await?;
        let complete = walked.consumed.is_some();
        if let Decision::Plan(member, date) = decision {
            let (slices, lines, records) = walked.counter.finish(complete);
            if !complete {
                let error = if data_start + known_size.unwrap_or(0) <= archive_len
                    && known_size.is_some()
                {
                    format!("member {name} is corrupt after line {lines}")
                } else {
                    format!(
                        "member {name} is truncated after line {lines} (archive ends at byte {archive_len})"
                    )
                };
                result.rejected.push(rejected(&name, error));
            }
            result.members.push(MemberPlan {
                name: name.clone(),
                member,
                date,
                data_offset: data_start,
                compressed_size: walked.consumed,
                compression,
                slices,
                lines,
                records,
            });
        }
        let Some(consumed) = walked.consumed else {
            break;
        };
        let data_end = data_start + consumed;
        pos = if uses_descriptor {
            match next_header(path, data_end).await? {
                Some(next) => next,
                None => break,
            }
        } else {
            data_end
        };
    }
    if headers == 0 {
        return Err(ScanError::NotZip(
            "no zip local file header at byte 0".into(),
        ));
    }
    Ok(result)
}

/// After a member's data that is followed by a data descriptor (12, 16, 20 or 24 bytes),
/// finds where the next header starts. `None` at the end of the archive or when no header
/// follows.
async fn next_header(path: &FsPath, data_end: u64) -> io::Result<Option<u64>> {
    let window = read_at(path, data_end, 28).await?;
    let starts_descriptor = window.len() >= 4 && window[..4] == DATA_DESCRIPTOR;
    let candidates: &[usize] = if starts_descriptor {
        &[16, 24]
    } else {
        &[12, 20, 0]
    };
    for &skip in candidates {
        if let Some(sig) = window.get(skip..skip + 4)
            && (sig == LOCAL_HEADER
                || sig == CENTRAL_HEADER
                || sig == END_OF_CENTRAL
                || sig == ZIP64_END)
        {
            return Ok(Some(data_end + skip as u64));
        }
    }
    Ok(None)
}

/// A failure while reading one slice.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    /// The store could not be read (network, throttling): worth retrying.
    #[error("reading the archive failed after line {line}: {source}")]
    Read {
        /// The last line read.
        line: u64,
        /// The store's error.
        source: io::Error,
    },
    /// The member's data does not decompress, or ends before the slice does.
    #[error("{0}")]
    Corrupt(String),
}

/// Where a slice's bytes are read from.
pub fn slice_range(slice: &FileSlice) -> GetRange {
    match slice.compressed_size {
        Some(size) => GetRange::Bounded(slice.data_offset..slice.data_offset + size),
        None => GetRange::Offset(slice.data_offset),
    }
}

/// Marks errors that came from the store (as opposed to the decompressor).
#[derive(Debug)]
struct StoreError(object_store::Error);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StoreError {}

/// Opens the slice's member data with a ranged GET and returns the decompressed stream.
///
/// # Errors
/// The store's error (not found, network).
pub async fn open_member(
    store: &dyn ObjectStore,
    path: &Path,
    slice: &FileSlice,
) -> Result<Box<dyn AsyncBufRead + Send + Unpin>, object_store::Error> {
    if slice.compressed_size == Some(0) {
        return Ok(Box::new(tokio::io::empty()));
    }
    let options = GetOptions {
        range: Some(slice_range(slice)),
        if_match: slice.version.clone(),
        ..GetOptions::default()
    };
    let result = store.get_opts(path, options).await?;
    let stream = result
        .into_stream()
        .map_err(|e| io::Error::other(StoreError(e)));
    let raw = StreamReader::new(stream);
    Ok(match slice.compression {
        Compression::Stored => Box::new(raw),
        Compression::Deflate => Box::new(BufReader::with_capacity(
            64 * 1024,
            DeflateDecoder::new(raw),
        )),
    })
}

fn is_store_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<StoreError>())
}

/// Reads the lines `first_line .. first_line + line_count` of a decompressed member and calls
/// `on_line(line_number, bytes)` for each (newline and a trailing `\r` removed).
///
/// # Errors
/// [`SliceError::Read`] for store failures (transient), [`SliceError::Corrupt`] when the
/// data does not decompress or ends before the slice does.
pub async fn read_lines<R, F>(
    mut reader: R,
    slice: &FileSlice,
    mut on_line: F,
) -> Result<(), SliceError>
where
    R: AsyncBufRead + Unpin,
    F: FnMut(u64, &[u8]),
{
    let member = &slice.member;
    let last = slice.first_line + slice.line_count.saturating_sub(1);
    let mut line = 0u64;
    let fail = |line: u64, e: io::Error| {
        if is_store_error(&e) {
            SliceError::Read { line, source: e }
        } else {
            SliceError::Corrupt(format!(
                "member {member} is unreadable after line {line}: {e}"
            ))
        }
    };
    // Skip the lines before the slice without keeping them.
    while line + 1 < slice.first_line {
        let available = reader.fill_buf().await.map_err(|e| fail(line, e))?;
        if available.is_empty() {
            return Err(SliceError::Corrupt(format!(
                "member {member} ends at line {line}, before the slice's first line {}",
                slice.first_line
            )));
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                line += 1;
            }
            None => {
                let n = available.len();
                reader.consume(n);
            }
        }
    }
    let mut buf = Vec::new();
    while line < last {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| fail(line, e))?;
        if n == 0 {
            return Err(SliceError::Corrupt(format!(
                "member {member} ends at line {line}; the slice expects lines {}..={last}",
                slice.first_line
            )));
        }
        line += 1;
        let mut text = &buf[..];
        if let Some(stripped) = text.strip_suffix(b"\n") {
            text = stripped;
        }
        if let Some(stripped) = text.strip_suffix(b"\r") {
            text = stripped;
        }
        on_line(line, text);
    }
    Ok(())
}

/// A local copy of a remote archive, deleted when dropped.
pub struct LocalCopy {
    /// The file to scan.
    pub path: PathBuf,
    /// The archive's ETag as the store reported it, when it has one.
    pub e_tag: Option<String>,
    _temp: Option<tempfile::TempPath>,
}

impl LocalCopy {
    /// A file that is already local (not deleted on drop), with its store ETag.
    pub fn existing(path: PathBuf, e_tag: Option<String>) -> Self {
        Self {
            path,
            e_tag,
            _temp: None,
        }
    }

    /// Streams the object at `path` of `store` into a temporary file, chunk by chunk.
    ///
    /// # Errors
    /// The store's error, or an I/O error writing the temporary file.
    pub async fn download(store: &dyn ObjectStore, path: &Path) -> Result<Self, DownloadError> {
        use tokio::io::AsyncWriteExt;
        let temp = tempfile::Builder::new()
            .prefix("sluice-sailthru-")
            .suffix(".zip")
            .tempfile()
            .map_err(DownloadError::Io)?
            .into_temp_path();
        let mut file = tokio::fs::File::create(&temp)
            .await
            .map_err(DownloadError::Io)?;
        let result = store.get(path).await.map_err(DownloadError::Store)?;
        let e_tag = result.meta.e_tag.clone();
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.try_next().await.map_err(DownloadError::Store)? {
            file.write_all(&chunk).await.map_err(DownloadError::Io)?;
        }
        file.flush().await.map_err(DownloadError::Io)?;
        Ok(Self {
            path: temp.to_path_buf(),
            e_tag,
            _temp: Some(temp),
        })
    }
}

/// Why a remote archive could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The store failed.
    #[error(transparent)]
    Store(object_store::Error),
    /// Writing the temporary file failed.
    #[error("writing a temporary copy: {0}")]
    Io(io::Error),
}

use object_store::ObjectStoreExt as _;
