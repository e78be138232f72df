//! Destinations: where sluice writes records.
//!
//! Layout, one module per destination kind, each with its settings struct and a `build`
//! (as vector's sinks):
//! - [`postgres`]: the ledger's own database (the fast path: rows, part and task progress in
//!   one transaction) or another Postgres database (its own transaction per write);
//! - [`redshift`]: Amazon Redshift through the Postgres wire protocol, simple queries only:
//!   `sql` generates the dialect (DDL, staging, de-duplication, `MERGE`), `staging` puts
//!   large loads on S3 for `COPY`, `sink` is the idempotent write;
//! - [`klaviyo`]: Klaviyo's bulk endpoints, for records already mapped to Klaviyo objects
//!   (`docs/klaviyo-sync.md`): `service` is the HTTP client, `sink` the write.
//!
//! A destination is named in settings (`SLUICE__DESTINATIONS__<NAME>__KIND` and the kind's
//! keys); [`Destinations::build`] turns every section into a [`Destination`] and always has
//! one called [`DEFAULT_DESTINATION`], the ledger's database, unless configured otherwise.
//! The loader knows destinations only through [`Destination`]; the ledger's bookkeeping
//! (claim, settle) is the same for every kind (`sluice_store::ledger::apply_batches`).
//!
//! Table shapes come from one place: the Postgres migrations in `migrations/`, applied to
//! the ledger's database. A destination of another dialect derives its DDL from that
//! catalog, so a stream's table is declared once.

pub mod klaviyo;
pub mod postgres;
pub mod redshift;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use serde::Deserialize;
use sluice_contracts::Settings;
use sluice_contracts::config::Section;
use sluice_store::ledger::Write;
use sluice_store::load::Catalog;
use sluice_store::{Pool, StoreError};

pub use sluice_contracts::DEFAULT_DESTINATION;

/// One destination: a place the loader writes parts into and `sluicectl` migrates and
/// counts.
#[async_trait::async_trait]
pub trait Destination: Send + Sync {
    /// The destination's name in settings (`postgres`, `rs`, …).
    fn name(&self) -> &str;

    /// The kind: `postgres`, `redshift` or `klaviyo`.
    fn kind(&self) -> &'static str;

    /// How the ledger writes a part's rows here: inside its own transaction (the ledger's
    /// database) or through this destination's idempotent [`sluice_store::ledger::PartWriter`].
    fn write(&self) -> Write<'_>;

    /// Creates the destination's schemas, tables and views for every stream (idempotent).
    /// Returns one line per thing created or checked, for `sluicectl migrate`.
    ///
    /// # Errors
    /// Connection or DDL errors, naming the object.
    async fn migrate(&self) -> Result<Vec<String>, StoreError>;

    /// The tables and views of `schema` with exact row counts (`count(*)`), in name order
    /// (tables first).
    ///
    /// # Errors
    /// Connection errors; an unknown schema gives an empty list.
    async fn table_counts(&self, schema: &str) -> Result<Vec<TableCount>, StoreError>;

    /// Whether the destination answers (a readiness check; connects when needed).
    ///
    /// # Errors
    /// Why it does not.
    async fn check(&self) -> Result<(), StoreError>;
}

/// A table or view with its row count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    /// `schema.name`.
    pub name: String,
    /// `table` or `view`.
    pub kind: &'static str,
    /// `count(*)`.
    pub rows: i64,
}

/// One destination section as written, by kind: `kind = "postgres" | "redshift" | "klaviyo"` and the
/// kind's own keys (unknown keys are refused, naming them).
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DestinationConfig {
    /// See [`postgres::PostgresConfig`].
    Postgres(postgres::PostgresConfig),
    /// See [`redshift::RedshiftConfig`].
    Redshift(redshift::RedshiftConfig),
    /// See [`klaviyo::KlaviyoConfig`].
    Klaviyo(klaviyo::KlaviyoConfig),
}

impl DestinationConfig {
    /// The settings of every named destination, with [`DEFAULT_DESTINATION`] added as the
    /// ledger's database when not configured. Nothing connects.
    ///
    /// # Errors
    /// [`StoreError::Destination`] naming the section and key that cannot be read (an
    /// unknown kind, a missing URL, an unknown key).
    pub fn all(settings: &Settings) -> Result<BTreeMap<String, DestinationConfig>, StoreError> {
        let mut configs = BTreeMap::new();
        for (name, section) in &settings.destinations {
            configs.insert(name.clone(), Self::parse(name, section)?);
        }
        configs
            .entry(DEFAULT_DESTINATION.to_string())
            .or_insert_with(|| DestinationConfig::Postgres(postgres::PostgresConfig::default()));
        Ok(configs)
    }

