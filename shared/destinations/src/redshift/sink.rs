//! The Redshift write: stage, lock, de-duplicate, guard, `MERGE`, commit — in one
//! destination transaction per group of parts (see the module docs of `redshift`).

use chrono::Utc;
use object_store::path::Path;
use serde_json::Value;
use sluice_contracts::RecordBatch;
use sluice_store::StoreError;
use sluice_store::cell::Cell;
use sluice_store::ledger::PartWriter;
use sluice_store::load::{LoadOutcome, Shape, has_duplicate_keys};

use super::sql::{self, Flavour};
use super::{Redshift, staging::S3Staging};

/// One unit's rows, checked and rendered.
struct Staged<'a> {
    shape: Shape<'a>,
    unit: &'a [&'a RecordBatch],
    /// `INSERT` statements into the staging table (small loads, or a stand-in reading
    /// staged objects back).
    inserts: Vec<String>,
    /// Staged objects (S3 path), one per part with rows.
    objects: Vec<Path>,
    /// Per part: rows accepted and rows refused.
    outcomes: Vec<LoadOutcome>,
    /// Whether two accepted rows may share a primary key.
    duplicates: bool,
}

impl Staged<'_> {
    fn rows(&self) -> u64 {
        self.outcomes.iter().map(|o| o.rows).sum()
    }
}

/// Gathers INSERT statements of at most `max` bytes.
struct Inserts {
    head: String,
    max: usize,
    current: String,
    done: Vec<String>,
}

impl Inserts {
    fn new(head: String, max: usize) -> Self {
        Self {
            current: String::new(),
            head,
            max,
            done: Vec::new(),
        }
    }

    /// Adds one rendered row; `Err` when the row alone is over the statement limit.
    fn push(&mut self, row: &str) -> Result<(), String> {
        if self.head.len() + row.len() > self.max {
            return Err(format!(
                "the row takes {} bytes of SQL, over the destination's statement limit of {} bytes",
                row.len(),
                self.max
            ));
        }
        if !self.current.is_empty() && self.current.len() + row.len() + 1 > self.max {
            self.done.push(std::mem::take(&mut self.current));
        }
        if self.current.is_empty() {
            self.current.push_str(&self.head);
        } else {
            self.current.push(',');
        }
        self.current.push_str(row);
        Ok(())
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

impl Redshift {
    /// Checks and renders one unit's rows: the part index goes in the high 32 bits of the
    /// ordinal and the row index in the low ones, as in the Postgres path.
    fn render<'a>(
        &self,
        shape: Shape<'a>,
        unit: &'a [&'a RecordBatch],
        stage: &str,
    ) -> Result<(Staged<'a>, Vec<Vec<String>>), StoreError> {
        let mut inserts = Inserts::new(sql::insert_head(stage, &shape), self.max_statement_bytes);
        let mut outcomes: Vec<LoadOutcome> = unit.iter().map(|_| LoadOutcome::default()).collect();
        // JSON lines per part, for staging on S3.
        let mut lines: Vec<Vec<String>> = unit.iter().map(|_| Vec::new()).collect();
        let total: usize = unit.iter().map(|b| b.rows.len()).sum();
        let stage_on_s3 = self.staging.is_some() && total as u64 >= self.config.stage_rows;
        let mut cells: Vec<Cell> = Vec::with_capacity(shape.cols.len());
        let rows: Vec<&[Vec<Value>]> = unit.iter().map(|b| b.rows.as_slice()).collect();
        let duplicates = has_duplicate_keys(&shape.pk_positions, &rows);
        let mut row_sql = String::new();
        for (p, batch) in unit.iter().enumerate() {
            for (r, row) in batch.rows.iter().enumerate() {
                let ordinal = ((p as i64) << 32) | r as i64;
                let checked = shape.cells(row, &mut cells).and_then(|()| {
                    cells
                        .iter()
                        .zip(&shape.cols)
                        .find_map(|(cell, col)| sql::refuse(cell, &col.name))
                        .map_or(Ok(()), Err)
                });
                let accepted = checked.and_then(|()| {
                    if stage_on_s3 {
                        lines[p].push(json_line(&shape, row, ordinal));
                        return Ok(());
                    }
                    row_sql.clear();
                    sql::push_row(&mut row_sql, &cells, ordinal);
                    inserts.push(&row_sql)
                });
                match accepted {
                    Ok(()) => outcomes[p].rows += 1,
                    Err(error) => outcomes[p].rejected.push(shape.reject(row, error)),
                }
            }
        }
        Ok((
            Staged {
                shape,
                unit,
                inserts: inserts.finish(),
                objects: Vec::new(),
                outcomes,
                duplicates,
            },
            if stage_on_s3 { lines } else { Vec::new() },
        ))
    }

