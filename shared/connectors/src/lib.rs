//! Connectors: the API knowledge of sluice. One module per outside system; each exposes a
//! settings struct and a `build` function returning a [`Connector`].
//!
//! A connector does two things:
//! - [`Connector::plan`] (called by the planner): validate a job's parameters and split the
//!   job into tasks ([`PlannedTask`]);
//! - [`Connector::fetch`] (called by a fetcher): run one task and return rows per destination
//!   table, records it could not read, and child tasks.
//!
//! Connectors know HTTP, files and record shapes; they never touch the database. The rows
//! they return name their destination table and columns; the table itself is created by a
//! migration in `migrations/`.
//!
//! Layout: [`framework`] is what every connector declares and reads through the same code
//! (its settings section with defaults, streams with typed parameters and tables, its own
//! task payloads, row collection); [`location`] opens export locations (path, `file://`,
//! `http(s)://`, `s3://`) through `object_store`; [`sailthru`] reads Sailthru
//! data-exporter archives; [`klaviyo`] extracts from Klaviyo's JSON:API (events, profiles,
//! metrics, lists, segments, members); [`commercetools`] reads a commercetools project
//! (customers, orders, categories, products) by keyset over id ranges. [`CONNECTORS`] lists them: adding a connector adds
//! its module, its migration, its sandbox module and one line there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use serde_json::Value;
use sluice_contracts::{FetchTask, MergeSpec, Mode, RejectedRecord, Settings, TaskKind};
use uuid::Uuid;

pub mod commercetools;
pub mod framework;
pub mod klaviyo;
pub mod location;
pub mod sailthru;
mod telemetry;

pub use framework::{ParamKind, ParamSpec, SettingsError, StreamSpec, TableSpec};

/// Builds one connector from the settings (its own `[connectors.<name>]` section) and the
/// process's [`ConnectorContext`].
pub type Build = fn(&Settings, &ConnectorContext) -> Result<Arc<dyn Connector>, SettingsError>;

/// Every connector of this build, one line each.
pub const CONNECTORS: &[Build] = &[
    sailthru::connector,
    klaviyo::connector,
    commercetools::connector,
];

/// A JSON value for an error message, cut at 80 characters.
pub fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// Process-wide facts connectors may adapt to, shared with the service that runs them.
///
/// `fetcher_replicas` is the number of live fetcher processes consuming the fetch queue
/// (RabbitMQ's consumer count of `<prefix>.fetch`); connectors whose outside API has an
/// account-wide rate limit divide it by this count (see `docs/klaviyo.md`). The fetcher
/// service is expected to keep it current; it defaults to 1.
#[derive(Debug, Clone)]
pub struct ConnectorContext {
    /// Live fetcher replicas (≥ 1 is assumed; 0 is read as 1).
    pub fetcher_replicas: Arc<AtomicU32>,
}

impl Default for ConnectorContext {
    fn default() -> Self {
        Self {
            fetcher_replicas: Arc::new(AtomicU32::new(1)),
        }
    }
}

impl ConnectorContext {
    /// The current replica count, at least 1.
    pub fn replicas(&self) -> u32 {
        self.fetcher_replicas.load(Ordering::Relaxed).max(1)
    }
}

/// A job as the planner hands it to [`Connector::plan`].
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The job id.
    pub job_id: Uuid,
    /// The job's stream (for Sailthru, `export`).
    pub stream: String,
    /// Credential set.
    pub account: String,
    /// The request's parameters, unvalidated.
    pub params: Value,
    /// Full or incremental.
    pub mode: Mode,
    /// The stream's bookmark from `sluice.stream_state`, for incremental jobs.
    pub bookmark: Option<Value>,
}

/// One task the planner should create.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTask {
    /// The stream the task's records belong to.
    pub stream: String,
    /// What to fetch.
    pub kind: TaskKind,
}

/// The result of planning a job.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The tasks, in a stable order (their index makes their id).
    pub tasks: Vec<PlannedTask>,
    /// Parameters after validation and defaults; copied into every task.
    pub params: Value,
    /// Things skipped on purpose that the operator should know of (shown by `jobs show`).
    pub warnings: Vec<String>,
    /// Input that could not be planned (an unknown member); stored in `sluice.rejected_rows`.
    pub rejected: Vec<RejectedRecord>,
}

/// Rows for one destination table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableRows {
    /// Schema-qualified table (`sailthru.profile`).
    pub table: String,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows aligned with `columns`. Values: JSON null, numbers, booleans, strings; timestamps
    /// as ISO-8601 strings (no offset for `timestamp`, `Z` for `timestamptz`); dates as
    /// `YYYY-MM-DD`; any JSON for `jsonb`.
    pub rows: Vec<Vec<Value>>,
    /// How the loader merges the rows.
    pub merge: MergeSpec,
}

