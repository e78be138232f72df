//! The fetcher: stateless workers that run `FetchTask`s through their connector.
//!
//! For each task: drop it if its job was cancelled (learned at once from the control
//! fanout); run the connector; publish one `RecordBatch` part per destination table to
//! `load` (the last part carries `task_complete`, the rejects, the children and the cursor),
//! then the child tasks to `fetch` (except once-per-resource children, which the loader
//! publishes after recording them: `sluice_contracts::Once`), each publish confirmed; only then ack the task. A crash
//! anywhere before the ack makes RabbitMQ deliver the task again, and the loader skips parts
//! it already has, so the effect is exactly once.
//!
//! Errors: transient ones (timeouts, 5xx, 429 past the in-process wait) go through the retry
//! tiers (5 s, 30 s, 5 min, 5 min); permanent ones and exhausted retries park the task with
//! its reason and send a `TaskOutcome failed` so the ledger ends the job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use sluice_broker::{Broker, Headers, RetryTier, Route};
use sluice_connectors::{ConnectorContext, ConnectorError, FetchOutput, Registry};
use sluice_contracts::{
    ControlAction, ControlMessage, FetchTask, MESSAGE_VERSION, Message, Outcome, RecordBatch,
    Settings, TaskOutcome, ids,
};
use sluice_service::health::Health;
use sluice_service::{AdminServer, metrics};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};
use uuid::Uuid;

/// How often the fetcher re-counts the live fetchers sharing the rate budgets.
const REPLICA_POLL: Duration = Duration::from_secs(5);

/// How long a cancelled job is remembered.
const CANCEL_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// The `sluice-fetcher` program: loads the configuration, installs logging and runs until
/// Ctrl-C or SIGTERM.
///
/// # Errors
/// Invalid configuration (naming the setting) or an unrecoverable start-up problem.
pub async fn main() -> anyhow::Result<()> {
    let settings = sluice_contracts::Settings::load()?;
    sluice_service::init_tracing(&settings.log);
    run(settings, sluice_service::shutdown_signal()).await
}

/// Runs the fetcher until `shutdown` is cancelled, reconnecting with backoff.
///
/// # Errors
/// Only for unrecoverable start-up problems (the admin port cannot be bound).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Caps shared by every fetcher (an API's concurrent requests) take their permits from
    // RabbitMQ, installed per connection below.
    let context = ConnectorContext::shared();
    let registry = Registry::from_settings_with(&settings, context.clone())?;
    run_with(settings, registry, context, shutdown).await
}

/// [`run`] with an explicit connector registry (tests add fakes).
///
/// # Errors
/// See [`run`].
pub async fn run_with(
    settings: Settings,
    registry: Registry,
    context: ConnectorContext,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let health = Health::new();
    // The fetcher never touches Postgres: readiness is the broker alone.
    health.set_database(true);
    AdminServer::start(
        &settings.fetcher.admin_bind,
        health.check(),
        shutdown.clone(),
    )
    .await?;
    let cancelled = Cancelled::default();
    sluice_service::supervise("fetcher", &health, &shutdown, || {
        session(
            &settings, &registry, &context, &health, &cancelled, &shutdown,
        )
    })
    .await;
    Ok(())
}

/// Jobs known to be cancelled.
#[derive(Clone, Default)]
struct Cancelled(Arc<Mutex<HashMap<Uuid, Instant>>>);

