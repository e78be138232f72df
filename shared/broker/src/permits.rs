//! A counting semaphore shared by every process on one RabbitMQ: at most `n` permits of a
//! name are held at once, cluster-wide, and a crashed holder's permits come back by
//! themselves.
//!
//! The permits are `n` messages ("tokens") in the durable classic queue
//! `P.permits.<name>.<n>` (the count is in the name, so a deployment that changes it gets a
//! fresh set instead of a mixture). Taking a permit is consuming one token on a channel of
//! its own with prefetch 1 and not acking it; giving it back is closing that channel, which
//! makes RabbitMQ requeue the token and hand it to the next waiting consumer (in arrival
//! order, without polling). A process that dies loses its connection, and with it every
//! token it held. Tokens are never acked, so none is ever lost, and none is ever added
//! after seeding, so there are never more than `n`: the cap is exact.
//!
//! Seeding happens once per queue: under the seeding lock — the exclusive queue
//! `P.permits.<name>.<n>.seeding`, which one connection at a time can declare, taken by
//! one task at a time within a process — the first process to find no message in the
//! marker queue `P.permits.<name>.<n>.seeded` purges the token queue (nobody takes tokens
//! before the marker is there, so it holds at most the leftovers of an interrupted
//! seeding), publishes `n` tokens with confirms and then the marker message.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};

use crate::{Broker, BrokerError, Result, Topology, amqp};

/// How long a process waits for another one to finish seeding before giving up.
const SEEDING_WAIT: Duration = Duration::from_secs(60);

impl Topology {
    /// The token queue of the permits `name` with `n` permits, `P.permits.<name>.<n>`, and
    /// its marker and lock queues (for deleting them in tests).
    pub fn permit_queues(&self, name: &str, n: u32) -> [String; 3] {
        let queue = format!("{}.permits.{name}.{n}", self.prefix());
        [format!("{queue}.seeded"), format!("{queue}.seeding"), queue]
    }
}

/// Permits shared through one broker connection (see the module docs).
pub struct SharedPermits<'b> {
    broker: &'b Broker,
}

/// One held permit: given back when dropped (its channel is closed, RabbitMQ requeues the
/// token). Dropping it outside a Tokio runtime gives it back when the connection closes.
pub struct Permit {
    channel: Option<Channel>,
    /// The consumer that took the token, kept until the channel closes (which ends it):
    /// dropping it earlier would cost a `basic.cancel` per permit for nothing.
    consumer: Option<lapin::Consumer>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let consumer = self.consumer.take();
        if let Some(channel) = self.channel.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = channel.close(200, "permit given back".into()).await;
                drop(consumer);
            });
        }
    }
}

/// Queues seeded by this process (no need to look again).
static SEEDED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static CONSUMER_SEQ: AtomicU64 = AtomicU64::new(0);
/// One seeding at a time in this process: the exclusive lock queue excludes other
/// connections only, and tasks sharing a connection would all pass it.
static SEEDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Classic queue arguments: quorum queues count redeliveries against a delivery limit, and
/// tokens are redelivered forever.
fn classic() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("classic".into()),
    );
    args
}

impl<'b> SharedPermits<'b> {
    /// Permits through `broker`'s connection.
    pub fn new(broker: &'b Broker) -> Self {
        Self { broker }
    }

