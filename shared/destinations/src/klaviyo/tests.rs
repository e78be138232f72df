//! The destination against a mock Klaviyo (`wiremock`, real HTTP).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize};

use serde_json::{Value, json};
use sluice_contracts::{MergeSpec, RecordBatch, Settings};
use sluice_store::ledger::PartWriter;
use sluice_store::load::Changes;
use uuid::Uuid;
use wiremock::matchers::{header, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::sink::MAX_EVENTS_PER_JOB;
use super::*;
use crate::DestinationConfig;

const KEY: &str = "pk_test_SECRET123456";

fn settings(base: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env = vec![
        (
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY".to_string(),
            KEY.to_string(),
        ),
        (
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__BASE_URL".to_string(),
            base.to_string(),
        ),
        (
            "SLUICE__CONNECTORS__KLAVIYO__MAX_RETRY_AFTER_SECONDS".to_string(),
            "5".to_string(),
        ),
        (
            "SLUICE__CONNECTORS__KLAVIYO__REQUEST_TIMEOUT_SECONDS".to_string(),
            "5".to_string(),
        ),
        (
            "SLUICE__DESTINATIONS__KV__KIND".to_string(),
            "klaviyo".to_string(),
        ),
        (
            "SLUICE__DESTINATIONS__KV__POLL_INTERVAL_MS".to_string(),
            "10".to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::load_from(None, env).unwrap()
}

fn destination(server: &MockServer) -> Klaviyo {
    destination_with(server, &[])
}

fn destination_with(server: &MockServer, extra: &[(&str, &str)]) -> Klaviyo {
    let s = settings(&server.uri(), extra);
    match DestinationConfig::all(&s).unwrap().remove("kv").unwrap() {
        DestinationConfig::Klaviyo(c) => c.build("kv", &s, Arc::new(AtomicU32::new(1))).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// A part of `table` with these columns and rows (job and task ids fixed).
pub(super) fn batch(table: &str, columns: &[&str], rows: Vec<Vec<Value>>) -> RecordBatch {
    RecordBatch {
        v: 1,
        job_id: Uuid::nil(),
        task_id: "t".into(),
        stream: "s".into(),
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

/// Answers with each template in turn, repeating the last.
struct Sequence(Vec<ResponseTemplate>, AtomicUsize);

impl Sequence {
    fn new(templates: Vec<ResponseTemplate>) -> Self {
        Self(templates, AtomicUsize::new(0))
    }
}

impl Respond for Sequence {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0[n.min(self.0.len() - 1)].clone()
    }
}

fn job(
    kind: &str,
    id: &str,
    status: &str,
    total: u64,
    failed: u64,
    errors: Value,
) -> ResponseTemplate {
    ResponseTemplate::new(if status == "queued" { 202 } else { 200 }).set_body_json(json!({
        "data": {"type": kind, "id": id, "attributes": {
            "status": status, "created_at": "2026-12-07T00:00:00+00:00", "total_count": total,
            "completed_count": if status == "complete" { total - failed } else { 0 },
            "failed_count": failed, "errors": errors}}}))
}

async fn bodies(server: &MockServer, method_name: &str, path_name: &str) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == method_name && r.url.path() == path_name)
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

fn profile_row(id: &str, phone: Option<&str>) -> Vec<Value> {
    let mut attributes =
        json!({"email": format!("{id}@example.com"), "external_id": id, "first_name": "A"});
    if let Some(p) = phone {
        attributes["phone_number"] = json!(p);
    }
    vec![json!(id), attributes]
}

#[test]
fn settings_parse_refuse_unknown_keys_and_need_the_account_key() {
    let s = settings(
        "http://127.0.0.1:1",
        &[("SLUICE__DESTINATIONS__KV__PREFERRED_CURRENCY", "EUR")],
    );
    let DestinationConfig::Klaviyo(c) = DestinationConfig::all(&s).unwrap().remove("kv").unwrap()
    else {
        panic!("not klaviyo");
    };
    assert_eq!(c.account, "default");
    assert_eq!(c.preferred_currency.as_deref(), Some("EUR"));
    assert_eq!((c.poll_interval_ms, c.poll_timeout_seconds), (10, 900));

    let err = DestinationConfig::all(&settings(
        "http://h",
        &[("SLUICE__DESTINATIONS__KV__POLL_INTERVALL_MS", "5")],
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("poll_intervall_ms"), "{err}");

    let s = settings("http://h", &[("SLUICE__DESTINATIONS__KV__ACCOUNT", "shop")]);
    let DestinationConfig::Klaviyo(c) = DestinationConfig::all(&s).unwrap().remove("kv").unwrap()
    else {
        panic!("not klaviyo");
    };
    let err = c
        .build("kv", &s, Arc::new(AtomicU32::new(1)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__SHOP__API_KEY"),
        "{err}"
    );
    assert!(!err.contains(KEY), "{err}");
}

#[tokio::test]
async fn profiles_are_imported_in_jobs_of_10000_polled_to_the_end() {
    let server = MockServer::start().await;
    let ids = Arc::new(AtomicUsize::new(0));
    struct NewJob(Arc<AtomicUsize>);
    impl Respond for NewJob {
        fn respond(&self, r: &Request) -> ResponseTemplate {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let total = body
                .pointer("/data/attributes/profiles/data")
                .unwrap()
                .as_array()
                .unwrap()
                .len();
            job(
                "profile-bulk-import-job",
                &format!("P{n}"),
                "queued",
                total as u64,
                0,
                json!([]),
            )
        }
    }
    Mock::given(method("POST"))
        .and(path("/api/profile-bulk-import-jobs"))
        .and(header(
            "authorization",
            format!("Klaviyo-API-Key {KEY}").as_str(),
        ))
        .and(header("revision", "2026-07-15"))
        .respond_with(NewJob(ids.clone()))
        .mount(&server)
        .await;
    // Each job is seen queued, then processing, then complete.
    for n in 0..2 {
        let total = if n == 0 { 10_000 } else { 1 };
        Mock::given(method("GET"))
            .and(path(format!("/api/profile-bulk-import-jobs/P{n}")))
            .respond_with(Sequence::new(vec![
                job(
                    "profile-bulk-import-job",
                    &format!("P{n}"),
                    "queued",
                    total,
                    0,
                    json!([]),
                ),
                job(
                    "profile-bulk-import-job",
                    &format!("P{n}"),
                    "processing",
                    total,
                    0,
                    json!([]),
                ),
                job(
                    "profile-bulk-import-job",
                    &format!("P{n}"),
                    "complete",
                    total,
                    0,
                    json!([]),
                ),
            ]))
            .expect(3)
            .mount(&server)
            .await;
    }
    let k = destination(&server);
    let rows: Vec<Vec<Value>> = (0..10_001)
        .map(|i| profile_row(&format!("c{i}"), None))
        .collect();
    let part = batch(PROFILE_TABLE, &["id", "attributes"], rows);
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    assert_eq!(out[0][0].rows, 10_001);
    assert!(out[0][0].rejected.is_empty(), "{:?}", out[0][0].rejected);
    let posted = bodies(&server, "POST", "/api/profile-bulk-import-jobs").await;
    let mut sizes: Vec<usize> = posted
        .iter()
        .map(|b| {
            b.pointer("/data/attributes/profiles/data")
                .unwrap()
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![1, 10_000]);
    assert_eq!(posted[0]["data"]["type"], "profile-bulk-import-job");
    assert_eq!(
        posted[0]
            .pointer("/data/attributes/profiles/data/0/type")
            .unwrap(),
        "profile"
    );
}

#[tokio::test]
async fn import_errors_become_rejects_and_a_bad_phone_is_sent_again_without_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/profile-bulk-import-jobs"))
        .respond_with(Sequence::new(vec![
            job("profile-bulk-import-job", "J1", "queued", 3, 0, json!([])),
            job("profile-bulk-import-job", "J2", "queued", 1, 0, json!([])),
        ]))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/profile-bulk-import-jobs/J1"))
        .respond_with(job(
            "profile-bulk-import-job",
            "J1",
            "complete",
            3,
            2,
            json!([]),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/profile-bulk-import-jobs/J2"))
        .respond_with(job(
            "profile-bulk-import-job",
            "J2",
            "complete",
            1,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    // Two pages of errors: the phone of c1, the email of c2.
    Mock::given(method("GET"))
        .and(path("/api/profile-bulk-import-jobs/J1/import-errors"))
        .and(query_param("page[cursor]", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"type": "import-error", "id": "e2", "attributes": {"code": "invalid", "title": "Invalid input",
             "detail": "Invalid email address", "source": {"pointer": "/data/attributes/profiles/data/2/attributes/email"},
             "original_payload": {"email": "bad", "external_id": "c2"}}}], "links": {"next": null}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/profile-bulk-import-jobs/J1/import-errors"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"type": "import-error", "id": "e1", "attributes": {"code": "invalid", "title": "Invalid input",
             "detail": "Invalid phone number format", "source": {"pointer": "/data/attributes/profiles/data/1/attributes/phone_number"},
             "original_payload": {"email": "c1@example.com", "external_id": "c1", "phone_number": "12"}}}],
            "links": {"next": format!("{}/api/profile-bulk-import-jobs/J1/import-errors?page%5Bcursor%5D=2", server.uri())}})))
        .mount(&server)
        .await;
    let k = destination(&server);
    let part = batch(
        PROFILE_TABLE,
        &["id", "attributes"],
        vec![
            profile_row("c0", Some("+15005550006")),
            profile_row("c1", Some("12")),
            profile_row("c2", None),
        ],
    );
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    let outcome = &out[0][0];
    assert_eq!(outcome.rows, 2);
    assert_eq!(outcome.rejected.len(), 1, "{:?}", outcome.rejected);
    let reject = &outcome.rejected[0];
    assert_eq!(reject.raw["id"], "c2");
    assert_eq!(reject.table.as_deref(), Some(PROFILE_TABLE));
    assert!(
        reject.error.contains("Invalid email address") && reject.error.contains("J1"),
        "{}",
        reject.error
    );
    // The second job carries c1 alone, without its phone number.
    let posted = bodies(&server, "POST", "/api/profile-bulk-import-jobs").await;
    assert_eq!(posted.len(), 2);
    let again = posted[1]
        .pointer("/data/attributes/profiles/data")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["attributes"]["external_id"], "c1");
    assert!(again[0]["attributes"].get("phone_number").is_none());
    assert!(outcome.changes.is_none());
}

/// An event row (`id`, `attributes`): the `n`th, of profile `p<profile>`.
fn event(n: usize, profile: usize, unique: &str) -> Vec<Value> {
    vec![
        json!(format!("Placed Order:{unique}")),
        json!({"metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
               "profile": {"data": {"type": "profile", "attributes": {"email": format!("p{profile}@x.io"), "external_id": format!("p{profile}")}}},
               "properties": {"n": n}, "time": "2026-01-01T00:00:00Z", "value": 1.5, "unique_id": unique}),
    ]
}

/// Events per request to the event bulk endpoint that Klaviyo accepted (none `bad`).
async fn accepted_event_jobs(server: &MockServer) -> Vec<usize> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/event-bulk-create-jobs")
        .filter(|r| !String::from_utf8_lossy(&r.body).contains("\"unique_id\":\"bad\""))
        .map(|r| {
            String::from_utf8_lossy(&r.body)
                .matches("\"unique_id\"")
                .count()
        })
        .collect()
}

/// Event bulk jobs: 202, or a 400 naming (by `source.pointer`) the first event whose
/// `unique_id` is `bad`.
struct Events;
impl Respond for Events {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let groups = body
            .pointer("/data/attributes/events-bulk-create/data")
            .unwrap()
            .as_array()
            .unwrap();
        for (g, group) in groups.iter().enumerate() {
            for (j, e) in group
                .pointer("/attributes/events/data")
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
            {
                if e.pointer("/attributes/unique_id") == Some(&json!("bad")) {
                    return ResponseTemplate::new(400).set_body_json(json!({"errors": [{"id": "x", "status": 400,
                        "code": "invalid", "title": "Invalid input.", "detail": "'time' must be after 1990",
                        "source": {"pointer": format!("/data/attributes/events-bulk-create/data/{g}/attributes/events/data/{j}/attributes/time")}}]}));
                }
            }
        }
        ResponseTemplate::new(202)
    }
}
#[tokio::test]
async fn events_go_in_jobs_of_1000_grouped_by_profile_and_a_refused_event_alone_is_rejected() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/event-bulk-create-jobs"))
        .respond_with(Events)
        .mount(&server)
        .await;
    let k = destination(&server);
    let mut rows: Vec<Vec<Value>> = (0..2_500)
        .map(|n| event(n, n % 7, &format!("u{n}")))
        .collect();
    rows.push(event(9_999, 3, "bad"));
    let part = batch(EVENT_TABLE, &["id", "attributes"], rows);
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    assert_eq!(out[0][0].rows, 2_500);
    assert_eq!(out[0][0].rejected.len(), 1);
    assert!(
        out[0][0].rejected[0]
            .error
            .contains("'time' must be after 1990"),
        "{:?}",
        out[0][0].rejected
    );
    assert_eq!(out[0][0].rejected[0].raw["id"], "Placed Order:bad");

    let mut sent = 0;
    for body in bodies(&server, "POST", "/api/event-bulk-create-jobs").await {
        assert_eq!(body["data"]["type"], "event-bulk-create-job");
        let groups = body
            .pointer("/data/attributes/events-bulk-create/data")
            .unwrap()
            .as_array()
            .unwrap();
        let profiles: std::collections::HashSet<String> = groups
            .iter()
            .map(|g| g.pointer("/attributes/profile/data").unwrap().to_string())
            .collect();
        assert_eq!(profiles.len(), groups.len(), "one element per profile");
        let events: usize = groups
            .iter()
            .map(|g| {
                g.pointer("/attributes/events/data")
                    .unwrap()
                    .as_array()
                    .unwrap()
                    .len()
            })
            .sum();
        assert!(events <= MAX_EVENTS_PER_JOB);
        for g in groups {
            for e in g
                .pointer("/attributes/events/data")
                .unwrap()
                .as_array()
                .unwrap()
            {
                assert!(e.pointer("/attributes/profile").is_none());
                if e.pointer("/attributes/unique_id") != Some(&json!("bad")) {
                    sent += 1;
                }
            }
        }
    }
    // Every good event accepted once (the refused request's good events are sent again).
    let accepted: usize = accepted_event_jobs(&server).await.iter().sum();
    assert_eq!(accepted, 2_500);
    assert!(sent >= 2_500);
}

