//! The topology against the real RabbitMQ: a retried message waits in exactly one tier and
//! then returns to the queue it came from; a parked message reaches both parking queues.

use std::time::Duration;

use sluice_broker::lapin::options::{BasicGetOptions, QueueDeclareOptions};
use sluice_broker::lapin::types::FieldTable;
use sluice_broker::{Broker, Headers, RetryTier, Route};
use sluice_contracts::Settings;

async fn broker() -> Broker {
    let prefix = format!(
        "test_broker_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let url = std::env::var("SLUICE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let settings = Settings::load_from(
        None,
        vec![
            ("SLUICE__AMQP__PREFIX".to_string(), prefix),
            ("SLUICE__AMQP__URL".to_string(), url),
        ],
    )
    .expect("settings");
    Broker::connect(&settings.amqp, "broker-test")
        .await
        .expect("RabbitMQ at 127.0.0.1:5672")
}

async fn depth(broker: &Broker, queue: &str) -> u32 {
    let channel = broker.channel().await.expect("channel");
    let q = channel
        .queue_declare(
            queue.to_string().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    q.message_count()
}

async fn cleanup(broker: Broker) {
    let channel = broker.channel().await.expect("channel");
    for q in broker.topology().all_queues() {
        let _ = channel.queue_delete(q.into(), Default::default()).await;
    }
    for e in broker.topology().all_exchanges() {
        let _ = channel.exchange_delete(e.into(), Default::default()).await;
    }
    broker.close().await;
}

#[tokio::test]
async fn a_retried_message_waits_in_one_tier_then_returns_to_its_queue() {
    let broker = broker().await;
    // Declaring twice is harmless (every service does it at start).
    let t = broker.topology().clone();
    broker
        .publish_retry(
            Route::Fetch,
            b"{\"probe\":1}",
            "FetchTask",
            RetryTier::S5,
            Headers::default(),
        )
        .await
        .expect("publish to the retry exchange");
    assert_eq!(depth(&broker, &t.retry_queue(RetryTier::S5)).await, 1);
    assert_eq!(depth(&broker, &t.retry_queue(RetryTier::S30)).await, 0);
    assert_eq!(depth(&broker, &t.retry_queue(RetryTier::M5)).await, 0);
    assert_eq!(depth(&broker, &t.queue(Route::Fetch)).await, 0);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while depth(&broker, &t.queue(Route::Fetch)).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "message never came back from the 5 s tier"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let channel = broker.channel().await.expect("channel");
    let back = channel
        .basic_get(
            t.queue(Route::Fetch).into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("get")
        .expect("the message");
    assert_eq!(back.delivery.data, b"{\"probe\":1}");
    assert_eq!(
        depth(&broker, &t.queue(Route::Fetch)).await,
        0,
        "delivered exactly once"
    );
    assert_eq!(depth(&broker, &t.retry_queue(RetryTier::S5)).await, 0);
    cleanup(broker).await;
}

#[tokio::test]
async fn a_parked_message_reaches_the_parking_lot_and_the_loader_notice() {
    let broker = broker().await;
    let t = broker.topology().clone();
    broker
        .park(Route::Fetch, b"{}", "FetchTask", "HTTP 404 from source", 3)
        .await
        .expect("park");
    assert_eq!(depth(&broker, &t.parked()).await, 1);
    assert_eq!(depth(&broker, &t.parked_notify()).await, 1);
    let channel = broker.channel().await.expect("channel");
    let msg = channel
        .basic_get(t.parked().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("parked message");
    let props = &msg.delivery.properties;
    assert_eq!(
        sluice_broker::header_str(props, sluice_broker::ERROR_HEADER).as_deref(),
        Some("HTTP 404 from source")
    );
    assert_eq!(
        sluice_broker::header_str(props, sluice_broker::ATTEMPTS_HEADER).as_deref(),
        Some("3")
    );
    assert_eq!(
        sluice_broker::header_str(props, sluice_broker::ORIGIN_HEADER).as_deref(),
        Some("fetch")
    );
    cleanup(broker).await;
}
