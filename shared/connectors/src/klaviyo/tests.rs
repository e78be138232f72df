//! Connector tests against a mock Klaviyo (`wiremock`, real HTTP).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::settings::{KlaviyoAccount, KlaviyoSettings};
use chrono::{DateTime, Duration, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use sluice_contracts::{FetchTask, Mode, PageRef, Settings, TaskKind};
use uuid::Uuid;
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;

const KEY: &str = "pk_test_SECRET123456";

fn settings(base: &str) -> KlaviyoSettings {
    let mut s: KlaviyoSettings = crate::framework::settings_section(
        &Settings::defaults(),
        "klaviyo",
        super::settings::DEFAULTS,
    )
    .unwrap();
    s.accounts = BTreeMap::from([(
        "default".to_string(),
        KlaviyoAccount {
            api_key: Some(SecretString::from(KEY)),
            base_url: base.to_string(),
        },
    )]);
    s.max_retry_after_seconds = 5;
    s.request_timeout_seconds = 5;
    s
}

fn connector(s: &KlaviyoSettings) -> KlaviyoConnector {
    build(s, &ConnectorContext::default())
}

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn job(stream: &str, params: Value) -> JobSpec {
    JobSpec {
        job_id: Uuid::nil(),
        stream: stream.into(),
        account: "default".into(),
        params,
        mode: Mode::Full,
        bookmark: None,
    }
}

fn task(stream: &str, kind: TaskKind, params: Value) -> FetchTask {
    FetchTask {
        v: 1,
        task_id: "t1".into(),
        job_id: Uuid::nil(),
        connector: "klaviyo".into(),
        stream: stream.into(),
        account: "default".into(),
        kind,
        attempt: 1,
        params,
        once: None,
    }
}

fn event(id: &str, at: &str) -> Value {
    json!({"type": "event", "id": id,
        "attributes": {"datetime": at, "timestamp": ts(at).timestamp(), "uuid": format!("u-{id}"),
                       "event_properties": {"$value": 9.5}},
        "relationships": {"metric": {"data": {"type": "metric", "id": "M1"}},
                          "profile": {"data": {"type": "profile", "id": format!("P-{id}")}}},
        "links": {"self": "x"}})
}

fn page(data: Vec<Value>, next: Option<String>) -> Value {
    json!({"data": data, "links": {"self": "x", "next": next}})
}

/// Every row of `table` in the task's output, over all its parts (pages are handed over
/// as they are read).
fn rows(out: &FetchOutput, table: &str) -> Vec<Vec<Value>> {
    let parts: Vec<&crate::TableRows> = out.tables.iter().filter(|t| t.table == table).collect();
    assert!(!parts.is_empty(), "no {table} part");
    parts
        .into_iter()
        .flat_map(|t| crate::cell::values(t.rows.clone()))
        .collect()
}

async fn metrics_server(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api/metrics"))
        .and(query_param_is_missing("page[cursor]"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                json!({"type": "metric", "id": "M1", "attributes": {"name": "Placed Order"}}),
                json!({"type": "metric", "id": "M2", "attributes": {"name": "Received Email"}}),
            ],
            Some(format!("{}/api/metrics?page%5Bcursor%5D=c2", server.uri())),
        )))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/metrics"))
        .and(query_param("page[cursor]", "c2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                json!({"type": "metric", "id": "M3", "attributes": {"name": "Opened Email",
                "created": "2022-11-08T00:00:00+00:00", "updated": "2023-01-01T10:00:00+00:00"}}),
            ],
            None,
        )))
        .mount(server)
        .await;
}

