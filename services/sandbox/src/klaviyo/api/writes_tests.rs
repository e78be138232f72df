//! The write endpoints in process: success and refusal of each, answers checked against the
//! spec's response schemas, what was written read back through the GET endpoints, the job
//! lifecycle, deduplication and limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::super::super::schema::{self, tests::response_schema};
use super::super::super::{JobTiming, KlaviyoConfig, KlaviyoDataSpec};
use super::super::{WrittenHandle, router_with_handle};

struct App {
    router: axum::Router,
    handle: WrittenHandle,
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    empty: bool,
}

fn config(scale: Option<f64>, jobs: JobTiming) -> KlaviyoConfig {
    KlaviyoConfig {
        data: KlaviyoDataSpec {
            profiles: 200,
            metrics: 3,
            lists: 1,
            segments: 1,
            events_per_metric: 200,
            ..KlaviyoDataSpec::default()
        },
        rate_limit_scale: scale,
        jobs,
        ..KlaviyoConfig::default()
    }
}

fn fast() -> JobTiming {
    JobTiming {
        queued_ms: 5,
        processing_ms: 5,
        cancelled_share: 0.0,
    }
}

fn app(config: KlaviyoConfig) -> App {
    let (router, handle) = router_with_handle(config).unwrap();
    App { router, handle }
}

