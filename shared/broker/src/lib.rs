//! RabbitMQ for sluice: the topology of `docs/architecture.md` ("Queues"), publishing that
//! waits for publisher confirms, consumers with manual acks and prefetch, the retry tiers
//! and the parking lot.
//!
//! Names (every one behind the configurable prefix `P`, default `sluice`):
//! - exchange `P` (direct) with quorum queues `P.jobs`, `P.fetch`, `P.load` bound by the
//!   routing keys `jobs`, `fetch`, `load`; each has `x-delivery-limit` and dead-letters to
//!   the parking lot, so a message that crashes its consumer over and over ends up parked;
//! - exchange `P.retry` (headers) with classic queues `P.retry.5s`, `P.retry.30s`,
//!   `P.retry.5m`, one TTL each, dead-lettering back to `P`. A retried message is published
//!   to `P.retry` with its original routing key and the header `sluice-retry-tier`; when
//!   its TTL expires RabbitMQ dead-letters it to `P` with that same routing key, so it
//!   returns to the queue it came from;
//! - exchange `P.parked` (fanout) with `P.parked` (kept for operators: `sluicectl dlq`) and
//!   `P.parked.notify` (read by the loader to mark the task failed in the ledger);
//! - exchange `P.control` (fanout): each fetcher binds an exclusive, auto-delete queue.
//!
//! Declaring is idempotent; every service declares the whole topology at start.
//!
//! [`permits`]: a counting semaphore shared by every process on the broker (`P.permits.*`
//! queues of tokens), for caps such as an outside API's concurrent requests.

pub mod permits;
pub mod tracecontext;

use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use sluice_contracts::Message;
use sluice_contracts::config::AmqpSettings;
use sluice_contracts::redact::redact_url;

pub use lapin;
pub use permits::{Permit, SharedPermits};
pub use tracecontext::follow;

/// Header naming the retry tier of a message on the retry exchange. It must not start with
/// `x-`: a headers exchange ignores such binding arguments under `x-match: all`, which would
/// make every tier's binding match every message.
pub const RETRY_TIER_HEADER: &str = "sluice-retry-tier";
/// Header of a parked message: why it was parked.
pub const ERROR_HEADER: &str = "x-sluice-error";
/// Header of a parked message: how many attempts were made.
pub const ATTEMPTS_HEADER: &str = "x-sluice-attempts";
/// Header of a parked message: the routing key (`fetch`, `load`, `jobs`) it came from.
pub const ORIGIN_HEADER: &str = "x-sluice-origin";
/// W3C trace context header, so one job is one trace across services.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Header set on every publish: milliseconds since the Unix epoch. A consumer measures
/// `sluice_queue_wait_seconds` from it (the AMQP `timestamp` property has whole seconds
/// only). Messages of earlier versions without it are simply not measured.
pub const PUBLISHED_MS_HEADER: &str = "sluice-published-ms";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The `queue` label of a delivery: the work queue (`jobs`, `fetch`, `load`) it came from
/// by its routing key, or `parked` for the parking lot's notifications (which keep the
/// routing key of their origin). Labels never carry the prefix, so they stay the same
/// across deployments and tests.
pub fn queue_label(delivery: &lapin::message::Delivery) -> &'static str {
    if delivery.exchange.as_str().ends_with(".parked") {
        return "parked";
    }
    Route::from_key(delivery.routing_key.as_str()).map_or("other", Route::key)
}

/// Observes how long a delivery waited in its queue (`sluice_queue_wait_seconds`).
fn observe_wait(delivery: &lapin::message::Delivery) {
    let published = delivery.properties.headers().as_ref().and_then(|h| {
        match h.inner().get(PUBLISHED_MS_HEADER) {
            Some(AMQPValue::LongLongInt(ms)) => Some(*ms),
            _ => None,
        }
    });
    if let Some(ms) = published {
        // Clocks of different hosts may disagree by a little: never a negative wait.
        let seconds = (now_ms() - ms).max(0) as f64 / 1000.0;
        metrics::histogram!("sluice_queue_wait_seconds", "queue" => queue_label(delivery))
            .record(seconds);
    }
}

