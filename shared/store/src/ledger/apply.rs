//! Applying `RecordBatch` parts: claim, write (in the ledger's transaction or in a
//! destination of its own), settle.

use deadpool_postgres::Transaction;
use serde_json::Value;
use sluice_contracts::{
    MergeSpec, RawRecordBatch, RawRows, RecordBatch, RecordBatchOf, RejectedRecord,
};
use uuid::Uuid;

use super::jobs::{finish_if_done, insert_rejects, lock_job};
use super::{JobState, TaskState};
use crate::load::{Catalog, Changes, LoadOutcome, PartRows, load_parts};
use crate::{Context, Pool, StoreError};

/// What applying a batch did.
#[derive(Debug, Default)]
pub struct BatchApplied {
    /// False when the part had been loaded before (a redelivery) or the job has ended.
    pub applied: bool,
    /// Rows copied.
    pub rows: u64,
    /// New rejected records.
    pub rejected: u64,
    /// The job's state after the batch, when this batch finished it.
    pub job_finished: Option<JobState>,
    /// New once-per-resource tasks recorded but not yet published: publish the job's
    /// outbox ([`super::publish_outbox`]) after the commit.
    pub deferred: u64,
}

/// Records the children of a group's claimed parts as pending tasks and counts the new
/// ones into their jobs' totals, in a few statements for the whole group: plain children
/// are recorded as published (the fetcher that found them publishes them); once-per-resource
/// children (`once` set) unpublished, fresh ones replaced by what they had, and the last
/// part of a keyed task remembers its fetch (see [`super::resources`]). Returns, per part of
/// `batches`, how many once-per-resource tasks it recorded for its job (set on the job's
/// last claimed part, to be published after the commit). `keyed`: the group's keyed
/// children as [`super::resources::plan_keyed_children`] found them before the job lock.
async fn record_children<R: Sync>(
    tx: &Transaction<'_>,
    batches: &[RecordBatchOf<R>],
    claimed: &[usize],
    keyed: &super::resources::KeyedChildren,
) -> Result<Vec<u64>, StoreError> {
    let parts: Vec<&RecordBatchOf<R>> = claimed.iter().map(|&i| &batches[i]).collect();
    super::resources::remember_fetches(tx, &parts).await?;
    let mut added: Vec<(Uuid, u64)> = super::resources::record_keyed_children(tx, keyed).await?;
    let mut deferred = vec![0u64; batches.len()];
    for (job, n) in &added {
        if let Some(&last) = claimed.iter().rev().find(|&&i| batches[i].job_id == *job) {
            deferred[last] += n;
        }
    }
    let plain: Vec<(&RecordBatchOf<R>, &sluice_contracts::FetchTask)> = parts
        .iter()
        .flat_map(|b| b.children.iter().map(move |c| (*b, c)))
        .filter(|(_, c)| c.once.is_none())
        .collect();
    if !plain.is_empty() {
        let ids: Vec<&str> = plain.iter().map(|(_, c)| c.task_id.as_str()).collect();
        let jobs: Vec<Uuid> = plain.iter().map(|(b, _)| b.job_id).collect();
        let parents: Vec<&str> = plain.iter().map(|(b, _)| b.task_id.as_str()).collect();
        let streams: Vec<&str> = plain.iter().map(|(_, c)| c.stream.as_str()).collect();
        let kinds: Vec<Value> = plain
            .iter()
            .map(|(_, c)| serde_json::to_value(&c.kind).unwrap_or(Value::Null))
            .collect();
        let rows = crate::cached::query(
            tx,
            "INSERT INTO sluice.tasks (task_id, job_id, parent_id, stream, kind, published_at)
             SELECT t, j, p, s, k, now()
               FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[]) AS u(t, j, p, s, k)
              ORDER BY t
             ON CONFLICT (task_id) DO NOTHING RETURNING job_id",
            &[&ids, &jobs, &parents, &streams, &kinds],
        )
        .await
        .context(|| format!("recording the children of {} parts", parts.len()))?;
        for r in rows {
            let job: Uuid = r.get(0);
            match added.iter_mut().find(|(j, _)| *j == job) {
                Some((_, n)) => *n += 1,
                None => added.push((job, 1)),
            }
        }
    }
    if !added.is_empty() {
        added.sort_unstable();
        let jobs: Vec<Uuid> = added.iter().map(|(j, _)| *j).collect();
        let counts: Vec<i64> = added.iter().map(|(_, n)| *n as i64).collect();
        crate::cached::execute(
            tx,
            "UPDATE sluice.jobs j SET tasks_total = tasks_total + u.n
               FROM unnest($1::uuid[], $2::int8[]) AS u(id, n) WHERE j.id = u.id",
            &[&jobs, &counts],
        )
        .await
        .context(|| "counting tasks".into())?;
    }
    Ok(deferred)
}

