//! The Redshift dialect: every statement the Redshift destination sends, as pure functions
//! of a table's shape, so they can be read (and golden-tested) without a server.
//!
//! Only what Redshift speaks is generated: no `ON CONFLICT`, no `DISTINCT ON`, no
//! `IS DISTINCT FROM`, no `COPY FROM STDIN`, no bind parameters (values are literals, sent
//! through the simple query protocol), `MERGE` with a table as its source and both
//! `WHEN` clauses. PostgreSQL 15 speaks the same subset, given `SUPER`, `JSON_PARSE` and
//! `JSON_SERIALIZE` (see [`STAND_IN_PRELUDE`]) and `standard_conforming_strings = off`;
//! that is how the dialect is tested here.
//!
//! Types (`TableInfo` column types come from the Postgres migrations): `text`, `varchar`,
//! `bpchar`, `name` → `VARCHAR(65535)` (Redshift's longest; lengths count bytes);
//! `json`/`jsonb` → `SUPER`; `uuid` → `CHAR(36)`; `timestamptz` → `TIMESTAMPTZ`;
//! `timestamp` → `TIMESTAMP`; `date` → `DATE`; `bool` → `BOOLEAN`; `int2/4/8` →
//! `SMALLINT/INTEGER/BIGINT`; `float4/8` → `REAL/DOUBLE PRECISION`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use postgres_types::Type;
use serde_json::Value;
use sluice_contracts::MergeSpec;
use sluice_store::cell::Cell;
use sluice_store::load::{JOB_ID_COLUMN, LOADED_AT_COLUMN, Shape, TableInfo};
use sluice_store::quote_ident;
use uuid::Uuid;

use crate::{push_literal, quote_literal};

/// Redshift's longest `VARCHAR`, in bytes.
pub const MAX_VARCHAR_BYTES: usize = 65_535;

/// Redshift's largest `SUPER` value, in bytes of JSON text.
pub const MAX_SUPER_BYTES: usize = 16 * 1024 * 1024;

/// Redshift's longest statement, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 16 * 1024 * 1024;

/// Which server runs the SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Amazon Redshift: tables get `DISTKEY`/`SORTKEY`, large loads `COPY` from S3.
    Redshift,
    /// A PostgreSQL database standing in for Redshift (tests, local runs): the same SQL
    /// without the table attributes Postgres does not know, after [`STAND_IN_PRELUDE`];
    /// staged objects are read back and inserted instead of `COPY … FROM 's3://…'`.
    StandIn,
}

/// What a PostgreSQL stand-in needs to run the dialect: `SUPER` as a domain over `jsonb`,
/// `JSON_PARSE(text)` and `JSON_SERIALIZE(super)`. Idempotent.
pub const STAND_IN_PRELUDE: &str = "
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'super') THEN
    CREATE DOMAIN public.super AS jsonb;
  END IF;
END $$;
CREATE OR REPLACE FUNCTION public.json_parse(text) RETURNS jsonb
  LANGUAGE sql IMMUTABLE STRICT AS 'SELECT $1::jsonb';
CREATE OR REPLACE FUNCTION public.json_serialize(jsonb) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT AS 'SELECT $1::text';
";

/// Session settings of a stand-in: string literals read backslashes as escapes, as
/// Redshift's do (see `quote_literal`), without a warning per literal.
pub const STAND_IN_SESSION: &str =
    "SET standard_conforming_strings = off; SET escape_string_warning = off";

/// The Redshift type of a column of Postgres type `ty` (`None`: not a type sluice writes).
pub fn column_type(ty: &Type) -> Option<&'static str> {
    Some(match *ty {
        Type::BOOL => "BOOLEAN",
        Type::INT2 => "SMALLINT",
        Type::INT4 => "INTEGER",
        Type::INT8 => "BIGINT",
        Type::FLOAT4 => "REAL",
        Type::FLOAT8 => "DOUBLE PRECISION",
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => "VARCHAR(65535)",
        Type::JSON | Type::JSONB => "SUPER",
        Type::TIMESTAMP => "TIMESTAMP",
        Type::TIMESTAMPTZ => "TIMESTAMPTZ",
        Type::DATE => "DATE",
        Type::UUID => "CHAR(36)",
        // Redshift's DECIMAL needs a precision (at most 38); six places keep money and
        // rates exact (Postgres' `numeric` columns of sluice hold prices).
        Type::NUMERIC => "DECIMAL(38,6)",
        _ => return None,
    })
}

