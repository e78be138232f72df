//! The planner: job intake, stream locks, splitting jobs into tasks, and the task outbox.
//!
//! For each `JobRequest` on the `jobs` queue it records the job, takes the stream lock (one
//! active job per connector/account/stream), asks the connector for the plan, writes the
//! tasks in one transaction and publishes them. Tasks are an outbox: a task is marked
//! published only after its publish is confirmed, and a background loop re-publishes any
//! recorded task that is not (a crash between commit and publish loses nothing).
//!
//! [`sync_api`] serves the commercetools–Klaviyo plugin's HTTP API on top of that intake.
//! Beside it, [`schedules`] fires the stored schedules' slots as job requests.

pub mod sync_api;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use sluice_broker::{Broker, Headers, Route};
use sluice_connectors::{ConnectorError, JobSpec, Registry};
use sluice_contracts::{JobRequest, Message, Settings, ids};
use sluice_destinations::DestinationConfig;
use sluice_service::health::Health;
use sluice_service::{AdminServer, Backoff, metrics};
use sluice_store::Pool;
use sluice_store::ledger::{self, NewTask};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

pub mod schedules;
pub use schedules::{Clock, ManualClock};

/// Attempts at planning a job whose source answers with transient errors.
const PLAN_ATTEMPTS: u32 = 6;

/// How often the outbox loop looks for unpublished tasks.
const OUTBOX_INTERVAL: Duration = Duration::from_secs(2);

/// How often the planner samples the queues' depths for `sluice_queue_messages`.
const QUEUE_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Counts a job request in `sluice_planner_jobs_total`. `connector` must be a connector the
/// registry knows (a request naming anything else is counted as `unknown`, so a stray name
/// cannot add series).
fn count_job(connector: &str, outcome: &'static str) {
    metrics::counter!("sluice_planner_jobs_total", "connector" => connector.to_string(), "outcome" => outcome)
        .increment(1);
}