    /// Puts a unit's JSON lines on S3 (one object per part with rows) and its manifest;
    /// returns the `COPY` that loads them, or for a stand-in the `INSERT`s of the objects'
    /// rows read back.
    async fn stage_on_s3(
        &self,
        staging: &S3Staging,
        staged: &mut Staged<'_>,
        lines: Vec<Vec<String>>,
        stage: &str,
        flavour: Flavour,
    ) -> Result<Vec<String>, StoreError> {
        let date = Utc::now().date_naive();
        let mut manifest = None;
        for (batch, part_lines) in staged.unit.iter().zip(&lines) {
            if part_lines.is_empty() {
                continue;
            }
            let path =
                staging.part_path(&batch.table, date, batch.job_id, &batch.task_id, batch.part);
            let mut body = part_lines.join("\n");
            body.push('\n');
            staging.put_part(&path, body.as_bytes()).await?;
            manifest.get_or_insert_with(|| S3Staging::manifest_path(&path));
            staged.objects.push(path);
        }
        let Some(manifest) = manifest else {
            return Ok(Vec::new());
        };
        let url = staging.put_manifest(&manifest, &staged.objects).await?;
        staged.objects.push(manifest);
        let copy = sql::copy_from_s3(
            stage,
            &staged.shape,
            &url,
            self.config.iam_role.as_deref().unwrap_or_default(),
            self.config.s3_region.as_deref(),
        );
        if flavour == Flavour::Redshift {
            return Ok(vec![copy]);
        }
        // The stand-in cannot run `COPY … FROM 's3://…'`: load exactly what was staged,
        // read back from S3, through the INSERT path.
        tracing::debug!(destination = %self.name, %copy, "stand-in: inserting the staged objects instead of COPY");
        let mut inserts = Inserts::new(
            sql::insert_head(stage, &staged.shape),
            self.max_statement_bytes,
        );
        let mut row_sql = String::new();
        let columns = staged.shape.columns;
        for path in &staged.objects[..staged.objects.len() - 1] {
            let body = staging.read_part(path).await?;
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let corrupt = |why: String| StoreError::Destination {
                    message: format!(
                        "destination {}: staged object {}: {why}",
                        self.name,
                        staging.url(path)
                    ),
                    transient: false,
                };
                let object: serde_json::Map<String, Value> =
                    serde_json::from_slice(line).map_err(|e| corrupt(e.to_string()))?;
                let row: Vec<Value> = columns
                    .iter()
                    .map(|c| object.get(c).cloned().unwrap_or(Value::Null))
                    .collect();
                let ordinal = object
                    .get("_sluice_ord")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| corrupt("a line without _sluice_ord".into()))?;
                let mut cells: Vec<Cell> = Vec::with_capacity(row.len());
                staged.shape.cells(&row, &mut cells).map_err(corrupt)?;
                row_sql.clear();
                sql::push_row(&mut row_sql, &cells, ordinal);
                inserts.push(&row_sql).map_err(corrupt)?;
            }
        }
        Ok(inserts.finish())
    }

    async fn write_units(
        &self,
        client: &tokio_postgres::Client,
        units: &[Vec<&RecordBatch>],
        flavour: Flavour,
    ) -> Result<(Vec<Vec<LoadOutcome>>, Vec<Path>), StoreError> {
        let ledger = self.ledger.get().await?;
        let job_loaded_at = Utc::now();
        let mut staged_units: Vec<(Staged<'_>, Vec<String>)> = Vec::with_capacity(units.len());
        for (n, unit) in units.iter().enumerate() {
            let first = unit[0];
            let info = self.catalog.table(&**ledger, &first.table).await?;
            let shape =
                Shape::validate(info, &first.table, &first.columns, &first.merge, unit.len())?
                    .without_index_limits();
            let stage = format!("\"_sluice_stage_{n}\"");
            let (mut staged, lines) = self.render(shape, unit, &stage)?;
            let loads = match &self.staging {
                Some(staging) if !lines.is_empty() => {
                    self.stage_on_s3(staging, &mut staged, lines, &stage, flavour)
                        .await?
                }
                _ => std::mem::take(&mut staged.inserts),
            };
            staged_units.push((staged, loads));
        }

        let mut begin = String::new();
        if flavour == Flavour::StandIn {
            begin.push_str(sql::STAND_IN_SESSION);
            begin.push_str("; ");
        }
        begin.push_str("BEGIN");
        self.execute(client, "beginning a transaction", &begin)
            .await?;
        let mut targets: Vec<&str> = Vec::new();
        for (n, (staged, loads)) in staged_units.iter().enumerate() {
            let stage = format!("\"_sluice_stage_{n}\"");
            let table = staged.shape.table;
            self.execute(
                client,
                &format!("staging rows for {table}"),
                &sql::create_stage(&stage, &staged.shape),
            )
            .await?;
            for load in loads {
                self.execute(client, &format!("staging rows for {table}"), load)
                    .await?;
            }
            targets.push(&staged.shape.info.quoted);
        }
        targets.sort_unstable();
        targets.dedup();
        if !targets.is_empty() {
            self.execute(client, "locking the target tables", &sql::lock(&targets))
                .await?;
        }

        for (n, (staged, _)) in staged_units.iter().enumerate() {
            let (shape, first) = (&staged.shape, staged.unit[0]);
            let table = shape.table;
            let stage = format!("\"_sluice_stage_{n}\"");
            if staged.rows() == 0 && first.merge.scope_keys.is_empty() {
                self.execute(
                    client,
                    "dropping the staging table",
                    &format!("DROP TABLE {stage}"),
                )
                .await?;
                continue;
            }
            let scope_table = format!("\"_sluice_scope_{n}\"");
            for statement in sql::replace_scope(&stage, &scope_table, shape, &first.merge) {
                self.execute(client, &format!("replacing rows of {table}"), &statement)
                    .await?;
            }
            let mut drops = vec![stage.clone()];
            let source = if staged.duplicates {
                let dedup = format!("\"_sluice_dedup_{n}\"");
                self.execute(
                    client,
                    &format!("de-duplicating rows for {table}"),
                    &sql::dedupe(&stage, &dedup, shape, staged.unit.len()),
                )
                .await?;
                drops.push(dedup.clone());
                dedup
            } else {
                stage.clone()
            };
            let parent = match &first.merge.scope_parent {
                Some(parent) => Some(self.catalog.table(&**ledger, parent).await?.quoted.clone()),
                None => None,
            };
            if let Some(statement) = sql::drop_older_than_parent(&source, shape, parent.as_deref())
            {
                self.execute(
                    client,
                    &format!("guarding {table} by its parent's version"),
                    &statement,
                )
                .await?;
            }
            self.execute(
                client,
                &format!("comparing rows with {table}"),
                &sql::drop_stale(&source, shape),
            )
            .await?;
            self.execute(
                client,
                &format!("merging into {table}"),
                &sql::merge(&source, shape, first.job_id, &job_loaded_at),
            )
            .await?;
            let drops: Vec<String> = drops.iter().map(|t| format!("DROP TABLE {t}")).collect();
            self.execute(client, "dropping the staging tables", &drops.join("; "))
                .await?;
        }
        self.execute(client, "committing", "COMMIT").await?;
        let mut objects = Vec::new();
        let mut outcomes = Vec::with_capacity(staged_units.len());
        for (staged, _) in staged_units {
            objects.extend(staged.objects);
            outcomes.push(staged.outcomes);
        }
        Ok((outcomes, objects))
    }
}

