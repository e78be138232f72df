//! The upsert path: binary COPY into a staging table, then one
//! `INSERT … SELECT DISTINCT ON (pk) … ON CONFLICT (pk) DO UPDATE` into the destination —
//! or, while a table's batches bring only new keys (a backfill), one binary COPY straight
//! into the destination inside a savepoint, which a stored key rolls back to the upsert
//! (see [`DirectInserts`]). Both leave the same rows.
//!
//! Table shapes come from the Postgres catalog (columns, types, primary key), looked up by
//! schema and name as data and cached per process; every identifier written into SQL comes
//! from the catalog and is quoted, so a hostile table or column name in a batch can only
//! ever produce an "unknown table/column" error.
//!
//! Guarantees of [`load_rows`]:
//! - rows whose values do not fit their column, or whose entry in one of the table's B-tree
//!   indexes would exceed [`MAX_INDEX_ENTRY_BYTES`], are returned as rejects; the rest load;
//! - duplicates of one primary key within a batch: the last one wins;
//! - with a version column, an existing row is only replaced by a row whose version is
//!   greater or equal; a row identical to the stored one is not rewritten at all, so loading
//!   the same data twice changes nothing;
//! - with a replace scope, rows of the batch's parents that the batch no longer carries
//!   (and whose version is not newer) are deleted.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use deadpool_postgres::Transaction;
use futures::pin_mut;
use postgres_types::{ToSql, Type};
use serde_json::Value;
use sluice_contracts::{MergeSpec, RejectedRecord};
use tokio_postgres::GenericClient;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use uuid::Uuid;

use sluice_contracts::RawRows;
use sluice_contracts::raw_rows::RawRow;

use crate::cell::{Cell, CellRef, supported};
use crate::{Context, StoreError, quote_ident};

/// Column every destination table has: the job that last wrote the row.
pub const JOB_ID_COLUMN: &str = "_sluice_job_id";
/// Column every destination table has: when the row was last written (UTC).
pub const LOADED_AT_COLUMN: &str = "_sluice_loaded_at";

/// One column of a destination table.
#[derive(Debug, Clone)]
pub struct Column {
    /// Name as in the catalog.
    pub name: String,
    /// Postgres type.
    pub ty: Type,
    /// Whether the column has a default (`pg_attribute.atthasdef`).
    pub has_default: bool,
    /// Whether the column is `NOT NULL` (`pg_attribute.attnotnull`).
    pub not_null: bool,
    /// Whether Postgres computes it (`GENERATED ALWAYS AS … STORED`): never written.
    pub generated: bool,
}

/// A destination table as the catalog describes it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Schema, as in the catalog.
    pub schema: String,
    /// Table name, as in the catalog.
    pub name: String,
    /// Quoted, schema-qualified name, safe to splice into SQL.
    pub quoted: String,
    /// The table's oid (names the staging table).
    pub oid: u32,
    /// Columns in catalog order.
    pub columns: Vec<Column>,
    /// Primary-key columns in key order.
    pub primary_key: Vec<String>,
    /// The table's B-tree indexes on plain columns (the primary key's among them): index
    /// name and column names, for the entry-size check of [`MAX_INDEX_ENTRY_BYTES`].
    pub btree_indexes: Vec<(String, Vec<String>)>,
    /// Whether loads into this table currently try a direct COPY first (see
    /// [`DirectInserts`]); shared by every load into the table in this process.
    pub direct: Arc<DirectInserts>,
}

/// When to try a batch as a plain binary COPY into the destination instead of staging and
/// upserting it. A direct COPY does about a third less server work per row than the
/// staging COPY plus `INSERT … ON CONFLICT` (docs/benchmarks.md), but only works when
/// every key is new; a batch with an existing key fails it at that key, the COPY is rolled
/// back to a savepoint and the batch is upserted. After such a conflict the next loads into
/// the table skip the attempt — 4, then 8, … up to [`DirectInserts::MAX_BACKOFF`] loads
/// after each further conflict — so a stream of updates pays for one failed attempt
/// (usually refused at its first row) in 64 loads, and a backfill of new keys that follows
/// finds its way back within 64 loads.
#[derive(Debug, Default)]
pub struct DirectInserts {
    /// Loads still to skip.
    skip: std::sync::atomic::AtomicU32,
    /// The back-off set by the last conflict (0 after a success).
    backoff: std::sync::atomic::AtomicU32,
}

impl DirectInserts {
    /// The longest run of loads that skip the attempt after conflicts.
    pub const MAX_BACKOFF: u32 = 64;

    /// Whether this load should try a direct COPY (counts a skipped load).
    pub fn should_try(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.skip
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_err()
    }