impl App {
    async fn call(&self, method: &str, uri: &str, body: Option<&Value>) -> Answer {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "klaviyo.test")
            .header("authorization", "Klaviyo-API-Key pk_sandbox")
            .header("revision", "2026-07-15")
            .header("content-type", "application/vnd.api+json");
        if body.is_none() {
            b = b.header("content-length", "0");
        }
        let req = b
            .body(match body {
                Some(v) => Body::from(serde_json::to_vec(v).unwrap()),
                None => Body::empty(),
            })
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        Answer {
            status,
            retry_after,
            empty: bytes.is_empty(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn post(&self, uri: &str, body: &Value) -> Answer {
        self.call("POST", uri, Some(body)).await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call("GET", uri, None).await
    }

    /// `GET /klaviyo/_admin/stats`.
    async fn stats(&self) -> Value {
        let resp = self
            .router
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/klaviyo/_admin/stats")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        serde_json::from_slice(
            &axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap(),
        )
        .unwrap()
    }

    /// Ids of the profiles `GET /api/profiles` finds by `email`.
    async fn ids_by_email(&self, email: &str) -> Vec<String> {
        let filter = q(&format!("equals(email,\"{email}\")"));
        self.get(&format!("/api/profiles?filter={filter}"))
            .await
            .body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Polls a job until it is final; its document.
    async fn wait_job(&self, uri: &str) -> Value {
        let mut seen = Vec::new();
        for _ in 0..2_000 {
            let a = self.get(uri).await;
            assert_eq!(a.status, 200, "{uri}: {}", a.body);
            let status = a.body["data"]["attributes"]["status"]
                .as_str()
                .unwrap()
                .to_owned();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if status == "complete" || status == "cancelled" {
                // Never back from final, never final before it was queued or processing.
                assert!(seen.len() <= 3, "{seen:?}");
                return a.body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("job {uri} never became final");
    }
}

/// Asserts `body` matches the spec's schema of the `status` answer of `method path`.
/// Klaviyo answers `links.next`/`prev` `null` on the last/first page, though the spec types
/// them as strings: those nulls are left out of the check.
fn conforms(path: &str, method: &str, status: &str, body: &Value) {
    let s = response_schema(path, method, status);
    let mut body = body.clone();
    if let Some(links) = body["links"].as_object_mut() {
        links.retain(|k, v| !((k == "next" || k == "prev") && v.is_null()));
    }
    let body = &body;
    if let Err(e) = schema::validate(&s, body, "") {
        panic!("{method} {path} {status}: {e:?} in {body:#}");
    }
}

/// The first error of a refusal (checked against the spec's `4XX` schema).
fn error(a: &Answer) -> &Value {
    conforms("/api/profiles", "post", "4XX", &a.body);
    &a.body["errors"][0]
}

fn profile(attrs: Value) -> Value {
    json!({"data": {"type": "profile", "attributes": attrs}})
}

fn q(filter: &str) -> String {
    url::form_urlencoded::byte_serialize(filter.as_bytes()).collect()
}

#[tokio::test]
async fn profiles_create_conflict_upsert_and_read_back() {
    let a = app(config(None, fast()));
    let created = a
        .post(
            "/api/profiles",
            &profile(
                json!({"email": "Ada@Example.com", "first_name": "Ada", "phone_number": null,
                 "location": {"city": "Leeds"}, "properties": {"tier": "gold"}}),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    conforms("/api/profiles", "post", "201", &created.body);
    let id = created.body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["data"]["attributes"]["first_name"], "Ada");

    // Create only: the same email (any case) is a 409 naming the profile.
    let dup = a
        .post(
            "/api/profiles",
            &profile(json!({"email": "ada@example.com"})),
        )
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(error(&dup)["code"], "duplicate_profile");
    assert_eq!(error(&dup)["meta"]["duplicate_profile_id"], id.as_str());

    // Upsert: 200 for the existing one, omitted fields kept, null clears, members merged.
    let up = a
        .post(
            "/api/profile-import",
            &profile(json!({"email": "ada@example.com", "last_name": "Lovelace",
                 "first_name": null, "location": {"zip": "LS1"}, "properties": {"vip": true}})),
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.body);
    conforms("/api/profile-import", "post", "200", &up.body);
    assert_eq!(up.body["data"]["id"], id.as_str());
    let attrs = &up.body["data"]["attributes"];
    assert_eq!(attrs["last_name"], "Lovelace");
    assert_eq!(attrs["first_name"], Value::Null);
    assert_eq!(attrs["location"]["city"], "Leeds");
    assert_eq!(attrs["location"]["zip"], "LS1");
    assert_eq!(attrs["properties"], json!({"tier": "gold", "vip": true}));
    let new = a
        .post(
            // Klaviyo's SDKs end paths with a slash.
            "/api/profile-import/",
            &profile(json!({"external_id": "ct-2", "phone_number": "+447700900123"})),
        )
        .await;
    assert_eq!(new.status, 201, "{}", new.body);
    conforms("/api/profile-import", "post", "201", &new.body);

    // Refusals, each pointing at what is wrong.
    for (body, pointer) in [
        (
            profile(json!({"email": "x@example.com", "phone_number": "0612345678"})),
            "/data/attributes/phone_number",
        ),
        (
            profile(json!({"email": "not-an-address"})),
            "/data/attributes/email",
        ),
        (profile(json!({"first_name": "Nobody"})), "/data/attributes"),
        (
            json!({"data": {"type": "event", "attributes": {"email": "x@example.com"}}}),
            "/data/type",
        ),
        (json!({"data": {"type": "profile"}}), "/data/attributes"),
    ] {
        let r = a.post("/api/profile-import", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(error(&r)["source"]["pointer"], pointer, "{body}");
        assert!(error(&r)["id"].is_string() && error(&r)["title"].is_string());
    }

    // PATCH by id.
    let patched = a
        .call(
            "PATCH",
            &format!("/api/profiles/{id}"),
            Some(&json!({"data": {"type": "profile", "id": id, "attributes": {"title": "Countess"}}})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["data"]["attributes"]["title"], "Countess");

    // Read back through the GET endpoints, by id and by each identifier.
    let one = a.get(&format!("/api/profiles/{id}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["data"]["attributes"]["last_name"], "Lovelace");
    for filter in [
        "equals(email,\"ada@example.com\")".to_owned(),
        format!("any(id,[\"{id}\"])"),
    ] {
        let page = a.get(&format!("/api/profiles?filter={}", q(&filter))).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let ids: Vec<&str> = page.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [id.as_str()], "{filter}");
    }
    let by_ext = a
        .get(&format!(
            "/api/profiles?filter={}",
            q("equals(external_id,\"ct-2\")")
        ))
        .await;
    assert_eq!(
        by_ext.body["data"][0]["attributes"]["phone_number"],
        "+447700900123"
    );
    // Written profiles come after the generated ones in id order, on the last page.
    let last = a.get("/api/profiles?sort=-id&page[size]=2").await;
    let newest: Vec<&str> = last.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(newest[1], id.as_str());
    assert_eq!(a.handle.snapshot()["counts"]["profiles"], 2);
}

#[tokio::test]
async fn profile_bulk_import_job_lifecycle_errors_and_rerun() {
    let a = app(config(None, fast()));
    let body = json!({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": {"email": "one@example.com", "external_id": "c1", "first_name": "One"}},
        {"type": "profile", "attributes": {"email": "two@example.com", "phone_number": "+1 (555) 0100"}},
        {"type": "profile", "attributes": {"email": "three@example.com", "properties": {"n": 3}}},
    ]}}, "relationships": {"lists": {"data": []}}}});
    let posted = a.post("/api/profile-bulk-import-jobs", &body).await;
    assert_eq!(posted.status, 202, "{}", posted.body);
    conforms("/api/profile-bulk-import-jobs", "post", "202", &posted.body);
    assert_eq!(posted.body["data"]["attributes"]["status"], "queued");
    assert_eq!(posted.body["data"]["attributes"]["total_count"], 3);
    let job = posted.body["data"]["id"].as_str().unwrap().to_owned();
    let uri = format!("/api/profile-bulk-import-jobs/{job}");
    let done = a.wait_job(&uri).await;
    conforms(
        "/api/profile-bulk-import-jobs/{job_id}",
        "get",
        "200",
        &done,
    );
    let attrs = &done["data"]["attributes"];
    assert_eq!(attrs["status"], "complete");
    assert_eq!(
        (
            attrs["completed_count"].as_u64(),
            attrs["failed_count"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert!(attrs["completed_at"].is_string());

    let errors = a.get(&format!("{uri}/import-errors")).await;
    assert_eq!(errors.status, 200, "{}", errors.body);
    conforms(
        "/api/profile-bulk-import-jobs/{id}/import-errors",
        "get",
        "200",
        &errors.body,
    );
    let e = &errors.body["data"][0]["attributes"];
    assert_eq!(errors.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        e["source"]["pointer"],
        "/data/attributes/profiles/data/1/attributes/phone_number"
    );
    assert_eq!(e["original_payload"]["email"], "two@example.com");

    // The phone fallback: the same profile without its phone is accepted.
    let again = a
        .post(
            "/api/profile-bulk-import-jobs",
            &json!({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
                {"type": "profile", "attributes": {"email": "one@example.com", "external_id": "c1", "first_name": "One"}},
                {"type": "profile", "attributes": {"email": "two@example.com"}},
                {"type": "profile", "attributes": {"email": "three@example.com", "properties": {"n": 3}}},
            ]}}}}),
        )
        .await;
    let again = a
        .wait_job(&format!(
            "/api/profile-bulk-import-jobs/{}",
            again.body["data"]["id"].as_str().unwrap()
        ))
        .await;
    let attrs = &again["data"]["attributes"];
    assert_eq!(
        (
            attrs["completed_count"].as_u64(),
            attrs["failed_count"].as_u64()
        ),
        (Some(3), Some(0))
    );
    // The jobs' collection, newest first.
    let jobs = a
        .get(&format!(
            "/api/profile-bulk-import-jobs?sort=-created_at&filter={}",
            q("equals(status,\"complete\")")
        ))
        .await;
    assert_eq!(jobs.status, 200, "{}", jobs.body);
    conforms("/api/profile-bulk-import-jobs", "get", "200", &jobs.body);
    let listed: Vec<&str> = jobs.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [again["data"]["id"].as_str().unwrap(), job.as_str()]
    );
    // A re-run is an upsert: three profiles in all.
    let snap = a.handle.snapshot();
    assert_eq!(snap["counts"]["profiles"], 3);
    let one = a
        .get(&format!(
            "/api/profiles?filter={}",
            q("equals(email,\"one@example.com\")")
        ))
        .await;
    assert_eq!(one.body["data"][0]["attributes"]["external_id"], "c1");

    // Limits: 10,001 profiles; one profile over 100 KB; an unknown job.
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"type": "profile", "attributes": {"external_id": format!("x{i}")}}))
        .collect();
    let r = a
        .post(
            "/api/profile-bulk-import-jobs",
            &json!({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": many}}}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        error(&r)["source"]["pointer"],
        "/data/attributes/profiles/data"
    );
    let big = json!({"type": "profile", "attributes": {"email": "big@example.com", "properties": {"blob": "x".repeat(110_000)}}});
    let r = a
        .post(
            "/api/profile-bulk-import-jobs",
            &json!({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [big]}}}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        error(&r)["source"]["pointer"],
        "/data/attributes/profiles/data/0"
    );
    assert_eq!(
        a.get("/api/profile-bulk-import-jobs/nope").await.status,
        404
    );
}

