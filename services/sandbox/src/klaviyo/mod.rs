//! An emulation of Klaviyo's JSON:API (revision 2026-07-15, after
//! `specs/klaviyo/{events,profiles,metrics,lists,segments,catalogs}.json`) over a generated
//! account, taking writes too.
//! What the spec files say per operation (query parameters and their enums, `page[size]`,
//! rate-limit tiers) is derived into `operations.json` and checked against them (`spec.rs`).
//!
//! # Routes (mounted at the sandbox root, so clients use the sandbox URL as base)
//!
//! | route | tier | `page[size]` default / max |
//! |---|---|---|
//! | `GET /api/metrics` (filter `integration.name`, `integration.category` equals) | M | cursor only, 200 per page |
//! | `GET /api/metrics/{id}` | M | |
//! | `GET /api/events` (see below) | XL | 200 / 1000 |
//! | `GET /api/profiles` (filter `id`, `email`, `phone_number`, `external_id` any/equals; `created`, `updated` greater-than/less-than; sort `id`, `created`, `updated`, each also `-`) | L (M with `additional-fields[profile]=predictive_analytics`) | 20 / 100 |
//! | `GET /api/profiles/{id}` | L (XS with `include=lists` or `segments`) | |
//! | `GET /api/lists`, `GET /api/segments` (filter `id`, `name` any/equals; `created`, `updated` greater-than; segments also `is_active`, `is_starred`; sort `created`, `id`, `name`, `updated`, also `-`) | L | 10 / 10 |
//! | `GET /api/lists/{id}`, `GET /api/segments/{id}` | L (XS with `additional-fields[…]=profile_count`) | |
//! | `GET /api/{lists,segments}/{id}/relationships/profiles` (`{type, id}` only) | L | 20 / 100 |
//! | `GET /api/{lists,segments}/{id}/profiles` (full profiles plus `joined_group_at`) | L (lists: M with `additional-fields[profile]=predictive_analytics`) | 20 / 100 |
//!
//! Campaigns, flows, templates, tags (`specs/klaviyo/{campaigns,flows,templates,tags}.json`)
//! and `POST /api/metric-aggregates` (`metrics.json`, computed from the account's events):
//! see `api/engagement.rs` and `api/aggregates.rs`; their ground truth is in the
//! functions ([`campaigns`], [`flows`], [`tag_links`], [`suppressions`], …).
//!
//! Membership routes filter on `email`, `phone_number` (any/equals), segments also on
//! `profile_id`, and `joined_group_at` comparisons; sort `joined_group_at` / `-joined_group_at`.
//!
//! `GET /api/events`: filter `equals(metric_id,…)`, `equals(profile_id,…)`,
//! `has(profile)`, `has(metric)`, `datetime` and `timestamp` (epoch seconds) with
//! `greater-or-equal`/`greater-than`/`less-or-equal`/`less-than`, combined with `and(…)` or
//! commas; `sort` `datetime`, `-datetime`, `timestamp`, `-timestamp` (default ascending; ties
//! in a stable internal order). Pages are full (a `profile_id` filter scans on until the page
//! is). Before revision 2026-01-15 `page[size]` is ignored: 200 per page.
//!
//! Filter datetimes (every endpoint and field) take `Z`, `±HH:MM`, `±HHMM` or `±HH` offsets,
//! fractional seconds, minutes only, no zone (UTC) or a date alone, quoted or not.
//!
//! Every query parameter must be one of the operation's in the spec, and every value of
//! `include`, `fields[…]`, `additional-fields[…]` and `sort` one of its enum there (else 400
//! naming the parameter; so `sort` and `page[size]` on `/api/metrics` are refused). What
//! they ask for is served: sparse fieldsets on `attributes` of the resources and of the
//! included ones (dotted names keep one sub-field, e.g. `location.city`); `include=profile`,
//! `metric` and `attributions` on events (a quarter of the events of non-email metrics are
//! attributed: `relationships.attributions.data` and an `attribution` resource);
//! `include=lists`, `segments` on a profile (its memberships);
//! `additional-fields[profile]=subscriptions|predictive_analytics`;
//! `additional-fields[list|segment]=profile_count`. Includes of what is not modelled (tags,
//! flow triggers, push tokens, conversations) give empty relationships and `included`.
//! Filters on fields the spec allows but the sandbox does not model (`_kx`, `push_token`,
//! `subscriptions.*`) and sorts on `email`/`subscriptions.*` are answered with 400 saying so.
//!
//! Every `/api/` request needs `Authorization: Klaviyo-API-Key <key>` (a key of
//! [`KlaviyoConfig::api_keys`]; else 401 `not_authenticated`) and `revision`: a revision
//! Klaviyo published, optionally with `.pre` (else 400). Errors are
//! `{"errors": [{id, status, code, title, detail, source}]}`; parameter problems name the
//! field or operator and carry `source.parameter`.
//!
//! Paging: `links.self`, `links.next` (absolute URL with the query and an opaque
//! `page[cursor]`: hex of JSON holding the position, the filter and the sort; null on the
//! last page) and `links.prev` (the page before; null on the first page). `page[cursor]` may
//! also be a whole `links.next` URL or the text after `page%5Bcursor%5D` in it (`=` included),
//! as Klaviyo's SDKs pass it. A cursor used with a different `filter` or `sort` is a 400.
//!
//! # Writes
//! After `specs/klaviyo/{profiles,events,catalogs}.json` (routes, limits and refusals in
//! `api/writes.rs` and the files beside it): `POST /api/profiles` (409 `duplicate_profile`
//! with `meta.duplicate_profile_id`), `PATCH /api/profiles/{id}`, `POST /api/profile-import`
//! (201/200), profile bulk import jobs with their `import-errors`, `POST /api/events` and
//! event bulk create jobs (202, no body; a repeat of profile + metric + `unique_id`, or of
//! the time to the second, is dropped; metrics created on first use), and the catalog
//! (items, variants, categories: reads, single writes, bulk jobs). Bodies are checked
//! against the spec's request schemas (`write_schemas.json`, see `schema.rs`): 400 with
//! `source.pointer`; over 5 MB a 413. The emulator rejects phone numbers that are not E.164.
//! Bulk jobs go `queued` → `processing` → `complete` (or `cancelled`) as
//! [`KlaviyoConfig::jobs`] says; their writes become visible when final. What is written is
//! served by the reads (profiles, events, metrics, catalog) alongside the generated account,
//! until the configuration's `data` changes. Write tiers come from the spec like the reads'.
//!
//! # Rate limits
//! Per account (API key) and endpoint (or tier, [`RateLimitScope`]), a 1 s burst and a 60 s
//! steady window (see [`Tier`]), fixed windows (one opens at the first request after the
//! last closed, and frees its whole budget when it closes), scaled by
//! [`KlaviyoConfig::rate_limit_scale`] (`None` = unlimited, then no `RateLimit-*` headers);
//! the shared layer [`crate::ratelimit`]. Successes carry `RateLimit-Limit`
//! (`"<steady>, <burst>;w=1, <steady>;w=60"`), `RateLimit-Remaining` and `RateLimit-Reset`
//! (seconds) of the steady window, as Klaviyo documents; 429s carry `Retry-After` (whole
//! seconds ≥ 1, until every full window has room) and an error with `code: "throttled"`.
//!
//! # Admin routes (no auth)
//! - `GET /klaviyo/_admin/stats`: counters per tier and endpoint
//!   (`ok`, `throttled`, `client_errors`, `faults`, `total`, `throttled_share`), and `slow`:
//!   how many responses the `slow_share` fault held back;
//!   `POST /klaviyo/_admin/stats/reset`.
//! - `GET|POST /klaviyo/_admin/faults`: the [`FaultConfig`] (POST replaces it; a
//!   `throttle_seconds` > 0 forces 429s for that long from now).
//! - `GET|POST /klaviyo/_admin/config`: the [`KlaviyoConfig`] (POST replaces it; fields left
//!   out take their defaults; the appended events and touched profiles survive unless `data`
//!   changes; rate-limit windows are reset).
//! - `POST /klaviyo/_admin/events`: `{"metric_id", "profile_id", "datetime", "properties"}`
//!   appends one event, or `{"count": n, "metric_id"?, "datetime"?}` appends n generated
//!   ones (random profiles; `datetime` default now) → `{"ids": [...]}`.
//! - `GET /klaviyo/_admin/written`: what the write endpoints wrote (profiles, metrics,
//!   events, catalog objects, jobs, counts) as one document; in process the same through
//!   [`router_with_handle`]'s [`WrittenHandle`]. `GET /klaviyo/_admin/written/counts`
//!   serves the counts alone, and `GET /klaviyo/_admin/written/{part}?offset=&limit=` one
//!   list of it a page at a time ([`WrittenPage`]; `limit` ≤ 1000), for states too large
//!   to read back whole.
//! - `POST /klaviyo/_admin/profiles/{id}/touch` with an optional `{"updated": datetime}`
//!   (default now) sets the profile's `updated` → the profile resource.
//!
//! # Faults ([`FaultConfig`])
//! The shared fault layer ([`crate::faults`]), applied to `/api/` requests after
//! authentication and rate limiting (a forced throttle burst comes before the limiter),
//! decided per request from `hash(seed, request number)` (so a sequential client sees the
//! same faults each run): latency (fixed + jitter), slow responses, 500, 502 or 503 error
//! bodies (in Klaviyo's error shape), dropped connections (the response body fails before
//! any byte, so hyper closes the connection), truncated successful bodies (the full
//! `Content-Length` is announced, half the body is sent, then the connection is closed).
//! Injected faults count as `faults` of their tier and endpoint in the stats (a forced
//! throttle as `throttled`).

