//! End to end: the planner's drop-in of the commercetools–Klaviyo plugin's HTTP API
//! (`docs/klaviyo-sync.md`) against the real services, RabbitMQ and Postgres: starts,
//! the 423 of a concurrent start, stop, status with the last summary, the refusals the
//! plugin had, and the bearer token.
//!
//! These tests point the API at the ledger's own Postgres destination: what is checked
//! here is the API and the job lifecycle behind it, which do not depend on where the
//! records go (the Klaviyo round trip has its own tests).

use std::time::Duration;

use serde_json::{Value, json};
use sluice_e2e::{TestEnv, init_logging};
use sluice_sandbox::commercetools::{CommercetoolsConfig, CommercetoolsDataSpec, FaultConfig};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(180);

/// A small project whose every request takes `latency_ms`, read 20 resources a page, so a
/// sync of its orders runs for several seconds.
async fn slow_project(env: &mut TestEnv, latency_ms: u64) {
    env.start_commercetools_sandbox(CommercetoolsConfig {
        data: CommercetoolsDataSpec {
            seed: 11,
            customers: 120,
            orders: 1_500,
            categories: 4,
            products: 10,
            ..CommercetoolsDataSpec::default()
        },
        faults: FaultConfig {
            latency_ms,
            ..FaultConfig::default()
        },
        ..CommercetoolsConfig::default()
    })
    .await
    .expect("sandbox");
    env.set_connector_setting("commercetools", "page_size", "20");
    env.set_connector_setting("commercetools", "split_into", "2");
}

async fn post(url: &str, body: Option<Value>) -> (u16, String, Option<Uuid>) {
    let mut request = reqwest::Client::new().post(url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect(url);
    let status = response.status().as_u16();
    let job = response
        .headers()
        .get("x-sluice-job-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, response.text().await.expect("body"), job)
}

fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body).expect("a JSON body")["message"]
        .as_str()
        .expect("a message")
        .to_string()
}

