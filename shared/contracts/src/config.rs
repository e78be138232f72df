//! Layered configuration (contract: `docs/architecture.md`, "Configuration").
//!
//! Layers, later wins: built-in defaults → the TOML file named by `SLUICE_CONFIG` (optional)
//! → environment variables `SLUICE__SECTION__KEY` (for example `SLUICE__AMQP__URL`,
//! `SLUICE__DATABASE__URL`, `SLUICE__CONNECTORS__SAILTHRU__EMAIL_POLICY`). The sections
//! `connectors.<name>` and `destinations.<name>` are kept raw ([`Section`]): the connector
//! or destination of that name reads them, with its own defaults.
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
    /// Per-connector settings (`SLUICE__CONNECTORS__<CONNECTOR>__…`): each section is read
    /// by its connector, which owns its keys and their defaults (crate `sluice-connectors`).
    #[serde(default)]
    pub connectors: BTreeMap<String, Section>,
    /// Named destinations (`SLUICE__DESTINATIONS__<NAME>__KIND`, `…__URL`, …). The name
    /// `postgres` is always there: the ledger's own database, unless configured otherwise.
    #[serde(default)]
    pub destinations: BTreeMap<String, Section>,
    /// Logging.
    pub log: LogSettings,
    /// Traces exported with OpenTelemetry (off unless an OTLP endpoint is configured).
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// The commercetools–Klaviyo plugin's HTTP API, served by the planner.
    pub sync_api: SyncApiSettings,
}