    /// Whether loads currently skip the attempt after a conflict.
    pub fn backing_off(&self) -> bool {
        self.skip.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// A direct COPY went through: keep trying.
    pub fn succeeded(&self) {
        self.backoff.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// A direct COPY failed: skip the next loads, twice as many as after the last failure.
    pub fn conflicted(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let previous = self.backoff.load(Relaxed);
        let next = (previous * 2).clamp(4, Self::MAX_BACKOFF);
        self.backoff.store(next, Relaxed);
        self.skip.store(next, Relaxed);
    }
}

/// The most bytes the values of one row may take in one B-tree index entry. Postgres
/// refuses an entry over 2,704 bytes (`index row size … exceeds btree version 4 maximum
/// 2704`, SQLSTATE 54000) and that error would fail every row of the part; the loader
/// rejects such a row alone instead. Counted uncompressed with 24 bytes of headroom for
/// the entry's headers, so a long value Postgres could have compressed is rejected too:
/// predictable beats lucky.
pub const MAX_INDEX_ENTRY_BYTES: usize = 2_680;

/// The rows of one part as the load path reads them: `serde_json::Value` rows
/// (`[Vec<Value>]`, `Vec<Vec<Value>>`) or rows kept as their JSON text ([`RawRows`], what the
/// loader decodes). Both go through the same checks and conversions.
pub trait PartRows: Sync {
    /// Number of rows.
    fn len(&self) -> usize;

    /// Whether there is no row.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i` (0-based, `< len()`).
    fn row(&self, i: usize) -> RowRef<'_>;
}

impl PartRows for [Vec<Value>] {
    fn len(&self) -> usize {
        <[Vec<Value>]>::len(self)
    }

    fn row(&self, i: usize) -> RowRef<'_> {
        RowRef::Values(&self[i])
    }
}

impl PartRows for Vec<Vec<Value>> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn row(&self, i: usize) -> RowRef<'_> {
        RowRef::Values(&self[i])
    }
}

impl PartRows for RawRows {
    fn len(&self) -> usize {
        RawRows::len(self)
    }

    fn row(&self, i: usize) -> RowRef<'_> {
        RowRef::Raw(RawRows::row(self, i))
    }
}

/// One row of a part ([`PartRows::row`]).
#[derive(Debug, Clone, Copy)]
pub enum RowRef<'a> {
    /// A row of `Value`s.
    Values(&'a [Value]),
    /// A row of cells as JSON text.
    Raw(RawRow<'a>),
}

impl<'a> RowRef<'a> {
    /// Number of cells.
    pub fn len(&self) -> usize {
        match self {
            Self::Values(row) => row.len(),
            Self::Raw(row) => row.len(),
        }
    }

    /// Whether the row has no cell.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cell `i` (`< len()`).
    pub fn cell(&self, i: usize) -> CellRef<'a> {
        match self {
            Self::Values(row) => CellRef::Value(&row[i]),
            Self::Raw(row) => CellRef::Raw(row.get(i)),
        }
    }

    /// The cells in order.
    pub fn cells(self) -> impl Iterator<Item = CellRef<'a>> {
        (0..self.len()).map(move |i| self.cell(i))
    }
}