mod api;
mod data;
mod filter;
mod limits;
mod schema;
mod spec;
mod truth;
mod written;

use chrono::{DateTime, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::faults::FaultConfig;
pub use api::{WrittenHandle, router, router_with_handle};
pub use data::InvalidSpec;
pub use limits::{RateLimitScope, Tier};
pub use truth::*;
pub use written::{
    JobTiming, WrittenCounts, WrittenEvent, WrittenJob, WrittenMetricName, WrittenPage,
    WrittenResource, WrittenSnapshot,
};

/// What account to generate. All times are UTC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KlaviyoDataSpec {
    /// Seed of all randomness.
    pub seed: u64,
    /// Number of profiles, 1..=50 000 000.
    pub profiles: u64,
    /// Number of metrics, ≤ 3000, named `Placed Order`, `Received Email`, `Opened Email`,
    /// `Clicked Email`, `Viewed Product`, `Started Checkout`, `Ordered Product`,
    /// `Active on Site`, `Added to Cart`, `Bounced Email`, `Unsubscribed`, `Fulfilled Order`
    /// (then again with ` 2`, …). Email metrics are bursty, the others uniform.
    pub metrics: u32,
    /// Number of lists, ≤ 3000.
    pub lists: u32,
    /// Number of segments, ≤ 3000.
    pub segments: u32,
    /// Start of the events' range (inclusive, whole seconds).
    pub start: DateTime<Utc>,
    /// End of the events' range (exclusive), after `start`, at most 20 years later.
    pub end: DateTime<Utc>,
    /// Events generated per metric.
    pub events_per_metric: u64,
    /// Share (0..=1) of each metric's events dated in the year after `end` instead.
    pub future_share: f64,
}