/// Samples the depth and consumers of every work queue and of the parking lot, for
/// `sluice_queue_messages` and `sluice_queue_consumers`, so dashboards and alerts need no
/// access to RabbitMQ's management API (with several planners, each reports the same
/// numbers: aggregate with `max`).
async fn sample_queues(broker: Arc<Broker>, stop: CancellationToken) {
    let topology = broker.topology();
    let queues: Vec<(&'static str, String)> = Route::ALL
        .iter()
        .map(|r| (r.key(), topology.queue(*r)))
        .chain([("parked", topology.parked())])
        .collect();
    loop {
        for (label, queue) in &queues {
            match broker.queue_counts(queue).await {
                Ok((messages, consumers)) => {
                    metrics::gauge!("sluice_queue_messages", "queue" => *label)
                        .set(f64::from(messages));
                    metrics::gauge!("sluice_queue_consumers", "queue" => *label)
                        .set(f64::from(consumers));
                }
                Err(e) => warn!(error = %e, "could not sample the queue depth"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(QUEUE_SAMPLE_INTERVAL) => {}
            _ = stop.cancelled() => break,
        }
    }
}

/// The `sluice-planner` program: loads the configuration, installs logging and runs until
/// Ctrl-C or SIGTERM.
///
/// # Errors
/// Invalid configuration (naming the setting) or an unrecoverable start-up problem.
pub async fn main() -> anyhow::Result<()> {
    let settings = sluice_contracts::Settings::load()?;
    let _telemetry = sluice_service::init_tracing(&settings, "sluice-planner");
    run(settings, sluice_service::shutdown_signal()).await
}

/// Runs the planner until `shutdown` is cancelled, reconnecting to RabbitMQ and Postgres
/// with backoff when they go away.
///
/// # Errors
/// Only for unrecoverable start-up problems (the admin port cannot be bound).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    // A connector whose settings cannot be read is an operator's mistake: refuse to start,
    // naming the key.
    let registry = Registry::from_settings(&settings)?;
    run_with(settings, registry, shutdown).await
}

/// [`run`] with an explicit connector registry (tests add fakes).
///
/// # Errors
/// See [`run`].
pub async fn run_with(
    settings: Settings,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_clock(settings, registry, Clock::system(), shutdown).await
}

/// [`run_with`] with the clock the schedules are fired by (tests move a [`ManualClock`]).
///
/// # Errors
/// See [`run`].
pub async fn run_with_clock(
    settings: Settings,
    registry: Registry,
    clock: Clock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let health = Health::new();
    AdminServer::start(
        "planner",
        &settings.planner.admin_bind,
        health.check(),
        shutdown.clone(),
    )
    .await?;
    let Some(pool) = sluice_service::retry("connecting to Postgres", &shutdown, || {
        sluice_store::connect(&settings.database)
    })
    .await
    else {
        return Ok(());
    };
    let broker_slot = sync_api::BrokerSlot::default();
    sync_api::start(
        &settings,
        pool.clone(),
        broker_slot.clone(),
        shutdown.clone(),
    )
    .await?;
    sluice_service::supervise("planner", &health, &shutdown, || {
        session(
            &settings,
            &registry,
            &pool,
            &health,
            &broker_slot,
            &clock,
            &shutdown,
        )
    })
    .await;
    Ok(())
}

async fn session(
    settings: &Settings,
    registry: &Registry,
    pool: &Pool,
    health: &Arc<Health>,
    broker_slot: &sync_api::BrokerSlot,
    clock: &Clock,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    sluice_store::migrate(pool).await?;
    health.set_database(true);
    let broker = Arc::new(Broker::connect(&settings.amqp, "sluice-planner").await?);
    health.set_broker(true);
    *broker_slot.write().unwrap_or_else(|p| p.into_inner()) = Some(broker.clone());
    info!(prefix = %settings.amqp.prefix, "planner connected");

    let outbox = {
        let broker = broker.clone();
        let pool = pool.clone();
        let health = health.clone();
        let stop = shutdown.child_token();
        let guard = stop.clone().drop_guard();
        tokio::spawn(async move {
            loop {
                match publish_outbox(&broker, &pool, None).await {
                    Ok(n) if n > 0 => info!(tasks = n, "outbox: published tasks"),
                    Ok(_) => {}
                    Err(e) => {
                        health.set_database(false);
                        warn!(error = %format!("{e:#}"), "outbox: publishing failed");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(OUTBOX_INTERVAL) => {}
                    _ = stop.cancelled() => break,
                }
            }
        });
        guard
    };

    let sampler = {
        let stop = shutdown.child_token();
        tokio::spawn(sample_queues(broker.clone(), stop.clone()));
        stop.drop_guard()
    };

    let schedules = schedules::spawn(
        broker.clone(),
        pool.clone(),
        clock.clone(),
        shutdown.child_token(),
    );

    let consumer = broker
        .consume(
            &broker.topology().queue(Route::Jobs),
            settings.planner.prefetch,
            "sluice-planner",
        )
        .await?;
    // The destinations this deployment knows, by name: a job naming another fails at once
    // instead of parking its every part at the loader.
    let destinations: Arc<BTreeMap<String, DestinationConfig>> =
        Arc::new(DestinationConfig::all(settings)?);
    let ctx = Ctx {
        broker: broker.clone(),
        pool: pool.clone(),
        registry: registry.clone(),
        destinations,
        health: health.clone(),
        shutdown: shutdown.clone(),
    };
    let limit = usize::from(settings.planner.prefetch);
    let result = sluice_broker::drive(&broker, consumer, limit, shutdown, |d| {
        ctx.clone().handle(d)
    })
    .await;
    drop(outbox);
    drop(sampler);
    drop(schedules);
    broker_slot
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    broker.close().await;
    Ok(result?)
}

#[derive(Clone)]
struct Ctx {
    broker: Arc<Broker>,
    pool: Pool,
    registry: Registry,
    destinations: Arc<BTreeMap<String, DestinationConfig>>,
    health: Arc<Health>,
    shutdown: CancellationToken,
}

impl Ctx {
    async fn handle(self, delivery: Delivery) {
        let request = match JobRequest::decode(&delivery.data) {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "parking an undecodable job request");
                let parked = self
                    .broker
                    .park(
                        Route::Jobs,
                        &delivery.data,
                        JobRequest::KIND,
                        &e.to_string(),
                        1,
                    )
                    .await;
                if parked.is_ok() {
                    sluice_broker::settle(&delivery, true).await;
                }
                return;
            }
        };
        let span = info_span!("plan", otel.kind = "consumer", job_id = %request.job_id, connector = %request.connector, stream = %request.stream, tasks = tracing::field::Empty);
        sluice_broker::follow(&span, &delivery);
        // `Err` is a database, broker or source hiccup: retry in place with backoff rather
        // than requeueing, which would count against the queue's delivery limit.
        let mut backoff = Backoff::default();
        loop {
            match self.plan_job(&request).instrument(span.clone()).await {
                Ok(()) => {
                    self.health.set_database(true);
                    sluice_broker::settle(&delivery, true).await;
                    return;
                }
                Err(e) => {
                    self.health.set_database(false);
                    span.in_scope(
                        || warn!(error = %format!("{e:#}"), "planning interrupted; retrying"),
                    );
                    if self.shutdown.is_cancelled() || !self.broker.is_healthy() {
                        sluice_broker::settle(&delivery, false).await;
                        return;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Plans one job. `Err` means "retry later"; every permanent problem ends the job as
    /// failed with a message and returns `Ok`.
    async fn plan_job(&self, req: &JobRequest) -> anyhow::Result<()> {
        let state = ledger::insert_job(&**self.pool.get().await?, req).await?;
        if state.is_terminal() {
            info!(%state, "job already ended; nothing to do");
            return Ok(());
        }
        if state == ledger::JobState::Running {
            // Redelivered after planning committed: only the publishing may be missing.
            publish_outbox(&self.broker, &self.pool, Some(req.job_id)).await?;
            return Ok(());
        }
        let Some(connector) = self.registry.get(&req.connector) else {
            let msg = format!(
                "unknown connector {:?}; this build knows: {}",
                req.connector,
                self.registry.names().join(", ")
            );
            ledger::fail_job(&self.pool, req.job_id, &msg).await?;
            warn!(%msg, "job refused");
            count_job("unknown", "refused");
            return Ok(());
        };

        let Some(destination) = self.destinations.get(&req.destination) else {
            let msg = format!(
                "unknown destination {:?}: configure it with SLUICE__DESTINATIONS__{}__KIND (configured: {})",
                req.destination,
                req.destination.to_uppercase(),
                self.destinations
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            ledger::fail_job(&self.pool, req.job_id, &msg).await?;
            warn!(%msg, "job refused");
            count_job(&req.connector, "refused");
            return Ok(());
        };
        let terms = match destination.job_terms(&req.connector, &req.stream) {
            Ok(terms) => terms,
            Err(msg) => {
                ledger::fail_job(&self.pool, req.job_id, &msg).await?;
                warn!(%msg, "job refused");
                count_job(&req.connector, "refused");
                return Ok(());
            }
        };
        for (connector, stream) in &terms.requires {
            let done = ledger::ever_succeeded(
                &**self.pool.get().await?,
                connector,
                &req.account,
                stream,
                &req.destination,
            )
            .await?;
            if !done {
                let msg = format!(
                    "{}/{} into {} needs {connector}/{stream} pushed there first (no job of it \
                     has succeeded for account {:?}): run `sluicectl sync {connector} {stream} \
                     --destination {}` and then this one",
                    req.connector, req.stream, req.destination, req.account, req.destination
                );
                ledger::fail_job(&self.pool, req.job_id, &msg).await?;
                warn!(%msg, "job refused");
                count_job(&req.connector, "refused");
                return Ok(());
            }
        }

        {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            if let Some(holder) = ledger::acquire_stream_lock(
                &tx,
                &req.connector,
                &req.account,
                &req.stream,
                &req.destination,
                req.job_id,
            )
            .await?
            {
                drop(tx);
                let msg = format!(
                    "stream {}/{}/{} into {} already has a running job {holder}; wait for it to end or cancel it with `sluicectl jobs cancel {holder}`",
                    req.connector, req.account, req.stream, req.destination
                );
                ledger::fail_job(&self.pool, req.job_id, &msg).await?;
                warn!(%msg, "job refused");
                count_job(&req.connector, "refused");
                return Ok(());
            }
            tx.commit().await?;
        }

        let bookmark = ledger::bookmark(
            &**self.pool.get().await?,
            &req.connector,
            &req.account,
            &req.stream,
            &req.destination,
        )
        .await?;
        let mut params = req.params.clone();
        if !terms.params.is_empty() {
            match &mut params {
                serde_json::Value::Object(map) => map.extend(terms.params.clone()),
                serde_json::Value::Null => params = serde_json::Value::Object(terms.params.clone()),
                // Not an object: the connector refuses it, naming what it expected.
                _ => {}
            }
        }
        let spec = JobSpec {
            job_id: req.job_id,
            stream: req.stream.clone(),
            account: req.account.clone(),
            params,
            mode: req.mode,
            bookmark,
        };
        // Source hiccups while planning are retried a few times; a source that stays away
        // fails the job with the last error rather than holding the stream forever.
        let mut backoff = Backoff::default();
        let mut attempt = 1;
        let plan = loop {
            match connector.plan(&spec).await {
                Ok(plan) => break plan,
                Err(ConnectorError::Transient(e)) if attempt < PLAN_ATTEMPTS => {
                    warn!(error = %format!("{e:#}"), attempt, "transient error while planning; retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => {
                    let msg = match e {
                        ConnectorError::Transient(e) => {
                            format!("source unavailable after {attempt} attempts: {e:#}")
                        }
                        other => other.to_string(),
                    };
                    ledger::fail_job(&self.pool, req.job_id, &msg).await?;
                    warn!(error = %msg, "job failed during planning");
                    count_job(&req.connector, "failed");
                    return Ok(());
                }
            }
        };
        for w in &plan.warnings {
            warn!(warning = %w, "planner warning");
        }
        let tasks: Vec<NewTask> = plan
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| NewTask {
                task_id: ids::root_task_id(req.job_id, i),
                stream: t.stream.clone(),
                kind: serde_json::to_value(&t.kind).expect("task kinds serialise"),
            })
            .collect();
        {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            match ledger::lock_job(&tx, req.job_id).await? {
                Some(ledger::JobState::Queued) => {}
                other => {
                    info!(state = ?other, "job changed state while planning (cancelled?); dropping the plan");
                    return Ok(());
                }
            }
            ledger::record_plan(&tx, req.job_id, &plan.params, &tasks, &plan.warnings).await?;
            ledger::insert_rejects(&*tx, req.job_id, None, &plan.rejected).await?;
            tx.commit().await?;
        }
        tracing::Span::current().record("tasks", tasks.len());
        info!(
            tasks = tasks.len(),
            warnings = plan.warnings.len(),
            rejected = plan.rejected.len(),
            "job planned"
        );
        count_job(&req.connector, "planned");
        if tasks.is_empty() {
            ledger::finish_if_idle(&self.pool, req.job_id).await?;
        }
        publish_outbox(&self.broker, &self.pool, Some(req.job_id)).await?;
        Ok(())
    }
}

/// Publishes recorded but unpublished tasks (of one job, or of every running job):
/// [`ledger::publish_outbox`] through this planner's broker. Returns how many.
///
/// # Errors
/// Database or broker errors; tasks not marked are published again later.
pub async fn publish_outbox(
    broker: &Broker,
    pool: &Pool,
    job_id: Option<uuid::Uuid>,
) -> anyhow::Result<usize> {
    ledger::publish_outbox(pool, job_id, |task| async move {
        let job_id = task.job_id;
        broker
            .publish(Route::Fetch, &task, Headers::default().traced(job_id))
            .await?;
        Ok(())
    })
    .await
}
