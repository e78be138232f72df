//! Destination kind `redshift`: Amazon Redshift over the Postgres wire protocol.
//!
//! Settings (`SLUICE__DESTINATIONS__<NAME>__…`, see [`RedshiftConfig`]): `kind =
//! "redshift"`, `url`, and for staged loads `s3_bucket`, `iam_role` and friends.
//!
//! How a write goes (one destination transaction per group of parts, simple queries only):
//! 1. per destination unit, a temp staging table of the batch's columns and an ordinal;
//!    its rows arrive as multi-row `INSERT`s (statements of at most `max_statement_bytes`)
//!    or, when the unit has at least `stage_rows` rows and `s3_bucket` is set, as one
//!    gzip JSON-lines object per part on S3 loaded by `COPY … MANIFEST` ([`staging`]);
//! 2. `LOCK` the target tables (name order);
//! 3. per unit: the replace scope's deletes; de-duplicate by primary key (last wins, as
//!    the Postgres path) when two rows may share one; drop the rows whose stored version is
//!    newer or that equal the stored row; `MERGE` the rest;
//! 4. `COMMIT`; then the ledger settles the parts (`sluice_store::ledger::apply_batches`).
//!
//! Every step is keyed by primary key and version, so writing a part again after a crash
//! between 4 and the settle leaves the same rows. Rows Redshift would refuse (text over
//! `VARCHAR(65535)`, JSON over the `SUPER` limit, and whatever Postgres' types refuse —
//! bad timestamps, out-of-range numbers) are returned as rejects for
//! `sluice.rejected_rows`; the rest of the part loads.
//!
//! A PostgreSQL database can stand in for Redshift (tests, trying sluice without a
//! cluster): detected from `version()` (or forced with `stand_in`), it runs the same SQL
//! without `DISTKEY`/`SORTKEY` after [`sql::STAND_IN_PRELUDE`], and instead of
//! `COPY … FROM 's3://…'`, which only Redshift can run, it reads the staged objects back
//! from S3 and inserts their rows — so the objects are still what gets loaded.

mod sink;
pub mod sql;
pub mod staging;

use deadpool_postgres::{ManagerConfig, RecyclingMethod};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sluice_contracts::config::DatabaseSettings;
use sluice_store::ledger::Write;
use sluice_store::load::Catalog;
use sluice_store::tls::PgConfig;
use sluice_store::{Pool, StoreError};
use tokio::sync::OnceCell;

use self::sql::Flavour;
use self::staging::S3Staging;
use crate::{Destination, TableCount, config_error};

/// Settings of a `redshift` destination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedshiftConfig {
    /// `postgres://user:password@cluster.…redshift.amazonaws.com:5439/dev` (required; never
    /// logged).
    pub url: SecretString,
    /// Connections per loader process, default 4.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// A unit of parts with at least this many rows is staged on S3 and loaded with `COPY`
    /// when `s3_bucket` is set; smaller ones (and all, without a bucket) go through
    /// multi-row `INSERT`s. Default 5,000: below that, a `COPY`'s fixed cost (seconds on a
    /// cluster) outweighs the `INSERT`s.
    #[serde(default = "default_stage_rows")]
    pub stage_rows: u64,
    /// Bucket for staged objects; unset: no S3 staging.
    pub s3_bucket: Option<String>,
    /// Key prefix of staged objects, default `sluice`.
    #[serde(default = "default_s3_prefix")]
    pub s3_prefix: String,
    /// AWS region of the bucket (and of `COPY … REGION`), e.g. `us-east-1`.
    pub s3_region: Option<String>,
    /// S3-compatible endpoint (`http(s)://host:port`) instead of AWS's.
    pub s3_endpoint: Option<String>,
    /// Access key id for writing staged objects; default the usual AWS environment.
    pub s3_access_key_id: Option<SecretString>,
    /// Secret access key for writing staged objects.
    pub s3_secret_access_key: Option<SecretString>,
    /// The IAM role Redshift assumes to read the bucket (`arn:aws:iam::<account>:role/<name>`),
    /// named in every `COPY`; required with `s3_bucket` on a real cluster.
    pub iam_role: Option<String>,
    /// Keep staged objects after their load committed (default false: removed).
    #[serde(default)]
    pub keep_staged: bool,
    /// Longest `INSERT` statement in bytes, default 8 MiB; at most Redshift's 16 MiB.
    #[serde(default = "default_max_statement_bytes")]
    pub max_statement_bytes: usize,
    /// Force (true) or forbid (false) the PostgreSQL stand-in; default: detected from
    /// `version()`.
    pub stand_in: Option<bool>,
}

