//! Sailthru data-exporter archives.
//!
//! A job (connector `sailthru`, stream `export`, params
//! `{"export": "<location>", "page_size": n?, "email_policy": "keep|hash|drop"?}`) loads one
//! export zip. Planning reads the archive's structure ([`archive::scan_archive`]) and cuts
//! each data member (`blast`, `message_blast`, `message_transactional`, `profile`, named
//! `<table>.<YYYYMMDD>.json`) into page tasks of at most `page_size` records, each a
//! [`FileSlice`] (member data offset, compressed size, line range). A fetch reads only its
//! slice with a ranged GET and turns each JSON line into rows of schema `sailthru`
//! ([`records`]); lines that cannot be read become rejected records naming member, line and
//! field. Each task's `cursor_max` is the export date (`YYYY-MM-DD`).

use object_store::ObjectStoreExt as _;

use self::settings::{EmailPolicy, SailthruSettings};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_contracts::redact::redact_url;
use sluice_contracts::{FetchTask, FileSlice, PageRef, RejectedRecord, TaskKind};

use crate::framework::Collector;
use crate::location::{self, classify_error};
use crate::{
    Connector, ConnectorError, FetchOutput, JobSpec, ParamKind, ParamSpec, Plan, PlannedTask,
    StreamSpec,
};

pub mod archive;
pub mod records;
pub mod settings;
pub mod timestamps;

use archive::{LocalCopy, MemberName, ScanError, SliceError};
use records::{Context, Member, RecordRows};

/// The only stream a Sailthru job may name; its tasks carry the member tables as streams.
pub const JOB_STREAM: &str = "export";

/// A job's parameters after validation, with the settings' defaults filled in. This is what
/// `Plan.params` (and so every task's `params`) carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportParams {
    /// The export archive: a path, `file://`, `http(s)://` or `s3://` URL.
    pub export: String,
    /// Maximum records (non-blank lines) per page task, ≥ 1.
    pub page_size: u64,
    /// What to do with `profile.email`.
    pub email_policy: EmailPolicy,
}

/// A job's parameters as sent (`sluicectl sync sailthru --export … [--page-size N]
/// [--email-policy keep|hash|drop]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The export archive's location.
    pub export: String,
    /// Records per page task; default `connectors.sailthru.page_size`.
    pub page_size: Option<u64>,
    /// `profile.email` policy; default `connectors.sailthru.email_policy`.
    pub email_policy: Option<EmailPolicy>,
}

/// The streams of the Sailthru connector: one, `export`, whose tasks carry the member
/// tables as streams.
pub fn streams() -> Vec<StreamSpec> {
    vec![StreamSpec {
        name: JOB_STREAM,
        help: "Ingest a Sailthru data-exporter archive (every member: blast, message_blast, message_transactional, profile)",
        params: vec![
            ParamSpec::required(
                "export",
                ParamKind::Location,
                "the location of the Sailthru export zip: a path, file://, http(s):// or s3:// URL",
            ),
            ParamSpec::optional(
                "page_size",
                ParamKind::Integer {
                    min: 1,
                    max: 10_000_000,
                },
                "records per page task (default: connectors.sailthru.page_size)",
            ),
            ParamSpec::optional(
                "email_policy",
                ParamKind::Choice(&["keep", "hash", "drop"]),
                "what to store of profile.email (default: connectors.sailthru.email_policy)",
            ),
        ],
        incremental: false,
        tables: records::TABLES.to_vec(),
    }]
}

/// The Sailthru export connector.
pub struct SailthruConnector {
    settings: SailthruSettings,
}

/// Builds the connector from its settings.
pub fn build(settings: &SailthruSettings) -> SailthruConnector {
    SailthruConnector {
        settings: settings.clone(),
    }
}

/// The registry's builder: the `[connectors.sailthru]` section over [`settings::DEFAULTS`].
///
/// # Errors
/// A setting that does not fit, naming the key.
pub fn connector(
    settings: &sluice_contracts::Settings,
    _ctx: &crate::ConnectorContext,
) -> Result<std::sync::Arc<dyn Connector>, crate::SettingsError> {
    let section: SailthruSettings =
        crate::framework::settings_section(settings, "sailthru", settings::DEFAULTS)?;
    Ok(std::sync::Arc::new(build(&section)))
}