#[tokio::test]
async fn paging_follows_next_links_with_the_klaviyo_headers() {
    let server = MockServer::start().await;
    Mock::given(header(
        "authorization",
        format!("Klaviyo-API-Key {KEY}").as_str(),
    ))
    .and(header("revision", "2026-07-15"))
    .and(header("accept", "application/vnd.api+json"))
    .and(path("/api/never"))
    .respond_with(ResponseTemplate::new(200))
    .mount(&server)
    .await;
    metrics_server(&server).await;
    let c = connector(&settings(&server.uri()));
    let plan = c.plan(&job("metrics", Value::Null)).await.unwrap();
    assert_eq!(plan.tasks.len(), 1);
    let out = c
        .fetch(&task("metrics", plan.tasks[0].kind.clone(), plan.params))
        .await
        .unwrap();
    let r = rows(&out, "klaviyo.metrics");
    assert_eq!(r.len(), 3);
    assert_eq!(r[2][3], "2023-01-01T10:00:00.000000Z");
    assert_eq!(
        out.cursor_max.as_deref(),
        Some("2023-01-01T10:00:00.000000Z")
    );
    assert!(out.children.is_empty());
    // Every request carried the headers.
    for req in server.received_requests().await.unwrap() {
        assert_eq!(
            req.headers.get("authorization").unwrap(),
            &format!("Klaviyo-API-Key {KEY}")
        );
        assert_eq!(req.headers.get("revision").unwrap(), "2026-07-15");
        assert_eq!(
            req.headers.get("accept").unwrap(),
            "application/vnd.api+json"
        );
    }
}

#[tokio::test]
async fn a_collection_hands_the_rest_to_a_child_after_dense_pages() {
    let server = MockServer::start().await;
    metrics_server(&server).await;
    let mut s = settings(&server.uri());
    s.dense_pages = 1;
    let c = connector(&s);
    let out = c
        .fetch(&task(
            "metrics",
            TaskKind::Page(PageRef::default()),
            Value::Null,
        ))
        .await
        .unwrap();
    assert_eq!(rows(&out, "klaviyo.metrics").len(), 2);
    assert_eq!(out.children.len(), 1);
    let TaskKind::Page(PageRef {
        cursor: Some(cursor),
        ..
    }) = &out.children[0].kind
    else {
        panic!("{:?}", out.children)
    };
    assert_eq!(cursor, "/api/metrics?page%5Bcursor%5D=c2");
    let out = c
        .fetch(&task("metrics", out.children[0].kind.clone(), Value::Null))
        .await
        .unwrap();
    assert_eq!(rows(&out, "klaviyo.metrics")[0][0], "M3");
}

#[tokio::test]
async fn throttling_is_waited_out_then_retried() {
    let server = MockServer::start().await;
    Mock::given(path("/api/lists"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"errors": [{"id": "x", "status": 429, "code": "throttled",
                    "title": "Request was throttled.", "detail": "Request was throttled. Expected available in 1 second."}]})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/lists"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("RateLimit-Limit", "750")
                .insert_header("RateLimit-Remaining", "700")
                .insert_header("RateLimit-Reset", "30")
                .set_body_json(page(
                    vec![json!({"type": "list", "id": "L1", "attributes": {"name": "News", "opt_in_process": "double_opt_in"}})],
                    None,
                )),
        )
        .with_priority(2)
        .mount(&server)
        .await;
    let c = connector(&settings(&server.uri()));
    let started = std::time::Instant::now();
    let out = c
        .fetch(&task(
            "lists",
            TaskKind::Page(PageRef::default()),
            Value::Null,
        ))
        .await
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(rows(&out, "klaviyo.lists")[0][4], "double_opt_in");
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn errors_map_to_transient_and_permanent_without_the_key() {
    let server = MockServer::start().await;
    Mock::given(path("/api/lists"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0.1"))
        .mount(&server)
        .await;
    Mock::given(path("/api/segments"))
        .respond_with(ResponseTemplate::new(500).set_body_string("upstream exploded"))
        .mount(&server)
        .await;
    Mock::given(path("/api/metrics"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"errors": [{
            "id": "e1", "status": 400, "code": "invalid",
            "title": "Invalid input.", "detail": format!("bad key {KEY} in 'page[size]'"),
            "source": {"parameter": "page[size]"}}]})))
        .mount(&server)
        .await;
    Mock::given(path("/api/profiles"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"data\": [{\"id\""))
        .mount(&server)
        .await;
    let mut s = settings(&server.uri());
    s.max_throttle_waits = 2;
    let c = connector(&s);
    let page_task = |stream: &str| task(stream, TaskKind::Page(PageRef::default()), Value::Null);

    let throttled = c.fetch(&page_task("lists")).await.unwrap_err();
    assert!(throttled.is_transient(), "{throttled}");
    assert!(throttled.to_string().contains("429"), "{throttled}");
    assert_eq!(server.received_requests().await.unwrap().len(), 3);

    let server_error = c.fetch(&page_task("segments")).await.unwrap_err();
    assert!(server_error.is_transient(), "{server_error}");
    assert!(
        server_error.to_string().contains("upstream exploded"),
        "{server_error}"
    );

    let bad = c.fetch(&page_task("metrics")).await.unwrap_err();
    assert!(matches!(bad, ConnectorError::Permanent(_)), "{bad}");
    let text = bad.to_string();
    assert!(
        text.contains("invalid") && text.contains("page[size]") && text.contains("/api/metrics"),
        "{text}"
    );

    let truncated = c
        .fetch(&task(
            "profiles",
            TaskKind::Ids {
                ids: vec!["P1".into()],
            },
            Value::Null,
        ))
        .await
        .unwrap_err();
    assert!(truncated.is_transient(), "{truncated}");

    let refused = {
        // Nothing listens there: a connection error.
        let mut s = settings("http://127.0.0.1:9");
        s.request_timeout_seconds = 2;
        connector(&s).fetch(&page_task("lists")).await.unwrap_err()
    };
    assert!(refused.is_transient(), "{refused}");

    for e in [&throttled, &server_error, &bad, &truncated, &refused] {
        let text = format!("{e} {e:?}");
        assert!(!text.contains(KEY), "key leaked: {text}");
    }
}