impl Default for KlaviyoDataSpec {
    fn default() -> Self {
        KlaviyoDataSpec {
            seed: 1,
            profiles: 10_000,
            metrics: 6,
            lists: 3,
            segments: 3,
            start: Utc
                .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            end: Utc
                .with_ymd_and_hms(2024, 4, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            events_per_metric: 100_000,
            future_share: 0.0,
        }
    }
}

impl KlaviyoDataSpec {
    /// Checks the sizes and the range.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        data::Dataset::new(self).map(|_| ())
    }
}

/// The Klaviyo emulation's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KlaviyoConfig {
    /// The generated account.
    pub data: KlaviyoDataSpec,
    /// Accepted private API keys, each its own account for rate limiting.
    /// Default `["pk_sandbox"]`.
    pub api_keys: Vec<String>,
    /// Multiplies every rate limit (1.0 = Klaviyo's, > 0); `None` (JSON null, or the text
    /// `unlimited` when read) = unlimited.
    #[serde(deserialize_with = "rate_limit_scale")]
    pub rate_limit_scale: Option<f64>,
    /// What a rate-limit budget is shared by.
    pub rate_limit_scope: RateLimitScope,
    /// Injected faults.
    pub faults: FaultConfig,
    /// Base of the absolute URLs in `links` (e.g. `http://sandbox:9200`); default
    /// `http://<Host header>`.
    pub public_url: Option<String>,
    /// How bulk jobs go from `queued` to final.
    pub jobs: JobTiming,
}

