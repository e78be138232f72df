//! The fetcher: stateless workers that run `FetchTask`s through their connector.
//!
//! For each task: drop it if its job was cancelled (learned at once from the control
//! fanout); run the connector, publishing the parts it emits page by page as it goes, then
//! one `RecordBatch` part per destination table of what it returns to `load` (the last part
//! carries `task_complete`, the rejects, the children and the cursor; a part over
//! `fetcher.max_part_bytes` is split), then the child tasks to `fetch` (except
//! once-per-resource children, which the loader publishes after recording them:
//! `sluice_contracts::Once`), each publish confirmed; only then ack the task. A crash
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
use sluice_broker::{Broker, Headers, RetryTier, Route};
use sluice_connectors::{
    Cell, ConnectorContext, ConnectorError, Emit, FetchOutput, Registry, TableRows,
};
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
    let _telemetry = sluice_service::init_tracing(&settings, "sluice-fetcher");
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
        "fetcher",
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
        max_part_bytes: settings.fetcher.max_part_bytes as usize,
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
    /// `fetcher.max_part_bytes`.
    max_part_bytes: usize,
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
                let span = info_span!("fetch", otel.kind = "consumer", job_id = %task.job_id, task_id = %task.task_id, connector = %task.connector, stream = %task.stream, attempt = task.attempt, parts = tracing::field::Empty);
                sluice_broker::follow(&span, &delivery);
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
            Settle::Ack => sluice_broker::settle(&delivery, true).await,
            Settle::Requeue => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                sluice_broker::settle(&delivery, false).await;
            }
        }
    }

    async fn run_task(&self, task: FetchTask, body: &[u8]) -> Settle {
        // A label only ever names a connector of this build: a task naming another one is
        // counted as `unknown`, so a stray name cannot add series.
        let label = if self.registry.get(&task.connector).is_some() {
            task.connector.clone()
        } else {
            "unknown".to_string()
        };
        if self.cancelled.contains(&task.job_id) {
            info!("task of a cancelled job dropped");
            count_task(&label, "cancelled");
            return Settle::Ack;
        }
        let Some(connector) = self.registry.get(&task.connector) else {
            let error = format!("unknown connector {:?}", task.connector);
            return self.fail(&task, &label, body, &error).await;
        };
        let started = Instant::now();
        let mut emitted = PartPublisher {
            broker: &self.broker,
            task: &task,
            next_part: 0,
            max_bytes: self.max_part_bytes,
        };
        let result = tokio::select! {
            r = connector.fetch_paged(&task, &mut emitted) => r,
            _ = self.cancelled.wait_for(task.job_id) => {
                info!("job cancelled while fetching: task dropped");
                count_task(&label, "cancelled");
                return Settle::Ack;
            }
        };
        // Whatever the outcome: a slow failure (timeouts) is as telling as a slow success.
        metrics::histogram!("sluice_fetcher_task_duration_seconds", "connector" => label.clone())
            .record(started.elapsed().as_secs_f64());
        let first_part = emitted.next_part;
        match result {
            Ok(output) => match self.ship(&task, output, first_part).await {
                Ok(parts) => {
                    tracing::Span::current().record("parts", parts);
                    info!(
                        parts,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "task fetched"
                    );
                    count_task(&label, "done");
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
                    count_task(&label, "retried");
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
                    self.fail(&task, &label, body, &error).await
                }
            },
            Err(e) => self.fail(&task, &label, body, &e.to_string()).await,
        }
    }

    /// Parks the task and tells the loader it failed.
    async fn fail(&self, task: &FetchTask, label: &str, body: &[u8], error: &str) -> Settle {
        error!(%error, "task failed; parking it");
        count_task(label, "parked");
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

    /// Publishes the output as batch parts numbered from `first_part` (the parts emitted
    /// while fetching come before), then the children. Returns the number of parts.
    async fn ship(
        &self,
        task: &FetchTask,
        output: FetchOutput,
        first_part: u32,
    ) -> anyhow::Result<usize> {
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
        let mut next_part = first_part;
        // Counted before publishing: a publish that fails makes RabbitMQ deliver the task
        // again, and its rows are fetched (and counted) again — the counter counts work done.
        count_rows(task, &output.tables);
        if !output.rejected.is_empty() {
            metrics::counter!(
                "sluice_fetcher_records_rejected_total",
                "connector" => task.connector.clone(),
                "stream" => sluice_contracts::telemetry::stream_label(&task.stream),
            )
            .increment(output.rejected.len() as u64);
        }
        let tail = Tail {
            rejected: output.rejected,
            children: children.clone(),
            cursor_max: output.cursor_max,
        };
        let bodies = encode_parts(
            task,
            output.tables,
            &mut next_part,
            Some(tail),
            self.max_part_bytes,
        );
        let headers = Headers::default().traced(task.job_id);
        for body in &bodies {
            publish_part(&self.broker, body, headers.clone()).await?;
        }
        // Once-per-resource children are published by the loader once it has recorded
        // them (another fetcher may have found the same resource, or it may be fresh).
        for child in children.iter().filter(|c| c.once.is_none()) {
            self.broker
                .publish(Route::Fetch, child, headers.clone())
                .await?;
        }
        Ok(next_part as usize)
    }
}