/// Acks a delivery (its effect is durable) or hands it back to its queue, and counts it in
/// `sluice_messages_consumed_total`. Every consumer of a work queue settles through here.
pub async fn settle(delivery: &lapin::message::Delivery, ack: bool) {
    use lapin::options::{BasicAckOptions, BasicNackOptions};
    let outcome = if ack {
        let _ = delivery.ack(BasicAckOptions::default()).await;
        "acked"
    } else {
        let _ = delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await;
        "requeued"
    };
    metrics::counter!("sluice_messages_consumed_total", "queue" => queue_label(delivery), "outcome" => outcome)
        .increment(1);
}

/// Errors of the broker layer.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Connecting failed; the URL is shown with its password masked.
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// The AMQP error.
        source: lapin::Error,
    },
    /// A protocol operation failed.
    #[error("RabbitMQ {op} failed: {source}")]
    Amqp {
        /// What was being done (`publish to sluice/fetch`).
        op: String,
        /// The AMQP error.
        source: lapin::Error,
    },
    /// The broker refused (nacked) a publish or could not route it.
    #[error("RabbitMQ did not accept the message published to {exchange}/{routing_key}: {reason}")]
    NotConfirmed {
        /// Exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
        /// Nack or unroutable.
        reason: &'static str,
    },
    /// A channel or consumer ended while it was needed.
    #[error("RabbitMQ channel closed while {0}")]
    Closed(String),
}

type Result<T> = std::result::Result<T, BrokerError>;

fn amqp(op: impl Into<String>) -> impl FnOnce(lapin::Error) -> BrokerError {
    let op = op.into();
    move |source| BrokerError::Amqp { op, source }
}

/// The work queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `JobRequest`s, read by the planner.
    Jobs,
    /// `FetchTask`s, read by fetchers.
    Fetch,
    /// `RecordBatch`es and `TaskOutcome`s, read by the loader.
    Load,
}

impl Route {
    /// The routing key.
    pub fn key(self) -> &'static str {
        match self {
            Route::Jobs => "jobs",
            Route::Fetch => "fetch",
            Route::Load => "load",
        }
    }

    /// Parses a routing key (from a parked message's origin).
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "jobs" => Some(Route::Jobs),
            "fetch" => Some(Route::Fetch),
            "load" => Some(Route::Load),
            _ => None,
        }
    }

    /// All work routes.
    pub const ALL: [Route; 3] = [Route::Jobs, Route::Fetch, Route::Load];
}

/// A retry delay tier: one classic queue with one TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryTier {
    /// 5 seconds.
    S5,
    /// 30 seconds.
    S30,
    /// 5 minutes.
    M5,
}

impl RetryTier {
    /// The tier's name (`5s`, `30s`, `5m`), also the queue name suffix.
    pub fn name(self) -> &'static str {
        match self {
            RetryTier::S5 => "5s",
            RetryTier::S30 => "30s",
            RetryTier::M5 => "5m",
        }
    }

    /// The delay.
    pub fn delay(self) -> Duration {
        match self {
            RetryTier::S5 => Duration::from_secs(5),
            RetryTier::S30 => Duration::from_secs(30),
            RetryTier::M5 => Duration::from_secs(300),
        }
    }

    /// The tier for a message that has failed `attempt` times (1-based): 1 → 5 s, 2 → 30 s,
    /// 3 and 4 → 5 min; `None` once attempts are exhausted (park it).
    pub fn for_attempt(attempt: u32) -> Option<Self> {
        match attempt {
            0 | 1 => Some(RetryTier::S5),
            2 => Some(RetryTier::S30),
            3 | 4 => Some(RetryTier::M5),
            _ => None,
        }
    }

    /// All tiers.
    pub const ALL: [RetryTier; 3] = [RetryTier::S5, RetryTier::S30, RetryTier::M5];
}

