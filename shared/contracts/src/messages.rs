//! The JSON messages that cross RabbitMQ (contract: `docs/architecture.md`, "Messages").
//!
//! Every message carries `"v": 1`. Additions to the design's field lists (documented in the
//! README) are optional on the wire so older producers stay readable:
//! `FetchTask.params`, `RecordBatch.{stream, columns, merge, rejected}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::raw_rows::RawRows;

/// The wire version every message carries in its `v` field.
pub const MESSAGE_VERSION: u32 = 1;

/// Error for a message that cannot be decoded or has the wrong version.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not valid JSON for the expected message type.
    #[error("undecodable {kind} message: {source}")]
    Json {
        /// Which message type was expected (`JobRequest`, `FetchTask`, …).
        kind: &'static str,
        /// The serde error, with line and column.
        source: serde_json::Error,
    },
    /// The body decoded but carries a `v` this build does not understand.
    #[error("{kind} message has version {found}, this build reads version {MESSAGE_VERSION}")]
    Version {
        /// Which message type was expected.
        kind: &'static str,
        /// The `v` the message carried.
        found: u32,
    },
}

/// A message type with a versioned JSON encoding.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// The type's name in errors and logs.
    const KIND: &'static str;

    /// The message's `v` field.
    fn version(&self) -> u32;

    /// Encodes the message as compact JSON.
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("messages always serialise: no non-string map keys")
    }

    /// Decodes a message, rejecting other versions.
    ///
    /// # Errors
    /// [`DecodeError::Json`] for malformed bodies, [`DecodeError::Version`] for `v != 1`.
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let msg: Self = serde_json::from_slice(body).map_err(|source| DecodeError::Json {
            kind: Self::KIND,
            source,
        })?;
        if msg.version() != MESSAGE_VERSION {
            return Err(DecodeError::Version {
                kind: Self::KIND,
                found: msg.version(),
            });
        }
        Ok(msg)
    }
}

fn v1() -> u32 {
    MESSAGE_VERSION
}

/// Whether a job reads everything in its range or continues from the stream's bookmark.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Read the whole requested range; the bookmark is still advanced on success.
    #[default]
    Full,
    /// Start at the stored bookmark (minus the connector's lookback).
    Incremental,
}

impl Mode {
    /// The name stored in the ledger (`full` or `incremental`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        }
    }
}

/// An operator's request, published by `sluicectl` to the `jobs` queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JobRequest {
    /// Always [`MESSAGE_VERSION`].
    #[serde(default = "v1")]
    pub v: u32,
    /// Chosen by the requester; re-publishing the same id is idempotent.
    pub job_id: Uuid,
    /// Connector name: `sailthru`, `klaviyo`, `commercetools`, `wdn`.
    pub connector: String,
    /// The stream the job syncs (for `sailthru`: `export`, every member of one export).
    pub stream: String,
    /// Credential set of the connector (`default` unless named).
    pub account: String,
    /// Connector-specific parameters (for `sailthru`: `{"export": "<location>"}`).
    #[serde(default)]
    pub params: Value,
    /// Full or incremental.
    #[serde(default)]
    pub mode: Mode,
    /// When the operator asked, UTC.
    pub requested_at: DateTime<Utc>,
    /// The named destination the job's records are written to (a key of the
    /// `destinations` settings); absent in requests from before destinations existed,
    /// which means [`DEFAULT_DESTINATION`], the ledger's own Postgres database.
    #[serde(default = "default_destination")]
    pub destination: String,
}

/// The destination of jobs that name none: `postgres`, the ledger's own database.
pub const DEFAULT_DESTINATION: &str = "postgres";

fn default_destination() -> String {
    DEFAULT_DESTINATION.to_string()
}

impl Message for JobRequest {
    const KIND: &'static str = "JobRequest";
    fn version(&self) -> u32 {
        self.v
    }
}

/// How a zip member's bytes are stored (zip "compression method").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Method 0: the member's bytes are stored as they are.
    Stored,
    /// Method 8: raw DEFLATE.
    Deflate,
}

