//! Layered configuration (contract: `docs/architecture.md`, "Configuration").
//!
//! Layers, later wins: built-in defaults → the TOML file named by `SLUICE_CONFIG` (optional)
//! → environment variables `SLUICE__SECTION__KEY` (for example `SLUICE__AMQP__URL`,
//! `SLUICE__DATABASE__URL`, `SLUICE__CONNECTORS__SAILTHRU__EMAIL_POLICY`).
//!
//! Secrets (URLs with passwords, API keys) are [`SecretString`]s: their `Debug` prints
//! `[REDACTED]`, and they are only exposed where a client is built.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Everything a sluice process can be configured with.
#[derive(Debug, Deserialize, Clone)]
pub struct Settings {
    /// RabbitMQ connection and topology.
    pub amqp: AmqpSettings,
    /// The Postgres database holding the ledger and the destination tables.
    pub database: DatabaseSettings,
    /// Planner settings.
    pub planner: ServiceSettings,
    /// Fetcher settings.
    pub fetcher: FetcherSettings,
    /// Loader settings.
    pub loader: LoaderSettings,
    /// Per-connector settings.
    pub connectors: ConnectorsSettings,
    /// Named destinations (`SLUICE__DESTINATIONS__<NAME>__KIND`, `…__URL`, …). The name
    /// `postgres` is always there: the ledger's own database, unless configured otherwise.
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationSection>,
    /// Logging.
    pub log: LogSettings,
}

/// RabbitMQ settings.
#[derive(Debug, Deserialize, Clone)]
pub struct AmqpSettings {
    /// AMQP URL, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: SecretString,
    /// Prefix of every exchange and queue name, default `sluice`.
    pub prefix: String,
    /// `x-delivery-limit` of the quorum work queues: deliveries (including crashes of the
    /// consumer) before a message is dead-lettered to the parking lot. Default 10.
    pub delivery_limit: u32,
}

/// Postgres settings.
#[derive(Debug, Deserialize, Clone)]
pub struct DatabaseSettings {
    /// Postgres URL, default `postgres://postgres@127.0.0.1:5432/sluice`. The database is
    /// created when missing (the user needs `CREATEDB`).
    pub url: SecretString,
    /// Connections per process, default 8.
    pub pool_size: usize,
}

/// Settings every service has.
#[derive(Debug, Deserialize, Clone)]
pub struct ServiceSettings {
    /// Address of the admin HTTP server (`/livez`, `/readyz`, `/metrics`); port 0 picks one.
    pub admin_bind: String,
    /// Consumer prefetch (unacknowledged deliveries in flight).
    pub prefetch: u16,
}

/// Fetcher settings.
#[derive(Debug, Deserialize, Clone)]
pub struct FetcherSettings {
    /// Address of the admin HTTP server.
    pub admin_bind: String,
    /// Tasks fetched concurrently by one fetcher process; also its prefetch. Default 4:
    /// a Klaviyo events task holds up to `dense_pages × page[size]` events (~50 MB), so
    /// memory is about 50 MB per slot.
    pub concurrency: u16,
}

/// Loader settings.
#[derive(Debug, Deserialize, Clone)]
pub struct LoaderSettings {
    /// Address of the admin HTTP server.
    pub admin_bind: String,
    /// Transactions run concurrently by one loader process.
    pub concurrency: u16,
    /// Most `RecordBatch` parts applied in one transaction (default 8): parts already
    /// received are grouped, which saves the per-part commit and round trips on small
    /// parts. 1 applies every part alone. The consumer prefetch is `concurrency ×
    /// group_parts`.
    pub group_parts: u16,
    /// A group takes no further part once its messages reach this many bytes (default
    /// 2 MiB ≈ 7,000 rows of ~300 bytes): large parts are loaded alone, bounding memory —
    /// decoded rows take several times their message's size, and at 4 MiB a loader with
    /// 10,000-event Klaviyo parts peaked at 256–291 MB (docs/benchmarks.md).
    pub group_bytes: u32,
}