/// Exchange and queue names under one prefix.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The main direct exchange, `P`.
    pub fn exchange(&self) -> String {
        self.prefix.clone()
    }

    /// The queue of a route, `P.jobs` / `P.fetch` / `P.load`.
    pub fn queue(&self, route: Route) -> String {
        format!("{}.{}", self.prefix, route.key())
    }

    /// The retry exchange, `P.retry` (headers).
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// The queue of a retry tier, `P.retry.5s`.
    pub fn retry_queue(&self, tier: RetryTier) -> String {
        format!("{}.retry.{}", self.prefix, tier.name())
    }

    /// The parking-lot exchange and queue, `P.parked`.
    pub fn parked(&self) -> String {
        format!("{}.parked", self.prefix)
    }

    /// The queue that tells the loader of parked messages, `P.parked.notify`.
    pub fn parked_notify(&self) -> String {
        format!("{}.parked.notify", self.prefix)
    }

    /// The control fanout exchange, `P.control`.
    pub fn control_exchange(&self) -> String {
        format!("{}.control", self.prefix)
    }

    /// Every queue name (for purging in tests and `sluicectl`).
    pub fn all_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = Route::ALL.iter().map(|r| self.queue(*r)).collect();
        queues.extend(RetryTier::ALL.iter().map(|t| self.retry_queue(*t)));
        queues.push(self.parked());
        queues.push(self.parked_notify());
        queues
    }

    /// Every exchange name.
    pub fn all_exchanges(&self) -> Vec<String> {
        vec![
            self.exchange(),
            self.retry_exchange(),
            self.parked(),
            self.control_exchange(),
        ]
    }
}

/// Headers attached to a publish.
#[derive(Clone, Debug, Default)]
pub struct Headers(pub FieldTable);

impl Headers {
    /// Adds a string header.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.insert(
            ShortString::from(key.to_string()),
            AMQPValue::LongString(LongString::from(value.into())),
        );
        self
    }

    /// Adds the W3C trace context of the job: the current span's `traceparent` (and
    /// `tracestate`) when the span belongs to the job's trace — whose trace id is the job
    /// id —, else a `traceparent` naming the job's trace ([`tracecontext`]).
    pub fn traced(mut self, job_id: uuid::Uuid) -> Self {
        tracecontext::inject(&mut self.0, job_id);
        self
    }
}

/// Reads a string header of a delivery.
pub fn header_str(properties: &BasicProperties, key: &str) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// The routing key a dead-lettered message was first published with, from `x-death`, and
/// the reason it died (`delivery_limit`, `rejected`, `expired`).
pub fn first_death(properties: &BasicProperties) -> Option<(String, String)> {
    let headers = properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    // x-death is newest first: the first entry is the death that brought it here.
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let get = |k: &str| match first.inner().get(k) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
        Some(AMQPValue::FieldArray(a)) => a.as_slice().first().and_then(|v| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            _ => None,
        }),
        _ => None,
    };
    Some((get("routing-keys")?, get("reason").unwrap_or_default()))
}

/// A connection with a publisher-confirm channel and the declared topology.
pub struct Broker {
    connection: Connection,
    publisher: Channel,
    topology: Topology,
    delivery_limit: u32,
}

