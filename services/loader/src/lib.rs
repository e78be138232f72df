//! The loader: the only writer of destination tables and the keeper of the ledger.
//!
//! It consumes the `load` queue (`RecordBatch` parts and `TaskOutcome`s) and the
//! `parked.notify` queue (every message that reached the parking lot). Each part goes to
//! its job's destination (`sluice.jobs.destination`, built from the `destinations`
//! settings by `sluice_destinations`) through [`sluice_store::ledger::apply_batches`]:
//! skip a part seen before, write its rows (in the ledger's transaction for the ledger's
//! own database, else in the destination's, idempotently, first), store rejects, record
//! children, finish the task and — when it was the last pending one — the job. The
//! delivery is acked only after the ledger commits.
//!
//! Parts already received when a transaction slot frees up (`loader.group_parts`,
//! `loader.group_bytes`) are applied together, per destination, with the same effect on
//! each part and one commit for all; every delivery of the group is acked after that
//! commit. When the group cannot be applied as a whole, its parts are applied one at a
//! time, so a part that cannot be loaded is parked alone.
//!
//! Errors: a lost connection, deadlock or serialization failure is retried in place with
//! backoff; a batch that cannot fit its table is parked and its task marked failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use sluice_broker::{
    ATTEMPTS_HEADER, Broker, ERROR_HEADER, Grouping, Headers, Route, first_death, header_str,
};
use sluice_contracts::{
    ControlMessage, FetchTask, JobRequest, Message, Outcome, RawRecordBatch, RecordBatch, Settings,
    TaskOutcome,
};
use sluice_destinations::{Destination, Destinations};
use sluice_service::health::Health;
use sluice_service::{AdminServer, Backoff, metrics};
use sluice_store::ledger::BatchApplied;
use sluice_store::load::Catalog;
use sluice_store::{Pool, StoreError, ledger};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};
use uuid::Uuid;

/// The `sluice-loader` program: loads the configuration, installs logging and runs until
/// Ctrl-C or SIGTERM.
///
/// # Errors
/// Invalid configuration (naming the setting) or an unrecoverable start-up problem.
pub async fn main() -> anyhow::Result<()> {
    let settings = sluice_contracts::Settings::load()?;
    let _telemetry = sluice_service::init_tracing(&settings, "sluice-loader");
    run(settings, sluice_service::shutdown_signal()).await
}

/// Runs the loader until `shutdown` is cancelled, reconnecting with backoff.
///
/// # Errors
/// Only for unrecoverable start-up problems (the admin port cannot be bound).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let health = Health::new();
    AdminServer::start(
        "loader",
        &settings.loader.admin_bind,
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
    let catalog = Catalog::default();
    // A destination that cannot be configured is an operator's mistake to fix before
    // anything loads: refuse to start, naming the setting.
    let destinations = Destinations::build(&settings, &pool, &catalog)?;
    info!(destinations = ?destinations.names(), "destinations configured");
    sluice_service::supervise("loader", &health, &shutdown, || {
        session(&settings, &pool, &destinations, &health, &shutdown)
    })
    .await;
    Ok(())
}