/// Per-connector settings.
#[derive(Debug, Deserialize, Clone)]
pub struct ConnectorsSettings {
    /// Sailthru export ingestion.
    pub sailthru: SailthruSettings,
    /// Klaviyo API extraction.
    pub klaviyo: KlaviyoSettings,
}

/// What to do with personal e-mail addresses (Sailthru `profile.email`).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailPolicy {
    /// Store the address as exported.
    Keep,
    /// Store the lowercase hex SHA-256 of the trimmed, lower-cased address.
    #[default]
    Hash,
    /// Store NULL.
    Drop,
}

/// One `[destinations.<name>]` section as written: its `kind` (`postgres`, `redshift`)
/// and the kind's own keys, which the destination module of that kind deserialises and
/// documents (crate `sluice-destinations`). `Debug` prints the keys, never the values: a
/// URL may hold a password.
#[derive(Deserialize, Clone, Default)]
pub struct DestinationSection(pub serde_json::Map<String, serde_json::Value>);

impl std::fmt::Debug for DestinationSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Sailthru connector settings.
#[derive(Debug, Deserialize, Clone)]
pub struct SailthruSettings {
    /// Maximum records per page task (N), default 5000.
    pub page_size: u64,
    /// E-mail policy, default `hash`.
    pub email_policy: EmailPolicy,
    /// Named accounts; only needed for `s3://` exports (credentials and region).
    #[serde(default)]
    pub accounts: BTreeMap<String, S3Account>,
}

/// Credentials for reading `s3://` export locations.
#[derive(Debug, Deserialize, Clone, Default)]
pub struct S3Account {
    /// AWS region, for example `us-east-1`.
    pub region: Option<String>,
    /// Access key id; when absent the usual AWS environment variables are used.
    pub access_key_id: Option<SecretString>,
    /// Secret access key.
    pub secret_access_key: Option<SecretString>,
    /// S3-compatible endpoint (MinIO, LocalStack), `http(s)://host:port`.
    pub endpoint: Option<String>,
}

/// Klaviyo connector settings (`SLUICE__CONNECTORS__KLAVIYO__…`; see `docs/klaviyo.md`).
#[derive(Debug, Deserialize, Clone)]
pub struct KlaviyoSettings {
    /// The `revision` header sent with every request (`YYYY-MM-DD`), default `2026-07-15`.
    pub revision: String,
    /// Seconds subtracted from a stored bookmark when an incremental job starts, so late
    /// records just before the bookmark are read again (upserts make that harmless).
    /// Default 3600.
    pub lookback_seconds: u64,
    /// Seconds behind now that jobs end by default (`until` = now − lag) and that cursors are
    /// clamped to, so future-dated events never push a bookmark ahead. Default 300.
    pub lag_seconds: u64,
    /// Pages a time-window task fetches before splitting the rest of its window into child
    /// tasks (and a collection task before handing the next page to a child). Default 10.
    pub dense_pages: u32,
    /// Into how many equal windows a job's range (per metric) and a dense task's remaining
    /// window are split. Default 8.
    pub split_into: u32,
    /// Whole-request timeout in seconds (connect, send, read the body). Default 60.
    pub request_timeout_seconds: u64,
    /// How many 429 responses one request waits out in process (`Retry-After`) before the
    /// task fails with a transient error. Default 3.
    pub max_throttle_waits: u32,
    /// Longest `Retry-After` (seconds) waited in process; a longer one fails the task with a
    /// transient error at once. Default 60.
    pub max_retry_after_seconds: u64,
    /// Fraction of a tier's steady (per-minute) limit the fetchers aim at together, in
    /// (0, 1]. Default 0.95.
    pub steady_utilisation: f64,
    /// Start of "all time" (RFC 3339) for jobs without `since`. Default 1970-01-01T00:00:00Z.
    pub start_of_time: String,
    /// Default page sizes per endpoint (`page[size]`); jobs may lower them with `page_size`.
    pub page_sizes: KlaviyoPageSizes,
    /// Rate limits per Klaviyo tier (`xs`, `s`, `m`, `l`, `xl`), per account.
    pub rate_limits: BTreeMap<String, KlaviyoTierLimit>,
    /// Named accounts (`default` unless a job names another).
    #[serde(default)]
    pub accounts: BTreeMap<String, KlaviyoAccount>,
}

