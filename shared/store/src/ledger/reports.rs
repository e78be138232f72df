//! What `sluicectl jobs list` and `jobs show` print.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::JobState;
use crate::{Context, StoreError};
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
    /// Destination the job writes to (`sluice.jobs.destination`).
    pub destination: String,
    /// State.
    pub state: JobState,
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

const SUMMARY_SQL: &str = "SELECT j.id, j.connector, j.stream, j.account, j.state, j.destination,
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
        destination: r.get(5),
        tasks_done: r.get(6),
        tasks_total: r.get(7),
        rows_loaded: r.get(8),
        rows_rejected: r.get(9),
        requested_at: r.get(10),
        finished_at: r.get(11),
        error: r.get(12),
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

/// The summary line of one job (one query; [`job_report`] has the rest), or `None`.
///
/// # Errors
/// Database errors.
pub async fn job_summary(
    client: &impl GenericClient,
    job_id: Uuid,
) -> Result<Option<JobSummary>, StoreError> {
    let row = client
        .query_opt(&format!("{SUMMARY_SQL} WHERE j.id = $1"), &[&job_id])
        .await
        .context(|| format!("reading job {job_id}"))?;
    Ok(row.as_ref().map(summary))
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
    /// What the job's rows did to each table (`sluice.batches`).
    pub changes_per_table: std::collections::BTreeMap<String, TableChanges>,
    /// Up to 20 rejected records: source and error.
    pub rejected: Vec<RejectedSummary>,
    /// Every rejected record, counted per reason ([`rejected_by_reason`]).
    pub rejected_by_reason: std::collections::BTreeMap<String, i64>,
    /// Up to 20 failed tasks: id and error.
    pub failed_tasks: Vec<(String, String)>,
}

/// What a job's rows did to one table. The counts are `None` when the destination did not
/// count them (Redshift; parts loaded before migration V8).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableChanges {
    /// Rows that reached the table's write (after rejects).
    pub rows: i64,
    /// Rows with a key the table did not hold.
    pub inserted: Option<i64>,
    /// Stored rows replaced by a different row.
    pub updated: Option<i64>,
    /// `rows − inserted − updated`: identical to the stored row, older than it (version
    /// guard), or repeated within the load.
    pub unchanged: Option<i64>,
    /// Rows removed from a parent's replaced collection.
    pub deleted: Option<i64>,
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
    let Some(summary) = job_summary(client, job_id).await? else {
        return Ok(None);
    };
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
    let per_table = client
        .query(
            "SELECT table_name, sum(rows)::bigint,
                    CASE WHEN bool_and(inserted IS NOT NULL) THEN sum(inserted)::bigint END,
                    CASE WHEN bool_and(updated IS NOT NULL) THEN sum(updated)::bigint END,
                    CASE WHEN bool_and(deleted IS NOT NULL) THEN sum(deleted)::bigint END
               FROM sluice.batches WHERE job_id = $1 AND table_name <> ''
              GROUP BY table_name ORDER BY table_name",
            &[&job_id],
        )
        .await
        .context(|| "summing rows".into())?;
    let rows_per_table = per_table
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let changes_per_table = per_table
        .iter()
        .map(|r| {
            let rows: i64 = r.get(1);
            let (inserted, updated): (Option<i64>, Option<i64>) = (r.get(2), r.get(3));
            let unchanged = inserted.zip(updated).map(|(i, u)| rows - i - u);
            let changes = TableChanges {
                rows,
                inserted,
                updated,
                unchanged,
                deleted: r.get(4),
            };
            (r.get::<_, String>(0), changes)
        })
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
        changes_per_table,
        rejected,
        rejected_by_reason: rejected_by_reason(client, job_id).await?,
        failed_tasks,
    }))
}

/// The job holding the stream lock of connector/account/stream/destination while it is
/// active (queued or running), or `None`.
///
/// # Errors
/// Database errors.
pub async fn active_job(
    client: &impl GenericClient,
    connector: &str,
    account: &str,
    stream: &str,
    destination: &str,
) -> Result<Option<Uuid>, StoreError> {
    let row = client
        .query_opt(
            "SELECT l.job_id FROM sluice.locks l JOIN sluice.jobs j ON j.id = l.job_id
              WHERE l.connector = $1 AND l.account = $2 AND l.stream = $3
                AND l.destination = $4 AND j.state IN ('queued', 'running')",
            &[&connector, &account, &stream, &destination],
        )
        .await
        .context(|| format!("reading the lock of {connector}/{account}/{stream}"))?;
    Ok(row.map(|r| r.get(0)))
}