/// Where [`apply_batches`] writes the rows of the parts it claimed.
#[derive(Clone, Copy)]
pub enum Write<'w> {
    /// Into tables of the ledger's own database, inside the ledger's transaction: rows,
    /// part and task progress commit together (the fast path of destination `postgres`).
    Ledger(&'w Catalog),
    /// Into a destination with its own transactions (Redshift, another Postgres, Klaviyo):
    /// see "Exactly once without a shared transaction" in [`apply_batches`].
    External(&'w dyn PartWriter),
}

/// A destination outside the ledger's database, as [`apply_batches`] sees it.
#[async_trait::async_trait]
pub trait PartWriter: Send + Sync {
    /// Writes `units` into the destination and commits them there before returning. Each
    /// unit is parts of one job, table, columns and merge options (a unit with a replace
    /// scope holds one part), in delivery order: within a part the last row of a key wins,
    /// across parts the highest version (ties: the later part), as [`load_parts`] does.
    ///
    /// The write must be idempotent: writing the same unit again — a redelivery after a
    /// crash before the ledger settled it — must leave the destination as one write did
    /// (upsert by primary key guarded by the version column, or a key the destination
    /// deduplicates by). Returns, per unit and part, the rows written and the rows refused.
    ///
    /// # Errors
    /// Transient errors ([`StoreError::is_transient`]) are retried by the loader; others
    /// park the part.
    async fn write(&self, units: &[Vec<&RecordBatch>])
    -> Result<Vec<Vec<LoadOutcome>>, StoreError>;

    /// [`PartWriter::write`] of parts whose rows are JSON text (what the loader decodes).
    /// By default the rows are converted to `Value`s and written by `write`; a writer that
    /// reads cells one by one overrides it to skip that.
    ///
    /// # Errors
    /// As [`PartWriter::write`].
    async fn write_raw(
        &self,
        units: &[Vec<&RawRecordBatch>],
    ) -> Result<Vec<Vec<LoadOutcome>>, StoreError> {
        let owned: Vec<Vec<RecordBatch>> = units
            .iter()
            .map(|unit| unit.iter().map(|b| b.to_values()).collect())
            .collect();
        let refs: Vec<Vec<&RecordBatch>> = owned.iter().map(|u| u.iter().collect()).collect();
        self.write(&refs).await
    }
}

/// The row types a part can have ([`RecordBatch`], [`RawRecordBatch`]), as
/// [`apply_batches`] hands them to a [`PartWriter`].
pub trait BatchRows: PartRows + Sized + Send + Sync + 'static {
    /// `writer`'s write of `units`: [`PartWriter::write`] or [`PartWriter::write_raw`].
    fn write_to<'a>(
        writer: &'a dyn PartWriter,
        units: &'a [Vec<&'a RecordBatchOf<Self>>],
    ) -> futures::future::BoxFuture<'a, Result<Vec<Vec<LoadOutcome>>, StoreError>>;
}

impl BatchRows for Vec<Vec<Value>> {
    fn write_to<'a>(
        writer: &'a dyn PartWriter,
        units: &'a [Vec<&'a RecordBatch>],
    ) -> futures::future::BoxFuture<'a, Result<Vec<Vec<LoadOutcome>>, StoreError>> {
        writer.write(units)
    }
}

impl BatchRows for RawRows {
    fn write_to<'a>(
        writer: &'a dyn PartWriter,
        units: &'a [Vec<&'a RawRecordBatch>],
    ) -> futures::future::BoxFuture<'a, Result<Vec<Vec<LoadOutcome>>, StoreError>> {
        writer.write_raw(units)
    }
}

