//! Pool, database creation and migrations.

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use sluice_contracts::config::DatabaseSettings;
use tokio_postgres::NoTls;

use crate::{Context, StoreError, quote_ident};

/// A pool of Postgres connections.
pub type Pool = deadpool_postgres::Pool;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Key of the advisory lock held while migrating (`'sluice'` as bytes).
const MIGRATION_LOCK: i64 = 0x736c_7569_6365;

fn parse(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Url(e.to_string()))
}

/// Creates the database named in `settings.url` when it does not exist yet, connecting to
/// the `postgres` maintenance database of the same server.
///
/// # Errors
/// Connection or permission errors (the user needs `CREATEDB` to create it).
pub async fn ensure_database(settings: &DatabaseSettings) -> Result<(), StoreError> {
    let config = parse(settings.url())?;
    let Some(name) = config.get_dbname().map(str::to_string) else {
        return Ok(());
    };
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, connection) = admin
        .connect(NoTls)
        .await
        .context(|| "connecting to the postgres maintenance database".into())?;
    let task = tokio::spawn(connection);
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
    let _ = task.await;
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

/// Builds a pool on an existing database without connecting (connections open lazily).
///
/// # Errors
/// A malformed URL.
pub fn pool(settings: &DatabaseSettings) -> Result<Pool, StoreError> {
    let mut config = parse(settings.url())?;
    // The loader's `CREATE TEMP TABLE IF NOT EXISTS` would otherwise log a NOTICE per batch.
    let options = match config.get_options() {
        Some(o) => format!("{o} -c client_min_messages=warning"),
        None => "-c client_min_messages=warning".to_string(),
    };
    config.options(&options);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
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