fn event(email: &str, metric: &str, time: &str, unique: Option<&str>, value: f64) -> Value {
    json!({"type": "event", "attributes": {
        "properties": {"OrderId": unique, "Items": ["a", "b"]},
        "time": time,
        "value": value,
        "value_currency": "EUR",
        "unique_id": unique,
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": email, "external_id": format!("ext-{email}")}}},
    }})
}

#[tokio::test]
async fn events_dedup_create_metrics_and_profiles_and_read_back() {
    let a = app(config(None, fast()));
    let e1 = json!({"data": event("buyer@example.com", "Placed Order", "2025-03-01T10:00:00Z", Some("o-1"), 12.5)});
    for _ in 0..2 {
        let r = a.post("/api/events", &e1).await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert!(r.empty, "202 has no body");
    }
    // Without a unique id, the time to the second decides.
    let same_second = json!({"data": event("buyer@example.com", "Ordered Product", "2025-03-01T10:00:00.300Z", None, 1.0)});
    let next_second = json!({"data": event("buyer@example.com", "Ordered Product", "2025-03-01T10:00:01Z", None, 1.0)});
    for body in [&same_second, &same_second, &next_second] {
        assert_eq!(a.post("/api/events", body).await.status, 202);
    }
    let snap = a.handle.snapshot();
    assert_eq!(snap["counts"]["events"], 3);
    assert_eq!(snap["counts"]["events_deduplicated"], 2);
    assert_eq!(snap["counts"]["profiles"], 1);

    // The metric was created on first use and is read back with its events.
    let metrics = a.get("/api/metrics").await;
    let placed: Vec<&Value> = metrics.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["attributes"]["name"] == "Placed Order"
                && m["attributes"]["integration"]["name"] == "API"
        })
        .collect();
    assert_eq!(placed.len(), 1, "{}", metrics.body);
    let mid = placed[0]["id"].as_str().unwrap();
    assert_eq!(a.get(&format!("/api/metrics/{mid}")).await.status, 200);
    let events = a
        .get(&format!(
            "/api/events?filter={}&include=profile",
            q(&format!("equals(metric_id,\"{mid}\")"))
        ))
        .await;
    assert_eq!(events.status, 200, "{}", events.body);
    let data = events.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let props = &data[0]["attributes"]["event_properties"];
    assert_eq!(props["$event_id"], "o-1");
    assert_eq!(props["$value"], 12.5);
    assert_eq!(props["Items"], json!(["a", "b"]));
    assert_eq!(
        data[0]["attributes"]["datetime"],
        "2025-03-01T10:00:00+00:00"
    );
    assert_eq!(
        events.body["included"][0]["attributes"]["email"],
        "buyer@example.com"
    );
    assert_eq!(
        events.body["included"][0]["attributes"]["last_event_date"],
        "2025-03-01T10:00:01+00:00"
    );
    let pid = data[0]["relationships"]["profile"]["data"]["id"]
        .as_str()
        .unwrap();
    let by_profile = a
        .get(&format!(
            "/api/events?filter={}",
            q(&format!("equals(profile_id,\"{pid}\")"))
        ))
        .await;
    assert_eq!(by_profile.body["data"].as_array().unwrap().len(), 3);

    // Bulk: two profiles, two events each; the repeat of o-1 is dropped.
    let bulk = json!({"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": [
        {"type": "event-bulk-create", "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": "buyer@example.com"}}},
            "events": {"data": [
                {"type": "event", "attributes": {"properties": {}, "time": "2025-03-01T10:00:00Z", "unique_id": "o-1",
                    "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}}}},
                {"type": "event", "attributes": {"properties": {}, "time": "2025-03-02T10:00:00Z", "unique_id": "o-2",
                    "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}}}},
            ]}}},
        {"type": "event-bulk-create", "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"external_id": "c-9"}}},
            "events": {"data": [
                {"type": "event", "attributes": {"properties": {"x": 1}, "unique_id": "f-1",
                    "metric": {"data": {"type": "metric", "attributes": {"name": "Fulfilled Order"}}}}},
            ]}}},
    ]}}}});
    let r = a.post("/api/event-bulk-create-jobs", &bulk).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.empty);
    let snap = a.handle.snapshot();
    assert_eq!(snap["counts"]["events"], 5);
    let typed = a.handle.typed();
    assert_eq!(typed.events.len(), 5);
    assert_eq!(typed.events[0].event_properties["$event_id"], "o-1");
    assert_eq!(typed.metrics.len(), 3);
    assert_eq!(snap["counts"]["profiles"], 2);

    // Refusals: a time before 1990, no metric name, a bulk job of 1,001 events.
    let mut old = e1.clone();
    old["data"]["attributes"]["time"] = json!("1989-12-31T00:00:00Z");
    let r = a.post("/api/events", &old).await;
    assert_eq!(r.status, 400);
    assert_eq!(error(&r)["source"]["pointer"], "/data/attributes/time");
    let mut nameless = e1.clone();
    nameless["data"]["attributes"]["metric"]["data"]["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("name");
    let r = a.post("/api/events", &nameless).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        error(&r)["source"]["pointer"],
        "/data/attributes/metric/data/attributes/name"
    );
    let events: Vec<Value> = (0..1_001)
        .map(|i| {
            json!({"type": "event", "attributes": {"properties": {}, "unique_id": format!("u{i}"),
            "metric": {"data": {"type": "metric", "attributes": {"name": "Viewed"}}}}})
        })
        .collect();
    let too_many = json!({"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": [
        {"type": "event-bulk-create", "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": "many@example.com"}}},
            "events": {"data": events}}}]}}}});
    let r = a.post("/api/event-bulk-create-jobs", &too_many).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        a.handle.snapshot()["counts"]["events"],
        5,
        "a refused job writes nothing"
    );
}