/// Loads one `RecordBatch` part into tables of the ledger's database: [`apply_batches`]
/// with a group of one.
///
/// # Errors
/// As [`apply_batches`].
pub async fn apply_batch<R: BatchRows>(
    pool: &Pool,
    catalog: &Catalog,
    batch: &RecordBatchOf<R>,
) -> Result<BatchApplied, StoreError> {
    let mut results =
        apply_batches(pool, Write::Ledger(catalog), std::slice::from_ref(batch)).await?;
    Ok(results.pop().unwrap_or_default())
}

/// Applies several `RecordBatch` parts in one ledger transaction, with the effect of
/// applying each of them alone in order, and one result per part in the order given:
/// claim the parts, write their rows, then settle them — rejects, children, part and task
/// progress, the tasks' completion and, when a part finished its job's last pending task,
/// the job's (bookmark, freshness, lock).
///
/// What is shared: one claim statement for every part, one write per destination unit
/// (parts of the same job, table, columns and merge options without a replace scope;
/// others are units of one), one statement each for the parts' row counts, the tasks'
/// progress and the jobs' row counts, and one commit. A part seen before — or twice in
/// `batches` — and the parts of an ended or unknown job are skipped (`applied` false).
///
/// # Exactly once
/// With [`Write::Ledger`] the rows commit with the claim and the settle, so a crash
/// anywhere leaves either all of the part or none of it. With [`Write::External`] there is
/// no shared transaction, and the protocol is:
/// 1. claim the parts in the ledger transaction (`sluice.batches`, uncommitted: a
///    concurrent duplicate delivery blocks on the claim row until this one ends, then
///    finds it taken — or free again, if this one rolled back);
/// 2. write and commit the rows in the destination ([`PartWriter::write`], idempotent);
/// 3. settle in the ledger transaction and commit it; only then is the delivery acked.
///
/// Crash points: before 2 commits, the destination has nothing and the claim rolls back;
/// between 2 and 3, the destination has the rows but the ledger has no claim, so the
/// redelivered part is written again — harmlessly, by the writer's idempotence — and
/// counted once, at its only settle; after 3, the part is claimed and a redelivery is
/// skipped. A cancel that commits between 1 and 3 makes the settle drop the part, but its
/// rows may already be in the destination: with an outside destination, "nothing of a
/// cancelled job is loaded after the cancel" holds for the ledger, not for parts that
/// were in flight when the cancel committed.
///
/// Nothing is committed in the ledger when anything fails; the caller then applies the
/// parts one at a time, so that a part that cannot be loaded fails alone.
///
/// # Errors
/// [`StoreError::Schema`] when a part does not fit its table (permanent); database errors
/// (see [`StoreError::is_transient`]); [`StoreError::Regroup`] when a job of a group of
/// several parts ended while its rows were written (apply the parts one at a time).
pub async fn apply_batches<R: BatchRows>(
    pool: &Pool,
    write: Write<'_>,
    batches: &[RecordBatchOf<R>],
) -> Result<Vec<BatchApplied>, StoreError> {
    let mut results: Vec<BatchApplied> = batches.iter().map(|_| BatchApplied::default()).collect();
    if batches.is_empty() {
        return Ok(results);
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;

    let claimed = claim(&tx, batches).await?;
    if claimed.is_empty() {
        return Ok(results);
    }

    // Rows, one write per destination unit where the parts allow it.
    let mut rows: Vec<u64> = vec![0; batches.len()];
    let mut changes: Vec<Option<Changes>> = vec![None; batches.len()];
    let mut rejects: Vec<Vec<RejectedRecord>> = vec![Vec::new(); batches.len()];
    for &i in &claimed {
        rejects[i].clone_from(&batches[i].rejected);
    }
    let units = units(batches, &claimed, matches!(write, Write::Ledger(_)));
    let parts: Vec<Vec<&RecordBatchOf<R>>> = units
        .iter()
        .map(|unit| unit.iter().map(|&i| &batches[i]).collect())
        .collect();
    let written: Vec<Vec<LoadOutcome>> = match write {
        Write::Ledger(catalog) => load_units(&tx, catalog, &parts).await?,
        Write::External(writer) => {
            if parts.is_empty() {
                Vec::new()
            } else {
                let written = R::write_to(writer, &parts).await?;
                crash_point_after_destination_write();
                written
            }
        }
    };
    for (unit, outcomes) in units.iter().zip(written) {
        for (&i, outcome) in unit.iter().zip(outcomes) {
            rows[i] = outcome.rows;
            changes[i] = outcome.changes;
            rejects[i].extend(outcome.rejected);
        }
    }

    // Which keyed children are fresh is read before the jobs are locked (reads only), so
    // the lookups do not lengthen the time the job rows are held.
    let keyed = {
        let parts: Vec<&RecordBatchOf<R>> = claimed.iter().map(|&i| &batches[i]).collect();
        super::resources::plan_keyed_children(&tx, &parts).await?
    };

    // The jobs' rows, in id order (two loaders lock shared jobs in the same order).
    let mut jobs: Vec<Uuid> = claimed.iter().map(|&i| batches[i].job_id).collect();
    jobs.sort_unstable();
    jobs.dedup();
    let states =
        futures::future::try_join_all(jobs.iter().map(|&job_id| lock_job(&tx, job_id))).await?;
    if let Some((job_id, state)) = jobs
        .iter()
        .zip(&states)
        .find(|(_, s)| s.is_none_or(JobState::is_terminal))
    {
        if claimed.len() == 1 {
            // The job ended while its part was loading: drop the part (nothing of it is
            // committed in the ledger).
            tracing::info!(%job_id, task_id = %batches[claimed[0]].task_id, ?state,
                "dropping a part of an ended or unknown job");
            return Ok(results);
        }
        return Err(StoreError::Regroup(format!(
            "job {job_id} ended ({}) while a group of its parts was loading",
            state.map_or("gone", JobState::as_str)
        )));
    }

    for &i in &claimed {
        let b = &batches[i];
        results[i].rejected = insert_rejects(&*tx, b.job_id, Some(&b.task_id), &rejects[i]).await?;
    }
    let deferred = record_children(&tx, batches, &claimed, &keyed).await?;
    for (result, n) in results.iter_mut().zip(deferred) {
        result.deferred = n;
    }

    // Progress per task (a task may have several parts in the group) and per job.
    let mut tasks: Vec<TaskProgress<'_>> = Vec::new();
    for &i in &claimed {
        let b = &batches[i];
        let final_part = b.task_complete.then_some(b.part as i32);
        match tasks.iter_mut().find(|t| t.task_id == b.task_id) {
            Some(t) => {
                t.rows += rows[i] as i64;
                t.cursor_max = t.cursor_max.max(b.cursor_max.as_deref());
                t.final_part = t.final_part.or(final_part);
            }
            None => tasks.push(TaskProgress {
                task_id: &b.task_id,
                job_id: b.job_id,
                stream: &b.stream,
                rows: rows[i] as i64,
                cursor_max: b.cursor_max.as_deref(),
                final_part,
            }),
        }
    }
    tasks.sort_by(|a, b| a.task_id.cmp(b.task_id));
    let job_rows: Vec<i64> = jobs
        .iter()
        .map(|j| {
            tasks
                .iter()
                .filter(|t| t.job_id == *j)
                .map(|t| t.rows)
                .sum()
        })
        .collect();
    let part_rows: Vec<i32> = claimed.iter().map(|&i| rows[i] as i32).collect();
    let change = |f: fn(&Changes) -> u64| -> Vec<Option<i32>> {
        claimed
            .iter()
            .map(|&i| changes[i].as_ref().map(|c| f(c) as i32))
            .collect()
    };
    let (part_inserted, part_updated, part_deleted) = (
        change(|c| c.inserted),
        change(|c| c.updated),
        change(|c| c.deleted),
    );
    let part_tasks: Vec<&str> = claimed
        .iter()
        .map(|&i| batches[i].task_id.as_str())
        .collect();
    let part_nos: Vec<i32> = claimed.iter().map(|&i| batches[i].part as i32).collect();
    let t_ids: Vec<&str> = tasks.iter().map(|t| t.task_id).collect();
    let t_jobs: Vec<Uuid> = tasks.iter().map(|t| t.job_id).collect();
    let t_streams: Vec<&str> = tasks.iter().map(|t| t.stream).collect();
    let t_rows: Vec<i64> = tasks.iter().map(|t| t.rows).collect();
    let t_cursors: Vec<Option<&str>> = tasks.iter().map(|t| t.cursor_max).collect();
    let t_finals: Vec<Option<i32>> = tasks.iter().map(|t| t.final_part).collect();
    // Independent statements, pipelined on the connection.
    let (_, progress, _) = futures::future::try_join3(
        async {
            crate::cached::execute(
                &tx,
                "UPDATE sluice.batches b SET rows = u.r, inserted = u.i, updated = u.u, deleted = u.d
                   FROM unnest($1::text[], $2::int4[], $3::int4[], $4::int4[], $5::int4[], $6::int4[])
                        AS u(t, p, r, i, u, d)
                  WHERE b.task_id = u.t AND b.part = u.p",
                &[
                    &part_tasks,
                    &part_nos,
                    &part_rows,
                    &part_inserted,
                    &part_updated,
                    &part_deleted,
                ],
            )
            .await
            .context(|| "recording the parts".into())
        },
        async {
            crate::cached::query(&tx,
                "INSERT INTO sluice.tasks (task_id, job_id, stream, kind, rows_loaded, cursor_max, final_part, published_at)
                 SELECT t, j, s, '{}'::jsonb, r, c, f, now()
                   FROM unnest($1::text[], $2::uuid[], $3::text[], $4::int8[], $5::text[], $6::int4[]) AS u(t, j, s, r, c, f)
                  ORDER BY t
                 ON CONFLICT (task_id) DO UPDATE
                    SET rows_loaded = sluice.tasks.rows_loaded + EXCLUDED.rows_loaded,
                        cursor_max = GREATEST(sluice.tasks.cursor_max, EXCLUDED.cursor_max),
                        final_part = coalesce(sluice.tasks.final_part, EXCLUDED.final_part)
                 RETURNING task_id, state, final_part",
                &[&t_ids, &t_jobs, &t_streams, &t_rows, &t_cursors, &t_finals],
            )
            .await
            .context(|| format!("updating {} tasks", t_ids.len()))
        },
        async {
            crate::cached::execute(
                &tx,
                "UPDATE sluice.jobs j SET rows_loaded = rows_loaded + u.r, updated_at = now()
                   FROM unnest($1::uuid[], $2::int8[]) AS u(id, r) WHERE j.id = u.id",
                &[&jobs, &job_rows],
            )
            .await
            .context(|| "counting rows".into())
        },
    )
    .await?;

    // A task whose every part is loaded is done, even if another copy of it was marked
    // failed meanwhile (the data is all there).
    let (done_ids, done_lasts): (Vec<String>, Vec<i32>) = progress
        .iter()
        .filter_map(|r| {
            let state: TaskState = r.get(1);
            let last: Option<i32> = r.get(2);
            match (state, last) {
                (TaskState::Pending | TaskState::Failed, Some(last)) => {
                    Some((r.get::<_, String>(0), last))
                }
                _ => None,
            }
        })
        .unzip();
    let mut ended = Vec::new();
    if !done_ids.is_empty() {
        let done = crate::cached::query(
            &tx,
            "UPDATE sluice.tasks t SET state = 'done', error = NULL, finished_at = now()
               FROM unnest($1::text[], $2::int4[]) AS u(task_id, last)
              WHERE t.task_id = u.task_id
                AND (SELECT count(*) FROM sluice.batches b WHERE b.task_id = u.task_id) = u.last + 1
             RETURNING t.job_id",
            &[&done_ids, &done_lasts],
        )
        .await
        .context(|| "finishing tasks".into())?;
        let mut finished_jobs: Vec<Uuid> = done.iter().map(|r| r.get(0)).collect();
        finished_jobs.sort_unstable();
        finished_jobs.dedup();
        for job_id in finished_jobs {
            if let Some(end) = finish_if_done(&tx, job_id).await? {
                if let Some(&last) = claimed.iter().rev().find(|&&i| batches[i].job_id == job_id) {
                    results[last].job_finished = Some(end.state);
                }
                ended.push(end);
            }
        }
    }
    tx.commit().await.context(|| "commit".into())?;
    for end in &ended {
        end.record();
    }
    for &i in &claimed {
        results[i].applied = true;
        results[i].rows = rows[i];
    }
    Ok(results)
}

/// One task's share of a group of parts.
struct TaskProgress<'a> {
    task_id: &'a str,
    job_id: Uuid,
    stream: &'a str,
    rows: i64,
    cursor_max: Option<&'a str>,
    final_part: Option<i32>,
}