impl SailthruConnector {
    /// Validates a job's parameters and fills in the defaults from the settings.
    ///
    /// # Errors
    /// [`ConnectorError::InvalidParams`] naming the parameter: missing or empty `export`,
    /// a `page_size` that is not a positive integer, an unknown `email_policy`, unknown keys.
    pub fn resolve_params(&self, params: &Value) -> Result<ExportParams, ConnectorError> {
        let invalid = |m: String| ConnectorError::InvalidParams(m);
        let stream = streams().remove(0);
        let request: ExportRequest = crate::framework::parse_params("sailthru", &stream, params)?;
        let export = request.export.trim().to_string();
        if export.is_empty() {
            return Err(invalid(
                "parameter 'export' is empty: give the location of the Sailthru export zip".into(),
            ));
        }
        location::parse_location(&export)?;
        let page_size = request.page_size.unwrap_or(self.settings.page_size);
        if page_size == 0 {
            return Err(invalid(match request.page_size {
                Some(_) => "parameter 'page_size' must be a positive integer, found 0".into(),
                None => "setting connectors.sailthru.page_size must be at least 1".into(),
            }));
        }
        Ok(ExportParams {
            export,
            page_size,
            email_policy: request.email_policy.unwrap_or(self.settings.email_policy),
        })
    }