/// A line range of one newline-delimited member of an archive (Sailthru exports).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileSlice {
    /// The export location as the operator gave it (path, `file://`, `http(s)://`, `s3://`).
    pub location: String,
    /// The member's name inside the archive, for example `message_blast.20160401.json`.
    pub member: String,
    /// Byte offset in the archive where the member's (compressed) data starts.
    pub data_offset: u64,
    /// Length in bytes of the member's compressed data; `None` when only a damaged archive's
    /// local header was readable, in which case the reader stops at the end of the stream.
    pub compressed_size: Option<u64>,
    /// How the member's data is compressed.
    pub compression: Compression,
    /// First line of the slice, 1-based, counted in the member.
    pub first_line: u64,
    /// Number of lines in the slice (blank lines included, and skipped by the reader).
    pub line_count: u64,
    /// The archive's ETag when the job was planned; reads send it as `If-Match`, so an
    /// archive replaced after planning fails the task instead of yielding other lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Where a page task starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct PageRef {
    /// An API cursor (`page[cursor]` for Klaviyo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// An offset into a result set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The page size that goes with `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// A line range of an export file member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSlice>,
}

/// What one task fetches (contract: `time_range {start, end}`, `ids {ids}`, `page {…}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskKind {
    /// The half-open UTC window `[start, end)`.
    TimeRange {
        /// Inclusive start, UTC.
        start: DateTime<Utc>,
        /// Exclusive end, UTC.
        end: DateTime<Utc>,
        /// The part of the stream the window applies to, when the stream has several (a
        /// Klaviyo metric id for `events`); `None` for the whole stream.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<String>,
    },
    /// A batch of source ids.
    Ids {
        /// The ids, as the source spells them.
        ids: Vec<String>,
    },
    /// One page: a cursor, an offset or a file member line range.
    Page(PageRef),
    /// A payload of the connector's own (an id range and its keyset position, …), which only
    /// that connector reads: new connectors need no new variant here. Serialised as
    /// `{"type": "connector", …the payload's fields}`; the payload is a JSON object.
    Connector(Value),
}

/// One unit of fetch work, on the `fetch` queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FetchTask {
    /// Always [`MESSAGE_VERSION`].
    #[serde(default = "v1")]
    pub v: u32,
    /// Deterministic id ([`crate::ids`]).
    pub task_id: String,
    /// The job this task belongs to.
    pub job_id: Uuid,
    /// Connector name.
    pub connector: String,
    /// The stream whose records this task produces (may be narrower than the job's stream:
    /// a Sailthru `export` job has tasks of streams `blast`, `message_blast`, …).
    pub stream: String,
    /// Credential set.
    pub account: String,
    /// What to fetch.
    pub kind: TaskKind,
    /// Delivery attempt, starting at 1; raised on each trip through a retry tier.
    #[serde(default = "one")]
    pub attempt: u32,
    /// The job's parameters as resolved by the planner (addition to the design).
    #[serde(default)]
    pub params: Value,
    /// Set on a child task that its job runs at most once per resource key (and not at all
    /// while the resource is fresh): see [`Once`]. Such a child is recorded and published
    /// by the loader, not by the fetcher that found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<Once>,
}

/// What makes a child task "once per resource": the connector's key of the resource it
/// fetches (`products/500001/offers`) and how long a fetch of it stays fresh.
///
/// The child's id is derived from the job and the key
/// ([`crate::ids::keyed_task_id`]), so every fetcher that finds the same resource in one
/// job names the same task, and the ledger records (and publishes) it once. When the
/// task's last part is loaded, the ledger remembers that the resource was fetched (UTC
/// time, connector, account, destination, key) together with the children the task had;
/// a later child of the same key within `fresh_for_seconds` is not fetched again — its
/// remembered children stand in for it (recursively), so a re-run continues below a
/// fresh resource without asking the source for it. An empty result is remembered like
/// any other.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Once {
    /// The resource's key, unique within the connector and account (`retailers/50003`).
    pub key: String,
    /// How long a fetch of the resource stays fresh, seconds; `None`: fetch it once per
    /// job whatever its age (`--full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_for_seconds: Option<u64>,
}

fn one() -> u32 {
    1
}

impl Message for FetchTask {
    const KIND: &'static str = "FetchTask";
    fn version(&self) -> u32 {
        self.v
    }
}

/// How the loader merges a batch into its table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct MergeSpec {
    /// A column whose value orders versions of a row: an existing row is only replaced by a
    /// row whose version is greater or equal, so an older record never overwrites a newer one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_column: Option<String>,
    /// For child tables that mirror a collection of their parent (a profile's vars): the
    /// columns naming the parent. Existing rows of a parent present in the batch that the
    /// batch no longer carries are deleted. Such a batch must hold every row of each parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_scope: Option<Vec<String>>,
    /// With `replace_scope`: every parent this batch speaks for, as values of the scope
    /// columns, including parents whose collection is now empty (and so have no row). When
    /// given it must cover every parent present in `rows`; when empty, the parents are those
    /// present in `rows`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope_keys: Vec<Vec<Value>>,
    /// With `scope_keys` and `version_column`: the version of those parents; existing rows
    /// with a greater version are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_version: Option<Value>,
    /// With `replace_scope` and `version_column`: the parent table (`sailthru.profile`),
    /// whose row per scope carries the same version column. Rows are not added under a
    /// parent whose stored version is newer, so an older export loaded late cannot bring
    /// back members of a collection that has since changed or emptied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_parent: Option<String>,
}