/// Upserts `units` (see [`PartWriter::write`]) into tables of `tx`'s database with one
/// [`load_parts`] per unit; the rows of each part and its refused rows, per unit.
///
/// # Errors
/// As [`load_parts`].
pub async fn load_units<R: BatchRows>(
    tx: &Transaction<'_>,
    catalog: &Catalog,
    units: &[Vec<&RecordBatchOf<R>>],
) -> Result<Vec<Vec<LoadOutcome>>, StoreError> {
    let mut written = Vec::with_capacity(units.len());
    for unit in units {
        let first = unit[0];
        let rows: Vec<&R> = unit.iter().map(|b| &b.rows).collect();
        // Parts that name their parents (grouped only when the parents are disjoint):
        // replace the union of them.
        let merge = if unit.len() > 1 && !first.merge.scope_keys.is_empty() {
            MergeSpec {
                scope_keys: unit
                    .iter()
                    .flat_map(|b| b.merge.scope_keys.iter().cloned())
                    .collect(),
                ..first.merge.clone()
            }
        } else {
            first.merge.clone()
        };
        let loaded = load_parts(
            tx,
            catalog,
            first.job_id,
            &first.table,
            &first.columns,
            &rows,
            &merge,
        )
        .await?;
        // One upsert wrote the whole unit: its changes go on the last part, zeros on the
        // others, so that summing parts gives the table's changes and a null means a
        // destination that does not count.
        let mut parts = loaded.parts;
        for part in &mut parts {
            part.changes = Some(Changes::default());
        }
        if let Some(last) = parts.last_mut() {
            last.changes = Some(Changes {
                inserted: loaded.inserted,
                updated: loaded.written - loaded.inserted,
                deleted: loaded.deleted,
            });
        }
        written.push(parts);
    }
    Ok(written)
}