#[tokio::test]
async fn event_writes_in_flight_share_jobs_and_each_gets_its_own_refusals() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/event-bulk-create-jobs"))
        .respond_with(Events)
        .mount(&server)
        .await;
    let k = destination(&server);
    // Three parts of 400 events, as three loader transactions write them at once; the
    // last carries one event Klaviyo refuses.
    let part = |from: usize, bad: bool| {
        let mut rows: Vec<Vec<Value>> = (from..from + 400)
            .map(|n| event(n, n % 5, &format!("u{n}")))
            .collect();
        if bad {
            rows.push(event(9_999, 4, "bad"));
        }
        batch(EVENT_TABLE, &["id", "attributes"], rows)
    };
    let (a, b, c) = (part(0, false), part(400, false), part(800, true));
    let (ua, ub, uc) = ([vec![&a]], [vec![&b]], [vec![&c]]);
    let (a, b, c) = tokio::join!(
        PartWriter::write(&k, &ua),
        PartWriter::write(&k, &ub),
        PartWriter::write(&k, &uc),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!((a[0][0].rows, b[0][0].rows, c[0][0].rows), (400, 400, 400));
    assert!(a[0][0].rejected.is_empty() && b[0][0].rejected.is_empty());
    assert_eq!(c[0][0].rejected.len(), 1, "{:?}", c[0][0].rejected);
    assert_eq!(c[0][0].rejected[0].raw["id"], "Placed Order:bad");
    // 1,200 good events in two full-as-can-be jobs, not one job per part.
    let mut jobs = accepted_event_jobs(&server).await;
    jobs.sort_unstable();
    assert_eq!(jobs, vec![200, 1_000]);
}

