//! Generated Sailthru data-exporter archives.
//!
//! [`write_export`] streams a zip shaped like the real export
//! (`tests/fixtures/sailthru/sailthru_data-exporter_samples.zip`):
//!
//! | entry | content |
//! |---|---|
//! | `blast.<YYYYMMDD>.json` | [`ExportSpec::blasts`] lines `{ "name" : …, "day" : "YYYY-MM-DD", "id" : n }` |
//! | `__MACOSX/` | empty directory entry |
//! | `__MACOSX/._<member>` | 222-byte AppleDouble junk after every member (copied from the sample) |
//! | `message_blast.<YYYYMMDD>.json` | [`ExportSpec::messages`] lines |
//! | `message_transactional.<YYYYMMDD>.json` | [`ExportSpec::transactional`] lines |
//! | `profile.<YYYYMMDD>.json` | [`ExportSpec::profiles`] lines, then an extra empty line |
//!
//! Lines are Mongo-export style (`{ "k" : v, "k2" : v2 }`), every member ends with a newline.
//! Quirks kept from the sample: action times as `{ "$date" : epoch_ms }`; zone-less local
//! timestamps with milliseconds (`2016-03-31T08:00:03.016`), seconds
//! (`2014-06-09T11:57:26`, also whenever the milliseconds are zero) or minutes
//! (`2016-03-20T02:42`, some `last_pageview` and list sign-ups); `opens`/`clicks` present
//! only sometimes in message_blast, always (maybe `[]`) in message_transactional, clicks with
//! the same `ts` as an open; `null` device (for messages without actions), `message_revenue`,
//! `delivery_status`; profiles without `optout_reason`/`optout_time` keys and profiles
//! without `geo.zip`; `vars` of mixed JSON types (int, string, `""`, null, bool); keys that
//! differ only by case (`Group`/`group` vars, `Jess Delta Test`/`Jess delta test` lists).
//!
//! Local times are four hours behind the `$date` epoch times (US Eastern summer time);
//! sends happen on the day before the export date.
//!
//! Everything is a pure function of the [`ExportSpec`]: each record draws from its own
//! random stream keyed by (seed, member, index), so the same spec always gives the same
//! bytes (zip timestamps are fixed to the export date), and [`expected_counts`] plans the
//! same records without formatting them.
//!
//! Uniqueness (the loader's primary keys): blast ids are `6_364_286 + 1000·b + r` with
//! `r < 1000`; within a blast, message `j` goes to audience member `(rot_b + j) mod A` where
//! the audience `A ≥` the largest blast, so (blast_id, profile_id) pairs are unique; profile
//! and transactional ids are ObjectId-like (8 hex of creation time, then 16 hex of a
//! bijective mix of the index); the opens of one message have strictly increasing `ts`,
//! and so do its clicks, so no two actions of a message share (action, ts, url).

mod format;
mod rng;
mod tables;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Seek, Write};

use anyhow::Context as _;
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use format::{DAY_MS, Obj, Precision, put_date, put_null, put_str, put_ts, put_u64};
use rng::{Rng, Stream, mix64, stream_key};
use tables::*;

/// The largest `messages` a spec may ask for.
pub const MAX_MESSAGES: u64 = 50_000_000;

/// Destination tables whose row counts [`expected_counts`] reports, in its key order.
pub const TABLES: [&str; 12] = [
    "blast",
    "message_blast",
    "message_blast_action",
    "message_blast_flat",
    "message_transactional",
    "message_transactional_action",
    "message_transactional_flat",
    "profile",
    "profile_browser",
    "profile_geo",
    "profile_lists_signup",
    "profile_vars",
];

/// Local (zone-less) time plus this many milliseconds is epoch time.
const LOCAL_TO_EPOCH_MS: i64 = 4 * 3_600_000;
/// Compression level of the members: fast, since benchmarks generate gigabytes.
const DEFLATE_LEVEL: i64 = 1;
/// Flush the line buffer into the zip once it holds this many bytes.
const FLUSH_BYTES: usize = 1 << 17;

/// The AppleDouble (`__MACOSX/._*`) junk stored after each member, byte for byte the sample's.
const APPLE_DOUBLE: &[u8] =
    b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\x00\x00\x00\x09\x00\x00\x00\
2\x00\x00\x00\xac\x00\x00\x00\x02\x00\x00\x00\xde\x00\x00\x00\x00\x00\x00\x00\x00\
\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
\x00\x00\x00\x00\x00\x00\x00\x00\x00ATTR\x00\x00\x00\x00\x00\x00\x00\xde\x00\x00\x00\
\x98\x00\x00\x00F\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\
\x00\x00\x00\x98\x00\x00\x00F\x00\x00\x15com.apple.quarantine\x00q/0001;570e95ee;Goo\
gle\\x20Chrome;75C32397-3237-4293-85B6-DB7AA0648775\x00";

