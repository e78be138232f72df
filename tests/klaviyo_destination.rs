//! The loader writes mapped parts into a `klaviyo` destination (a mock Klaviyo, `wiremock`):
//! profiles through bulk import jobs with their import errors in `sluice.rejected_rows`,
//! catalog categories created, then — a second push of the same records — updated, with
//! nothing created and no error; `jobs show`'s changes per table say which.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_broker::{Broker, Headers, Route};
use sluice_contracts::{MESSAGE_VERSION, MergeSpec, RecordBatch};
use sluice_e2e::{TestEnv, init_logging};
use uuid::Uuid;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "pk_e2e_destination_key";

fn job_answer(kind: &str, id: &str, status: &str, total: usize, failed: usize) -> ResponseTemplate {
    ResponseTemplate::new(if status == "queued" { 202 } else { 200 }).set_body_json(json!({
        "data": {"type": kind, "id": id, "attributes": {
            "status": status, "created_at": "2026-12-07T00:00:00+00:00", "total_count": total,
            "completed_count": if status == "complete" { total - failed } else { 0 },
            "failed_count": failed}}}))
}

/// The categories Klaviyo has: created by create jobs, found by `any(ids,[…])`.
#[derive(Clone, Default)]
struct Categories(Arc<Mutex<HashSet<String>>>);

impl Respond for Categories {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let stored = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if r.method.as_str() == "GET" {
            let filter = r
                .url
                .query_pairs()
                .find(|(k, _)| k == "filter")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let data: Vec<Value> = stored
                .iter()
                .filter(|id| filter.contains(&format!("\"{id}\"")))
                .map(|id| json!({"type": "catalog-category", "id": id}))
                .collect();
            return ResponseTemplate::new(200)
                .set_body_json(json!({"data": data, "links": {"next": null}}));
        }
        drop(stored);
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let data = body
            .pointer("/data/attributes/categories/data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let create = r.url.path().contains("-create-");
        if create {
            let mut stored = self.0.lock().unwrap_or_else(|p| p.into_inner());
            for c in &data {
                if let Some(x) = c.pointer("/attributes/external_id").and_then(Value::as_str) {
                    stored.insert(format!("$custom:::$default:::{x}"));
                }
            }
        }
        let (kind, id) = if create {
            ("catalog-category-bulk-create-job", "CREATE")
        } else {
            ("catalog-category-bulk-update-job", "UPDATE")
        };
        // The job id carries its size, for its status.
        job_answer(
            kind,
            &format!("{id}-{}", data.len()),
            "queued",
            data.len(),
            0,
        )
    }
}

/// A catalog job's final status: `<ACTION>-<size>`, complete.
struct Finished;

impl Respond for Finished {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let id = r.url.path().rsplit('/').next().unwrap_or_default();
        let size = id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let action = if id.starts_with("CREATE") {
            "create"
        } else {
            "update"
        };
        job_answer(
            &format!("catalog-category-bulk-{action}-job"),
            id,
            "complete",
            size,
            0,
        )
    }
}

fn part(
    job_id: Uuid,
    task: &str,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Value>>,
) -> RecordBatch {
    RecordBatch {
        v: MESSAGE_VERSION,
        job_id,
        task_id: format!("{job_id}/{task}"),
        stream: "customers".into(),
        part: 0,
        task_complete: true,
        table: table.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
        merge: MergeSpec::default(),
        children: Vec::new(),
        cursor_max: None,
        rejected: Vec::new(),
    }
}

/// A running job into destination `kv` with `tasks`, as the planner records it.
async fn new_job(env: &TestEnv, tasks: &[&str]) -> Uuid {
    let job_id = Uuid::new_v4();
    let client = env.pool.get().await.expect("connection");
    client
        .execute(
            "INSERT INTO sluice.jobs (id, connector, stream, state, destination, tasks_total)
             VALUES ($1, 'commercetools', 'customers', 'running', 'kv', $2)",
            &[&job_id, &(tasks.len() as i64)],
        )
        .await
        .expect("job");
    let ids: Vec<String> = tasks.iter().map(|t| format!("{job_id}/{t}")).collect();
    client
        .execute(
            "INSERT INTO sluice.tasks (task_id, job_id, stream, kind, published_at)
             SELECT t, $2, 'customers', '{}'::jsonb, now() FROM unnest($1::text[]) t",
            &[&ids, &job_id],
        )
        .await
        .expect("tasks");
    job_id
}