impl TableInfo {
    /// The column called `name`, if the table has one.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Per-process cache of [`TableInfo`]s.
#[derive(Default, Clone)]
pub struct Catalog {
    tables: Arc<RwLock<HashMap<String, Arc<TableInfo>>>>,
}

impl Catalog {
    /// The destination tables of the database `client` is connected to: every table
    /// outside the system schemas and `sluice` that has the loader's column
    /// `_sluice_loaded_at`, as `schema.table`, sorted.
    ///
    /// # Errors
    /// Database errors.
    pub async fn destination_tables(
        client: &impl GenericClient,
    ) -> Result<Vec<String>, StoreError> {
        Ok(client
            .query(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'sluice'
                    AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
                    AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                                 AND a.attname = $1 AND NOT a.attisdropped)
                  ORDER BY 1",
                &[&LOADED_AT_COLUMN],
            )
            .await
            .context(|| "listing destination tables".into())?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Looks up (and caches) `table` (`schema.name`).
    ///
    /// # Errors
    /// [`StoreError::Schema`] for an unknown table, a table without primary key or with a
    /// column type the loader cannot write.
    pub async fn table(
        &self,
        client: &impl GenericClient,
        table: &str,
    ) -> Result<Arc<TableInfo>, StoreError> {
        if let Some(info) = self.tables.read().expect("catalog lock").get(table) {
            return Ok(info.clone());
        }
        let info = Arc::new(describe_table(client, table).await?);
        self.tables
            .write()
            .expect("catalog lock")
            .insert(table.to_string(), info.clone());
        Ok(info)
    }
}

async fn describe_table(client: &impl GenericClient, table: &str) -> Result<TableInfo, StoreError> {
    // The name is matched as data against the catalog (never parsed as SQL), so any
    // string is safe here and an odd one is simply not found.
    let Some((schema, name)) = table.split_once('.') else {
        return Err(StoreError::Schema(format!(
            "destination table {table:?} is not schema-qualified (schema.table)"
        )));
    };
    let row = client
        .query_opt(
            "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await
        .context(|| format!("looking up table {table:?}"))?;
    let Some(row) = row else {
        return Err(StoreError::Schema(format!(
            "destination table {table:?} does not exist (is a migration missing?)"
        )));
    };
    let oid: u32 = row.get(0);
    let schema: String = row.get(1);
    let name: String = row.get(2);
    if schema == "sluice" || schema == "information_schema" || schema.starts_with("pg_") {
        return Err(StoreError::Schema(format!(
            "table {table:?} is in schema {schema:?}, which is not a destination"
        )));
    }
    let columns = client
        .query(
            "SELECT attname, atttypid, atthasdef, attnotnull, attgenerated <> '' FROM pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await
        .context(|| format!("reading the columns of {table}"))?
        .into_iter()
        .map(|r| {
            let name: String = r.get(0);
            let oid: u32 = r.get(1);
            let ty = Type::from_oid(oid).unwrap_or(Type::UNKNOWN);
            Column {
                name,
                ty,
                has_default: r.get(2),
                not_null: r.get(3),
                generated: r.get(4),
            }
        })
        .collect::<Vec<_>>();
    let primary_key: Vec<String> = client
        .query(
            "SELECT a.attname FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
              WHERE i.indrelid = $1 AND i.indisprimary
              ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&oid],
        )
        .await
        .context(|| format!("reading the primary key of {table}"))?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    if primary_key.is_empty() {
        return Err(StoreError::Schema(format!(
            "destination table {table} has no primary key; sluice only upserts"
        )));
    }
    // Expression columns (attnum 0) are left out: their size is not the column's.
    let btree_indexes: Vec<(String, Vec<String>)> = client
        .query(
            "SELECT ic.relname::text, array_agg(a.attname::text ORDER BY k.ord)
               FROM pg_index i
               JOIN pg_class ic ON ic.oid = i.indexrelid
               JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
              CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indrelid = $1
              GROUP BY ic.relname
              ORDER BY ic.relname",
            &[&oid],
        )
        .await
        .context(|| format!("reading the indexes of {table}"))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(TableInfo {
        quoted: format!("{}.{}", quote_ident(&schema), quote_ident(&name)),
        schema,
        name,
        oid,
        columns,
        primary_key,
        btree_indexes,
        direct: Arc::default(),
    })
}

/// What [`load_rows`] did.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Rows that reached the COPY (after rejects).
    pub rows: u64,
    /// Rows inserted or changed (identical rows are not rewritten).
    pub written: u64,
    /// Rows deleted by the replace scope.
    pub deleted: u64,
    /// Rows refused with the reason, to be stored in `sluice.rejected_rows`.
    pub rejected: Vec<RejectedRecord>,
    /// What the write changed, when the destination knows: [`load_units`] sets it on the
    /// last part of each unit, for the whole unit (one upsert writes them all); `None`
    /// elsewhere and for destinations that do not count (Redshift's `MERGE`).
    ///
    /// [`load_units`]: crate::ledger::load_units
    pub changes: Option<Changes>,
}

/// What one write into a table changed, in rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys that were not stored before.
    pub inserted: u64,
    /// Stored rows replaced by a different row (same key, newer or equal version).
    pub updated: u64,
    /// Rows removed because their parent's collection no longer holds them (replace scope).
    pub deleted: u64,
}

/// Upserts `rows` (aligned with `columns`) into `table` inside `tx`.
///
/// # Errors
/// [`StoreError::Schema`] when the batch does not fit the table (unknown column, primary-key
/// column missing); [`StoreError::Postgres`] from the server.
pub async fn load_rows(
    tx: &Transaction<'_>,
    catalog: &Catalog,
    job_id: Uuid,
    table: &str,
    columns: &[String],
    rows: &[Vec<Value>],
    merge: &MergeSpec,
) -> Result<LoadOutcome, StoreError> {
    let mut loaded = load_parts(tx, catalog, job_id, table, columns, &[rows], merge).await?;
    let mut outcome = loaded.parts.pop().unwrap_or_default();
    outcome.written = loaded.written;
    outcome.deleted = loaded.deleted;
    Ok(outcome)
}

/// What [`load_parts`] did.
#[derive(Debug, Default)]
pub struct PartsOutcome {
    /// One entry per part, in the order given: its `rows` (rows that reached the COPY) and
    /// its `rejected` records; `written` and `deleted` are 0 there (see below).
    pub parts: Vec<LoadOutcome>,
    /// Rows inserted or changed by the one upsert of all parts.
    pub written: u64,
    /// Of `written`, the rows whose key was new.
    pub inserted: u64,
    /// Rows deleted by the replace scope.
    pub deleted: u64,
}

/// Upserts several parts of rows of the same shape into `table` with one staging COPY and
/// one upsert, as if [`load_rows`] had been called on each part in order in the same
/// transaction: within a part the last duplicate of a key wins; across parts, without a
/// version column the later part wins, with one the row of the highest version wins (ties:
/// the later part) — exactly what consecutive version-guarded upserts would leave.
///
/// Three steps: [`Shape::validate`] the batch against the catalog, stage the rows (binary
/// COPY into a temp table, or straight into the destination while its keys are all new),
/// then write them (replace-scope deletes and the version-guarded upsert).
///
/// A replace scope whose parents come from the rows (`merge.replace_scope` without
/// `scope_keys`) needs one part. With `scope_keys` several parts may share a call — the
/// ledger groups parts of disjoint parents this way — and the union of the parents is
/// replaced: a row any part carries is kept, so each parent ends as its own part left it.
///
/// # Errors
/// As [`load_rows`]; [`StoreError::Schema`] when several parts come with a replace scope.
pub async fn load_parts<P: PartRows + ?Sized>(
    tx: &Transaction<'_>,
    catalog: &Catalog,
    job_id: Uuid,
    table: &str,
    columns: &[String],
    parts: &[&P],
    merge: &MergeSpec,
) -> Result<PartsOutcome, StoreError> {
    let info = catalog.table(&**tx, table).await?;
    let shape = Shape::validate(info, table, columns, merge, parts.len())?;
    let mut loaded = PartsOutcome {
        parts: parts.iter().map(|_| LoadOutcome::default()).collect(),
        ..PartsOutcome::default()
    };
    if parts.iter().all(|rows| rows.is_empty()) && merge.scope_keys.is_empty() {
        return Ok(loaded);
    }
    // Whether two rows may share a primary key (hash collisions only make this say yes,
    // which is safe): only then does the upsert need DISTINCT ON and its sort, and only
    // without does a direct COPY stand a chance.
    let duplicates = has_duplicate_keys(&shape.pk_positions, parts);

    // All keys new (a backfill): one COPY straight into the destination, if it works.
    let info = &shape.info;
    let loaded_at_filled = info.column(LOADED_AT_COLUMN).is_none_or(|c| c.has_default);
    if shape.scope.is_empty()
        && !duplicates
        && loaded_at_filled
        && info.direct.should_try()
        && let Some(parts) = insert_direct(tx, &shape, job_id, parts).await?
    {
        loaded.written = parts.iter().map(|p| p.rows).sum();
        loaded.inserted = loaded.written;
        loaded.parts = parts;
        return Ok(loaded);
    }

    let stage = stage(tx, &shape, parts, &mut loaded.parts).await?;
    (loaded.written, loaded.inserted, loaded.deleted) = upsert(
        tx,
        catalog,
        &shape,
        &stage,
        merge,
        job_id,
        duplicates,
        parts.len(),
    )
    .await?;
    Ok(loaded)
}

/// A batch's columns checked against its destination table: what every destination needs
/// to turn the batch's JSON rows into typed values and to merge them by key.
pub struct Shape<'a> {
    /// The destination table (`schema.table`) as the batch names it.
    pub table: &'a str,
    /// The table as the catalog describes it.
    pub info: Arc<TableInfo>,
    /// The batch's column names, in row order.
    pub columns: &'a [String],
    /// The catalog's column for each of `columns`.
    pub cols: Vec<Column>,
    /// Positions in `columns` of the primary-key columns, in key order.
    pub pk_positions: Vec<usize>,
    /// The version column (`MergeSpec::version_column`), when the stream has one.
    pub version: Option<String>,
    /// Its position in `columns`.
    pub version_position: Option<usize>,
    /// The replace-scope columns (`MergeSpec::replace_scope`), empty without one.
    pub scope: Vec<String>,
    /// B-tree indexes whose entry may outgrow [`MAX_INDEX_ENTRY_BYTES`]: name and the
    /// batch positions of their columns.
    sized_indexes: Vec<(String, Vec<usize>)>,
}