/// A source record that could not be turned into rows, or a row the destination refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RejectedRecord {
    /// Where it came from, for people: `message_blast.20160401.json line 7`.
    pub source: String,
    /// The destination table it was meant for, when known (`sailthru.profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// What was wrong, naming the field.
    pub error: String,
    /// The raw record: the parsed JSON, or the raw line as a JSON string when unparsable.
    pub raw: Value,
}

/// Records one task produced for one table, on the `load` queue, with rows as
/// `serde_json::Value`s: what fetchers build and send.
pub type RecordBatch = RecordBatchOf<Vec<Vec<Value>>>;

/// A [`RecordBatch`] whose rows stay the JSON text they arrived in ([`RawRows`]): what the
/// loader decodes, so that each cell is converted once, straight from its text, instead of
/// through a `Value` tree. Same wire, same `v`.
pub type RawRecordBatch = RecordBatchOf<RawRows>;

/// Records one task produced for one table, on the `load` queue; `R` is how the rows are
/// held in memory ([`RecordBatch`], [`RawRecordBatch`]), the wire is the same.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RecordBatchOf<R> {
    /// Always [`MESSAGE_VERSION`].
    #[serde(default = "v1")]
    pub v: u32,
    /// The job.
    pub job_id: Uuid,
    /// The task that produced the batch.
    pub task_id: String,
    /// The task's stream (for freshness and bookmarks).
    #[serde(default)]
    pub stream: String,
    /// 0-based part number within the task.
    pub part: u32,
    /// True on the task's last part; `part` is then the highest part number.
    pub task_complete: bool,
    /// Destination table, schema-qualified (`sailthru.message_blast`); empty on a part that
    /// only carries rejects or children.
    pub table: String,
    /// Column names, in the order of each row's values.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Rows as JSON arrays aligned with `columns`. Timestamps are ISO-8601 strings:
    /// without offset for `timestamp` columns, with `Z` for `timestamptz`.
    pub rows: R,
    /// Merge options for the table.
    #[serde(default)]
    pub merge: MergeSpec,
    /// Tasks this task fans out to; recorded as pending in the same transaction that marks
    /// this task done.
    #[serde(default)]
    pub children: Vec<FetchTask>,
    /// The greatest cursor value among the task's records (for Sailthru, the export date
    /// `YYYY-MM-DD`; for time-ordered streams an RFC 3339 UTC timestamp).
    #[serde(default)]
    pub cursor_max: Option<String>,
    /// Records that could not be turned into rows; stored in `sluice.rejected_rows`.
    #[serde(default)]
    pub rejected: Vec<RejectedRecord>,
}

impl<R> Message for RecordBatchOf<R>
where
    R: Serialize + for<'de> Deserialize<'de>,
{
    const KIND: &'static str = "RecordBatch";
    fn version(&self) -> u32 {
        self.v
    }
}

impl RawRecordBatch {
    /// The same part with its rows as `Value`s (see [`RawRows::to_values`]), for writers
    /// that need trees.
    pub fn to_values(&self) -> RecordBatch {
        RecordBatch {
            v: self.v,
            job_id: self.job_id,
            task_id: self.task_id.clone(),
            stream: self.stream.clone(),
            part: self.part,
            task_complete: self.task_complete,
            table: self.table.clone(),
            columns: self.columns.clone(),
            rows: self.rows.to_values(),
            merge: self.merge.clone(),
            children: self.children.clone(),
            cursor_max: self.cursor_max.clone(),
            rejected: self.rejected.clone(),
        }
    }
}

/// How a task ended without data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Permanent error or retries exhausted; the task was parked.
    Failed,
    /// The job was cancelled before the task ran.
    Cancelled,
}

/// Tells the loader (keeper of the ledger) that a task ended without data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskOutcome {
    /// Always [`MESSAGE_VERSION`].
    #[serde(default = "v1")]
    pub v: u32,
    /// The job.
    pub job_id: Uuid,
    /// The task.
    pub task_id: String,
    /// Failed or cancelled.
    pub outcome: Outcome,
    /// Why, for the operator.
    pub error: String,
}

