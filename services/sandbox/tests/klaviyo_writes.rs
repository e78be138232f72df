//! The Klaviyo emulation's write side over real HTTP: what is written is served by the
//! reads and by `GET /klaviyo/_admin/written`, survives a configuration change that keeps the
//! data, and is gone after one that changes it.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_sandbox::klaviyo::{JobTiming, KlaviyoConfig, KlaviyoDataSpec, WrittenSnapshot};
use sluice_sandbox::{SandboxConfig, run_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// One HTTP/1.1 request; `(status, JSON body or null)`.
async fn call(addr: SocketAddr, method: &str, target: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Klaviyo-API-Key pk_sandbox\r\nrevision: 2026-07-15\r\n\
         Content-Type: application/vnd.api+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = std::str::from_utf8(&raw[..split])
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (
        status,
        serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null),
    )
}

fn config(seed: u64) -> KlaviyoConfig {
    KlaviyoConfig {
        data: KlaviyoDataSpec {
            seed,
            profiles: 100,
            metrics: 2,
            events_per_metric: 100,
            ..KlaviyoDataSpec::default()
        },
        rate_limit_scale: None,
        jobs: JobTiming {
            queued_ms: 10,
            processing_ms: 10,
            cancelled_share: 0.0,
        },
        ..KlaviyoConfig::default()
    }
}

async fn written(addr: SocketAddr) -> Value {
    call(addr, "GET", "/klaviyo/_admin/written", None).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_read_back_and_follow_the_data() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run_with(
        SandboxConfig {
            cache_dir: cache.path().join("cache"),
        },
        config(1),
        listener,
        shutdown.clone(),
    ));

    let job = json!({"data": {"type": "catalog-category-bulk-create-job", "attributes": {"categories": {"data": [
        {"type": "catalog-category", "attributes": {"external_id": "men", "name": "Men"}},
        {"type": "catalog-category", "attributes": {"external_id": "women", "name": "Women"}},
    ]}}}});
    let (status, posted) = call(
        addr,
        "POST",
        "/api/catalog-category-bulk-create-jobs/",
        Some(&job),
    )
    .await;
    assert_eq!(status, 202, "{posted}");
    let id = posted["data"]["id"].as_str().unwrap();
    let mut final_status = String::new();
    for _ in 0..500 {
        let (_, j) = call(
            addr,
            "GET",
            &format!("/api/catalog-category-bulk-create-jobs/{id}/"),
            None,
        )
        .await;
        final_status = j["data"]["attributes"]["status"]
            .as_str()
            .unwrap()
            .to_owned();
        if final_status == "complete" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(final_status, "complete");
    let event = json!({"data": {"type": "event", "attributes": {
        "properties": {"OrderId": "o-1"}, "time": "2025-01-02T03:04:05Z", "value": 20, "unique_id": "o-1",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": "x@example.com", "external_id": "c-1"}}},
    }}});
    assert_eq!(
        call(addr, "POST", "/api/events/", Some(&event)).await.0,
        202
    );

    let (status, cats) = call(addr, "GET", "/api/catalog-categories?sort=created", None).await;
    assert_eq!(status, 200, "{cats}");
    let names: Vec<&str> = cats["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["attributes"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    let w = written(addr).await;
    assert_eq!(w["counts"]["catalog_categories"], 2);
    assert_eq!(w["counts"]["events"], 1);
    assert_eq!(w["events"][0]["metric"], "Placed Order");
    assert_eq!(w["events"][0]["event_properties"]["$value"], 20);
    assert_eq!(w["profiles"][0]["attributes"]["external_id"], "c-1");
    // The admin answer fits the typed snapshot.
    let typed: WrittenSnapshot = serde_json::from_value(w).unwrap();
    assert_eq!(typed.events[0].metric, "Placed Order");
    assert_eq!(typed.catalog_categories.len(), 2);

    // New faults keep the data and so what was written; new data start afresh.
    let (status, _) = call(addr, "POST", "/klaviyo/_admin/faults", Some(&json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(written(addr).await["counts"]["events"], 1);
    let (status, _) = call(
        addr,
        "POST",
        "/klaviyo/_admin/config",
        Some(&json!(config(2))),
    )
    .await;
    assert_eq!(status, 200);
    let w = written(addr).await;
    assert_eq!(w["counts"]["events"], 0);
    assert_eq!(w["counts"]["catalog_categories"], 0);

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
