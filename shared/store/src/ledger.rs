//! The `sluice` ledger: jobs, tasks, batches, locks, bookmarks, freshness, rejected rows.
//!
//! Every function that changes a job's state takes the job row lock first
//! (`SELECT … FOR NO KEY UPDATE`) and the task rows after it, always in that order, so
//! loaders, the planner and `sluicectl jobs cancel` serialise on the job without deadlocks.
//! That lock is what makes "a job is finished when none of its tasks is pending" exact, and
//! what guarantees that nothing of a cancelled job is loaded after the cancel commits.

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Transaction;
use serde::Serialize;
use serde_json::{Value, json};
use sluice_contracts::{JobRequest, Outcome, RecordBatch, RejectedRecord};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::load::{Catalog, load_parts, load_rows};
use crate::{Context, Pool, StoreError};

/// Job states (`sluice.jobs.state`).
pub mod state {
    /// Requested, not yet planned.
    pub const QUEUED: &str = "queued";
    /// Planned; tasks are being fetched and loaded.
    pub const RUNNING: &str = "running";
    /// Every task done.
    pub const SUCCEEDED: &str = "succeeded";
    /// Planning failed, or a task failed (the error names it).
    pub const FAILED: &str = "failed";
    /// Cancelled by an operator.
    pub const CANCELLED: &str = "cancelled";

    /// True for states a job never leaves (short of `sluicectl dlq replay`).
    pub fn is_terminal(state: &str) -> bool {
        matches!(state, SUCCEEDED | FAILED | CANCELLED)
    }
}

/// Records a requested job as `queued` (idempotent: an existing job is left alone).
///
/// Returns the job's current state.
///
/// # Errors
/// Database errors.
pub async fn insert_job(
    client: &impl GenericClient,
    req: &JobRequest,
) -> Result<String, StoreError> {
    client
        .execute(
            "INSERT INTO sluice.jobs (id, connector, stream, account, params, mode, requested_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            &[
                &req.job_id,
                &req.connector,
                &req.stream,
                &req.account,
                &req.params,
                &req.mode.as_str(),
                &req.requested_at,
            ],
        )
        .await
        .context(|| format!("recording job {}", req.job_id))?;
    let row = client
        .query_one(
            "SELECT state FROM sluice.jobs WHERE id = $1",
            &[&req.job_id],
        )
        .await
        .context(|| format!("reading job {}", req.job_id))?;
    Ok(row.get(0))
}

/// Locks the job row and returns its state, or `None` when the job does not exist.
///
/// # Errors
/// Database errors.
pub async fn lock_job(tx: &Transaction<'_>, job_id: Uuid) -> Result<Option<String>, StoreError> {
    Ok(crate::cached::query_opt(
        tx,
        "SELECT state FROM sluice.jobs WHERE id = $1 FOR NO KEY UPDATE",
        &[&job_id],
    )
    .await
    .context(|| format!("locking job {job_id}"))?
    .map(|r| r.get(0)))
}

/// Takes the stream lock for `job_id`. A lock held by a job that has ended is taken over.
///
/// Returns `None` when acquired, or the id of the active job holding it.
///
/// # Errors
/// Database errors.
pub async fn acquire_stream_lock(
    tx: &Transaction<'_>,
    connector: &str,
    account: &str,
    stream: &str,
    job_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    let ctx = || format!("taking the lock of {connector}/{account}/{stream}");
    let inserted = crate::cached::execute(
        tx,
        "INSERT INTO sluice.locks (connector, account, stream, job_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        &[&connector, &account, &stream, &job_id],
    )
    .await
    .context(ctx)?;
    if inserted == 1 {
        return Ok(None);
    }
    let row = crate::cached::query_one(
        tx,
        "SELECT l.job_id, j.state FROM sluice.locks l LEFT JOIN sluice.jobs j ON j.id = l.job_id
              WHERE l.connector = $1 AND l.account = $2 AND l.stream = $3 FOR UPDATE OF l",
        &[&connector, &account, &stream],
    )
    .await
    .context(ctx)?;
    let holder: Uuid = row.get(0);
    let holder_state: Option<String> = row.get(1);
    if holder == job_id {
        return Ok(None);
    }
    match holder_state.as_deref() {
        Some(s) if !state::is_terminal(s) => Ok(Some(holder)),
        _ => {
            crate::cached::execute(
                tx,
                "UPDATE sluice.locks SET job_id = $4, acquired_at = now()
                  WHERE connector = $1 AND account = $2 AND stream = $3",
                &[&connector, &account, &stream, &job_id],
            )
            .await
            .context(ctx)?;
            Ok(None)
        }
    }
}

/// A task as the planner records it.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Deterministic id.
    pub task_id: String,
    /// Stream of the task's records.
    pub stream: String,
    /// The `FetchTask.kind`, as JSON.
    pub kind: Value,
}

