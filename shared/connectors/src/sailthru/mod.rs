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
use std::collections::HashMap;

use self::settings::{EmailPolicy, SailthruSettings};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_contracts::redact::redact_url;
use sluice_contracts::{FetchTask, FileSlice, PageRef, RejectedRecord, TaskKind};

use crate::location::{self, classify_error};
use crate::{
    Connector, ConnectorError, FetchOutput, JobSpec, ParamKind, ParamSpec, Plan, PlannedTask,
    StreamSpec, TableRows,
};

pub mod archive;
pub mod records;
pub mod settings;
pub mod timestamps;

use archive::{LocalCopy, MemberName, ScanError, SliceError};
use records::{Context, Member, RecordRows, TableSpec};

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
                ParamKind::Text,
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

#[async_trait]
impl Connector for SailthruConnector {
    fn name(&self) -> &'static str {
        "sailthru"
    }

    fn streams(&self) -> Vec<StreamSpec> {
        streams()
    }

    async fn plan(&self, job: &JobSpec) -> Result<Plan, ConnectorError> {
        if job.stream != JOB_STREAM {
            return Err(ConnectorError::InvalidParams(format!(
                "unknown sailthru stream '{}': a Sailthru job syncs stream '{JOB_STREAM}' (every member of one export)",
                job.stream
            )));
        }
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
            warnings.push(format!(
                "export location '{shown}' contains no loadable data member"
            ));
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
        let mut batch = Batch::new(member);
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
                    Ok(rows) => batch.add(rows),
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
        let tables = batch.finish(&date);
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

/// The rows of one task, one record per parent key (a later duplicate of a record in the
/// same slice replaces the earlier one, collections included).
struct Batch {
    member: Member,
    records: Vec<Option<RecordRows>>,
    by_key: HashMap<String, usize>,
}

impl Batch {
    fn new(member: Member) -> Self {
        Self {
            member,
            records: Vec::new(),
            by_key: HashMap::new(),
        }
    }

    fn key_of(spec: &TableSpec, row: &[Value]) -> String {
        let key: Vec<&Value> = spec.key_positions().into_iter().map(|i| &row[i]).collect();
        serde_json::to_string(&key).unwrap_or_default()
    }

    fn add(&mut self, rows: RecordRows) {
        let Some((spec, parent)) = rows.first() else {
            return;
        };
        let key = Self::key_of(spec, parent);
        if let Some(old) = self.by_key.insert(key, self.records.len()) {
            self.records[old] = None;
        }
        self.records.push(Some(rows));
    }

    /// One [`TableRows`] per destination table that has rows, parent first; rows with the
    /// same primary key collapse to the last one. A child table that mirrors a collection
    /// (`replace_scope`) is sent even without rows, naming every parent of the slice in
    /// `scope_keys` with the export date as `scope_version` and the parent table as
    /// `scope_parent`, so a collection that became empty is emptied too.
    fn finish(self, export_date: &str) -> Vec<TableRows> {
        let mut out = Vec::new();
        let parent_spec = self.member.tables().first().copied();
        for spec in self.member.tables() {
            let mut rows: Vec<Vec<Value>> = Vec::new();
            let mut seen: HashMap<String, usize> = HashMap::new();
            for (table, row) in self.records.iter().flatten().flatten() {
                if table.name != spec.name {
                    continue;
                }
                let key = Self::key_of(spec, row);
                match seen.get(&key) {
                    Some(&at) => rows[at] = row.clone(),
                    None => {
                        seen.insert(key, rows.len());
                        rows.push(row.clone());
                    }
                }
            }
            let mut merge = spec.merge();
            if let (Some(scope), Some(parent)) = (&merge.replace_scope, parent_spec) {
                let positions: Vec<usize> = scope
                    .iter()
                    .filter_map(|c| parent.columns.iter().position(|p| p == c))
                    .collect();
                merge.scope_keys = self
                    .records
                    .iter()
                    .flatten()
                    .filter_map(|record| record.first())
                    .map(|(_, row)| positions.iter().map(|&i| row[i].clone()).collect())
                    .collect();
                merge.scope_version = Some(Value::String(export_date.to_string()));
                merge.scope_parent = Some(parent.name.to_string());
            }
            if rows.is_empty() && merge.scope_keys.is_empty() {
                continue;
            }
            out.push(TableRows {
                table: spec.name.to_string(),
                columns: spec.columns.iter().map(|c| (*c).to_string()).collect(),
                rows,
                merge,
            });
        }
        out
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