/// Waits until the planner serves the API and is connected to RabbitMQ (a start answers
/// 503 before), then posts.
async fn post_when_ready(
    api: &str,
    route: &str,
    body: Option<Value>,
) -> (u16, String, Option<Uuid>) {
    let client = reqwest::Client::new();
    let url = format!("{api}/sync/{route}");
    for _ in 0..300 {
        if client
            .get(format!("{api}/sync/status"))
            .send()
            .await
            .is_ok()
        {
            let answer = post(&url, body.clone()).await;
            if answer.0 != 503 {
                return answer;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sync API did not come up at {url}");
}

async fn status(api: &str) -> Value {
    reqwest::get(format!("{api}/sync/status"))
        .await
        .expect("status")
        .json()
        .await
        .expect("status JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_starts_refuses_a_second_start_stops_and_reports_its_summary() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    slow_project(&mut env, 150).await;
    let api = env.enable_sync_api("postgres").expect("sync API port");
    env.start_pipeline(1);

    // Start, then start again while it runs: the plugin's 423.
    let (code, body, job) = post_when_ready(&api, "orders", None).await;
    assert_eq!(code, 202, "{body}");
    assert!(
        body.is_empty(),
        "202 with an empty body, as the plugin: {body:?}"
    );
    let orders_job = job.expect("the job id header");
    let (code, body, _) = post(&format!("{api}/sync/orders"), Some(json!({}))).await;
    assert_eq!(code, 423, "{body}");
    assert_eq!(message(&body), "Orders sync is already running.");

    let s = status(&api).await;
    assert_eq!(s["orders"]["running"]["id"], json!(orders_job), "{s:#}");
    assert_eq!(s["customers"]["running"], Value::Null, "{s:#}");

    // Stop ends it (cancelled in the ledger); a second stop has nothing to stop.
    let (code, body, _) = post(&format!("{api}/sync/orders/stop"), None).await;
    assert_eq!(code, 200, "{body}");
    let report = env.wait_job(orders_job, WAIT).await.expect("the job ends");
    assert_eq!(report.summary.state, "cancelled", "{report:#?}");
    let (code, body, _) = post(&format!("{api}/sync/orders/stop"), None).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(message(&body), "Orders sync is not currently running.");

    // A stopped sync can start again at once, and the status keeps the last summary.
    let (code, body, job) = post(&format!("{api}/sync/customers"), None).await;
    assert_eq!(code, 202, "{body}");
    let customers_job = job.expect("the job id header");
    let report = env
        .wait_job(customers_job, WAIT)
        .await
        .expect("the job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    let s = status(&api).await;
    let last = &s["customers"]["last"];
    assert_eq!(last["job_id"], json!(customers_job), "{s:#}");
    assert_eq!(last["state"], "succeeded");
    assert_eq!(last["imported"], json!(report.summary.rows_loaded));
    assert!(report.summary.rows_loaded >= 120, "{report:#?}");
    assert_eq!(last["errored"], 0);
    assert!(last["elapsed_seconds"].as_f64().expect("seconds") > 0.0);
    assert_eq!(s["orders"]["last"]["state"], "cancelled", "{s:#}");

    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plugins_refusals_and_partial_imports() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    slow_project(&mut env, 0).await;
    let api = env.enable_sync_api("postgres").expect("sync API port");
    env.start_pipeline(1);

    let (code, body, _) = post_when_ready(&api, "carts", None).await;
    assert_eq!(code, 404, "{body}");
    for (route, body, code, text) in [
        (
            "products",
            json!({"deleteAll": true}),
            400,
            "add \"confirmDeletion\": \"products\"",
        ),
        (
            "categories",
            json!({"deleteAll": true, "confirmDeletion": "products"}),
            400,
            "add \"confirmDeletion\": \"categories\"",
        ),
        (
            "customers",
            json!({"deleteAll": true, "confirmDeletion": "customers"}),
            400,
            "only available for categories and products",
        ),
        (
            "products",
            json!({"ids": ["x"]}),
            400,
            "only available for customers and orders",
        ),
        ("carts", json!({}), 404, "no sync called"),
    ] {
        let (got, answer, job) = post(&format!("{api}/sync/{route}"), Some(body.clone())).await;
        assert_eq!(got, code, "{route} {body}: {answer}");
        assert!(message(&answer).contains(text), "{route} {body}: {answer}");
        assert!(job.is_none(), "no job for a refused request");
    }
    assert_eq!(
        env.pool
            .get()
            .await
            .expect("connection")
            .query_one("SELECT count(*) FROM sluice.jobs", &[])
            .await
            .expect("count")
            .get::<_, i64>(0),
        0,
        "a refused request records no job"
    );

    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_token_only_requests_carrying_it_are_served() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    slow_project(&mut env, 0).await;
    let api = env.enable_sync_api("postgres").expect("sync API port");
    env.settings.sync_api.token = Some("t0ken-for-tests".to_string().into());
    env.start_planner();

    let client = reqwest::Client::new();
    let url = format!("{api}/sync/status");
    let mut answer = None;
    // The planner binds the port as it starts.
    for _ in 0..100 {
        if let Ok(r) = client.get(&url).send().await {
            answer = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("the API answers");
    assert_eq!(answer.status().as_u16(), 401);
    let text = answer.text().await.expect("body");
    assert!(!text.contains("t0ken"), "the token is never echoed: {text}");
    for wrong in ["Bearer nope", "t0ken-for-tests", "Basic t0ken-for-tests"] {
        let r = client
            .get(&url)
            .header("authorization", wrong)
            .send()
            .await
            .expect("status");
        assert_eq!(r.status().as_u16(), 401, "{wrong}");
    }
    let r = client
        .get(&url)
        .bearer_auth("t0ken-for-tests")
        .send()
        .await
        .expect("status");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    for kind in ["customers", "orders", "categories", "products"] {
        assert_eq!(
            body[kind],
            json!({"running": null, "last": null}),
            "{body:#}"
        );
    }

    env.teardown().await.expect("teardown");
}