impl TableRows {
    /// Whether this says nothing to the loader: no row, and no parent whose collection it
    /// replaces (a child table naming parents in `scope_keys` empties their collections
    /// even without rows).
    pub fn is_void(&self) -> bool {
        self.rows.is_empty() && self.merge.scope_keys.is_empty()
    }

    /// Splits the rows into at most `pieces` batches of about equal row counts, in row
    /// order, each with this table's columns and merge. A table with a `replace_scope`
    /// is split between parents only — every piece holds all rows of each parent it
    /// carries and names exactly those parents in `scope_keys` (parents named in
    /// `scope_keys` without a row go with the first piece) — so each piece is a whole
    /// replacement of its parents' collections, as the loader requires.
    pub fn split(self, pieces: usize) -> Vec<TableRows> {
        let pieces = pieces.clamp(1, self.rows.len().max(1));
        if pieces == 1 {
            return vec![self];
        }
        let TableRows {
            table,
            columns,
            rows,
            merge,
        } = self;
        let total = rows.len();
        // Groups of row indices that must stay together, in order of first appearance.
        let groups: Vec<Vec<usize>> = match &merge.replace_scope {
            None => (0..total).map(|i| vec![i]).collect(),
            Some(scope) => {
                let positions: Vec<usize> = scope
                    .iter()
                    .filter_map(|c| columns.iter().position(|k| k == c))
                    .collect();
                let mut index: std::collections::HashMap<Vec<&Value>, usize> =
                    std::collections::HashMap::new();
                let mut groups: Vec<Vec<usize>> = Vec::new();
                for (i, row) in rows.iter().enumerate() {
                    let key: Vec<&Value> = positions.iter().map(|&p| &row[p]).collect();
                    let g = *index.entry(key).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[g].push(i);
                }
                groups
            }
        };
        let scope_positions: Vec<usize> = merge
            .replace_scope
            .iter()
            .flatten()
            .filter_map(|c| columns.iter().position(|k| k == c))
            .collect();
        let per_piece = total.div_ceil(pieces);
        let mut slots: Vec<Option<Vec<Value>>> = rows.into_iter().map(Some).collect();
        let mut out: Vec<TableRows> = Vec::new();
        let mut current: Vec<Vec<Value>> = Vec::new();
        let mut current_keys: Vec<Vec<Value>> = Vec::new();
        let mut named: std::collections::HashSet<Vec<Value>> = std::collections::HashSet::new();
        let finish = |rows: Vec<Vec<Value>>, keys: Vec<Vec<Value>>| TableRows {
            table: table.clone(),
            columns: columns.clone(),
            rows,
            merge: MergeSpec {
                scope_keys: if merge.scope_keys.is_empty() {
                    Vec::new()
                } else {
                    keys
                },
                ..merge.clone()
            },
        };
        for group in groups {
            if !current.is_empty() && current.len() + group.len() > per_piece {
                out.push(finish(
                    std::mem::take(&mut current),
                    std::mem::take(&mut current_keys),
                ));
            }
            for (n, i) in group.into_iter().enumerate() {
                let row = slots[i].take().unwrap_or_default();
                if n == 0 && !scope_positions.is_empty() {
                    let key: Vec<Value> = scope_positions.iter().map(|&p| row[p].clone()).collect();
                    named.insert(key.clone());
                    current_keys.push(key);
                }
                current.push(row);
            }
        }
        out.push(finish(current, current_keys));
        // Parents whose collection is empty have no row: the first piece speaks for them.
        if let Some(first) = out.first_mut()
            && !merge.scope_keys.is_empty()
        {
            first.merge.scope_keys.extend(
                merge
                    .scope_keys
                    .iter()
                    .filter(|k| !named.contains(*k))
                    .cloned(),
            );
        }
        out
    }
}

/// Where a connector hands over rows while a task runs — a page at a time — so that a
/// task of many pages holds one page in memory, not all of them, and the loader starts
/// on the first page while the rest is fetched. Each call's tables are published as parts
/// of the running task before it returns; what [`Connector::fetch_paged`] finally returns
/// follows them (its last part carries the rejects, the children and the cursor).
#[async_trait]
pub trait Emit: Send {
    /// Publishes `tables` (those that are [`TableRows::is_void`] are skipped) as parts of
    /// the running task.
    ///
    /// # Errors
    /// [`ConnectorError::Transient`] when the parts could not be published: the task is
    /// retried from its start, and the loader skips the parts it already has.
    async fn emit(&mut self, tables: Vec<TableRows>) -> Result<(), ConnectorError>;
}

/// An [`Emit`] that keeps what it is handed: [`Connector::fetch`] of a paged connector
/// and tests read a whole task's rows through it.
#[derive(Debug, Default)]
pub struct Collect(pub Vec<TableRows>);