/// Records a job's plan: its tasks (unpublished), warnings and resolved params; the job
/// becomes `running`.
///
/// # Errors
/// Database errors.
pub async fn record_plan(
    tx: &Transaction<'_>,
    job_id: Uuid,
    params: &Value,
    tasks: &[NewTask],
    warnings: &[String],
) -> Result<(), StoreError> {
    let ids: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
    let streams: Vec<&str> = tasks.iter().map(|t| t.stream.as_str()).collect();
    let kinds: Vec<&Value> = tasks.iter().map(|t| &t.kind).collect();
    crate::cached::execute(
        tx,
        "INSERT INTO sluice.tasks (task_id, job_id, stream, kind)
         SELECT t, $2, s, k FROM unnest($1::text[], $3::text[], $4::jsonb[]) AS u(t, s, k)
         ON CONFLICT (task_id) DO NOTHING",
        &[&ids, &job_id, &streams, &kinds],
    )
    .await
    .context(|| format!("recording the tasks of job {job_id}"))?;
    crate::cached::execute(
        tx,
        "UPDATE sluice.jobs SET state = 'running', params = $2, warnings = $3,
                tasks_total = (SELECT count(*) FROM sluice.tasks WHERE job_id = $1),
                started_at = coalesce(started_at, now()), updated_at = now()
          WHERE id = $1",
        &[&job_id, params, &json!(warnings)],
    )
    .await
    .context(|| format!("starting job {job_id}"))?;
    Ok(())
}

/// Marks a job failed with `error` and releases its stream lock (no-op on ended jobs).
///
/// # Errors
/// Database errors.
pub async fn fail_job(pool: &Pool, job_id: Uuid, error: &str) -> Result<(), StoreError> {
    fail_job_in_states(pool, job_id, error, &[state::QUEUED, state::RUNNING]).await
}

/// Marks a job failed only while it is still `queued` (a parked job request must not end a
/// job whose tasks are already running).
///
/// # Errors
/// Database errors.
pub async fn fail_queued_job(pool: &Pool, job_id: Uuid, error: &str) -> Result<(), StoreError> {
    fail_job_in_states(pool, job_id, error, &[state::QUEUED]).await
}

async fn fail_job_in_states(
    pool: &Pool,
    job_id: Uuid,
    error: &str,
    states: &[&str],
) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;
    if let Some(s) = lock_job(&tx, job_id).await?
        && states.contains(&s.as_str())
    {
        crate::cached::execute(&tx,
            "UPDATE sluice.jobs SET state = 'failed', error = $2, finished_at = now(), updated_at = now()
              WHERE id = $1",
            &[&job_id, &error],
        )
        .await
        .context(|| format!("failing job {job_id}"))?;
        crate::cached::execute(
            &tx,
            "UPDATE sluice.tasks SET state = 'cancelled', finished_at = now()
              WHERE job_id = $1 AND state = 'pending'",
            &[&job_id],
        )
        .await
        .context(|| format!("closing the tasks of job {job_id}"))?;
        release_lock(&tx, job_id).await?;
    }
    tx.commit().await.context(|| "commit".into())?;
    Ok(())
}

async fn release_lock(tx: &Transaction<'_>, job_id: Uuid) -> Result<(), StoreError> {
    crate::cached::execute(tx, "DELETE FROM sluice.locks WHERE job_id = $1", &[&job_id])
        .await
        .context(|| format!("releasing the lock of job {job_id}"))?;
    Ok(())
}

/// A recorded task not yet published (the planner's outbox).
#[derive(Debug, Clone)]
pub struct UnpublishedTask {
    /// Task id.
    pub task_id: String,
    /// Job id.
    pub job_id: Uuid,
    /// Connector of the job.
    pub connector: String,
    /// Account of the job.
    pub account: String,
    /// Stream of the task.
    pub stream: String,
    /// `FetchTask.kind` JSON.
    pub kind: Value,
    /// The job's resolved params.
    pub params: Value,
}

/// Up to `limit` pending, unpublished tasks of running jobs (optionally of one job), locked
/// with `SKIP LOCKED` so that several planners never publish the same task at once: publish
/// them, [`mark_published`] in the same transaction, then commit.
///
/// # Errors
/// Database errors.
pub async fn unpublished_tasks(
    client: &Transaction<'_>,
    job_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<UnpublishedTask>, StoreError> {
    let rows = client
        .query(
            "SELECT t.task_id, t.job_id, j.connector, j.account, t.stream, t.kind, j.params
               FROM sluice.tasks t JOIN sluice.jobs j ON j.id = t.job_id
              WHERE t.published_at IS NULL AND t.state = 'pending' AND j.state = 'running'
                AND ($1::uuid IS NULL OR t.job_id = $1)
              ORDER BY t.created_at, t.task_id LIMIT $2
                FOR UPDATE OF t SKIP LOCKED",
            &[&job_id, &limit],
        )
        .await
        .context(|| "reading unpublished tasks".into())?;
    Ok(rows
        .into_iter()
        .map(|r| UnpublishedTask {
            task_id: r.get(0),
            job_id: r.get(1),
            connector: r.get(2),
            account: r.get(3),
            stream: r.get(4),
            kind: r.get(5),
            params: r.get(6),
        })
        .collect())
}

/// Marks tasks as published.
///
/// # Errors
/// Database errors.
pub async fn mark_published(
    client: &impl GenericClient,
    task_ids: &[String],
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE sluice.tasks SET published_at = now() WHERE task_id = ANY($1)",
            &[&task_ids],
        )
        .await
        .context(|| "marking tasks published".into())?;
    Ok(())
}