/// Default `page[size]` per endpoint (the spec's maxima are the defaults).
#[derive(Debug, Deserialize, Clone)]
pub struct KlaviyoPageSizes {
    /// `GET /api/events`, 1–1000, default 1000.
    pub events: u32,
    /// `GET /api/profiles`, 1–100, default 100.
    pub profiles: u32,
    /// `GET /api/lists` and `/api/segments`, 1–10, default 10.
    pub lists: u32,
    /// `GET /api/{lists,segments}/{id}/relationships/profiles`, 1–100, default 100.
    pub members: u32,
}

/// One Klaviyo rate-limit tier: both windows hold at once, per account.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
pub struct KlaviyoTierLimit {
    /// Requests allowed in the 1-second burst window.
    pub burst_per_second: f64,
    /// Requests allowed in the 1-minute steady window.
    pub steady_per_minute: f64,
}

/// One Klaviyo account's credentials.
#[derive(Debug, Deserialize, Clone)]
pub struct KlaviyoAccount {
    /// Private API key (`SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__<ACCOUNT>__API_KEY`); never
    /// logged. A job of an account without one fails at plan time.
    pub api_key: Option<SecretString>,
    /// API origin, default `https://a.klaviyo.com` (the sandbox's address in tests).
    #[serde(default = "default_klaviyo_base_url")]
    pub base_url: String,
}

/// The default Klaviyo API origin.
pub const DEFAULT_KLAVIYO_BASE_URL: &str = "https://a.klaviyo.com";

fn default_klaviyo_base_url() -> String {
    DEFAULT_KLAVIYO_BASE_URL.to_string()
}

/// Log settings.
#[derive(Debug, Deserialize, Clone)]
pub struct LogSettings {
    /// `tracing` filter directive, default `info`; `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

/// A configuration that cannot be loaded, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] config::ConfigError);

const DEFAULTS: &str = r#"
[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
prefix = "sluice"
delivery_limit = 10

[database]
url = "postgres://postgres@127.0.0.1:5432/sluice"
pool_size = 8

[planner]
admin_bind = "127.0.0.1:9101"
prefetch = 4

[fetcher]
admin_bind = "127.0.0.1:9102"
concurrency = 4

[loader]
admin_bind = "127.0.0.1:9103"
concurrency = 4
group_parts = 8
group_bytes = 2097152

[connectors.sailthru]
page_size = 5000
email_policy = "hash"

[connectors.klaviyo]
revision = "2026-07-15"
lookback_seconds = 3600
lag_seconds = 300
dense_pages = 10
split_into = 8
request_timeout_seconds = 60
max_throttle_waits = 3
max_retry_after_seconds = 60
steady_utilisation = 0.95
start_of_time = "1970-01-01T00:00:00Z"

[connectors.klaviyo.page_sizes]
events = 1000
profiles = 100
lists = 10
members = 100

[connectors.klaviyo.rate_limits.xs]
burst_per_second = 1
steady_per_minute = 15

[connectors.klaviyo.rate_limits.s]
burst_per_second = 3
steady_per_minute = 60

[connectors.klaviyo.rate_limits.m]
burst_per_second = 10
steady_per_minute = 150

[connectors.klaviyo.rate_limits.l]
burst_per_second = 75
steady_per_minute = 750

[connectors.klaviyo.rate_limits.xl]
burst_per_second = 350
steady_per_minute = 3500

[log]
level = "info"
format = "text"
"#;

impl Settings {
    /// Loads defaults, then `$SLUICE_CONFIG` (if set), then `SLUICE__…` variables.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file or the key that could not be read or parsed.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(
            std::env::var("SLUICE_CONFIG").ok().as_deref(),
            std::env::vars(),
        )
    }