#[async_trait]
impl Emit for Collect {
    async fn emit(&mut self, tables: Vec<TableRows>) -> Result<(), ConnectorError> {
        self.0.extend(tables.into_iter().filter(|t| !t.is_void()));
        Ok(())
    }
}

/// Runs [`Connector::fetch_paged`] with a [`Collect`] and returns the whole output, the
/// emitted tables first: a paged connector's `fetch`.
///
/// # Errors
/// The connector's.
pub async fn fetch_all<C: Connector + ?Sized>(
    connector: &C,
    task: &FetchTask,
) -> Result<FetchOutput, ConnectorError> {
    let mut collect = Collect::default();
    let mut output = connector.fetch_paged(task, &mut collect).await?;
    collect.0.append(&mut output.tables);
    output.tables = collect.0;
    Ok(output)
}

/// What one task produced.
#[derive(Debug, Clone, Default)]
pub struct FetchOutput {
    /// Rows per table; each becomes one `RecordBatch` part.
    pub tables: Vec<TableRows>,
    /// Records that could not be read, each with a reason naming file and line or field.
    pub rejected: Vec<RejectedRecord>,
    /// Follow-up tasks (next page, split windows).
    pub children: Vec<PlannedTask>,
    /// The greatest cursor value among the task's records.
    pub cursor_max: Option<String>,
}

/// Why a connector call failed. The variant decides what happens to the task.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The job's parameters are wrong: the job fails with this message, nothing is fetched.
    #[error("invalid job parameters: {0}")]
    InvalidParams(String),
    /// Worth retrying later (timeouts, 5xx, 429 beyond the in-process wait, resets).
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help (4xx, unreadable data): the task is parked.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

impl ConnectorError {
    /// True for errors that go to a retry tier.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectorError::Transient(_))
    }
}

/// An outside system.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The connector's name in jobs and messages (`sailthru`).
    fn name(&self) -> &'static str;

    /// The streams it offers, with their parameters and tables (what `sluicectl sync` and
    /// `sluicectl streams` show).
    fn streams(&self) -> Vec<StreamSpec>;

    /// Validates the job and splits it into tasks.
    ///
    /// # Errors
    /// [`ConnectorError::InvalidParams`] for a bad request (the job fails with the message);
    /// transient errors make the planner try again later.
    async fn plan(&self, job: &JobSpec) -> Result<Plan, ConnectorError>;

    /// Runs one task.
    ///
    /// # Errors
    /// Transient errors are retried through the retry tiers; permanent ones park the task.
    async fn fetch(&self, task: &FetchTask) -> Result<FetchOutput, ConnectorError>;

    /// Runs one task, handing rows to `emit` as they arrive (a connector whose tasks read
    /// many pages overrides this, so a task holds one page in memory); the returned
    /// output's tables, rejects, children and cursor follow the emitted parts. The default
    /// runs [`Connector::fetch`] and emits nothing.
    ///
    /// # Errors
    /// As [`Connector::fetch`]; an error after some parts were emitted retries or parks the
    /// whole task (a retry emits the same parts again and the loader skips them).
    async fn fetch_paged(
        &self,
        task: &FetchTask,
        emit: &mut dyn Emit,
    ) -> Result<FetchOutput, ConnectorError> {
        let _ = emit;
        self.fetch(task).await
    }
}

/// The connectors this build knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    connectors: BTreeMap<&'static str, Arc<dyn Connector>>,
}

impl Registry {
    /// Builds every connector of [`CONNECTORS`] from the settings, with a default
    /// [`ConnectorContext`] (one fetcher replica).
    ///
    /// # Errors
    /// A connector's settings section that cannot be read, naming the key.
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        Self::from_settings_with(settings, ConnectorContext::default())
    }

    /// Builds every connector of [`CONNECTORS`] from the settings and a shared
    /// [`ConnectorContext`].
    ///
    /// # Errors
    /// A connector's settings section that cannot be read, naming the key.
    pub fn from_settings_with(
        settings: &Settings,
        ctx: ConnectorContext,
    ) -> Result<Self, SettingsError> {
        let mut registry = Self::default();
        for build in CONNECTORS {
            registry.insert(build(settings, &ctx)?);
        }
        Ok(registry)
    }

    /// Adds or replaces a connector (tests use this to add fakes).
    pub fn insert(&mut self, connector: Arc<dyn Connector>) {
        self.connectors.insert(connector.name(), connector);
    }

    /// The connector called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Connector>> {
        self.connectors.get(name).cloned()
    }

    /// The known names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.connectors.keys().copied().collect()
    }

    /// Every connector, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Connector>> {
        self.connectors.values()
    }
}