fn default_pool_size() -> usize {
    4
}
fn default_stage_rows() -> u64 {
    5_000
}
fn default_s3_prefix() -> String {
    "sluice".into()
}
fn default_max_statement_bytes() -> usize {
    8 * 1024 * 1024
}

/// The Redshift SQL files that follow the generated tables (views), applied in order with
/// `CREATE OR REPLACE`, from `migrations/redshift/`.
const VIEWS: &[(&str, &str)] = &[
    (
        "sailthru flat views",
        include_str!("../../../../migrations/redshift/sailthru_views.sql"),
    ),
    (
        "wdn analysis view",
        include_str!("../../../../migrations/redshift/wdn_views.sql"),
    ),
];

impl RedshiftConfig {
    /// Builds the destination called `name`. `ledger`/`catalog`: the ledger's pool and
    /// catalog, where the tables' shapes are read. Nothing connects yet.
    ///
    /// # Errors
    /// A malformed URL, an S3 store that cannot be configured, or `s3_bucket` without
    /// `iam_role` where no stand-in is forced.
    pub fn build(self, name: &str, ledger: Pool, catalog: Catalog) -> Result<Redshift, StoreError> {
        let env = format!("SLUICE__DESTINATIONS__{}", name.to_uppercase());
        // `sslmode`/`sslrootcert` of the URL (Redshift accepts TLS; a cluster with
        // `require_ssl` refuses anything else): `sluice_store::tls`.
        let pg = PgConfig::parse(self.url.expose_secret()).map_err(|e| {
            config_error(format!(
                "destination {name}: {env}__URL is not a valid URL: {e}"
            ))
        })?;
        if self.s3_bucket.is_some() && self.iam_role.is_none() && self.stand_in != Some(true) {
            return Err(config_error(format!(
                "destination {name}: {env}__S3_BUCKET is set but {env}__IAM_ROLE is not: \
                 Redshift's COPY needs the role it assumes to read the bucket"
            )));
        }
        let manager = pg
            .manager(ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            })
            .map_err(|e| config_error(format!("destination {name}: {e}")))?;
        let pool = Pool::builder(manager)
            .max_size(self.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| config_error(format!("destination {name}: {e}")))?;
        let staging = S3Staging::new(name, &self)?;
        let max_statement_bytes = self
            .max_statement_bytes
            .clamp(64 * 1024, sql::MAX_STATEMENT_BYTES);
        Ok(Redshift {
            name: name.to_string(),
            database: DatabaseSettings {
                url: self.url.clone(),
                pool_size: 1,
            },
            pool,
            ledger,
            catalog,
            staging,
            flavour: OnceCell::new(),
            max_statement_bytes,
            config: self,
        })
    }
}

/// A built `redshift` destination.
pub struct Redshift {
    name: String,
    config: RedshiftConfig,
    database: DatabaseSettings,
    pool: Pool,
    ledger: Pool,
    catalog: Catalog,
    staging: Option<S3Staging>,
    flavour: OnceCell<Flavour>,
    max_statement_bytes: usize,
}