fn is_super(ty: &Type) -> bool {
    matches!(*ty, Type::JSON | Type::JSONB)
}

/// The columns a table is sorted by: the first of these time columns it has. Events are
/// read by time range, so their blocks are zone-mapped by it.
const SORT_COLUMNS: [&str; 7] = [
    "datetime",
    "ts",
    "send_time",
    "updated",
    "updated_at",
    "export_date",
    "created",
];

/// The column rows are distributed by: `profile_id` where a table has it, so a stream's
/// rows sit on the slice of their profile and joins to profiles stay local; else
/// Redshift's `DISTSTYLE AUTO`.
const DIST_COLUMN: &str = "profile_id";

/// `CREATE TABLE IF NOT EXISTS` for `info`, with its primary key (informational in
/// Redshift), the `NOT NULL`s of columns without a default, and for
/// [`Flavour::Redshift`] `DISTKEY`/`SORTKEY`.
/// Columns of types sluice does not write are left out (none of the migrations has any).
pub fn create_table(info: &TableInfo, flavour: Flavour) -> String {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (\n", info.quoted);
    // Generated columns (Postgres computes them) are left out: nothing writes them.
    for column in info.columns.iter().filter(|c| !c.generated) {
        let Some(ty) = column_type(&column.ty) else {
            continue;
        };
        let _ = write!(sql, "    {} {ty}", quote_ident(&column.name));
        // A column with a default may be absent from a batch and Redshift would have no
        // default to fill it, so only columns without one keep NOT NULL — and the
        // loader's own columns, which every MERGE sets.
        if column.not_null && (!column.has_default || column.name.starts_with("_sluice_")) {
            sql.push_str(" NOT NULL");
        }
        sql.push_str(",\n");
    }
    let _ = write!(
        sql,
        "    PRIMARY KEY ({})\n)",
        info.primary_key
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if flavour == Flavour::Redshift {
        if info.column(DIST_COLUMN).is_some() {
            let _ = write!(sql, "\nDISTKEY ({})", quote_ident(DIST_COLUMN));
        }
        if let Some(sort) = SORT_COLUMNS.iter().find(|c| info.column(c).is_some()) {
            let _ = write!(sql, "\nSORTKEY ({})", quote_ident(sort));
        }
    }
    sql
}

/// `ALTER TABLE … ADD COLUMN` for a column a later migration added (Redshift adds one
/// column per statement; the new column is nullable, as existing rows have no value).
pub fn add_column(info: &TableInfo, column: &str) -> Option<String> {
    let col = info.column(column).filter(|c| !c.generated)?;
    Some(format!(
        "ALTER TABLE {} ADD COLUMN {} {}",
        info.quoted,
        quote_ident(column),
        column_type(&col.ty)?
    ))
}

/// The staging table of a load: the batch's columns with their Redshift types plus the
/// ordinal `_sluice_ord` (part index in the high 32 bits, row index in the low ones), so
/// the last duplicate of a key wins. A temp table lives as long as the session; the sink
/// drops it in the transaction that created it. (Not `LIKE` the target: that would copy
/// the loader columns' `NOT NULL`, which staged rows do not fill.)
pub fn create_stage(stage: &str, shape: &Shape<'_>) -> String {
    let columns: Vec<String> = shape
        .cols
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                quote_ident(&c.name),
                column_type(&c.ty).unwrap_or("VARCHAR(65535)")
            )
        })
        .collect();
    format!(
        "CREATE TEMP TABLE {stage} ({}, _sluice_ord BIGINT)",
        columns.join(", ")
    )
}

/// The head of a multi-row `INSERT` into the staging table; rows follow as
/// [`push_row`] writes them, separated by commas.
pub fn insert_head(stage: &str, shape: &Shape<'_>) -> String {
    format!(
        "INSERT INTO {stage} ({}, _sluice_ord) VALUES ",
        shape.column_list()
    )
}