    /// Waits for one of the `n` permits called `name` (seeding them if nobody has).
    ///
    /// Cancellation-safe: dropping the future while it waits gives back whatever it may
    /// have been handed.
    ///
    /// # Errors
    /// [`BrokerError::Amqp`] when the connection fails (the permit is not held).
    pub async fn acquire(&self, name: &str, n: u32) -> Result<Permit> {
        let [marker, lock, queue] = self.broker.topology.permit_queues(name, n.max(1));
        self.ensure_seeded(&queue, &marker, &lock, n.max(1)).await?;
        let channel = self.broker.channel().await?;
        // From here on the guard closes the channel if this future is dropped.
        let mut permit = Permit {
            channel: Some(channel.clone()),
            consumer: None,
        };
        channel
            .basic_qos(1, BasicQosOptions::default())
            .await
            .map_err(amqp("basic.qos"))?;
        let tag = format!(
            "permit-{}-{}",
            std::process::id(),
            CONSUMER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut consumer = channel
            .basic_consume(
                queue.clone().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                // The queue may have gone (a reset broker): seed again next time.
                if let Some(seeded) = SEEDED.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                    seeded.remove(&queue);
                }
                BrokerError::Amqp {
                    op: format!("consume {queue}"),
                    source: e,
                }
            })?;
        match consumer.next().await {
            Some(Ok(_token)) => {
                permit.consumer = Some(consumer);
                Ok(permit)
            }
            Some(Err(e)) => Err(BrokerError::Amqp {
                op: format!("waiting for a permit of {queue}"),
                source: e,
            }),
            None => Err(BrokerError::Closed(format!(
                "waiting for a permit of {queue}"
            ))),
        }
    }

    async fn ensure_seeded(&self, queue: &str, marker: &str, lock: &str, n: u32) -> Result<()> {
        let known = |q: &str| {
            SEEDED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|s| s.contains(q))
        };
        if known(queue) {
            return Ok(());
        }
        let _one_at_a_time = SEEDING.lock().await;
        if known(queue) {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        loop {
            // Any refusal (the lock held by another process: RESOURCE_LOCKED) closes the
            // channel; try again on a new one.
            match self.seed_under_lock(queue, marker, lock, n).await {
                Ok(()) => break,
                Err(e) if started.elapsed() > SEEDING_WAIT => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, %queue, "permits not seeded yet; trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        SEEDED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(HashSet::new)
            .insert(queue.to_string());
        Ok(())
    }

    /// Takes the seeding lock and, unless the marker queue holds its message (seeded
    /// before), seeds the tokens and leaves that message.
    async fn seed_under_lock(&self, queue: &str, marker: &str, lock: &str, n: u32) -> Result<()> {
        let channel = self.broker.channel().await?;
        let result = async {
            channel
                .queue_declare(
                    lock.to_string().into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(amqp(format!("taking the seeding lock {lock}")))?;
            channel
                .queue_declare(
                    marker.to_string().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    classic(),
                )
                .await
                .map_err(amqp(format!("declare {marker}")))?;
            let seeded = channel
                .basic_get(marker.to_string().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(amqp(format!("read {marker}")))?;
            match seeded {
                // Seeded before: put the marker back (closing the channel would too).
                Some(message) => {
                    let _ = message
                        .delivery
                        .acker
                        .reject(BasicRejectOptions { requeue: true })
                        .await;
                }
                None => self.seed(&channel, queue, marker, n).await?,
            }
            channel
                .queue_delete(lock.to_string().into(), QueueDeleteOptions::default())
                .await
                .map_err(amqp(format!("release the seeding lock {lock}")))?;
            Ok(())
        }
        .await;
        let _ = channel.close(200, "bye".into()).await;
        result
    }

    async fn seed(&self, channel: &Channel, queue: &str, marker: &str, n: u32) -> Result<()> {
        let args = classic();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.to_string().into(), durable, args)
            .await
            .map_err(amqp(format!("declare {queue}")))?;
        channel
            .queue_purge(queue.to_string().into(), QueuePurgeOptions::default())
            .await
            .map_err(amqp(format!("purge {queue}")))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("confirm.select"))?;
        for i in 0..n {
            channel
                .basic_publish(
                    "".into(),
                    queue.to_string().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    format!("permit {i} of {n}").as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .map_err(amqp(format!("seed {queue}")))?
                .await
                .map_err(amqp(format!("seed {queue}")))?;
        }
        // The marker: one message in the marker queue, left there for good.
        channel
            .basic_publish(
                "".into(),
                marker.to_string().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                format!("{n} permits seeded").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .map_err(amqp(format!("mark {marker}")))?
            .await
            .map_err(amqp(format!("mark {marker}")))?;
        tracing::info!(%queue, permits = n, "seeded shared permits");
        Ok(())
    }
}
