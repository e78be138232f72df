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
//! (customers, orders, categories, products) by keyset over id ranges; [`wdn`] fans the What
//! Drops Now catalogue out into once-per-resource child tasks under a concurrency cap
//! shared by every fetcher. [`CONNECTORS`] lists them: adding a connector adds
//! its module, its migration, its sandbox module and one line there.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use serde_json::Value;
use sluice_contracts::{FetchTask, MergeSpec, Mode, Once, RejectedRecord, Settings, TaskKind};
use uuid::Uuid;

pub mod cell;
pub mod commercetools;
pub mod framework;
pub mod klaviyo;
pub mod location;
pub mod sailthru;
pub mod telemetry;
pub mod wdn;

pub use cell::{Cell, RawJson, cells};
pub use framework::{ParamKind, ParamSpec, SettingsError, StreamSpec, TableSpec};

/// Builds one connector from the settings (its own `[connectors.<name>]` section) and the
/// process's [`ConnectorContext`].
pub type Build = fn(&Settings, &ConnectorContext) -> Result<Arc<dyn Connector>, SettingsError>;

/// Every connector of this build, one line each.
pub const CONNECTORS: &[Build] = &[
    sailthru::connector,
    klaviyo::connector,
    commercetools::connector,
    wdn::connector,
];

/// Whether an error's text (with its causes) says a host name did not resolve. Such an
/// error is a misspelt or retired host far more often than a DNS outage, so connectors
/// fail it at once, naming the host, instead of retrying it (see `docs/architecture.md`).
pub fn is_dns_failure(causes: &str) -> bool {
    let lower = causes.to_ascii_lowercase();
    lower.contains("dns error")
        || lower.contains("failed to lookup address")
        || lower.contains("name or service not known")
}

/// An error and its sources, joined with `: ` (what the causes say, for recognising them).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// A JSON value for an error message, cut at 80 characters.
pub fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// Process-wide facts and facilities connectors may adapt to, shared with the service
/// that runs them.
///
/// `fetcher_replicas` is the number of live fetcher processes consuming the fetch queue
/// (RabbitMQ's consumer count of `<prefix>.fetch`); connectors whose outside API has an
/// account-wide rate limit divide it by this count (see `docs/klaviyo.md`). The fetcher
/// service is expected to keep it current; it defaults to 1.
///
/// `permits` are counting semaphores for caps that hold across every fetcher process (an
/// API's concurrent requests, `docs/wdn.md`): [`ConnectorContext::acquire`].
#[derive(Clone)]
pub struct ConnectorContext {
    /// Live fetcher replicas (≥ 1 is assumed; 0 is read as 1).
    pub fetcher_replicas: Arc<AtomicU32>,
    /// Where permits come from.
    pub permits: Arc<PermitSource>,
}

impl std::fmt::Debug for ConnectorContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorContext")
            .field("fetcher_replicas", &self.replicas())
            .field("shared_permits", &self.permits.shared)
            .finish()
    }
}

impl Default for ConnectorContext {
    /// One replica; permits local to this process (unit tests, the planner, tools).
    fn default() -> Self {
        Self {
            fetcher_replicas: Arc::new(AtomicU32::new(1)),
            permits: Arc::new(PermitSource::local()),
        }
    }
}

impl ConnectorContext {
    /// One replica; permits shared with every other process through the source the
    /// service installs ([`PermitSource::install`]) — the fetcher's.
    pub fn shared() -> Self {
        Self {
            permits: Arc::new(PermitSource::shared()),
            ..Self::default()
        }
    }

    /// The current replica count, at least 1.
    pub fn replicas(&self) -> u32 {
        self.fetcher_replicas.load(Ordering::Relaxed).max(1)
    }

    /// Waits for one of the `n` permits called `name`; the permit is held until the
    /// returned guard is dropped.
    ///
    /// # Errors
    /// [`ConnectorError::Transient`] when shared permits are needed but the service has
    /// none at hand (its broker connection is down) or they fail.
    pub async fn acquire(&self, name: &str, n: u32) -> Result<PermitGuard, ConnectorError> {
        self.permits.acquire(name, n).await
    }
}