impl Cancelled {
    fn add(&self, job: Uuid) {
        let mut map = self.0.lock().expect("cancel set");
        map.retain(|_, at| at.elapsed() < CANCEL_MEMORY);
        map.insert(job, Instant::now());
    }
    fn contains(&self, job: &Uuid) -> bool {
        self.0.lock().expect("cancel set").contains_key(job)
    }
    async fn wait_for(&self, job: Uuid) {
        loop {
            if self.contains(&job) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn session(
    settings: &Settings,
    registry: &Registry,
    context: &ConnectorContext,
    health: &Arc<Health>,
    cancelled: &Cancelled,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let broker = Arc::new(Broker::connect(&settings.amqp, "sluice-fetcher").await?);
    health.set_broker(true);
    info!(prefix = %settings.amqp.prefix, concurrency = settings.fetcher.concurrency, "fetcher connected");

    let mut control = broker.consume_control("sluice-fetcher-control").await?;
    let listener = {
        let cancelled = cancelled.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = control.next().await {
                match ControlMessage::decode(&delivery.data) {
                    Ok(ControlMessage {
                        job_id,
                        action: ControlAction::Cancel,
                        ..
                    }) => {
                        info!(%job_id, "job cancelled: dropping its tasks");
                        cancelled.add(job_id);
                    }
                    Err(e) => warn!(error = %e, "ignoring an undecodable control message"),
                }
            }
        })
    };

    // Rate budgets are divided among the fetchers that share an account: keep the count
    // of live fetchers (consumers of the fetch queue) current for the connectors.
    let replicas = {
        let broker = broker.clone();
        let count = context.fetcher_replicas.clone();
        let queue = broker.topology().queue(Route::Fetch);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REPLICA_POLL).await;
                match broker.consumer_count(&queue).await {
                    Ok(n) => count.store(n.max(1), std::sync::atomic::Ordering::Relaxed),
                    Err(e) => warn!(error = %e, "could not count fetcher replicas"),
                }
            }
        })
    };
    context
        .permits
        .install(Some(Arc::new(BrokerPermits(broker.clone()))));
    let consumer = broker
        .consume(
            &broker.topology().queue(Route::Fetch),
            settings.fetcher.concurrency,
            "sluice-fetcher",
        )
        .await?;
    let ctx = Ctx {
        broker: broker.clone(),
        registry: registry.clone(),
        cancelled: cancelled.clone(),
    };
    let limit = usize::from(settings.fetcher.concurrency);
    let result = sluice_broker::drive(&broker, consumer, limit, shutdown, |d| {
        ctx.clone().handle(d)
    })
    .await;
    listener.abort();
    replicas.abort();
    context.permits.install(None);
    broker.close().await;
    Ok(result?)
}

/// The connectors' shared permits, as RabbitMQ tokens (`sluice_broker::permits`).
struct BrokerPermits(Arc<Broker>);

#[async_trait::async_trait]
impl sluice_connectors::SharedPermits for BrokerPermits {
    async fn acquire(&self, name: &str, n: u32) -> anyhow::Result<Box<dyn Send>> {
        let permit = sluice_broker::SharedPermits::new(&self.0)
            .acquire(name, n)
            .await?;
        Ok(Box::new(permit))
    }
}

#[derive(Clone)]
struct Ctx {
    broker: Arc<Broker>,
    registry: Registry,
    cancelled: Cancelled,
}

/// What to do with a delivery after handling it.
enum Settle {
    Ack,
    /// Could not publish the results: let RabbitMQ deliver it again after a pause.
    Requeue,
}

impl Ctx {
    async fn handle(self, delivery: Delivery) {
        let settle = match FetchTask::decode(&delivery.data) {
            Ok(task) => {
                let span = info_span!("fetch", job_id = %task.job_id, task_id = %task.task_id, stream = %task.stream, attempt = task.attempt);
                self.run_task(task, &delivery.data).instrument(span).await
            }
            Err(e) => {
                error!(error = %e, "parking an undecodable fetch task");
                match self
                    .broker
                    .park(
                        Route::Fetch,
                        &delivery.data,
                        FetchTask::KIND,
                        &e.to_string(),
                        1,
                    )
                    .await
                {
                    Ok(()) => Settle::Ack,
                    Err(_) => Settle::Requeue,
                }
            }
        };
        match settle {
            Settle::Ack => {
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            Settle::Requeue => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
            }
        }
    }