impl Broker {
    /// Connects, enables publisher confirms and declares the topology.
    ///
    /// # Errors
    /// [`BrokerError::Connect`] (URL redacted) or a failed declaration.
    pub async fn connect(settings: &AmqpSettings, connection_name: &str) -> Result<Self> {
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(connection_name.to_string()));
        let connection = Connection::connect(settings.url(), props)
            .await
            .map_err(|source| BrokerError::Connect {
                url: redact_url(settings.url()),
                source,
            })?;
        let publisher = connection
            .create_channel()
            .await
            .map_err(amqp("open channel"))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("confirm.select"))?;
        let broker = Self {
            connection,
            publisher,
            topology: Topology::new(settings.prefix.clone()),
            delivery_limit: settings.delivery_limit,
        };
        broker.declare().await?;
        Ok(broker)
    }

    /// The names in use.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// True while the connection is open (for `/readyz`).
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// True while both the connection and the publishing channel are usable. A channel-level
    /// error (for example a refused publish) closes the publishing channel for good; the
    /// service must then reconnect.
    pub fn is_healthy(&self) -> bool {
        self.is_connected() && self.publisher.status().connected()
    }

    /// Closes the connection cleanly.
    pub async fn close(&self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }

    async fn declare(&self) -> Result<()> {
        let ch = &self.publisher;
        let t = &self.topology;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (name, kind) in [
            (t.exchange(), ExchangeKind::Direct),
            (t.retry_exchange(), ExchangeKind::Headers),
            (t.parked(), ExchangeKind::Fanout),
            (t.control_exchange(), ExchangeKind::Fanout),
        ] {
            ch.exchange_declare(name.clone().into(), kind, durable, FieldTable::default())
                .await
                .map_err(amqp(format!("declare exchange {name}")))?;
        }
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for route in Route::ALL {
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(self.delivery_limit as i32),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(t.parked().into()),
            );
            let queue = t.queue(route);
            ch.queue_declare(queue.clone().into(), durable_queue, args)
                .await
                .map_err(amqp(format!("declare queue {queue}")))?;
            ch.queue_bind(
                queue.clone().into(),
                t.exchange().into(),
                route.key().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("bind queue {queue}")))?;
        }
        for tier in RetryTier::ALL {
            let mut args = FieldTable::default();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongInt(tier.delay().as_millis() as i32),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(t.exchange().into()),
            );
            let queue = t.retry_queue(tier);
            ch.queue_declare(queue.clone().into(), durable_queue, args)
                .await
                .map_err(amqp(format!("declare queue {queue}")))?;
            let mut bind = FieldTable::default();
            bind.insert("x-match".into(), AMQPValue::LongString("all".into()));
            bind.insert(
                RETRY_TIER_HEADER.into(),
                AMQPValue::LongString(tier.name().into()),
            );
            ch.queue_bind(
                queue.clone().into(),
                t.retry_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                bind,
            )
            .await
            .map_err(amqp(format!("bind queue {queue}")))?;
            // Remove the catch-all binding of earlier versions (header `x-sluice-retry-tier`,
            // which the exchange ignored). Unbinding a missing binding is a no-op.
            let mut old = FieldTable::default();
            old.insert("x-match".into(), AMQPValue::LongString("all".into()));
            old.insert(
                "x-sluice-retry-tier".into(),
                AMQPValue::LongString(tier.name().into()),
            );
            ch.queue_unbind(
                queue.clone().into(),
                t.retry_exchange().into(),
                "".into(),
                old,
            )
            .await
            .map_err(amqp(format!("unbind old retry binding of {queue}")))?;
        }
        for queue in [t.parked(), t.parked_notify()] {
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            ch.queue_declare(queue.clone().into(), durable_queue, args)
                .await
                .map_err(amqp(format!("declare queue {queue}")))?;
            ch.queue_bind(
                queue.clone().into(),
                t.parked().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("bind queue {queue}")))?;
        }
        Ok(())
    }

    /// Publishes raw bytes and waits for the broker's confirm. `mandatory` makes an
    /// unroutable message an error instead of a silent drop.
    ///
    /// # Errors
    /// [`BrokerError::NotConfirmed`] when nacked or unroutable; [`BrokerError::Amqp`].
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        kind: &str,
        headers: Headers,
    ) -> Result<()> {
        let mut headers = headers.0;
        headers.insert(
            ShortString::from(PUBLISHED_MS_HEADER),
            AMQPValue::LongLongInt(now_ms()),
        );
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type(kind.to_string().into())
            .with_headers(headers);
        let op = || format!("publish to {exchange}/{routing_key}");
        let confirm = self
            .publisher
            .basic_publish(
                exchange.to_string().into(),
                routing_key.to_string().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
            .map_err(amqp(op()))?
            .await
            .map_err(amqp(op()))?;
        let reason = match confirm {
            lapin::Confirmation::Ack(None) => return Ok(()),
            lapin::Confirmation::Ack(Some(_)) => "unroutable (no queue bound)",
            lapin::Confirmation::Nack(_) => "nacked by the broker",
            _ => "publisher confirms not enabled",
        };
        Err(BrokerError::NotConfirmed {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            reason,
        })
    }

    /// Publishes a message to a work route and waits for the confirm.
    ///
    /// # Errors
    /// See [`Broker::publish_raw`].
    pub async fn publish<M: Message>(
        &self,
        route: Route,
        message: &M,
        headers: Headers,
    ) -> Result<()> {
        self.publish_raw(
            &self.topology.exchange(),
            route.key(),
            &message.encode(),
            M::KIND,
            headers,
        )
        .await
    }

    /// Sends a message through a retry tier back to `route` after the tier's delay.
    ///
    /// # Errors
    /// See [`Broker::publish_raw`].
    pub async fn publish_retry(
        &self,
        route: Route,
        body: &[u8],
        kind: &str,
        tier: RetryTier,
        headers: Headers,
    ) -> Result<()> {
        self.publish_raw(
            &self.topology.retry_exchange(),
            route.key(),
            body,
            kind,
            headers.with(RETRY_TIER_HEADER, tier.name()),
        )
        .await?;
        metrics::counter!("sluice_messages_retried_total", "queue" => route.key(), "tier" => tier.name())
            .increment(1);
        Ok(())
    }

    /// Parks a message with its reason and attempt count.
    ///
    /// # Errors
    /// See [`Broker::publish_raw`].
    pub async fn park(
        &self,
        origin: Route,
        body: &[u8],
        kind: &str,
        error: &str,
        attempts: u32,
    ) -> Result<()> {
        let headers = Headers::default()
            .with(ERROR_HEADER, error)
            .with(ATTEMPTS_HEADER, attempts.to_string())
            .with(ORIGIN_HEADER, origin.key());
        self.publish_raw(&self.topology.parked(), origin.key(), body, kind, headers)
            .await?;
        metrics::counter!("sluice_messages_parked_total", "queue" => origin.key()).increment(1);
        Ok(())
    }

    /// Broadcasts a control message to every fetcher.
    ///
    /// # Errors
    /// See [`Broker::publish_raw`]. A fanout with no bound queue is not an error.
    pub async fn broadcast<M: Message>(&self, message: &M) -> Result<()> {
        let props = BasicProperties::default().with_type(M::KIND.into());
        let exchange = self.topology.control_exchange();
        self.publisher
            .basic_publish(
                exchange.clone().into(),
                "".into(),
                BasicPublishOptions::default(),
                &message.encode(),
                props,
            )
            .await
            .map_err(amqp(format!("publish to {exchange}")))?
            .await
            .map_err(amqp(format!("publish to {exchange}")))?;
        Ok(())
    }

    /// Opens a channel with `prefetch` and consumes `queue` with manual acks.
    ///
    /// # Errors
    /// [`BrokerError::Amqp`].
    pub async fn consume(&self, queue: &str, prefetch: u16, tag: &str) -> Result<Consumer> {
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(amqp("open channel"))?;
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(amqp("basic.qos"))?;
        channel
            .basic_consume(
                queue.to_string().into(),
                tag.to_string().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("consume {queue}")))
    }

    /// Binds a fresh exclusive, auto-delete queue to the control exchange and consumes it.
    ///
    /// # Errors
    /// [`BrokerError::Amqp`].
    pub async fn consume_control(&self, tag: &str) -> Result<Consumer> {
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(amqp("open channel"))?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp("declare control queue"))?;
        let name = queue.name().as_str().to_string();
        channel
            .queue_bind(
                name.clone().into(),
                self.topology.control_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("bind control queue"))?;
        channel
            .basic_consume(
                name.into(),
                tag.to_string().into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp("consume control queue"))
    }

    /// The number of consumers on `queue` (a passive declare; the queue must exist).
    ///
    /// # Errors
    /// [`BrokerError::Amqp`].
    pub async fn consumer_count(&self, queue: &str) -> Result<u32> {
        Ok(self.queue_counts(queue).await?.1)
    }

    /// `(ready messages, consumers)` of `queue` (a passive declare; the queue must exist).
    /// Messages delivered and not yet acknowledged are not counted.
    ///
    /// # Errors
    /// [`BrokerError::Amqp`].
    pub async fn queue_counts(&self, queue: &str) -> Result<(u32, u32)> {
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(
                queue.to_string().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("inspect queue {queue}")));
        let _ = channel.close(200, "bye".into()).await;
        let declared = declared?;
        Ok((declared.message_count(), declared.consumer_count()))
    }

    /// A new plain channel (for `basic_get`, purges, deletes in `sluicectl` and tests).
    ///
    /// # Errors
    /// [`BrokerError::Amqp`].
    pub async fn channel(&self) -> Result<Channel> {
        self.connection
            .create_channel()
            .await
            .map_err(amqp("open channel"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topology::new("p1");
        assert_eq!(t.queue(Route::Fetch), "p1.fetch");
        assert_eq!(t.retry_queue(RetryTier::S30), "p1.retry.30s");
        assert_eq!(t.parked(), "p1.parked");
        assert_eq!(t.all_queues().len(), 8);
    }

    #[test]
    fn retry_tiers_escalate_then_park() {
        assert_eq!(RetryTier::for_attempt(1), Some(RetryTier::S5));
        assert_eq!(RetryTier::for_attempt(2), Some(RetryTier::S30));
        assert_eq!(RetryTier::for_attempt(4), Some(RetryTier::M5));
        assert_eq!(RetryTier::for_attempt(5), None);
    }
}

/// How [`drive_groups`] forms groups of deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Grouping {
    /// Most deliveries in one group (at least 1).
    pub max_deliveries: usize,
    /// A group takes no further delivery once its payloads reach this many bytes (a single
    /// delivery may exceed it).
    pub max_bytes: usize,
}