/// A held permit ([`ConnectorContext::acquire`]); dropping it gives the permit back.
pub struct PermitGuard(#[allow(dead_code)] Box<dyn Send>);

/// Counting semaphores shared by every process of a deployment (implemented by the
/// fetcher over RabbitMQ: `sluice_broker::SharedPermits`).
#[async_trait]
pub trait SharedPermits: Send + Sync {
    /// Waits for one of the `n` permits called `name`; the returned value holds it until
    /// dropped.
    ///
    /// # Errors
    /// Whatever keeps the permit from being taken (a lost connection).
    async fn acquire(&self, name: &str, n: u32) -> anyhow::Result<Box<dyn Send>>;
}

/// Where a process takes its permits: semaphores of its own (`local`), or a
/// [`SharedPermits`] the service installs (`shared`; while none is installed — the broker
/// is reconnecting — taking a permit fails instead of falling back to a local one, which
/// would break the cap across processes).
pub struct PermitSource {
    shared: bool,
    installed: std::sync::RwLock<Option<Arc<dyn SharedPermits>>>,
    local: std::sync::Mutex<BTreeMap<(String, u32), Arc<tokio::sync::Semaphore>>>,
}

impl PermitSource {
    /// Permits of this process alone.
    pub fn local() -> Self {
        Self {
            shared: false,
            installed: std::sync::RwLock::new(None),
            local: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Permits shared across processes, once [`install`](Self::install)ed.
    pub fn shared() -> Self {
        Self {
            shared: true,
            ..Self::local()
        }
    }

    /// Sets (or, with `None`, removes) the shared permits.
    pub fn install(&self, permits: Option<Arc<dyn SharedPermits>>) {
        *self.installed.write().unwrap_or_else(|p| p.into_inner()) = permits;
    }

    async fn acquire(&self, name: &str, n: u32) -> Result<PermitGuard, ConnectorError> {
        if self.shared {
            let installed = self
                .installed
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some(permits) = installed else {
                return Err(ConnectorError::Transient(anyhow::anyhow!(
                    "the shared permits {name:?} are unavailable (no broker connection)"
                )));
            };
            return permits
                .acquire(name, n)
                .await
                .map(PermitGuard)
                .map_err(|e| {
                    ConnectorError::Transient(e.context(format!("taking a permit of {name:?}")))
                });
        }
        let semaphore = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((name.to_string(), n))
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(n.max(1) as usize)))
            .clone();
        let permit = semaphore
            .acquire_owned()
            .await
            .map_err(|e| ConnectorError::Transient(anyhow::anyhow!("permit {name:?}: {e}")))?;
        Ok(PermitGuard(Box::new(permit)))
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

/// One task the planner should create (or a fetch hands on as a child).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTask {
    /// The stream the task's records belong to.
    pub stream: String,
    /// What to fetch.
    pub kind: TaskKind,
    /// For a child: run it at most once per job and resource key, and not while the
    /// resource is fresh (see [`sluice_contracts::Once`]). Ignored on the planner's own
    /// tasks, which always run.
    pub once: Option<Once>,
}

impl PlannedTask {
    /// A task of `stream` fetching `kind`.
    pub fn new(stream: impl Into<String>, kind: TaskKind) -> Self {
        Self {
            stream: stream.into(),
            kind,
            once: None,
        }
    }

    /// The same task, run once per job for the resource `key`, skipped while a fetch of it
    /// is younger than `fresh_for_seconds` (`None`: once per job whatever its age).
    pub fn once(mut self, key: impl Into<String>, fresh_for_seconds: Option<u64>) -> Self {
        self.once = Some(Once {
            key: key.into(),
            fresh_for_seconds,
        });
        self
    }
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
    /// `YYYY-MM-DD`; any JSON for `jsonb` — as a built [`Cell::Json`] or passed-through
    /// [`Cell::Raw`] text, which reach the loader as the same JSON value.
    pub rows: Vec<Vec<Cell>>,
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
                let mut index: std::collections::HashMap<Vec<Cow<'_, Value>>, usize> =
                    std::collections::HashMap::new();
                let mut groups: Vec<Vec<usize>> = Vec::new();
                for (i, row) in rows.iter().enumerate() {
                    let key: Vec<Cow<'_, Value>> =
                        positions.iter().map(|&p| row[p].value()).collect();
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
        let mut slots: Vec<Option<Vec<Cell>>> = rows.into_iter().map(Some).collect();
        let mut out: Vec<TableRows> = Vec::new();
        let mut current: Vec<Vec<Cell>> = Vec::new();
        let mut current_keys: Vec<Vec<Value>> = Vec::new();
        let mut named: std::collections::HashSet<Vec<Value>> = std::collections::HashSet::new();
        let finish = |rows: Vec<Vec<Cell>>, keys: Vec<Vec<Value>>| TableRows {
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
                    let key: Vec<Value> = scope_positions
                        .iter()
                        .map(|&p| row[p].value().into_owned())
                        .collect();
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

    /// Checks a job's stream and parameters as [`Connector::plan`] would, without reading
    /// any setting of the account and without touching the outside system, so that
    /// `sluicectl sync` refuses a mistake before a job is recorded, with the message the
    /// planner would have failed the job with. The default accepts everything (the
    /// planner still checks).
    ///
    /// # Errors
    /// [`ConnectorError::InvalidParams`] naming the stream or parameter.
    fn validate(&self, job: &JobSpec) -> Result<(), ConnectorError> {
        let _ = job;
        Ok(())
    }

    /// Checks that `account` reaches the outside system with its credentials — the
    /// cheapest authenticated request there is — without a job, and says what was
    /// checked: `sluicectl check <connector> [--account A]`. The default has nothing to
    /// check.
    ///
    /// # Errors
    /// [`ConnectorError::InvalidParams`] for an account that is not configured (naming
    /// the settings); the request's error otherwise (refused credentials, unreachable).
    async fn check(&self, account: &str) -> Result<String, ConnectorError> {
        let _ = account;
        Ok(format!("{}: nothing to check", self.name()))
    }

    /// A human name for a task stream of a job whose resolved parameters (`Plan.params`,
    /// kept in the ledger) are `params`, where the stream's name is an id: Klaviyo's
    /// `events/<metric id>` → the metric's name. `sluicectl freshness` shows it beside the
    /// stream. The default has none.
    fn stream_label(&self, stream: &str, params: &Value) -> Option<String> {
        let _ = (stream, params);
        None
    }

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