async fn session(
    settings: &Settings,
    pool: &Pool,
    destinations: &Destinations,
    health: &Arc<Health>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    sluice_store::migrate(pool).await?;
    health.set_database(true);
    let broker = Arc::new(Broker::connect(&settings.amqp, "sluice-loader").await?);
    health.set_broker(true);
    info!(prefix = %settings.amqp.prefix, concurrency = settings.loader.concurrency, "loader connected");
    let ctx = Ctx {
        broker: broker.clone(),
        pool: pool.clone(),
        destinations: destinations.clone(),
        job_destinations: JobDestinations::default(),
        health: health.clone(),
        shutdown: shutdown.clone(),
        echoed: Echoed::default(),
    };
    let group_parts = settings.loader.group_parts.max(1);
    let load = broker
        .consume(
            &broker.topology().queue(Route::Load),
            settings.loader.concurrency.saturating_mul(group_parts),
            "sluice-loader",
        )
        .await?;
    let parked = broker
        .consume(
            &broker.topology().parked_notify(),
            4,
            "sluice-loader-parked",
        )
        .await?;
    // Account-wide rate budgets (Klaviyo) are divided among the loaders: keep the count of
    // live loaders (consumers of the load queue) current for the destinations.
    let replicas = {
        let (broker, count) = (broker.clone(), destinations.replicas());
        let queue = broker.topology().queue(Route::Load);
        tokio::spawn(async move {
            loop {
                match broker.consumer_count(&queue).await {
                    Ok(n) => count.store(n.max(1), std::sync::atomic::Ordering::Relaxed),
                    Err(e) => warn!(error = %e, "could not count loader replicas"),
                }
                tokio::time::sleep(REPLICA_POLL).await;
            }
        })
    };
    let limit = usize::from(settings.loader.concurrency);
    let (a, b) = tokio::join!(
        sluice_broker::drive_groups(
            &broker,
            load,
            limit,
            Grouping {
                max_deliveries: usize::from(group_parts),
                max_bytes: settings.loader.group_bytes as usize,
            },
            shutdown,
            |group| ctx.clone().handle_loads(group)
        ),
        sluice_broker::drive(&broker, parked, 1, shutdown, |d| ctx
            .clone()
            .handle_parked(d)),
    );
    replicas.abort();
    broker.close().await;
    a?;
    b?;
    Ok(())
}

#[derive(Clone)]
struct Ctx {
    broker: Arc<Broker>,
    pool: Pool,
    destinations: Destinations,
    job_destinations: JobDestinations,
    health: Arc<Health>,
    shutdown: CancellationToken,
    echoed: Echoed,
}

/// The parts of one delivery group bound for one destination.
struct DestinationGroup {
    destination: Arc<dyn Destination>,
    deliveries: Vec<Delivery>,
    batches: Vec<RawRecordBatch>,
}

/// The destination and connector of each job seen lately (neither ever changes).
#[derive(Clone, Default)]
struct JobDestinations(Arc<std::sync::Mutex<std::collections::HashMap<Uuid, (String, String)>>>);

impl JobDestinations {
    /// Jobs remembered at most; past that the map starts over (a lookup is one query).
    const MAX: usize = 10_000;

    /// The job's destination and connector.
    fn get(&self, job: Uuid) -> Option<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&job)
            .cloned()
    }

    fn insert(&self, job: Uuid, destination: String, connector: String) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(job, (destination, connector));
    }

    /// The job's connector for metric labels (`unknown` for a job not looked up, or one the
    /// ledger does not know).
    fn connector(&self, job: Uuid) -> String {
        self.get(job)
            .map_or_else(|| "unknown".to_string(), |(_, connector)| connector)
    }
}

/// How often the loader counts the live loaders (the load queue's consumers).
const REPLICA_POLL: Duration = Duration::from_secs(5);

/// How often at most the loader repeats the cancel of one job.
const CANCEL_ECHO_INTERVAL: Duration = Duration::from_secs(10);

/// When the loader last repeated each job's cancel.
#[derive(Clone, Default)]
struct Echoed(Arc<std::sync::Mutex<std::collections::HashMap<Uuid, Instant>>>);

impl Echoed {
    /// Whether `job`'s cancel is due to be repeated now (and if so, notes that it was).
    fn due(&self, job: Uuid) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, at| at.elapsed() < CANCEL_ECHO_INTERVAL);
        if map.contains_key(&job) {
            return false;
        }
        map.insert(job, Instant::now());
        true
    }
}

/// The span of loading one part: a child of the fetch span that published it, with the
/// messaging attributes of its delivery. `group`: parts in its transaction.
fn load_span(
    destination: &dyn Destination,
    delivery: &Delivery,
    batch: &RawRecordBatch,
    group: usize,
) -> tracing::Span {
    let span = info_span!(
        "load",
        otel.kind = "consumer",
        job_id = %batch.job_id,
        task_id = %batch.task_id,
        part = batch.part,
        table = %batch.table,
        rows = batch.rows.len(),
        task_complete = batch.task_complete,
        destination = destination.name(),
        group,
    );
    sluice_broker::follow(&span, delivery);
    span
}

/// Settles a delivery: ack on success, requeue when the database is away.
async fn settle(delivery: &Delivery, done: bool) {
    sluice_broker::settle(delivery, done).await;
}