/// Like [`drive`], but `handler` gets a group: the delivery that freed a slot waited for,
/// plus the deliveries already received behind it (never waiting for more), within
/// `grouping`'s limits. At most `limit` groups are handled at a time. With a backlog, the
/// consumer's prefetch bounds how many deliveries are at hand to group.
///
/// Handlers ack or nack every delivery of their group themselves, after the effect is
/// durable.
///
/// # Errors
/// [`DriveError`] when the consumer stops for any reason other than shutdown.
pub async fn drive_groups<F, Fut>(
    broker: &Broker,
    consumer: Consumer,
    limit: usize,
    grouping: Grouping,
    shutdown: &tokio_util::sync::CancellationToken,
    mut handler: F,
) -> std::result::Result<(), DriveError>
where
    F: FnMut(Vec<lapin::message::Delivery>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::{FutureExt, StreamExt};
    let mut deliveries = Box::pin(consumer.take_until(shutdown.clone().cancelled_owned()));
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let limit = limit.max(1);
    let max_deliveries = grouping.max_deliveries.max(1);
    let mut health = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            _ = health.tick() => if !broker.is_healthy() {
                break Err(DriveError::Unhealthy);
            },
            next = deliveries.next(), if in_flight.len() < limit => match next {
                Some(Ok(delivery)) => {
                    observe_wait(&delivery);
                    let mut bytes = delivery.data.len();
                    let mut group = vec![delivery];
                    let mut failed = None;
                    while group.len() < max_deliveries && bytes < grouping.max_bytes {
                        match deliveries.next().now_or_never() {
                            Some(Some(Ok(more))) => {
                                observe_wait(&more);
                                bytes += more.data.len();
                                group.push(more);
                            }
                            Some(Some(Err(e))) => {
                                failed = Some(e);
                                break;
                            }
                            // Nothing received yet, or the stream ended: the next turn of
                            // the loop sees the end.
                            _ => break,
                        }
                    }
                    in_flight.push(handler(group));
                    if let Some(e) = failed {
                        break Err(DriveError::Consumer(e));
                    }
                }
                Some(Err(e)) => break Err(DriveError::Consumer(e)),
                None if shutdown.is_cancelled() => break Ok(()),
                None => break Err(DriveError::Closed),
            },
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    };
    while in_flight.next().await.is_some() {}
    result
}