/// Counts a fetch task in `sluice_fetcher_tasks_total`.
fn count_task(connector: &str, outcome: &'static str) {
    metrics::counter!("sluice_fetcher_tasks_total", "connector" => connector.to_string(), "outcome" => outcome)
        .increment(1);
}

/// Counts the rows of `tables` (about to be published) in `sluice_fetcher_records_total`.
fn count_rows(task: &FetchTask, tables: &[TableRows]) {
    let stream = sluice_contracts::telemetry::stream_label(&task.stream);
    for table in tables.iter().filter(|t| !t.rows.is_empty()) {
        metrics::counter!(
            "sluice_fetcher_records_total",
            "connector" => task.connector.clone(),
            "stream" => stream.clone(),
            "table" => table.table.clone(),
        )
        .increment(table.rows.len() as u64);
    }
}

/// Publishes one encoded `RecordBatch` to `load`, confirmed.
async fn publish_part(broker: &Broker, body: &[u8], headers: Headers) -> anyhow::Result<()> {
    broker
        .publish_raw(
            &broker.topology().exchange(),
            Route::Load.key(),
            body,
            RecordBatch::KIND,
            headers,
        )
        .await?;
    Ok(())
}

/// Publishes the parts a connector emits while its task runs, numbered from 0.
struct PartPublisher<'a> {
    broker: &'a Broker,
    task: &'a FetchTask,
    /// The number of the next part.
    next_part: u32,
    max_bytes: usize,
}

#[async_trait::async_trait]
impl Emit for PartPublisher<'_> {
    async fn emit(&mut self, tables: Vec<TableRows>) -> Result<(), ConnectorError> {
        let tables: Vec<TableRows> = tables.into_iter().filter(|t| !t.is_void()).collect();
        if tables.is_empty() {
            return Ok(());
        }
        count_rows(self.task, &tables);
        let bodies = encode_parts(self.task, tables, &mut self.next_part, None, self.max_bytes);
        let headers = Headers::default().traced(self.task.job_id);
        for body in &bodies {
            publish_part(self.broker, body, headers.clone())
                .await
                .map_err(ConnectorError::Transient)?;
        }
        Ok(())
    }
}

/// What the last part of a task carries besides its rows.
#[derive(Debug, Default)]
pub struct Tail {
    /// Records the task could not read.
    pub rejected: Vec<sluice_contracts::RejectedRecord>,
    /// The task's children (already given their ids).
    pub children: Vec<FetchTask>,
    /// The greatest cursor value among the task's records.
    pub cursor_max: Option<String>,
}