/// What to generate: one export archive.
///
/// Member sizes scale from `messages` (see the methods): blasts = max(1, messages / 500),
/// message_transactional = messages / 2, profiles = max(1, messages / 20).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExportSpec {
    /// Seed of all randomness; different seeds give different (unrelated) data.
    pub seed: u64,
    /// Number of message_blast records, `0..=`[`MAX_MESSAGES`].
    pub messages: u64,
    /// Export date, in member names as `YYYYMMDD`; messages are sent the day before.
    /// Years 1990..=2100.
    pub date: NaiveDate,
}

/// A spec parameter that is out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidParameter {
    /// The parameter's name: `seed`, `messages` or `date`.
    pub parameter: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for InvalidParameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid parameter `{}`: {}",
            self.parameter, self.message
        )
    }
}

impl std::error::Error for InvalidParameter {}

impl ExportSpec {
    /// Number of blasts: `max(1, messages / 500)`.
    pub fn blasts(&self) -> u64 {
        (self.messages / 500).max(1)
    }

    /// Number of message_transactional records: `messages / 2`.
    pub fn transactional(&self) -> u64 {
        self.messages / 2
    }

    /// Number of profiles: `max(1, messages / 20)`.
    pub fn profiles(&self) -> u64 {
        (self.messages / 20).max(1)
    }

    /// The export date as `YYYYMMDD`.
    pub fn date_stamp(&self) -> String {
        self.date.format("%Y%m%d").to_string()
    }

    /// The archive's file name: `sailthru_export.<YYYYMMDD>.zip`.
    pub fn archive_name(&self) -> String {
        format!("sailthru_export.{}.zip", self.date_stamp())
    }

    /// The name of the member holding `table` (`blast`, `message_blast`,
    /// `message_transactional`, `profile`): `<table>.<YYYYMMDD>.json`.
    pub fn member_name(&self, table: &str) -> String {
        format!("{table}.{}.json", self.date_stamp())
    }

    /// Checks `messages <= MAX_MESSAGES` and that the date's year is in 1990..=2100.
    pub fn validate(&self) -> Result<(), InvalidParameter> {
        if self.messages > MAX_MESSAGES {
            return Err(InvalidParameter {
                parameter: "messages",
                message: format!("{} is more than the maximum {MAX_MESSAGES}", self.messages),
            });
        }
        if !(1990..=2100).contains(&self.date.year()) {
            return Err(InvalidParameter {
                parameter: "date",
                message: format!("{} is outside the years 1990..=2100", self.date),
            });
        }
        Ok(())
    }
}

/// Parses a `YYYYMMDD` date stamp.
pub fn parse_date_stamp(stamp: &str) -> Result<NaiveDate, InvalidParameter> {
    let invalid = || InvalidParameter {
        parameter: "date",
        message: format!("{stamp:?} is not a date in the form YYYYMMDD"),
    };
    if stamp.len() != 8 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    NaiveDate::parse_from_str(stamp, "%Y%m%d").map_err(|_| invalid())
}

/// Writes the archive for `spec` to `out`, streaming (memory use does not grow with the
/// size), deflate level 1. Same spec, same bytes.
pub fn write_export(spec: &ExportSpec, out: impl Write + Seek) -> anyhow::Result<()> {
    write_export_with_counts(spec, out).map(|_| ())
}

/// [`write_export`], also returning [`expected_counts`] (computed from the same records).
pub fn write_export_with_counts(
    spec: &ExportSpec,
    out: impl Write + Seek,
) -> anyhow::Result<BTreeMap<String, u64>> {
    spec.validate()?;
    let mut emitter = Emitter {
        zip: Some(ZipWriter::new(out)),
        buf: Vec::with_capacity(FLUSH_BYTES + 16 * 1024),
        spec,
        wrote_dir: false,
    };
    let counts = generate(spec, &mut emitter)?;
    if let Some(zip) = emitter.zip.take() {
        let mut out = zip.finish().context("finishing the zip archive")?;
        out.flush().context("flushing the zip archive")?;
    }
    Ok(counts.into_map())
}

