//! The job and task state machine: intake, stream locks, plans, the task outbox, outcomes,
//! completion (freshness, bookmarks), cancel and replay.

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Transaction;
use serde_json::{Value, json};
use sluice_contracts::{JobRequest, Outcome, RejectedRecord};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::{JobState, TaskState};
use crate::{Context, Pool, StoreError};

/// A job that ended inside a transaction: recorded in `sluice_job_duration_seconds` once
/// that transaction has committed (a rolled-back end must not be counted).
#[derive(Debug, Clone)]
pub(super) struct Ended {
    pub(super) state: JobState,
    connector: String,
    stream: String,
    /// From the job's request to its end.
    seconds: f64,
}

impl Ended {
    /// Reads the columns of `RETURNING connector, stream, state, seconds`.
    fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            connector: row.get(0),
            stream: row.get(1),
            state: row.get(2),
            seconds: row.get(3),
        }
    }

    /// Observes the job's duration (call after the commit).
    pub(super) fn record(&self) {
        metrics::histogram!(
            "sluice_job_duration_seconds",
            "connector" => self.connector.clone(),
            "stream" => sluice_contracts::telemetry::stream_label(&self.stream),
            "outcome" => self.state.as_str(),
        )
        .record(self.seconds.max(0.0));
    }
}

/// What `RETURNING` yields for [`Ended::from_row`].
const ENDED_COLUMNS: &str = "connector, stream, state, \
     extract(epoch FROM finished_at - requested_at)::float8";