/// Why a value cannot go into Redshift although Postgres would take it, or `None`.
pub fn refuse(cell: &Cell<'_>, column: &str) -> Option<String> {
    match cell {
        Cell::Text(s) if s.len() > MAX_VARCHAR_BYTES => Some(format!(
            "column {column}: {} bytes, over Redshift's VARCHAR({MAX_VARCHAR_BYTES})",
            s.len()
        )),
        Cell::Json(s) if s.len() > MAX_SUPER_BYTES => Some(format!(
            "column {column}: {} bytes of JSON, over Redshift's SUPER limit of {MAX_SUPER_BYTES}",
            s.len()
        )),
        _ => None,
    }
}

/// Appends `(v1, v2, …, ordinal)` for one row of typed cells to `out`.
pub fn push_row(out: &mut String, cells: &[Cell<'_>], ordinal: i64) {
    out.push('(');
    for cell in cells {
        push_value(out, cell);
        out.push_str(", ");
    }
    let _ = write!(out, "{ordinal})");
}

/// Appends one value as a Redshift literal.
pub fn push_value(out: &mut String, cell: &Cell<'_>) {
    match cell {
        Cell::Null => out.push_str("NULL"),
        Cell::Bool(b) => out.push_str(if *b { "TRUE" } else { "FALSE" }),
        Cell::I16(n) => {
            let _ = write!(out, "{n}");
        }
        Cell::I32(n) => {
            let _ = write!(out, "{n}");
        }
        Cell::I64(n) => {
            let _ = write!(out, "{n}");
        }
        // `Display` of a finite float never uses an exponent and round-trips.
        Cell::F32(x) => {
            let _ = write!(out, "{x}");
        }
        Cell::F64(x) => {
            let _ = write!(out, "{x}");
        }
        Cell::Text(s) => push_literal(out, s),
        Cell::Json(s) => {
            out.push_str("JSON_PARSE(");
            push_literal(out, s);
            out.push(')');
        }
        Cell::Timestamp(t) => {
            let _ = write!(out, "'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"));
        }
        Cell::TimestampTz(t) => out.push_str(&timestamptz(t)),
        Cell::Date(d) => {
            let _ = write!(out, "'{}'", d.format("%Y-%m-%d"));
        }
        Cell::Uuid(u) => {
            let _ = write!(out, "'{u}'");
        }
        // Plain decimal digits (`cell::decimal`): safe unquoted.
        Cell::Numeric(n) => out.push_str(n),
    }
}

/// A `TIMESTAMPTZ` literal in UTC with microseconds.
pub fn timestamptz(t: &DateTime<Utc>) -> String {
    format!("'{}+00'", t.format("%Y-%m-%d %H:%M:%S%.6f"))
}

fn keys(shape: &Shape<'_>) -> Vec<String> {
    shape
        .info
        .primary_key
        .iter()
        .map(|c| quote_ident(c))
        .collect()
}