/// Encodes `tables` as `RecordBatch` parts of `task` numbered from `*next_part` (left one
/// past the last): one part per table, unless a table's part encodes to more than
/// `max_bytes` — then its rows are split ([`TableRows::split`]: between parents for
/// replace-scope tables) until every part fits or holds a single row or parent. This
/// bounds what a loader holds: its prefetch (`concurrency × group_parts` deliveries)
/// times `max_bytes`.
///
/// With `tail` this is the task's end: the last part carries `task_complete`, the rejects,
/// the children and the cursor; an end without rows is one empty part, so the loader
/// learns that the task is done.
pub fn encode_parts(
    task: &FetchTask,
    tables: Vec<TableRows>,
    next_part: &mut u32,
    mut tail: Option<Tail>,
    max_bytes: usize,
) -> Vec<Vec<u8>> {
    // Each table with whether it may still be split (one parent's rows cannot be).
    let mut queue: std::collections::VecDeque<(TableRows, bool)> =
        tables.into_iter().map(|t| (t, true)).collect();
    if tail.is_some() && queue.is_empty() {
        queue.push_back((TableRows::default(), false));
    }
    let mut bodies = Vec::new();
    while let Some((table, may_split)) = queue.pop_front() {
        let end = if queue.is_empty() { tail.take() } else { None };
        let complete = end.is_some();
        let end = end.unwrap_or_default();
        let body = Part {
            v: MESSAGE_VERSION,
            job_id: task.job_id,
            task_id: &task.task_id,
            stream: &task.stream,
            part: *next_part,
            task_complete: complete,
            table: &table.table,
            columns: &table.columns,
            rows: &table.rows,
            merge: &table.merge,
            children: &end.children,
            cursor_max: end.cursor_max.as_deref(),
            rejected: &end.rejected,
        }
        .encode();
        if may_split && body.len() > max_bytes && table.rows.len() > 1 {
            if complete {
                tail = Some(end);
            }
            let pieces = table.split(body.len().div_ceil(max_bytes.max(1)).max(2));
            let may_split = pieces.len() > 1;
            for piece in pieces.into_iter().rev() {
                queue.push_front((piece, may_split));
            }
            continue;
        }
        bodies.push(body);
        *next_part += 1;
    }
    bodies
}

/// A `RecordBatch` as the fetcher writes it: exactly [`RecordBatch`]'s fields, names and
/// order (a test compares the bytes), borrowing the part's data, with rows of
/// [`Cell`]s — so a cell passed through as raw JSON text (a Klaviyo event's
/// `event_properties`) is written verbatim instead of being parsed into a `Value` to fit
/// `RecordBatch.rows`. The loader decodes the same bytes as a `RecordBatch`: a raw cell
/// reads as the value its text holds, as if it had been a `Value` all along.
///
/// Serialise-only and private: `RecordBatch` in `sluice_contracts` stays the one
/// definition of the message (loaders decode it); this is its other writer.
#[derive(serde::Serialize)]
struct Part<'a> {
    v: u32,
    job_id: Uuid,
    task_id: &'a str,
    stream: &'a str,
    part: u32,
    task_complete: bool,
    table: &'a str,
    columns: &'a [String],
    rows: &'a [Vec<Cell>],
    merge: &'a sluice_contracts::MergeSpec,
    children: &'a [FetchTask],
    cursor_max: Option<&'a str>,
    rejected: &'a [sluice_contracts::RejectedRecord],
}