/// Stores rejected records. Callers guarantee a record is offered once (a redelivered part
/// is skipped before this point). Returns how many were stored.
///
/// # Errors
/// Database errors.
pub async fn insert_rejects(
    client: &impl GenericClient,
    job_id: Uuid,
    task_id: Option<&str>,
    rejects: &[RejectedRecord],
) -> Result<u64, StoreError> {
    if rejects.is_empty() {
        return Ok(0);
    }
    let tables: Vec<Option<&str>> = rejects.iter().map(|r| r.table.as_deref()).collect();
    let sources: Vec<&str> = rejects.iter().map(|r| r.source.as_str()).collect();
    let records: Vec<&Value> = rejects.iter().map(|r| &r.raw).collect();
    let errors: Vec<&str> = rejects.iter().map(|r| r.error.as_str()).collect();
    let n = client
        .execute(
            "INSERT INTO sluice.rejected_rows (job_id, task_id, table_name, source, record, error)
             SELECT $1, $2, t, s, r, e FROM unnest($3::text[], $4::text[], $5::jsonb[], $6::text[]) AS u(t, s, r, e)",
            &[&job_id, &task_id, &tables, &sources, &records, &errors],
        )
        .await
        .context(|| format!("storing rejected records of job {job_id}"))?;
    client
        .execute(
            "UPDATE sluice.jobs SET rows_rejected = rows_rejected + $2, updated_at = now() WHERE id = $1",
            &[&job_id, &(n as i64)],
        )
        .await
        .context(|| format!("counting rejected records of job {job_id}"))?;
    Ok(n)
}

/// The stored bookmark of a stream.
///
/// # Errors
/// Database errors.
pub async fn bookmark(
    client: &impl GenericClient,
    connector: &str,
    account: &str,
    stream: &str,
) -> Result<Option<Value>, StoreError> {
    Ok(client
        .query_opt(
            "SELECT bookmark FROM sluice.stream_state WHERE connector = $1 AND account = $2 AND stream = $3",
            &[&connector, &account, &stream],
        )
        .await
        .context(|| "reading the bookmark".into())?
        .map(|r| r.get(0)))
}

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
    pub job_finished: Option<String>,
}

/// Loads one `RecordBatch` part in one transaction: rows, rejects, the part, the children,
/// the task's completion and, when it was the last pending task, the job's.
///
/// # Errors
/// [`StoreError::Schema`] when the batch does not fit its table (permanent); database errors
/// (see [`StoreError::is_transient`]).
pub async fn apply_batch(
    pool: &Pool,
    catalog: &Catalog,
    batch: &RecordBatch,
) -> Result<BatchApplied, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;
    let job_id = batch.job_id;
    let mut result = BatchApplied::default();

    // Claim the part first: a concurrent duplicate waits here and then finds it taken.
    let claimed = crate::cached::execute(
        &tx,
        "INSERT INTO sluice.batches (task_id, part, job_id, table_name, rows)
             VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING",
        &[&batch.task_id, &(batch.part as i32), &job_id, &batch.table],
    )
    .await
    .context(|| format!("claiming part {} of task {}", batch.part, batch.task_id))?;
    if claimed == 0 {
        return Ok(result);
    }

    let mut rows = 0u64;
    let mut rejects = batch.rejected.clone();
    if !batch.table.is_empty() {
        let outcome = load_rows(
            &tx,
            catalog,
            job_id,
            &batch.table,
            &batch.columns,
            &batch.rows,
            &batch.merge,
        )
        .await?;
        rows = outcome.rows;
        rejects.extend(outcome.rejected);
    }

    // From here on the job row is locked: a cancel either committed before (we drop the
    // batch) or waits for us.
    match lock_job(&tx, job_id).await? {
        Some(s) if !state::is_terminal(&s) => {}
        other => {
            tracing::info!(%job_id, task_id = %batch.task_id, state = ?other, "dropping batch of an ended or unknown job");
            return Ok(result);
        }
    }
    crate::cached::execute(
        &tx,
        "UPDATE sluice.batches SET rows = $3 WHERE task_id = $1 AND part = $2",
        &[&batch.task_id, &(batch.part as i32), &(rows as i32)],
    )
    .await
    .context(|| "recording the part".into())?;
    result.rejected = insert_rejects(&*tx, job_id, Some(&batch.task_id), &rejects).await?;

    record_children(&tx, batch).await?;

    let final_part: Option<i32> = batch.task_complete.then_some(batch.part as i32);
    let row = crate::cached::query_one(&tx,
            "INSERT INTO sluice.tasks (task_id, job_id, stream, kind, rows_loaded, cursor_max, final_part, published_at)
             VALUES ($1, $2, $3, '{}'::jsonb, $4, $5, $6, now())
             ON CONFLICT (task_id) DO UPDATE
                SET rows_loaded = sluice.tasks.rows_loaded + EXCLUDED.rows_loaded,
                    cursor_max = GREATEST(sluice.tasks.cursor_max, EXCLUDED.cursor_max),
                    final_part = coalesce(sluice.tasks.final_part, EXCLUDED.final_part)
             RETURNING state, final_part",
            &[
                &batch.task_id,
                &job_id,
                &batch.stream,
                &(rows as i64),
                &batch.cursor_max,
                &final_part,
            ],
        )
        .await
        .context(|| format!("updating task {}", batch.task_id))?;
    let task_state: String = row.get(0);
    let final_part: Option<i32> = row.get(1);
    crate::cached::execute(
        &tx,
        "UPDATE sluice.jobs SET rows_loaded = rows_loaded + $2, updated_at = now() WHERE id = $1",
        &[&job_id, &(rows as i64)],
    )
    .await
    .context(|| "counting rows".into())?;

    // A task whose every part is loaded is done, even if another copy of it was marked
    // failed meanwhile (the data is all there).
    let mut task_done = false;
    if (task_state == "pending" || task_state == "failed")
        && let Some(last) = final_part
    {
        task_done = complete_if_all_parts(&tx, &batch.task_id, last).await?;
    }
    if task_done {
        result.job_finished = finish_if_done(&tx, job_id).await?;
    }
    tx.commit().await.context(|| "commit".into())?;
    result.applied = true;
    result.rows = rows;
    Ok(result)
}