impl Message for TaskOutcome {
    const KIND: &'static str = "TaskOutcome";
    fn version(&self) -> u32 {
        self.v
    }
}

/// What a control message asks of every service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    /// Stop work on the job: drop its tasks and batches.
    Cancel,
}

/// Broadcast on the `control` fanout exchange.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ControlMessage {
    /// Always [`MESSAGE_VERSION`].
    #[serde(default = "v1")]
    pub v: u32,
    /// The job concerned.
    pub job_id: Uuid,
    /// What to do.
    pub action: ControlAction,
}

impl ControlMessage {
    /// "Cancel `job_id`": fetchers drop its tasks at once.
    pub fn cancel(job_id: Uuid) -> Self {
        Self {
            v: MESSAGE_VERSION,
            job_id,
            action: ControlAction::Cancel,
        }
    }
}

impl Message for ControlMessage {
    const KIND: &'static str = "ControlMessage";
    fn version(&self) -> u32 {
        self.v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fetch_task_kind_wire_shape() {
        let task = FetchTask {
            v: 1,
            task_id: "t".into(),
            job_id: Uuid::nil(),
            connector: "sailthru".into(),
            stream: "blast".into(),
            account: "default".into(),
            kind: TaskKind::Page(PageRef {
                file: Some(FileSlice {
                    location: "/x.zip".into(),
                    member: "blast.20160401.json".into(),
                    data_offset: 10,
                    compressed_size: Some(20),
                    compression: Compression::Deflate,
                    first_line: 1,
                    line_count: 5,
                    version: None,
                }),
                ..PageRef::default()
            }),
            attempt: 1,
            params: Value::Null,
            once: None,
        };
        let wire: Value = serde_json::from_slice(&task.encode()).unwrap();
        // Absent `once` stays off the wire (older readers see the same message).
        assert!(wire.get("once").is_none());
        assert_eq!(wire["kind"]["type"], "page");
        assert_eq!(wire["kind"]["file"]["compression"], "deflate");
        assert_eq!(FetchTask::decode(&task.encode()).unwrap(), task);

        let range = json!({"type": "time_range", "start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z"});
        assert!(matches!(
            serde_json::from_value::<TaskKind>(range).unwrap(),
            TaskKind::TimeRange { .. }
        ));
    }

    #[test]
    fn rejects_other_versions_and_names_the_type() {
        let body = br#"{"v":2,"job_id":"00000000-0000-0000-0000-000000000000","task_id":"t","outcome":"failed","error":"x"}"#;
        let err = TaskOutcome::decode(body).unwrap_err().to_string();
        assert!(
            err.contains("TaskOutcome") && err.contains("version 2"),
            "{err}"
        );
        let err = JobRequest::decode(b"{not json").unwrap_err().to_string();
        assert!(err.contains("JobRequest"), "{err}");
    }

    #[test]
    fn raw_record_batches_read_the_same_wire() {
        let batch = RecordBatch {
            v: 1,
            job_id: Uuid::nil(),
            task_id: "t".into(),
            stream: "events/abc".into(),
            part: 3,
            task_complete: true,
            table: "klaviyo.events".into(),
            columns: vec!["id".into(), "value".into(), "event_properties".into()],
            rows: vec![
                vec![
                    json!("e1"),
                    json!(12.5),
                    json!({"$value": 12.5, "Items": ["a", {"b": null}]}),
                ],
                vec![json!("e\u{e9}\"2"), Value::Null, json!({"k": "a\\u0000"})],
                vec![],
            ],
            merge: MergeSpec {
                version_column: Some("updated".into()),
                ..MergeSpec::default()
            },
            children: Vec::new(),
            cursor_max: Some("2024-01-01T00:00:00Z".into()),
            rejected: vec![RejectedRecord {
                source: "page 1".into(),
                table: None,
                error: "bad".into(),
                raw: json!({"id": 1}),
            }],
        };
        let wire = batch.encode();
        let raw = RawRecordBatch::decode(&wire).unwrap();
        assert_eq!(raw.rows.len(), 3);
        assert_eq!(
            raw.rows.row(0).get(2),
            r#"{"$value":12.5,"Items":["a",{"b":null}]}"#
        );
        assert_eq!(raw.to_values(), batch);
        // Encoding a raw batch writes the very same bytes.
        assert_eq!(raw.encode(), wire);
        // The version rule holds for raw batches too.
        let v2 = String::from_utf8(wire)
            .unwrap()
            .replacen(r#""v":1"#, r#""v":2"#, 1);
        let err = RawRecordBatch::decode(v2.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RecordBatch") && err.contains("version 2"),
            "{err}"
        );
    }
}
