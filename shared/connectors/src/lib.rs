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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use serde_json::Value;
use sluice_contracts::{FetchTask, MergeSpec, Mode, Once, RejectedRecord, Settings, TaskKind};
use uuid::Uuid;

pub mod commercetools;
pub mod framework;
pub mod klaviyo;
pub mod location;
pub mod sailthru;
pub mod wdn;

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
    /// `YYYY-MM-DD`; any JSON for `jsonb`.
    pub rows: Vec<Vec<Value>>,
    /// How the loader merges the rows.
    pub merge: MergeSpec,
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