impl<'a> Shape<'a> {
    /// Checks `columns` and `merge` against `info`: every column exists and has a type the
    /// loader can write, the primary key (and the version column, the replace scope) are
    /// among them, the loader's own columns are not, and a replace scope comes with one
    /// part only.
    ///
    /// # Errors
    /// [`StoreError::Schema`] naming the table and what does not fit.
    pub fn validate(
        info: Arc<TableInfo>,
        table: &'a str,
        columns: &'a [String],
        merge: &MergeSpec,
        parts: usize,
    ) -> Result<Self, StoreError> {
        let mut cols: Vec<Column> = Vec::with_capacity(columns.len());
        for name in columns {
            if name == JOB_ID_COLUMN || name == LOADED_AT_COLUMN {
                return Err(StoreError::Schema(format!(
                    "column {name} of {table} is written by the loader, not by connectors"
                )));
            }
            let col = info.column(name).ok_or_else(|| {
                StoreError::Schema(format!("table {table} has no column {name:?}"))
            })?;
            if !supported(&col.ty) {
                return Err(StoreError::Schema(format!(
                    "column {name} of {table} has type {}, which the loader cannot write",
                    col.ty.name()
                )));
            }
            cols.push(col.clone());
        }
        let pk_positions: Vec<usize> = info
            .primary_key
            .iter()
            .map(|pk| {
                columns.iter().position(|c| c == pk).ok_or_else(|| {
                    StoreError::Schema(format!("batch for {table} lacks primary-key column {pk}"))
                })
            })
            .collect::<Result<_, _>>()?;
        let version = match &merge.version_column {
            Some(v) => Some(info.column(v).map(|c| c.name.clone()).ok_or_else(|| {
                StoreError::Schema(format!("version column {v:?} is not a column of {table}"))
            })?),
            None => None,
        };
        if let Some(v) = &version
            && !columns.contains(v)
        {
            return Err(StoreError::Schema(format!(
                "batch for {table} lacks its version column {v}"
            )));
        }
        let version_position = version
            .as_ref()
            .and_then(|v| columns.iter().position(|c| c == v));
        // Only indexes over a variable-length column of the batch can outgrow an entry.
        let sized_indexes: Vec<(String, Vec<usize>)> = info
            .btree_indexes
            .iter()
            .map(|(name, index_columns)| {
                let positions: Vec<usize> = index_columns
                    .iter()
                    .filter_map(|c| columns.iter().position(|b| b == c))
                    .collect();
                (name.clone(), positions)
            })
            .filter(|(_, positions)| {
                positions.iter().any(|&i| {
                    matches!(
                        cols[i].ty,
                        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::JSON | Type::JSONB
                    )
                })
            })
            .collect();
        let scope: Vec<String> = merge.replace_scope.clone().unwrap_or_default();
        for s in &scope {
            if !columns.contains(s) {
                return Err(StoreError::Schema(format!(
                    "batch for {table} lacks replace-scope column {s}"
                )));
            }
        }
        if !merge.scope_keys.is_empty() && scope.is_empty() {
            return Err(StoreError::Schema(format!(
                "batch for {table} has scope keys but no replace scope"
            )));
        }
        // Parents named explicitly (`scope_keys`) may come from several parts, whose
        // parents the caller keeps apart; parents taken from the rows may not.
        if parts > 1 && !scope.is_empty() && merge.scope_keys.is_empty() {
            return Err(StoreError::Schema(format!(
                "parts for {table} with a replace scope and no scope keys are loaded one at a time"
            )));
        }
        Ok(Self {
            table,
            info,
            columns,
            cols,
            pk_positions,
            version,
            version_position,
            scope,
            sized_indexes,
        })
    }

