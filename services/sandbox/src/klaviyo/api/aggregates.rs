//! `POST /api/metric-aggregates` (`query_metric_aggregates` of `specs/klaviyo/metrics.json`),
//! computed from the account's own events (generated and appended), so an aggregate equals
//! the same aggregate computed over the events `GET /api/events` serves:
//!
//! - `count`: events per interval and dimension values; `sum_value`: the sum of their
//!   `event_properties.$value` (0 when absent); `unique`: distinct profiles.
//! - `interval`: `day` or `hour` (UTC; `timezone` other than `UTC` is refused as not
//!   emulated, as are `week` and `month`); `dates` lists every interval start of the range.
//! - `by`: dimensions are event properties of those names (`$message`, `$flow`, `Campaign
//!   Name`, …); an event without one counts under the empty string.
//! - `filter`: exactly a `greater-or-equal` and a `less-than` on `datetime` (other filters
//!   are refused as not emulated).
//!
//! Limits (the sandbox's, which the connector's planner follows): a range of at most
//! [`MAX_DAYS_BY_DAY`] days with `interval=day`, [`MAX_DAYS_BY_HOUR`] with `hour`; at most
//! [`MAX_BY`] dimensions. Every row of the result is in the one response (`page_size` and
//! `page_cursor` are accepted and not needed: the response schema has no next link).

use std::collections::HashSet;

use super::*;

/// Longest range (days) of one request with `interval=day`.
pub const MAX_DAYS_BY_DAY: i64 = 366;
/// Longest range (days) of one request with `interval=hour`.
pub const MAX_DAYS_BY_HOUR: i64 = 31;
/// Most dimensions in `by`.
pub const MAX_BY: usize = 3;

/// The dimensions `by` may name: the enum of `attributes.by` in `specs/klaviyo/metrics.json`
/// (`MetricAggregateQueryResourceObject`); others are a 400.
const BY_DIMENSIONS: &[&str] = &[
    "$attributed_channel",
    "$attributed_flow",
    "$attributed_message",
    "$attributed_variation",
    "$campaign_channel",
    "$flow",
    "$flow_channel",
    "$message",
    "$message_send_cohort",
    "$usage_amount",
    "$value_currency",
    "$variation",
    "$variation_send_cohort",
    "Bot Click",
    "Bounce Type",
    "Campaign Name",
    "Client Canonical",
    "Client Name",
    "Client Type",
    "Email Domain",
    "Failure Source",
    "Failure Type",
    "From Number",
    "From Phone Region",
    "Inbox Provider",
    "List",
    "Message Format",
    "Message Name",
    "Message Type",
    "Method",
    "Segment Count",
    "Subject",
    "To Number",
    "To Phone Region",
    "URL",
    "form_id",
];

const DATETIME_ALLOWED: Allowed = &[("datetime", &[Op::GreaterOrEqual, Op::LessThan])];

fn invalid(pointer: &str, detail: impl Into<String>) -> ApiErr {
    ApiErr {
        status: StatusCode::BAD_REQUEST,
        code: "invalid",
        title: "Invalid input.",
        detail: detail.into(),
        source: Some(("pointer", pointer.to_owned())),
    }
}

/// Measurements of one group and interval.
#[derive(Default)]
struct Acc {
    count: u64,
    sum: f64,
    profiles: HashSet<u64>,
}

/// The handler (behind the same layers as every `/api/` route).
pub(super) async fn metric_aggregates(State(sh): St, headers: HeaderMap, body: Bytes) -> Response {
    let live = sh.live();
    let base = live.config.public_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    });
    let overlay = live.overlay.read().unwrap_or_else(|p| p.into_inner());
    let result = query(&live.data, &overlay, &body);
    drop(overlay);
    match result {
        Ok(mut doc) => {
            let url = format!("{}/api/metric-aggregates/", base.trim_end_matches('/'));
            doc["data"]["links"] = json!({"self": url});
            doc["links"] = json!({"self": url});
            json_response(StatusCode::OK, &doc)
        }
        Err(e) => e.response(),
    }
}

