//! End-to-end test harness for sluice.
//!
//! [`TestEnv::new`] gives each test its own Postgres database (`sluice_test_<id>`) and its
//! own RabbitMQ prefix (`test_<id>`) on the real servers at their default local addresses
//! (override with `SLUICE_TEST_DATABASE_URL` — a URL whose database part is replaced — and
//! `SLUICE_TEST_AMQP_URL`), so tests run in parallel and [`TestEnv::teardown`] leaves
//! nothing behind.
//!
//! Services run in-process ([`TestEnv::start_planner`], …) or, for crash tests, as real
//! processes of the workspace's binaries ([`TestEnv::spawn`]) that can be SIGKILLed.

pub mod poison;
pub mod redshift;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_broker::{Broker, Headers, Route};
use sluice_contracts::{JobRequest, MESSAGE_VERSION, Mode, Settings};
use sluice_store::Pool;
use sluice_store::ledger::{self, JobReport};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The tables of schema `sailthru` (views excluded), without the schema, as the Sailthru
/// connector declares them (`sluice_connectors::sailthru::records::TABLES`).
pub fn sailthru_tables() -> Vec<&'static str> {
    sluice_connectors::sailthru::records::TABLES
        .iter()
        .map(|t| t.name.trim_start_matches("sailthru."))
        .collect()
}

/// The rows of each table and view of schema `sailthru` after loading
/// [`sailthru_sample`], counted by hand from the archive.
pub const SAILTHRU_SAMPLE_COUNTS: [(&str, i64); 12] = [
    ("blast", 20),
    ("message_blast", 20),
    ("message_blast_action", 8),
    ("message_blast_flat", 23),
    ("message_transactional", 20),
    ("message_transactional_action", 15),
    ("message_transactional_flat", 28),
    ("profile", 20),
    ("profile_geo", 508),
    ("profile_browser", 77),
    ("profile_lists_signup", 851),
    ("profile_vars", 1525),
];

/// The repository root (where `tests/fixtures` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real Sailthru sample export shipped with the repository.
pub fn sailthru_sample() -> PathBuf {
    repo_root().join("tests/fixtures/sailthru/sailthru_data-exporter_samples.zip")
}