async fn publish(env: &TestEnv, parts: &[RecordBatch]) {
    let broker = Broker::connect(&env.settings.amqp, "sluice-e2e")
        .await
        .expect("broker");
    for p in parts {
        broker
            .publish(Route::Load, p, Headers::default().traced(p.job_id))
            .await
            .expect("publish");
    }
    broker.close().await;
}

fn categories(job_id: Uuid) -> RecordBatch {
    part(
        job_id,
        "categories",
        "klaviyo.catalog-category",
        &["id", "op", "attributes"],
        (0..150)
            .map(|i| {
                vec![
                    json!(format!("$custom:::$default:::cat-{i}")),
                    json!("upsert"),
                    json!({"external_id": format!("cat-{i}"), "name": format!("Women > {i}")}),
                ]
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_writes_profiles_and_categories_into_klaviyo_and_a_second_push_only_updates() {
    init_logging();
    let server = MockServer::start().await;
    let stored = Categories::default();
    Mock::given(path_regex(
        "^/api/catalog-categor(ies|y-bulk-(create|update)-jobs)$",
    ))
    .respond_with(stored.clone())
    .mount(&server)
    .await;
    Mock::given(method("GET"))
        .and(path_regex(
            "^/api/catalog-category-bulk-(create|update)-jobs/[A-Z]+-[0-9]+$",
        ))
        .respond_with(Finished)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/profile-bulk-import-jobs"))
        .respond_with(job_answer("profile-bulk-import-job", "P", "queued", 2, 0))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/profile-bulk-import-jobs/P"))
        .respond_with(job_answer("profile-bulk-import-job", "P", "complete", 2, 1))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/profile-bulk-import-jobs/P/import-errors"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"type": "import-error", "id": "e", "attributes": {"code": "invalid", "title": "Invalid input",
             "detail": "Invalid email address", "source": {"pointer": "/data/attributes/profiles/data/1/attributes/email"},
             "original_payload": {"email": "not-an-email", "external_id": "c2"}}}], "links": {"next": null}})))
        .mount(&server)
        .await;

    let mut env = TestEnv::new().await.expect("test environment");
    env.set_connector_setting("klaviyo", "accounts.default.api_key", KEY);
    env.set_connector_setting("klaviyo", "accounts.default.base_url", &server.uri());
    let mut section = sluice_contracts::config::Section::default();
    section.set("kind", "klaviyo");
    section.set("poll_interval_ms", 20);
    env.settings.destinations.insert("kv".into(), section);
    env.start_loader();

    let first = new_job(&env, &["profiles", "categories"]).await;
    let profiles = part(
        first,
        "profiles",
        "klaviyo.profile",
        &["id", "attributes"],
        vec![
            vec![
                json!("c1"),
                json!({"email": "a@example.com", "external_id": "c1"}),
            ],
            vec![
                json!("c2"),
                json!({"email": "not-an-email", "external_id": "c2"}),
            ],
        ],
    );
    publish(&env, &[profiles, categories(first)]).await;
    let report = env
        .wait_job(first, Duration::from_secs(60))
        .await
        .expect("first push");
    assert_eq!(report.summary.state.as_str(), "succeeded", "{report:?}");
    assert_eq!(report.summary.rows_loaded, 151);
    assert_eq!(report.summary.rows_rejected, 1);
    let client = env.pool.get().await.expect("connection");
    let rejected = client
        .query_one(
            "SELECT table_name, error, record->>'id' FROM sluice.rejected_rows WHERE job_id = $1",
            &[&first],
        )
        .await
        .expect("the rejected profile");
    assert_eq!(rejected.get::<_, String>(0), "klaviyo.profile");
    assert!(
        rejected
            .get::<_, String>(1)
            .contains("Invalid email address")
    );
    assert_eq!(rejected.get::<_, String>(2), "c2");
    let changes = &report.changes_per_table["klaviyo.catalog-category"];
    assert_eq!(
        (changes.inserted, changes.updated),
        (Some(150), Some(0)),
        "{changes:?}"
    );
    assert_eq!(stored.0.lock().expect("categories").len(), 150);

    // The same categories again: every id is found, so they are updated, none created.
    let creates_before = server
        .received_requests()
        .await
        .expect("requests")
        .iter()
        .filter(|r| r.url.path() == "/api/catalog-category-bulk-create-jobs")
        .count();
    let second = new_job(&env, &["categories"]).await;
    publish(&env, &[categories(second)]).await;
    let report = env
        .wait_job(second, Duration::from_secs(60))
        .await
        .expect("second push");
    assert_eq!(report.summary.state.as_str(), "succeeded", "{report:?}");
    assert_eq!(
        (report.summary.rows_loaded, report.summary.rows_rejected),
        (150, 0)
    );
    let changes = &report.changes_per_table["klaviyo.catalog-category"];
    assert_eq!(
        (changes.inserted, changes.updated),
        (Some(0), Some(150)),
        "{changes:?}"
    );
    let requests = server.received_requests().await.expect("requests");
    let creates = requests
        .iter()
        .filter(|r| r.url.path() == "/api/catalog-category-bulk-create-jobs")
        .count();
    assert_eq!(
        creates, creates_before,
        "nothing created by the second push"
    );
    env.teardown().await.expect("teardown");
}