    async fn run_task(&self, task: FetchTask, body: &[u8]) -> Settle {
        if self.cancelled.contains(&task.job_id) {
            info!("task of a cancelled job dropped");
            metrics::counter!("sluice_fetcher_tasks_total", "outcome" => "cancelled").increment(1);
            return Settle::Ack;
        }
        let Some(connector) = self.registry.get(&task.connector) else {
            let error = format!("unknown connector {:?}", task.connector);
            return self.fail(&task, body, &error).await;
        };
        let started = Instant::now();
        let result = tokio::select! {
            r = connector.fetch(&task) => r,
            _ = self.cancelled.wait_for(task.job_id) => {
                info!("job cancelled while fetching: task dropped");
                metrics::counter!("sluice_fetcher_tasks_total", "outcome" => "cancelled").increment(1);
                return Settle::Ack;
            }
        };
        metrics::histogram!("sluice_fetcher_task_seconds", "connector" => task.connector.clone())
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(output) => match self.ship(&task, output).await {
                Ok(parts) => {
                    info!(
                        parts,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "task fetched"
                    );
                    metrics::counter!("sluice_fetcher_tasks_total", "outcome" => "done")
                        .increment(1);
                    Settle::Ack
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "could not publish the task's batches; will retry");
                    Settle::Requeue
                }
            },
            Err(e @ ConnectorError::Transient(_)) => match RetryTier::for_attempt(task.attempt) {
                Some(tier) => {
                    warn!(error = %e, tier = tier.name(), "transient error; retrying later");
                    metrics::counter!("sluice_fetcher_tasks_total", "outcome" => "retried")
                        .increment(1);
                    let mut retry = task.clone();
                    retry.attempt += 1;
                    match self
                        .broker
                        .publish_retry(
                            Route::Fetch,
                            &retry.encode(),
                            FetchTask::KIND,
                            tier,
                            Headers::default().traced(task.job_id),
                        )
                        .await
                    {
                        Ok(()) => Settle::Ack,
                        Err(_) => Settle::Requeue,
                    }
                }
                None => {
                    let error = format!("gave up after {} attempts: {e}", task.attempt);
                    self.fail(&task, body, &error).await
                }
            },
            Err(e) => self.fail(&task, body, &e.to_string()).await,
        }
    }

    /// Parks the task and tells the loader it failed.
    async fn fail(&self, task: &FetchTask, body: &[u8], error: &str) -> Settle {
        error!(%error, "task failed; parking it");
        metrics::counter!("sluice_fetcher_tasks_total", "outcome" => "failed").increment(1);
        let outcome = TaskOutcome {
            v: MESSAGE_VERSION,
            job_id: task.job_id,
            task_id: task.task_id.clone(),
            outcome: Outcome::Failed,
            error: error.to_string(),
        };
        let parked = self
            .broker
            .park(Route::Fetch, body, FetchTask::KIND, error, task.attempt)
            .await;
        let told = self
            .broker
            .publish(
                Route::Load,
                &outcome,
                Headers::default().traced(task.job_id),
            )
            .await;
        if parked.is_ok() && told.is_ok() {
            Settle::Ack
        } else {
            Settle::Requeue
        }
    }

    /// Publishes the output as batch parts, then the children. Returns the number of parts.
    async fn ship(&self, task: &FetchTask, output: FetchOutput) -> anyhow::Result<usize> {
        let children: Vec<FetchTask> = output
            .children
            .into_iter()
            .enumerate()
            .map(|(i, c)| FetchTask {
                v: MESSAGE_VERSION,
                // A once-per-resource child is named by its job and key, whichever task
                // found it.
                task_id: match &c.once {
                    Some(once) => ids::keyed_task_id(task.job_id, &once.key),
                    None => ids::child_task_id(&task.task_id, i),
                },
                job_id: task.job_id,
                connector: task.connector.clone(),
                stream: c.stream,
                account: task.account.clone(),
                kind: c.kind,
                attempt: 1,
                params: task.params.clone(),
                once: c.once,
            })
            .collect();
        let batches = to_batches(
            task,
            output.tables,
            output.rejected,
            children.clone(),
            output.cursor_max,
        );
        let parts = batches.len();
        let headers = Headers::default().traced(task.job_id);
        for batch in &batches {
            self.broker
                .publish(Route::Load, batch, headers.clone())
                .await?;
        }
        // Once-per-resource children are published by the loader once it has recorded
        // them (another fetcher may have found the same resource, or it may be fresh).
        for child in children.iter().filter(|c| c.once.is_none()) {
            self.broker
                .publish(Route::Fetch, child, headers.clone())
                .await?;
        }
        Ok(parts)
    }
}