impl Default for KlaviyoConfig {
    fn default() -> Self {
        KlaviyoConfig {
            data: KlaviyoDataSpec::default(),
            api_keys: vec!["pk_sandbox".to_owned()],
            rate_limit_scale: Some(1.0),
            rate_limit_scope: RateLimitScope::default(),
            faults: FaultConfig::default(),
            public_url: None,
            jobs: JobTiming::default(),
        }
    }
}

impl crate::EmulatorConfig for KlaviyoConfig {
    const NAME: &'static str = "klaviyo";

    fn router(self) -> anyhow::Result<axum::Router> {
        Ok(api::router(self)?)
    }
}

/// A positive finite number, `null`, or `"unlimited"`/`"none"` (= `null`).
fn rate_limit_scale<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scale {
        Number(f64),
        Text(String),
    }
    match Option::<Scale>::deserialize(d)? {
        None => Ok(None),
        Some(Scale::Number(x)) if x > 0.0 && x.is_finite() => Ok(Some(x)),
        Some(Scale::Text(t)) if t == "unlimited" || t == "none" => Ok(None),
        Some(Scale::Number(x)) => Err(serde::de::Error::custom(format!(
            "rate_limit_scale must be a positive number or `unlimited`, not {x}"
        ))),
        Some(Scale::Text(t)) => Err(serde::de::Error::custom(format!(
            "rate_limit_scale must be a positive number or `unlimited`, not {t:?}"
        ))),
    }
}

fn dataset(spec: &KlaviyoDataSpec) -> data::Dataset {
    match data::Dataset::new(spec) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    }
}

