//! Shared permits against the real RabbitMQ: two connections (two "processes") never hold
//! more than `n` permits at once, waiters get them as they come back, and a connection
//! that dies gives back what it held.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sluice_broker::{Broker, SharedPermits};
use sluice_contracts::Settings;

fn settings(prefix: &str) -> Settings {
    let url = std::env::var("SLUICE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    Settings::load_from(
        None,
        vec![
            ("SLUICE__AMQP__PREFIX".to_string(), prefix.to_string()),
            ("SLUICE__AMQP__URL".to_string(), url),
        ],
    )
    .expect("settings")
}

async fn cleanup(broker: &Broker, n: u32) {
    let channel = broker.channel().await.expect("channel");
    for q in broker
        .topology()
        .all_queues()
        .into_iter()
        .chain(broker.topology().permit_queues("api", n))
    {
        let _ = channel.queue_delete(q.into(), Default::default()).await;
    }
    for e in broker.topology().all_exchanges() {
        let _ = channel.exchange_delete(e.into(), Default::default()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_connections_never_hold_more_than_n_and_a_dead_one_gives_back_its_permits() {
    let prefix = format!(
        "test_permits_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let s = settings(&prefix);
    let a = Arc::new(
        Broker::connect(&s.amqp, "permits-a")
            .await
            .expect("RabbitMQ"),
    );
    let b = Arc::new(
        Broker::connect(&s.amqp, "permits-b")
            .await
            .expect("RabbitMQ"),
    );
    let held = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..24 {
        let broker = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (held, peak) = (held.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let permit = SharedPermits::new(&broker)
                    .acquire("api", 3)
                    .await
                    .expect("permit");
                let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
                held.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // Exact, and used: all three were held at once at some point.
    assert_eq!(peak.load(Ordering::SeqCst), 3);

    // A connection dies holding all three permits: they come back.
    let c = Broker::connect(&s.amqp, "permits-c")
        .await
        .expect("RabbitMQ");
    let p = SharedPermits::new(&c);
    let held_by_c = vec![
        p.acquire("api", 3).await.expect("1"),
        p.acquire("api", 3).await.expect("2"),
        p.acquire("api", 3).await.expect("3"),
    ];
    let waiting = tokio::time::timeout(
        Duration::from_millis(300),
        SharedPermits::new(&a).acquire("api", 3),
    )
    .await;
    assert!(waiting.is_err(), "a fourth permit was handed out");
    std::mem::forget(held_by_c);
    c.close().await;
    let back = tokio::time::timeout(
        Duration::from_secs(5),
        SharedPermits::new(&a).acquire("api", 3),
    )
    .await
    .expect("the dead connection's permits came back")
    .expect("permit");
    drop(back);
    cleanup(&a, 3).await;
}