/// Records a part's children as pending tasks (already published: the fetcher that found
/// them publishes them) and counts the new ones into the job's total.
async fn record_children(tx: &Transaction<'_>, batch: &RecordBatch) -> Result<(), StoreError> {
    if batch.children.is_empty() {
        return Ok(());
    }
    let job_id = batch.job_id;
    let ids: Vec<&str> = batch.children.iter().map(|c| c.task_id.as_str()).collect();
    let streams: Vec<&str> = batch.children.iter().map(|c| c.stream.as_str()).collect();
    let kinds: Vec<Value> = batch
        .children
        .iter()
        .map(|c| serde_json::to_value(&c.kind).unwrap_or(Value::Null))
        .collect();
    let added = crate::cached::execute(tx,
            "INSERT INTO sluice.tasks (task_id, job_id, parent_id, stream, kind, published_at)
             SELECT t, $2, $3, s, k, now() FROM unnest($1::text[], $4::text[], $5::jsonb[]) AS u(t, s, k)
             ON CONFLICT (task_id) DO NOTHING",
            &[&ids, &job_id, &batch.task_id, &streams, &kinds],
        )
        .await
        .context(|| format!("recording the children of task {}", batch.task_id))?;
    crate::cached::execute(
        tx,
        "UPDATE sluice.jobs SET tasks_total = tasks_total + $2 WHERE id = $1",
        &[&job_id, &(added as i64)],
    )
    .await
    .context(|| "counting tasks".into())?;
    Ok(())
}

/// Loads several `RecordBatch` parts in one transaction, with the effect of [`apply_batch`]
/// on each of them in order, and one result per part in the order given.
///
/// What is shared: one claim statement for every part, one staging COPY and one upsert per
/// destination (parts of the same job, table, columns and merge options without a replace
/// scope; others are loaded one by one inside the transaction), one statement each for the
/// parts' row counts, the tasks' progress and the jobs' row counts, and one commit. A part
/// seen before — or twice in `batches` — and the parts of an ended or unknown job are
/// skipped (`applied` false), as [`apply_batch`] would.
///
/// Nothing is committed when anything fails; the caller then applies the parts one at a
/// time with [`apply_batch`], so that a part that cannot be loaded fails alone.
///
/// # Errors
/// As [`apply_batch`]; [`StoreError::Regroup`] when a job of the group ended while its
/// rows were loading (its parts must be dropped alone: apply the parts one at a time).
pub async fn apply_batches(
    pool: &Pool,
    catalog: &Catalog,
    batches: &[RecordBatch],
) -> Result<Vec<BatchApplied>, StoreError> {
    if let [batch] = batches {
        return Ok(vec![apply_batch(pool, catalog, batch).await?]);
    }
    let mut results: Vec<BatchApplied> = batches.iter().map(|_| BatchApplied::default()).collect();
    if batches.is_empty() {
        return Ok(results);
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;

    // Claim in (task, part) order so that two loaders claiming overlapping groups take the
    // part keys in the same order; a second copy of a part in the group is a redelivery.
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
    // Parts of a job that has ended (or never existed) are not claimed, which is what
    // apply_batch's rollback leaves too; a cancel racing this is caught under the job lock.
    let claimed_rows = crate::cached::query(
        &tx,
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
    // From here on, delivery order: the later of two parts carrying a key wins.
    claimed.sort_unstable();
    if claimed.is_empty() {
        return Ok(results);
    }

    // Rows, one upsert per destination where the parts allow it.
    let mut rows: Vec<u64> = vec![0; batches.len()];
    let mut rejects: Vec<Vec<RejectedRecord>> = vec![Vec::new(); batches.len()];
    let mut units: Vec<Vec<usize>> = Vec::new();
    for &i in &claimed {
        let b = &batches[i];
        rejects[i].clone_from(&b.rejected);
        if b.table.is_empty() {
            continue;
        }
        let mergeable = b.merge.replace_scope.is_none() && b.merge.scope_keys.is_empty();
        let unit = units.iter_mut().find(|u| {
            let first = &batches[u[0]];
            mergeable
                && first.job_id == b.job_id
                && first.table == b.table
                && first.columns == b.columns
                && first.merge == b.merge
        });
        match unit {
            Some(u) => u.push(i),
            None => units.push(vec![i]),
        }
    }
    for unit in &units {
        let first = &batches[unit[0]];
        let parts: Vec<&[Vec<Value>]> = unit.iter().map(|&i| batches[i].rows.as_slice()).collect();
        let loaded = load_parts(
            &tx,
            catalog,
            first.job_id,
            &first.table,
            &first.columns,
            &parts,
            &first.merge,
        )
        .await?;
        for (&i, outcome) in unit.iter().zip(loaded.parts) {
            rows[i] = outcome.rows;
            rejects[i].extend(outcome.rejected);
        }
    }

    // The jobs' rows, in id order (two loaders lock shared jobs in the same order).
    let mut jobs: Vec<Uuid> = claimed.iter().map(|&i| batches[i].job_id).collect();
    jobs.sort_unstable();
    jobs.dedup();
    let states =
        futures::future::try_join_all(jobs.iter().map(|&job_id| lock_job(&tx, job_id))).await?;
    if let Some((job_id, state)) = jobs
        .iter()
        .zip(&states)
        .find(|(_, s)| s.as_deref().is_none_or(state::is_terminal))
    {
        return Err(StoreError::Regroup(format!(
            "job {job_id} ended ({}) while a group of its parts was loading",
            state.as_deref().unwrap_or("gone")
        )));
    }

    for &i in &claimed {
        let b = &batches[i];
        results[i].rejected = insert_rejects(&*tx, b.job_id, Some(&b.task_id), &rejects[i]).await?;
        record_children(&tx, b).await?;
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
                "UPDATE sluice.batches b SET rows = u.r
                   FROM unnest($1::text[], $2::int4[], $3::int4[]) AS u(t, p, r)
                  WHERE b.task_id = u.t AND b.part = u.p",
                &[&part_tasks, &part_nos, &part_rows],
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
            let state: String = r.get(1);
            let last: Option<i32> = r.get(2);
            match (state.as_str(), last) {
                ("pending" | "failed", Some(last)) => Some((r.get::<_, String>(0), last)),
                _ => None,
            }
        })
        .unzip();
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
            if let Some(state) = finish_if_done(&tx, job_id).await?
                && let Some(&last) = claimed.iter().rev().find(|&&i| batches[i].job_id == job_id)
            {
                results[last].job_finished = Some(state);
            }
        }
    }
    tx.commit().await.context(|| "commit".into())?;
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