    /// The same shape without the Postgres B-tree entry-size check, for destinations that
    /// keep no B-tree indexes (Redshift).
    pub fn without_index_limits(mut self) -> Self {
        self.sized_indexes.clear();
        self
    }

    /// The quoted, comma-separated column list of the batch.
    pub fn column_list(&self) -> String {
        self.cols
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The quoted, comma-separated primary-key columns.
    pub fn key_list(&self) -> String {
        self.info
            .primary_key
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `row` as typed cells in `cells`, or why it is refused.
    ///
    /// # Errors
    /// The reason, naming the column: a value of the wrong type or out of range, a null
    /// key or version, an index entry over [`MAX_INDEX_ENTRY_BYTES`].
    pub fn cells<'r>(&self, row: &'r [Value], cells: &mut Vec<Cell<'r>>) -> Result<(), String> {
        self.row_cells(RowRef::Values(row), cells)
    }

    /// [`Shape::cells`] of a row of any part ([`PartRows`]).
    ///
    /// # Errors
    /// As [`Shape::cells`].
    pub fn row_cells<'r>(&self, row: RowRef<'r>, cells: &mut Vec<Cell<'r>>) -> Result<(), String> {
        cells.clear();
        if row.len() != self.cols.len() {
            return Err(format!(
                "row has {} values for {} columns",
                row.len(),
                self.cols.len()
            ));
        }
        for (i, (value, col)) in row.cells().zip(&self.cols).enumerate() {
            match value.to_cell(&col.ty) {
                Ok(Cell::Null)
                    if self.pk_positions.contains(&i) || self.version_position == Some(i) =>
                {
                    let what = if self.version_position == Some(i) {
                        "version"
                    } else {
                        "primary-key"
                    };
                    return Err(format!("{what} column {} is null", col.name));
                }
                Ok(cell) => cells.push(cell),
                Err(e) => return Err(format!("column {}: {e}", col.name)),
            }
        }
        for (index, positions) in &self.sized_indexes {
            let size: usize = positions.iter().map(|&i| cells[i].stored_len()).sum();
            if size > MAX_INDEX_ENTRY_BYTES {
                let (longest, len) = positions
                    .iter()
                    .map(|&i| (self.cols[i].name.as_str(), cells[i].stored_len()))
                    .max_by_key(|(_, len)| *len)
                    .unwrap_or_default();
                return Err(format!(
                    "oversize value: the row's entry in index {index} takes {size} bytes \
                     (column {longest} alone {len}); the loader accepts at most \
                     {MAX_INDEX_ENTRY_BYTES} (Postgres B-tree entries hold 2704)"
                ));
            }
        }
        Ok(())
    }

    /// The rejected-record entry for `row`, refused with `error`.
    pub fn reject(&self, row: &[Value], error: String) -> RejectedRecord {
        reject(self.table, self.columns, RowRef::Values(row), error)
    }

    /// [`Shape::reject`] of a row of any part: the row as a JSON object of `Value`s.
    pub fn reject_row(&self, row: RowRef<'_>, error: String) -> RejectedRecord {
        reject(self.table, self.columns, row, error)
    }

    /// Writes every acceptable row of `parts` to `writer`, followed by `tail`; counts the
    /// rows written and collects the refused ones per part in `outcomes` (reset first).
    async fn write<P: PartRows + ?Sized>(
        &self,
        mut writer: Pin<&mut BinaryCopyInWriter>,
        parts: &[&P],
        outcomes: &mut [LoadOutcome],
        tail: Tail,
    ) -> Result<(), tokio_postgres::Error> {
        let mut cells: Vec<Cell> = Vec::with_capacity(self.cols.len() + 1);
        for (part, (rows, outcome)) in parts.iter().zip(outcomes.iter_mut()).enumerate() {
            *outcome = LoadOutcome::default();
            for ord in 0..rows.len() {
                let row = rows.row(ord);
                if let Err(error) = self.row_cells(row, &mut cells) {
                    outcome.rejected.push(self.reject_row(row, error));
                    continue;
                }
                match tail {
                    Tail::Ordinal => cells.push(Cell::I64(((part as i64) << 32) | ord as i64)),
                    Tail::Job(Some(job_id)) => cells.push(Cell::Uuid(job_id)),
                    Tail::Job(None) => {}
                }
                let refs: Vec<&(dyn ToSql + Sync)> =
                    cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
                writer.as_mut().write(&refs).await?;
                outcome.rows += 1;
            }
        }
        Ok(())
    }
}