fn catalog_lookup(ids: &'static [&'static str]) -> impl Respond {
    struct Lookup(&'static [&'static str]);
    impl Respond for Lookup {
        fn respond(&self, r: &Request) -> ResponseTemplate {
            let filter = r
                .url
                .query_pairs()
                .find(|(k, _)| k == "filter")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let data: Vec<Value> = self
                .0
                .iter()
                .filter(|id| filter.contains(&format!("\"{id}\"")))
                .map(|id| json!({"type": "catalog-item", "id": id, "attributes": {}}))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({"data": data, "links": {"next": null}}))
        }
    }
    Lookup(ids)
}

#[tokio::test]
async fn catalog_items_are_created_or_updated_by_lookup_and_job_errors_are_rejects() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-items"))
        .respond_with(catalog_lookup(&["$custom:::$default:::P2"]))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/catalog-item-bulk-create-jobs"))
        .respond_with(job(
            "catalog-item-bulk-create-job",
            "C1",
            "queued",
            2,
            0,
            json!([]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-item-bulk-create-jobs/C1"))
        .respond_with(Sequence::new(vec![
            job(
                "catalog-item-bulk-create-job",
                "C1",
                "queued",
                2,
                0,
                json!([]),
            ),
            job(
                "catalog-item-bulk-create-job",
                "C1",
                "processing",
                2,
                0,
                json!([]),
            ),
            job(
                "catalog-item-bulk-create-job",
                "C1",
                "complete",
                2,
                1,
                json!([{"id": "e", "code": "invalid",
                "title": "Invalid input", "detail": "price must be a number",
                "source": {"pointer": "/data/attributes/items/data/1/attributes/price"}}]),
            ),
        ]))
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/catalog-item-bulk-update-jobs"))
        .respond_with(job(
            "catalog-item-bulk-update-job",
            "U1",
            "queued",
            1,
            0,
            json!([]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-item-bulk-update-jobs/U1"))
        .respond_with(job(
            "catalog-item-bulk-update-job",
            "U1",
            "complete",
            1,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    let k = destination(&server);
    let item = |id: &str, price: Value| {
        vec![
            json!(format!("$custom:::$default:::{id}")),
            json!("upsert"),
            json!({"external_id": id, "title": id, "description": "", "url": "u", "price": price, "integration_type": "$custom"}),
            json!({"categories": {"data": [{"type": "catalog-category", "id": "$custom:::$default:::C"}]}}),
        ]
    };
    let part = batch(
        ITEM_TABLE,
        &["id", "op", "attributes", "relationships"],
        vec![
            item("P1", json!(1.0)),
            item("P2", json!(2.0)),
            item("P3", json!("x")),
        ],
    );
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    let outcome = &out[0][0];
    assert_eq!(outcome.rows, 2);
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!(outcome.rejected[0].raw["id"], "$custom:::$default:::P3");
    assert!(
        outcome.rejected[0].error.contains("price must be a number"),
        "{}",
        outcome.rejected[0].error
    );
    assert_eq!(
        outcome.changes,
        Some(Changes {
            inserted: 1,
            updated: 1,
            deleted: 0
        })
    );
    let created = bodies(&server, "POST", "/api/catalog-item-bulk-create-jobs").await;
    let ids: Vec<&Value> = created[0]
        .pointer("/data/attributes/items/data")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["attributes"]["external_id"])
        .collect();
    assert_eq!(ids, vec!["P1", "P3"]);
    let updated = bodies(&server, "POST", "/api/catalog-item-bulk-update-jobs").await;
    let update = updated[0].pointer("/data/attributes/items/data/0").unwrap();
    assert_eq!(update["id"], "$custom:::$default:::P2");
    assert!(update["attributes"].get("external_id").is_none());
    assert!(update["attributes"].get("integration_type").is_none());
}

#[tokio::test]
async fn a_required_field_400_rejects_that_object_and_sends_the_rest() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-categories"))
        .respond_with(catalog_lookup(&[]))
        .mount(&server)
        .await;
    struct Create;
    impl Respond for Create {
        fn respond(&self, r: &Request) -> ResponseTemplate {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let data = body
                .pointer("/data/attributes/categories/data")
                .unwrap()
                .as_array()
                .unwrap();
            if let Some(i) = data
                .iter()
                .position(|c| c.pointer("/attributes/name").is_none())
            {
                return ResponseTemplate::new(400).set_body_json(json!({"errors": [{"id": "x", "status": 400,
                    "code": "invalid", "title": "Invalid input.", "detail": "'name' is a required field.",
                    "source": {"pointer": format!("/data/attributes/categories/data/{i}/attributes/name")}}]}));
            }
            job(
                "catalog-category-bulk-create-job",
                "K",
                "queued",
                data.len() as u64,
                0,
                json!([]),
            )
        }
    }
    Mock::given(method("POST"))
        .and(path("/api/catalog-category-bulk-create-jobs"))
        .respond_with(Create)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-category-bulk-create-jobs/K"))
        .respond_with(job(
            "catalog-category-bulk-create-job",
            "K",
            "complete",
            2,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    let k = destination(&server);
    let part = batch(
        CATEGORY_TABLE,
        &["id", "op", "attributes"],
        vec![
            vec![
                json!("$custom:::$default:::A"),
                json!("upsert"),
                json!({"external_id": "A", "name": "Women"}),
            ],
            vec![
                json!("$custom:::$default:::B"),
                json!("upsert"),
                json!({"external_id": "B"}),
            ],
            vec![
                json!("$custom:::$default:::C"),
                json!("upsert"),
                json!({"external_id": "C", "name": "Women > Pants"}),
            ],
        ],
    );
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    assert_eq!(out[0][0].rows, 2);
    assert_eq!(out[0][0].rejected.len(), 1);
    assert_eq!(out[0][0].rejected[0].raw["id"], "$custom:::$default:::B");
    assert!(
        out[0][0].rejected[0]
            .error
            .contains("'name' is a required field.")
    );
}

#[tokio::test]
async fn catalog_jobs_hold_at_most_100_and_a_cancelled_job_rejects_its_objects() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-categories"))
        .respond_with(catalog_lookup(&[]))
        .mount(&server)
        .await;
    let n = Arc::new(AtomicUsize::new(0));
    struct Create(Arc<AtomicUsize>);
    impl Respond for Create {
        fn respond(&self, r: &Request) -> ResponseTemplate {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let len = body
                .pointer("/data/attributes/categories/data")
                .unwrap()
                .as_array()
                .unwrap()
                .len();
            // The job holding category 0 is the one Klaviyo cancels.
            let id = if String::from_utf8_lossy(&r.body).contains("\"external_id\":\"0\"") {
                "X".to_string()
            } else {
                format!("K{n}")
            };
            job(
                "catalog-category-bulk-create-job",
                &id,
                "queued",
                len as u64,
                0,
                json!([]),
            )
        }
    }
    Mock::given(method("POST"))
        .and(path("/api/catalog-category-bulk-create-jobs"))
        .respond_with(Create(n))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-category-bulk-create-jobs/X"))
        .respond_with(job(
            "catalog-category-bulk-create-job",
            "X",
            "cancelled",
            100,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            "^/api/catalog-category-bulk-create-jobs/K[0-9]+$",
        ))
        .respond_with(job(
            "catalog-category-bulk-create-job",
            "K",
            "complete",
            100,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    let k = destination(&server);
    let rows = (0..250)
        .map(|i| {
            vec![
                json!(format!("$custom:::$default:::{i}")),
                json!({"external_id": i.to_string(), "name": "N"}),
            ]
        })
        .collect();
    let part = batch(CATEGORY_TABLE, &["id", "attributes"], rows);
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    let mut sizes: Vec<usize> = bodies(&server, "POST", "/api/catalog-category-bulk-create-jobs")
        .await
        .iter()
        .map(|b| {
            b.pointer("/data/attributes/categories/data")
                .unwrap()
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![50, 100, 100]);
    assert_eq!(out[0][0].rejected.len(), 100);
    assert!(
        out[0][0].rejected[0].error.contains("cancelled"),
        "{}",
        out[0][0].rejected[0].error
    );
    assert_eq!(out[0][0].rows, 150);
}

/// The lookups of a variants part of item `P`: its variants read with the item
/// (`include=variants`, answered with item `P` carrying `variants`, or without the
/// relationship when `None`), item `P` existing, and of the variants those in `existing`.
async fn item_lookups(
    server: &MockServer,
    variants: Option<Vec<Value>>,
    existing: &'static [&'static str],
) {
    let mut item =
        json!({"type": "catalog-item", "id": "$custom:::$default:::P", "attributes": {}});
    if let Some(v) = variants {
        item["relationships"] = json!({"variants": {"data": v}});
    }
    Mock::given(method("GET"))
        .and(path("/api/catalog-items"))
        .and(query_param("include", "variants"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [item], "links": {"next": null}})),
        )
        .expect(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-items"))
        .respond_with(catalog_lookup(&["$custom:::$default:::P"]))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-variants"))
        .respond_with(catalog_lookup(existing))
        .mount(server)
        .await;
}

/// A variants part of a products job: variant `sku` of item `P`, replacing the item's
/// variants (`replace_scope = ["item_id"]`).
fn variant_part(sku: &str) -> RecordBatch {
    let mut part = batch(
        VARIANT_TABLE,
        &["id", "op", "item_id", "attributes", "relationships"],
        vec![vec![
            json!(format!("$custom:::$default:::{sku}")),
            json!("upsert"),
            json!("$custom:::$default:::P"),
            json!({"external_id": sku, "sku": sku, "title": "T", "description": "", "url": "u", "price": 1, "inventory_quantity": 0, "inventory_policy": 1}),
            json!({"item": {"data": {"type": "catalog-item", "id": "$custom:::$default:::P"}}}),
        ]],
    );
    part.merge = MergeSpec {
        replace_scope: Some(vec!["item_id".into()]),
        scope_keys: vec![vec![json!("$custom:::$default:::P")]],
        ..MergeSpec::default()
    };
    part
}

/// Variant update and delete jobs that are accepted queued and complete at the first poll
/// (job ids `update`, `delete`), each POSTed `expect` times if given.
async fn variant_jobs(server: &MockServer, expect: Option<u64>) {
    for action in ["update", "delete"] {
        let post = Mock::given(method("POST"))
            .and(path(format!("/api/catalog-variant-bulk-{action}-jobs")))
            .respond_with(job(
                &format!("catalog-variant-bulk-{action}-job"),
                action,
                "queued",
                1,
                0,
                json!([]),
            ));
        match expect {
            Some(n) => post.expect(n).mount(server).await,
            None => post.mount(server).await,
        }
        Mock::given(method("GET"))
            .and(path(format!(
                "/api/catalog-variant-bulk-{action}-jobs/{action}"
            )))
            .respond_with(job(
                &format!("catalog-variant-bulk-{action}-job"),
                action,
                "complete",
                1,
                0,
                json!([]),
            ))
            .mount(server)
            .await;
    }
}

#[tokio::test]
async fn variants_the_part_no_longer_carries_are_deleted_and_deletes_look_ids_up() {
    let server = MockServer::start().await;
    // The items' variants, looked up with the items (include=variants).
    item_lookups(
        &server,
        Some(vec![
            json!({"type": "catalog-variant", "id": "$custom:::$default:::S1"}),
            json!({"type": "catalog-variant", "id": "$custom:::$default:::S-GONE"}),
        ]),
        &["$custom:::$default:::S1"],
    )
    .await;
    // Listed with the item: no request per item.
    Mock::given(method("GET"))
        .and(path("/api/catalog-items/$custom:::$default:::P/variants"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    variant_jobs(&server, Some(1)).await;
    Mock::given(method("POST"))
        .and(path("/api/catalog-variant-bulk-create-jobs"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let k = destination(&server);
    let part = variant_part("S1");
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    assert!(out[0][0].rejected.is_empty(), "{:?}", out[0][0].rejected);
    assert_eq!(
        out[0][0].changes,
        Some(Changes {
            inserted: 0,
            updated: 1,
            deleted: 1
        })
    );
    let deleted = bodies(&server, "POST", "/api/catalog-variant-bulk-delete-jobs").await;
    assert_eq!(
        deleted[0]
            .pointer("/data/attributes/variants/data")
            .unwrap(),
        &json!([{"type": "catalog-variant", "id": "$custom:::$default:::S-GONE"}])
    );
}

/// An item whose included variants reach [`super::service::INCLUDED_VARIANTS_CHECKED`] is
/// listed again on its own, paged, so a cap on included ids could not keep a variant the
/// part no longer carries; an answer without the relationship is an error, not "none".
#[tokio::test]
async fn an_item_with_many_included_variants_is_listed_on_its_own() {
    let id = |n: usize| format!("$custom:::$default:::V{n}");
    let refs = |range: std::ops::Range<usize>| -> Vec<Value> {
        range
            .map(|n| json!({"type": "catalog-variant", "id": id(n)}))
            .collect()
    };
    let server = MockServer::start().await;
    let checked = super::service::INCLUDED_VARIANTS_CHECKED;
    item_lookups(
        &server,
        Some(refs(0..checked)),
        &["$custom:::$default:::V0"],
    )
    .await;
    // The item's own listing has one more, on a second page.
    let listing = "/api/catalog-items/$custom:::$default:::P/variants";
    Mock::given(method("GET"))
        .and(path(listing))
        .and(query_param("page[cursor]", "2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"data": refs(checked..checked + 1), "links": {"next": null}}),
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(listing))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": refs(0..checked),
            "links": {"next": format!("{}{listing}?page%5Bcursor%5D=2", server.uri())}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    variant_jobs(&server, None).await;
    let k = destination(&server);
    let part = variant_part("V0");
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    assert!(out[0][0].rejected.is_empty(), "{:?}", out[0][0].rejected);
    let deleted: Vec<Value> = bodies(&server, "POST", "/api/catalog-variant-bulk-delete-jobs")
        .await
        .iter()
        .flat_map(|b| {
            b.pointer("/data/attributes/variants/data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    // Every variant but the one carried, including the one only the own listing had.
    assert_eq!(deleted, refs(1..checked + 1));

    // Without `relationships.variants.data` the part fails, naming the item.
    let server = MockServer::start().await;
    item_lookups(&server, None, &[]).await;
    let k = destination(&server);
    let e = PartWriter::write(&k, &[vec![&part]]).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("item $custom:::$default:::P has no `relationships.variants.data`"),
        "{e}"
    );
}

#[tokio::test]
async fn throttling_is_waited_out_and_503_retried_in_process() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/event-bulk-create-jobs"))
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"errors": [{"code": "throttled", "detail": "Expected available in 1 second."}]})),
            ResponseTemplate::new(503),
            ResponseTemplate::new(202),
        ]))
        .expect(3)
        .mount(&server)
        .await;
    let k = destination(&server);
    let part = batch(
        EVENT_TABLE,
        &["id", "attributes"],
        vec![vec![
            json!("M:1"),
            json!({"metric": {"data": {"type": "metric", "attributes": {"name": "M"}}},
            "profile": {"data": {"type": "profile", "attributes": {"email": "a@b.c"}}}, "properties": {}, "unique_id": "1"}),
        ]],
    );
    let started = std::time::Instant::now();
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    assert_eq!(out[0][0].rows, 1);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
}

#[tokio::test]
async fn server_errors_are_transient_and_other_client_errors_permanent_without_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/event-bulk-create-jobs"))
        .respond_with(ResponseTemplate::new(500).set_body_string("oops"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/profile-bulk-import-jobs"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"errors": [{"code": "not_authenticated",
            "detail": format!("Invalid API key {KEY}")}]})),
        )
        .mount(&server)
        .await;
    let k = destination(&server);
    let event = batch(
        EVENT_TABLE,
        &["id", "attributes"],
        vec![vec![
            json!("M:1"),
            json!({"metric": {}, "profile": {"data": {"type": "profile", "attributes": {"email": "a@b.c"}}}}),
        ]],
    );
    let err = PartWriter::write(&k, &[vec![&event]]).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("500"), "{err}");

    let profile = batch(
        PROFILE_TABLE,
        &["id", "attributes"],
        vec![profile_row("c", None)],
    );
    let err = PartWriter::write(&k, &[vec![&profile]]).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("401") && text.contains("not_authenticated"),
        "{text}"
    );
    assert!(!text.contains(KEY), "{text}");

    let wrong = batch("klaviyo.profiles", &["id"], vec![vec![json!("x")]]);
    let err = PartWriter::write(&k, &[vec![&wrong]])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("klaviyo.profile,"), "{err}");
}