/// Ids of the generated events (not the appended ones) of `metric_id` (or of every
/// metric) dated in `start..end` (UTC; `start` inclusive, `end` exclusive; events have
/// whole-second times), sorted as strings. An unknown metric id gives nothing.
///
/// # Panics
/// When `spec` is invalid ([`KlaviyoDataSpec::validate`]).
pub fn event_ids(
    spec: &KlaviyoDataSpec,
    metric_id: Option<&str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<String> {
    let d = dataset(spec);
    let metrics: Vec<usize> = match metric_id {
        Some(id) => d.metric_index(id).into_iter().collect(),
        None => (0..d.metrics.len()).collect(),
    };
    let mut b = filter::Bounds::default();
    let secs =
        |t: DateTime<Utc>| t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9;
    b.apply(filter::Op::GreaterOrEqual, secs(start));
    b.apply(filter::Op::LessThan, secs(end));
    let mut out = Vec::new();
    for m in metrics {
        let (a, z) = (d.count_before(m, b.lo), d.count_before(m, b.hi));
        out.extend((a..z).map(|i| d.event_id(m, i)));
    }
    out.sort_unstable();
    out
}

/// `(id, name)` of every metric, in id order of generation.
///
/// # Panics
/// When `spec` is invalid.
pub fn metrics(spec: &KlaviyoDataSpec) -> Vec<(String, String)> {
    dataset(spec)
        .metrics
        .iter()
        .map(|m| (m.id.clone(), m.name.clone()))
        .collect()
}

/// The id of the metric called `name` (e.g. `Placed Order`), `None` when the account has
/// no such metric.
///
/// # Panics
/// When `spec` is invalid.
pub fn metric_id(spec: &KlaviyoDataSpec, name: &str) -> Option<String> {
    metrics(spec)
        .into_iter()
        .find(|(_, n)| n == name)
        .map(|(id, _)| id)
}

/// `(id, name)` of every list.
///
/// # Panics
/// When `spec` is invalid.
pub fn lists(spec: &KlaviyoDataSpec) -> Vec<(String, String)> {
    dataset(spec)
        .lists
        .iter()
        .map(|g| (g.id.clone(), g.name.clone()))
        .collect()
}

/// `(id, name)` of every segment.
///
/// # Panics
/// When `spec` is invalid.
pub fn segments(spec: &KlaviyoDataSpec) -> Vec<(String, String)> {
    dataset(spec)
        .segments
        .iter()
        .map(|g| (g.id.clone(), g.name.clone()))
        .collect()
}

fn member_ids(spec: &KlaviyoDataSpec, lists: bool, id: &str) -> Vec<String> {
    let d = dataset(spec);
    let Some(g) = d.group_index(lists, id) else {
        return Vec::new();
    };
    let g = if lists { &d.lists[g] } else { &d.segments[g] };
    (0..spec.profiles)
        .filter(|&i| d.is_member(g, i))
        .map(|i| d.profile_id(i))
        .collect()
}

/// Profile ids of the members of segment `segment_id`, sorted (ULIDs: creation order).
/// Empty for an unknown segment. `O(profiles)`.
///
/// # Panics
/// When `spec` is invalid.
pub fn segment_member_ids(spec: &KlaviyoDataSpec, segment_id: &str) -> Vec<String> {
    member_ids(spec, false, segment_id)
}

/// Profile ids of the members of list `list_id`, sorted. Empty for an unknown list.
///
/// # Panics
/// When `spec` is invalid.
pub fn list_member_ids(spec: &KlaviyoDataSpec, list_id: &str) -> Vec<String> {
    member_ids(spec, true, list_id)
}

/// Every profile id, sorted. `O(profiles)`.
///
/// # Panics
/// When `spec` is invalid.
pub fn profile_ids(spec: &KlaviyoDataSpec) -> Vec<String> {
    let d = dataset(spec);
    (0..spec.profiles).map(|i| d.profile_id(i)).collect()
}

/// The generated profile `id` as served (before any touch):
/// `{"type": "profile", "id", "attributes": {...}}` (no `links`/`relationships`, which
/// depend on the server's URL). `None` for an unknown id.
///
/// # Panics
/// When `spec` is invalid.
pub fn profile(spec: &KlaviyoDataSpec, id: &str) -> Option<Value> {
    let d = dataset(spec);
    let i = d.profile_index(id)?;
    Some(serde_json::json!({
        "type": "profile",
        "id": id,
        "attributes": d.profile_attributes(i, d.profile_updated(i)),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fault_decisions_hash_like_before_the_move() {
        // The shared fault layer must decide exactly as the Klaviyo module did, so seeded
        // fault runs keep their faults.
        for k in 0..1000u64 {
            let (a, b, c) = (k.wrapping_mul(7919), k ^ 0x5A5A, k / 3);
            assert_eq!(crate::faults::h3(k, a, b, c), super::data::h3(k, a, b, c));
        }
    }
}
