//! The two `postgres` destinations: the ledger's database and any other.

use sluice_contracts::config::DatabaseSettings;
use sluice_contracts::{RawRecordBatch, RecordBatch, RecordBatchOf};
use sluice_store::ledger::{BatchRows, PartWriter, Write, load_units};
use sluice_store::load::{Catalog, LoadOutcome};
use sluice_store::{Pool, StoreError};

use crate::{Destination, TableCount};

/// The ledger's own database: rows are written in the ledger's transaction.
pub struct LedgerPostgres {
    name: String,
    pool: Pool,
    catalog: Catalog,
}

impl LedgerPostgres {
    /// The destination `name` over the ledger's pool and catalog.
    pub fn new(name: &str, pool: Pool, catalog: Catalog) -> Self {
        Self {
            name: name.to_string(),
            pool,
            catalog,
        }
    }
}

#[async_trait::async_trait]
impl Destination for LedgerPostgres {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn write(&self) -> Write<'_> {
        Write::Ledger(&self.catalog)
    }

    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let applied = sluice_store::migrate(&self.pool).await?;
        Ok(vec![if applied.is_empty() {
            "database is up to date".to_string()
        } else {
            format!("applied migrations: {applied:?}")
        }])
    }

    async fn table_counts(&self, schema: &str) -> Result<Vec<TableCount>, StoreError> {
        crate::count_tables(&**self.pool.get().await?, schema).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        crate::ping(&**self.pool.get().await?).await
    }
}

/// A Postgres database other than the ledger's: the same tables (the same migrations),
/// written in a transaction of its own that commits before the ledger settles the part.
pub struct OtherPostgres {
    name: String,
    database: DatabaseSettings,
    pool: Pool,
    catalog: Catalog,
}

impl OtherPostgres {
    /// The destination `name` on `database` (`pool` opened on it).
    pub fn new(name: &str, database: DatabaseSettings, pool: Pool) -> Self {
        Self {
            name: name.to_string(),
            database,
            pool,
            catalog: Catalog::default(),
        }
    }
}

#[async_trait::async_trait]
impl PartWriter for OtherPostgres {
    async fn write(
        &self,
        units: &[Vec<&RecordBatch>],
    ) -> Result<Vec<Vec<LoadOutcome>>, StoreError> {
        self.write_units(units).await
    }

    /// Raw rows go straight to the cells, as into the ledger's own database.
    async fn write_raw(
        &self,
        units: &[Vec<&RawRecordBatch>],
    ) -> Result<Vec<Vec<LoadOutcome>>, StoreError> {
        self.write_units(units).await
    }
}

impl OtherPostgres {
    /// [`load_units`] in one transaction of the destination, committed.
    async fn write_units<R: BatchRows>(
        &self,
        units: &[Vec<&RecordBatchOf<R>>],
    ) -> Result<Vec<Vec<LoadOutcome>>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|source| StoreError::Postgres {
                context: format!("beginning a transaction in destination {}", self.name),
                source,
            })?;
        let written = load_units(&tx, &self.catalog, units).await?;
        tx.commit().await.map_err(|source| StoreError::Postgres {
            context: format!("committing in destination {}", self.name),
            source,
        })?;
        Ok(written)
    }
}

#[async_trait::async_trait]
impl Destination for OtherPostgres {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn write(&self) -> Write<'_> {
        Write::External(self)
    }

    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        sluice_store::db::ensure_database(&self.database).await?;
        let applied = sluice_store::migrate(&self.pool).await?;
        Ok(vec![if applied.is_empty() {
            format!("destination {} is up to date", self.name)
        } else {
            format!("destination {}: applied migrations {applied:?}", self.name)
        }])
    }

    async fn table_counts(&self, schema: &str) -> Result<Vec<TableCount>, StoreError> {
        crate::count_tables(&**self.pool.get().await?, schema).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        crate::ping(&**self.pool.get().await?).await
    }
}