fn window_task(start: &str, end: &str, params: Value) -> FetchTask {
    task(
        "events/M1",
        TaskKind::TimeRange {
            start: ts(start),
            end: ts(end),
            partition: Some("M1".into()),
        },
        params,
    )
}

#[tokio::test]
async fn a_dense_window_splits_its_rest_without_a_gap() {
    let server = MockServer::start().await;
    let filter = "and(equals(metric_id,\"M1\"),greater-or-equal(datetime,2024-01-01T00:00:00Z),less-than(datetime,2024-01-02T00:00:00Z))";
    Mock::given(path("/api/events"))
        .and(query_param("filter", filter))
        .and(query_param("sort", "datetime"))
        .and(query_param("page[size]", "2"))
        .and(query_param_is_missing("page[cursor]"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                event("E1", "2024-01-01T00:00:00+00:00"),
                event("E2", "2024-01-01T01:00:00+00:00"),
            ],
            Some(format!("{}/api/events?page%5Bcursor%5D=p2", server.uri())),
        )))
        .mount(&server)
        .await;
    Mock::given(path("/api/events"))
        .and(query_param("page[cursor]", "p2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                event("E3", "2024-01-01T06:00:00+00:00"),
                event("E4", "2024-01-01T06:00:00+00:00"),
            ],
            Some(format!("{}/api/events?page%5Bcursor%5D=p3", server.uri())),
        )))
        .mount(&server)
        .await;
    let mut s = settings(&server.uri());
    s.dense_pages = 2;
    s.split_into = 3;
    let c = connector(&s);
    let out = c
        .fetch(&window_task(
            "2024-01-01T00:00:00Z",
            "2024-01-02T00:00:00Z",
            json!({"page_size": 2}),
        ))
        .await
        .unwrap();
    // Page by page: the first page is handed over at once but for E2, the record at the
    // latest instant, which waits in case a split drops it (none does: the next page moves
    // on); E3 and E4 share the split instant, so the first child reads them, this task not.
    let mut emitted = crate::Collect::default();
    let paged = c
        .fetch_paged(
            &window_task(
                "2024-01-01T00:00:00Z",
                "2024-01-02T00:00:00Z",
                json!({"page_size": 2}),
            ),
            &mut emitted,
        )
        .await
        .unwrap();
    let first: Vec<&crate::Cell> = emitted
        .0
        .iter()
        .flat_map(|t| t.rows.iter().map(|r| &r[0]))
        .collect();
    assert_eq!(first, [&json!("E1")]);
    assert_eq!(rows(&paged, "klaviyo.events")[0][0], json!("E2"));
    let events = rows(&out, "klaviyo.events");
    let ids: Vec<&Value> = events.iter().map(|r| &r[0]).collect();
    assert_eq!(ids, [&json!("E1"), &json!("E2")]);
    assert_eq!(rows(&out, "klaviyo.events")[0][6], 9.5);
    assert_eq!(
        out.cursor_max.as_deref(),
        Some("2024-01-01T06:00:00.000000Z")
    );
    let windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = out
        .children
        .iter()
        .map(|c| {
            assert_eq!(c.stream, "events/M1");
            match &c.kind {
                TaskKind::TimeRange {
                    start,
                    end,
                    partition,
                } => {
                    assert_eq!(partition.as_deref(), Some("M1"));
                    (*start, *end)
                }
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(windows.len(), 3);
    assert_eq!(windows[0].0, ts("2024-01-01T06:00:00Z"));
    assert_eq!(windows[2].1, ts("2024-01-02T00:00:00Z"));
    for w in windows.windows(2) {
        assert_eq!(w[0].1, w[1].0);
    }
    // Two runs of the task, two pages each: the third page was never asked for.
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn windows_under_a_second_are_paged_to_the_end() {
    let server = MockServer::start().await;
    for (cursor, next) in [
        (None, Some("p2")),
        (Some("p2"), Some("p3")),
        (Some("p3"), None),
    ] {
        let m = Mock::given(path("/api/events"));
        let m = match cursor {
            None => m.and(query_param_is_missing("page[cursor]")),
            Some(c) => m.and(query_param("page[cursor]", c)),
        };
        m.respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![event(
                &format!("E-{}", cursor.unwrap_or("p1")),
                "2024-01-01T00:00:00.250+00:00",
            )],
            next.map(|n| format!("/api/events?page%5Bcursor%5D={n}")),
        )))
        .mount(&server)
        .await;
    }
    let mut s = settings(&server.uri());
    s.dense_pages = 1;
    let c = connector(&s);
    let out = c
        .fetch(&window_task(
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00.800Z",
            Value::Null,
        ))
        .await
        .unwrap();
    assert!(out.children.is_empty(), "{:?}", out.children);
    assert_eq!(rows(&out, "klaviyo.events").len(), 3);
    let first = &server.received_requests().await.unwrap()[0];
    let filter = first
        .url
        .query_pairs()
        .find(|(k, _)| k == "filter")
        .unwrap()
        .1
        .to_string();
    assert!(
        filter.contains("less-than(datetime,2024-01-01T00:00:00.800000Z)"),
        "{filter}"
    );
}