/// Marks the task done when parts `0..=last` are all recorded. Returns true when it did.
async fn complete_if_all_parts(
    tx: &Transaction<'_>,
    task_id: &str,
    last: i32,
) -> Result<bool, StoreError> {
    let parts: i64 = crate::cached::query_one(
        tx,
        "SELECT count(*) FROM sluice.batches WHERE task_id = $1",
        &[&task_id],
    )
    .await
    .context(|| "counting parts".into())?
    .get(0);
    if parts != i64::from(last) + 1 {
        return Ok(false);
    }
    crate::cached::execute(tx,
        "UPDATE sluice.tasks SET state = 'done', error = NULL, finished_at = now() WHERE task_id = $1",
        &[&task_id],
    )
    .await
    .context(|| "finishing the task".into())?;
    Ok(true)
}

/// Records that a task ended without data (failed or cancelled) and finishes the job when
/// it was the last pending task. Returns the job's final state when this finished it.
///
/// # Errors
/// Database errors.
pub async fn apply_task_outcome(
    pool: &Pool,
    job_id: Uuid,
    task_id: &str,
    outcome: Outcome,
    error: &str,
) -> Result<Option<String>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;
    match lock_job(&tx, job_id).await? {
        Some(s) if !state::is_terminal(&s) => {}
        _ => return Ok(None),
    }
    let new_state = match outcome {
        Outcome::Failed => "failed",
        Outcome::Cancelled => "cancelled",
    };
    crate::cached::execute(&tx,
        "INSERT INTO sluice.tasks (task_id, job_id, stream, kind, state, error, finished_at, published_at)
         VALUES ($1, $2, '', '{}'::jsonb, $3, $4, now(), now())
         ON CONFLICT (task_id) DO UPDATE SET state = EXCLUDED.state, error = EXCLUDED.error,
                finished_at = now()
          WHERE sluice.tasks.state = 'pending'",
        &[&task_id, &job_id, &new_state, &error],
    )
    .await
    .context(|| format!("recording the outcome of task {task_id}"))?;
    let finished = finish_if_done(&tx, job_id).await?;
    tx.commit().await.context(|| "commit".into())?;
    Ok(finished)
}

/// With the job row locked: when no task is pending, ends the job (succeeded, or failed
/// naming the first failed task), releases the lock and, on success, writes freshness rows
/// and advances the bookmark. Returns the new state when it ended the job.
async fn finish_if_done(tx: &Transaction<'_>, job_id: Uuid) -> Result<Option<String>, StoreError> {
    let row = crate::cached::query_one(
        tx,
        "SELECT count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'failed'),
                    (SELECT task_id || ': ' || coalesce(error, 'failed') FROM sluice.tasks
                      WHERE job_id = $1 AND state = 'failed' ORDER BY finished_at, task_id LIMIT 1)
               FROM sluice.tasks WHERE job_id = $1",
        &[&job_id],
    )
    .await
    .context(|| format!("checking completion of job {job_id}"))?;
    let pending: i64 = row.get(0);
    let failed: i64 = row.get(1);
    if pending > 0 {
        return Ok(None);
    }
    let first_failure: Option<String> = row.get(2);
    let (new_state, error) = if failed > 0 {
        (
            state::FAILED,
            Some(format!(
                "{failed} task(s) failed; first: {}",
                first_failure.unwrap_or_default()
            )),
        )
    } else {
        (state::SUCCEEDED, None)
    };
    crate::cached::execute(tx,
        "UPDATE sluice.jobs SET state = $2, error = $3, finished_at = now(), updated_at = now() WHERE id = $1",
        &[&job_id, &new_state, &error],
    )
    .await
    .context(|| format!("ending job {job_id}"))?;
    if new_state == state::SUCCEEDED {
        record_success(tx, job_id).await?;
    }
    release_lock(tx, job_id).await?;
    Ok(Some(new_state.to_string()))
}