/// Claims the parts of `batches` not seen before whose job is still active, in (task,
/// part) order so that two loaders claiming overlapping groups take the part keys in the
/// same order; a second copy of a part in the group is a redelivery. Returns the indexes
/// of the claimed parts in delivery order (the later of two parts carrying a key wins).
async fn claim<R: Sync>(
    tx: &Transaction<'_>,
    batches: &[RecordBatchOf<R>],
) -> Result<Vec<usize>, StoreError> {
    let mut order: Vec<usize> = (0..batches.len()).collect();
    order.sort_by(|&a, &b| {
        (&batches[a].task_id, batches[a].part, a).cmp(&(&batches[b].task_id, batches[b].part, b))
    });
    order.dedup_by(|later, first| {
        batches[*later].task_id == batches[*first].task_id
            && batches[*later].part == batches[*first].part
    });
    let task_ids: Vec<&str> = order.iter().map(|&i| batches[i].task_id.as_str()).collect();
    let part_nos: Vec<i32> = order.iter().map(|&i| batches[i].part as i32).collect();
    let job_ids: Vec<Uuid> = order.iter().map(|&i| batches[i].job_id).collect();
    let tables: Vec<&str> = order.iter().map(|&i| batches[i].table.as_str()).collect();
    // Parts of a job that has ended (or never existed) are not claimed; a cancel racing
    // this is caught under the job lock.
    let claimed_rows = crate::cached::query(
        tx,
        "INSERT INTO sluice.batches (task_id, part, job_id, table_name, rows)
         SELECT u.t, u.p, u.j, u.n, 0
           FROM unnest($1::text[], $2::int4[], $3::uuid[], $4::text[]) WITH ORDINALITY AS u(t, p, j, n, o)
           JOIN sluice.jobs j ON j.id = u.j AND j.state NOT IN ('succeeded', 'failed', 'cancelled')
          ORDER BY u.o
         ON CONFLICT DO NOTHING RETURNING task_id, part",
        &[&task_ids, &part_nos, &job_ids, &tables],
    )
    .await
    .context(|| format!("claiming {} parts", order.len()))?;
    let claimed_keys: std::collections::HashSet<(String, i32)> = claimed_rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1)))
        .collect();
    let mut claimed: Vec<usize> = order
        .into_iter()
        .filter(|&i| claimed_keys.contains(&(batches[i].task_id.clone(), batches[i].part as i32)))
        .collect();
    claimed.sort_unstable();
    Ok(claimed)
}