/// Stages the acceptable rows of `parts` into a temp table: the batch's columns (types
/// from the destination, no constraints) plus an ordinal — the part's index in the high 32
/// bits, the row's in the low ones — so the last duplicate of a key wins. Returns the
/// staging table's quoted name; refused rows go to `outcomes`.
async fn stage<P: PartRows + ?Sized>(
    tx: &Transaction<'_>,
    shape: &Shape<'_>,
    parts: &[&P],
    outcomes: &mut [LoadOutcome],
) -> Result<String, StoreError> {
    let table = shape.table;
    let col_sql = shape.column_list();
    let stage = format!(
        "\"_sluice_stage_{}_{}\"",
        shape.info.oid,
        short_hash(&col_sql)
    );
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS
           SELECT {col_sql}, 0::bigint AS _sluice_ord FROM {} WITH NO DATA",
        shape.info.quoted
    ))
    .await
    .context(|| format!("creating the staging table for {table}"))?;

    let mut types: Vec<Type> = shape.cols.iter().map(|c| c.ty.clone()).collect();
    types.push(Type::INT8);
    let copy = tx
        .prepare_cached(&format!(
            "COPY {stage} ({col_sql}, _sluice_ord) FROM STDIN BINARY"
        ))
        .await
        .context(|| format!("preparing COPY for {table}"))?;
    let sink = tx
        .copy_in(&copy)
        .await
        .context(|| format!("starting COPY for {table}"))?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    shape
        .write(writer.as_mut(), parts, outcomes, Tail::Ordinal)
        .await
        .context(|| format!("writing COPY rows for {table}"))?;
    writer
        .finish()
        .await
        .context(|| format!("finishing COPY for {table}"))?;
    Ok(stage)
}