    /// What a job of `connector`/`stream` writing here must satisfy and carry
    /// ([`JobTerms`]), or why such a job cannot write here (for the planner to fail it at
    /// once, naming the destination). Postgres and Redshift take every stream as it is, except
    /// the Klaviyo catalogue's delete-all streams.
    ///
    /// # Errors
    /// A message naming the connector, stream and destination when the destination
    /// cannot take that stream.
    pub fn job_terms(&self, connector: &str, stream: &str) -> Result<JobTerms, String> {
        match self {
            DestinationConfig::Postgres(_) | DestinationConfig::Redshift(_) => {
                if connector == "klaviyo" && stream.starts_with("catalog_") {
                    return Err(format!(
                        "klaviyo/{stream} deletes a Klaviyo catalogue: it writes only into a \
                         destination of kind klaviyo"
                    ));
                }
                Ok(JobTerms::default())
            }
            DestinationConfig::Klaviyo(k) => k.job_terms(connector, stream),
        }
    }

    fn parse(name: &str, section: &Section) -> Result<Self, StoreError> {
        let env = format!("SLUICE__DESTINATIONS__{}", name.to_uppercase());
        if !section.0.contains_key("kind") {
            return Err(config_error(format!(
                "destination {name:?} has no kind: set {env}__KIND to postgres, redshift or klaviyo"
            )));
        }
        serde_json::from_value(serde_json::Value::Object(section.0.clone())).map_err(|e| {
            // serde_json's message names the key or variant, never the value.
            config_error(format!("destination {name:?} ({env}__…): {e}"))
        })
    }
}

/// What a destination asks of the jobs that write to it ([`DestinationConfig::job_terms`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobTerms {
    /// Parameters the planner adds to the job's (before the connector plans it, so every
    /// task carries them): for a Klaviyo destination, `{"klaviyo": {…mapping options}}`,
    /// which makes the source connector emit Klaviyo's objects (`docs/klaviyo-sync.md`).
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Streams (connector, stream) of the same account that must have succeeded into this
    /// destination before such a job may start (Klaviyo: categories before products).
    pub requires: Vec<(&'static str, &'static str)>,
}

pub(crate) fn config_error(message: String) -> StoreError {
    StoreError::Destination {
        message,
        transient: false,
    }
}

/// Every configured destination, built.
#[derive(Clone)]
pub struct Destinations {
    by_name: BTreeMap<String, Arc<dyn Destination>>,
    replicas: Arc<AtomicU32>,
}

impl Destinations {
    /// Builds every destination of `settings` ([`DestinationConfig::all`]). `ledger` is the
    /// pool on the ledger's database and `catalog` the process's table catalog of it: the
    /// default destination writes through them, and every other destination reads its
    /// tables' shapes from that catalog. Connections open lazily.
    ///
    /// # Errors
    /// As [`DestinationConfig::all`], and malformed URLs.
    pub fn build(
        settings: &Settings,
        ledger: &Pool,
        catalog: &Catalog,
    ) -> Result<Self, StoreError> {
        let mut by_name: BTreeMap<String, Arc<dyn Destination>> = BTreeMap::new();
        let replicas = Arc::new(AtomicU32::new(1));
        for (name, config) in DestinationConfig::all(settings)? {
            let destination: Arc<dyn Destination> = match config {
                DestinationConfig::Postgres(c) => {
                    c.build(&name, settings, ledger.clone(), catalog.clone())?
                }
                DestinationConfig::Redshift(c) => {
                    Arc::new(c.build(&name, ledger.clone(), catalog.clone())?)
                }
                DestinationConfig::Klaviyo(c) => {
                    Arc::new(c.build(&name, settings, replicas.clone())?)
                }
            };
            by_name.insert(name, destination);
        }
        Ok(Self { by_name, replicas })
    }

    /// The live count of loader replicas, which destinations with an account-wide rate
    /// budget (Klaviyo) divide it by. Starts at 1; the loader keeps it current (its load
    /// queue's consumer count).
    pub fn replicas(&self) -> Arc<AtomicU32> {
        self.replicas.clone()
    }

    /// The destination called `name`.
    ///
    /// # Errors
    /// [`StoreError::Destination`] (permanent) naming the unknown destination and the
    /// configured ones.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Destination>, StoreError> {
        self.by_name.get(name).cloned().ok_or_else(|| {
            config_error(format!(
                "unknown destination {name:?}: configure it with SLUICE__DESTINATIONS__{}__KIND \
                 (configured: {})",
                name.to_uppercase(),
                self.names().join(", ")
            ))
        })
    }

    /// The configured names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}