const ITEM: &str = "$custom:::$default:::p-1";

fn item(ext: &str, title: &str, categories: &[&str]) -> Value {
    json!({"type": "catalog-item", "attributes": {
        "external_id": ext, "integration_type": "$custom", "catalog_type": "$default",
        "title": title, "description": "A thing", "url": format!("https://shop.example/{ext}"),
        "price": 10.0, "image_full_url": null, "custom_metadata": {"brand": "B"}, "published": true,
    }, "relationships": {"categories": {"data":
        categories.iter().map(|c| json!({"type": "catalog-category", "id": c})).collect::<Vec<_>>()}}})
}

fn variant(sku: &str, item: &str) -> Value {
    json!({"type": "catalog-variant", "attributes": {
        "external_id": sku, "title": format!("Variant {sku}"), "description": "d", "sku": sku,
        "inventory_policy": 1, "inventory_quantity": 5, "price": 9.5,
        "url": "https://shop.example/v", "published": true,
    }, "relationships": {"item": {"data": {"type": "catalog-item", "id": item}}}})
}

fn category(ext: &str, name: &str) -> Value {
    json!({"type": "catalog-category", "attributes": {"external_id": ext, "name": name}})
}

#[tokio::test]
async fn catalog_single_writes_and_reads() {
    let a = app(config(None, fast()));
    let cat = a
        .post(
            "/api/catalog-categories",
            &json!({"data": category("c-1", "Shoes")}),
        )
        .await;
    assert_eq!(cat.status, 201, "{}", cat.body);
    conforms("/api/catalog-categories", "post", "201", &cat.body);
    let cid = cat.body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(cid, "$custom:::$default:::c-1");
    let it = a
        .post(
            "/api/catalog-items",
            &json!({"data": item("p-1", "Boot", &[&cid])}),
        )
        .await;
    assert_eq!(it.status, 201, "{}", it.body);
    conforms("/api/catalog-items", "post", "201", &it.body);
    assert_eq!(it.body["data"]["id"], ITEM);
    let v = a
        .post(
            "/api/catalog-variants",
            &json!({"data": variant("sku-1", ITEM)}),
        )
        .await;
    assert_eq!(v.status, 201, "{}", v.body);
    conforms("/api/catalog-variants", "post", "201", &v.body);

    // Refusals.
    let again = a
        .post(
            "/api/catalog-items",
            &json!({"data": item("p-1", "Boot", &[])}),
        )
        .await;
    assert_eq!(again.status, 409);
    let mut no_title = item("p-2", "x", &[]);
    no_title["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("title");
    let r = a
        .post("/api/catalog-items", &json!({"data": no_title}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(error(&r)["source"]["pointer"], "/data/attributes/title");
    let mut no_item = variant("sku-2", ITEM);
    no_item.as_object_mut().unwrap().remove("relationships");
    let r = a
        .post("/api/catalog-variants", &json!({"data": no_item}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(error(&r)["source"]["pointer"], "/data/relationships");
    let r = a
        .post(
            "/api/catalog-variants",
            &json!({"data": variant("sku-3", "$custom:::$default:::missing")}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        error(&r)["source"]["pointer"],
        "/data/relationships/item/data/id"
    );

    // PATCH, then the reads.
    let enc =
        |id: &str| -> String { url::form_urlencoded::byte_serialize(id.as_bytes()).collect() };
    let p = a
        .call(
            "PATCH",
            &format!("/api/catalog-items/{}", enc(ITEM)),
            Some(&json!({"data": {"type": "catalog-item", "id": ITEM, "attributes": {"title": "Boot 2", "price": 12.0}}})),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    conforms("/api/catalog-items/{id}", "patch", "200", &p.body);
    assert_eq!(p.body["data"]["attributes"]["title"], "Boot 2");
    assert_eq!(
        p.body["data"]["attributes"]["custom_metadata"],
        json!({"brand": "B"})
    );

    let one = a
        .get(&format!("/api/catalog-items/{ITEM}?include=variants"))
        .await;
    assert_eq!(one.status, 200, "{}", one.body);
    conforms("/api/catalog-items/{id}", "get", "200", &one.body);
    assert_eq!(one.body["included"][0]["attributes"]["sku"], "sku-1");
    let listed = a.get("/api/catalog-items?include=variants").await;
    conforms("/api/catalog-items", "get", "200", &listed.body);
    assert_eq!(
        listed.body["data"][0]["relationships"]["variants"]["data"],
        json!([{"type": "catalog-variant", "id": "$custom:::$default:::sku-1"}])
    );
    assert_eq!(listed.body["included"][0]["attributes"]["sku"], "sku-1");
    let list = a
        .get(&format!(
            "/api/catalog-items?filter={}",
            q(&format!("any(ids,[\"{ITEM}\",\"nope\"])"))
        ))
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    conforms("/api/catalog-items", "get", "200", &list.body);
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    let by_cat = a
        .get(&format!(
            "/api/catalog-items?filter={}",
            q(&format!("equals(category.id,\"{cid}\")"))
        ))
        .await;
    assert_eq!(by_cat.body["data"][0]["id"], ITEM);
    let variants = a
        .get(&format!("/api/catalog-items/{}/variants", enc(ITEM)))
        .await;
    assert_eq!(variants.status, 200);
    conforms(
        "/api/catalog-items/{id}/variants",
        "get",
        "200",
        &variants.body,
    );
    assert_eq!(
        variants.body["data"][0]["relationships"]["item"]["data"]["id"],
        ITEM
    );
    let cats = a
        .get(&format!(
            "/api/catalog-items/{}/relationships/categories",
            enc(ITEM)
        ))
        .await;
    assert_eq!(
        cats.body["data"],
        json!([{"type": "catalog-category", "id": cid}])
    );
    let items = a
        .get(&format!(
            "/api/catalog-categories/{}/relationships/items",
            enc(&cid)
        ))
        .await;
    assert_eq!(
        items.body["data"],
        json!([{"type": "catalog-item", "id": ITEM}])
    );
    let by_sku = a
        .get(&format!(
            "/api/catalog-variants?filter={}",
            q("equals(sku,\"sku-1\")")
        ))
        .await;
    conforms("/api/catalog-variants", "get", "200", &by_sku.body);
    assert_eq!(by_sku.body["data"].as_array().unwrap().len(), 1);
    let bad = a
        .get(&format!(
            "/api/catalog-items?filter={}",
            q("equals(sku,\"x\")")
        ))
        .await;
    assert_eq!(bad.status, 400);

    // Deletes: 204, then 404; deleting the item takes its variants.
    let vid = "$custom:::$default:::sku-1";
    assert_eq!(
        a.call(
            "DELETE",
            &format!("/api/catalog-variants/{}", enc(vid)),
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        a.call(
            "DELETE",
            &format!("/api/catalog-variants/{}", enc(vid)),
            None
        )
        .await
        .status,
        404
    );
    a.post(
        "/api/catalog-variants",
        &json!({"data": variant("sku-4", ITEM)}),
    )
    .await;
    assert_eq!(
        a.call("DELETE", &format!("/api/catalog-items/{}", enc(ITEM)), None)
            .await
            .status,
        204
    );
    let snap = a.handle.snapshot();
    assert_eq!(snap["counts"]["catalog_items"], 0);
    assert_eq!(snap["counts"]["catalog_variants"], 0);
    assert_eq!(snap["counts"]["catalog_categories"], 1);
}

fn job_body(kind: &str, plural: &str, data: Vec<Value>) -> Value {
    json!({"data": {"type": kind, "attributes": {plural: {"data": data}}}})
}

#[tokio::test]
async fn catalog_bulk_jobs_lifecycle_errors_and_paging() {
    let a = app(config(None, fast()));
    let cats: Vec<Value> = (0..3)
        .map(|i| category(&format!("c-{i}"), &format!("Cat {i}")))
        .collect();
    let posted = a
        .post(
            "/api/catalog-category-bulk-create-jobs",
            &job_body("catalog-category-bulk-create-job", "categories", cats),
        )
        .await;
    assert_eq!(posted.status, 202, "{}", posted.body);
    conforms(
        "/api/catalog-category-bulk-create-jobs",
        "post",
        "202",
        &posted.body,
    );
    assert_eq!(posted.body["data"]["attributes"]["status"], "queued");
    let id = posted.body["data"]["id"].as_str().unwrap();
    let done = a
        .wait_job(&format!("/api/catalog-category-bulk-create-jobs/{id}"))
        .await;
    conforms(
        "/api/catalog-category-bulk-create-jobs/{job_id}",
        "get",
        "200",
        &done,
    );
    assert_eq!(done["data"]["attributes"]["completed_count"], 3);
    assert_eq!(done["data"]["attributes"]["errors"], json!([]));

    // 250 items in three jobs, the last repeating one: its error points at it.
    let mut ids = Vec::new();
    for chunk in 0..3 {
        let data: Vec<Value> = (chunk * 100..(chunk * 100 + 100).min(250))
            .map(|i| {
                item(
                    &format!("p-{i:03}"),
                    &format!("Item {i}"),
                    &["$custom:::$default:::c-1"],
                )
            })
            .chain((chunk == 2).then(|| item("p-000", "dup", &[])))
            .collect();
        let r = a
            .post(
                "/api/catalog-item-bulk-create-jobs",
                &job_body("catalog-item-bulk-create-job", "items", data),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        ids.push(r.body["data"]["id"].as_str().unwrap().to_owned());
    }
    let last = a
        .wait_job(&format!("/api/catalog-item-bulk-create-jobs/{}", ids[2]))
        .await;
    conforms(
        "/api/catalog-item-bulk-create-jobs/{job_id}",
        "get",
        "200",
        &last,
    );
    let attrs = &last["data"]["attributes"];
    assert_eq!(
        (
            attrs["completed_count"].as_u64(),
            attrs["failed_count"].as_u64()
        ),
        (Some(50), Some(1))
    );
    assert_eq!(
        attrs["errors"][0]["source"]["pointer"],
        "/data/attributes/items/data/50/attributes/external_id"
    );
    for id in &ids[..2] {
        a.wait_job(&format!("/api/catalog-item-bulk-create-jobs/{id}"))
            .await;
    }
    let jobs = a
        .get(&format!(
            "/api/catalog-item-bulk-create-jobs?filter={}",
            q("equals(status,\"complete\")")
        ))
        .await;
    assert_eq!(jobs.status, 200, "{}", jobs.body);
    conforms(
        "/api/catalog-item-bulk-create-jobs",
        "get",
        "200",
        &jobs.body,
    );
    let listed: Vec<String> = jobs.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids);
    // Paging reads each exactly once.
    let mut seen = Vec::new();
    let mut next = Some("/api/catalog-items?page[size]=100".to_owned());
    while let Some(uri) = next {
        let page = a.get(&uri).await;
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(
            page.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["id"].as_str().unwrap().to_owned()),
        );
        next = page.body["links"]["next"]
            .as_str()
            .map(|l| l.trim_start_matches("http://klaviyo.test").to_owned());
    }
    assert_eq!(seen.len(), 250);
    assert_eq!(
        seen.iter().collect::<std::collections::BTreeSet<_>>().len(),
        250
    );

    // Update and delete jobs, with a missing id each.
    let upd = vec![
        json!({"type": "catalog-item", "id": "$custom:::$default:::p-001", "attributes": {"title": "Renamed"}}),
        json!({"type": "catalog-item", "id": "$custom:::$default:::gone", "attributes": {"title": "x"}}),
    ];
    let r = a
        .post(
            "/api/catalog-item-bulk-update-jobs",
            &job_body("catalog-item-bulk-update-job", "items", upd),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let u = a
        .wait_job(&format!(
            "/api/catalog-item-bulk-update-jobs/{}",
            r.body["data"]["id"].as_str().unwrap()
        ))
        .await;
    conforms(
        "/api/catalog-item-bulk-update-jobs/{job_id}",
        "get",
        "200",
        &u,
    );
    assert_eq!(u["data"]["attributes"]["failed_count"], 1);
    assert_eq!(
        u["data"]["attributes"]["errors"][0]["source"]["pointer"],
        "/data/attributes/items/data/1/id"
    );
    let del = vec![
        json!({"type": "catalog-item", "id": "$custom:::$default:::p-002"}),
        json!({"type": "catalog-item", "id": "$custom:::$default:::gone"}),
    ];
    let r = a
        .post(
            "/api/catalog-item-bulk-delete-jobs",
            &job_body("catalog-item-bulk-delete-job", "items", del),
        )
        .await;
    let d = a
        .wait_job(&format!(
            "/api/catalog-item-bulk-delete-jobs/{}",
            r.body["data"]["id"].as_str().unwrap()
        ))
        .await;
    conforms(
        "/api/catalog-item-bulk-delete-jobs/{job_id}",
        "get",
        "200",
        &d,
    );
    assert_eq!(
        (
            d["data"]["attributes"]["completed_count"].as_u64(),
            d["data"]["attributes"]["failed_count"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let snap = a.handle.snapshot();
    assert_eq!(snap["counts"]["catalog_items"], 249);
    let typed = a.handle.typed();
    assert_eq!(typed.counts.catalog_items, 249);
    assert_eq!(typed.catalog_items.len(), 249);
    let renamed = snap["catalog_items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "$custom:::$default:::p-001")
        .unwrap();
    assert_eq!(renamed["attributes"]["title"], "Renamed");
    assert_eq!(renamed["category_ids"], json!(["$custom:::$default:::c-1"]));

    // Over 100 per job; a variant job naming a missing item fails that variant.
    let many: Vec<Value> = (0..101).map(|i| category(&format!("m-{i}"), "M")).collect();
    let r = a
        .post(
            "/api/catalog-category-bulk-create-jobs",
            &job_body("catalog-category-bulk-create-job", "categories", many),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        error(&r)["source"]["pointer"],
        "/data/attributes/categories/data"
    );
    let r = a
        .post(
            "/api/catalog-variant-bulk-create-jobs",
            &job_body(
                "catalog-variant-bulk-create-job",
                "variants",
                vec![
                    variant("s-1", "$custom:::$default:::p-003"),
                    variant("s-2", "$custom:::$default:::p-002"),
                ],
            ),
        )
        .await;
    let v = a
        .wait_job(&format!(
            "/api/catalog-variant-bulk-create-jobs/{}",
            r.body["data"]["id"].as_str().unwrap()
        ))
        .await;
    conforms(
        "/api/catalog-variant-bulk-create-jobs/{job_id}",
        "get",
        "200",
        &v,
    );
    assert_eq!(
        v["data"]["attributes"]["errors"][0]["source"]["pointer"],
        "/data/attributes/variants/data/1/relationships/item/data/id"
    );
}

#[tokio::test]
async fn at_most_500_catalog_jobs_in_progress_and_cancelled_jobs_write_nothing() {
    let slow = JobTiming {
        queued_ms: 3_600_000,
        processing_ms: 1,
        cancelled_share: 0.0,
    };
    let a = app(config(None, slow));
    for i in 0..500 {
        let r = a
            .post(
                "/api/catalog-category-bulk-create-jobs",
                &job_body(
                    "catalog-category-bulk-create-job",
                    "categories",
                    vec![category(&format!("c{i}"), "C")],
                ),
            )
            .await;
        assert_eq!(r.status, 202, "job {i}: {}", r.body);
    }
    // Nothing is written before a job is final.
    let snap = a.handle.snapshot();
    assert_eq!(snap["counts"]["catalog_categories"], 0);
    assert_eq!(snap["counts"]["jobs_in_progress"], 500);
    let r = a
        .post(
            "/api/catalog-item-bulk-create-jobs",
            &job_body(
                "catalog-item-bulk-create-job",
                "items",
                vec![item("p", "P", &[])],
            ),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(error(&r)["code"], "throttled");
    assert!(r.retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    // Profile import jobs are not catalog jobs.
    let p = a
        .post(
            "/api/profile-bulk-import-jobs",
            &json!({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
                {"type": "profile", "attributes": {"email": "p@example.com"}}]}}}}),
        )
        .await;
    assert_eq!(p.status, 202);

    let all_cancelled = JobTiming {
        cancelled_share: 1.0,
        ..fast()
    };
    let a = app(config(None, all_cancelled));
    let r = a
        .post(
            "/api/catalog-category-bulk-create-jobs",
            &job_body(
                "catalog-category-bulk-create-job",
                "categories",
                vec![category("c", "C")],
            ),
        )
        .await;
    let j = a
        .wait_job(&format!(
            "/api/catalog-category-bulk-create-jobs/{}",
            r.body["data"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(j["data"]["attributes"]["status"], "cancelled");
    assert_eq!(a.handle.snapshot()["counts"]["catalog_categories"], 0);
}

#[tokio::test]
async fn write_tiers_are_rate_limited_per_endpoint() {
    // Scale 0.005: the M tier (profile bulk import, event bulk create) allows 1 a minute,
    // the XL catalog reads 2 a second and 18 a minute.
    let a = app(config(Some(0.005), fast()));
    let bulk = json!({"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": [
        {"type": "event-bulk-create", "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": "r@example.com"}}},
            "events": {"data": [{"type": "event", "attributes": {"properties": {},
                "metric": {"data": {"type": "metric", "attributes": {"name": "M"}}}}}]}}}]}}}});
    assert_eq!(
        a.post("/api/event-bulk-create-jobs", &bulk).await.status,
        202
    );
    let second = a.post("/api/event-bulk-create-jobs", &bulk).await;
    assert_eq!(second.status, 429);
    assert_eq!(error(&second)["code"], "throttled");
    assert!(second.retry_after.is_some());
    // Another endpoint has its own budget.
    let p = a
        .post(
            "/api/profile-bulk-import-jobs",
            &json!({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
                {"type": "profile", "attributes": {"email": "p@example.com"}}]}}}}),
        )
        .await;
    assert_eq!(p.status, 202, "{}", p.body);
    let stats = a.stats().await;
    assert_eq!(stats["endpoints"]["bulk_create_events"]["throttled"], 1);
    assert_eq!(stats["tiers"]["M"]["ok"], 2);
    // Each endpoint says its tier and Klaviyo's steady limit of it, the body bytes of its
    // accepted requests only (the throttled one is not counted), and when it answered 2xx.
    let events = &stats["endpoints"]["bulk_create_events"];
    assert_eq!(events["tier"], "M");
    assert_eq!(events["steady_per_minute"], 150);
    assert_eq!(
        events["ok_request_bytes"],
        serde_json::to_vec(&bulk).unwrap().len()
    );
    let (first, last) = (
        events["first_ok_ms"].as_u64().unwrap(),
        events["last_ok_ms"].as_u64().unwrap(),
    );
    assert!(first <= last, "{events}");
    assert_eq!(stats["endpoints"]["bulk_import_profiles"]["tier"], "M");
    assert!(
        stats["endpoints"]["bulk_import_profiles"]["first_ok_ms"]
            .as_u64()
            .unwrap()
            >= last,
        "{stats}"
    );
    // A reset empties the counters and restarts their clock.
    let reset = a
        .router
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/klaviyo/_admin/stats/reset")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(reset.status().is_success());
    let third = a
        .post(
            "/api/profile-bulk-import-jobs",
            &json!({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
                {"type": "profile", "attributes": {"email": "q@example.com"}}]}}}}),
        )
        .await;
    assert_eq!(third.status, 429, "{}", third.body);
    let stats = a.stats().await;
    assert!(
        stats["endpoints"]["bulk_create_events"].is_null(),
        "{stats}"
    );
    assert_eq!(stats["endpoints"]["bulk_import_profiles"]["ok"], 0);
    assert!(stats["endpoints"]["bulk_import_profiles"]["first_ok_ms"].is_null());
}

