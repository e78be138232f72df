//! The Postgres side of sluice.
//!
//! - [`db`]: the connection pool, creating the database when missing, and the migrations in
//!   `migrations/` (embedded with refinery, applied under an advisory lock so services that
//!   start together do not race);
//! - [`ledger`]: the `sluice` schema — jobs, tasks, batches, locks, bookmarks, freshness and
//!   rejected rows — as used by the planner, the loader and `sluicectl`; applying parts
//!   (claim, write, settle) whatever the destination;
//! - [`load`]: the Postgres upsert path — validate a batch's shape, binary COPY into a
//!   staging table, then `INSERT … ON CONFLICT DO UPDATE` guarded by the version column;
//! - [`cell`]: converting JSON values of a batch into typed Postgres values;
//! - [`tls`]: `sslmode`/`sslrootcert` of connection URLs, with rustls.
//!
//! The store knows SQL, never an outside API: it learns a destination table's columns,
//! types and primary key from the Postgres catalog.

pub mod cell;
pub mod db;
pub mod ledger;
pub mod load;
pub mod tls;

pub use db::{Pool, connect, connect_existing, migrate};

/// Errors of the store, each with its cause chain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres returned an error (shown with the server's message and SQLSTATE).
    #[error("{context}: {}", describe_postgres(source))]
    Postgres {
        /// What was being done.
        context: String,
        /// The driver error (its `Display` includes the server's message).
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection could be taken from the pool (with the driver's cause: a refused
    /// connection, a TLS certificate that is not trusted, …).
    #[error("cannot get a database connection: {}", describe_pool(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// The database URL is malformed (the URL is not repeated: it may hold a password).
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The ledger database is missing, is not a sluice ledger, or is behind this build's
    /// migrations; the message names the database and server and what to do.
    #[error("{0}")]
    NoLedger(String),
    /// A batch does not fit its table (unknown table or column, missing primary key).
    #[error("{0}")]
    Schema(String),
    /// A destination outside Postgres' driver failed (object storage, a remote API), or a
    /// destination is configured wrongly; `transient` says whether a retry can help.
    #[error("{message}")]
    Destination {
        /// What failed, naming the destination and the setting or object involved.
        message: String,
        /// Whether retrying later can succeed (a network error) or not (a bad setting).
        transient: bool,
    },
    /// A group of parts cannot be applied together (a job ended while the group was
    /// loading); nothing was committed: apply the parts one at a time.
    #[error("{0}")]
    Regroup(String),
}

impl StoreError {
    /// True for errors a retry can fix: lost connections, deadlocks, serialization failures.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Destination { transient, .. } => *transient,
            StoreError::Postgres { source, .. } => {
                if source.is_closed() {
                    return true;
                }
                match source.code() {
                    Some(code) => {
                        let c = code.code();
                        // 40001 serialization, 40P01 deadlock, 08* connection, 57P0* shutdown,
                        // 53* insufficient resources.
                        c == "40001"
                            || c == "40P01"
                            || c.starts_with("08")
                            || c.starts_with("57P")
                            || c.starts_with("53")
                    }
                    // No SQLSTATE: an I/O error on the connection.
                    None => true,
                }
            }
            _ => false,
        }
    }
}

/// The server's message, detail and SQLSTATE when Postgres answered with an error; the
/// driver's description otherwise (connection errors).
pub fn describe_postgres(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            text
        }
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

/// A pool error with the cause of a failed connection, which deadpool's own message
/// leaves out.
fn describe_pool(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(e) => describe_postgres(e),
        other => other.to_string(),
    }
}

/// Statements through the connection's prepared-statement cache: one round trip instead of
/// two (prepare, then execute) for the ledger's and the upsert path's recurring SQL.
pub(crate) mod cached {
    use deadpool_postgres::Transaction;
    use tokio_postgres::types::ToSql;
    use tokio_postgres::{Error, Row};

    pub(crate) async fn execute(
        tx: &Transaction<'_>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        let statement = tx.prepare_cached(sql).await?;
        tx.execute(&statement, params).await
    }

    pub(crate) async fn query_one(
        tx: &Transaction<'_>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        let statement = tx.prepare_cached(sql).await?;
        tx.query_one(&statement, params).await
    }

    pub(crate) async fn query_opt(
        tx: &Transaction<'_>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let statement = tx.prepare_cached(sql).await?;
        tx.query_opt(&statement, params).await
    }

    pub(crate) async fn query(
        tx: &Transaction<'_>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let statement = tx.prepare_cached(sql).await?;
        tx.query(&statement, params).await
    }
}

/// Attaches context to driver errors.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Postgres {
            context: what(),
            source,
        })
    }
}

/// Quotes an SQL identifier (`a"b` → `"a""b"`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
