//! `sluicectl freshness`: the latest source and load time per stream.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sluice_connectors::Registry;
use sluice_contracts::Settings;
use uuid::Uuid;

use crate::pool;

/// One line of `sluicectl freshness` (one JSON object per line with `--json`).
#[derive(Debug, Serialize)]
struct Fresh {
    connector: String,
    account: String,
    stream: String,
    /// What the stream's name stands for, when it is an id (a Klaviyo metric's name).
    name: Option<String>,
    /// Latest source time loaded, UTC.
    source_ts: DateTime<Utc>,
    /// When it was loaded, UTC.
    loaded_at: DateTime<Utc>,
    /// The job that loaded it.
    job_id: Uuid,
}

/// Prints `sluice.freshness_latest`, each stream with its connector's label for it
/// ([`sluice_connectors::Connector::stream_label`], read from the job's resolved
/// parameters in the ledger).
pub(crate) async fn freshness(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let pool = pool(settings).await?;
    let registry = Registry::from_settings(settings)?;
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT f.connector, f.account, f.stream, f.source_ts, f.loaded_at, f.job_id, j.params
               FROM sluice.freshness_latest f LEFT JOIN sluice.jobs j ON j.id = f.job_id
              ORDER BY 1, 2, 3",
            &[],
        )
        .await?;
    let lines: Vec<Fresh> = rows
        .iter()
        .map(|r| {
            let connector: String = r.get(0);
            let stream: String = r.get(2);
            let params: Option<Value> = r.get(6);
            let name = registry
                .get(&connector)
                .and_then(|c| c.stream_label(&stream, params.as_ref().unwrap_or(&Value::Null)));
            Fresh {
                connector,
                account: r.get(1),
                stream,
                name,
                source_ts: r.get(3),
                loaded_at: r.get(4),
                job_id: r.get(5),
            }
        })
        .collect();
    if json {
        for line in &lines {
            println!("{}", serde_json::to_string(line)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<45} {:<25} {:<20} {:<20} job",
        "stream", "name", "source time (UTC)", "loaded at (UTC)"
    );
    for f in lines {
        println!(
            "{:<45} {:<25} {:<20} {:<20} {}",
            format!("{}/{}/{}", f.connector, f.account, f.stream),
            f.name.as_deref().unwrap_or("-"),
            f.source_ts.format("%Y-%m-%d %H:%M:%S"),
            f.loaded_at.format("%Y-%m-%d %H:%M:%S"),
            f.job_id
        );
    }
    Ok(ExitCode::SUCCESS)
}
