//! The Klaviyo emulation's campaigns, flows, templates, tags, suppressions (profiles'
//! subscriptions) and metric aggregates: every response validates against its operation's
//! `200` schema in `specs/klaviyo/*.json`, what the spec refuses is a 400, and aggregates
//! add up to the events served.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use axum::body::Body;
use axum::http::Request;
use chrono::{TimeZone as _, Utc};
use serde_json::{Value, json};
use sluice_sandbox::klaviyo::{self, KlaviyoConfig, KlaviyoDataSpec};
use tower::ServiceExt as _;

fn spec() -> KlaviyoDataSpec {
    KlaviyoDataSpec {
        seed: 7,
        profiles: 500,
        metrics: 4,
        lists: 2,
        segments: 2,
        start: Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(2024, 3, 11, 0, 0, 0).unwrap(),
        events_per_metric: 2_000,
        future_share: 0.0,
    }
}

fn app() -> axum::Router {
    klaviyo::router(KlaviyoConfig {
        data: spec(),
        rate_limit_scale: None,
        ..KlaviyoConfig::default()
    })
    .unwrap()
}

/// One request; the status and the JSON body.
async fn call(app: &axum::Router, method: &str, uri: &str, body: Option<Value>) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("Authorization", "Klaviyo-API-Key pk_sandbox")
        .header("revision", "2026-07-15")
        .header("content-type", "application/vnd.api+json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Path and query of an absolute `links.next`.
fn target(link: &str) -> String {
    let rest = link.split_once("://").map_or(link, |(_, r)| r);
    rest[rest.find('/').unwrap()..].to_string()
}

/// A spec file of the shared folder.
fn spec_file(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/specs/klaviyo")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Checks `value` against an OpenAPI 3.0 schema of `doc` — `$ref`, `type`, `nullable`,
/// `enum`, `properties`, `required`, `additionalProperties`, `items`, `allOf`, `anyOf`,
/// `oneOf`, `format: date-time | date` — collecting what does not fit, with its path.
///
/// `oneOf` is read as "at least one": Klaviyo's specs list alternatives that overlap (the
/// email, SMS and push send options are the same object), so a strict "exactly one" would
/// refuse Klaviyo's own examples.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap();
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "unresolved {r}");
        return validate(doc, target, value, at, errors);
    }
    if value.is_null() {
        if schema["nullable"] == true || schema.as_object().is_some_and(|o| o.is_empty()) {
            return;
        }
        if schema.get("type").is_some() || schema.get("properties").is_some() {
            errors.push(format!("{at}: null where the schema is not nullable"));
            return;
        }
    }
    for all in schema["allOf"].as_array().into_iter().flatten() {
        validate(doc, all, value, at, errors);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            if value.is_null() && schema["nullable"] == true {
                return;
            }
            let fits = options.iter().any(|o| {
                let mut e = Vec::new();
                validate(doc, o, value, at, &mut e);
                e.is_empty()
            });
            if !fits {
                errors.push(format!("{at}: fits none of {key} ({value})"));
            }
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {options:?}"));
    }
    let kind = schema["type"].as_str();
    let ok = match kind {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!(
            "{at}: {value} is not of type {}",
            kind.unwrap_or("")
        ));
        return;
    }
    if let Some(s) = value.as_str() {
        let fits = match schema["format"].as_str() {
            Some("date-time") => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            Some("date") => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
            _ => true,
        };
        if !fits {
            errors.push(format!("{at}: {s:?} is not a {}", schema["format"]));
        }
    }
    if let Some(object) = value.as_object() {
        for req in schema["required"].as_array().into_iter().flatten() {
            let name = req.as_str().unwrap();
            if !object.contains_key(name) {
                errors.push(format!("{at}: required `{name}` missing"));
            }
        }
        let properties = schema["properties"].as_object();
        for (k, v) in object {
            match properties.and_then(|p| p.get(k)) {
                Some(s) => validate(doc, s, v, &format!("{at}.{k}"), errors),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => errors.push(format!("{at}: `{k}` is not allowed")),
                    s @ Value::Object(_) => validate(doc, s, v, &format!("{at}.{k}"), errors),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            validate(doc, items, v, &format!("{at}[{i}]"), errors);
        }
    }
}

/// Asserts that `body` fits the `200` response of `method path` in spec file `file`.
fn assert_fits(file: &Value, method: &str, path: &str, body: &Value) {
    let schema = &file["paths"][path][method]["responses"]["200"]["content"]["application/vnd.api+json"]
        ["schema"];
    assert!(!schema.is_null(), "{method} {path}: no 200 schema");
    let mut errors = Vec::new();
    validate(file, schema, body, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {path}: the response does not fit the spec:\n{}",
        errors.join("\n")
    );
}

