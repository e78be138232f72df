//! Layered configuration (contract: `DESIGN.md`, "Configuration").
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
    /// Tasks fetched concurrently by one fetcher process; also its prefetch.
    pub concurrency: u16,
}

/// Loader settings.
#[derive(Debug, Deserialize, Clone)]
pub struct LoaderSettings {
    /// Address of the admin HTTP server.
    pub admin_bind: String,
    /// Batches loaded concurrently by one loader process; also its prefetch.
    pub concurrency: u16,
}

/// Per-connector settings.
#[derive(Debug, Deserialize, Clone)]
pub struct ConnectorsSettings {
    /// Sailthru export ingestion.
    pub sailthru: SailthruSettings,
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
concurrency = 8

[loader]
admin_bind = "127.0.0.1:9103"
concurrency = 4

[connectors.sailthru]
page_size = 5000
email_policy = "hash"

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
    }
}
