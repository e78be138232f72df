//! Destination kind `postgres`.
//!
//! Settings (`SLUICE__DESTINATIONS__<NAME>__…`): `kind = "postgres"`, `url` (optional: the
//! ledger's database when absent or equal to `SLUICE__DATABASE__URL`), `pool_size`
//! (default 4). The default destination `postgres` is this kind with no URL.
//!
//! In the ledger's database a part's rows, its claim and its task's progress commit in one
//! transaction ([`sluice_store::ledger::Write::Ledger`]): no part is ever half applied and
//! speed is that of `sluice_store::load`. Any other database is written in a transaction
//! of its own before the ledger settles the part; the version-guarded upsert makes a
//! second write of the same part (after a crash between the two commits) a no-op.

mod sink;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sluice_contracts::Settings;
use sluice_contracts::config::DatabaseSettings;
use sluice_store::load::Catalog;
use sluice_store::{Pool, StoreError};

pub use sink::{LedgerPostgres, OtherPostgres};

use crate::Destination;

/// Settings of a `postgres` destination.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database`; absent: the ledger's database. The
    /// database is created when missing by `sluicectl migrate --destination NAME`.
    pub url: Option<SecretString>,
    /// Connections to this database per loader process, default 4 (unused for the
    /// ledger's database, which has the ledger's pool).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

fn default_pool_size() -> usize {
    4
}

impl PostgresConfig {
    /// Builds the destination called `name`: the ledger's database when the URL is absent
    /// or the ledger's own, another database otherwise. Nothing connects yet.
    ///
    /// # Errors
    /// A malformed URL (not repeated: it may hold a password).
    pub fn build(
        self,
        name: &str,
        settings: &Settings,
        ledger: Pool,
        catalog: Catalog,
    ) -> Result<Arc<dyn Destination>, StoreError> {
        match self.url {
            Some(url) if url.expose_secret() != settings.database.url() => {
                let database = DatabaseSettings {
                    url,
                    pool_size: self.pool_size,
                };
                let pool = sluice_store::db::pool(&database)?;
                Ok(Arc::new(OtherPostgres::new(name, database, pool)))
            }
            _ => Ok(Arc::new(LedgerPostgres::new(name, ledger, catalog))),
        }
    }
}