/// Why [`drive`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The consumer failed (connection or channel lost).
    #[error("consumer failed: {0}")]
    Consumer(#[from] lapin::Error),
    /// The broker closed the consumer (queue deleted, connection closed).
    #[error("the consumer was closed by the broker")]
    Closed,
    /// The connection or the publishing channel is gone.
    #[error("the broker connection or the publishing channel was closed")]
    Unhealthy,
}

/// Runs `handler` on each delivery, at most `limit` at a time, until `shutdown` is
/// cancelled (then waits for the handlers in flight and returns `Ok`), the consumer fails,
/// or `broker` stops being healthy (checked every second).
///
/// Handlers ack or nack their delivery themselves, after the effect is durable.
///
/// # Errors
/// [`DriveError`] when the consumer stops for any reason other than shutdown.
pub async fn drive<F, Fut>(
    broker: &Broker,
    consumer: Consumer,
    limit: usize,
    shutdown: &tokio_util::sync::CancellationToken,
    mut handler: F,
) -> std::result::Result<(), DriveError>
where
    F: FnMut(lapin::message::Delivery) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Groups of one: drive_groups never looks past the delivery that freed the slot.
    let single = Grouping {
        max_deliveries: 1,
        max_bytes: 0,
    };
    drive_groups(broker, consumer, limit, single, shutdown, |group| {
        match group.into_iter().next() {
            Some(delivery) => futures::future::Either::Left(handler(delivery)),
            // drive_groups never hands over an empty group.
            None => futures::future::Either::Right(std::future::ready(())),
        }
    })
    .await
}