/// A loader process that dies between its Klaviyo write and the ledger settle (the
/// protocol's one dangerous point): once restarted, the redelivered part finds every
/// category in Klaviyo, so it is updated — nothing created twice — and counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_killed_between_the_klaviyo_write_and_the_settle_creates_nothing_twice() {
    init_logging();
    let server = MockServer::start().await;
    let stored = Categories::default();
    Mock::given(path_regex(
        "^/api/catalog-categor(ies|y-bulk-(create|update)-jobs)$",
    ))
    .respond_with(stored.clone())
    .mount(&server)
    .await;
    Mock::given(method("GET"))
        .and(path_regex(
            "^/api/catalog-category-bulk-(create|update)-jobs/[A-Z]+-[0-9]+$",
        ))
        .respond_with(Finished)
        .mount(&server)
        .await;
    let mut env = TestEnv::new().await.expect("test environment");
    let uri = server.uri();
    let vars = [
        (
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY",
            KEY,
        ),
        (
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__BASE_URL",
            uri.as_str(),
        ),
        ("SLUICE__DESTINATIONS__KV__KIND", "klaviyo"),
        ("SLUICE__DESTINATIONS__KV__POLL_INTERVAL_MS", "20"),
        ("SLUICE__LOADER__GROUP_PARTS", "1"),
    ];
    let mut crashing = vars.to_vec();
    crashing.push(("SLUICE_CRASH_AFTER_DESTINATION_WRITE", "1"));
    let loader = env.spawn("loader", &crashing).expect("loader");

    let job = new_job(&env, &["categories"]).await;
    publish(&env, &[categories(job)]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = env.exit_status(loader) {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the loader never reached its crash point"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(6),
        "the loader should have aborted at the crash point: {status:?}"
    );
    // The categories are in Klaviyo; the ledger has nothing of them.
    assert_eq!(stored.0.lock().expect("categories").len(), 150);
    let before = env.report(job).await.expect("report");
    assert_eq!(
        (before.summary.state.as_str(), before.summary.rows_loaded),
        ("running", 0)
    );

    env.spawn("loader", &vars).expect("loader again");
    let report = env
        .wait_job(job, Duration::from_secs(60))
        .await
        .expect("job");
    assert_eq!(report.summary.state.as_str(), "succeeded", "{report:?}");
    assert_eq!(
        (report.summary.rows_loaded, report.summary.rows_rejected),
        (150, 0)
    );
    let changes = &report.changes_per_table["klaviyo.catalog-category"];
    assert_eq!(
        (changes.inserted, changes.updated),
        (Some(0), Some(150)),
        "{changes:?}"
    );
    let creates: usize = server
        .received_requests()
        .await
        .expect("requests")
        .iter()
        .filter(|r| r.url.path() == "/api/catalog-category-bulk-create-jobs")
        .map(|r| {
            String::from_utf8_lossy(&r.body)
                .matches("\"external_id\"")
                .count()
        })
        .sum();
    assert_eq!(creates, 150, "each category created once");
    env.teardown().await.expect("teardown");
}
