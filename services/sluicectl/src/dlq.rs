//! `sluicectl dlq list|replay|purge`: the parking lot.

use std::process::ExitCode;

use sluice_broker::lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use sluice_broker::{ATTEMPTS_HEADER, Broker, ERROR_HEADER, Headers, ORIGIN_HEADER, Route};
use sluice_contracts::{FetchTask, JobRequest, Message, RecordBatch, Settings};
use sluice_store::ledger;
use sluice_store::{Pool, StoreError};
use uuid::Uuid;

use crate::{DlqCommand, pool};

/// A parked message as `dlq list` shows it.
#[derive(Debug, serde::Serialize)]
struct Parked {
    kind: String,
    origin: String,
    job_id: Option<Uuid>,
    task_id: Option<String>,
    attempts: String,
    error: String,
}

fn describe(delivery: &sluice_broker::lapin::message::Delivery) -> Parked {
    let props = &delivery.properties;
    let kind = props
        .kind()
        .as_ref()
        .map(|k| k.as_str().to_string())
        .unwrap_or_default();
    let death = sluice_broker::first_death(props);
    let origin = sluice_broker::header_str(props, ORIGIN_HEADER)
        .or_else(|| death.as_ref().map(|(key, _)| key.clone()))
        .unwrap_or_default();
    let error = sluice_broker::header_str(props, ERROR_HEADER)
        .or_else(|| {
            death
                .as_ref()
                .map(|(_, reason)| format!("dead-lettered: {reason}"))
        })
        .unwrap_or_default();
    let (job_id, task_id) = if kind == FetchTask::KIND {
        FetchTask::decode(&delivery.data)
            .map(|t| (Some(t.job_id), Some(t.task_id)))
            .unwrap_or_default()
    } else if kind == RecordBatch::KIND {
        RecordBatch::decode(&delivery.data)
            .map(|b| (Some(b.job_id), Some(b.task_id)))
            .unwrap_or_default()
    } else if kind == JobRequest::KIND {
        JobRequest::decode(&delivery.data)
            .map(|j| (Some(j.job_id), None))
            .unwrap_or_default()
    } else {
        (None, None)
    };
    Parked {
        kind,
        origin,
        job_id,
        task_id,
        attempts: sluice_broker::header_str(props, ATTEMPTS_HEADER).unwrap_or_default(),
        error,
    }
}

pub(crate) async fn dlq(settings: &Settings, cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    let broker = Broker::connect(&settings.amqp, "sluicectl").await?;
    let queue = broker.topology().parked();
    // Messages taken with basic.get stay unacknowledged until acked; closing the channel
    // returns every one not acked to the queue, so listing never loses anything.
    let channel = broker.channel().await?;
    let code = match cmd {
        DlqCommand::List { limit } => {
            let mut n = 0;
            while n < limit {
                let Some(msg) = channel
                    .basic_get(queue.clone().into(), BasicGetOptions::default())
                    .await?
                else {
                    break;
                };
                println!("{}", serde_json::to_string(&describe(&msg.delivery))?);
                n += 1;
            }
            eprintln!("{n} parked message(s) shown");
            ExitCode::SUCCESS
        }
        DlqCommand::Replay { job } => {
            let pool = pool(settings).await?;
            // Only what was parked when the command started: a replayed message that fails
            // again at once is parked anew behind these, and must not be replayed twice by
            // one command. Messages taken and not acked stay with this channel, so the
            // first `parked` gets are exactly the messages counted here.
            let (parked, _) = broker.queue_counts(&queue).await?;
            let (mut replayed, mut kept) = (0, 0);
            for _ in 0..parked {
                let Some(msg) = channel
                    .basic_get(queue.clone().into(), BasicGetOptions::default())
                    .await?
                else {
                    break;
                };
                let parked = describe(&msg.delivery);
                if job.is_some() && parked.job_id != job {
                    kept += 1;
                    continue;
                }
                match replay_one(&broker, &pool, &parked, &msg.delivery.data).await {
                    Ok(true) => {
                        msg.delivery.ack(BasicAckOptions::default()).await?;
                        replayed += 1;
                    }
                    Ok(false) => kept += 1,
                    Err(e) => {
                        eprintln!("could not replay {parked:?}: {e:#}");
                        kept += 1;
                    }
                }
            }
            println!("replayed {replayed}, left parked {kept}");
            ExitCode::SUCCESS
        }
        DlqCommand::Purge { yes } => {
            if !yes {
                eprintln!("refusing to purge without --yes");
                return Ok(ExitCode::from(1));
            }
            let n = channel
                .queue_purge(queue.clone().into(), QueuePurgeOptions::default())
                .await?;
            println!("purged {n} parked message(s)");
            ExitCode::SUCCESS
        }
    };
    let _ = channel.close(200, "bye".into()).await;
    broker.close().await;
    Ok(code)
}

/// Reopens the ledger entry of a parked message and publishes it again with a fresh attempt
/// count. Returns false (left parked) when its job can no longer take it.
async fn replay_one(
    broker: &Broker,
    pool: &Pool,
    parked: &Parked,
    body: &[u8],
) -> anyhow::Result<bool> {
    let Some(job_id) = parked.job_id else {
        eprintln!(
            "left parked: undecodable {} message ({})",
            parked.kind, parked.error
        );
        return Ok(false);
    };
    let headers = Headers::default().traced(job_id);
    if parked.kind == FetchTask::KIND {
        let mut task = FetchTask::decode(body)?;
        if !reopen(pool, job_id, &task.task_id).await? {
            return Ok(false);
        }
        task.attempt = 1;
        broker.publish(Route::Fetch, &task, headers).await?;
    } else if parked.kind == RecordBatch::KIND {
        let batch = RecordBatch::decode(body)?;
        if !reopen(pool, job_id, &batch.task_id).await? {
            return Ok(false);
        }
        broker.publish(Route::Load, &batch, headers).await?;
    } else if parked.kind == JobRequest::KIND {
        let request = JobRequest::decode(body)?;
        if !ledger::reopen_job(pool, job_id).await? {
            eprintln!("left parked: job {job_id} cannot be reopened");
            return Ok(false);
        }
        broker.publish(Route::Jobs, &request, headers).await?;
    } else {
        return Ok(false);
    }
    Ok(true)
}

async fn reopen(pool: &Pool, job_id: Uuid, task_id: &str) -> Result<bool, StoreError> {
    let ok = ledger::reopen_task(pool, job_id, task_id).await?;
    if !ok {
        eprintln!(
            "left parked: task {task_id} of job {job_id} (job cancelled, succeeded, or its stream is held by another job)"
        );
    }
    Ok(ok)
}