/// Parses a cursor value as a UTC instant: RFC 3339, or a date (midnight UTC).
pub fn cursor_to_ts(cursor: &str) -> Option<DateTime<Utc>> {
    if let Ok(ts) = DateTime::parse_from_rfc3339(cursor) {
        return Some(ts.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(cursor, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc())
}

async fn record_success(tx: &Transaction<'_>, job_id: Uuid) -> Result<(), StoreError> {
    let job = crate::cached::query_one(
        tx,
        "SELECT connector, account, stream FROM sluice.jobs WHERE id = $1",
        &[&job_id],
    )
    .await
    .context(|| "reading the job".into())?;
    let (connector, account, job_stream): (String, String, String) =
        (job.get(0), job.get(1), job.get(2));
    let per_stream = crate::cached::query(
        tx,
        "SELECT stream, max(cursor_max) FROM sluice.tasks
              WHERE job_id = $1 AND cursor_max IS NOT NULL GROUP BY stream",
        &[&job_id],
    )
    .await
    .context(|| "reading cursors".into())?;
    let mut overall: Option<String> = None;
    let mut stream_cursors: Vec<(String, String)> = Vec::new();
    for row in per_stream {
        let stream: String = row.get(0);
        let cursor: String = row.get(1);
        stream_cursors.push((stream.clone(), cursor.clone()));
        if overall.as_deref().is_none_or(|o| cursor.as_str() > o) {
            overall = Some(cursor.clone());
        }
        if let Some(ts) = cursor_to_ts(&cursor) {
            crate::cached::execute(
                tx,
                "INSERT INTO sluice.freshness (connector, account, stream, source_ts, job_id)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&connector, &account, &stream, &ts, &job_id],
            )
            .await
            .context(|| "writing freshness".into())?;
        }
    }
    if let Some(cursor) = overall {
        // The bookmark keeps the greatest cursor overall and per task stream (a Klaviyo
        // events job has tasks of streams `events/<metric id>`), merged with the stored one
        // so streams this job did not touch keep their cursors.
        let stored: Option<Value> = crate::cached::query_opt(
            tx,
            "SELECT bookmark FROM sluice.stream_state
                  WHERE connector = $1 AND account = $2 AND stream = $3 FOR UPDATE",
            &[&connector, &account, &job_stream],
        )
        .await
        .context(|| "reading the bookmark".into())?
        .map(|r| r.get(0));
        let bookmark = merge_bookmark(stored.as_ref(), &cursor, &stream_cursors);
        crate::cached::execute(
            tx,
            "INSERT INTO sluice.stream_state (connector, account, stream, bookmark, job_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (connector, account, stream) DO UPDATE
                SET bookmark = EXCLUDED.bookmark, job_id = EXCLUDED.job_id, updated_at = now()",
            &[&connector, &account, &job_stream, &bookmark, &job_id],
        )
        .await
        .context(|| "advancing the bookmark".into())?;
    }
    Ok(())
}

/// Ends a job that has no pending task (a plan with no tasks). Returns the new state when
/// it ended the job.
///
/// # Errors
/// Database errors.
pub async fn finish_if_idle(pool: &Pool, job_id: Uuid) -> Result<Option<String>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;
    match lock_job(&tx, job_id).await? {
        Some(s) if !state::is_terminal(&s) => {}
        _ => return Ok(None),
    }
    let finished = finish_if_done(&tx, job_id).await?;
    tx.commit().await.context(|| "commit".into())?;
    Ok(finished)
}

/// The bookmark after a successful job: `{"cursor": <greatest>, "streams": {<task stream>:
/// <greatest>}}`, never moving backwards from `stored`. Cursors compare as strings, which
/// orders connectors' cursor formats (`YYYY-MM-DD`, RFC 3339 UTC with fixed precision).
pub fn merge_bookmark(stored: Option<&Value>, cursor: &str, streams: &[(String, String)]) -> Value {
    let max = |a: Option<&str>, b: &str| -> String {
        match a {
            Some(a) if a > b => a.to_string(),
            _ => b.to_string(),
        }
    };
    let stored_cursor = stored.and_then(|b| b.get("cursor")).and_then(Value::as_str);
    let mut merged: serde_json::Map<String, Value> = stored
        .and_then(|b| b.get("streams"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (stream, c) in streams {
        let old = merged
            .get(stream)
            .and_then(Value::as_str)
            .map(str::to_string);
        merged.insert(stream.clone(), Value::String(max(old.as_deref(), c)));
    }
    json!({ "cursor": max(stored_cursor, cursor), "streams": merged })
}

/// The state of job `job_id` (`queued`, `running`, `succeeded`, `failed`, `cancelled`), or
/// `None` for an unknown job.
///
/// # Errors
/// Database errors.
pub async fn job_state(
    client: &impl GenericClient,
    job_id: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(client
        .query_opt("SELECT state FROM sluice.jobs WHERE id = $1", &[&job_id])
        .await
        .context(|| format!("reading the state of job {job_id}"))?
        .map(|r| r.get(0)))
}

/// Result of [`cancel_job`].
#[derive(Debug, PartialEq, Eq)]
pub enum CancelResult {
    /// The job is now cancelled; its pending tasks are cancelled and its lock released.
    Cancelled,
    /// The job had already ended in this state.
    AlreadyEnded(String),
    /// No such job.
    NotFound,
}

/// Cancels a job.
///
/// # Errors
/// Database errors.
pub async fn cancel_job(pool: &Pool, job_id: Uuid) -> Result<CancelResult, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;
    let Some(current) = lock_job(&tx, job_id).await? else {
        return Ok(CancelResult::NotFound);
    };
    if state::is_terminal(&current) {
        return Ok(CancelResult::AlreadyEnded(current));
    }
    crate::cached::execute(
        &tx,
        "UPDATE sluice.jobs SET state = 'cancelled', error = 'cancelled by operator',
                finished_at = now(), updated_at = now() WHERE id = $1",
        &[&job_id],
    )
    .await
    .context(|| format!("cancelling job {job_id}"))?;
    crate::cached::execute(&tx,
        "UPDATE sluice.tasks SET state = 'cancelled', finished_at = now() WHERE job_id = $1 AND state = 'pending'",
        &[&job_id],
    )
    .await
    .context(|| format!("cancelling the tasks of job {job_id}"))?;
    release_lock(&tx, job_id).await?;
    tx.commit().await.context(|| "commit".into())?;
    Ok(CancelResult::Cancelled)
}

/// Puts a parked task back to work: the task becomes pending again and its job running
/// (when it had failed), retaking the stream lock. Returns false — and changes nothing —
/// when the job is unknown, cancelled or succeeded, another job now holds the stream, or
/// the task is not a failed or pending task of the job.
///
/// # Errors
/// Database errors.
pub async fn reopen_task(pool: &Pool, job_id: Uuid, task_id: &str) -> Result<bool, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;
    let Some(current) = lock_job(&tx, job_id).await? else {
        return Ok(false);
    };
    if current == state::CANCELLED || current == state::SUCCEEDED {
        return Ok(false);
    }
    let job = crate::cached::query_one(
        &tx,
        "SELECT connector, account, stream FROM sluice.jobs WHERE id = $1",
        &[&job_id],
    )
    .await
    .context(|| "reading the job".into())?;
    let (c, a, s): (String, String, String) = (job.get(0), job.get(1), job.get(2));
    if acquire_stream_lock(&tx, &c, &a, &s, job_id)
        .await?
        .is_some()
    {
        return Ok(false);
    }
    let reopened = crate::cached::query_opt(
        &tx,
        "UPDATE sluice.tasks SET state = 'pending', error = NULL, finished_at = NULL
              WHERE task_id = $1 AND job_id = $2 AND state IN ('failed', 'pending')
              RETURNING final_part",
        &[&task_id, &job_id],
    )
    .await
    .context(|| "reopening the task".into())?;
    let Some(row) = reopened else {
        // Not a failed task of this job (already done, or unknown): leave the job alone.
        return Ok(false);
    };
    crate::cached::execute(&tx,
        "UPDATE sluice.jobs SET state = 'running', error = NULL, finished_at = NULL, updated_at = now()
          WHERE id = $1",
        &[&job_id],
    )
    .await
    .context(|| "reopening the job".into())?;
    // Its parts may all be loaded already (another copy delivered them): then the task is
    // done now, and a replayed copy will find every part taken.
    let final_part: Option<i32> = row.get(0);
    if let Some(last) = final_part
        && complete_if_all_parts(&tx, task_id, last).await?
    {
        finish_if_done(&tx, job_id).await?;
    }
    tx.commit().await.context(|| "commit".into())?;
    Ok(true)
}

/// Puts a job whose request was parked back to `queued`, so a replayed request is planned.
/// Returns false when the job is unknown or not failed.
///
/// # Errors
/// Database errors.
pub async fn reopen_job(pool: &Pool, job_id: Uuid) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "UPDATE sluice.jobs SET state = 'queued', error = NULL, finished_at = NULL, updated_at = now()
              WHERE id = $1 AND state = 'failed' AND NOT EXISTS (SELECT 1 FROM sluice.tasks WHERE job_id = $1)",
            &[&job_id],
        )
        .await
        .context(|| format!("reopening job {job_id}"))?;
    Ok(n == 1)
}