fn base_database_url() -> String {
    std::env::var("SLUICE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn amqp_url() -> String {
    std::env::var("SLUICE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A benchmark's numeric command-line arguments, in order (`cargo bench --bench NAME --
/// 1000 4000`); words (such as the `--bench` cargo passes, or a source name) are skipped.
pub fn numeric_args() -> Vec<u64> {
    std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// Midnight UTC of the given day.
///
/// # Panics
/// For a day that does not exist.
pub fn utc(year: i32, month: u32, day: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone as _;
    chrono::Utc
        .with_ymd_and_hms(year, month, day, 0, 0, 0)
        .single()
        .expect("valid date")
}

/// CPU time (user + system, seconds) process `pid` has used, from `/proc/<pid>/stat`; 0
/// when it cannot be read (the process is gone, or not Linux). Clock ticks are taken as
/// Linux's 100 per second.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // utime and stime (fields 14 and 15).
    stat_seconds(&stat, 11..13)
}

/// The sum of the clock-tick fields `after` of a `/proc/<pid>/stat` line, in seconds (Linux's
/// 100 ticks per second). The command name (field 2) may hold spaces, so fields are counted
/// after its `)`, where the state is at 0 (utime is at 11); a field missing or unreadable
/// counts 0.
fn stat_seconds(stat: &str, after: std::ops::Range<usize>) -> f64 {
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    rest.split_whitespace()
        .skip(after.start)
        .take(after.len())
        .map(|v| v.parse::<f64>().unwrap_or(0.0))
        .sum::<f64>()
        / 100.0
}

/// CPU time (user + system, seconds) of every process whose command name (`comm`, field 2
/// of `/proc/<pid>/stat`) is `comm`, with the CPU of their children already exited and
/// waited for (`cutime`, `cstime`): PostgreSQL's backends are children of the postmaster,
/// so a backend that exits during a run still counts. 0 when `/proc` cannot be read.
/// For the benchmarks' CPU per record of the services sluice runs beside (`postgres`,
/// RabbitMQ's `beam.smp`); on a shared machine it also counts other clients' work.
pub fn cpu_seconds_of(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| {
            let name = stat.rsplit_once(')')?.0.split_once('(')?.1;
            // utime, stime, cutime, cstime (fields 14 to 17).
            (name == comm).then(|| stat_seconds(&stat, 11..15))
        })
        .sum()
}

/// Serves a generated account from the sandbox in process, GETs the first page of 1,000
/// Placed Order events as the connector asks for it, and stops the sandbox. Returns the
/// body and the metric's id: the page `benches/fetch_cpu.rs` and `benches/load_cpu.rs`
/// measure (`include=profile` when `include_profile`).
///
/// # Errors
/// The sandbox cannot start or answers with an error.
pub fn klaviyo_events_page(include_profile: bool) -> anyhow::Result<(Vec<u8>, String)> {
    let spec = sluice_sandbox::klaviyo::KlaviyoDataSpec {
        seed: 15,
        profiles: 5_000,
        start: utc(2024, 1, 1),
        end: utc(2024, 3, 1),
        events_per_metric: 5_000,
        ..sluice_sandbox::klaviyo::KlaviyoDataSpec::default()
    };
    let metric = sluice_sandbox::klaviyo::metric_id(&spec, "Placed Order")
        .ok_or_else(|| anyhow::anyhow!("the generated account has no Placed Order metric"))?;
    let config = sluice_sandbox::klaviyo::KlaviyoConfig {
        data: spec,
        rate_limit_scale: None,
        ..sluice_sandbox::klaviyo::KlaviyoConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = tokio_util::sync::CancellationToken::new();
        let mut sandbox_config = sluice_sandbox::Config::default().with(&config);
        sandbox_config.cache_dir = std::env::temp_dir().join("sluice-bench-events-page");
        let server = tokio::spawn(sluice_sandbox::run(sandbox_config, listener, stop.clone()));
        let mut query = vec![
            (
                "filter",
                format!(
                    "and(equals(metric_id,\"{metric}\"),greater-or-equal(datetime,2024-01-01T00:00:00Z),less-than(datetime,2024-03-01T00:00:00Z))"
                ),
            ),
            ("sort", "datetime".to_string()),
            ("page[size]", "1000".to_string()),
        ];
        if include_profile {
            query.push(("include", "profile".to_string()));
        }
        let response = reqwest::Client::new()
            .get(format!("{url}/api/events"))
            .query(&query)
            .header("Authorization", "Klaviyo-API-Key pk_sandbox")
            .header("revision", "2026-07-15")
            .header("accept", "application/vnd.api+json")
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?.to_vec();
        anyhow::ensure!(
            status.is_success(),
            "the sandbox answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        stop.cancel();
        server.await??;
        anyhow::Ok(body)
    })?;
    Ok((body, metric))
}

/// The events task whose middle page [`klaviyo_events_page`] serves: `events/<metric>`,
/// Placed Order of January and February 2024 (UTC), for the CPU benchmarks.
pub fn klaviyo_events_task(metric: &str) -> sluice_contracts::FetchTask {
    sluice_contracts::FetchTask {
        v: 1,
        task_id: "bench".into(),
        job_id: Uuid::nil(),
        connector: "klaviyo".into(),
        stream: format!("events/{metric}"),
        account: "default".into(),
        kind: sluice_contracts::TaskKind::TimeRange {
            start: utc(2024, 1, 1),
            end: utc(2024, 3, 1),
            partition: Some(metric.to_string()),
        },
        attempt: 1,
        params: serde_json::Value::Null,
        once: None,
    }
}

/// The first three fields of `/proc/loadavg` (1, 5 and 15 minutes), for reading a
/// benchmark's wall figures; empty where unreadable.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Klaviyo sandbox's request counters (`GET /klaviyo/_admin/stats`, see
/// `sluice_sandbox::klaviyo`) of the sandbox at `base`.
///
/// # Errors
/// The sandbox is unreachable or answers with an error.
pub async fn klaviyo_stats(base: &str) -> anyhow::Result<serde_json::Value> {
    Ok(reqwest::get(format!("{base}/klaviyo/_admin/stats"))
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// One test's isolated world.
pub struct TestEnv {
    /// Unique id of this environment.
    pub id: String,
    /// Settings pointing at this environment's database and prefix, admin ports 0.
    pub settings: Settings,
    /// Pool on this environment's database.
    pub pool: Pool,
    /// Cancels every in-process service of this environment.
    pub shutdown: CancellationToken,
    services: Vec<tokio::task::JoinHandle<()>>,
    children: Vec<(String, Child)>,
    extra_env: Vec<(String, String)>,
    /// Destination databases of this environment ([`TestEnv::add_redshift_stand_in`]),
    /// dropped at teardown.
    extra_databases: Vec<String>,
    /// Shared permits (name, count) whose RabbitMQ queues teardown deletes.
    permits: Vec<(String, u32)>,
}

impl TestEnv {
    /// Creates the database (migrated) and declares the topology under a fresh prefix, with
    /// a delivery limit of 4 (small, so the poison-task test reaches it quickly; crash tests
    /// stay below it).
    ///
    /// # Errors
    /// Postgres or RabbitMQ unreachable.
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_delivery_limit(4).await
    }

    /// [`TestEnv::new`] with the work queues' `x-delivery-limit` set to `limit` (the
    /// production default is 10).
    ///
    /// # Errors
    /// Postgres or RabbitMQ unreachable.
    pub async fn with_delivery_limit(limit: u16) -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string()[..12].to_string();
        let base = base_database_url();
        let (head, _) = base
            .rsplit_once('/')
            .context("database URL without a database")?;
        let env = vec![
            (
                "SLUICE__DATABASE__URL".to_string(),
                format!("{head}/sluice_test_{id}"),
            ),
            ("SLUICE__DATABASE__POOL_SIZE".to_string(), "6".to_string()),
            (
                "SLUICE__AMQP__DELIVERY_LIMIT".to_string(),
                limit.to_string(),
            ),
            ("SLUICE__AMQP__URL".to_string(), amqp_url()),
            ("SLUICE__AMQP__PREFIX".to_string(), format!("test_{id}")),
            (
                "SLUICE__PLANNER__ADMIN_BIND".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            (
                "SLUICE__FETCHER__ADMIN_BIND".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            (
                "SLUICE__LOADER__ADMIN_BIND".to_string(),
                "127.0.0.1:0".to_string(),
            ),
        ];
        let settings = Settings::load_from(None, env)?;
        let pool = sluice_store::connect(&settings.database).await?;
        sluice_store::migrate(&pool).await?;
        let broker = Broker::connect(&settings.amqp, "sluice-e2e").await?;
        broker.close().await;
        Ok(Self {
            id,
            settings,
            pool,
            shutdown: CancellationToken::new(),
            services: Vec::new(),
            children: Vec::new(),
            extra_env: Vec::new(),
            extra_databases: Vec::new(),
            // The wdn connector's default cap.
            permits: vec![("wdn".into(), 5)],
        })
    }

    /// The environment variables that point a process at this environment.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        vec![
            (
                "SLUICE__DATABASE__URL".into(),
                self.settings.database.url().to_string(),
            ),
            (
                "SLUICE__AMQP__URL".into(),
                self.settings.amqp.url().to_string(),
            ),
            (
                "SLUICE__AMQP__PREFIX".into(),
                self.settings.amqp.prefix.clone(),
            ),
            (
                "SLUICE__AMQP__DELIVERY_LIMIT".into(),
                self.settings.amqp.delivery_limit.to_string(),
            ),
            ("SLUICE__PLANNER__ADMIN_BIND".into(), "127.0.0.1:0".into()),
            ("SLUICE__FETCHER__ADMIN_BIND".into(), "127.0.0.1:0".into()),
            ("SLUICE__LOADER__ADMIN_BIND".into(), "127.0.0.1:0".into()),
            ("SLUICE__LOG__LEVEL".into(), "info".into()),
        ]
        .into_iter()
        .chain(self.extra_env.iter().cloned())
        .collect()
    }

    /// Starts a sandbox whose Klaviyo emulation is configured by `klaviyo`, and points
    /// this environment's `default` Klaviyo account at it (key `pk_sandbox`). Call before
    /// starting services. Returns the sandbox's base URL.
    ///
    /// # Errors
    /// The port cannot be bound or the configuration is invalid.
    pub async fn start_klaviyo_sandbox(
        &mut self,
        klaviyo: sluice_sandbox::klaviyo::KlaviyoConfig,
    ) -> anyhow::Result<String> {
        let url = self.spawn_sandbox(klaviyo).await?;
        let key = "pk_sandbox".to_string();
        let section = self.connector_settings("klaviyo");
        section.set("accounts.default.api_key", key.clone());
        section.set("accounts.default.base_url", url.clone());
        self.extra_env.push((
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY".into(),
            key,
        ));
        self.extra_env.push((
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__BASE_URL".into(),
            url.clone(),
        ));
        Ok(url)
    }

    /// The `[connectors.<name>]` section of this environment's in-process settings, to
    /// set a connector's keys (`env.connector_settings("klaviyo").set("dense_pages", 2)`);
    /// spawned processes get them only through environment variables.
    pub fn connector_settings(&mut self, name: &str) -> &mut sluice_contracts::config::Section {
        self.settings
            .connectors
            .entry(name.to_string())
            .or_default()
    }

    /// Starts a sandbox whose commercetools emulation is configured by `commercetools` (the
    /// Klaviyo one with its defaults) and points this environment's `default` commercetools
    /// account at its generated project (client id and secret of the config's first
    /// client), for in-process services and spawned ones. Call before starting services.
    /// Returns the sandbox's base URL (both the auth and the API URL).
    ///
    /// # Errors
    /// The port cannot be bound or the configuration is invalid.
    pub async fn start_commercetools_sandbox(
        &mut self,
        commercetools: sluice_sandbox::commercetools::CommercetoolsConfig,
    ) -> anyhow::Result<String> {
        let client = commercetools
            .clients
            .first()
            .cloned()
            .context("the commercetools config has no client")?;
        let project = commercetools.project_key.clone();
        let url = self
            .spawn_sandbox_with(sluice_sandbox::Config::default().with(&commercetools))
            .await?;
        for (key, value) in [
            ("api_url", url.clone()),
            ("auth_url", url.clone()),
            ("project_key", project),
            ("client_id", client.client_id),
            ("client_secret", client.client_secret),
        ] {
            self.connector_settings("commercetools")
                .set(&format!("accounts.default.{key}"), value.clone());
            self.extra_env.push((
                format!(
                    "SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__{}",
                    key.to_uppercase()
                ),
                value,
            ));
        }
        Ok(url)
    }

    /// Starts a sandbox whose WDN emulation is configured by `wdn` (the other emulators
    /// with their defaults) and points this environment's `wdn` connector at it (its
    /// `base_url`, for in-process services and spawned ones). Call before starting
    /// services. Returns the WDN API's base URL (`<sandbox>/wdn/api/v1`).
    ///
    /// # Errors
    /// The port cannot be bound.
    pub async fn start_wdn_sandbox(
        &mut self,
        wdn: sluice_sandbox::wdn::WdnConfig,
    ) -> anyhow::Result<String> {
        let url = self
            .spawn_sandbox_with(sluice_sandbox::Config::default().with(&wdn))
            .await?;
        let base = format!("{url}/wdn/api/v1");
        self.set_connector_setting("wdn", "base_url", &base);
        Ok(base)
    }

    /// Sets one key of a connector's settings section for in-process services and spawned
    /// ones (`SLUICE__CONNECTORS__<NAME>__<KEY>`; `.` in `key` separates levels). The
    /// permits of `wdn`'s `max_concurrency` are deleted at teardown with the topology.
    pub fn set_connector_setting(&mut self, connector: &str, key: &str, value: &str) {
        self.connector_settings(connector)
            .set(key, value.to_string());
        self.extra_env.push((
            format!(
                "SLUICE__CONNECTORS__{}__{}",
                connector.to_uppercase(),
                key.to_uppercase().replace('.', "__")
            ),
            value.to_string(),
        ));
        if connector == "wdn"
            && key == "max_concurrency"
            && let Ok(n) = value.parse()
        {
            self.permits.push(("wdn".into(), n));
        }
    }

    /// Turns on the planner's sync API (the commercetools–Klaviyo plugin's HTTP API) for
    /// jobs into `destination`, on a free loopback port, for in-process planners and
    /// spawned ones. Call before starting the planner. Returns its base URL.
    ///
    /// # Errors
    /// No free port.
    pub fn enable_sync_api(&mut self, destination: &str) -> anyhow::Result<String> {
        // The port is free when chosen; the planner binds it moments later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let bind = format!("127.0.0.1:{port}");
        self.settings.sync_api.enabled = Some(true);
        self.settings.sync_api.bind.clone_from(&bind);
        self.settings.sync_api.destination = destination.to_string();
        self.extra_env.extend([
            ("SLUICE__SYNC_API__ENABLED".to_string(), "true".to_string()),
            ("SLUICE__SYNC_API__BIND".to_string(), bind.clone()),
            (
                "SLUICE__SYNC_API__DESTINATION".to_string(),
                destination.to_string(),
            ),
        ]);
        Ok(format!("http://{bind}"))
    }

    /// Adds a destination `name` of kind `klaviyo` writing with this environment's
    /// `default` Klaviyo account ([`TestEnv::start_klaviyo_sandbox`] first), with `keys`
    /// (lowercase: `preferred_currency`, `poll_interval_ms`, …) besides the kind, for
    /// in-process services and spawned ones. Call before starting services.
    pub fn add_klaviyo_destination(&mut self, name: &str, keys: &[(&str, &str)]) {
        let mut section = sluice_contracts::config::Section::default();
        section.set("kind", "klaviyo");
        let prefix = format!("SLUICE__DESTINATIONS__{}__", name.to_uppercase());
        self.extra_env
            .push((format!("{prefix}KIND"), "klaviyo".to_string()));
        for (key, value) in keys {
            // As the settings loader parses environment variables (`try_parsing`).
            let typed: serde_json::Value = value
                .parse::<i64>()
                .map(serde_json::Value::from)
                .or_else(|_| value.parse::<f64>().map(serde_json::Value::from))
                .or_else(|_| value.parse::<bool>().map(serde_json::Value::from))
                .unwrap_or_else(|_| serde_json::Value::from(*value));
            section.set(key, typed);
            self.extra_env
                .push((format!("{prefix}{}", key.to_uppercase()), value.to_string()));
        }
        self.settings.destinations.insert(name.to_string(), section);
        // A destination called `klaviyo` would turn the planner's sync API on at its fixed
        // default port, which parallel tests share: on only through `enable_sync_api`.
        if self.settings.sync_api.enabled.is_none() {
            self.settings.sync_api.enabled = Some(false);
            self.extra_env
                .push(("SLUICE__SYNC_API__ENABLED".to_string(), "false".to_string()));
        }
    }

    /// Starts a planner in this process.
    pub fn start_planner(&mut self) {
        let (settings, stop) = (self.settings.clone(), self.shutdown.clone());
        self.services.push(tokio::spawn(async move {
            if let Err(e) = sluice_planner::run(settings, stop).await {
                eprintln!("planner: {e:#}");
            }
        }));
    }

    /// Starts a planner in this process that also knows the test connector `poison`.
    pub fn start_planner_with_poison(&mut self) {
        let (settings, stop) = (self.settings.clone(), self.shutdown.clone());
        self.services.push(tokio::spawn(async move {
            let mut registry =
                sluice_connectors::Registry::from_settings(&settings).expect("connector settings");
            registry.insert(std::sync::Arc::new(poison::PoisonConnector));
            if let Err(e) = sluice_planner::run_with(settings, registry, stop).await {
                eprintln!("planner: {e:#}");
            }
        }));
    }

    /// The process id of a spawned process.
    pub fn pid(&self, index: usize) -> u32 {
        self.children[index].1.id()
    }

    /// How a spawned process ended, or `None` while it runs.
    pub fn exit_status(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        self.children[index].1.try_wait().ok().flatten()
    }

    /// Whether a spawned process is still running.
    pub fn is_running(&mut self, index: usize) -> bool {
        matches!(self.children[index].1.try_wait(), Ok(None))
    }

    /// Starts a fetcher in this process.
    pub fn start_fetcher(&mut self) {
        let (settings, stop) = (self.settings.clone(), self.shutdown.clone());
        self.services.push(tokio::spawn(async move {
            if let Err(e) = sluice_fetcher::run(settings, stop).await {
                eprintln!("fetcher: {e:#}");
            }
        }));
    }

    /// Starts a loader in this process.
    pub fn start_loader(&mut self) {
        let (settings, stop) = (self.settings.clone(), self.shutdown.clone());
        self.services.push(tokio::spawn(async move {
            if let Err(e) = sluice_loader::run(settings, stop).await {
                eprintln!("loader: {e:#}");
            }
        }));
    }

    /// Starts planner, `fetchers` fetchers and a loader in this process.
    pub fn start_pipeline(&mut self, fetchers: usize) {
        self.start_planner();
        for _ in 0..fetchers {
            self.start_fetcher();
        }
        self.start_loader();
    }

    /// Starts a sandbox on port 0 in this process (Klaviyo emulation at its defaults);
    /// returns its base URL.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub async fn start_sandbox(&mut self) -> anyhow::Result<String> {
        self.spawn_sandbox(sluice_sandbox::klaviyo::KlaviyoConfig::default())
            .await
    }

    async fn spawn_sandbox(
        &mut self,
        klaviyo: sluice_sandbox::klaviyo::KlaviyoConfig,
    ) -> anyhow::Result<String> {
        self.spawn_sandbox_with(sluice_sandbox::Config::default().with(&klaviyo))
            .await
    }

    /// Serves a sandbox configured by `config` (its cache folder replaced by this
    /// environment's), stopped with this environment; returns its base URL.
    async fn spawn_sandbox_with(
        &mut self,
        mut config: sluice_sandbox::Config,
    ) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        config.cache_dir = std::env::temp_dir().join(format!("sluice-e2e-sandbox-{}", self.id));
        let stop = self.shutdown.clone();
        self.services.push(tokio::spawn(async move {
            if let Err(e) = sluice_sandbox::run(config, listener, stop).await {
                eprintln!("sandbox: {e:#}");
            }
        }));
        Ok(url)
    }

    /// Starts a sandbox serving a generated Sailthru export and fetches it once (so
    /// generation does not count against a job). Returns the export's URL, the exact rows
    /// expected per table (`sluice_sandbox::sailthru::expected_counts`) and their total over
    /// [`sailthru_tables`].
    ///
    /// # Errors
    /// The sandbox cannot start or serve the archive.
    pub async fn generated_sailthru_export(
        &mut self,
        seed: u64,
        messages: u64,
        date: chrono::NaiveDate,
    ) -> anyhow::Result<(String, BTreeMap<String, u64>, u64)> {
        let sandbox = self.start_sandbox().await?;
        let spec = sluice_sandbox::sailthru::ExportSpec {
            seed,
            messages,
            date,
        };
        let expected = sluice_sandbox::sailthru::expected_counts(&spec);
        let total = sailthru_tables().iter().map(|t| expected[*t]).sum();
        let url = format!(
            "{sandbox}/sailthru/exports/{seed}/{messages}/sailthru_export.{}.zip",
            date.format("%Y%m%d")
        );
        reqwest::get(&url).await?.error_for_status()?;
        Ok((url, expected, total))
    }

    /// Spawns a service program (`planner`, `fetcher`, `loader`; the harness's `e2e-*`
    /// binaries run exactly the services' `main`) as a child process with
    /// this environment's settings plus `extra` variables; returns its index for
    /// [`TestEnv::kill`]. Output goes to `<tmp>/sluice-e2e-<id>-<name>-<n>.log`.
    ///
    /// # Errors
    /// The binary is missing (run `cargo build` first) or cannot start.
    pub fn spawn(&mut self, name: &str, extra: &[(&str, &str)]) -> anyhow::Result<usize> {
        let path = binary(&format!("e2e-{name}"))?;
        let log = std::env::temp_dir().join(format!(
            "sluice-e2e-{}-{name}-{}.log",
            self.id,
            self.children.len()
        ));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&path);
        cmd.envs(self.env_vars())
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        self.children.push((name.to_string(), child));
        Ok(self.children.len() - 1)
    }

    /// Runs `sluicectl` with `args` against this environment and waits for it.
    ///
    /// # Errors
    /// The binary is missing or cannot start.
    pub async fn sluicectl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let path = binary("e2e-sluicectl")?;
        let output = tokio::process::Command::new(&path)
            .args(args)
            .envs(self.env_vars())
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", path.display()))?;
        Ok(output)
    }

    /// Runs `sluicectl` with `args` in the working directory `dir`, with this
    /// environment's settings plus `extra` variables (which win), and waits for it.
    ///
    /// # Errors
    /// The binary is missing or cannot start.
    pub async fn sluicectl_in(
        &self,
        dir: &std::path::Path,
        extra: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<std::process::Output> {
        self.sluicectl_command(dir, extra, args)?
            .output()
            .await
            .context("running sluicectl")
    }

    /// A `sluicectl` command with `args` in `dir` with this environment's settings plus
    /// `extra`, its output piped, to spawn and talk to while it runs.
    ///
    /// # Errors
    /// The binary is missing.
    pub fn sluicectl_command(
        &self,
        dir: &std::path::Path,
        extra: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(binary("e2e-sluicectl")?);
        cmd.args(args)
            .current_dir(dir)
            .envs(self.env_vars())
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// SIGKILLs a spawned process.
    ///
    /// # Errors
    /// The process is already gone.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let (_, child) = &mut self.children[index];
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Records and publishes a job request, as `sluicectl sync` does; returns the job id.
    ///
    /// # Errors
    /// Database or broker errors.
    pub async fn request_job(
        &self,
        connector: &str,
        stream: &str,
        params: serde_json::Value,
    ) -> anyhow::Result<Uuid> {
        self.request_job_mode(connector, stream, params, Mode::Full)
            .await
    }

    /// Records and publishes a job request with a mode.
    ///
    /// # Errors
    /// See [`TestEnv::request_job`].
    pub async fn request_job_mode(
        &self,
        connector: &str,
        stream: &str,
        params: serde_json::Value,
        mode: Mode,
    ) -> anyhow::Result<Uuid> {
        self.request_job_as(connector, stream, "default", params, mode)
            .await
    }

    /// Records and publishes a job request of a named account, with a mode.
    ///
    /// # Errors
    /// See [`TestEnv::request_job`].
    pub async fn request_job_as(
        &self,
        connector: &str,
        stream: &str,
        account: &str,
        params: serde_json::Value,
        mode: Mode,
    ) -> anyhow::Result<Uuid> {
        self.request_job_into(
            connector,
            stream,
            account,
            params,
            mode,
            sluice_contracts::DEFAULT_DESTINATION,
        )
        .await
    }

    /// Records and publishes a job request into a named destination.
    ///
    /// # Errors
    /// See [`TestEnv::request_job`].
    pub async fn request_job_into(
        &self,
        connector: &str,
        stream: &str,
        account: &str,
        params: serde_json::Value,
        mode: Mode,
        destination: &str,
    ) -> anyhow::Result<Uuid> {
        let request = JobRequest {
            destination: destination.into(),
            v: MESSAGE_VERSION,
            job_id: Uuid::new_v4(),
            connector: connector.into(),
            stream: stream.into(),
            account: account.into(),
            params,
            mode,
            requested_at: chrono::Utc::now(),
        };
        ledger::insert_job(&**self.pool.get().await?, &request).await?;
        let broker = Broker::connect(&self.settings.amqp, "sluice-e2e").await?;
        // As sluicectl does: the request is the root span of the job's trace.
        let root = sluice_service::job_root_span(&request, "test");
        let headers = root.in_scope(|| Headers::default().traced(request.job_id));
        broker.publish(Route::Jobs, &request, headers).await?;
        drop(root);
        broker.close().await;
        Ok(request.job_id)
    }

    /// Requests a Sailthru export ingestion.
    ///
    /// # Errors
    /// See [`TestEnv::request_job`].
    pub async fn sync_sailthru(
        &self,
        export: &str,
        page_size: Option<u64>,
    ) -> anyhow::Result<Uuid> {
        let mut params = serde_json::json!({ "export": export });
        if let Some(n) = page_size {
            params["page_size"] = n.into();
        }
        self.request_job("sailthru", "export", params).await
    }

    /// The job's report.
    ///
    /// # Errors
    /// Unknown job or database errors.
    pub async fn report(&self, job_id: Uuid) -> anyhow::Result<JobReport> {
        ledger::job_report(&**self.pool.get().await?, job_id)
            .await?
            .with_context(|| format!("no job {job_id}"))
    }

    /// Waits until the job ends (or `timeout` passes) and returns its report.
    ///
    /// # Errors
    /// Timeout (with the job's last state) or database errors.
    pub async fn wait_job(&self, job_id: Uuid, timeout: Duration) -> anyhow::Result<JobReport> {
        let deadline = Instant::now() + timeout;
        loop {
            let report = self.report(job_id).await?;
            if report.summary.state.is_terminal() {
                return Ok(report);
            }
            if Instant::now() > deadline {
                bail!(
                    "job {job_id} did not end within {timeout:?}: {} ({}/{} tasks)",
                    report.summary.state,
                    report.summary.tasks_done,
                    report.summary.tasks_total
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (without a time limit) for `job` to end, sampling the ready messages of the
    /// fetch and load queues every 250 ms; returns the report and the deepest backlog seen
    /// on each `(fetch, load)` — the benchmarks' measure of which side is the bottleneck.
    ///
    /// # Errors
    /// The ledger cannot be read.
    pub async fn wait_job_watching_queues(
        &self,
        broker: &sluice_broker::Broker,
        job_id: Uuid,
    ) -> anyhow::Result<(JobReport, u32, u32)> {
        let topology = broker.topology();
        let (fetch, load) = (
            topology.queue(sluice_broker::Route::Fetch),
            topology.queue(sluice_broker::Route::Load),
        );
        let (mut max_fetch, mut max_load) = (0u32, 0u32);
        loop {
            let report = self.report(job_id).await?;
            if report.summary.state.is_terminal() {
                return Ok((report, max_fetch, max_load));
            }
            if let Ok((ready, _)) = broker.queue_counts(&fetch).await {
                max_fetch = max_fetch.max(ready);
            }
            if let Ok((ready, _)) = broker.queue_counts(&load).await {
                max_load = max_load.max(ready);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `SELECT count(*)` of a table or view.
    ///
    /// # Errors
    /// Unknown table or database errors.
    pub async fn count(&self, table: &str) -> anyhow::Result<i64> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .with_context(|| format!("counting {table}"))?;
        Ok(row.get(0))
    }

    /// Row counts of the given tables.
    ///
    /// # Errors
    /// See [`TestEnv::count`].
    pub async fn counts(
        &self,
        schema: &str,
        tables: &[&str],
    ) -> anyhow::Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for t in tables {
            out.insert(t.to_string(), self.count(&format!("{schema}.{t}")).await?);
        }
        Ok(out)
    }

    /// An order-independent fingerprint of a table's whole content (every column).
    ///
    /// # Errors
    /// Database errors.
    pub async fn fingerprint(&self, table: &str) -> anyhow::Result<String> {
        self.fingerprint_of(table, "t::text").await
    }

    /// Like [`TestEnv::fingerprint`] but over content only: the loader's own columns
    /// (`_sluice_job_id`, `_sluice_loaded_at`) are left out, so two loads of the same source
    /// by different jobs have the same content fingerprint exactly when they hold the same
    /// rows with the same values.
    ///
    /// # Errors
    /// Database errors.
    pub async fn content_fingerprint(&self, table: &str) -> anyhow::Result<String> {
        self.fingerprint_of(
            table,
            "(to_jsonb(t) - '_sluice_job_id' - '_sluice_loaded_at')::text",
        )
        .await
    }

    /// The md5 of the sorted md5s of `row_sql` (an SQL text expression over the row `t`) for
    /// every row of `table`.
    async fn fingerprint_of(&self, table: &str, row_sql: &str) -> anyhow::Result<String> {
        fingerprint_in(&self.pool, table, row_sql).await
    }
}

/// [`TestEnv::fingerprint`] of `table` in the database of `pool`: every column, the
/// loader's own included.
///
/// # Errors
/// Database errors.
pub async fn full_fingerprint_in(pool: &Pool, table: &str) -> anyhow::Result<String> {
    fingerprint_in(pool, table, "t::text").await
}

/// [`TestEnv::content_fingerprint`] of `table` in the database of `pool` (a destination
/// database): the same rows with the same values give the same fingerprint, whatever
/// the column types (a Redshift stand-in's `VARCHAR`, `CHAR(36)` and `SUPER` read as the
/// Postgres tables' `text`, `uuid` and `jsonb` do).
///
/// # Errors
/// Database errors.
pub async fn content_fingerprint_in(pool: &Pool, table: &str) -> anyhow::Result<String> {
    fingerprint_in(
        pool,
        table,
        "(to_jsonb(t) - '_sluice_job_id' - '_sluice_loaded_at')::text",
    )
    .await
}

impl TestEnv {
    /// Stops in-process services, kills children, deletes the queues and exchanges and
    /// drops the database.
    ///
    /// # Errors
    /// Cleanup failures.
    pub async fn teardown(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for handle in self.services.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
        let broker = Broker::connect(&self.settings.amqp, "sluice-e2e").await?;
        let channel = broker.channel().await?;
        let permits = self
            .permits
            .iter()
            .flat_map(|(name, n)| broker.topology().permit_queues(name, *n));
        for q in broker.topology().all_queues().into_iter().chain(permits) {
            let _ = channel.queue_delete(q.into(), Default::default()).await;
        }
        for e in broker.topology().all_exchanges() {
            let _ = channel.exchange_delete(e.into(), Default::default()).await;
        }
        broker.close().await;
        let name = format!("sluice_test_{}", self.id);
        self.pool.close();
        let base = base_database_url();
        let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        for database in std::iter::once(&name).chain(&self.extra_databases) {
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .await?;
        }
        let _ = std::fs::remove_dir_all(
            std::env::temp_dir().join(format!("sluice-e2e-sandbox-{}", self.id)),
        );
        Ok(())
    }
}

async fn fingerprint_in(pool: &Pool, table: &str, row_sql: &str) -> anyhow::Result<String> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            &format!(
                "SELECT coalesce(md5(string_agg(h, '' ORDER BY h)), '') \
                 FROM (SELECT md5({row_sql}) AS h FROM {table} t) rows"
            ),
            &[],
        )
        .await
        .with_context(|| format!("fingerprinting {table}"))?;
    Ok(row.get(0))
}

impl Drop for TestEnv {
    /// A test that panics never reaches [`TestEnv::teardown`]: at least stop its services
    /// and kill its child processes, so nothing keeps consuming after the test.
    fn drop(&mut self) {
        self.shutdown.cancel();
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Path of one of this package's binaries next to the test executable
/// (`target/<profile>/<name>`); cargo builds them before running integration tests.
///
/// # Errors
/// The binary has not been built.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .context("test executable has no target directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run the tests with `cargo test`, which builds it",
            path.display()
        );
    }
    Ok(path)
}

/// Builds a zip archive in memory from `(name, bytes)` members, deflated.
///
/// # Errors
/// Zip writer errors.
pub fn zip_archive(members: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut writer = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in members {
            writer.start_file(*name, options)?;
            writer.write_all(bytes)?;
        }
        writer.finish()?;
    }
    Ok(out.into_inner())
}

/// Reads the members of a zip archive (for building variants of the sample).
///
/// # Errors
/// Unreadable archive.
pub fn read_zip(path: &std::path::Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut archive = zip::ZipArchive::new(file)?;
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        let name = entry.name()?.to_string();
        out.push((name, bytes));
    }
    Ok(out)
}

/// Installs a test log subscriber once (`RUST_LOG` controls it; default `warn`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// What a connector emitted for one job run in process: every task planned and fetched
/// directly (children included), without broker, database or loader.
#[derive(Debug, Default)]
pub struct ConnectorRun {
    /// Rows per table, in emission order.
    pub rows: BTreeMap<String, Vec<Vec<serde_json::Value>>>,
    /// Scope keys (first column) of the parts with a replace scope.
    pub scoped: std::collections::BTreeSet<String>,
    /// Records the connector rejected.
    pub rejected: Vec<sluice_contracts::RejectedRecord>,
    /// Tasks fetched.
    pub tasks: usize,
}

/// Plans a full job of `stream` with `params` for account `default` and fetches every task
/// and child task of it in turn, collecting what the connector emits ([`ConnectorRun`]):
/// a test's oracle of "what the source maps to", independent of the pipeline.
///
/// # Errors
/// The connector's planning or fetching errors.
pub async fn run_connector(
    connector: &dyn sluice_connectors::Connector,
    stream: &str,
    params: serde_json::Value,
) -> anyhow::Result<ConnectorRun> {
    let mut out = ConnectorRun::default();
    out.tasks = each_fetched(connector, stream, params, |fetched| {
        for table in fetched.tables {
            if table.merge.replace_scope.is_some() {
                for key in &table.merge.scope_keys {
                    out.scoped
                        .insert(key[0].as_str().unwrap_or_default().to_string());
                }
            }
            // Raw cells (JSON passed through as text) as the values the loader reads them as.
            out.rows
                .entry(table.table)
                .or_default()
                .extend(sluice_connectors::cell::values(table.rows));
        }
        out.rejected.extend(fetched.rejected);
    })
    .await?;
    Ok(out)
}

/// [`run_connector`] without holding what was fetched: hands `each` the output of every
/// task and child task (its `children` already queued) in fetch order, so a test keeps
/// only what it needs of a large source. Returns the number of tasks fetched.
///
/// # Errors
/// The connector's planning or fetching errors.
pub async fn each_fetched(
    connector: &dyn sluice_connectors::Connector,
    stream: &str,
    params: serde_json::Value,
    mut each: impl FnMut(sluice_connectors::FetchOutput),
) -> anyhow::Result<usize> {
    let job_id = Uuid::new_v4();
    let plan = connector
        .plan(&sluice_connectors::JobSpec {
            job_id,
            stream: stream.into(),
            account: "default".into(),
            params,
            mode: Mode::Full,
            bookmark: None,
        })
        .await?;
    let mut queue: std::collections::VecDeque<_> = plan.tasks.into_iter().collect();
    let mut tasks = 0;
    while let Some(t) = queue.pop_front() {
        tasks += 1;
        let task = sluice_contracts::FetchTask {
            v: MESSAGE_VERSION,
            task_id: format!("t{tasks}"),
            job_id,
            connector: connector.name().into(),
            stream: t.stream,
            account: "default".into(),
            kind: t.kind,
            attempt: 1,
            params: plan.params.clone(),
            once: None,
        };
        let mut fetched = connector.fetch(&task).await?;
        queue.extend(std::mem::take(&mut fetched.children));
        each(fetched);
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis; utime 250, stime 50, cutime 100,
        // cstime 0 ticks.
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 100 0 20 0 1 0";
        assert!((stat_seconds(stat, 11..13) - 3.0).abs() < 1e-9);
        assert!((stat_seconds(stat, 11..15) - 4.0).abs() < 1e-9);
        assert_eq!(stat_seconds("", 11..13), 0.0);
    }
}