/// Turns a task's output into `RecordBatch` parts: one per table, numbered from 0; the last
/// part carries `task_complete`, the rejects, the children and the cursor. An output without
/// rows still yields one (empty) part, so the loader learns that the task is done.
pub fn to_batches(
    task: &FetchTask,
    tables: Vec<sluice_connectors::TableRows>,
    rejected: Vec<sluice_contracts::RejectedRecord>,
    children: Vec<FetchTask>,
    cursor_max: Option<String>,
) -> Vec<RecordBatch> {
    let mut batches: Vec<RecordBatch> = tables
        .into_iter()
        .enumerate()
        .map(|(i, t)| RecordBatch {
            v: MESSAGE_VERSION,
            job_id: task.job_id,
            task_id: task.task_id.clone(),
            stream: task.stream.clone(),
            part: i as u32,
            task_complete: false,
            table: t.table,
            columns: t.columns,
            rows: t.rows,
            merge: t.merge,
            children: Vec::new(),
            cursor_max: None,
            rejected: Vec::new(),
        })
        .collect();
    if batches.is_empty() {
        batches.push(RecordBatch {
            v: MESSAGE_VERSION,
            job_id: task.job_id,
            task_id: task.task_id.clone(),
            stream: task.stream.clone(),
            part: 0,
            task_complete: false,
            table: String::new(),
            columns: Vec::new(),
            rows: Vec::new(),
            merge: Default::default(),
            children: Vec::new(),
            cursor_max: None,
            rejected: Vec::new(),
        });
    }
    let last = batches.last_mut().expect("at least one part");
    last.task_complete = true;
    last.rejected = rejected;
    last.children = children;
    last.cursor_max = cursor_max;
    batches
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sluice_connectors::TableRows;
    use sluice_contracts::{PageRef, RejectedRecord, TaskKind};

    fn task() -> FetchTask {
        FetchTask {
            v: 1,
            task_id: "t1".into(),
            job_id: Uuid::nil(),
            connector: "sailthru".into(),
            stream: "message_blast".into(),
            account: "default".into(),
            kind: TaskKind::Page(PageRef::default()),
            attempt: 1,
            params: serde_json::Value::Null,
            once: None,
        }
    }

    #[test]
    fn last_part_carries_completion_rejects_and_cursor() {
        let tables = vec![
            TableRows {
                table: "s.a".into(),
                ..Default::default()
            },
            TableRows {
                table: "s.b".into(),
                ..Default::default()
            },
        ];
        let rejected = vec![RejectedRecord {
            source: "x line 3".into(),
            table: None,
            error: "bad".into(),
            raw: serde_json::Value::Null,
        }];
        let parts = to_batches(&task(), tables, rejected, vec![], Some("2016-04-01".into()));
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].part, parts[0].task_complete), (0, false));
        assert_eq!((parts[1].part, parts[1].task_complete), (1, true));
        assert!(parts[0].rejected.is_empty());
        assert_eq!(parts[1].rejected.len(), 1);
        assert_eq!(parts[1].cursor_max.as_deref(), Some("2016-04-01"));
    }

    #[test]
    fn empty_output_still_completes_the_task() {
        let parts = to_batches(&task(), vec![], vec![], vec![], None);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].task_complete && parts[0].table.is_empty());
    }
}