impl Part<'_> {
    /// Compact JSON, as `Message::encode` writes a `RecordBatch`.
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("parts always serialise: no non-string map keys")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_contracts::{MergeSpec, PageRef, RejectedRecord, TaskKind};

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

    fn decode(bodies: &[Vec<u8>]) -> Vec<RecordBatch> {
        bodies
            .iter()
            .map(|b| RecordBatch::decode(b).unwrap())
            .collect()
    }

    fn end(rejected: Vec<RejectedRecord>, cursor: Option<&str>) -> Option<Tail> {
        Some(Tail {
            rejected,
            children: vec![],
            cursor_max: cursor.map(str::to_string),
        })
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
        let mut next = 0;
        let parts = decode(&encode_parts(
            &task(),
            tables,
            &mut next,
            end(rejected, Some("2016-04-01")),
            1 << 20,
        ));
        assert_eq!((parts.len(), next), (2, 2));
        assert_eq!((parts[0].part, parts[0].task_complete), (0, false));
        assert_eq!((parts[1].part, parts[1].task_complete), (1, true));
        assert!(parts[0].rejected.is_empty());
        assert_eq!(parts[1].rejected.len(), 1);
        assert_eq!(parts[1].cursor_max.as_deref(), Some("2016-04-01"));
    }

    #[test]
    fn empty_output_still_completes_the_task() {
        let mut next = 3;
        let parts = decode(&encode_parts(
            &task(),
            vec![],
            &mut next,
            end(vec![], None),
            1 << 20,
        ));
        assert_eq!(parts.len(), 1);
        assert!(parts[0].task_complete && parts[0].table.is_empty());
        assert_eq!((parts[0].part, next), (3, 4));
        // Emitted pages without an end add nothing when they have no rows.
        assert!(encode_parts(&task(), vec![], &mut next, None, 1 << 20).is_empty());
    }

    /// 40 parents with 0–4 children each (ids `p<i>`), rows of ~200 bytes.
    fn children_of_parents() -> TableRows {
        let mut rows = Vec::new();
        let mut scope_keys = Vec::new();
        for p in 0..40 {
            scope_keys.push(vec![json!(format!("p{p}"))]);
            for c in 0..(p % 5) {
                rows.push(vec![
                    json!(format!("p{p}")),
                    json!(c),
                    json!("x".repeat(200)),
                ]);
            }
        }
        TableRows {
            table: "s.children".into(),
            columns: vec!["parent".into(), "n".into(), "text".into()],
            rows: rows.into_iter().map(sluice_connectors::cells).collect(),
            merge: MergeSpec {
                replace_scope: Some(vec!["parent".into()]),
                scope_keys,
                ..MergeSpec::default()
            },
        }
    }

    #[test]
    fn oversize_parts_split_between_parents_and_keep_every_row_and_parent() {
        let table = children_of_parents();
        let rows = table.rows.clone();
        let mut next = 0;
        let parts = decode(&encode_parts(
            &task(),
            vec![table],
            &mut next,
            end(vec![], Some("c")),
            4_000,
        ));
        assert!(parts.len() > 5, "{} parts", parts.len());
        assert_eq!(next as usize, parts.len());
        let mut seen_parents = std::collections::BTreeSet::new();
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.part as usize, i);
            assert_eq!(part.task_complete, i + 1 == parts.len());
            assert!(
                part.encode().len() <= 4_000 || part.merge.scope_keys.len() == 1,
                "part {i} is {} bytes",
                part.encode().len()
            );
            // Every parent with rows in the part is named by it, and no other part names it.
            let named: std::collections::BTreeSet<String> = part
                .merge
                .scope_keys
                .iter()
                .map(|k| k[0].as_str().unwrap().to_string())
                .collect();
            for row in &part.rows {
                assert!(
                    named.contains(row[0].as_str().unwrap()),
                    "part {i}: {row:?}"
                );
            }
            for parent in named {
                assert!(seen_parents.insert(parent.clone()), "{parent} named twice");
            }
        }
        // All 40 parents are named, the 8 without children included, and no row is lost
        // or reordered.
        assert_eq!(seen_parents.len(), 40);
        let back: Vec<Vec<serde_json::Value>> = parts.iter().flat_map(|p| p.rows.clone()).collect();
        assert_eq!(back, rows);
        assert_eq!(parts.last().unwrap().cursor_max.as_deref(), Some("c"));
    }

    #[test]
    fn rows_of_one_parent_are_never_split() {
        let mut table = children_of_parents();
        table.rows.retain(|r| r[0] == json!("p4"));
        table.merge.scope_keys = vec![vec![json!("p4")]];
        let mut next = 0;
        let parts = decode(&encode_parts(&task(), vec![table], &mut next, None, 100));
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].rows.len(), 4);
    }

    #[test]
    fn parts_of_value_rows_are_the_bytes_record_batch_encodes() {
        let mut table = children_of_parents();
        table.merge.version_column = Some("n".into());
        table.merge.scope_version = Some(json!("2024-01-01T00:00:00Z"));
        table.merge.scope_parent = Some("s.parents".into());
        let rejected = vec![RejectedRecord {
            source: "x page 3".into(),
            table: Some("s.children".into()),
            error: "bad".into(),
            raw: json!({"id": 1, "é": [null, 1.5]}),
        }];
        let mut child = task();
        child.task_id = "t1/0".into();
        let tail = Tail {
            rejected: rejected.clone(),
            children: vec![child.clone()],
            cursor_max: Some("c".into()),
        };
        let mut next = 4;
        let parts = encode_parts(&task(), vec![table.clone()], &mut next, Some(tail), 1 << 20);
        let batch = RecordBatch {
            v: MESSAGE_VERSION,
            job_id: task().job_id,
            task_id: "t1".into(),
            stream: "message_blast".into(),
            part: 4,
            task_complete: true,
            table: table.table.clone(),
            columns: table.columns.clone(),
            rows: sluice_connectors::cell::values(table.rows.clone()),
            merge: table.merge.clone(),
            children: vec![child],
            cursor_max: Some("c".into()),
            rejected,
        };
        assert_eq!(parts, vec![batch.encode()]);
        // And a part without a tail (nulls and empty lists where the batch has none).
        let mut next = 0;
        let parts = encode_parts(&task(), vec![table], &mut next, None, 1 << 20);
        let batch = RecordBatch {
            part: 0,
            task_complete: false,
            children: vec![],
            cursor_max: None,
            rejected: vec![],
            ..batch
        };
        assert_eq!(parts, vec![batch.encode()]);
    }

    /// `event_properties` texts as an API may send them: spacing, member order, number
    /// spellings, escapes, a NUL, `$value`s of every kind.
    const PROPERTIES: [&str; 8] = [
        r#"{"$value": 12.50, "Items": [{"Sku": "A", "Price": 1e1}], "z": null, "a": true}"#,
        r#"{ "$value" : " 7 " , "Brand" : "caf\u00e9 \"x\"\n", "nested": {"b": [1, {"c": []}], "a": 0.1} }"#,
        r#"{"$value": "n/a", "emoji": "\ud83d\ude00", "slash": "a\/b", "big": 123456789012345678901234567890}"#,
        r#"{"dup": 1, "dup": 2, "$value": -0.0, "neg": -3}"#,
        r#"{}"#,
        r#"null"#,
        r#"{"nul": "a\u0000b", "$value": 1}"#,
        r#"{"deep": [[[[{"x": [1, 2.25e-3]}]]]], "$value": "1E3"}"#,
    ];

    /// The rows of `body`'s events the generic way: every event a `Value`, converted by
    /// `records::event_owned` (partition `M`).
    fn generic_rows(body: &str) -> Vec<Vec<Cell>> {
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        doc["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                sluice_connectors::klaviyo::records::event_owned(e.clone(), Some("M"))
                    .unwrap()
                    .0
            })
            .collect()
    }

    /// A page of `GET /api/events` with an event per [`PROPERTIES`] text (and one more
    /// round), the texts spliced in as they are.
    fn events_body() -> String {
        let events: Vec<String> = (0..2 * PROPERTIES.len())
            .map(|i| {
                format!(
                    r#"{{"type": "event", "id": "E{i}", "attributes": {{"timestamp": {}, "datetime": "2024-01-01T00:00:{:02}+00:00", "uuid": "u{i}", "event_properties": {}, "extra_{i}": [{i}]}}, "relationships": {{"profile": {{"data": {{"type": "profile", "id": "P{i}"}}, "links": {{"self": "l"}}}}, "metric": {{"data": {{"type": "metric", "id": "M"}}}}}}, "links": {{"self": "l"}}}}"#,
                    1_704_067_200 + i,
                    i,
                    PROPERTIES[i % PROPERTIES.len()]
                )
            })
            .collect();
        format!(
            r#"{{"data": [{}], "links": {{"next": null}}}}"#,
            events.join(", ")
        )
    }

    fn events_table(rows: Vec<Vec<Cell>>) -> TableRows {
        let spec = &sluice_connectors::klaviyo::records::EVENTS_TABLE;
        TableRows {
            table: spec.name.into(),
            columns: spec.columns.iter().map(|c| (*c).to_string()).collect(),
            rows,
            merge: MergeSpec::default(),
        }
    }

    /// The rows of the parts, as the loader decodes them.
    fn decoded_rows(tables: Vec<TableRows>, max_bytes: usize) -> Vec<Vec<serde_json::Value>> {
        let mut next = 0;
        decode(&encode_parts(&task(), tables, &mut next, None, max_bytes))
            .into_iter()
            .flat_map(|b| b.rows)
            .collect()
    }

    #[test]
    fn raw_event_properties_reach_the_loader_as_the_generic_paths_rows() {
        use sluice_connectors::klaviyo::events_page;
        let body = events_body();
        // The typed page: `event_properties` passed through as raw text.
        let page = events_page::decode(body.as_bytes(), Some("M")).unwrap();
        let typed: Vec<Vec<Cell>> = page.data.into_iter().map(|c| c.unwrap().0).collect();
        assert_eq!(typed.len(), 2 * PROPERTIES.len());
        for (i, row) in typed.iter().enumerate() {
            match (&row[7], PROPERTIES[i % PROPERTIES.len()]) {
                (Cell::Raw(raw), text) => assert_eq!(raw.get(), text),
                (Cell::Json(v), "null") => assert!(v.is_null()),
                (other, _) => panic!("row {i}: event_properties built as {other:?}"),
            }
        }
        // The generic path: every event a `Value`, converted by `records::event_owned`.
        let generic = generic_rows(&body);
        let expected = sluice_connectors::cell::values(generic.clone());
        assert_eq!(expected[0][6], json!(12.5));
        assert_eq!(expected[1][6], json!(7.0));
        // Whole parts and parts split small: the loader reads the generic path's rows,
        // value for value.
        for max_bytes in [1 << 20, 2_000] {
            let from_typed = decoded_rows(vec![events_table(typed.clone())], max_bytes);
            assert_eq!(from_typed, expected, "parts of at most {max_bytes} bytes");
            let from_generic = decoded_rows(vec![events_table(generic.clone())], max_bytes);
            assert_eq!(from_generic, expected);
        }
    }

    #[test]
    fn a_raw_nul_meets_the_loaders_jsonb_refusal_as_the_value_did() {
        use sluice_connectors::klaviyo::events_page;
        use tokio_postgres::types::Type;
        let body = events_body();
        let page = events_page::decode(body.as_bytes(), Some("M")).unwrap();
        let typed: Vec<Vec<Cell>> = page.data.into_iter().map(|c| c.unwrap().0).collect();
        let generic = generic_rows(&body);
        let nul = PROPERTIES
            .iter()
            .position(|p| p.contains("\\u0000"))
            .unwrap();
        assert!(matches!(typed[nul][7], Cell::Raw(_)));
        let from_typed = decoded_rows(vec![events_table(typed)], 1 << 20);
        let from_generic = decoded_rows(vec![events_table(generic)], 1 << 20);
        for rows in [&from_typed, &from_generic] {
            let refused = sluice_store::cell::to_cell(&rows[nul][7], &Type::JSONB).unwrap_err();
            assert!(refused.contains("NUL"), "{refused}");
            // The other properties are stored.
            assert!(sluice_store::cell::to_cell(&rows[0][7], &Type::JSONB).is_ok());
        }
    }

    #[test]
    fn plain_tables_split_by_rows_when_over_the_limit() {
        let table = TableRows {
            table: "s.plain".into(),
            columns: vec!["id".into()],
            rows: (0..1000).map(|i| vec![json!(i).into()]).collect(),
            merge: MergeSpec::default(),
        };
        let mut next = 7;
        let parts = decode(&encode_parts(&task(), vec![table], &mut next, None, 1_000));
        assert!(parts.len() >= 4, "{}", parts.len());
        assert_eq!(parts[0].part, 7);
        assert!(
            parts
                .iter()
                .all(|p| !p.task_complete && p.encode().len() <= 1_000)
        );
        let ids: Vec<i64> = parts
            .iter()
            .flat_map(|p| p.rows.iter().map(|r| r[0].as_i64().unwrap()))
            .collect();
        assert_eq!(ids, (0..1000).collect::<Vec<_>>());
    }
}