/// Whether `settings` know a destination called `name` (no connection is made).
///
/// # Errors
/// As [`DestinationConfig::all`]; an unknown name is `Ok(false)`.
pub fn is_configured(settings: &Settings, name: &str) -> Result<bool, StoreError> {
    Ok(DestinationConfig::all(settings)?.contains_key(name))
}

/// Quotes `text` as an SQL string literal for both Postgres and Redshift: `'` doubled, and
/// `\` doubled too, since Redshift reads a backslash in a literal as an escape (its
/// `QUOTE_LITERAL` doubles both). A Postgres session receiving such literals must run with
/// `standard_conforming_strings = off`, which is what the Redshift stand-in sets.
pub(crate) fn quote_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_literal(&mut out, text);
    out
}

/// Appends `text` to `out` quoted as by [`quote_literal`].
pub(crate) fn push_literal(out: &mut String, text: &str) {
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// The tables and views of `schema` with `count(*)` each, through simple queries only
/// (Redshift's extended protocol is fragile), tables first.
pub(crate) async fn count_tables(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<Vec<TableCount>, StoreError> {
    let context = |what: String| {
        move |source| StoreError::Postgres {
            context: what,
            source,
        }
    };
    let rows = client
        .simple_query(&format!(
            "SELECT table_name, table_type FROM information_schema.tables
              WHERE table_schema = {} ORDER BY table_type, table_name",
            quote_literal(schema)
        ))
        .await
        .map_err(context(format!("listing the tables of schema {schema}")))?;
    let mut out = Vec::new();
    for row in rows {
        let tokio_postgres::SimpleQueryMessage::Row(row) = row else {
            continue;
        };
        let name = row.get(0).unwrap_or_default().to_string();
        let kind = if row.get(1) == Some("VIEW") {
            "view"
        } else {
            "table"
        };
        let counted = client
            .simple_query(&format!(
                "SELECT count(*) FROM {}.{}",
                sluice_store::quote_ident(schema),
                sluice_store::quote_ident(&name)
            ))
            .await
            .map_err(context(format!("counting {schema}.{name}")))?;
        let rows = counted
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|n| n.parse().ok()),
                _ => None,
            })
            .unwrap_or(0);
        out.push(TableCount {
            name: format!("{schema}.{name}"),
            kind,
            rows,
        });
    }
    Ok(out)
}

/// `SELECT 1` through the simple query protocol.
pub(crate) async fn ping(client: &tokio_postgres::Client) -> Result<(), StoreError> {
    client
        .simple_query("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|source| StoreError::Postgres {
            context: "checking the destination".into(),
            source,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)]) -> Settings {
        Settings::load_from(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap()
    }

    #[test]
    fn the_default_destination_is_always_there_and_sections_parse_by_kind() {
        let s = settings(&[
            ("SLUICE__DESTINATIONS__RS__KIND", "redshift"),
            (
                "SLUICE__DESTINATIONS__RS__URL",
                "postgres://u:pw@h:5439/dev",
            ),
            ("SLUICE__DESTINATIONS__RS__STAGE_ROWS", "5000"),
        ]);
        let all = DestinationConfig::all(&s).unwrap();
        assert!(matches!(all["postgres"], DestinationConfig::Postgres(_)));
        match &all["rs"] {
            DestinationConfig::Redshift(c) => assert_eq!(c.stage_rows, 5000),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{all:?}").contains("pw@"), "{all:?}");
    }

    #[test]
    fn bad_sections_name_the_destination_and_the_key_but_never_the_secret() {
        let err = DestinationConfig::all(&settings(&[(
            "SLUICE__DESTINATIONS__RS__URL",
            "postgres://u:hunter2@h/db",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("SLUICE__DESTINATIONS__RS__KIND"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        let err = DestinationConfig::all(&settings(&[
            ("SLUICE__DESTINATIONS__WH__KIND", "snowflake"),
            ("SLUICE__DESTINATIONS__WH__URL", "postgres://u:hunter2@h/db"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("snowflake") && err.contains("\"wh\""), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        let err = DestinationConfig::all(&settings(&[
            ("SLUICE__DESTINATIONS__RS__KIND", "redshift"),
            ("SLUICE__DESTINATIONS__RS__URL", "postgres://u:hunter2@h/db"),
            (
                "SLUICE__DESTINATIONS__RS__IAM_ROLEE",
                "arn:aws:iam::1:role/x",
            ),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("iam_rolee"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        let err =
            DestinationConfig::all(&settings(&[("SLUICE__DESTINATIONS__RS__KIND", "redshift")]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("url"), "{err}");
    }
}