/// GETs `uri` and every next page, checking each against the spec; the resources.
async fn all_pages(app: &axum::Router, file: &Value, path: &str, uri: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next = Some(uri.to_string());
    while let Some(u) = next.take() {
        let (status, mut body) = call(app, "GET", &u, None).await;
        assert_eq!(status, 200, "{u}: {body}");
        if path == "/api/profiles"
            && let Some(links) = body["links"].as_object_mut()
        {
            // The older endpoints answer `"prev": null` as Klaviyo's servers do, which the
            // spec's non-nullable `CollectionLinks` do not allow; the new endpoints leave
            // such links out. Only the profiles' own content is checked here.
            links.retain(|_, v| !v.is_null());
        }
        assert_fits(file, "get", path, &body);
        out.extend(body["data"].as_array().cloned().unwrap_or_default());
        next = body["links"]["next"].as_str().map(target);
    }
    out
}

#[tokio::test]
async fn every_response_fits_its_spec_schema() {
    let app = app();
    let s = spec();
    let campaigns_spec = spec_file("campaigns");
    let mut campaign_ids = Vec::new();
    for channel in ["email", "sms"] {
        let uri = format!(
            "/api/campaigns?filter=equals(messages.channel,'{channel}')&include=campaign-messages,tags&page%5Bsize%5D=4"
        );
        let got = all_pages(&app, &campaigns_spec, "/api/campaigns", &uri).await;
        campaign_ids.extend(got.iter().map(|c| c["id"].as_str().unwrap().to_string()));
    }
    let mut want: Vec<String> = klaviyo::campaigns(&s).into_iter().map(|c| c.id).collect();
    want.sort();
    campaign_ids.sort();
    assert_eq!(campaign_ids, want, "every campaign of both channels");
    let first = klaviyo::campaigns(&s).remove(0);
    let (status, body) = call(
        &app,
        "GET",
        &format!("/api/campaigns/{}/campaign-messages", first.id),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_fits(
        &campaigns_spec,
        "get",
        "/api/campaigns/{id}/campaign-messages",
        &body,
    );
    assert_eq!(body["data"][0]["id"], first.message_id);

    let flows_spec = spec_file("flows");
    let flows = all_pages(
        &app,
        &flows_spec,
        "/api/flows",
        "/api/flows?include=flow-actions,tags",
    )
    .await;
    assert_eq!(flows.len(), klaviyo::flows(&s).len());
    for (flow, actions) in klaviyo::flows(&s) {
        let got = all_pages(
            &app,
            &flows_spec,
            "/api/flows/{id}/flow-actions",
            &format!("/api/flows/{flow}/flow-actions"),
        )
        .await;
        assert_eq!(got.len(), actions.len());
    }
    for (message, _, action) in klaviyo::flow_messages(&s) {
        let got = all_pages(
            &app,
            &flows_spec,
            "/api/flow-actions/{id}/flow-messages",
            &format!("/api/flow-actions/{action}/flow-messages"),
        )
        .await;
        assert!(got.iter().any(|m| m["id"] == message.as_str()));
    }

    let templates_spec = spec_file("templates");
    let templates = all_pages(&app, &templates_spec, "/api/templates", "/api/templates").await;
    assert_eq!(templates.len(), klaviyo::templates(&s).len());

    let tags_spec = spec_file("tags");
    let tags = all_pages(&app, &tags_spec, "/api/tags", "/api/tags?include=tag-group").await;
    assert_eq!(tags.len(), klaviyo::tags(&s).len());
    all_pages(&app, &tags_spec, "/api/tag-groups", "/api/tag-groups").await;
    for kind in ["campaign", "flow", "list", "segment"] {
        let path = format!("/api/tags/{{id}}/relationships/{kind}s");
        let mut got = Vec::new();
        for (tag, _, _) in klaviyo::tags(&s) {
            for r in all_pages(
                &app,
                &tags_spec,
                &path,
                &format!("/api/tags/{tag}/relationships/{kind}s"),
            )
            .await
            {
                got.push((tag.clone(), r["id"].as_str().unwrap().to_string()));
            }
        }
        assert_eq!(got, klaviyo::tag_links(&s, kind), "{kind} links");
    }

    let profiles_spec = spec_file("profiles");
    let profiles = all_pages(
        &app,
        &profiles_spec,
        "/api/profiles",
        "/api/profiles?additional-fields%5Bprofile%5D=subscriptions&page%5Bsize%5D=100",
    )
    .await;
    let suppressed = profiles
        .iter()
        .filter(|p| {
            p["attributes"]["subscriptions"]["email"]["marketing"]["suppression"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .count();
    assert_eq!(suppressed, klaviyo::suppressions(&s).len());
    assert!(suppressed > 10);

    let metrics_spec = spec_file("metrics");
    for (interval, by) in [("day", json!(["$message", "$flow"])), ("hour", json!(null))] {
        let (metric, _) = klaviyo::metrics(&s)[1].clone();
        let body = json!({"data": {"type": "metric-aggregate", "attributes": {
            "metric_id": metric, "measurements": ["count", "sum_value", "unique"],
            "interval": interval, "by": by,
            "filter": ["greater-or-equal(datetime,2024-03-02T00:00:00)", "less-than(datetime,2024-03-05T00:00:00)"]}}});
        let (status, doc) = call(&app, "POST", "/api/metric-aggregates", Some(body)).await;
        assert_eq!(status, 200, "{doc}");
        assert_fits(&metrics_spec, "post", "/api/metric-aggregates", &doc);
        // The counts add up to the events served in the range.
        let total: f64 = doc["data"]["attributes"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["measurements"]["count"].as_array().unwrap().clone())
            .map(|v| v.as_f64().unwrap())
            .sum();
        let events = klaviyo::event_ids(
            &s,
            Some(&metric),
            Utc.with_ymd_and_hms(2024, 3, 2, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2024, 3, 5, 0, 0, 0).unwrap(),
        );
        assert_eq!(total as usize, events.len(), "{interval}");
        let dates = doc["data"]["attributes"]["dates"].as_array().unwrap().len();
        assert_eq!(dates, if interval == "day" { 3 } else { 72 });
    }
}

#[tokio::test]
async fn what_the_spec_refuses_is_a_400() {
    let app = app();
    let (metric, _) = klaviyo::metrics(&spec())[0].clone();
    let cases: Vec<(&str, &str, Option<Value>, &str)> = vec![
        ("GET", "/api/campaigns", None, "channel filter is required"),
        (
            "GET",
            "/api/campaigns?filter=equals(messages.channel,'fax')",
            None,
            "messages.channel",
        ),
        (
            "GET",
            "/api/campaigns?filter=equals(messages.channel,'email')&sort=subject",
            None,
            "sort",
        ),
        ("GET", "/api/templates?page%5Bsize%5D=11", None, "Page size"),
        ("GET", "/api/flows?include=templates", None, "include"),
        (
            "POST",
            "/api/metric-aggregates",
            Some(json!({"data": {"type": "metric-aggregate", "attributes": {
                "metric_id": metric, "measurements": ["count"], "filter": []}}})),
            "time range",
        ),
        (
            "POST",
            "/api/metric-aggregates",
            Some(json!({"data": {"type": "metric-aggregate", "attributes": {
                "metric_id": metric, "measurements": ["count"], "interval": "hour",
                "filter": ["greater-or-equal(datetime,2024-01-01T00:00:00)", "less-than(datetime,2024-03-01T00:00:00)"]}}})),
            "at most 31 days",
        ),
        (
            "POST",
            "/api/metric-aggregates",
            Some(json!({"data": {"type": "metric-aggregate", "attributes": {
                "metric_id": metric, "measurements": ["median"],
                "filter": ["greater-or-equal(datetime,2024-03-01T00:00:00)", "less-than(datetime,2024-03-02T00:00:00)"]}}})),
            "measurements",
        ),
        (
            "POST",
            "/api/metric-aggregates",
            Some(json!({"data": {"type": "metric-aggregate", "attributes": {
                "metric_id": metric, "measurements": ["count"], "by": ["$message", "$flow", "URL", "Subject"],
                "filter": ["greater-or-equal(datetime,2024-03-01T00:00:00)", "less-than(datetime,2024-03-02T00:00:00)"]}}})),
            "At most 3",
        ),
        (
            "POST",
            "/api/metric-aggregates",
            Some(json!({"data": {"type": "metric-aggregate", "attributes": {
                "metric_id": metric, "measurements": ["count"], "by": ["Colour"],
                "filter": ["greater-or-equal(datetime,2024-03-01T00:00:00)", "less-than(datetime,2024-03-02T00:00:00)"]}}})),
            "not a valid dimension",
        ),
    ];
    for (method, uri, body, needle) in cases {
        let (status, doc) = call(&app, method, uri, body).await;
        assert_eq!(status, 400, "{method} {uri}: {doc}");
        let detail = doc["errors"][0]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{method} {uri}: {detail}");
    }
}