    /// The email policy of a task: the one resolved by the planner, else the settings'.
    fn task_policy(&self, task: &FetchTask) -> Result<EmailPolicy, ConnectorError> {
        match task.params.get("email_policy") {
            None | Some(Value::Null) => Ok(self.settings.email_policy),
            Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                ConnectorError::Permanent(anyhow::anyhow!(
                    "task {} has an unknown email_policy {v}",
                    task.task_id
                ))
            }),
        }
    }

    /// Makes the archive available as a local file: a local location is used as it is, a
    /// remote one is streamed into a temporary file.
    async fn local_copy(&self, export: &str, account: &str) -> Result<LocalCopy, ConnectorError> {
        let shown = redact_url(export);
        if let Some(path) = location::local_path(export) {
            return match tokio::fs::metadata(&path).await {
                Ok(meta) if meta.is_file() => {
                    // The ETag the fetchers' reads (through object_store) will check.
                    let (store, object) = location::open_location(export, None)?;
                    let e_tag = store
                        .head(&object)
                        .await
                        .map_err(|e| classify_error(export, e))?
                        .e_tag;
                    Ok(LocalCopy::existing(path, e_tag))
                }
                Ok(_) => Err(ConnectorError::InvalidParams(format!(
                    "export location '{shown}' is not a file"
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(
                    ConnectorError::InvalidParams(format!("export location '{shown}' not found")),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(
                    ConnectorError::Permanent(anyhow::anyhow!("export location '{shown}': {e}")),
                ),
                Err(e) => Err(ConnectorError::Transient(anyhow::anyhow!(
                    "export location '{shown}': {e}"
                ))),
            };
        }
        let (store, path) = location::open_location(export, self.settings.accounts.get(account))?;
        LocalCopy::download(store.as_ref(), &path)
            .await
            .map_err(|e| match e {
                archive::DownloadError::Store(e) => classify_error(export, e),
                archive::DownloadError::Io(e) => ConnectorError::Transient(anyhow::anyhow!(
                    "copying export location '{shown}' to a temporary file: {e}"
                )),
            })
    }
}

/// Refuses a stream other than [`JOB_STREAM`].
fn check_stream(stream: &str) -> Result<(), ConnectorError> {
    if stream == JOB_STREAM {
        return Ok(());
    }
    Err(ConnectorError::InvalidParams(format!(
        "unknown sailthru stream '{stream}': a Sailthru job syncs stream '{JOB_STREAM}' (every member of one export)"
    )))
}

#[async_trait]
impl Connector for SailthruConnector {
    fn name(&self) -> &'static str {
        "sailthru"
    }

    fn streams(&self) -> Vec<StreamSpec> {
        streams()
    }

    async fn check(&self, account: &str) -> Result<String, ConnectorError> {
        let _ = account;
        // Sailthru is read from export archives, not an API: a location is checked when
        // a job names one (`sluicectl sync sailthru --export …`).
        Ok("nothing to check without an export: sailthru reads export archives, and `sync sailthru --export LOC` checks the location".into())
    }

    fn validate(&self, job: &JobSpec) -> Result<(), ConnectorError> {
        check_stream(&job.stream)?;
        self.resolve_params(&job.params).map(|_| ())
    }

    async fn plan(&self, job: &JobSpec) -> Result<Plan, ConnectorError> {
        check_stream(&job.stream)?;
        let params = self.resolve_params(&job.params)?;
        let shown = redact_url(&params.export);
        let copy = self.local_copy(&params.export, &job.account).await?;
        let scan = archive::scan_archive(&copy.path, params.page_size)
            .await
            .map_err(|e| match e {
                ScanError::NotZip(why) => ConnectorError::Permanent(anyhow::anyhow!(
                    "export location '{shown}' is not a readable zip archive ({why})"
                )),
                ScanError::Io(e) => ConnectorError::Transient(anyhow::anyhow!(
                    "reading export location '{shown}': {e}"
                )),
            })?;
        let e_tag = copy.e_tag.clone();
        drop(copy);
        let mut tasks = Vec::new();
        for member in &scan.members {
            for slice in &member.slices {
                tasks.push(PlannedTask {
                    stream: member.member.name().to_string(),
                    kind: TaskKind::Page(PageRef {
                        file: Some(FileSlice {
                            location: params.export.clone(),
                            member: member.name.clone(),
                            data_offset: member.data_offset,
                            compressed_size: member.compressed_size,
                            compression: member.compression,
                            first_line: slice.first_line,
                            line_count: slice.line_count,
                            version: e_tag.clone(),
                        }),
                        ..PageRef::default()
                    }),
                    once: None,
                });
            }
        }
        let mut warnings = scan.warnings;
        if scan.recovered {
            warnings.insert(
                0,
                format!("export location '{shown}' has no readable zip central directory; members were recovered from their local headers"),
            );
        }
        if scan.members.is_empty() {
            // Nothing would load: a job that "succeeds" with no rows hides a wrong archive.
            let mut seen: Vec<String> = warnings.clone();
            seen.extend(scan.rejected.iter().map(|r| r.error.clone()));
            return Err(ConnectorError::InvalidParams(format!(
                "export location '{shown}' has no data member (<table>.<YYYYMMDD>.json of {}){}",
                records::Member::NAMES.join(", "),
                if seen.is_empty() {
                    String::new()
                } else {
                    format!(": {}", seen.join("; "))
                }
            )));
        }
        for member in scan.members.iter().filter(|m| m.records == 0) {
            warnings.push(format!("member {} has no records", member.name));
        }
        tracing::info!(
            export = %shown,
            members = scan.members.len(),
            tasks = tasks.len(),
            warnings = warnings.len(),
            rejected = scan.rejected.len(),
            "planned sailthru export"
        );
        Ok(Plan {
            tasks,
            params: serde_json::to_value(&params)
                .map_err(|e| ConnectorError::Permanent(e.into()))?,
            warnings,
            rejected: scan.rejected,
        })
    }

    async fn fetch(&self, task: &FetchTask) -> Result<FetchOutput, ConnectorError> {
        let permanent = |m: String| ConnectorError::Permanent(anyhow::anyhow!(m));
        let slice = match &task.kind {
            TaskKind::Page(PageRef {
                file: Some(slice), ..
            }) => slice,
            other => {
                return Err(permanent(format!(
                    "sailthru task {} is not a file slice: {other:?}",
                    task.task_id
                )));
            }
        };
        let (member, date) = match archive::classify_member(&slice.member) {
            MemberName::Data { table, date } => match Member::from_name(&table) {
                Some(member) => (member, date),
                None => {
                    return Err(permanent(format!(
                        "unknown table '{table}' in member {}",
                        slice.member
                    )));
                }
            },
            _ => {
                return Err(permanent(format!(
                    "member {} is not a data member",
                    slice.member
                )));
            }
        };
        let ctx = Context {
            export_date: date.clone(),
            email_policy: self.task_policy(task)?,
        };
        let (store, path) =
            location::open_location(&slice.location, self.settings.accounts.get(&task.account))
                .map_err(|e| match e {
                    ConnectorError::InvalidParams(m) => {
                        ConnectorError::Permanent(anyhow::anyhow!(m))
                    }
                    other => other,
                })?;
        let reader = archive::open_member(store.as_ref(), &path, slice)
            .await
            .map_err(|e| match classify_error(&slice.location, e) {
                ConnectorError::InvalidParams(m) => ConnectorError::Permanent(anyhow::anyhow!(m)),
                other => other,
            })?;
        let mut batch = collector(member, &date);
        let mut rejected = Vec::new();
        let mut lines = 0u64;
        archive::read_lines(reader, slice, |line, bytes| {
            lines += 1;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return;
            }
            let source = format!("{} line {line}", slice.member);
            let table = Some(member.tables()[0].name.to_string());
            match serde_json::from_slice::<Value>(bytes) {
                Err(e) => rejected.push(RejectedRecord {
                    source,
                    table,
                    error: format!("not valid JSON: {e}"),
                    raw: Value::String(redact_raw_line(member, ctx.email_policy, bytes)),
                }),
                Ok(value) => match records::convert(member, &value, &ctx) {
                    Ok(rows) => collect(&mut batch, rows),
                    Err(e) => rejected.push(RejectedRecord {
                        source,
                        table,
                        error: e.to_string(),
                        raw: redact_raw_record(member, ctx.email_policy, value),
                    }),
                },
            }
        })
        .await
        .map_err(|e| {
            let shown = redact_url(&slice.location);
            match e {
                SliceError::Read { .. } => {
                    ConnectorError::Transient(anyhow::anyhow!("{shown}: {e}"))
                }
                SliceError::Corrupt(_) => {
                    ConnectorError::Permanent(anyhow::anyhow!("{shown}: {e}"))
                }
            }
        })?;
        let tables = batch.finish();
        tracing::info!(
            member = %slice.member,
            first_line = slice.first_line,
            lines,
            rows = tables.iter().map(|t| t.rows.len()).sum::<usize>(),
            rejected = rejected.len(),
            "fetched sailthru slice"
        );
        Ok(FetchOutput {
            tables,
            rejected,
            children: Vec::new(),
            cursor_max: Some(date),
        })
    }
}

/// The rows of one slice: a record's rows arrive together, the parent first. A later
/// duplicate of a record in the same slice replaces the earlier one, collections included;
/// a collection (`replace_scope`) names every profile of the slice with the export date as
/// its version and `sailthru.profile` as the guarding parent, so a collection that became
/// empty is emptied too and an older export loaded late cannot bring members back.
fn collector(member: Member, export_date: &str) -> Collector {
    Collector::new(member.tables())
        .scope_version(Value::String(export_date.to_string()))
        .scope_parent()
}

/// Adds one converted record (its parent row first) to `rows`.
fn collect(rows: &mut Collector, record: RecordRows) {
    let mut record = record.into_iter();
    if let Some((spec, row)) = record.next() {
        rows.add(spec, row, record.collect());
    }
}

/// A rejected profile record keeps the e-mail policy: the address is hashed or removed.
fn redact_raw_record(member: Member, policy: EmailPolicy, mut value: Value) -> Value {
    if member == Member::Profile
        && let Some(obj) = value.as_object_mut()
        && let Some(email) = obj.get_mut("email")
        && let Some(text) = email.as_str()
    {
        *email = records::apply_email_policy(policy, text).map_or(Value::Null, Value::String);
    }
    value
}

/// An unparseable profile line under policy hash or drop: every token containing `@` is
/// replaced by `[redacted]`, since the address cannot be located reliably.
fn redact_raw_line(member: Member, policy: EmailPolicy, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if member != Member::Profile || policy == EmailPolicy::Keep {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.contains('@') {
            out.push_str("[redacted]");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '"' | ',' | ':' | '{' | '}' | '[' | ']') {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

#[cfg(test)]
mod tests;