/// The planner's drop-in replacement of the commercetools–Klaviyo plugin's bulk import
/// API (`POST /sync/customers|orders|categories|products`, `…/stop`, `GET /sync/status`;
/// `docs/klaviyo-sync.md`), `SLUICE__SYNC_API__…`.
#[derive(Debug, Deserialize, Clone)]
pub struct SyncApiSettings {
    /// Serve the API. Unset: served when the destination named by `destination` is
    /// configured (with any kind; the planner refuses jobs into a non-Klaviyo one).
    pub enabled: Option<bool>,
    /// Address to listen on, default `127.0.0.1:6779` (the plugin's port). Without a
    /// `token`, only a loopback address is served: another host is replaced by
    /// `127.0.0.1`, with a warning.
    pub bind: String,
    /// Bearer token every request must carry (`Authorization: Bearer <token>`); unset or
    /// empty: no authentication, loopback only ([`SyncApiSettings::token`]). Never logged.
    pub token: Option<SecretString>,
    /// The named destination the API's jobs write to, default `klaviyo`.
    pub destination: String,
    /// The commercetools account the API's jobs read, default `default`.
    pub account: String,
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
    /// Tasks fetched concurrently by one fetcher process; also its prefetch. Default 4.
    /// A task holds about one page of records at a time: connectors whose tasks read many
    /// pages publish each page as it is read (`Connector::fetch_paged`).
    pub concurrency: u16,
    /// Largest encoded `RecordBatch` part in bytes (default 4 MiB): a table's rows that
    /// encode to more are sent as several parts (split between parents for replace-scope
    /// tables). A loader holds at most its prefetch (`concurrency × group_parts`) times
    /// this many bytes of undecoded parts.
    pub max_part_bytes: u32,
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

/// One settings section owned by a component other than this crate — a connector's
/// (`[connectors.<name>]`) or a destination's (`[destinations.<name>]`) — as written, for
/// that component to deserialise and document. `Debug` prints the keys, never the values:
/// URLs and keys may be secrets.
#[derive(Deserialize, Clone, Default)]
pub struct Section(pub serde_json::Map<String, serde_json::Value>);

impl Section {
    /// Sets the value at a dotted `path` (`accounts.default.api_key`), creating the objects
    /// on the way (tests and tools use this instead of environment variables).
    pub fn set(&mut self, path: &str, value: impl Into<serde_json::Value>) {
        let mut map = &mut self.0;
        let mut keys = path.split('.').peekable();
        while let Some(key) = keys.next() {
            if keys.peek().is_none() {
                map.insert(key.to_string(), value.into());
                return;
            }
            let entry = map
                .entry(key.to_string())
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if !entry.is_object() {
                *entry = serde_json::Value::Object(serde_json::Map::new());
            }
            map = entry.as_object_mut().expect("made an object above");
        }
    }
}

impl std::fmt::Debug for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Log settings.
#[derive(Debug, Deserialize, Clone)]
pub struct LogSettings {
    /// `tracing` filter directive, default `info`; `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

/// OpenTelemetry traces (`SLUICE__TELEMETRY__…`). Off unless an OTLP endpoint is known:
/// [`TelemetrySettings::otlp_endpoint`], or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables, which the exporter reads itself (as it
/// does `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_TRACES_SAMPLER` and the `OTEL_BSP_*` batch settings).
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP receiver (protobuf), as `OTEL_EXPORTER_OTLP_ENDPOINT` is
    /// written: `http://otel-collector:4318`; spans are posted to `<it>/v1/traces`. Wins
    /// over the `OTEL_EXPORTER_OTLP_*ENDPOINT` variables. Absent or empty: see the type.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

impl TelemetrySettings {
    /// The configured endpoint, when not empty.
    pub fn endpoint(&self) -> Option<&str> {
        self.otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }
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
max_part_bytes = 4194304

[loader]
admin_bind = "127.0.0.1:9103"
concurrency = 4
group_parts = 8
group_bytes = 2097152

[log]
level = "info"
format = "text"

[sync_api]
bind = "127.0.0.1:6779"
destination = "klaviyo"
account = "default"
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
        let env: config::Map<String, String> =
            crate::plugin_env::with_plugin_aliases(env.into_iter().collect())
                .map_err(|e| ConfigError(config::ConfigError::Message(e)))?
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

impl SyncApiSettings {
    /// The bearer token, when one is set and not empty (an empty `SLUICE__SYNC_API__TOKEN`,
    /// as a compose file's `${VAR:-}` gives, means none).
    pub fn token(&self) -> Option<&SecretString> {
        self.token
            .as_ref()
            .filter(|t| !t.expose_secret().is_empty())
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
    fn environment_overrides_defaults_and_connector_sections_stay_raw() {
        let env = vec![
            ("SLUICE__AMQP__PREFIX".to_string(), "t1".to_string()),
            (
                "SLUICE__CONNECTORS__SAILTHRU__PAGE_SIZE".to_string(),
                "7".to_string(),
            ),
            (
                "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY".to_string(),
                "pk_secret_123".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let s = Settings::load_from(None, env).unwrap();
        assert_eq!(s.amqp.prefix, "t1");
        assert_eq!(s.database.pool_size, 8);
        assert_eq!(s.connectors["sailthru"].0["page_size"], 7);
        assert_eq!(
            s.connectors["klaviyo"].0["accounts"]["default"]["api_key"],
            "pk_secret_123"
        );
        assert!(!format!("{s:?}").contains("pk_secret_123"));
        assert_eq!(s.telemetry.endpoint(), None, "traces are off by default");
        let traced = Settings::load_from(
            None,
            [(
                "SLUICE__TELEMETRY__OTLP_ENDPOINT".to_string(),
                "http://collector:4318".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(traced.telemetry.endpoint(), Some("http://collector:4318"));

        let mut section = Section::default();
        section.set("accounts.default.base_url", "http://127.0.0.1:9");
        section.set("accounts.default.api_key", "k");
        assert_eq!(
            serde_json::Value::Object(section.0),
            serde_json::json!({"accounts": {"default": {"base_url": "http://127.0.0.1:9", "api_key": "k"}}})
        );
    }

    #[test]
    fn bad_values_name_the_key_and_debug_hides_secrets() {
        let env = vec![(
            "SLUICE__DATABASE__POOL_SIZE".to_string(),
            "many".to_string(),
        )];
        let err = Settings::load_from(None, env).unwrap_err().to_string();
        assert!(err.contains("pool_size"), "{err}");

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