/// The most recent job of connector/account/stream/destination that has ended
/// (succeeded, failed or cancelled), or `None`.
///
/// # Errors
/// Database errors.
pub async fn last_ended_job(
    client: &impl GenericClient,
    connector: &str,
    account: &str,
    stream: &str,
    destination: &str,
) -> Result<Option<JobSummary>, StoreError> {
    let row = client
        .query_opt(
            &format!(
                "{SUMMARY_SQL} WHERE j.connector = $1 AND j.account = $2 AND j.stream = $3
                   AND j.destination = $4 AND j.state IN ('succeeded', 'failed', 'cancelled')
                 ORDER BY j.finished_at DESC NULLS LAST LIMIT 1"
            ),
            &[&connector, &account, &stream, &destination],
        )
        .await
        .context(|| format!("reading the last job of {connector}/{account}/{stream}"))?;
    Ok(row.as_ref().map(summary))
}

/// Whether a job of connector/account/stream into `destination` ever succeeded.
///
/// # Errors
/// Database errors.
pub async fn ever_succeeded(
    client: &impl GenericClient,
    connector: &str,
    account: &str,
    stream: &str,
    destination: &str,
) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM sluice.jobs WHERE connector = $1 AND account = $2
                AND stream = $3 AND destination = $4 AND state = 'succeeded')",
            &[&connector, &account, &stream, &destination],
        )
        .await
        .context(|| format!("reading the jobs of {connector}/{account}/{stream}"))?;
    Ok(row.get(0))
}

/// A sync's figures as the commercetools–Klaviyo plugin's final log line gave them, plus
/// the rejected records by reason (`GET /sync/status`, `sluicectl jobs show`, the loader's
/// last line of a job).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SyncSummary {
    /// The job.
    pub job_id: Uuid,
    /// Its state.
    pub state: JobState,
    /// Source records the job read that were written or rejected: objects written plus
    /// records rejected (each rejected record counts once, whatever it would have become).
    pub total_objects: i64,
    /// Objects the destination accepted (`sluice.jobs.rows_loaded`).
    pub imported: i64,
    /// Records rejected by the mapping or by the destination (`sluice.jobs.rows_rejected`).
    pub errored: i64,
    /// Objects written per destination table (`klaviyo.profile`, `klaviyo.event`, …).
    pub objects_per_table: std::collections::BTreeMap<String, i64>,
    /// Rejected records per reason: the error with ids, quoted values and numbers
    /// replaced by `…`, so records refused for the same reason count together.
    pub rejected_by_reason: std::collections::BTreeMap<String, i64>,
    /// From the request to the end (or to now, while it runs), seconds.
    pub elapsed_seconds: f64,
    /// Why the job failed, if it did.
    pub error: Option<String>,
}

/// The [`SyncSummary`] of `job`.
///
/// # Errors
/// Database errors.
pub async fn sync_summary(
    client: &impl GenericClient,
    job: &JobSummary,
) -> Result<SyncSummary, StoreError> {
    let objects_per_table = client
        .query(
            "SELECT table_name, sum(rows)::bigint FROM sluice.batches
              WHERE job_id = $1 AND table_name <> '' GROUP BY table_name ORDER BY table_name",
            &[&job.id],
        )
        .await
        .context(|| format!("summing the objects of job {}", job.id))?
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let rejected_by_reason = rejected_by_reason(client, job.id).await?;
    let end = job.finished_at.unwrap_or_else(Utc::now);
    Ok(SyncSummary {
        job_id: job.id,
        state: job.state,
        total_objects: job.rows_loaded + job.rows_rejected,
        imported: job.rows_loaded,
        errored: job.rows_rejected,
        objects_per_table,
        rejected_by_reason,
        elapsed_seconds: (end - job.requested_at).num_milliseconds() as f64 / 1000.0,
        error: job.error.clone(),
    })
}

/// A job's rejected records per reason: the error with ids (UUIDs, Klaviyo's compound
/// catalog ids), quoted values and numbers replaced by `…`, so records refused for the same
/// reason count together.
///
/// # Errors
/// Database errors.
pub async fn rejected_by_reason(
    client: &impl GenericClient,
    job_id: Uuid,
) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
    Ok(client
        .query(
            r#"SELECT regexp_replace(error,
                   '[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}|\$custom:::\$default:::\S+|"[^"]*"|''[^'']*''|[0-9]+',
                   '…', 'g') AS reason, count(*)
                 FROM sluice.rejected_rows WHERE job_id = $1 GROUP BY reason ORDER BY reason"#,
            &[&job_id],
        )
        .await
        .context(|| format!("grouping the rejects of job {job_id}"))?
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect())
}