impl Ctx {
    /// Runs `op`, retrying transient database errors in place (backoff capped at 30 s) until
    /// they pass or the service shuts down. Requeueing instead would count against the
    /// queue's delivery limit and turn a database outage into failed jobs.
    async fn with_retries<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = Backoff::default();
        let mut attempt = 0u32;
        loop {
            match op().await {
                Ok(v) => {
                    self.health.set_database(true);
                    return Ok(v);
                }
                Err(e) if e.is_transient() && !self.shutdown.is_cancelled() => {
                    attempt += 1;
                    // An outside destination's trouble (Klaviyo throttling or a 5xx) says
                    // nothing of the ledger's database: readiness stays as it is.
                    if matches!(e, StoreError::Destination { .. }) {
                        warn!(error = %e, attempt, "{what}: transient destination error; retrying");
                    } else {
                        self.health.set_database(false);
                        warn!(error = %e, attempt, "{what}: transient database error; retrying");
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Handles a group of load deliveries: task outcomes and undecodable messages one by
    /// one, the parts together when there are several.
    async fn handle_loads(self, group: Vec<Delivery>) {
        let mut deliveries: Vec<Delivery> = Vec::new();
        let mut batches: Vec<RawRecordBatch> = Vec::new();
        for delivery in group {
            let kind = delivery
                .properties
                .kind()
                .as_ref()
                .map(|k| k.as_str().to_string())
                .unwrap_or_default();
            if kind == TaskOutcome::KIND {
                let done = self.handle_outcome(&delivery).await;
                self.settle_after(&delivery, done).await;
                continue;
            }
            match RawRecordBatch::decode(&delivery.data) {
                Ok(batch) => {
                    deliveries.push(delivery);
                    batches.push(batch);
                }
                Err(e) => {
                    let done = self
                        .park_load(&delivery, RecordBatch::KIND, &e.to_string())
                        .await;
                    self.settle_after(&delivery, done).await;
                }
            }
        }
        // One group per destination: parts of different destinations share no transaction.
        let mut groups: Vec<DestinationGroup> = Vec::new();
        for (delivery, batch) in deliveries.into_iter().zip(batches) {
            let destination = match self.destination_of(batch.job_id).await {
                Ok(d) => d,
                Err(e) if e.is_transient() => {
                    warn!(error = %e, "database unavailable; the part will be redelivered");
                    self.settle_after(&delivery, false).await;
                    continue;
                }
                Err(e) => {
                    let done = self.refuse_batch(&delivery, &batch, &e.to_string()).await;
                    self.settle_after(&delivery, done).await;
                    continue;
                }
            };
            match groups
                .iter_mut()
                .find(|g| g.destination.name() == destination.name())
            {
                Some(group) => {
                    group.deliveries.push(delivery);
                    group.batches.push(batch);
                }
                None => groups.push(DestinationGroup {
                    destination,
                    deliveries: vec![delivery],
                    batches: vec![batch],
                }),
            }
        }
        for group in groups {
            self.load_into(&*group.destination, group.deliveries, group.batches)
                .await;
        }
    }

    /// The destination of `job` (cached). A job the ledger does not know is written to
    /// the default destination, where the ledger skips its part like any part of an
    /// unknown job.
    ///
    /// # Errors
    /// Database errors; a destination this loader has no settings for (permanent).
    async fn destination_of(&self, job: Uuid) -> Result<Arc<dyn Destination>, StoreError> {
        let name = match self.job_destinations.get(job) {
            Some((name, _)) => name,
            None => {
                let client = self.pool.get().await?;
                let (name, connector) = ledger::job_destination(&**client, job)
                    .await?
                    .unwrap_or_else(|| {
                        (
                            sluice_destinations::DEFAULT_DESTINATION.to_string(),
                            "unknown".to_string(),
                        )
                    });
                self.job_destinations.insert(job, name.clone(), connector);
                name
            }
        };
        self.destinations.get(&name)
    }

    /// Loads the parts of one destination: together when there are several, else (or when
    /// the group cannot be applied as a whole) one at a time.
    async fn load_into(
        &self,
        destination: &dyn Destination,
        deliveries: Vec<Delivery>,
        batches: Vec<RawRecordBatch>,
    ) {
        if batches.len() > 1 {
            // One span per part, opened before the transaction they share, each the child
            // of the fetch that published its part.
            let spans: Vec<tracing::Span> = deliveries
                .iter()
                .zip(&batches)
                .map(|(delivery, batch)| load_span(destination, delivery, batch, batches.len()))
                .collect();
            match self.apply_group(destination, &batches, &spans).await {
                Some(done) => {
                    for delivery in &deliveries {
                        settle(delivery, done).await;
                    }
                    return;
                }
                None => info!(
                    parts = batches.len(),
                    "applying the parts of the group one at a time"
                ),
            }
        }
        for (delivery, batch) in deliveries.into_iter().zip(batches) {
            let done = self.handle_batch(destination, &delivery, batch).await;
            self.settle_after(&delivery, done).await;
        }
    }

    /// Settles a delivery, pausing first when it goes back to the queue.
    async fn settle_after(&self, delivery: &Delivery, done: bool) {
        if !done {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        settle(delivery, done).await;
    }

    /// Applies several parts in one transaction. `Some(true)`: committed (ack them all);
    /// `Some(false)`: the database is away and the service is stopping (requeue them);
    /// `None`: the group failed as a whole, nothing was committed — apply the parts alone.
    async fn apply_group(
        &self,
        destination: &dyn Destination,
        batches: &[RawRecordBatch],
        spans: &[tracing::Span],
    ) -> Option<bool> {
        let started = Instant::now();
        let result = self
            .with_retries("load group", || {
                ledger::apply_batches(&self.pool, destination.write(), batches)
            })
            .await;
        match result {
            Ok(results) => {
                let seconds = started.elapsed().as_secs_f64();
                for ((batch, applied), span) in batches.iter().zip(results).zip(spans) {
                    self.note_applied(destination.name(), batch, &applied, batches.len())
                        .instrument(span.clone())
                        .await;
                }
                metrics::histogram!("sluice_loader_transaction_duration_seconds", "destination" => destination.name().to_string())
                    .record(seconds);
                Some(true)
            }
            Err(e) if e.is_transient() => {
                warn!(error = %e, "database unavailable; the parts will be redelivered");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some(false)
            }
            Err(e) => {
                warn!(error = %e, parts = batches.len(), "the group of parts cannot be loaded as a whole");
                None
            }
        }
    }

    /// Counts and logs a part the ledger has taken (`group`: parts in its transaction). A
    /// part skipped because its job ended may belong to a cancelled job: see
    /// [`Ctx::echo_cancel`].
    async fn note_applied(
        &self,
        destination: &str,
        batch: &RawRecordBatch,
        applied: &BatchApplied,
        group: usize,
    ) {
        let outcome = if applied.applied { "loaded" } else { "skipped" };
        metrics::counter!("sluice_loader_parts_total", "outcome" => outcome).increment(1);
        if applied.applied {
            let connector = self.job_destinations.connector(batch.job_id);
            let stream = sluice_contracts::telemetry::stream_label(&batch.stream);
            if !batch.table.is_empty() {
                metrics::counter!(
                    "sluice_loader_records_total",
                    "connector" => connector.clone(),
                    "stream" => stream.clone(),
                    "table" => batch.table.clone(),
                    "destination" => destination.to_string(),
                )
                .increment(applied.rows);
            }
            if applied.rejected > 0 {
                metrics::counter!(
                    "sluice_loader_records_rejected_total",
                    "connector" => connector,
                    "stream" => stream,
                    "destination" => destination.to_string(),
                )
                .increment(applied.rejected);
            }
            tracing::debug!(
                rows = applied.rows,
                rejected = applied.rejected,
                group,
                "part loaded"
            );
        } else {
            tracing::debug!("part skipped (seen before, or job ended)");
            self.echo_cancel(batch.job_id).await;
        }
        if applied.deferred > 0 {
            // Once-per-resource children recorded by this part: publish them now (the
            // planner's outbox loop would, a little later, if this fails or crashes).
            let published =
                ledger::publish_outbox(&self.pool, Some(batch.job_id), |task| async move {
                    let job_id = task.job_id;
                    self.broker
                        .publish(Route::Fetch, &task, Headers::default().traced(job_id))
                        .await?;
                    Ok(())
                })
                .await;
            if let Err(e) = published {
                warn!(error = %format!("{e:#}"), "could not publish the recorded children; the outbox loop will");
            }
        }
        if let Some(state) = &applied.job_finished {
            self.log_job_end(batch.job_id, *state).await;
        }
    }

    /// The job's last line: its state and the plugin's figures (objects, imported, errored,
    /// elapsed seconds) with the rejects by reason, so a sync's outcome is in the logs as
    /// the plugin's users expect it, besides `sluicectl jobs show` and `GET /sync/status`.
    async fn log_job_end(&self, job_id: Uuid, state: ledger::JobState) {
        let summary = match self.pool.get().await {
            Ok(client) => match ledger::job_summary(&**client, job_id).await {
                Ok(Some(job)) => ledger::sync_summary(&**client, &job).await.ok(),
                _ => None,
            },
            Err(_) => None,
        };
        // The `job.complete` span ends the job's trace (docs/operations.md, "Traces").
        let span = info_span!("job.complete", job_id = %job_id, state = %state);
        let _entered = span.enter();
        match summary {
            Some(s) => info!(
                %state,
                total_objects = s.total_objects,
                imported = s.imported,
                errored = s.errored,
                elapsed_seconds = s.elapsed_seconds,
                rejected_by_reason = %serde_json::to_string(&s.rejected_by_reason).unwrap_or_default(),
                "job finished"
            ),
            None => info!(%state, "job finished"),
        }
    }

    /// A part of a cancelled job still reached the loader: some fetcher did not hear the
    /// cancel (it started after `sluicectl jobs cancel` broadcast it, or was disconnected
    /// then). Broadcasting it again, at most every [`CANCEL_ECHO_INTERVAL`] per job, stops
    /// that fetcher from fetching the rest of the job's tasks for nothing.
    async fn echo_cancel(&self, job_id: Uuid) {
        if !self.echoed.due(job_id) {
            return;
        }
        let state = match self.pool.get().await {
            Ok(client) => ledger::job_state(&**client, job_id).await,
            Err(e) => Err(e.into()),
        };
        match state {
            Ok(Some(ledger::JobState::Cancelled)) => {
                let message = ControlMessage::cancel(job_id);
                match self.broker.broadcast(&message).await {
                    Ok(()) => {
                        info!(%job_id, "a cancelled job's part arrived; cancel broadcast again")
                    }
                    Err(e) => warn!(%job_id, error = %e, "could not broadcast the cancel again"),
                }
            }
            Ok(_) => {}
            Err(e) => warn!(%job_id, error = %e, "could not read the job's state"),
        }
    }

    async fn handle_outcome(&self, delivery: &Delivery) -> bool {
        let outcome = match TaskOutcome::decode(&delivery.data) {
            Ok(o) => o,
            Err(e) => {
                return self
                    .park_load(delivery, TaskOutcome::KIND, &e.to_string())
                    .await;
            }
        };
        let span = info_span!("outcome", otel.kind = "consumer", job_id = %outcome.job_id, task_id = %outcome.task_id, outcome = ?outcome.outcome);
        sluice_broker::follow(&span, delivery);
        async {
            match self
                .with_retries("task outcome", || {
                    ledger::apply_task_outcome(
                        &self.pool,
                        outcome.job_id,
                        &outcome.task_id,
                        outcome.outcome,
                        &outcome.error,
                    )
                })
                .await
            {
                Ok(finished) => {
                    if let Some(state) = finished {
                        self.log_job_end(outcome.job_id, state).await;
                    }
                    true
                }
                Err(e) => {
                    error!(error = %e, "could not record the task outcome");
                    false
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn handle_batch(
        &self,
        destination: &dyn Destination,
        delivery: &Delivery,
        batch: RawRecordBatch,
    ) -> bool {
        let span = load_span(destination, delivery, &batch, 1);
        async {
            let started = Instant::now();
            let result = self
                .with_retries("load", || {
                    ledger::apply_batches(
                        &self.pool,
                        destination.write(),
                        std::slice::from_ref(&batch),
                    )
                })
                .await
                .map(|mut r| r.pop().unwrap_or_default());
            match result {
                Ok(applied) => {
                    if applied.applied {
                        metrics::histogram!("sluice_loader_transaction_duration_seconds", "destination" => destination.name().to_string())
                            .record(started.elapsed().as_secs_f64());
                    }
                    self.note_applied(destination.name(), &batch, &applied, 1).await;
                    true
                }
                Err(e) if e.is_transient() => {
                    warn!(error = %e, "database unavailable; the part will be redelivered");
                    false
                }
                Err(e) => self.refuse_batch(delivery, &batch, &e.to_string()).await,
            }
        }
        .instrument(span)
        .await
    }

    /// A part that cannot be loaded (it does not fit its table, its destination is not
    /// configured here): park it and fail its task, naming why.
    async fn refuse_batch(&self, delivery: &Delivery, batch: &RawRecordBatch, why: &str) -> bool {
        let error = format!("part {} for {}: {why}", batch.part, batch.table);
        error!(%error, "batch cannot be loaded; parking it and failing its task");
        metrics::counter!("sluice_loader_parts_total", "outcome" => "refused").increment(1);
        let parked = self
            .broker
            .park(Route::Load, &delivery.data, RecordBatch::KIND, &error, 1)
            .await
            .is_ok();
        parked
            && self
                .with_retries("task outcome", || {
                    ledger::apply_task_outcome(
                        &self.pool,
                        batch.job_id,
                        &batch.task_id,
                        Outcome::Failed,
                        &error,
                    )
                })
                .await
                .is_ok()
    }

    async fn park_load(&self, delivery: &Delivery, kind: &str, error: &str) -> bool {
        error!(%error, "parking an undecodable {kind}");
        self.broker
            .park(Route::Load, &delivery.data, kind, error, 1)
            .await
            .is_ok()
    }

    /// A message reached the parking lot: record the failure in the ledger.
    async fn handle_parked(self, delivery: Delivery) {
        let props = &delivery.properties;
        let reason = header_str(props, ERROR_HEADER).unwrap_or_else(|| {
            match first_death(props) {
                Some((_, reason)) if reason == "delivery_limit" => format!(
                    "delivery limit reached: the message was delivered {} times without being acknowledged (its consumer crashed or kept failing)",
                    header_str(props, "x-delivery-count").unwrap_or_else(|| "too many".into())
                ),
                Some((_, reason)) => format!("dead-lettered ({reason})"),
                None => "parked".into(),
            }
        });
        let attempts = header_str(props, ATTEMPTS_HEADER).unwrap_or_default();
        let kind = props
            .kind()
            .as_ref()
            .map(|k| k.as_str().to_string())
            .unwrap_or_default();
        let target = if kind == FetchTask::KIND {
            FetchTask::decode(&delivery.data)
                .ok()
                .map(|t| (t.job_id, Some(t.task_id)))
        } else if kind == RecordBatch::KIND {
            RawRecordBatch::decode(&delivery.data)
                .ok()
                .map(|b| (b.job_id, Some(b.task_id)))
        } else if kind == JobRequest::KIND {
            JobRequest::decode(&delivery.data)
                .ok()
                .map(|j| (j.job_id, None))
        } else {
            None
        };
        let done = match target {
            Some((job_id, Some(task_id))) => {
                warn!(%job_id, %task_id, %reason, %attempts, "task parked");
                self.with_retries("parked task", || {
                    ledger::apply_task_outcome(
                        &self.pool,
                        job_id,
                        &task_id,
                        Outcome::Failed,
                        &reason,
                    )
                })
                .await
                .is_ok()
            }
            Some((job_id, None)) => {
                warn!(%job_id, %reason, "job request parked");
                let error = format!("job request parked: {reason}");
                self.with_retries("parked job", || {
                    ledger::fail_queued_job(&self.pool, job_id, &error)
                })
                .await
                .is_ok()
            }
            None => {
                warn!(%kind, %reason, "parked message names no job; left for the operator");
                true
            }
        };
        settle(&delivery, done).await;
    }
}