/// Records a requested job as `queued` (idempotent: an existing job is left alone).
///
/// Returns the job's current state.
///
/// # Errors
/// Database errors.
pub async fn insert_job(
    client: &impl GenericClient,
    req: &JobRequest,
) -> Result<JobState, StoreError> {
    client
        .execute(
            "INSERT INTO sluice.jobs (id, connector, stream, account, params, mode, requested_at, destination)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            &[
                &req.job_id,
                &req.connector,
                &req.stream,
                &req.account,
                &req.params,
                &req.mode.as_str(),
                &req.requested_at,
                &req.destination,
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
pub async fn lock_job(tx: &Transaction<'_>, job_id: Uuid) -> Result<Option<JobState>, StoreError> {
    Ok(crate::cached::query_opt(
        tx,
        "SELECT state FROM sluice.jobs WHERE id = $1 FOR NO KEY UPDATE",
        &[&job_id],
    )
    .await
    .context(|| format!("locking job {job_id}"))?
    .map(|r| r.get(0)))
}

/// Takes the stream lock of connector/account/stream/destination for `job_id`. A lock
/// held by a job that has ended is taken over.
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
    destination: &str,
    job_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    let ctx = || format!("taking the lock of {connector}/{account}/{stream} into {destination}");
    let inserted = crate::cached::execute(
        tx,
        "INSERT INTO sluice.locks (connector, account, stream, destination, job_id)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        &[&connector, &account, &stream, &destination, &job_id],
    )
    .await
    .context(ctx)?;
    if inserted == 1 {
        return Ok(None);
    }
    let row = crate::cached::query_one(
        tx,
        "SELECT l.job_id, j.state FROM sluice.locks l LEFT JOIN sluice.jobs j ON j.id = l.job_id
              WHERE l.connector = $1 AND l.account = $2 AND l.stream = $3 AND l.destination = $4
                FOR UPDATE OF l",
        &[&connector, &account, &stream, &destination],
    )
    .await
    .context(ctx)?;
    let holder: Uuid = row.get(0);
    let holder_state: Option<JobState> = row.get(1);
    if holder == job_id {
        return Ok(None);
    }
    match holder_state {
        Some(s) if !s.is_terminal() => Ok(Some(holder)),
        _ => {
            crate::cached::execute(
                tx,
                "UPDATE sluice.locks SET job_id = $5, acquired_at = now()
                  WHERE connector = $1 AND account = $2 AND stream = $3 AND destination = $4",
                &[&connector, &account, &stream, &destination, &job_id],
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
    fail_job_in_states(pool, job_id, error, &[JobState::Queued, JobState::Running]).await
}

/// Marks a job failed only while it is still `queued` (a parked job request must not end a
/// job whose tasks are already running).
///
/// # Errors
/// Database errors.
pub async fn fail_queued_job(pool: &Pool, job_id: Uuid, error: &str) -> Result<(), StoreError> {
    fail_job_in_states(pool, job_id, error, &[JobState::Queued]).await
}

async fn fail_job_in_states(
    pool: &Pool,
    job_id: Uuid,
    error: &str,
    states: &[JobState],
) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;
    let mut ended = None;
    if let Some(s) = lock_job(&tx, job_id).await?
        && states.contains(&s)
    {
        let row = crate::cached::query_one(&tx,
            &format!("UPDATE sluice.jobs SET state = 'failed', error = $2, finished_at = now(), updated_at = now()
              WHERE id = $1 RETURNING {ENDED_COLUMNS}"),
            &[&job_id, &error],
        )
        .await
        .context(|| format!("failing job {job_id}"))?;
        ended = Some(Ended::from_row(&row));
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
    if let Some(ended) = ended {
        ended.record();
    }
    Ok(())
}

pub(super) async fn release_lock(tx: &Transaction<'_>, job_id: Uuid) -> Result<(), StoreError> {
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

/// The stored bookmark of a stream in one destination.
///
/// # Errors
/// Database errors.
pub async fn bookmark(
    client: &impl GenericClient,
    connector: &str,
    account: &str,
    stream: &str,
    destination: &str,
) -> Result<Option<Value>, StoreError> {
    Ok(client
        .query_opt(
            "SELECT bookmark FROM sluice.stream_state
              WHERE connector = $1 AND account = $2 AND stream = $3 AND destination = $4",
            &[&connector, &account, &stream, &destination],
        )
        .await
        .context(|| "reading the bookmark".into())?
        .map(|r| r.get(0)))
}

/// Marks the task done when parts `0..=last` are all recorded. Returns true when it did.
pub(super) async fn complete_if_all_parts(
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
) -> Result<Option<JobState>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;
    match lock_job(&tx, job_id).await? {
        Some(s) if !s.is_terminal() => {}
        _ => return Ok(None),
    }
    let new_state = match outcome {
        Outcome::Failed => TaskState::Failed,
        Outcome::Cancelled => TaskState::Cancelled,
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
    Ok(finished.map(|ended| {
        ended.record();
        ended.state
    }))
}

/// With the job row locked: when no task is pending, ends the job (succeeded, or failed
/// naming the first failed task), releases the lock and, on success, writes freshness rows
/// and advances the bookmark. Returns how it ended when it ended the job (for the caller
/// to [`Ended::record`] after its commit).
pub(super) async fn finish_if_done(
    tx: &Transaction<'_>,
    job_id: Uuid,
) -> Result<Option<Ended>, StoreError> {
    // Asked after every settled task, with the job row locked: a job of many tasks must
    // not be counted through each time (one probe of the (job_id, state) index instead).
    let pending = crate::cached::query_one(
        tx,
        "SELECT EXISTS (SELECT 1 FROM sluice.tasks WHERE job_id = $1 AND state = 'pending')",
        &[&job_id],
    )
    .await
    .context(|| format!("checking completion of job {job_id}"))?;
    if pending.get::<_, bool>(0) {
        return Ok(None);
    }
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
            JobState::Failed,
            Some(format!(
                "{failed} task(s) failed; first: {}",
                first_failure.unwrap_or_default()
            )),
        )
    } else {
        (JobState::Succeeded, None)
    };
    let row = crate::cached::query_one(
        tx,
        &format!(
            "UPDATE sluice.jobs SET state = $2, error = $3, finished_at = now(), updated_at = now()
          WHERE id = $1 RETURNING {ENDED_COLUMNS}"
        ),
        &[&job_id, &new_state, &error],
    )
    .await
    .context(|| format!("ending job {job_id}"))?;
    if new_state == JobState::Succeeded {
        record_success(tx, job_id).await?;
    }
    release_lock(tx, job_id).await?;
    Ok(Some(Ended::from_row(&row)))
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
        "SELECT connector, account, stream, destination FROM sluice.jobs WHERE id = $1",
        &[&job_id],
    )
    .await
    .context(|| "reading the job".into())?;
    let (connector, account, job_stream, destination): (String, String, String, String) =
        (job.get(0), job.get(1), job.get(2), job.get(3));
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
                  WHERE connector = $1 AND account = $2 AND stream = $3 AND destination = $4
                    FOR UPDATE",
            &[&connector, &account, &job_stream, &destination],
        )
        .await
        .context(|| "reading the bookmark".into())?
        .map(|r| r.get(0));
        let bookmark = merge_bookmark(stored.as_ref(), &cursor, &stream_cursors);
        crate::cached::execute(
            tx,
            "INSERT INTO sluice.stream_state (connector, account, stream, destination, bookmark, job_id)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (connector, account, stream, destination) DO UPDATE
                SET bookmark = EXCLUDED.bookmark, job_id = EXCLUDED.job_id, updated_at = now()",
            &[&connector, &account, &job_stream, &destination, &bookmark, &job_id],
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
pub async fn finish_if_idle(pool: &Pool, job_id: Uuid) -> Result<Option<JobState>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;
    match lock_job(&tx, job_id).await? {
        Some(s) if !s.is_terminal() => {}
        _ => return Ok(None),
    }
    let finished = finish_if_done(&tx, job_id).await?;
    tx.commit().await.context(|| "commit".into())?;
    Ok(finished.map(|ended| {
        ended.record();
        ended.state
    }))
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
) -> Result<Option<JobState>, StoreError> {
    Ok(client
        .query_opt("SELECT state FROM sluice.jobs WHERE id = $1", &[&job_id])
        .await
        .context(|| format!("reading the state of job {job_id}"))?
        .map(|r| r.get(0)))
}

/// The destination and connector of a job (`None` for a job the ledger does not know).
///
/// # Errors
/// Database errors.
pub async fn job_destination(
    client: &impl GenericClient,
    job_id: Uuid,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(client
        .query_opt(
            "SELECT destination, connector FROM sluice.jobs WHERE id = $1",
            &[&job_id],
        )
        .await
        .context(|| format!("reading the destination of job {job_id}"))?
        .map(|r| (r.get(0), r.get(1))))
}

/// Result of [`cancel_job`].
#[derive(Debug, PartialEq, Eq)]
pub enum CancelResult {
    /// The job is now cancelled; its pending tasks are cancelled and its lock released.
    Cancelled,
    /// The job had already ended in this state.
    AlreadyEnded(JobState),
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
    if current.is_terminal() {
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
    if current == JobState::Cancelled || current == JobState::Succeeded {
        return Ok(false);
    }
    let job = crate::cached::query_one(
        &tx,
        "SELECT connector, account, stream, destination FROM sluice.jobs WHERE id = $1",
        &[&job_id],
    )
    .await
    .context(|| "reading the job".into())?;
    let (c, a, s, d): (String, String, String, String) =
        (job.get(0), job.get(1), job.get(2), job.get(3));
    if acquire_stream_lock(&tx, &c, &a, &s, &d, job_id)
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