/// One line of `sluicectl jobs list`.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// Job id.
    pub id: Uuid,
    /// Connector.
    pub connector: String,
    /// Stream.
    pub stream: String,
    /// Account.
    pub account: String,
    /// State.
    pub state: String,
    /// Tasks done (or failed/cancelled) so far.
    pub tasks_done: i64,
    /// Tasks known so far.
    pub tasks_total: i64,
    /// Rows loaded.
    pub rows_loaded: i64,
    /// Rejected records.
    pub rows_rejected: i64,
    /// When requested, UTC.
    pub requested_at: DateTime<Utc>,
    /// When ended, UTC.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
}

const SUMMARY_SQL: &str = "SELECT j.id, j.connector, j.stream, j.account, j.state,
        (SELECT count(*) FROM sluice.tasks t WHERE t.job_id = j.id AND t.state <> 'pending'),
        (SELECT count(*) FROM sluice.tasks t WHERE t.job_id = j.id),
        j.rows_loaded, j.rows_rejected, j.requested_at, j.finished_at, j.error
   FROM sluice.jobs j";

fn summary(r: &tokio_postgres::Row) -> JobSummary {
    JobSummary {
        id: r.get(0),
        connector: r.get(1),
        stream: r.get(2),
        account: r.get(3),
        state: r.get(4),
        tasks_done: r.get(5),
        tasks_total: r.get(6),
        rows_loaded: r.get(7),
        rows_rejected: r.get(8),
        requested_at: r.get(9),
        finished_at: r.get(10),
        error: r.get(11),
    }
}