fn query(d: &Dataset, ov: &Overlay, body: &[u8]) -> Result<Value, ApiErr> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("/data", format!("The body is not JSON: {e}")))?;
    let data = &doc["data"];
    if data["type"] != "metric-aggregate" {
        return Err(invalid(
            "/data/type",
            "`data.type` must be 'metric-aggregate'.",
        ));
    }
    let a = &data["attributes"];
    let metric_id = a["metric_id"]
        .as_str()
        .ok_or_else(|| invalid("/data/attributes/metric_id", "`metric_id` is required."))?;
    let m = d
        .metric_index(metric_id)
        .ok_or_else(|| ApiErr::not_found(format!("Metric {metric_id} not found.")))?;
    let measurements: Vec<&str> = a["measurements"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if measurements.is_empty()
        || measurements
            .iter()
            .any(|x| !["count", "sum_value", "unique"].contains(x))
    {
        return Err(invalid(
            "/data/attributes/measurements",
            "`measurements` must list one or more of count, sum_value, unique.",
        ));
    }
    let step = match a["interval"].as_str().unwrap_or("day") {
        "day" => 86_400,
        "hour" => 3_600,
        "week" | "month" => {
            return Err(invalid(
                "/data/attributes/interval",
                "The interval 'week' or 'month' is allowed by Klaviyo but not emulated by the sluice sandbox.",
            ));
        }
        other => {
            return Err(invalid(
                "/data/attributes/interval",
                format!("'{other}' is not a valid interval: day, hour, week or month."),
            ));
        }
    };
    match a["timezone"].as_str() {
        None | Some("UTC") => {}
        Some(other) => {
            return Err(invalid(
                "/data/attributes/timezone",
                format!("The timezone '{other}' is not emulated by the sluice sandbox (UTC only)."),
            ));
        }
    }
    let by: Vec<String> = match &a["by"] {
        Value::Null => Vec::new(),
        Value::Array(v) => v
            .iter()
            .map(|x| {
                x.as_str().map(str::to_owned).ok_or_else(|| {
                    invalid(
                        "/data/attributes/by",
                        "`by` must be a list of dimension names.",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(invalid(
                "/data/attributes/by",
                "`by` must be a list of dimension names.",
            ));
        }
    };
    if let Some(bad) = by.iter().find(|b| !BY_DIMENSIONS.contains(&b.as_str())) {
        return Err(invalid(
            "/data/attributes/by",
            format!(
                "'{bad}' is not a valid dimension of `by`. Allowed: {}",
                BY_DIMENSIONS.join(", ")
            ),
        ));
    }
    if by.len() > MAX_BY {
        return Err(invalid(
            "/data/attributes/by",
            format!("At most {MAX_BY} dimensions may be given in `by`."),
        ));
    }
    let mut bounds = Bounds::default();
    let (mut has_lo, mut has_hi) = (false, false);
    let filters = a["filter"].as_array().ok_or_else(|| {
        invalid(
            "/data/attributes/filter",
            "`filter` is required: a greater-or-equal and a less-than on datetime.",
        )
    })?;
    for f in filters {
        let text = f.as_str().unwrap_or_default();
        let conds = filter::parse(text, DATETIME_ALLOWED).map_err(|e| {
            invalid(
                "/data/attributes/filter",
                format!("{e} (the sluice sandbox emulates datetime filters only)"),
            )
        })?;
        for c in conds {
            let t = datetime_value(&c)?;
            has_lo |= c.op == Op::GreaterOrEqual;
            has_hi |= c.op == Op::LessThan;
            bounds.apply(c.op, t);
        }
    }
    if !(has_lo && has_hi) || bounds.hi <= bounds.lo {
        return Err(invalid(
            "/data/attributes/filter",
            "The filter must give a time range: greater-or-equal(datetime,…) and less-than(datetime,…), the first before the second.",
        ));
    }
    let max_days = if step == 3_600 {
        MAX_DAYS_BY_HOUR
    } else {
        MAX_DAYS_BY_DAY
    };
    if bounds.hi - bounds.lo > max_days * 86_400 {
        return Err(invalid(
            "/data/attributes/filter",
            format!("The time range must be at most {max_days} days with this interval."),
        ));
    }
    let (lo, hi) = (bounds.lo, bounds.hi);
    let mut groups: BTreeMap<Vec<String>, BTreeMap<i64, Acc>> = BTreeMap::new();
    let mut add = |ts: i64, profile: u64, props: &Value| {
        let dims = by
            .iter()
            .map(|name| match &props[name.as_str()] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect();
        let acc = groups
            .entry(dims)
            .or_default()
            .entry(ts - ts.rem_euclid(step))
            .or_default();
        acc.count += 1;
        acc.sum += props["$value"].as_f64().unwrap_or(0.0);
        acc.profiles.insert(profile);
    };
    let (first, last) = (d.count_before(m, lo), d.count_before(m, hi));
    for (k, ts) in d.times(m, first, last).into_iter().enumerate() {
        let idx = first + k as u64;
        add(ts, d.event_profile(m, idx), &d.event_properties(m, idx, ts));
    }
    if let Some(events) = ov.events.get(m) {
        for (&(ts, _), e) in events.range((lo, 0)..(hi, 0)) {
            let props = serde_json::from_str(&e.properties).unwrap_or(Value::Null);
            add(ts, e.profile, &props);
        }
    }
    let starts: Vec<i64> = {
        let mut t = lo - lo.rem_euclid(step);
        let mut v = Vec::new();
        while t < hi {
            v.push(t);
            t += step;
        }
        v
    };
    let rows: Vec<Value> = groups
        .into_iter()
        .map(|(dims, accs)| {
            let mut ms = Map::new();
            for x in &measurements {
                let series: Vec<Value> = starts
                    .iter()
                    .map(|s| {
                        let acc = accs.get(s);
                        match *x {
                            "count" => json!(acc.map_or(0, |a| a.count) as f64),
                            "sum_value" => {
                                json!(acc.map_or(0.0, |a| (a.sum * 100.0).round() / 100.0))
                            }
                            _ => json!(acc.map_or(0, |a| a.profiles.len()) as f64),
                        }
                    })
                    .collect();
                ms.insert((*x).to_owned(), Value::Array(series));
            }
            json!({"dimensions": dims, "measurements": ms})
        })
        .collect();
    let id = format!("{:016x}", mix64(lo as u64 ^ (m as u64) << 48 ^ hi as u64));
    Ok(json!({
        "data": {
            "type": "metric-aggregate",
            "id": id,
            "attributes": {
                "dates": starts.iter().map(|&t| fmt_time(t)).collect::<Vec<_>>(),
                "data": rows,
            },
        },
    }))
}
