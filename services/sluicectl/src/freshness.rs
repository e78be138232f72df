//! `sluicectl freshness`: the latest source and load time per stream.

use std::process::ExitCode;

use chrono::Utc;
use sluice_contracts::Settings;
use uuid::Uuid;

use crate::pool;

pub(crate) async fn freshness(settings: &Settings) -> anyhow::Result<ExitCode> {
    let pool = pool(settings).await?;
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT connector || '/' || account || '/' || stream, source_ts, loaded_at, job_id
               FROM sluice.freshness_latest ORDER BY 1",
            &[],
        )
        .await?;
    println!(
        "{:<45} {:<25} {:<25} job",
        "stream", "source time (UTC)", "loaded at (UTC)"
    );
    for r in rows {
        let stream: String = r.get(0);
        let source: chrono::DateTime<Utc> = r.get(1);
        let loaded: chrono::DateTime<Utc> = r.get(2);
        let job: Uuid = r.get(3);
        println!(
            "{stream:<45} {:<25} {:<25} {job}",
            source.format("%Y-%m-%d %H:%M:%S"),
            loaded.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(ExitCode::SUCCESS)
}
