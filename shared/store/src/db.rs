//! Pool, database creation and migrations.

use deadpool_postgres::{ManagerConfig, RecyclingMethod};
use sluice_contracts::config::DatabaseSettings;

use crate::tls::PgConfig;
use crate::{Context, StoreError, quote_ident};

/// A pool of Postgres connections.
pub type Pool = deadpool_postgres::Pool;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Key of the advisory lock held while migrating (`'sluice'` as bytes).
const MIGRATION_LOCK: i64 = 0x736c_7569_6365;

fn parse(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    Ok(PgConfig::parse(url)?.config)
}

/// Creates the database named in `settings.url` when it does not exist yet, connecting to
/// the `postgres` maintenance database of the same server.
///
/// # Errors
/// Connection or permission errors (the user needs `CREATEDB` to create it).
pub async fn ensure_database(settings: &DatabaseSettings) -> Result<(), StoreError> {
    let pg = PgConfig::parse(settings.url())?;
    let Some(name) = pg.config.get_dbname().map(str::to_string) else {
        return Ok(());
    };
    let mut admin = pg.config.clone();
    admin.dbname("postgres");
    let client = pg
        .connect_one(&admin, "the postgres maintenance database")
        .await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .context(|| "looking up the database".into())?
        .is_some();
    if !exists {
        let created = client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .await;
        if let Err(e) = created {
            // Another process may have created it meanwhile (42P04 duplicate_database).
            if e.code().map(|c| c.code()) != Some("42P04") {
                return Err(StoreError::Postgres {
                    context: format!("creating database {name}"),
                    source: e,
                });
            }
        } else {
            tracing::info!(database = %name, "created database");
        }
    }
    drop(client);
    Ok(())
}

/// Builds a pool (creating the database when missing). Connections are opened lazily.
///
/// # Errors
/// A malformed URL or a failure to create the database.
pub async fn connect(settings: &DatabaseSettings) -> Result<Pool, StoreError> {
    ensure_database(settings).await?;
    pool(settings)
}

/// Opens a pool on an existing, migrated ledger database, creating and migrating nothing:
/// what tools that only read or record use (`sluicectl jobs …`, `tables`, `freshness`,
/// `dlq`, `sync`), so that a mistyped database name is an error naming it instead of a
/// new empty database. Only `sluicectl migrate` and the services create and migrate.
///
/// # Errors
/// [`StoreError::NoLedger`] naming the database and server when the database does not
/// exist, has no sluice ledger, or has fewer migrations than this build; connection
/// errors otherwise.
pub async fn connect_existing(settings: &DatabaseSettings) -> Result<Pool, StoreError> {
    let config = parse(settings.url())?;
    let name = config.get_dbname().unwrap_or("postgres").to_string();
    let server = server_of(&config);
    let pool = pool(settings)?;
    let client = match pool.get().await {
        Ok(client) => client,
        Err(deadpool_postgres::PoolError::Backend(e))
            if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) =>
        {
            return Err(StoreError::NoLedger(format!(
                "database {name:?} does not exist on {server}: check SLUICE__DATABASE__URL (`sluicectl migrate` creates it)"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let has_history: bool = client
        .query_one(
            "SELECT to_regclass('sluice_schema_history') IS NOT NULL",
            &[],
        )
        .await
        .context(|| format!("looking for the sluice ledger in database {name}"))?
        .get(0);
    let applied: Option<i32> = if has_history {
        client
            .query_one("SELECT max(version) FROM sluice_schema_history", &[])
            .await
            .context(|| format!("reading the migrations of database {name}"))?
            .get(0)
    } else {
        None
    };
    let Some(applied) = applied else {
        return Err(StoreError::NoLedger(format!(
            "database {name:?} on {server} has no sluice ledger: check SLUICE__DATABASE__URL, or run `sluicectl migrate`"
        )));
    };
    let needed = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0);
    if applied < needed {
        return Err(StoreError::NoLedger(format!(
            "database {name:?} on {server} is at migration V{applied}, this build needs V{needed}: run `sluicectl migrate`"
        )));
    }
    drop(client);
    Ok(pool)
}

/// `host:port` of a connection config, for messages (no user, no password).
fn server_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Builds a pool on an existing database without connecting (connections open lazily).
///
/// # Errors
/// A malformed URL.
pub fn pool(settings: &DatabaseSettings) -> Result<Pool, StoreError> {
    let mut pg = PgConfig::parse(settings.url())?;
    let config = &mut pg.config;
    // The loader's `CREATE TEMP TABLE IF NOT EXISTS` would otherwise log a NOTICE per batch.
    let options = match config.get_options() {
        Some(o) => format!("{o} -c client_min_messages=warning"),
        None => "-c client_min_messages=warning".to_string(),
    };
    config.options(&options);
    let manager = pg.manager(ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    })?;
    Pool::builder(manager)
        .max_size(settings.pool_size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Url(e.to_string()))
}

/// Applies pending migrations from `migrations/`, under an advisory lock.
///
/// Returns the versions applied by this call (empty when up to date).
///
/// # Errors
/// A failing migration, or a database that has migrations this build does not know.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, StoreError> {
    let mut client = pool.get().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context(|| "taking the migration lock".into())?;
    let client_ref: &mut tokio_postgres::Client = &mut client;
    let report = embedded::migrations::runner()
        .set_migration_table_name("sluice_schema_history")
        .run_async(client_ref)
        .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .context(|| "releasing the migration lock".into())?;
    let report = report?;
    let applied: Vec<i32> = report
        .applied_migrations()
        .iter()
        .map(|m| m.version())
        .collect();
    if !applied.is_empty() {
        tracing::info!(?applied, "applied migrations");
    }
    Ok(applied)
}
