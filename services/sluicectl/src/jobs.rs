//! `sluicectl jobs list|show|cancel`: the ledger's view of jobs.

use std::process::ExitCode;

use anyhow::Context;
use sluice_broker::Broker;
use sluice_contracts::{ControlMessage, Settings};
use sluice_store::Pool;
use sluice_store::ledger::{self, CancelResult, JobReport};
use uuid::Uuid;

use crate::{JobsCommand, pool};

pub(crate) async fn report(pool: &Pool, job_id: Uuid) -> anyhow::Result<JobReport> {
    ledger::job_report(&**pool.get().await?, job_id)
        .await?
        .with_context(|| format!("no job {job_id}"))
}

pub(crate) fn print_report(r: &JobReport) {
    let s = &r.summary;
    println!("job       {}", s.id);
    println!(
        "stream    {}/{}/{} ({})",
        s.connector, s.account, s.stream, r.mode
    );
    println!("into      {}", s.destination);
    println!("state     {}", s.state);
    if let Some(e) = &s.error {
        println!("error     {e}");
    }
    println!(
        "tasks     {}/{} ({})",
        s.tasks_done,
        s.tasks_total,
        r.tasks
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("requested {}", s.requested_at.to_rfc3339());
    if let Some(f) = s.finished_at {
        println!("finished  {}", f.to_rfc3339());
    }
    println!(
        "rows      {} loaded, {} rejected",
        s.rows_loaded, s.rows_rejected
    );
    if !r.changes_per_table.is_empty() {
        println!(
            "  {:<40} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "table", "rows", "inserted", "updated", "unchanged", "deleted"
        );
    }
    let count = |n: Option<i64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    for (table, c) in &r.changes_per_table {
        println!(
            "  {table:<40} {:>10} {:>10} {:>10} {:>10} {:>10}",
            c.rows,
            count(c.inserted),
            count(c.updated),
            count(c.unchanged),
            count(c.deleted)
        );
    }
    if let Some(warnings) = r.warnings.as_array().filter(|w| !w.is_empty()) {
        println!("warnings");
        for w in warnings {
            println!("  {}", w.as_str().unwrap_or_default());
        }
    }
    if !r.rejected.is_empty() {
        println!(
            "rejected records (first {}; all in sluice.rejected_rows)",
            r.rejected.len()
        );
        for rej in &r.rejected {
            println!("  {}: {}", rej.source, rej.error);
        }
    }
    if r.rejected_by_reason.len() > 1
        || r.rejected_by_reason.values().sum::<i64>() > r.rejected.len() as i64
    {
        println!("rejected records by reason");
        for (reason, n) in &r.rejected_by_reason {
            println!("  {n:>8}  {reason}");
        }
    }
    if !r.failed_tasks.is_empty() {
        println!("failed tasks");
        for (task, error) in &r.failed_tasks {
            println!("  {task}: {error}");
        }
    }
}

pub(crate) async fn jobs(settings: &Settings, cmd: JobsCommand) -> anyhow::Result<ExitCode> {
    let pool = pool(settings).await?;
    match cmd {
        JobsCommand::List { limit, json } => {
            let jobs = ledger::list_jobs(&**pool.get().await?, limit).await?;
            if json {
                for j in &jobs {
                    println!("{}", serde_json::to_string(j)?);
                }
            } else {
                println!(
                    "{:<36}  {:<10}  {:<28}  {:<12}  {:>11}  {:>12}  {:>8}  requested",
                    "id", "state", "stream", "destination", "tasks", "rows", "rejected"
                );
                for j in &jobs {
                    println!(
                        "{:<36}  {:<10}  {:<28}  {:<12}  {:>11}  {:>12}  {:>8}  {}",
                        j.id,
                        j.state.as_str(),
                        format!("{}/{}/{}", j.connector, j.account, j.stream),
                        j.destination,
                        format!("{}/{}", j.tasks_done, j.tasks_total),
                        j.rows_loaded,
                        j.rows_rejected,
                        j.requested_at.format("%Y-%m-%d %H:%M:%S")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Show { id, json } => {
            let r = report(&pool, id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_report(&r);
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Cancel { id } => match ledger::cancel_job(&pool, id).await? {
            CancelResult::Cancelled => {
                let broker = Broker::connect(&settings.amqp, "sluicectl").await?;
                broker.broadcast(&ControlMessage::cancel(id)).await?;
                broker.close().await;
                println!("cancelled job {id}");
                Ok(ExitCode::SUCCESS)
            }
            CancelResult::AlreadyEnded(state) => {
                eprintln!("job {id} already ended: {state}");
                Ok(ExitCode::from(1))
            }
            CancelResult::NotFound => {
                eprintln!("no job {id}");
                Ok(ExitCode::from(1))
            }
        },
    }
}