#[tokio::test]
async fn oversized_and_malformed_bodies() {
    let a = app(config(None, fast()));
    let big = json!({"data": {"type": "profile", "attributes": {"email": "b@example.com",
        "properties": {"blob": "x".repeat(5 * 1024 * 1024)}}}});
    let r = a.post("/api/profile-import", &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(error(&r)["code"], "payload_too_large");
    let req = Request::builder()
        .method("POST")
        .uri("/api/profiles")
        .header("authorization", "Klaviyo-API-Key pk_sandbox")
        .header("revision", "2026-07-15")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = a.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    // Writes need the key like reads.
    let req = Request::builder()
        .method("POST")
        .uri("/api/events")
        .header("revision", "2026-07-15")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(a.router.clone().oneshot(req).await.unwrap().status(), 401);
}

#[tokio::test]
async fn writes_to_a_generated_profile_change_it_in_place() {
    let a = app(config(None, fast()));
    let first = a.get("/api/profiles?page[size]=1").await;
    let generated = &first.body["data"][0];
    let (id, email) = (
        generated["id"].as_str().unwrap().to_owned(),
        generated["attributes"]["email"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let r = a
        .post(
            "/api/profile-import",
            &profile(json!({"email": email, "title": "Dr", "properties": {"ct": true}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["id"], id.as_str());
    assert_eq!(r.body["data"]["attributes"]["title"], "Dr");
    // Generated properties are kept, the written one added.
    assert_eq!(r.body["data"]["attributes"]["properties"]["ct"], true);
    assert!(r.body["data"]["attributes"]["properties"]["loyalty_tier"].is_string());
    // A new email by id: found by the new one, no longer by the old one.
    let r = a
        .post(
            "/api/profile-import",
            &json!({"data": {"type": "profile", "id": id, "attributes": {"email": "moved@example.com"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(a.ids_by_email("moved@example.com").await, vec![id.clone()]);
    assert!(a.ids_by_email(&email).await.is_empty());
    // The old email is free again: a create with it makes a new profile.
    let r = a
        .post("/api/profiles", &profile(json!({"email": email})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_ne!(r.body["data"]["id"], id.as_str());
    // The generated profile reads back changed.
    let one = a.get(&format!("/api/profiles/{id}")).await;
    assert_eq!(one.body["data"]["attributes"]["email"], "moved@example.com");
}

#[tokio::test]
async fn an_injected_error_writes_nothing() {
    // The fault layer decides 500/502/503 and dropped connections before the handler, so a
    // writer retrying them cannot double-write; a truncated success has written.
    let mut c = config(None, fast());
    c.faults.error_500_share = 1.0;
    let a = app(c);
    let e = json!({"data": event("f@example.com", "Placed Order", "2025-03-01T10:00:00Z", Some("o-9"), 1.0)});
    let r = a.post("/api/events", &e).await;
    assert_eq!(r.status, 500);
    assert_eq!(a.handle.snapshot()["counts"]["events"], 0);
    assert_eq!(a.handle.snapshot()["counts"]["profiles"], 0);
}

#[tokio::test]
async fn the_written_state_pages_concatenate_to_the_whole_snapshot() {
    let a = app(config(None, fast()));
    for k in 0..5 {
        let (email, unique) = (format!("b{k}@example.com"), format!("u-{k}"));
        let metric = if k % 2 == 0 {
            "Placed Order"
        } else {
            "Ordered Product"
        };
        let at = "2025-03-01T10:00:00Z";
        let e = json!({"data": event(&email, metric, at, Some(&unique), f64::from(k))});
        assert_eq!(a.post("/api/events", &e).await.status, 202);
    }
    for k in 0..3 {
        let c = json!({"data": category(&format!("c-{k}"), "Shoes")});
        assert_eq!(a.post("/api/catalog-categories", &c).await.status, 201);
    }
    let cats = ["$custom:::$default:::c-0", "$custom:::$default:::c-2"];
    let it = json!({"data": item("p-1", "Boot", &cats)});
    assert_eq!(a.post("/api/catalog-items", &it).await.status, 201);
    for sku in ["s-1", "s-2", "s-3"] {
        let v = json!({"data": variant(sku, ITEM)});
        assert_eq!(a.post("/api/catalog-variants", &v).await.status, 201);
    }
    let job = json!({"data": {"type": "catalog-category-bulk-create-job", "attributes": {"categories": {"data": [
        category("c-9", "Hats")]}}}});
    let r = a.post("/api/catalog-category-bulk-create-jobs", &job).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["data"]["id"].as_str().unwrap().to_owned();
    a.wait_job(&format!("/api/catalog-category-bulk-create-jobs/{id}"))
        .await;

    let snap = a.handle.snapshot();
    let counts = a.get("/klaviyo/_admin/written/counts").await;
    assert_eq!(counts.status, 200);
    assert_eq!(counts.body, snap["counts"]);
    assert_eq!(counts.body["events"], 5);
    assert_eq!(counts.body["catalog_categories"], 4);
    for part in [
        "profiles",
        "metrics",
        "events",
        "catalog_items",
        "catalog_variants",
        "catalog_categories",
        "jobs",
    ] {
        let mut got = Vec::new();
        let mut offset = Some(0);
        let mut pages = 0;
        while let Some(o) = offset {
            let page = a
                .get(&format!(
                    "/klaviyo/_admin/written/{part}?offset={o}&limit=2"
                ))
                .await;
            assert_eq!(page.status, 200, "{part}: {}", page.body);
            assert_eq!(page.body["part"], part);
            assert_eq!(page.body["offset"], o);
            assert_eq!(
                page.body["total"],
                json!(snap[part].as_array().unwrap().len())
            );
            let data = page.body["data"].as_array().unwrap();
            assert!(data.len() <= 2, "{part}: a page holds at most its limit");
            got.extend(data.iter().cloned());
            offset = page.body["next_offset"].as_u64();
            pages += 1;
        }
        assert_eq!(Value::Array(got), snap[part], "{part}");
        assert!(pages >= snap[part].as_array().unwrap().len() / 2, "{part}");
    }
    // Past the end: empty, no next page.
    let past = a.get("/klaviyo/_admin/written/events?offset=99").await;
    assert_eq!(past.body["data"], json!([]));
    assert_eq!(past.body["next_offset"], Value::Null);

    // Bad requests name what is wrong.
    for (uri, names) in [
        ("/klaviyo/_admin/written/orders", "orders"),
        ("/klaviyo/_admin/written/events?limit=0", "limit=0"),
        ("/klaviyo/_admin/written/events?limit=1001", "limit=1001"),
        ("/klaviyo/_admin/written/events?offset=x", "offset=\"x\""),
        ("/klaviyo/_admin/written/events?page=2", "\"page\""),
    ] {
        let r = a.get(uri).await;
        assert_eq!(r.status, 400, "{uri}");
        let msg = r.body["error"].as_str().unwrap();
        assert!(msg.contains(names), "{uri}: {msg}");
    }
}