#[tokio::test]
async fn included_profiles_and_bad_records() {
    let server = MockServer::start().await;
    let mut bad = event("E2", "2024-01-01T00:00:01+00:00");
    bad["attributes"]["timestamp"] = json!("soon");
    Mock::given(path("/api/events"))
        .and(query_param("include", "profile"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [event("E1", "2099-01-01T00:00:00+00:00"), bad],
            "included": [
                {"type": "profile", "id": "P-E1", "attributes": {"email": "a@example.com",
                    "updated": "2024-01-01T00:00:00+00:00", "location": {"city": "Oslo"}}},
                {"type": "metric", "id": "M1", "attributes": {"name": "Placed Order"}}
            ],
            "links": {"self": "x", "next": null}})))
        .mount(&server)
        .await;
    let c = connector(&settings(&server.uri()));
    let out = c
        .fetch(&window_task(
            "2024-01-01T00:00:00Z",
            "2100-01-01T00:00:00Z",
            json!({"include_profile": true}),
        ))
        .await
        .unwrap();
    assert_eq!(rows(&out, "klaviyo.events").len(), 1);
    let profiles = out
        .tables
        .iter()
        .find(|t| t.table == "klaviyo.profiles")
        .unwrap();
    assert_eq!(profiles.rows.len(), 1);
    assert_eq!(profiles.rows[0][1], "a@example.com");
    assert_eq!(profiles.merge.version_column.as_deref(), Some("updated"));
    assert_eq!(out.rejected.len(), 1);
    assert!(
        out.rejected[0].error.contains("E2") && out.rejected[0].error.contains("timestamp"),
        "{}",
        out.rejected[0].error
    );
    // A future-dated event is loaded, but the cursor stays behind now − lag.
    let cursor = out.cursor_max.unwrap();
    let limit = windows::cursor(Utc::now() - Duration::seconds(300));
    assert!(cursor <= limit, "{cursor} > {limit}");
    assert!(cursor.ends_with('Z') && cursor.len() == "2024-01-01T00:00:00.000000Z".len());
}