/// Writes the staged rows into the destination: the replace scope's deletes, then one
/// `INSERT … SELECT … ON CONFLICT (pk) DO UPDATE` guarded by the version column that does
/// not rewrite identical rows. Returns (rows inserted or changed, rows deleted).
#[allow(clippy::too_many_arguments)]
async fn upsert(
    tx: &Transaction<'_>,
    catalog: &Catalog,
    shape: &Shape<'_>,
    stage: &str,
    merge: &MergeSpec,
    job_id: Uuid,
    duplicates: bool,
    parts: usize,
) -> Result<(u64, u64, u64), StoreError> {
    let (table, info, columns) = (shape.table, &shape.info, shape.columns);
    let (version, scope) = (&shape.version, &shape.scope);
    let pk_sql = shape.key_list();
    let deleted = if scope.is_empty() {
        0
    } else {
        replace_scope(tx, info, table, stage, scope, version.as_deref(), merge).await?
    };

    let col_list: Vec<String> = shape.cols.iter().map(|c| quote_ident(&c.name)).collect();
    let non_key: Vec<&String> = columns
        .iter()
        .filter(|c| !info.primary_key.contains(c))
        .collect();
    let has_job_col = info.column(JOB_ID_COLUMN).is_some();
    let has_loaded_col = info.column(LOADED_AT_COLUMN).is_some();
    let mut insert_cols = col_list.clone();
    let mut select_cols: Vec<String> = col_list.iter().map(|c| format!("s.{c}")).collect();
    let mut set = non_key
        .iter()
        .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
        .collect::<Vec<_>>();
    if has_job_col {
        insert_cols.push(quote_ident(JOB_ID_COLUMN));
        select_cols.push("$1::uuid".into());
        set.push(format!("{0} = EXCLUDED.{0}", quote_ident(JOB_ID_COLUMN)));
    }
    if has_loaded_col {
        insert_cols.push(quote_ident(LOADED_AT_COLUMN));
        select_cols.push("now()".into());
        set.push(format!("{0} = EXCLUDED.{0}", quote_ident(LOADED_AT_COLUMN)));
    }
    let conflict = if non_key.is_empty() {
        "DO NOTHING".to_string()
    } else {
        let mut guards = vec![format!(
            "({}) IS DISTINCT FROM ({})",
            non_key
                .iter()
                .map(|c| format!("t.{}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", "),
            non_key
                .iter()
                .map(|c| format!("EXCLUDED.{}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        if let Some(v) = version {
            guards.push(format!("t.{0} <= EXCLUDED.{0}", quote_ident(v)));
        }
        format!(
            "DO UPDATE SET {} WHERE {}",
            set.join(", "),
            guards.join(" AND ")
        )
    };
    // Scoped collections: rows of a parent whose stored version (in the parent table, or
    // else in this table) is newer are not added: an older export loaded late must not
    // resurrect removed members.
    let guard_table = match &merge.scope_parent {
        Some(parent) => catalog.table(&**tx, parent).await?.quoted.clone(),
        None => info.quoted.clone(),
    };
    let newer_filter = match (version, scope.is_empty()) {
        (Some(v), false) => format!(
            " WHERE NOT EXISTS (SELECT 1 FROM {dest} n WHERE {join} AND n.{v} > s.{v})",
            dest = guard_table,
            join = scope
                .iter()
                .map(|c| format!("n.{0} = s.{0}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(" AND "),
            v = quote_ident(v),
        ),
        _ => String::new(),
    };
    // Rows go in primary-key order, so concurrent upserts of overlapping keys lock them in
    // the same order. With duplicate keys: within a part the last one wins; across parts,
    // with a version column, the highest version (ties: the later part), which is what
    // upserting the parts one after the other would have left.
    let source = match (version, duplicates, parts > 1) {
        (_, false, _) => format!("{stage} s"),
        (Some(v), true, true) => format!(
            "(SELECT DISTINCT ON ({pk_sql}) * FROM
               (SELECT DISTINCT ON (_sluice_ord >> 32, {pk_sql}) * FROM {stage}
                 ORDER BY _sluice_ord >> 32, {pk_sql}, _sluice_ord DESC) w
              ORDER BY {pk_sql}, {v} DESC, _sluice_ord DESC) s",
            v = quote_ident(v)
        ),
        _ => format!(
            "(SELECT DISTINCT ON ({pk_sql}) * FROM {stage} ORDER BY {pk_sql}, _sluice_ord DESC) s"
        ),
    };
    // A row the upsert inserted has no xmax yet; one it updated carries this
    // transaction's: the count of each is what `jobs show` reports per table.
    let sql = format!(
        "WITH w AS (
           INSERT INTO {dest} AS t ({insert})
           SELECT {select} FROM {source}{newer_filter}
            ORDER BY {pk_sql}
           ON CONFLICT ({pk_sql}) {conflict}
           RETURNING (t.xmax = 0) AS inserted)
         SELECT count(*), count(*) FILTER (WHERE inserted) FROM w",
        dest = info.quoted,
        insert = insert_cols.join(", "),
        select = select_cols.join(", "),
    );
    let params: Vec<&(dyn ToSql + Sync)> = if has_job_col { vec![&job_id] } else { vec![] };
    let counts = crate::cached::query(tx, &sql, &params)
        .await
        .context(|| format!("upserting into {table}"))?;
    let (written, inserted) = counts
        .first()
        .map_or((0, 0), |r| (r.get::<_, i64>(0), r.get::<_, i64>(1)));
    Ok((written as u64, inserted as u64, deleted))
}

/// Deletes the rows of the batch's parents that the batch no longer carries, unless they
/// are newer than the batch. The parents are `merge.scope_keys` when given (which covers
/// parents whose collection became empty), else those present in the staged rows.
async fn replace_scope(
    tx: &Transaction<'_>,
    info: &TableInfo,
    table: &str,
    stage: &str,
    scope: &[String],
    version: Option<&str>,
    merge: &MergeSpec,
) -> Result<u64, StoreError> {
    let scope_cols: Vec<String> = scope.iter().map(|c| quote_ident(c)).collect();
    let not_in_batch = format!(
        "NOT EXISTS (SELECT 1 FROM {stage} x WHERE {})",
        info.primary_key
            .iter()
            .map(|c| format!("x.{0} = d.{0}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ")
    );
    if merge.scope_keys.is_empty() {
        let join_scope = scope_cols
            .iter()
            .map(|c| format!("d.{c} = s.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let (version_select, version_guard) = match version {
            Some(v) => (
                format!(", max({}) AS _v", quote_ident(v)),
                format!(" AND d.{} <= s._v", quote_ident(v)),
            ),
            None => (String::new(), String::new()),
        };
        let sql = format!(
            "DELETE FROM {dest} d
              USING (SELECT {scope} {version_select} FROM {stage} GROUP BY {scope}) s
              WHERE {join_scope}{version_guard} AND {not_in_batch}",
            dest = info.quoted,
            scope = scope_cols.join(", "),
        );
        return crate::cached::execute(tx, &sql, &[])
            .await
            .context(|| format!("replacing rows of {table}"));
    }
    // Explicit keys: a JSON array of arrays, cast to the scope columns' types.
    let mut conditions = Vec::new();
    for (i, c) in scope.iter().enumerate() {
        let col = info.column(c).ok_or_else(|| {
            StoreError::Schema(format!(
                "replace-scope column {c:?} is not a column of {table}"
            ))
        })?;
        conditions.push(format!(
            "d.{} = (k->>{i})::{}",
            quote_ident(c),
            col.ty.name()
        ));
    }
    let keys = serde_json::Value::Array(
        merge
            .scope_keys
            .iter()
            .map(|k| serde_json::Value::Array(k.clone()))
            .collect(),
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&keys];
    let version_text: Option<String> = merge.scope_version.as_ref().map(|v| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    if let (Some(v), Some(text)) = (version, version_text.as_ref()) {
        let col = info.column(v).ok_or_else(|| {
            StoreError::Schema(format!("version column {v:?} is not a column of {table}"))
        })?;
        conditions.push(format!(
            "d.{} <= $2::text::{}",
            quote_ident(v),
            col.ty.name()
        ));
        params.push(text);
    }
    let sql = format!(
        "DELETE FROM {dest} d USING jsonb_array_elements($1::jsonb) k
          WHERE {} AND {not_in_batch}",
        conditions.join(" AND "),
        dest = info.quoted,
    );
    crate::cached::execute(tx, &sql, &params)
        .await
        .context(|| format!("replacing rows of {table}"))
}

/// What follows a row's values in a COPY.
#[derive(Clone, Copy)]
enum Tail {
    /// Into staging: the ordinal, part index in the high 32 bits and row index in the low.
    Ordinal,
    /// Into the destination: the job id for `_sluice_job_id`, when the table has it.
    Job(Option<Uuid>),
}

/// Tries `parts` as one binary COPY straight into the destination, inside a savepoint
/// (`_sluice_loaded_at` takes its default, the transaction's time, as in the upsert).
/// Returns the parts' outcomes, or `None` when the COPY failed — typically a key that
/// already exists (SQLSTATE 23505) — after rolling back to the savepoint: nothing of the
/// attempt remains and the caller upserts instead.
///
/// # Errors
/// Lost connections and failures to set or roll back the savepoint.
async fn insert_direct<P: PartRows + ?Sized>(
    tx: &Transaction<'_>,
    shape: &Shape<'_>,
    job_id: Uuid,
    parts: &[&P],
) -> Result<Option<Vec<LoadOutcome>>, StoreError> {
    let (table, info) = (shape.table, &shape.info);
    let with_job = info.column(JOB_ID_COLUMN).is_some();
    let mut types: Vec<Type> = shape.cols.iter().map(|c| c.ty.clone()).collect();
    let mut columns = shape.column_list();
    if with_job {
        types.push(Type::UUID);
        columns.push_str(", ");
        columns.push_str(&quote_ident(JOB_ID_COLUMN));
    }
    let mut outcomes: Vec<LoadOutcome> = parts.iter().map(|_| LoadOutcome::default()).collect();
    tx.batch_execute("SAVEPOINT sluice_direct_insert")
        .await
        .context(|| format!("setting a savepoint for {table}"))?;
    let attempt = async {
        let copy = tx
            .prepare_cached(&format!(
                "COPY {} ({columns}) FROM STDIN BINARY",
                info.quoted
            ))
            .await?;
        let writer = BinaryCopyInWriter::new(tx.copy_in(&copy).await?, &types);
        pin_mut!(writer);
        shape
            .write(
                writer.as_mut(),
                parts,
                &mut outcomes,
                Tail::Job(with_job.then_some(job_id)),
            )
            .await?;
        writer.finish().await
    }
    .await;
    match attempt {
        Ok(_) => {
            tx.batch_execute("RELEASE SAVEPOINT sluice_direct_insert")
                .await
                .context(|| format!("releasing the savepoint for {table}"))?;
            info.direct.succeeded();
            Ok(Some(outcomes))
        }
        Err(e) if e.as_db_error().is_some() => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT sluice_direct_insert")
                .await
                .context(|| format!("rolling back the direct COPY into {table}"))?;
            tracing::debug!(table, error = %e, "direct COPY refused; upserting instead");
            info.direct.conflicted();
            Ok(None)
        }
        Err(e) => Err(e).context(|| format!("copying rows into {table}")),
    }
}

/// Whether two rows of `parts` may share a primary key (by hash: a collision says yes).
/// Rows are counted whether or not they will be refused, which can only make it say yes.
pub fn has_duplicate_keys<P: PartRows + ?Sized>(pk_positions: &[usize], parts: &[&P]) -> bool {
    let total: usize = parts.iter().map(|rows| rows.len()).sum();
    let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::with_capacity(total);
    parts
        .iter()
        .flat_map(|rows| (0..rows.len()).map(|i| rows.row(i)))
        .filter(|row| pk_positions.iter().all(|&i| i < row.len()))
        .any(|row| !seen.insert(key_hash(pk_positions, row)))
}

fn reject(table: &str, columns: &[String], row: RowRef<'_>, error: String) -> RejectedRecord {
    let record: serde_json::Map<String, Value> = columns
        .iter()
        .cloned()
        .zip(row.cells().map(CellRef::to_value))
        .collect();
    RejectedRecord {
        source: format!("loader: {table}"),
        table: Some(table.to_string()),
        error,
        raw: Value::Object(record),
    }
}

/// A hash of a row's primary-key values: a string by its characters, any other value by
/// its `Value`'s JSON text, so that a raw cell and its `Value` hash alike (`"\u0061"` is
/// `"a"`).
fn key_hash(positions: &[usize], row: RowRef<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for &i in positions {
        match row.cell(i) {
            CellRef::Value(Value::String(s)) => s.hash(&mut h),
            CellRef::Value(other) => other.to_string().hash(&mut h),
            CellRef::Raw(raw) if raw.starts_with('"') && !raw.contains('\\') => {
                raw[1..raw.len() - 1].hash(&mut h)
            }
            CellRef::Raw(raw) => match sluice_contracts::raw_rows::raw_to_value(raw) {
                Value::String(s) => s.hash(&mut h),
                other => other.to_string().hash(&mut h),
            },
        }
        0xffu8.hash(&mut h);
    }
    h.finish()
}

fn short_hash(s: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    format!("{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::DirectInserts;

    /// How many of the next `n` loads would try a direct COPY.
    fn tries(direct: &DirectInserts, n: usize) -> usize {
        (0..n).filter(|_| direct.should_try()).count()
    }

    #[test]
    fn conflicts_back_off_twice_as_long_each_time_up_to_the_cap_and_a_success_resets() {
        let direct = DirectInserts::default();
        assert!(direct.should_try(), "a new table tries");
        direct.conflicted();
        assert!(direct.backing_off());
        // Four loads skip, the fifth tries again.
        assert_eq!(tries(&direct, 4), 0);
        assert!(!direct.backing_off());
        assert!(direct.should_try());
        direct.conflicted();
        assert_eq!(tries(&direct, 8), 0);
        assert!(direct.should_try());
        for _ in 0..10 {
            direct.conflicted();
        }
        assert_eq!(
            tries(&direct, DirectInserts::MAX_BACKOFF as usize),
            0,
            "capped at MAX_BACKOFF"
        );
        assert!(direct.should_try());
        direct.succeeded();
        direct.conflicted();
        assert_eq!(
            tries(&direct, 5),
            1,
            "after a success the back-off starts at 4 again"
        );
    }
}