/// One staged row as a JSON object: the record's values under their column names (as the
/// connector sent them: they passed the same checks as an inserted row) and the ordinal.
fn json_line(shape: &Shape<'_>, row: &[Value], ordinal: i64) -> String {
    let mut object = serde_json::Map::with_capacity(row.len() + 1);
    for (column, value) in shape.columns.iter().zip(row) {
        object.insert(column.clone(), value.clone());
    }
    object.insert("_sluice_ord".into(), Value::from(ordinal));
    Value::Object(object).to_string()
}

#[async_trait::async_trait]
impl PartWriter for Redshift {
    async fn write(
        &self,
        units: &[Vec<&RecordBatch>],
    ) -> Result<Vec<Vec<LoadOutcome>>, StoreError> {
        let flavour = self.flavour().await?;
        let client = self.pool.get().await?;
        match self.write_units(&client, units, flavour).await {
            Ok((outcomes, objects)) => {
                if let Some(staging) = &self.staging
                    && !self.config.keep_staged
                {
                    staging.remove(&objects).await;
                }
                Ok(outcomes)
            }
            Err(e) => {
                // Leave the pooled connection outside any transaction; one that cannot
                // even roll back is dropped rather than handed to the next write.
                if client.batch_execute("ROLLBACK").await.is_err() {
                    let _ = deadpool_postgres::Object::take(client);
                }
                Err(e)
            }
        }
    }
}
