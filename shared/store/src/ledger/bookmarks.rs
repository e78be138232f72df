//! What `sluicectl bookmarks list|reset` reads and changes: `sluice.stream_state`, where an
//! incremental job of a stream continues from.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::{Context, Pool, StoreError};

/// One stream's bookmark in one destination.
#[derive(Debug, Clone, Serialize)]
pub struct Bookmark {
    /// Connector.
    pub connector: String,
    /// Account.
    pub account: String,
    /// The job stream (`events`, `orders`, `export`).
    pub stream: String,
    /// Destination the bookmark belongs to.
    pub destination: String,
    /// `{"cursor": <greatest>, "streams": {<task stream>: <greatest>}}` (see
    /// [`super::merge_bookmark`]).
    pub bookmark: Value,
    /// The job that last moved it.
    pub job_id: Option<Uuid>,
    /// When it last moved, UTC.
    pub updated_at: DateTime<Utc>,
}

/// Every bookmark, by connector, account, stream and destination.
///
/// # Errors
/// Database errors.
pub async fn list_bookmarks(client: &impl GenericClient) -> Result<Vec<Bookmark>, StoreError> {
    let rows = client
        .query(
            "SELECT connector, account, stream, destination, bookmark, job_id, updated_at
               FROM sluice.stream_state ORDER BY 1, 2, 3, 4",
            &[],
        )
        .await
        .context(|| "listing bookmarks".into())?;
    Ok(rows
        .iter()
        .map(|r| Bookmark {
            connector: r.get(0),
            account: r.get(1),
            stream: r.get(2),
            destination: r.get(3),
            bookmark: r.get(4),
            job_id: r.get(5),
            updated_at: r.get(6),
        })
        .collect())
}

/// What [`reset_bookmark`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ResetResult {
    /// Removed; this was the bookmark.
    Reset(Value),
    /// The stream has no bookmark in that destination.
    NotFound,
    /// A queued or running job holds the stream: resetting under it would be undone by
    /// its success.
    Held(Uuid),
}

/// Removes a stream's bookmark in `destination`, so that its next incremental job reads
/// from the start (as a first one does) — unless a job holds the stream's lock.
///
/// # Errors
/// Database errors.
pub async fn reset_bookmark(
    pool: &Pool,
    connector: &str,
    account: &str,
    stream: &str,
    destination: &str,
) -> Result<ResetResult, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.context(|| "begin".into())?;
    // The lock row first, so a planner taking the stream now waits for this decision.
    let holder = tx
        .query_opt(
            "SELECT l.job_id FROM sluice.locks l JOIN sluice.jobs j ON j.id = l.job_id
              WHERE l.connector = $1 AND l.account = $2 AND l.stream = $3 AND l.destination = $4
                AND j.state IN ('queued', 'running')
                FOR UPDATE OF l",
            &[&connector, &account, &stream, &destination],
        )
        .await
        .context(|| "reading the stream lock".into())?;
    if let Some(row) = holder {
        return Ok(ResetResult::Held(row.get(0)));
    }
    let removed = tx
        .query_opt(
            "DELETE FROM sluice.stream_state
              WHERE connector = $1 AND account = $2 AND stream = $3 AND destination = $4
             RETURNING bookmark",
            &[&connector, &account, &stream, &destination],
        )
        .await
        .context(|| "removing the bookmark".into())?;
    tx.commit().await.context(|| "commit".into())?;
    Ok(removed.map_or(ResetResult::NotFound, |r| ResetResult::Reset(r.get(0))))
}