/// The claimed parts that carry rows, grouped into destination units: parts of the same
/// job, table, columns and merge options without a replace scope share a unit; so do, when
/// `merge_scopes` (the ledger's own database), parts that replace the collections of
/// parents they name explicitly (`scope_keys`, no scope version or parent table) as long as
/// no two of them name the same parent — many small children collections (a product's
/// offers) then load in one write. The rest are units of one. Delivery order is kept within
/// and across units.
fn units<R>(
    batches: &[RecordBatchOf<R>],
    claimed: &[usize],
    merge_scopes: bool,
) -> Vec<Vec<usize>> {
    let mut units: Vec<Vec<usize>> = Vec::new();
    // Per unit: the parents named so far (for units of explicitly scoped parts).
    let mut parents: Vec<std::collections::HashSet<String>> = Vec::new();
    for &i in claimed {
        let b = &batches[i];
        if b.table.is_empty() {
            continue;
        }
        let unscoped = b.merge.replace_scope.is_none() && b.merge.scope_keys.is_empty();
        let explicit = merge_scopes
            && b.merge.replace_scope.is_some()
            && !b.merge.scope_keys.is_empty()
            && b.merge.scope_version.is_none()
            && b.merge.scope_parent.is_none();
        let keys: Vec<String> = if explicit {
            b.merge
                .scope_keys
                .iter()
                .map(|k| Value::Array(k.clone()).to_string())
                .collect()
        } else {
            Vec::new()
        };
        let found = units.iter().zip(&parents).position(|(u, named)| {
            let first = &batches[u[0]];
            let same =
                first.job_id == b.job_id && first.table == b.table && first.columns == b.columns;
            if unscoped {
                same && first.merge == b.merge
            } else if explicit {
                same && first.merge.replace_scope == b.merge.replace_scope
                    && first.merge.version_column == b.merge.version_column
                    && first.merge.scope_version.is_none()
                    && first.merge.scope_parent.is_none()
                    && !first.merge.scope_keys.is_empty()
                    && keys.iter().all(|k| !named.contains(k))
            } else {
                false
            }
        });
        match found {
            Some(u) => {
                units[u].push(i);
                parents[u].extend(keys);
            }
            None => {
                units.push(vec![i]);
                parents.push(keys.into_iter().collect());
            }
        }
    }
    units
}

/// Test hook for the crash suite: with `SLUICE_CRASH_AFTER_DESTINATION_WRITE=N` in the
/// environment, the process aborts right after its N-th committed write into an outside
/// destination and before the ledger settles it — the one crash point the protocol of
/// [`apply_batches`] exists for. Unset (always, outside tests): nothing happens.
fn crash_point_after_destination_write() {
    static COUNTDOWN: std::sync::OnceLock<Option<std::sync::atomic::AtomicU64>> =
        std::sync::OnceLock::new();
    let countdown = COUNTDOWN.get_or_init(|| {
        std::env::var("SLUICE_CRASH_AFTER_DESTINATION_WRITE")
            .ok()
            .and_then(|n| n.parse().ok())
            .map(std::sync::atomic::AtomicU64::new)
    });
    if let Some(left) = countdown
        && left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1
    {
        tracing::error!(
            "SLUICE_CRASH_AFTER_DESTINATION_WRITE: aborting between the destination write and the ledger settle"
        );
        std::process::abort();
    }
}