    /// Like [`Settings::load`] with an explicit file and environment (for tests).
    ///
    /// # Errors
    /// See [`Settings::load`].
    pub fn load_from(
        file: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::new(path, config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("SLUICE__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("SLUICE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        Ok(builder.build()?.try_deserialize()?)
    }

    /// Defaults only, ignoring file and environment.
    pub fn defaults() -> Self {
        Self::load_from(None, std::iter::empty()).expect("built-in defaults deserialise")
    }
}

impl AmqpSettings {
    /// The URL, for building the connection only.
    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }
}

impl DatabaseSettings {
    /// The URL, for building the pool only.
    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = vec![
            ("SLUICE__AMQP__PREFIX".to_string(), "t1".to_string()),
            (
                "SLUICE__CONNECTORS__SAILTHRU__PAGE_SIZE".to_string(),
                "7".to_string(),
            ),
            (
                "SLUICE__CONNECTORS__SAILTHRU__EMAIL_POLICY".to_string(),
                "drop".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let s = Settings::load_from(None, env).unwrap();
        assert_eq!(s.amqp.prefix, "t1");
        assert_eq!(s.connectors.sailthru.page_size, 7);
        assert_eq!(s.connectors.sailthru.email_policy, EmailPolicy::Drop);
        assert_eq!(s.database.pool_size, 8);
    }

    #[test]
    fn klaviyo_accounts_from_the_environment() {
        let env = vec![
            (
                "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY".to_string(),
                "pk_secret_123".to_string(),
            ),
            (
                "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__EU__BASE_URL".to_string(),
                "http://127.0.0.1:9".to_string(),
            ),
            (
                "SLUICE__CONNECTORS__KLAVIYO__RATE_LIMITS__XL__STEADY_PER_MINUTE".to_string(),
                "3000".to_string(),
            ),
        ];
        let s = Settings::load_from(None, env).unwrap();
        let k = &s.connectors.klaviyo;
        assert_eq!(k.revision, "2026-07-15");
        assert_eq!(k.page_sizes.events, 1000);
        let default = &k.accounts["default"];
        assert_eq!(default.base_url, DEFAULT_KLAVIYO_BASE_URL);
        assert_eq!(
            default.api_key.as_ref().unwrap().expose_secret(),
            "pk_secret_123"
        );
        assert!(k.accounts["eu"].api_key.is_none());
        assert_eq!(k.accounts["eu"].base_url, "http://127.0.0.1:9");
        assert_eq!(k.rate_limits["xl"].steady_per_minute, 3000.0);
        assert_eq!(k.rate_limits["xl"].burst_per_second, 350.0);
        assert!(!format!("{s:?}").contains("pk_secret_123"));
    }

    #[test]
    fn bad_values_name_the_key_and_debug_hides_secrets() {
        let env = vec![(
            "SLUICE__CONNECTORS__SAILTHRU__EMAIL_POLICY".to_string(),
            "encrypt".to_string(),
        )];
        let err = Settings::load_from(None, env).unwrap_err().to_string();
        assert!(err.contains("email_policy"), "{err}");

        let env = vec![(
            "SLUICE__AMQP__URL".to_string(),
            "amqp://u:hunter2@h/%2f".to_string(),
        )];
        let s = Settings::load_from(None, env).unwrap();
        assert_eq!(s.amqp.url(), "amqp://u:hunter2@h/%2f");
        assert!(!format!("{s:?}").contains("hunter2"));

        let env = vec![
            (
                "SLUICE__DESTINATIONS__RS__KIND".to_string(),
                "redshift".to_string(),
            ),
            (
                "SLUICE__DESTINATIONS__RS__URL".to_string(),
                "postgres://u:hunter2@h/db".to_string(),
            ),
        ];
        let s = Settings::load_from(None, env).unwrap();
        let rs = &s.destinations["rs"].0;
        assert_eq!(rs["kind"], "redshift");
        assert_eq!(rs["url"], "postgres://u:hunter2@h/db");
        let debug = format!("{s:?}");
        assert!(
            debug.contains("\"url\"") && !debug.contains("hunter2"),
            "{debug}"
        );
    }
}