#[tokio::test]
async fn plan_resolves_metric_names_and_rejects_bad_params() {
    let server = MockServer::start().await;
    metrics_server(&server).await;
    let c = connector(&settings(&server.uri()));
    let plan = c
        .plan(&job(
            "events",
            json!({"metrics": ["Placed Order", "M3"], "since": "2024-01-01T00:00:00Z",
                   "until": "2024-01-02T00:00:00Z", "include_profile": true}),
        ))
        .await
        .unwrap();
    assert_eq!(plan.params["metrics"], json!(["M1", "M3"]));
    assert_eq!(plan.params["include_profile"], true);
    assert_eq!(plan.tasks.len(), 16);
    assert_eq!(plan.tasks[0].stream, "events/M1");
    assert_eq!(plan.tasks[15].stream, "events/M3");
    match &plan.tasks[7].kind {
        TaskKind::TimeRange { end, partition, .. } => {
            assert_eq!(*end, ts("2024-01-02T00:00:00Z"));
            assert_eq!(partition.as_deref(), Some("M1"));
        }
        other => panic!("{other:?}"),
    }

    let err = c
        .plan(&job("events", json!({"metrics": ["Placed Order", "Nope"]})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectorError::InvalidParams(m) if m.contains("Nope") && m.contains("metrics")),
        "{err}"
    );
    for (stream, params, needle) in [
        ("segment_members", json!({}), "segment"),
        ("list_members", json!({"list": ""}), "list"),
        ("events", json!({"since": "yesterday"}), "since"),
        ("events", json!({"page_size": 5000}), "page_size"),
        ("profiles", json!({"metrics": ["x"]}), "metrics"),
        (
            "events",
            json!({"since": "2024-01-02T00:00:00Z", "until": "2024-01-01T00:00:00Z"}),
            "since",
        ),
        ("forms", json!({}), "forms"),
        ("campaigns", json!({"channels": ["fax"]}), "channels"),
        ("campaigns", json!({"page_size": 5}), "page_size"),
        (
            "metric_aggregates",
            json!({"by": ["$message", "$flow", "URL", "Subject"]}),
            "'by'",
        ),
        (
            "metric_aggregates",
            json!({"measurements": ["median"]}),
            "measurements",
        ),
        ("metric_aggregates", json!({"interval": "week"}), "interval"),
    ] {
        let err = c.plan(&job(stream, params)).await.unwrap_err();
        assert!(
            matches!(&err, ConnectorError::InvalidParams(m) if m.contains(needle)),
            "{stream}: {err}"
        );
    }
    let plan = c
        .plan(&job("segment_members", json!({"segment": "S1"})))
        .await
        .unwrap();
    assert_eq!(plan.params["segment"], "S1");
    assert_eq!(plan.params["page_size"], 100);
}

#[tokio::test]
async fn a_missing_key_names_the_variable() {
    let mut s = settings("http://127.0.0.1:9");
    s.accounts.get_mut("default").unwrap().api_key = None;
    let c = connector(&s);
    let err = c.plan(&job("lists", Value::Null)).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::InvalidParams(m) if m.contains("SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY")),
        "{err}"
    );
    let mut j = job("lists", Value::Null);
    j.account = "eu".into();
    let err = c.plan(&j).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__EU__API_KEY"),
        "{err}"
    );
}