/// `a.k1 = b.k1 AND …` over `columns` (quoted), for two table names (quoted, maybe
/// schema-qualified). Redshift's `DELETE` takes no alias for its target, so statements
/// name tables in full rather than by alias.
fn join_on(left: &str, right: &str, columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| format!("{left}.{c} = {right}.{c}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// De-duplicates the staged rows by primary key into the temp table `dedup`: within a
/// part the last row of a key wins; across parts, with a version column, the highest
/// version (ties: the later part), else the later part — what upserting the parts one
/// after the other leaves (and what `MERGE` needs: a target row may match once).
pub fn dedupe(stage: &str, dedup: &str, shape: &Shape<'_>, parts: usize) -> String {
    let columns = shape.column_list();
    let pk = keys(shape).join(", ");
    let inner = match (&shape.version, parts > 1) {
        (Some(v), true) => format!(
            "SELECT {columns}, _sluice_ord, ROW_NUMBER() OVER (PARTITION BY {pk} ORDER BY {v} DESC, _sluice_ord DESC) AS _sluice_rn
               FROM (SELECT {columns}, _sluice_ord, ROW_NUMBER() OVER (PARTITION BY _sluice_ord / 4294967296, {pk} ORDER BY _sluice_ord DESC) AS _sluice_last
                       FROM {stage}) w
              WHERE _sluice_last = 1",
            v = quote_ident(v)
        ),
        _ => format!(
            "SELECT {columns}, _sluice_ord, ROW_NUMBER() OVER (PARTITION BY {pk} ORDER BY _sluice_ord DESC) AS _sluice_rn
               FROM {stage}"
        ),
    };
    format!(
        "CREATE TEMP TABLE {dedup} AS SELECT {columns}, _sluice_ord FROM ({inner}) x WHERE _sluice_rn = 1"
    )
}

/// Removes from `source` the rows that must not reach the target: those whose stored row
/// has a greater version (an older record never overwrites a newer one) and those equal
/// to the stored row in every batch column (loading the same data twice rewrites
/// nothing, so a re-run keeps `_sluice_job_id` and `_sluice_loaded_at`).
pub fn drop_stale(source: &str, shape: &Shape<'_>) -> String {
    let pk = keys(shape);
    let t = &shape.info.quoted;
    let same: Vec<String> = shape
        .cols
        .iter()
        .filter(|c| !shape.info.primary_key.contains(&c.name))
        .map(|c| {
            let name = quote_ident(&c.name);
            let (old, new) = (format!("{t}.{name}"), format!("{source}.{name}"));
            if is_super(&c.ty) {
                format!(
                    "(JSON_SERIALIZE({old}) = JSON_SERIALIZE({new}) OR ({old} IS NULL AND {new} IS NULL))"
                )
            } else {
                format!("({old} = {new} OR ({old} IS NULL AND {new} IS NULL))")
            }
        })
        .collect();
    let identical = if same.is_empty() {
        "TRUE".to_string()
    } else {
        same.join(" AND ")
    };
    let condition = match &shape.version {
        Some(v) => format!(
            "({t}.{v} > {source}.{v} OR ({identical}))",
            v = quote_ident(v)
        ),
        None => format!("({identical})"),
    };
    format!(
        "DELETE FROM {source} USING {t} WHERE {} AND {condition}",
        join_on(t, source, &pk)
    )
}

/// For a replace scope with a parent table (`MergeSpec::scope_parent`, quoted): removes
/// from `source` the rows of parents whose stored version is newer than the row's, so an
/// older export loaded late does not resurrect removed members. Without a parent the
/// target itself is the guard, as in the Postgres path.
pub fn drop_older_than_parent(
    source: &str,
    shape: &Shape<'_>,
    parent: Option<&str>,
) -> Option<String> {
    let v = quote_ident(shape.version.as_ref()?);
    if shape.scope.is_empty() {
        return None;
    }
    let guard = parent.unwrap_or(&shape.info.quoted);
    let scope: Vec<String> = shape.scope.iter().map(|c| quote_ident(c)).collect();
    Some(format!(
        "DELETE FROM {source} WHERE EXISTS (SELECT 1 FROM {guard} WHERE {} AND {guard}.{v} > {source}.{v})",
        join_on(guard, source, &scope),
    ))
}

/// The replace scope's deletes: rows of the batch's parents that the batch no longer
/// carries (and whose version is not newer). The parents are `merge.scope_keys` when
/// given — which covers parents whose collection became empty — else those present in
/// the staged rows (gathered into the temp table `scope_table` first: Redshift's `DELETE
/// … USING` takes tables, not subqueries). Empty without a replace scope.
pub fn replace_scope(
    stage: &str,
    scope_table: &str,
    shape: &Shape<'_>,
    merge: &MergeSpec,
) -> Vec<String> {
    if shape.scope.is_empty() {
        return Vec::new();
    }
    let t = &shape.info.quoted;
    let pk = keys(shape);
    let scope: Vec<String> = shape.scope.iter().map(|c| quote_ident(c)).collect();
    let not_in_batch = format!(
        "NOT EXISTS (SELECT 1 FROM {stage} WHERE {})",
        join_on(stage, t, &pk)
    );
    if merge.scope_keys.is_empty() {
        let (version_select, version_guard) = match &shape.version {
            Some(v) => (
                format!(", MAX({}) AS _sluice_v", quote_ident(v)),
                format!(" AND {t}.{} <= {scope_table}._sluice_v", quote_ident(v)),
            ),
            None => (String::new(), String::new()),
        };
        return vec![
            format!(
                "CREATE TEMP TABLE {scope_table} AS SELECT {cols}{version_select} FROM {stage} GROUP BY {cols}",
                cols = scope.join(", "),
            ),
            format!(
                "DELETE FROM {t} USING {scope_table} WHERE {join}{version_guard} AND {not_in_batch}",
                join = join_on(t, scope_table, &scope),
            ),
            format!("DROP TABLE {scope_table}"),
        ];
    }
    let parents: Vec<String> = merge
        .scope_keys
        .iter()
        .map(|key| {
            let terms: Vec<String> = scope
                .iter()
                .zip(key)
                .map(|(c, value)| format!("{t}.{c} = {}", json_literal(value)))
                .collect();
            format!("({})", terms.join(" AND "))
        })
        .collect();
    let mut conditions = vec![format!("({})", parents.join(" OR "))];
    if let (Some(v), Some(version)) = (&shape.version, &merge.scope_version) {
        conditions.push(format!(
            "{t}.{} <= {}",
            quote_ident(v),
            json_literal(version)
        ));
    }
    conditions.push(not_in_batch);
    vec![format!(
        "DELETE FROM {t} WHERE {}",
        conditions.join(" AND ")
    )]
}

/// A JSON scalar as a literal: strings quoted, numbers and booleans as written, null as
/// NULL; compared against a typed column, Redshift (and Postgres) cast it.
fn json_literal(value: &Value) -> String {
    match value {
        Value::String(s) => quote_literal(s),
        Value::Null => "NULL".into(),
        Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        Value::Number(n) => n.to_string(),
        other => quote_literal(&other.to_string()),
    }
}

/// The `MERGE` of `source` (de-duplicated, stale rows removed) into the target: matched
/// rows get the batch's values, new keys are inserted; the loader's columns get the job
/// and `loaded_at` (UTC).
pub fn merge(source: &str, shape: &Shape<'_>, job_id: Uuid, loaded_at: &DateTime<Utc>) -> String {
    let info = &shape.info;
    let pk = keys(shape);
    let mut set: Vec<String> = shape
        .cols
        .iter()
        .filter(|c| !info.primary_key.contains(&c.name))
        .map(|c| format!("{0} = {source}.{0}", quote_ident(&c.name)))
        .collect();
    let mut insert: Vec<String> = shape.cols.iter().map(|c| quote_ident(&c.name)).collect();
    let mut values: Vec<String> = insert.iter().map(|c| format!("{source}.{c}")).collect();
    let job = quote_literal(&job_id.to_string());
    let at = timestamptz(loaded_at);
    for (column, value) in [(JOB_ID_COLUMN, &job), (LOADED_AT_COLUMN, &at)] {
        if info.column(column).is_some() {
            set.push(format!("{} = {value}", quote_ident(column)));
            insert.push(quote_ident(column));
            values.push(value.clone());
        }
    }
    if set.is_empty() {
        // Redshift wants both WHEN clauses; identical rows were removed beforehand, so a
        // key-only table has no matched row left and this assignment never runs.
        set.push(format!("{0} = {source}.{0}", pk[0]));
    }
    format!(
        "MERGE INTO {target} USING {source} ON {on}
         WHEN MATCHED THEN UPDATE SET {set}
         WHEN NOT MATCHED THEN INSERT ({insert}) VALUES ({values})",
        target = info.quoted,
        on = pk
            .iter()
            .map(|c| format!("{}.{c} = {source}.{c}", info.quoted))
            .collect::<Vec<_>>()
            .join(" AND "),
        set = set.join(", "),
        insert = insert.join(", "),
        values = values.join(", "),
    )
}

/// `LOCK` of the targets of one write, in name order (two loaders writing overlapping
/// tables take them in the same order). Redshift serialises concurrent writers of a table
/// anyway; taking the lock first turns a serialisation failure at commit into a wait.
pub fn lock(targets: &[&str]) -> String {
    format!("LOCK TABLE {}", targets.join(", "))
}

/// The `COPY` of staged S3 objects (listed in the manifest at `manifest_url`) into the
/// staging table: JSON objects, one per line, keys matched to column names (`'auto'`),
/// gzip-compressed, timestamps in any ISO 8601 form.
pub fn copy_from_s3(
    stage: &str,
    shape: &Shape<'_>,
    manifest_url: &str,
    iam_role: &str,
    region: Option<&str>,
) -> String {
    let mut sql = format!(
        "COPY {stage} ({}, _sluice_ord) FROM {} IAM_ROLE {} FORMAT AS JSON 'auto' GZIP MANIFEST TIMEFORMAT 'auto'",
        shape.column_list(),
        quote_literal(manifest_url),
        quote_literal(iam_role)
    );
    if let Some(region) = region {
        let _ = write!(sql, " REGION {}", quote_literal(region));
    }
    sql
}