#[tokio::test]
async fn a_job_never_final_fails_the_part_as_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/profile-bulk-import-jobs"))
        .respond_with(job(
            "profile-bulk-import-job",
            "J",
            "queued",
            1,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/profile-bulk-import-jobs/J"))
        .respond_with(job(
            "profile-bulk-import-job",
            "J",
            "queued",
            1,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    let k = destination_with(
        &server,
        &[("SLUICE__DESTINATIONS__KV__POLL_TIMEOUT_SECONDS", "1")],
    );
    let part = batch(
        PROFILE_TABLE,
        &["id", "attributes"],
        vec![profile_row("c", None)],
    );
    let err = PartWriter::write(&k, &[vec![&part]]).await.unwrap_err();
    assert!(err.is_transient());
    assert!(err.to_string().contains("still queued"), "{err}");
}

/// A redelivery after a crash: the first write's create job was still queued when the ids
/// were looked up, so the second write creates too; Klaviyo refuses the duplicate, the id is
/// found now, and the object is sent as an update — no reject.
#[tokio::test]
async fn a_create_refused_because_the_object_exists_by_now_becomes_an_update() {
    let server = MockServer::start().await;
    let absent =
        ResponseTemplate::new(200).set_body_json(json!({"data": [], "links": {"next": null}}));
    let present = ResponseTemplate::new(200).set_body_json(json!({"data": [
        {"type": "catalog-category", "id": "$custom:::$default:::A"}], "links": {"next": null}}));
    Mock::given(method("GET"))
        .and(path("/api/catalog-categories"))
        .respond_with(Sequence::new(vec![absent, present]))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/catalog-category-bulk-create-jobs"))
        .respond_with(job(
            "catalog-category-bulk-create-job",
            "C",
            "queued",
            1,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-category-bulk-create-jobs/C"))
        .respond_with(job("catalog-category-bulk-create-job", "C", "complete", 1, 1, json!([{"id": "e",
            "code": "conflict", "title": "Conflict", "detail": "A catalog category with this external_id already exists.",
            "source": {"pointer": "/data/attributes/categories/data/0"}}])))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/catalog-category-bulk-update-jobs"))
        .respond_with(job(
            "catalog-category-bulk-update-job",
            "U",
            "queued",
            1,
            0,
            json!([]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-category-bulk-update-jobs/U"))
        .respond_with(job(
            "catalog-category-bulk-update-job",
            "U",
            "complete",
            1,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    let k = destination(&server);
    let part = batch(
        CATEGORY_TABLE,
        &["id", "attributes"],
        vec![vec![
            json!("$custom:::$default:::A"),
            json!({"external_id": "A", "name": "Women"}),
        ]],
    );
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    assert!(out[0][0].rejected.is_empty(), "{:?}", out[0][0].rejected);
    assert_eq!(out[0][0].rows, 1);
    assert_eq!(
        out[0][0].changes,
        Some(Changes {
            inserted: 0,
            updated: 1,
            deleted: 0
        })
    );
    let update = bodies(&server, "POST", "/api/catalog-category-bulk-update-jobs").await;
    assert_eq!(
        update[0]
            .pointer("/data/attributes/categories/data/0")
            .unwrap(),
        &json!({"type": "catalog-category", "id": "$custom:::$default:::A", "attributes": {"name": "Women"}})
    );
}

#[tokio::test]
async fn profile_failures_no_import_error_names_are_still_reported() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/profile-bulk-import-jobs"))
        .respond_with(job(
            "profile-bulk-import-job",
            "J",
            "queued",
            2,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/profile-bulk-import-jobs/J"))
        .respond_with(job(
            "profile-bulk-import-job",
            "J",
            "complete",
            2,
            1,
            json!([]),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/profile-bulk-import-jobs/J/import-errors"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": [], "links": {"next": null}})),
        )
        .mount(&server)
        .await;
    let k = destination(&server);
    let part = batch(
        PROFILE_TABLE,
        &["id", "attributes"],
        vec![profile_row("a", None), profile_row("b", None)],
    );
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    assert_eq!(out[0][0].rejected.len(), 1);
    let reject = &out[0][0].rejected[0];
    assert!(
        reject.error.starts_with("1 of 2 profiles failed"),
        "{}",
        reject.error
    );
    assert_eq!(reject.raw["job_id"], "J");
}

#[tokio::test]
async fn bodies_stay_under_5_mb_and_a_profile_over_100_kb_is_refused_unsent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/event-bulk-create-jobs"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/profile-bulk-import-jobs"))
        .respond_with(job(
            "profile-bulk-import-job",
            "J",
            "complete",
            1,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    let k = destination(&server);
    let filler = "x".repeat(20_000);
    let rows: Vec<Vec<Value>> = (0..600)
        .map(|n| {
            vec![
                json!(format!("M:{n}")),
                json!({"metric": {"data": {"type": "metric", "attributes": {"name": "M"}}},
                       "profile": {"data": {"type": "profile", "attributes": {"external_id": format!("p{n}")}}},
                       "properties": {"blob": filler}, "unique_id": n.to_string()}),
            ]
        })
        .collect();
    let events = batch(EVENT_TABLE, &["id", "attributes"], rows);
    let out = PartWriter::write(&k, &[vec![&events]]).await.unwrap();
    assert_eq!(out[0][0].rows, 600);
    let sizes: Vec<usize> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/event-bulk-create-jobs")
        .map(|r| r.body.len())
        .collect();
    assert!(sizes.len() >= 3, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 5_000_000), "{sizes:?}");

    let huge = vec![
        json!("big"),
        json!({"external_id": "big", "properties": {"blob": "y".repeat(120_000)}}),
    ];
    let profiles = batch(
        PROFILE_TABLE,
        &["id", "attributes"],
        vec![huge, profile_row("ok", None)],
    );
    let out = PartWriter::write(&k, &[vec![&profiles]]).await.unwrap();
    assert_eq!(out[0][0].rows, 1);
    assert!(
        out[0][0].rejected[0].error.contains("100000-byte limit"),
        "{:?}",
        out[0][0].rejected
    );
    let sent = bodies(&server, "POST", "/api/profile-bulk-import-jobs").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]
            .pointer("/data/attributes/profiles/data")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn variants_wait_for_their_item_and_are_refused_when_it_never_comes() {
    let server = MockServer::start().await;
    let none =
        ResponseTemplate::new(200).set_body_json(json!({"data": [], "links": {"next": null}}));
    let a = ResponseTemplate::new(200).set_body_json(json!({"data": [
        {"type": "catalog-item", "id": "$custom:::$default:::A"}], "links": {"next": null}}));
    // Item A is created by another part meanwhile (second lookup); item B never is.
    Mock::given(method("GET"))
        .and(path("/api/catalog-items"))
        .respond_with(Sequence::new(vec![none.clone(), a]))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-variants"))
        .respond_with(none)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/catalog-variant-bulk-create-jobs"))
        .respond_with(job(
            "catalog-variant-bulk-create-job",
            "V",
            "queued",
            1,
            0,
            json!([]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-variant-bulk-create-jobs/V"))
        .respond_with(job(
            "catalog-variant-bulk-create-job",
            "V",
            "complete",
            1,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    let k = destination_with(
        &server,
        &[("SLUICE__DESTINATIONS__KV__POLL_TIMEOUT_SECONDS", "1")],
    );
    let variant = |sku: &str, item: &str| {
        vec![
            json!(format!("$custom:::$default:::{sku}")),
            json!(format!("$custom:::$default:::{item}")),
            json!({"external_id": sku, "sku": sku, "title": "T", "description": "", "url": "u", "price": 1, "inventory_quantity": 0}),
        ]
    };
    let part = batch(
        VARIANT_TABLE,
        &["id", "item_id", "attributes"],
        vec![variant("SA", "A"), variant("SB", "B")],
    );
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    assert_eq!(out[0][0].rows, 1);
    assert_eq!(out[0][0].rejected.len(), 1);
    assert_eq!(out[0][0].rejected[0].raw["id"], "$custom:::$default:::SB");
    assert!(
        out[0][0].rejected[0].error.contains("is not in Klaviyo"),
        "{}",
        out[0][0].rejected[0].error
    );
    let created = bodies(&server, "POST", "/api/catalog-variant-bulk-create-jobs").await;
    assert_eq!(
        created[0]
            .pointer("/data/attributes/variants/data/0/attributes/sku")
            .unwrap(),
        "SA"
    );
}

#[tokio::test]
async fn a_refusal_naming_no_object_is_narrowed_by_halves() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-categories"))
        .respond_with(catalog_lookup(&[]))
        .mount(&server)
        .await;
    struct Create;
    impl Respond for Create {
        fn respond(&self, r: &Request) -> ResponseTemplate {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let data = body
                .pointer("/data/attributes/categories/data")
                .unwrap()
                .as_array()
                .unwrap();
            if data
                .iter()
                .any(|c| c.pointer("/attributes/name") == Some(&json!("")))
            {
                return ResponseTemplate::new(400).set_body_json(json!({"errors": [{"id": "x", "status": 400,
                    "code": "invalid", "title": "Invalid input.", "detail": "A name may not be blank.", "source": {}}]}));
            }
            job(
                "catalog-category-bulk-create-job",
                "K",
                "queued",
                data.len() as u64,
                0,
                json!([]),
            )
        }
    }
    Mock::given(method("POST"))
        .and(path("/api/catalog-category-bulk-create-jobs"))
        .respond_with(Create)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/catalog-category-bulk-create-jobs/K"))
        .respond_with(job(
            "catalog-category-bulk-create-job",
            "K",
            "complete",
            0,
            0,
            json!([]),
        ))
        .mount(&server)
        .await;
    let k = destination(&server);
    let rows = (0..20)
        .map(|i| {
            let name = if i == 13 {
                String::new()
            } else {
                format!("N{i}")
            };
            vec![
                json!(format!("$custom:::$default:::{i}")),
                json!({"external_id": i.to_string(), "name": name}),
            ]
        })
        .collect();
    let part = batch(CATEGORY_TABLE, &["id", "attributes"], rows);
    let out = PartWriter::write(&k, &[vec![&part]]).await.unwrap();
    assert_eq!(out[0][0].rows, 19);
    assert_eq!(out[0][0].rejected.len(), 1);
    assert_eq!(out[0][0].rejected[0].raw["id"], "$custom:::$default:::13");
    assert!(
        out[0][0].rejected[0]
            .error
            .contains("A name may not be blank.")
    );
    // Every good category was accepted exactly once.
    let accepted: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/catalog-category-bulk-create-jobs")
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .map(|b| {
            b.pointer("/data/attributes/categories/data")
                .unwrap()
                .as_array()
                .unwrap()
                .clone()
        })
        .filter(|d| {
            d.iter()
                .all(|c| c.pointer("/attributes/name") != Some(&json!("")))
        })
        .flat_map(|d| {
            d.into_iter()
                .map(|c| c["attributes"]["external_id"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(accepted.len(), 19);
    assert_eq!(
        accepted
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        19
    );
}