#[tokio::test]
async fn incremental_starts_at_the_bookmark_minus_lookback() {
    let server = MockServer::start().await;
    metrics_server(&server).await;
    let c = connector(&settings(&server.uri()));
    let mut j = job("events", json!({"metrics": ["M1", "M2"]}));
    j.mode = Mode::Incremental;
    j.bookmark = Some(json!({"cursor": "2024-03-01T00:00:00.000000Z",
        "streams": {"events/M1": "2024-02-01T00:00:00.000000Z"}}));
    let before = Utc::now();
    let plan = c.plan(&j).await.unwrap();
    let bounds = |stream: &str| {
        let ws: Vec<(DateTime<Utc>, DateTime<Utc>)> = plan
            .tasks
            .iter()
            .filter(|t| t.stream == stream)
            .map(|t| match t.kind {
                TaskKind::TimeRange { start, end, .. } => (start, end),
                _ => panic!(),
            })
            .collect();
        (ws.first().unwrap().0, ws.last().unwrap().1)
    };
    let (m1_start, m1_end) = bounds("events/M1");
    assert_eq!(m1_start, ts("2024-01-31T23:00:00Z"));
    assert!(m1_end <= Utc::now() - Duration::seconds(300));
    assert!(m1_end >= before - Duration::seconds(301));
    // No stream cursor: the overall cursor.
    assert_eq!(bounds("events/M2").0, ts("2024-02-29T23:00:00Z"));

    // An `until` in the future is cut at now − lag in incremental mode.
    j.params = json!({"metrics": ["M1"], "until": "2999-01-01T00:00:00Z"});
    let plan = c.plan(&j).await.unwrap();
    let last = plan.tasks.last().unwrap();
    let TaskKind::TimeRange { end, .. } = last.kind else {
        panic!()
    };
    assert!(end <= Utc::now() - Duration::seconds(300));

    // Profiles: the `profiles` stream cursor.
    let mut j = job("profiles", Value::Null);
    j.mode = Mode::Incremental;
    j.bookmark = Some(json!({"cursor": "2024-05-01T00:00:00.000000Z",
        "streams": {"profiles": "2024-05-01T00:00:00.000000Z"}}));
    let plan = c.plan(&j).await.unwrap();
    let TaskKind::TimeRange {
        start, partition, ..
    } = &plan.tasks[0].kind
    else {
        panic!()
    };
    assert_eq!(*start, ts("2024-04-30T23:00:00Z"));
    assert!(partition.is_none());
}

#[tokio::test]
async fn profiles_window_uses_updated_filters() {
    let server = MockServer::start().await;
    Mock::given(path("/api/profiles"))
        .and(query_param(
            "filter",
            "and(greater-than(updated,2023-12-31T23:59:59Z),less-than(updated,2024-01-02T00:00:00Z))",
        ))
        .and(query_param("sort", "updated"))
        .and(query_param("page[size]", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![json!({"type": "profile", "id": "P1", "attributes": {
                "email": "x@example.com", "updated": "2024-01-01T05:00:00+00:00"}})],
            None,
        )))
        .mount(&server)
        .await;
    let c = connector(&settings(&server.uri()));
    let out = c
        .fetch(&task(
            "profiles",
            TaskKind::TimeRange {
                start: ts("2024-01-01T00:00:00Z"),
                end: ts("2024-01-02T00:00:00Z"),
                partition: None,
            },
            Value::Null,
        ))
        .await
        .unwrap();
    assert_eq!(rows(&out, "klaviyo.profiles").len(), 1);
    assert_eq!(
        out.cursor_max.as_deref(),
        Some("2024-01-01T05:00:00.000000Z")
    );
}