/// The most recent jobs, newest first.
///
/// # Errors
/// Database errors.
pub async fn list_jobs(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<JobSummary>, StoreError> {
    let rows = client
        .query(
            &format!("{SUMMARY_SQL} ORDER BY j.requested_at DESC LIMIT $1"),
            &[&limit],
        )
        .await
        .context(|| "listing jobs".into())?;
    Ok(rows.iter().map(summary).collect())
}

/// Everything `sluicectl jobs show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The summary line.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// Mode.
    pub mode: String,
    /// Resolved parameters.
    pub params: Value,
    /// Planner warnings (skipped input).
    pub warnings: Value,
    /// Tasks per state.
    pub tasks: std::collections::BTreeMap<String, i64>,
    /// Rows loaded per destination table.
    pub rows_per_table: std::collections::BTreeMap<String, i64>,
    /// Up to 20 rejected records: source and error.
    pub rejected: Vec<RejectedSummary>,
    /// Up to 20 failed tasks: id and error.
    pub failed_tasks: Vec<(String, String)>,
}

/// A rejected record in a report.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedSummary {
    /// Where it came from.
    pub source: String,
    /// Destination table, if known.
    pub table: Option<String>,
    /// What was wrong.
    pub error: String,
}

/// The report of one job, or `None`.
///
/// # Errors
/// Database errors.
pub async fn job_report(
    client: &impl GenericClient,
    job_id: Uuid,
) -> Result<Option<JobReport>, StoreError> {
    let Some(row) = client
        .query_opt(&format!("{SUMMARY_SQL} WHERE j.id = $1"), &[&job_id])
        .await
        .context(|| format!("reading job {job_id}"))?
    else {
        return Ok(None);
    };
    let summary = summary(&row);
    let extra = client
        .query_one(
            "SELECT mode, params, warnings FROM sluice.jobs WHERE id = $1",
            &[&job_id],
        )
        .await
        .context(|| "reading job".into())?;
    let tasks = client
        .query(
            "SELECT state, count(*) FROM sluice.tasks WHERE job_id = $1 GROUP BY state",
            &[&job_id],
        )
        .await
        .context(|| "counting tasks".into())?
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let rows_per_table = client
        .query(
            "SELECT table_name, sum(rows)::bigint FROM sluice.batches WHERE job_id = $1 AND table_name <> ''
              GROUP BY table_name ORDER BY table_name",
            &[&job_id],
        )
        .await
        .context(|| "summing rows".into())?
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let rejected = client
        .query(
            "SELECT source, table_name, error FROM sluice.rejected_rows WHERE job_id = $1 ORDER BY id LIMIT 20",
            &[&job_id],
        )
        .await
        .context(|| "reading rejects".into())?
        .into_iter()
        .map(|r| RejectedSummary {
            source: r.get(0),
            table: r.get(1),
            error: r.get(2),
        })
        .collect();
    let failed_tasks = client
        .query(
            "SELECT task_id, coalesce(error, '') FROM sluice.tasks WHERE job_id = $1 AND state = 'failed'
              ORDER BY finished_at LIMIT 20",
            &[&job_id],
        )
        .await
        .context(|| "reading failed tasks".into())?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Some(JobReport {
        summary,
        mode: extra.get(0),
        params: extra.get(1),
        warnings: extra.get(2),
        tasks,
        rows_per_table,
        rejected,
        failed_tasks,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bookmarks_merge_per_stream_and_never_move_back() {
        let first = merge_bookmark(
            None,
            "2024-01-02T00:00:00.000000Z",
            &[
                ("events/A".into(), "2024-01-02T00:00:00.000000Z".into()),
                ("events/B".into(), "2024-01-01T00:00:00.000000Z".into()),
            ],
        );
        let second = merge_bookmark(
            Some(&first),
            "2024-01-01T12:00:00.000000Z",
            &[("events/B".into(), "2024-01-01T12:00:00.000000Z".into())],
        );
        assert_eq!(
            second,
            json!({"cursor": "2024-01-02T00:00:00.000000Z", "streams": {
                "events/A": "2024-01-02T00:00:00.000000Z",
                "events/B": "2024-01-01T12:00:00.000000Z"}})
        );
        assert_eq!(
            cursor_to_ts("2016-04-01").unwrap().to_rfc3339(),
            "2016-04-01T00:00:00+00:00"
        );
    }
}