/// Exact row counts per destination table (keys: [`TABLES`]) after an idempotent load of the
/// archive for `spec`: distinct primary keys, `*_flat` = actions + messages without any.
/// Plans every record like [`write_export`] but formats nothing (roughly 10× faster).
pub fn expected_counts(spec: &ExportSpec) -> BTreeMap<String, u64> {
    let mut emitter: Emitter<'_, std::io::Cursor<Vec<u8>>> = Emitter {
        zip: None,
        buf: Vec::new(),
        spec,
        wrote_dir: false,
    };
    match generate(spec, &mut emitter) {
        Ok(counts) => counts.into_map(),
        // Without a zip writer there is no I/O, so generation cannot fail.
        Err(_) => Counts::default().into_map(),
    }
}

/// Row counts, accumulated while generating.
#[derive(Default, Debug)]
struct Counts {
    blast: u64,
    message_blast: u64,
    message_blast_action: u64,
    message_blast_without_action: u64,
    message_transactional: u64,
    message_transactional_action: u64,
    message_transactional_without_action: u64,
    profile: u64,
    profile_geo: u64,
    profile_browser: u64,
    profile_lists_signup: u64,
    profile_vars: u64,
}

impl Counts {
    fn into_map(self) -> BTreeMap<String, u64> {
        [
            ("blast", self.blast),
            ("message_blast", self.message_blast),
            ("message_blast_action", self.message_blast_action),
            (
                "message_blast_flat",
                self.message_blast_action + self.message_blast_without_action,
            ),
            ("message_transactional", self.message_transactional),
            (
                "message_transactional_action",
                self.message_transactional_action,
            ),
            (
                "message_transactional_flat",
                self.message_transactional_action + self.message_transactional_without_action,
            ),
            ("profile", self.profile),
            ("profile_browser", self.profile_browser),
            ("profile_geo", self.profile_geo),
            ("profile_lists_signup", self.profile_lists_signup),
            ("profile_vars", self.profile_vars),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Where generated lines go: a zip writer, or nowhere when only counting.
struct Emitter<'s, W: Write + Seek> {
    zip: Option<ZipWriter<W>>,
    buf: Vec<u8>,
    spec: &'s ExportSpec,
    wrote_dir: bool,
}

impl<W: Write + Seek> Emitter<'_, W> {
    /// Starts member `table`; `rows × max_line` bounds its size (for the zip64 decision).
    fn start_member(&mut self, table: &str, rows: u64, max_line: u64) -> anyhow::Result<()> {
        let spec = self.spec;
        let Some(zip) = self.zip.as_mut() else {
            return Ok(());
        };
        let name = spec.member_name(table);
        let large = rows.saturating_mul(max_line) >= u64::from(u32::MAX);
        let options = file_options(spec)?
            .unix_permissions(0o755)
            .large_file(large);
        zip.start_file(name.as_str(), options)
            .with_context(|| format!("starting zip member {name}"))
    }

    /// Formats one line with `f` (only when writing) and terminates it.
    #[inline]
    fn line(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> anyhow::Result<()> {
        if let Some(zip) = self.zip.as_mut() {
            f(&mut self.buf);
            self.buf.push(b'\n');
            if self.buf.len() >= FLUSH_BYTES {
                zip.write_all(&self.buf).context("writing a zip member")?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Ends the current member (`trailer` is appended first), then adds its `__MACOSX` junk.
    fn end_member(&mut self, table: &str, trailer: &[u8]) -> anyhow::Result<()> {
        let spec = self.spec;
        let Some(zip) = self.zip.as_mut() else {
            return Ok(());
        };
        self.buf.extend_from_slice(trailer);
        zip.write_all(&self.buf).context("writing a zip member")?;
        self.buf.clear();
        let options = file_options(spec)?.unix_permissions(0o644);
        if !self.wrote_dir {
            zip.add_directory(
                "__MACOSX/",
                options.compression_method(CompressionMethod::Stored),
            )
            .context("adding the __MACOSX/ directory entry")?;
            self.wrote_dir = true;
        }
        zip.start_file(format!("__MACOSX/._{}", spec.member_name(table)), options)
            .context("starting a __MACOSX entry")?;
        zip.write_all(APPLE_DOUBLE)
            .context("writing a __MACOSX entry")?;
        Ok(())
    }
}

/// Options shared by all entries: deflate level 1, modified at 06:00 of the export date.
fn file_options(spec: &ExportSpec) -> anyhow::Result<SimpleFileOptions> {
    let d = spec.date;
    let year = u16::try_from(d.year()).context("export year out of range")?;
    let mtime = zip::DateTime::from_date_and_time(year, d.month() as u8, d.day() as u8, 6, 0, 0)
        .map_err(|_| anyhow::anyhow!("export date {d} cannot be a zip timestamp"))?;
    Ok(SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(DEFLATE_LEVEL))
        .last_modified_time(mtime))
}

/// Sizes and time anchors derived from a spec.
struct Ctx {
    seed: u64,
    messages: u64,
    blasts: u64,
    transactional: u64,
    profiles: u64,
    /// Distinct profile indices messages are addressed to: at least the largest blast, so
    /// one blast never reaches a profile twice. Indices below `profiles` have a profile line.
    audience: u64,
    /// Local ms of 00:00 on the send day (the day before the export date).
    send_day_ms: i64,
    /// Local ms of 00:00 on the export date.
    export_day_ms: i64,
    profile_key: u64,
    transactional_key: u64,
}

impl Ctx {
    fn new(spec: &ExportSpec) -> Self {
        let blasts = spec.blasts();
        let largest_blast = spec.messages.div_ceil(blasts);
        let export_days = i64::from(spec.date.num_days_from_ce()) - 719_163;
        Ctx {
            seed: spec.seed,
            messages: spec.messages,
            blasts,
            transactional: spec.transactional(),
            profiles: spec.profiles(),
            audience: spec.profiles().max(largest_blast).max(1),
            send_day_ms: (export_days - 1) * DAY_MS,
            export_day_ms: export_days * DAY_MS,
            profile_key: stream_key(spec.seed, Stream::ProfileIdKey),
            transactional_key: stream_key(spec.seed, Stream::TransactionalIdKey),
        }
    }

    /// First message index of blast `b`.
    fn blast_start(&self, b: u64) -> u64 {
        (u128::from(b) * u128::from(self.messages) / u128::from(self.blasts)) as u64
    }

    /// Local ms at which audience member `k` was created (also the time in its id).
    fn profile_created_ms(&self, k: u64) -> i64 {
        let mut r = Rng::for_record(self.seed, Stream::ProfileId, k);
        let span_s = 730 * 86_400 - 2 * 86_400;
        let secs = self.export_day_ms / 1000 - 730 * 86_400 + r.below(span_s) as i64;
        secs * 1000
    }

    /// The 24-hex id of audience member `k`.
    fn profile_id(&self, k: u64) -> [u8; 24] {
        object_id(
            self.profile_created_ms(k) + LOCAL_TO_EPOCH_MS,
            mix64(k ^ self.profile_key),
        )
    }
}

/// An ObjectId-like 24-hex id: 8 hex of the epoch second, then 16 hex of `low`.
fn object_id(epoch_ms: i64, low: u64) -> [u8; 24] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let secs = epoch_ms.div_euclid(1000) as u32;
    let mut id = [0u8; 24];
    for (i, slot) in id[..8].iter_mut().enumerate() {
        *slot = HEX[((secs >> (28 - 4 * i)) & 15) as usize];
    }
    for (i, slot) in id[8..].iter_mut().enumerate() {
        *slot = HEX[((low >> (60 - 4 * i)) & 15) as usize];
    }
    id
}

fn id_str(id: &[u8; 24]) -> &str {
    // Hex digits are ASCII.
    std::str::from_utf8(id).unwrap_or("000000000000000000000000")
}

/// Generates every member into `emitter`, counting rows.
fn generate<W: Write + Seek>(
    spec: &ExportSpec,
    emitter: &mut Emitter<'_, W>,
) -> anyhow::Result<Counts> {
    let ctx = Ctx::new(spec);
    let mut counts = Counts::default();

    // blast
    emitter.start_member("blast", ctx.blasts, 400)?;
    for b in 0..ctx.blasts {
        let blast = plan_blast(&ctx, b);
        emitter.line(|buf| write_blast(buf, &ctx, &blast))?;
        counts.blast += 1;
    }
    emitter.end_member("blast", b"")?;

    // message_blast
    emitter.start_member("message_blast", ctx.messages, 1200)?;
    let mut plan = MessagePlan::default();
    for b in 0..ctx.blasts {
        let blast = plan_blast(&ctx, b);
        let (start, end) = (ctx.blast_start(b), ctx.blast_start(b + 1));
        for i in start..end {
            plan_message_blast(&ctx, &blast, i, i - start, &mut plan);
            emitter.line(|buf| write_message_blast(buf, &ctx, &blast, &plan))?;
            counts.message_blast += 1;
            let actions = plan.actions();
            counts.message_blast_action += actions;
            counts.message_blast_without_action += u64::from(actions == 0);
        }
    }
    emitter.end_member("message_blast", b"")?;

    // message_transactional
    emitter.start_member("message_transactional", ctx.transactional, 1200)?;
    for i in 0..ctx.transactional {
        plan_message_transactional(&ctx, i, &mut plan);
        emitter.line(|buf| write_message_transactional(buf, &ctx, i, &plan))?;
        counts.message_transactional += 1;
        let actions = plan.actions();
        counts.message_transactional_action += actions;
        counts.message_transactional_without_action += u64::from(actions == 0);
    }
    emitter.end_member("message_transactional", b"")?;

    // profile
    emitter.start_member("profile", ctx.profiles, 4000)?;
    let mut profile = ProfilePlan::default();
    for k in 0..ctx.profiles {
        plan_profile(&ctx, k, &mut profile);
        emitter.line(|buf| write_profile(buf, &profile))?;
        counts.profile += 1;
        counts.profile_geo += profile.geo_entries();
        counts.profile_browser += profile.browsers.len() as u64;
        counts.profile_lists_signup += profile.lists.len() as u64;
        counts.profile_vars += profile.vars.len() as u64;
    }
    // The sample's profile member ends with an extra empty line.
    emitter.end_member("profile", b"\n")?;
    Ok(counts)
}

// ---------------------------------------------------------------- blast

struct BlastPlan {
    id: u64,
    /// Local ms of the first send.
    start_ms: i64,
    /// Rotation of this blast's audience.
    rot: u64,
    title: usize,
    channel: usize,
    test: bool,
}

fn plan_blast(ctx: &Ctx, b: u64) -> BlastPlan {
    let mut r = Rng::for_record(ctx.seed, Stream::Blast, b);
    BlastPlan {
        id: 6_364_286 + b * 1000 + r.below(1000),
        start_ms: ctx.send_day_ms + 6 * 3_600_000 + r.below(14 * 3_600_000) as i64,
        rot: r.below(ctx.audience),
        title: r.pick(BLAST_TITLES.len()),
        channel: r.pick(BLAST_CHANNELS.len()),
        test: r.chance(1, 10),
    }
}

fn write_blast(buf: &mut Vec<u8>, ctx: &Ctx, blast: &BlastPlan) {
    let (_, month, day) = format::civil_from_days(ctx.send_day_ms / DAY_MS);
    let name = format!(
        "{}{} {month}/{day} - {}",
        if blast.test { "Test " } else { "" },
        BLAST_TITLES[blast.title],
        BLAST_CHANNELS[blast.channel]
    );
    let mut o = Obj::new(buf);
    put_str(o.key("name"), &name);
    let day_buf = o.key("day");
    // `"YYYY-MM-DDT00:00"`, cut to the date.
    put_ts(day_buf, ctx.send_day_ms, Precision::Minutes);
    day_buf.truncate(day_buf.len() - 7);
    day_buf.push(b'"');
    put_u64(o.key("id"), blast.id);
    o.end();
}

// ---------------------------------------------------------------- messages

/// One message_blast or message_transactional record, before formatting.
#[derive(Default)]
struct MessagePlan {
    profile_k: u64,
    send_ms: i64,
    /// Open times, epoch ms, strictly increasing.
    opens: Vec<i64>,
    /// (url index, epoch ms), strictly increasing times.
    clicks: Vec<(usize, i64)>,
    device: Option<usize>,
    message_id: u64,
    template: usize,
}

impl MessagePlan {
    fn actions(&self) -> u64 {
        (self.opens.len() + self.clicks.len()) as u64
    }

    /// Draws `opens` opens and `clicks` clicks after the send, and the device.
    fn fill_actions(&mut self, r: &mut Rng, opens: u64, clicks: u64) {
        self.opens.clear();
        self.clicks.clear();
        let sent_s = (self.send_ms + LOCAL_TO_EPOCH_MS).div_euclid(1000);
        let mut t = sent_s + 30 + r.below(36 * 3600) as i64;
        for _ in 0..opens {
            self.opens.push(t * 1000);
            t += 1 + r.below(3 * 3600) as i64;
        }
        let mut t = match self.opens.first() {
            // As in the sample: a click in the same second as the first open.
            Some(&first) if r.chance(1, 2) => first / 1000,
            _ => sent_s + 30 + r.below(36 * 3600) as i64,
        };
        for _ in 0..clicks {
            self.clicks.push((r.pick(URLS.len()), t * 1000));
            t += 1 + r.below(600) as i64;
        }
        self.device = (opens + clicks > 0).then(|| r.pick(DEVICES.len()));
    }
}

fn plan_message_blast(ctx: &Ctx, blast: &BlastPlan, i: u64, j: u64, p: &mut MessagePlan) {
    let mut r = Rng::for_record(ctx.seed, Stream::MessageBlast, i);
    p.profile_k = (blast.rot + j) % ctx.audience;
    p.send_ms = blast.start_ms + (j * 7) as i64 + r.below(1500) as i64;
    p.message_id = j * 3 + 1 + r.below(3);
    let (opens, clicks) = match r.below(100) {
        0..68 => (0, 0),
        68..71 => (0, r.range(1, 2)),
        _ => {
            let opens = r.range(1, 3);
            let clicks = if r.chance(1, 3) { r.range(1, 3) } else { 0 };
            (opens, clicks)
        }
    };
    p.fill_actions(&mut r, opens, clicks);
}

fn plan_message_transactional(ctx: &Ctx, i: u64, p: &mut MessagePlan) {
    let mut r = Rng::for_record(ctx.seed, Stream::MessageTransactional, i);
    let n = u128::from(ctx.transactional.max(1));
    let slot = (DAY_MS as u128 / n).max(1) as u64;
    p.send_ms =
        ctx.send_day_ms + (u128::from(i) * DAY_MS as u128 / n) as i64 + r.below(slot) as i64;
    p.profile_k = r.below(ctx.audience);
    p.template = r.pick(TEMPLATES.len());
    let (opens, clicks) = match r.below(100) {
        0..70 => (0, 0),
        70..75 => (0, 1),
        _ => {
            let opens = r.range(1, 2);
            let clicks = if r.chance(1, 2) { r.range(1, 2) } else { 0 };
            (opens, clicks)
        }
    };
    p.fill_actions(&mut r, opens, clicks);
}

fn put_opens(buf: &mut Vec<u8>, opens: &[i64]) {
    buf.push(b'[');
    for (n, &ts) in opens.iter().enumerate() {
        if n > 0 {
            buf.extend_from_slice(b", ");
        }
        let mut o = Obj::new(buf);
        put_date(o.key("ts"), ts);
        o.end();
    }
    buf.push(b']');
}

fn put_clicks(buf: &mut Vec<u8>, clicks: &[(usize, i64)]) {
    buf.push(b'[');
    for (n, &(url, ts)) in clicks.iter().enumerate() {
        if n > 0 {
            buf.extend_from_slice(b", ");
        }
        let mut o = Obj::new(buf);
        put_str(o.key("url"), URLS[url]);
        put_date(o.key("ts"), ts);
        o.end();
    }
    buf.push(b']');
}

fn put_device(buf: &mut Vec<u8>, device: Option<usize>) {
    match device {
        Some(d) => put_str(buf, DEVICES[d]),
        None => put_null(buf),
    }
}

fn write_message_blast(buf: &mut Vec<u8>, ctx: &Ctx, blast: &BlastPlan, p: &MessagePlan) {
    let mut o = Obj::new(buf);
    put_str(o.key("profile_id"), id_str(&ctx.profile_id(p.profile_k)));
    put_ts(o.key("send_time"), p.send_ms, Precision::Millis);
    if !p.opens.is_empty() {
        put_opens(o.key("opens"), &p.opens);
    }
    if !p.clicks.is_empty() {
        put_clicks(o.key("clicks"), &p.clicks);
    }
    put_u64(o.key("blast_id"), blast.id);
    put_u64(o.key("message_id"), p.message_id);
    put_device(o.key("device"), p.device);
    put_null(o.key("message_revenue"));
    put_null(o.key("delivery_status"));
    o.end();
}

fn write_message_transactional(buf: &mut Vec<u8>, ctx: &Ctx, i: u64, p: &MessagePlan) {
    let mut o = Obj::new(buf);
    put_str(o.key("profile_id"), id_str(&ctx.profile_id(p.profile_k)));
    put_str(o.key("template"), TEMPLATES[p.template]);
    put_ts(o.key("send_time"), p.send_ms, Precision::Millis);
    put_clicks(o.key("clicks"), &p.clicks);
    put_opens(o.key("opens"), &p.opens);
    put_device(o.key("device"), p.device);
    put_null(o.key("message_revenue"));
    put_null(o.key("delivery_status"));
    let id = object_id(
        p.send_ms + LOCAL_TO_EPOCH_MS,
        mix64(i ^ ctx.transactional_key),
    );
    put_str(o.key("id"), id_str(&id));
    o.end();
}

// ---------------------------------------------------------------- profile

#[derive(Clone, Copy)]
enum VarValue {
    Null,
    Bool(bool),
    Int(u64),
    Str(&'static str),
}

#[derive(Default)]
enum Optout {
    #[default]
    Absent,
    Null,
    Set {
        reason: usize,
        local_ms: i64,
    },
}

/// One profile record, before formatting.
#[derive(Default)]
struct ProfilePlan {
    k: u64,
    id: [u8; 24],
    create_ms: i64,
    signup_ms: i64,
    email: (usize, usize),
    /// (index into BROWSERS, count)
    browsers: Vec<(usize, u64)>,
    /// (index into CITIES, count)
    cities: Vec<(usize, u64)>,
    /// (index into STATES, count), distinct
    states: Vec<(usize, u64)>,
    /// (index into COUNTRIES, count), distinct
    countries: Vec<(usize, u64)>,
    has_zip: bool,
    /// (list name, local ms, precision), distinct names
    lists: Vec<(&'static str, i64, Precision)>,
    optout: Optout,
    /// (name, value), distinct names
    vars: Vec<(&'static str, VarValue)>,
    totals: [u64; 6],
    /// last_open, last_click, last_pageview (local ms)
    last: [i64; 3],
    pageview_precision: Precision,
}

impl ProfilePlan {
    /// Rows in profile_geo: city, state, country and zip entries.
    fn geo_entries(&self) -> u64 {
        let zips = if self.has_zip { self.cities.len() } else { 0 };
        (self.cities.len() + self.states.len() + self.countries.len() + zips) as u64
    }
}

/// Draws `n` distinct indices below `len` into `out` (`n` is small).
fn pick_distinct(r: &mut Rng, len: usize, n: usize, out: &mut Vec<usize>) {
    out.clear();
    while out.len() < n.min(len) {
        let i = r.pick(len);
        if !out.contains(&i) {
            out.push(i);
        }
    }
}

/// Adds `count` to the entry for `key`, appending it when new.
fn add_to(entries: &mut Vec<(usize, u64)>, key: usize, count: u64) {
    match entries.iter_mut().find(|(k, _)| *k == key) {
        Some((_, c)) => *c += count,
        None => entries.push((key, count)),
    }
}

/// Plans profile `k` (all of its randomness; writing only formats the plan).
fn plan_profile(ctx: &Ctx, k: u64, p: &mut ProfilePlan) {
    let mut r = Rng::for_record(ctx.seed, Stream::Profile, k);
    let mut picks = Vec::with_capacity(8);
    p.k = k;
    p.id = ctx.profile_id(k);
    p.create_ms = ctx.profile_created_ms(k);
    let until_export = (ctx.export_day_ms - p.create_ms).max(1) as u64;
    p.signup_ms = p.create_ms + r.below(until_export.min(10 * DAY_MS as u64)) as i64;
    p.email = (r.pick(FIRST_NAMES.len()), r.pick(LAST_NAMES.len()));

    let n = r.range(1, 3) as usize;
    pick_distinct(&mut r, BROWSERS.len(), n, &mut picks);
    p.browsers.clear();
    for &b in &picks {
        p.browsers.push((b, r.range(1, 600)));
    }

    let n = r.range(1, 3) as usize;
    pick_distinct(&mut r, CITIES.len(), n, &mut picks);
    p.cities.clear();
    p.states.clear();
    p.countries.clear();
    for &c in &picks {
        let count = r.range(1, 200);
        p.cities.push((c, count));
        let state = usize::from(CITIES[c].1);
        add_to(&mut p.states, state, count);
        add_to(&mut p.countries, usize::from(STATES[state].1), count);
    }
    p.has_zip = !r.chance(1, 10);

    let n = r.below(5) as usize;
    pick_distinct(&mut r, LISTS.len(), n, &mut picks);
    p.lists.clear();
    let variants = if r.chance(1, 8) {
        if r.chance(1, 3) { 3 } else { 2 }
    } else {
        0
    };
    let names = picks
        .iter()
        .map(|&l| LISTS[l])
        .chain(CASE_LISTS[..variants].iter().copied())
        .collect::<Vec<_>>();
    for name in names {
        let at = p.create_ms + r.below(until_export) as i64;
        let precision = match r.below(20) {
            0 => Precision::Minutes,
            1..=5 => Precision::Millis,
            _ => Precision::Seconds,
        };
        p.lists.push((name, at, precision));
    }

    p.optout = match r.below(20) {
        0..7 => Optout::Absent,
        7..19 => Optout::Null,
        _ => Optout::Set {
            reason: r.pick(OPTOUT_REASONS.len()),
            local_ms: p.create_ms + r.below(until_export) as i64,
        },
    };

    let n = r.range(1, 4) as usize;
    pick_distinct(&mut r, VARS.len(), n, &mut picks);
    p.vars.clear();
    for &v in &picks {
        let (name, kind) = VARS[v];
        let value = match kind {
            VarKind::StrOne => VarValue::Str("1"),
            VarKind::IntOne => VarValue::Int(1),
            VarKind::Null => VarValue::Null,
            VarKind::Bool => VarValue::Bool(r.chance(1, 2)),
            VarKind::Empty => VarValue::Str(""),
            VarKind::Source => VarValue::Str(SOURCES[r.pick(SOURCES.len())]),
            VarKind::Count => VarValue::Int(r.below(50)),
        };
        p.vars.push((name, value));
    }
    if r.chance(1, 4) {
        p.vars.push(("Group", VarValue::Int(3)));
        p.vars.push(("group", VarValue::Int(r.range(1, 9))));
    }

    let messages = r.range(1, 10_000);
    let unique_opens = r.below(messages + 1);
    let opens = unique_opens + r.below(unique_opens + 1);
    let unique_clicks = r.below(unique_opens + 1);
    let clicks = unique_clicks + r.below(unique_clicks + 1);
    let pageviews = r.below(3000);
    p.totals = [
        opens,
        clicks,
        unique_opens,
        unique_clicks,
        pageviews,
        messages,
    ];
    for last in &mut p.last {
        let at = ctx.export_day_ms + 14 * 3_600_000 - r.below(4 * DAY_MS as u64) as i64;
        *last = at.max(p.create_ms);
    }
    p.pageview_precision = if r.chance(1, 25) {
        Precision::Minutes
    } else {
        Precision::Seconds
    };
}

fn put_counts<'a>(buf: &mut Vec<u8>, entries: &[(usize, u64)], label: impl Fn(usize) -> &'a str) {
    let mut o = Obj::new(buf);
    for &(i, count) in entries {
        put_u64(o.key(label(i)), count);
    }
    o.end();
}

fn write_profile(buf: &mut Vec<u8>, p: &ProfilePlan) {
    let mut o = Obj::new(buf);
    put_counts(o.key("browser"), &p.browsers, |i| BROWSERS[i]);
    {
        // "<first>.<last><k>@example.com": unique, and plainly not a real person.
        let buf = o.key("email");
        buf.push(b'"');
        buf.extend_from_slice(FIRST_NAMES[p.email.0].as_bytes());
        buf.push(b'.');
        buf.extend_from_slice(LAST_NAMES[p.email.1].as_bytes());
        put_u64(buf, p.k);
        buf.extend_from_slice(b"@example.com\"");
    }
    {
        let mut geo = Obj::new(o.key("geo"));
        put_counts(geo.key("city"), &p.cities, |i| CITIES[i].0);
        put_u64(geo.key("count"), p.cities.iter().map(|c| c.1).sum());
        put_counts(geo.key("country"), &p.countries, |i| COUNTRIES[i]);
        put_counts(geo.key("state"), &p.states, |i| STATES[i].0);
        if p.has_zip {
            put_counts(geo.key("zip"), &p.cities, |i| CITIES[i].2);
        }
        geo.end();
    }
    {
        let mut lists = Obj::new(o.key("lists_signup"));
        for &(name, at, precision) in &p.lists {
            put_ts(lists.key(name), at, precision);
        }
        lists.end();
    }
    match p.optout {
        Optout::Absent => {}
        Optout::Null => {
            put_null(o.key("optout_reason"));
            put_null(o.key("optout_time"));
        }
        Optout::Set { reason, local_ms } => {
            put_str(o.key("optout_reason"), OPTOUT_REASONS[reason]);
            put_ts(o.key("optout_time"), local_ms, Precision::Seconds);
        }
    }
    put_ts(o.key("signup_time"), p.signup_ms, Precision::Millis);
    {
        let mut vars = Obj::new(o.key("vars"));
        for &(name, value) in &p.vars {
            let buf = vars.key(name);
            match value {
                VarValue::Null => put_null(buf),
                VarValue::Bool(b) => buf.extend_from_slice(if b { b"true" } else { b"false" }),
                VarValue::Int(n) => put_u64(buf, n),
                VarValue::Str(s) => put_str(buf, s),
            }
        }
        vars.end();
    }
    put_ts(o.key("create_date"), p.create_ms, Precision::Seconds);
    let names = [
        "total_opens",
        "total_clicks",
        "total_unique_opens",
        "total_unique_clicks",
        "total_pageviews",
        "total_messages",
    ];
    for (name, &n) in names.iter().zip(&p.totals) {
        put_u64(o.key(name), n);
    }
    put_ts(o.key("last_open"), p.last[0], Precision::Seconds);
    put_ts(o.key("last_click"), p.last[1], Precision::Seconds);
    put_ts(o.key("last_pageview"), p.last[2], p.pageview_precision);
    put_str(o.key("id"), id_str(&p.id));
    o.end();
}

#[cfg(test)]
mod tests;