#[tokio::test]
async fn members_give_rows_profile_batches_and_a_next_page() {
    let server = MockServer::start().await;
    Mock::given(path("/api/segments/S1/relationships/profiles"))
        .and(query_param("page[size]", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                json!({"type": "profile", "id": "P1"}),
                json!({"type": "profile", "id": "P2"}),
            ],
            Some(format!(
                "{}/api/segments/S1/relationships/profiles?page%5Bcursor%5D=n2",
                server.uri()
            )),
        )))
        .mount(&server)
        .await;
    Mock::given(path("/api/profiles"))
        .and(query_param("filter", "any(id,[\"P1\",\"P2\"])"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                json!({"type": "profile", "id": "P1", "attributes": {"updated": "2024-01-01T00:00:00+00:00"}}),
                json!({"type": "profile", "id": "P2", "attributes": {"updated": "2024-01-01T00:00:00+00:00"}}),
            ],
            None,
        )))
        .mount(&server)
        .await;
    let mut s = settings(&server.uri());
    s.dense_pages = 1;
    let c = connector(&s);
    let plan = c
        .plan(&job("segment_members", json!({"segment": "S1"})))
        .await
        .unwrap();
    let out = c
        .fetch(&task(
            "segment_members",
            plan.tasks[0].kind.clone(),
            plan.params.clone(),
        ))
        .await
        .unwrap();
    // Every membership carries the job's version, the planning time.
    let version = plan.params["members_version"].as_str().unwrap().to_string();
    assert!(version.ends_with('Z') && version.len() == 27, "{version}");
    assert_eq!(
        rows(&out, "klaviyo.segment_members"),
        vec![
            vec![json!("S1"), json!("P1"), json!(version)],
            vec![json!("S1"), json!("P2"), json!(version)]
        ]
    );
    // Not the last page: nothing is removed yet.
    assert!(
        out.tables.iter().all(|t| t.merge.scope_keys.is_empty()),
        "{:?}",
        out.tables
    );
    assert_eq!(out.children.len(), 2);
    assert_eq!(out.children[0].stream, "profiles");
    assert_eq!(
        out.children[0].kind,
        TaskKind::Ids {
            ids: vec!["P1".into(), "P2".into()]
        }
    );
    assert_eq!(out.children[1].stream, "segment_members");
    assert_eq!(
        out.children[1].kind,
        TaskKind::Page(PageRef {
            cursor: Some("/api/segments/S1/relationships/profiles?page%5Bcursor%5D=n2".into()),
            ..PageRef::default()
        })
    );
    assert!(out.cursor_max.is_none());
    let next_page = out.children[1].kind.clone();
    let profiles = c
        .fetch(&task(
            "profiles",
            out.children[0].kind.clone(),
            plan.params.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(rows(&profiles, "klaviyo.profiles").len(), 2);

    // The last page: its members, then the sweep of the segment's older memberships.
    Mock::given(path("/api/segments/S1/relationships/profiles"))
        .and(query_param("page[cursor]", "n2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(page(vec![json!({"type": "profile", "id": "P3"})], None)),
        )
        .mount(&server)
        .await;
    let last = c
        .fetch(&task("segment_members", next_page, plan.params))
        .await
        .unwrap();
    let members: Vec<&crate::TableRows> = last
        .tables
        .iter()
        .filter(|t| t.table == "klaviyo.segment_members")
        .collect();
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!(
        members[0].rows,
        vec![vec![json!("S1"), json!("P3"), json!(version)]]
    );
    let sweep = members[1];
    assert!(sweep.rows.is_empty());
    assert_eq!(
        sweep.merge.replace_scope,
        Some(vec!["segment_id".to_string()])
    );
    assert_eq!(sweep.merge.scope_keys, vec![vec![json!("S1")]]);
    assert_eq!(sweep.merge.version_column.as_deref(), Some("seen_at"));
    // One microsecond before the job's version: the replace keeps what this job saw.
    let before =
        chrono::DateTime::parse_from_rfc3339(&version).unwrap() - chrono::Duration::microseconds(1);
    assert_eq!(
        sweep.merge.scope_version,
        Some(json!(
            before
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
        ))
    );
}

#[tokio::test]
async fn a_next_link_on_another_host_is_reduced_to_the_configured_origin() {
    let server = MockServer::start().await;
    Mock::given(path("/api/lists"))
        .and(query_param_is_missing("page[cursor]"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![json!({"type": "list", "id": "L1", "attributes": {}})],
            Some("https://evil.example.com/api/lists?page%5Bcursor%5D=z".into()),
        )))
        .mount(&server)
        .await;
    Mock::given(path("/api/lists"))
        .and(query_param("page[cursor]", "z"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![json!({"type": "list", "id": "L2", "attributes": {}})],
            None,
        )))
        .mount(&server)
        .await;
    let c = connector(&settings(&server.uri()));
    let out = c
        .fetch(&task(
            "lists",
            TaskKind::Page(PageRef::default()),
            Value::Null,
        ))
        .await
        .unwrap();
    assert_eq!(rows(&out, "klaviyo.lists").len(), 2);
}