impl Redshift {
    /// Whether the server is Redshift or a PostgreSQL stand-in (asked once per process).
    ///
    /// # Errors
    /// The server cannot be reached.
    pub async fn flavour(&self) -> Result<Flavour, StoreError> {
        self.flavour
            .get_or_try_init(|| async {
                if let Some(forced) = self.config.stand_in {
                    return Ok(if forced { Flavour::StandIn } else { Flavour::Redshift });
                }
                let client = self.pool.get().await?;
                let version = first_value(
                    &client
                        .simple_query("SELECT version()")
                        .await
                        .map_err(|source| self.pg_error("asking the server's version", source))?,
                )
                .unwrap_or_default();
                if version.contains("Redshift") {
                    Ok(Flavour::Redshift)
                } else {
                    tracing::warn!(destination = %self.name, %version,
                        "destination is not Redshift: running it as a PostgreSQL stand-in (no DISTKEY/SORTKEY, SUPER as a jsonb domain, staged objects inserted instead of COPY)");
                    Ok(Flavour::StandIn)
                }
            })
            .await
            .copied()
    }

    fn pg_error(&self, what: &str, source: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres {
            context: format!("destination {}: {what}", self.name),
            source,
        }
    }

    async fn execute(
        &self,
        client: &tokio_postgres::Client,
        what: &str,
        sql: &str,
    ) -> Result<(), StoreError> {
        client
            .batch_execute(sql)
            .await
            .map_err(|source| self.pg_error(what, source))
    }
}

/// The first column of the first row of a simple query's answer.
fn first_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

#[async_trait::async_trait]
impl Destination for Redshift {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "redshift"
    }

    fn write(&self) -> Write<'_> {
        Write::External(self)
    }

    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        // A stand-in's database is created like the ledger's; a cluster's database exists
        // (and has no `postgres` maintenance database to create it from).
        if self.config.stand_in != Some(false)
            && let Err(e) = sluice_store::db::ensure_database(&self.database).await
        {
            tracing::debug!(destination = %self.name, error = %e, "not creating the database");
        }
        let flavour = self.flavour().await?;
        let client = self.pool.get().await?;
        let mut done = Vec::new();
        if flavour == Flavour::StandIn {
            self.execute(&client, "preparing the stand-in", sql::STAND_IN_PRELUDE)
                .await?;
            done.push(format!(
                "destination {}: PostgreSQL stand-in for Redshift",
                self.name
            ));
        }
        let ledger = self.ledger.get().await?;
        let tables = Catalog::destination_tables(&**ledger).await?;
        let mut schemas: Vec<&str> = tables
            .iter()
            .filter_map(|t| t.split_once('.'))
            .map(|(s, _)| s)
            .collect();
        schemas.dedup();
        for schema in schemas {
            self.execute(
                &client,
                &format!("creating schema {schema}"),
                &format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    sluice_store::quote_ident(schema)
                ),
            )
            .await?;
        }
        for table in &tables {
            let info = self.catalog.table(&**ledger, table).await?;
            self.execute(
                &client,
                &format!("creating table {table}"),
                &sql::create_table(&info, flavour),
            )
            .await?;
            let existing: Vec<String> = client
                .simple_query(&format!(
                    "SELECT column_name FROM information_schema.columns
                      WHERE table_schema = {} AND table_name = {}",
                    crate::quote_literal(&info.schema),
                    crate::quote_literal(&info.name)
                ))
                .await
                .map_err(|source| {
                    self.pg_error(&format!("reading the columns of {table}"), source)
                })?
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                })
                .collect();
            for column in &info.columns {
                if existing.contains(&column.name) {
                    continue;
                }
                if let Some(alter) = sql::add_column(&info, &column.name) {
                    self.execute(
                        &client,
                        &format!("adding column {} to {table}", column.name),
                        &alter,
                    )
                    .await?;
                    done.push(format!("{table}: added column {}", column.name));
                }
            }
            done.push(format!("table {table}"));
        }
        for (what, views) in VIEWS {
            self.execute(&client, &format!("creating the {what}"), views)
                .await?;
            done.push(format!("views: {what}"));
        }
        Ok(done)
    }

    async fn table_counts(&self, schema: &str) -> Result<Vec<TableCount>, StoreError> {
        crate::count_tables(&**self.pool.get().await?, schema).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        crate::ping(&**self.pool.get().await?).await
    }
}
