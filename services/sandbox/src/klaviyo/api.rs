//! The Klaviyo routes: authentication, revision, rate limits, faults, then the handlers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::data::{Dataset, GroupGen, fmt_time, h3, mix64};
use super::filter::{self, Allowed, Bounds, Cond, Lit, Op};
use super::limits::{Limiter, Outcome, Stats, Tier};
use super::{FaultConfig, InvalidSpec, KlaviyoConfig};

/// Events scanned per request at most when filtering on `profile_id`.
const PROFILE_SCAN: u64 = 50_000;
/// Profiles scanned per request at most for list/segment membership.
const MEMBER_SCAN: u64 = 200_000;
/// Metrics per page (the endpoint has no `page[size]`).
const METRICS_PAGE: usize = 200;
const JSON_API: &str = "application/vnd.api+json";

/// One event added through the admin route.
struct Appended {
    id: String,
    uuid: String,
    profile: u64,
    properties: Value,
}

/// What was added or changed at run time, on top of the generated data.
#[derive(Default)]
struct Overlay {
    /// Per metric: `(timestamp, seq) → event`.
    events: Vec<BTreeMap<(i64, u64), Appended>>,
    next_seq: u64,
    /// Touched profiles: index → `updated` (epoch seconds).
    touched: HashMap<u64, i64>,
}

/// The configuration in force and its compiled data.
struct Live {
    config: KlaviyoConfig,
    data: Dataset,
    overlay: Arc<RwLock<Overlay>>,
}

struct Shared {
    live: RwLock<Arc<Live>>,
    limiter: Limiter,
    stats: Stats,
    requests: AtomicU64,
    /// Responses held back by the `slow_share` fault.
    slow: AtomicU64,
    throttle_until: Mutex<Option<Instant>>,
}

type St = State<Arc<Shared>>;

impl Shared {
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_throttle(&self, faults: &FaultConfig) {
        let until = (faults.throttle_seconds > 0.0).then(|| {
            Instant::now() + Duration::from_secs_f64(faults.throttle_seconds.min(86_400.0))
        });
        *self
            .throttle_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = until;
    }
}

/// Builds the Klaviyo routes (see the module docs) for `config`.
pub fn router(config: KlaviyoConfig) -> Result<Router, InvalidSpec> {
    let data = Dataset::new(&config.data)?;
    let overlay = Overlay {
        events: (0..data.metrics.len()).map(|_| BTreeMap::new()).collect(),
        ..Overlay::default()
    };
    let shared = Arc::new(Shared {
        live: RwLock::new(Arc::new(Live {
            config: config.clone(),
            data,
            overlay: Arc::new(RwLock::new(overlay)),
        })),
        limiter: Limiter::default(),
        stats: Stats::default(),
        requests: AtomicU64::new(0),
        slow: AtomicU64::new(0),
        throttle_until: Mutex::new(None),
    });
    shared.set_throttle(&config.faults);
    macro_rules! ep {
        ($e:expr) => {
            get(|st: St, h: HeaderMap, RawQuery(q): RawQuery| async move {
                serve(st, $e, None, h, q).await
            })
        };
    }
    macro_rules! ep_id {
        ($e:expr) => {
            get(
                |st: St, Path(id): Path<String>, h: HeaderMap, RawQuery(q): RawQuery| async move {
                    serve(st, $e, Some(id), h, q).await
                },
            )
        };
    }
    let both = |r: Router<Arc<Shared>>, path: &str, m: axum::routing::MethodRouter<Arc<Shared>>| {
        r.route(path, m.clone()).route(&format!("{path}/"), m)
    };
    let r = Router::new();
    let r = both(r, "/api/metrics", ep!(Ep::Metrics));
    let r = both(r, "/api/metrics/{id}", ep_id!(Ep::Metric));
    let r = both(r, "/api/events", ep!(Ep::Events));
    let r = both(r, "/api/profiles", ep!(Ep::Profiles));
    let r = both(r, "/api/profiles/{id}", ep_id!(Ep::Profile));
    let r = both(r, "/api/lists", ep!(Ep::Lists));
    let r = both(r, "/api/lists/{id}", ep_id!(Ep::List));
    let r = both(
        r,
        "/api/lists/{id}/relationships/profiles",
        ep_id!(Ep::Members {
            lists: true,
            full: false
        }),
    );
    let r = both(
        r,
        "/api/lists/{id}/profiles",
        ep_id!(Ep::Members {
            lists: true,
            full: true
        }),
    );
    let r = both(r, "/api/segments", ep!(Ep::Segments));
    let r = both(r, "/api/segments/{id}", ep_id!(Ep::Segment));
    let r = both(
        r,
        "/api/segments/{id}/relationships/profiles",
        ep_id!(Ep::Members {
            lists: false,
            full: false
        }),
    );
    let r = both(
        r,
        "/api/segments/{id}/profiles",
        ep_id!(Ep::Members {
            lists: false,
            full: true
        }),
    );
    Ok(r.route("/api/{*rest}", get(not_found_route))
        .route("/klaviyo/_admin/stats", get(admin_stats))
        .route("/klaviyo/_admin/stats/reset", post(admin_stats_reset))
        .route(
            "/klaviyo/_admin/faults",
            get(admin_faults).post(admin_set_faults),
        )
        .route(
            "/klaviyo/_admin/config",
            get(admin_config).post(admin_set_config),
        )
        .route("/klaviyo/_admin/events", post(admin_events))
        .route("/klaviyo/_admin/profiles/{id}/touch", post(admin_touch))
        .with_state(shared))
}

/// The emulated operations.
#[derive(Clone, Copy, Debug)]
enum Ep {
    Metrics,
    Metric,
    Events,
    Profiles,
    Profile,
    Lists,
    List,
    Segments,
    Segment,
    Members { lists: bool, full: bool },
}

impl Ep {
    /// Klaviyo's operation id.
    fn name(self) -> &'static str {
        match self {
            Ep::Metrics => "get_metrics",
            Ep::Metric => "get_metric",
            Ep::Events => "get_events",
            Ep::Profiles => "get_profiles",
            Ep::Profile => "get_profile",
            Ep::Lists => "get_lists",
            Ep::List => "get_list",
            Ep::Segments => "get_segments",
            Ep::Segment => "get_segment",
            Ep::Members {
                lists: true,
                full: false,
            } => "get_profile_ids_for_list",
            Ep::Members {
                lists: true,
                full: true,
            } => "get_profiles_for_list",
            Ep::Members {
                lists: false,
                full: false,
            } => "get_profile_ids_for_segment",
            Ep::Members {
                lists: false,
                full: true,
            } => "get_profiles_for_segment",
        }
    }

    /// The tier of `x-klaviyo-ratelimit`.
    fn tier(self, predictive: bool) -> Tier {
        match self {
            Ep::Metrics | Ep::Metric => Tier::M,
            Ep::Events => Tier::XL,
            Ep::Profiles | Ep::Profile if predictive => Tier::M,
            _ => Tier::L,
        }
    }
}

/// A JSON:API error.
struct ApiErr {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    source: Option<(&'static str, String)>,
}

impl ApiErr {
    fn param(parameter: &str, detail: impl Into<String>) -> Self {
        ApiErr {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            title: "Invalid input.",
            detail: detail.into(),
            source: Some(("parameter", parameter.to_owned())),
        }
    }

    fn not_found(detail: impl Into<String>) -> Self {
        ApiErr {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            title: "Not found.",
            detail: detail.into(),
            source: None,
        }
    }

    fn body(&self) -> Value {
        let id = format!(
            "{:016x}",
            mix64(ERROR_IDS.fetch_add(1, Ordering::Relaxed) ^ 0xE)
        );
        let mut e = json!({
            "id": format!("{}-{}-{}-{}-{}", &id[..8], &id[8..12], &id[12..16], "8000", &id[..12]),
            "status": self.status.as_u16(),
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
        });
        if let Some((k, v)) = &self.source {
            e["source"] = json!({ *k: v });
        } else {
            e["source"] = json!({"pointer": "/data/"});
        }
        json!({"errors": [e]})
    }

    fn response(&self) -> Response {
        json_response(self.status, &self.body())
    }
}

static ERROR_IDS: AtomicU64 = AtomicU64::new(1);

fn json_response(status: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_API))],
        body,
    )
        .into_response()
}

async fn not_found_route() -> Response {
    ApiErr::not_found("This endpoint is not emulated by the sluice sandbox.").response()
}

fn valid_revision(r: &str) -> bool {
    let date = r.split_once('.').map_or(r, |(d, _)| d);
    date.len() == 10 && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok()
}

/// The request pipeline of every `/api/` route.
async fn serve(
    State(sh): St,
    ep: Ep,
    id: Option<String>,
    headers: HeaderMap,
    query: Option<String>,
) -> Response {
    let live = sh.live();
    let q = Query::parse(query.as_deref().unwrap_or(""));
    let predictive = q
        .get("additional-fields[profile]")
        .is_some_and(|v| v.split(',').any(|x| x.trim() == "predictive_analytics"));
    let tier = ep.tier(predictive);
    let record = |o| sh.stats.record(tier, ep.name(), o);

    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Klaviyo-API-Key "))
        .map(str::trim);
    let Some(key) = key.filter(|k| live.config.api_keys.iter().any(|a| a == k)) else {
        record(Outcome::ClientError);
        return ApiErr {
            status: StatusCode::UNAUTHORIZED,
            code: "not_authenticated",
            title: "Authentication credentials were not provided.",
            detail: "Missing or invalid private key.".into(),
            source: None,
        }
        .response();
    };
    match headers.get("revision").and_then(|v| v.to_str().ok()) {
        Some(r) if valid_revision(r.trim()) => {}
        other => {
            record(Outcome::ClientError);
            let detail = match other {
                None => "Missing `revision` header. Use a revision like 2026-07-15.".to_owned(),
                Some(r) => format!("Invalid revision header `{r}`: expected YYYY-MM-DD[.suffix]."),
            };
            return ApiErr {
                status: StatusCode::BAD_REQUEST,
                code: "invalid",
                title: "Invalid input.",
                detail,
                source: Some(("header", "revision".into())),
            }
            .response();
        }
    }

    let now = Instant::now();
    let forced = *sh.throttle_until.lock().unwrap_or_else(|p| p.into_inner());
    let throttled = |wait: u64| {
        record(Outcome::Throttled);
        let mut r = ApiErr {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "throttled",
            title: "Request was throttled.",
            detail: format!(
                "Request was throttled. Expected available in {wait} second{}.",
                if wait == 1 { "" } else { "s" }
            ),
            source: None,
        }
        .response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        r
    };
    if let Some(until) = forced.filter(|u| *u > now) {
        let left = until - now;
        return throttled((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1));
    }
    let budget: &'static str = match live.config.rate_limit_scope {
        super::RateLimitScope::Endpoint => ep.name(),
        super::RateLimitScope::Tier => tier.name(),
    };
    let admitted = match live.config.rate_limit_scale {
        Some(scale) => match sh.limiter.check(key, budget, tier.scaled(scale), now) {
            Ok(a) => Some(a),
            Err(wait) => return throttled(wait),
        },
        None => None,
    };

    // Faults.
    let f = &live.config.faults;
    let n = sh.requests.fetch_add(1, Ordering::Relaxed);
    let roll = |k: u64| (h3(f.seed ^ 0xFA17, n, k, 0) >> 11) as f64 / (1u64 << 53) as f64;
    let latency = f.latency_ms
        + if f.latency_jitter_ms > 0 {
            h3(f.seed, n, 9, 0) % (f.latency_jitter_ms + 1)
        } else {
            0
        };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if f.slow_ms > 0 && roll(4) < f.slow_share {
        // Counted before the wait: the client gives up long before the response exists.
        record(Outcome::Fault);
        sh.slow.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(f.slow_ms)).await;
    }
    let u = roll(1);
    if u < f.error_500_share + f.error_503_share {
        record(Outcome::Fault);
        let (status, code, title) = if u < f.error_500_share {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "error",
                "A server error occurred.",
            )
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Service unavailable.",
            )
        };
        return ApiErr {
            status,
            code,
            title,
            detail: "Injected by the sluice sandbox's fault knobs.".into(),
            source: None,
        }
        .response();
    }
    if roll(2) < f.drop_share {
        record(Outcome::Fault);
        let stream = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("sandbox fault: dropped connection"))
        });
        return Response::new(Body::from_stream(stream));
    }
    let truncate = roll(3) < f.truncate_share;

    let base = live.config.public_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    });
    let overlay = live.overlay.read().unwrap_or_else(|p| p.into_inner());
    let base = base.trim_end_matches('/').to_owned();
    let quoted = serde_json::to_string(&base).unwrap_or_default();
    let cx = Ctx {
        base_json: quoted[1..quoted.len().saturating_sub(1).max(1)].to_owned(),
        d: &live.data,
        ov: &overlay,
        q,
        base,
        ep,
        id: id.unwrap_or_default(),
    };
    let result = cx.handle();
    drop(overlay);
    let body = match result {
        Ok(Doc::Json(v)) => serde_json::to_vec(&v).unwrap_or_default(),
        Ok(Doc::Raw(s)) => s.into_bytes(),
        Err(e) => {
            record(Outcome::ClientError);
            return e.response();
        }
    };
    let mut resp = if truncate {
        record(Outcome::Fault);
        let len = body.len();
        let half = Bytes::from(body[..len / 2].to_vec());
        // Half the body, then (after hyper has flushed it) an error, which closes the
        // connection before `Content-Length` bytes were sent.
        let stream = futures::stream::unfold(Some(half), |half| async move {
            match half {
                Some(h) => Some((Ok(h), None)),
                None => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((
                        Err(std::io::Error::other("sandbox fault: truncated body")),
                        None,
                    ))
                }
            }
        });
        let mut r = Response::new(Body::from_stream(stream));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        r
    } else {
        record(Outcome::Ok);
        Response::new(Body::from(body))
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_API));
    if let Some(a) = admitted {
        if let Ok(v) = HeaderValue::from_str(&a.limit) {
            h.insert("ratelimit-limit", v);
        }
        h.insert("ratelimit-remaining", HeaderValue::from(a.remaining));
        h.insert("ratelimit-reset", HeaderValue::from(a.reset));
    }
    resp
}

/// Decoded query parameters (the last of repeated names wins).
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(raw: &str) -> Self {
        Query {
            pairs: url::form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn encode(&self, cursor: Option<&str>) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            if k != "page[cursor]" {
                s.append_pair(k, v);
            }
        }
        if let Some(c) = cursor {
            s.append_pair("page[cursor]", c);
        }
        s.finish()
    }
}

/// A decoded `page[cursor]`.
struct Page {
    filter: String,
    sort: Option<String>,
    pos: Option<Vec<i64>>,
    size: usize,
}

/// A response document: a JSON tree, or JSON text written directly.
enum Doc {
    Json(Value),
    Raw(String),
}

struct Ctx<'a> {
    /// `base`, escaped for use inside a JSON string.
    base_json: String,
    d: &'a Dataset,
    ov: &'a Overlay,
    q: Query,
    base: String,
    ep: Ep,
    id: String,
}

/// Sorted `items` (by key, descending when `desc`) cut at the `horizons` (positions
/// beyond which some stream was not looked at) into a page of `size` and the position to
/// resume after.
fn paginate<K: Ord + Copy, T>(
    mut items: Vec<(K, T)>,
    horizons: &[K],
    size: usize,
    desc: bool,
) -> (Vec<(K, T)>, Option<K>) {
    if desc {
        items.sort_by_key(|x| std::cmp::Reverse(x.0));
    } else {
        items.sort_by_key(|x| x.0);
    }
    let horizon = if desc {
        horizons.iter().max().copied()
    } else {
        horizons.iter().min().copied()
    };
    if let Some(h) = horizon {
        items.retain(|(k, _)| if desc { *k >= h } else { *k <= h });
    }
    if items.len() > size {
        items.truncate(size);
        let next = items.last().map(|(k, _)| *k);
        (items, next)
    } else {
        (items, horizon)
    }
}

/// Whether `k` comes after the cursor position `c` in the page order.
fn after<K: Ord>(k: &K, c: Option<&K>, desc: bool) -> bool {
    match c {
        None => true,
        Some(c) if desc => k < c,
        Some(c) => k > c,
    }
}

const EVENTS_ALLOWED: Allowed = &[
    ("metric_id", &[Op::Equals]),
    ("profile_id", &[Op::Equals]),
    ("profile", &[Op::Has]),
    ("metric", &[Op::Has]),
    (
        "datetime",
        &[
            Op::GreaterOrEqual,
            Op::GreaterThan,
            Op::LessOrEqual,
            Op::LessThan,
        ],
    ),
    (
        "timestamp",
        &[
            Op::GreaterOrEqual,
            Op::GreaterThan,
            Op::LessOrEqual,
            Op::LessThan,
        ],
    ),
];
const CMP4: &[Op] = &[
    Op::GreaterOrEqual,
    Op::GreaterThan,
    Op::LessOrEqual,
    Op::LessThan,
];
const ANY_EQ: &[Op] = &[Op::Any, Op::Equals];
const PROFILES_ALLOWED: Allowed = &[
    ("id", ANY_EQ),
    ("email", ANY_EQ),
    ("phone_number", ANY_EQ),
    ("external_id", ANY_EQ),
    ("_kx", &[Op::Equals]),
    ("created", &[Op::GreaterThan, Op::LessThan]),
    ("updated", &[Op::GreaterThan, Op::LessThan]),
    (
        "subscriptions.email.marketing.list_suppressions.reason",
        &[Op::Equals],
    ),
    (
        "subscriptions.email.marketing.list_suppressions.timestamp",
        CMP4,
    ),
    (
        "subscriptions.email.marketing.list_suppressions.list_id",
        &[Op::Equals],
    ),
    (
        "subscriptions.email.marketing.suppression.reason",
        &[Op::Equals],
    ),
    ("subscriptions.email.marketing.suppression.timestamp", CMP4),
];
const METRICS_ALLOWED: Allowed = &[
    ("integration.name", &[Op::Equals]),
    ("integration.category", &[Op::Equals]),
];
const LISTS_ALLOWED: Allowed = &[
    ("name", ANY_EQ),
    ("id", ANY_EQ),
    ("created", &[Op::GreaterThan]),
    ("updated", &[Op::GreaterThan]),
];
const SEGMENTS_ALLOWED: Allowed = &[
    ("name", ANY_EQ),
    ("id", ANY_EQ),
    ("created", &[Op::GreaterThan]),
    ("updated", &[Op::GreaterThan]),
    ("is_active", ANY_EQ),
    ("is_starred", &[Op::Equals]),
];
const LIST_MEMBERS_ALLOWED: Allowed = &[
    ("email", ANY_EQ),
    ("phone_number", ANY_EQ),
    ("push_token", ANY_EQ),
    ("_kx", &[Op::Equals]),
    ("joined_group_at", CMP4),
];
const SEGMENT_MEMBERS_ALLOWED: Allowed = &[
    ("profile_id", ANY_EQ),
    ("email", ANY_EQ),
    ("phone_number", ANY_EQ),
    ("push_token", ANY_EQ),
    ("_kx", &[Op::Equals]),
    ("joined_group_at", CMP4),
];

fn not_emulated(field: &str) -> ApiErr {
    ApiErr::param(
        "filter",
        format!(
            "The filter field '{field}' is allowed by Klaviyo but not emulated by the sluice sandbox."
        ),
    )
}

fn datetime_value(c: &Cond) -> Result<f64, ApiErr> {
    let text = c.value.as_ref().and_then(Lit::text).unwrap_or("");
    filter::parse_datetime(text).ok_or_else(|| {
        ApiErr::param(
            "filter",
            format!(
                "'{text}' is not a valid datetime for the field '{}'.",
                c.field
            ),
        )
    })
}

fn text_value(c: &Cond) -> Vec<&str> {
    c.value.as_ref().map(Lit::texts).unwrap_or_default()
}

/// Narrows an optional candidate set to `ids`.
fn intersect(set: &mut Option<BTreeSet<u64>>, ids: impl IntoIterator<Item = u64>) {
    let new: BTreeSet<u64> = ids.into_iter().collect();
    *set = Some(match set.take() {
        None => new,
        Some(old) => old.intersection(&new).copied().collect(),
    });
}

/// Keeps only `fields` (top-level names, or `a.b` for one sub-field) of `attrs`.
fn sparse(attrs: Map<String, Value>, fields: &[String]) -> Map<String, Value> {
    if fields.is_empty() {
        return attrs;
    }
    let mut out = Map::new();
    for f in fields {
        match f.split_once('.') {
            None => {
                if let Some(v) = attrs.get(f) {
                    out.insert(f.clone(), v.clone());
                }
            }
            Some((top, sub)) => {
                if let Some(v) = attrs.get(top).and_then(|o| o.get(sub)) {
                    let entry = out
                        .entry(top.to_owned())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Some(o) = entry.as_object_mut() {
                        o.insert(sub.to_owned(), v.clone());
                    }
                }
            }
        }
    }
    out
}

/// Event sort key: `(timestamp, metric, 0 generated | 1 appended, index | seq)`.
type EKey = (i64, i64, i64, i64);

enum EItem {
    Gen { m: usize, idx: u64 },
    App { m: usize, ts: i64, seq: u64 },
}

impl Ctx<'_> {
    fn handle(&self) -> Result<Doc, ApiErr> {
        if let Ep::Events = self.ep {
            return self.events();
        }
        self.handle_json().map(Doc::Json)
    }

    fn handle_json(&self) -> Result<Value, ApiErr> {
        match self.ep {
            Ep::Metrics => self.metrics(),
            Ep::Metric => {
                let m = self
                    .d
                    .metric_index(&self.id)
                    .ok_or_else(|| ApiErr::not_found(format!("Metric {} not found.", self.id)))?;
                Ok(json!({"data": self.metric_json(m), "links": {"self": self.self_link()}}))
            }
            Ep::Events => Err(ApiErr::not_found("events")),
            Ep::Profiles => self.profiles(),
            Ep::Profile => {
                let i = self
                    .d
                    .profile_index(&self.id)
                    .ok_or_else(|| ApiErr::not_found(format!("Profile {} not found.", self.id)))?;
                Ok(json!({"data": self.profile_json(i, None), "links": {"self": self.self_link()}}))
            }
            Ep::Lists => self.groups(true),
            Ep::Segments => self.groups(false),
            Ep::List | Ep::Segment => {
                let lists = matches!(self.ep, Ep::List);
                let g = self.d.group_index(lists, &self.id).ok_or_else(|| {
                    ApiErr::not_found(format!(
                        "{} {} not found.",
                        if lists { "List" } else { "Segment" },
                        self.id
                    ))
                })?;
                Ok(json!({"data": self.group_json(lists, g), "links": {"self": self.self_link()}}))
            }
            Ep::Members { lists, full } => self.members(lists, full),
        }
    }

    fn path(&self) -> String {
        let rest = match self.ep {
            Ep::Metrics => "metrics/".to_owned(),
            Ep::Metric => format!("metrics/{}/", self.id),
            Ep::Events => "events/".to_owned(),
            Ep::Profiles => "profiles/".to_owned(),
            Ep::Profile => format!("profiles/{}/", self.id),
            Ep::Lists => "lists/".to_owned(),
            Ep::List => format!("lists/{}/", self.id),
            Ep::Segments => "segments/".to_owned(),
            Ep::Segment => format!("segments/{}/", self.id),
            Ep::Members { lists, full } => format!(
                "{}/{}/{}",
                if lists { "lists" } else { "segments" },
                self.id,
                if full {
                    "profiles/"
                } else {
                    "relationships/profiles/"
                }
            ),
        };
        format!("{}/api/{rest}", self.base)
    }

    fn self_link(&self) -> String {
        let q = self.q.encode(self.q.get("page[cursor]"));
        if q.is_empty() {
            self.path()
        } else {
            format!("{}?{q}", self.path())
        }
    }

    /// `page[size]` (checked against `min 1`, `max`), the effective filter and sort, and
    /// the cursor position.
    fn page(&self, default: usize, max: usize) -> Result<Page, ApiErr> {
        let size = match self.q.get("page[size]") {
            None => default,
            Some(s) => s
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiErr::param(
                        "page[size]",
                        format!("Page size must be an integer between 1 and {max}, got '{s}'."),
                    )
                })?,
        };
        let filter = self.q.get("filter").map(str::to_owned);
        let sort = self.q.get("sort").map(str::to_owned);
        let Some(raw) = self.q.get("page[cursor]") else {
            return Ok(Page {
                filter: filter.unwrap_or_default(),
                sort,
                pos: None,
                size,
            });
        };
        let bad = || ApiErr::param("page[cursor]", format!("Invalid page cursor '{raw}'."));
        let c: Value = hex::decode(raw)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(bad)?;
        let cf = c["f"].as_str().unwrap_or_default().to_owned();
        let cs = c["s"].as_str().map(str::to_owned);
        if filter.as_ref().is_some_and(|f| *f != cf)
            || sort.as_ref().is_some_and(|s| Some(s) != cs.as_ref())
        {
            return Err(ApiErr::param(
                "page[cursor]",
                "The page cursor was made for another filter or sort.",
            ));
        }
        let pos = c["p"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect::<Vec<_>>())
            .ok_or_else(bad)?;
        Ok(Page {
            filter: cf,
            sort: cs,
            pos: Some(pos),
            size,
        })
    }

    fn filter(&self, page: &Page, allowed: Allowed) -> Result<Vec<Cond>, ApiErr> {
        if page.filter.trim().is_empty() {
            return Ok(Vec::new());
        }
        filter::parse(&page.filter, allowed).map_err(|e| ApiErr::param("filter", e))
    }

    fn sort_of<'s>(&self, page: &'s Page, allowed: &[&str]) -> Result<Option<&'s str>, ApiErr> {
        match page.sort.as_deref() {
            None => Ok(None),
            Some(s) if allowed.contains(&s) => Ok(Some(s)),
            Some(s) => Err(ApiErr::param(
                "sort",
                format!(
                    "'{s}' is not a valid sort for this endpoint. Allowed: {}",
                    allowed.join(", ")
                ),
            )),
        }
    }

    /// A collection document.
    fn collection(
        &self,
        page: &Page,
        data: Vec<Value>,
        included: Option<Vec<Value>>,
        next: Option<Vec<i64>>,
    ) -> Value {
        let next = next.map(|p| {
            let c = json!({"p": p, "f": page.filter, "s": page.sort});
            let cursor = hex::encode(serde_json::to_vec(&c).unwrap_or_default());
            format!("{}?{}", self.path(), self.q.encode(Some(&cursor)))
        });
        let mut doc = json!({
            "data": data,
            "links": {"self": self.self_link(), "next": next, "prev": Value::Null},
        });
        if let Some(inc) = included {
            doc["included"] = Value::Array(inc);
        }
        doc
    }

    fn includes(&self, allowed: &[&str]) -> Result<Vec<String>, ApiErr> {
        let inc = self.q.list("include");
        for i in &inc {
            if !allowed.contains(&i.as_str()) {
                return Err(ApiErr::param(
                    "include",
                    format!(
                        "'{i}' is not a valid include for this endpoint. Allowed: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(inc)
    }

    // ---- resources ----

    fn rel(&self, kind: &str, id: &str, rel: &str) -> Value {
        json!({
            "self": format!("{}/api/{kind}/{id}/relationships/{rel}/", self.base),
            "related": format!("{}/api/{kind}/{id}/{rel}/", self.base),
        })
    }

    fn metric_json(&self, m: usize) -> Value {
        let id = &self.d.metrics[m].id;
        let attrs = match self.d.metric_attributes(m) {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        json!({
            "type": "metric",
            "id": id,
            "attributes": sparse(attrs, &self.q.list("fields[metric]")),
            "relationships": {"flow-triggers": {"links": self.rel("metrics", id, "flow-triggers")}},
            "links": {"self": format!("{}/api/metrics/{id}/", self.base)},
        })
    }

    fn updated_of(&self, i: u64) -> i64 {
        self.ov
            .touched
            .get(&i)
            .copied()
            .unwrap_or_else(|| self.d.profile_updated(i))
    }

    fn profile_json(&self, i: u64, joined: Option<i64>) -> Value {
        let d = self.d;
        let id = d.profile_id(i);
        let mut attrs = d.profile_attributes(i, self.updated_of(i));
        if let Some(j) = joined {
            attrs.insert("joined_group_at".into(), json!(fmt_time(j)));
        }
        let extra = self.q.list("additional-fields[profile]");
        let r = h3(d.spec.seed, i, 77, 0);
        if extra.iter().any(|x| x == "subscriptions") {
            attrs.insert(
                "subscriptions".into(),
                json!({"email": {"marketing": {
                    "can_receive_email_marketing": !r.is_multiple_of(5),
                    "consent": if !r.is_multiple_of(5) { "SUBSCRIBED" } else { "UNSUBSCRIBED" },
                    "consent_timestamp": fmt_time(d.profile_created(i)),
                    "method": "FORM",
                    "suppression": [],
                    "list_suppressions": [],
                }}}),
            );
        }
        if extra.iter().any(|x| x == "predictive_analytics") {
            attrs.insert(
                "predictive_analytics".into(),
                json!({
                    "historic_clv": (r % 100_000) as f64 / 100.0,
                    "predicted_clv": ((r >> 20) % 50_000) as f64 / 100.0,
                    "total_clv": ((r % 100_000) + ((r >> 20) % 50_000)) as f64 / 100.0,
                    "historic_number_of_orders": (r >> 40) % 20,
                    "predicted_number_of_orders": (r >> 45) % 5,
                    "average_days_between_orders": (r >> 50) % 90,
                    "average_order_value": ((r >> 30) % 20_000) as f64 / 100.0,
                    "churn_probability": ((r >> 8) % 100) as f64 / 100.0,
                    "expected_date_of_next_order": fmt_time(d.profile_updated(i) + 30 * 86_400),
                }),
            );
        }
        json!({
            "type": "profile",
            "id": id,
            "attributes": sparse(attrs, &self.q.list("fields[profile]")),
            "relationships": {
                "lists": {"links": self.rel("profiles", &id, "lists")},
                "segments": {"links": self.rel("profiles", &id, "segments")},
            },
            "links": {"self": format!("{}/api/profiles/{id}/", self.base)},
        })
    }

    fn group(&self, lists: bool, g: usize) -> &GroupGen {
        if lists {
            &self.d.lists[g]
        } else {
            &self.d.segments[g]
        }
    }

    fn group_json(&self, lists: bool, g: usize) -> Value {
        let gr = self.group(lists, g);
        let kind = if lists { "lists" } else { "segments" };
        let mut attrs = Map::new();
        attrs.insert("name".into(), json!(gr.name));
        attrs.insert("created".into(), json!(fmt_time(gr.created)));
        attrs.insert("updated".into(), json!(fmt_time(gr.updated)));
        if lists {
            attrs.insert(
                "opt_in_process".into(),
                json!(if gr.double_opt_in {
                    "double_opt_in"
                } else {
                    "single_opt_in"
                }),
            );
        } else {
            attrs.insert("definition".into(), Value::Null);
            attrs.insert("is_active".into(), json!(true));
            attrs.insert("is_processing".into(), json!(false));
            attrs.insert("is_starred".into(), json!(gr.starred));
        }
        let fields = self.q.list(if lists {
            "fields[list]"
        } else {
            "fields[segment]"
        });
        json!({
            "type": if lists { "list" } else { "segment" },
            "id": gr.id,
            "attributes": sparse(attrs, &fields),
            "relationships": {
                "profiles": {"links": self.rel(kind, &gr.id, "profiles")},
                "tags": {"links": self.rel(kind, &gr.id, "tags")},
                "flow-triggers": {"links": self.rel(kind, &gr.id, "flow-triggers")},
            },
            "links": {"self": format!("{}/api/{kind}/{}/", self.base, gr.id)},
        })
    }

    /// Appends one event resource to `out` (written directly: this is the hot path).
    #[allow(clippy::too_many_arguments)]
    fn write_event(
        &self,
        out: &mut String,
        id: &str,
        m: usize,
        ts: i64,
        uuid: &str,
        profile: u64,
        props: &Value,
        fields: &[String],
    ) {
        use std::fmt::Write as _;
        let b = &self.base_json;
        let want = |f: &str| fields.is_empty() || fields.iter().any(|x| x == f);
        let _ = write!(out, r#"{{"type":"event","id":"{id}","attributes":{{"#);
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !first {
                out.push(',');
            }
            first = false;
        };
        if want("timestamp") {
            sep(out);
            let _ = write!(out, r#""timestamp":{ts}"#);
        }
        if want("event_properties") {
            sep(out);
            out.push_str(r#""event_properties":"#);
            out.push_str(&serde_json::to_string(props).unwrap_or_else(|_| "{}".into()));
        }
        if want("datetime") {
            sep(out);
            let _ = write!(out, r#""datetime":"{}""#, fmt_time(ts));
        }
        if want("uuid") {
            sep(out);
            let _ = write!(out, r#""uuid":"{uuid}""#);
        }
        let pid = self.d.profile_id(profile);
        let mid = &self.d.metrics[m].id;
        let _ = write!(
            out,
            concat!(
                r#"}},"relationships":{{"#,
                r#""profile":{{"data":{{"type":"profile","id":"{pid}"}},"links":{{"self":"{b}/api/events/{id}/relationships/profile/","related":"{b}/api/events/{id}/profile/"}}}},"#,
                r#""metric":{{"data":{{"type":"metric","id":"{mid}"}},"links":{{"self":"{b}/api/events/{id}/relationships/metric/","related":"{b}/api/events/{id}/metric/"}}}},"#,
                r#""attributions":{{"links":{{"self":"{b}/api/events/{id}/relationships/attributions/","related":"{b}/api/events/{id}/attributions/"}}}}"#,
                r#"}},"links":{{"self":"{b}/api/events/{id}/"}}}}"#
            ),
            pid = pid,
            mid = mid,
            b = b,
            id = id
        );
    }

    // ---- collections ----

    fn metrics(&self) -> Result<Value, ApiErr> {
        if self.q.get("page[size]").is_some() {
            return Err(ApiErr::param(
                "page[size]",
                "'page[size]' is not a valid parameter for this endpoint (it pages by cursor only, 200 per page).",
            ));
        }
        let page = self.page(METRICS_PAGE, METRICS_PAGE)?;
        let conds = self.filter(&page, METRICS_ALLOWED)?;
        let all: Vec<usize> = (0..self.d.metrics.len())
            .filter(|&m| {
                let (name, category) = self.d.metric_integration(m);
                conds.iter().all(|c| {
                    let v = text_value(c);
                    match c.field.as_str() {
                        "integration.name" => v.contains(&name),
                        _ => v.contains(&category),
                    }
                })
            })
            .collect();
        self.offset_page(&page, all, |m| self.metric_json(m))
    }

    fn offset_page(
        &self,
        page: &Page,
        all: Vec<usize>,
        render: impl Fn(usize) -> Value,
    ) -> Result<Value, ApiErr> {
        let from = page
            .pos
            .as_ref()
            .and_then(|p| p.first())
            .copied()
            .unwrap_or(0)
            .max(0) as usize;
        let to = (from + page.size).min(all.len());
        let data = all
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .map(|&x| render(x))
            .collect();
        let next = (to < all.len()).then(|| vec![to as i64]);
        Ok(self.collection(page, data, None, next))
    }

    fn groups(&self, lists: bool) -> Result<Value, ApiErr> {
        let page = self.page(10, 10)?;
        let conds = self.filter(
            &page,
            if lists {
                LISTS_ALLOWED
            } else {
                SEGMENTS_ALLOWED
            },
        )?;
        let sort = self.sort_of(
            &page,
            &[
                "created", "-created", "id", "-id", "name", "-name", "updated", "-updated",
            ],
        )?;
        let n = if lists {
            self.d.lists.len()
        } else {
            self.d.segments.len()
        };
        let mut all = Vec::new();
        for g in 0..n {
            let gr = self.group(lists, g);
            let mut keep = true;
            for c in &conds {
                let v = text_value(c);
                keep &= match c.field.as_str() {
                    "id" => v.contains(&gr.id.as_str()),
                    "name" => v.contains(&gr.name.as_str()),
                    "created" => (gr.created as f64) > datetime_value(c)?,
                    "updated" => (gr.updated as f64) > datetime_value(c)?,
                    "is_active" => v.contains(&"true"),
                    _ => v.contains(&if gr.starred { "true" } else { "false" }),
                };
            }
            if keep {
                all.push(g);
            }
        }
        if let Some(s) = sort {
            let field = s.trim_start_matches('-');
            all.sort_by(|&a, &b| {
                let (a, b) = (self.group(lists, a), self.group(lists, b));
                match field {
                    "created" => a.created.cmp(&b.created),
                    "id" => a.id.cmp(&b.id),
                    "name" => a.name.cmp(&b.name),
                    _ => a.updated.cmp(&b.updated),
                }
                .then(a.id.cmp(&b.id))
            });
            if s.starts_with('-') {
                all.reverse();
            }
        }
        self.offset_page(&page, all, |g| self.group_json(lists, g))
    }

    fn events(&self) -> Result<Doc, ApiErr> {
        let d = self.d;
        let page = self.page(200, 1000)?;
        let conds = self.filter(&page, EVENTS_ALLOWED)?;
        let sort = self.sort_of(&page, &["datetime", "-datetime", "timestamp", "-timestamp"])?;
        let desc = sort.is_some_and(|s| s.starts_with('-'));
        let include = self.includes(&["attributions", "metric", "profile"])?;
        let mut metrics: Vec<usize> = (0..d.metrics.len()).collect();
        let mut profile: Option<u64> = None;
        let mut nothing = false;
        let mut b = Bounds::default();
        for c in &conds {
            let text = c.value.as_ref().and_then(Lit::text).unwrap_or("");
            match c.field.as_str() {
                "metric_id" => match d.metric_index(text) {
                    Some(m) => metrics.retain(|&x| x == m),
                    None => nothing = true,
                },
                "profile_id" => match d.profile_index(text) {
                    Some(p) if profile.is_none_or(|q| q == p) => profile = Some(p),
                    _ => nothing = true,
                },
                "datetime" => b.apply(c.op, datetime_value(c)?),
                "timestamp" => {
                    let x: f64 = text.parse().map_err(|_| {
                        ApiErr::param(
                            "filter",
                            format!("'{text}' is not a valid number for the field 'timestamp'."),
                        )
                    })?;
                    b.apply(c.op, x);
                }
                _ => {}
            }
        }
        if nothing {
            metrics.clear();
        }
        let cur: Option<EKey> = page.pos.as_ref().map(|p| {
            let g = |i: usize| p.get(i).copied().unwrap_or(0);
            (g(0), g(1), g(2), g(3))
        });
        let need = page.size as u64 + 1;
        let mut items: Vec<(EKey, EItem)> = Vec::new();
        let mut horizons: Vec<EKey> = Vec::new();
        for &m in &metrics {
            let mi = m as i64;
            let mut ga = d.count_before(m, b.lo);
            let mut gb = d.count_before(m, b.hi);
            if let Some((kt, km, ks, ki)) = cur {
                if !desc {
                    let lo = if mi < km || (mi == km && ks == 1) {
                        d.count_before(m, kt.saturating_add(1))
                    } else if mi == km {
                        (ki + 1).max(0) as u64
                    } else {
                        d.count_before(m, kt)
                    };
                    ga = ga.max(lo);
                } else {
                    let hi = if mi > km {
                        d.count_before(m, kt)
                    } else if mi == km && ks == 0 {
                        ki.max(0) as u64
                    } else {
                        d.count_before(m, kt.saturating_add(1))
                    };
                    gb = gb.min(hi);
                }
            }
            if ga < gb {
                let take = if profile.is_some() {
                    PROFILE_SCAN
                } else {
                    need
                };
                let (a, z) = if desc {
                    (ga.max(gb.saturating_sub(take)), gb)
                } else {
                    (ga, gb.min(ga + take))
                };
                let times = d.times(m, a, z);
                let truncated = if desc { a > ga } else { z < gb };
                let key = |k: usize| (times[k], mi, 0, (a + k as u64) as i64);
                if truncated && !times.is_empty() {
                    horizons.push(key(if desc { 0 } else { times.len() - 1 }));
                }
                for k in 0..times.len() {
                    let idx = a + k as u64;
                    if profile.is_none_or(|p| d.event_profile(m, idx) == p) {
                        items.push((key(k), EItem::Gen { m, idx }));
                    }
                }
            }
            if let Some(events) = self.ov.events.get(m) {
                for (&(ts, seq), e) in events.range((b.lo, 0)..(b.hi, 0)) {
                    let k = (ts, mi, 1, seq as i64);
                    if after(&k, cur.as_ref(), desc) && profile.is_none_or(|p| e.profile == p) {
                        items.push((k, EItem::App { m, ts, seq }));
                    }
                }
            }
        }
        let (page_items, next) = paginate(items, &horizons, page.size, desc);
        let fields = self.q.list("fields[event]");
        let mut out = String::with_capacity(page_items.len() * 1_200 + 1_024);
        out.push_str(r#"{"data":["#);
        let mut inc_profiles = BTreeSet::new();
        let mut inc_metrics = BTreeSet::new();
        for ((ts, _, _, _), item) in page_items {
            if !out.ends_with('[') {
                out.push(',');
            }
            let (m, p) = match item {
                EItem::Gen { m, idx } => {
                    let id = d.event_id(m, idx);
                    let p = d.event_profile(m, idx);
                    let props = d.event_properties(m, idx, ts);
                    let uuid = d.event_uuid(m, idx, ts);
                    self.write_event(&mut out, &id, m, ts, &uuid, p, &props, &fields);
                    (m, p)
                }
                EItem::App { m, ts, seq } => {
                    let Some(e) = self.ov.events[m].get(&(ts, seq)) else {
                        continue;
                    };
                    self.write_event(
                        &mut out,
                        &e.id,
                        m,
                        ts,
                        &e.uuid,
                        e.profile,
                        &e.properties,
                        &fields,
                    );
                    (m, e.profile)
                }
            };
            inc_profiles.insert(p);
            inc_metrics.insert(m);
        }
        let included = (!include.is_empty()).then(|| {
            let mut inc = Vec::new();
            if include.iter().any(|i| i == "metric") {
                inc.extend(inc_metrics.iter().map(|&m| self.metric_json(m)));
            }
            if include.iter().any(|i| i == "profile") {
                inc.extend(inc_profiles.iter().map(|&p| self.profile_json(p, None)));
            }
            inc
        });
        let next = next.map(|(a, b, c, e)| vec![a, b, c, e]);
        let doc = self.collection(&page, Vec::new(), included, next);
        out.push_str(r#"],"links":"#);
        out.push_str(&doc["links"].to_string());
        if let Some(inc) = doc.get("included") {
            out.push_str(r#","included":"#);
            out.push_str(&inc.to_string());
        }
        out.push('}');
        Ok(Doc::Raw(out))
    }

    /// Resolves identity conditions (`id`/`profile_id`, `email`, `phone_number`,
    /// `external_id`) into candidate profile indexes.
    fn identity(&self, c: &Cond, set: &mut Option<BTreeSet<u64>>) -> bool {
        let d = self.d;
        let vals = text_value(c);
        let f: &dyn Fn(&str) -> Option<u64> = match c.field.as_str() {
            "id" | "profile_id" => &|v| d.profile_index(v),
            "email" => &|v| d.profile_by_email(v),
            "phone_number" => &|v| d.profile_by_phone(v),
            "external_id" => &|v| d.profile_by_external_id(v),
            _ => return false,
        };
        intersect(set, vals.into_iter().filter_map(f));
        true
    }

    fn profiles(&self) -> Result<Value, ApiErr> {
        let d = self.d;
        let page = self.page(20, 100)?;
        let conds = self.filter(&page, PROFILES_ALLOWED)?;
        let sort = match page.sort.as_deref() {
            Some(
                s @ ("email"
                | "-email"
                | "subscriptions.email.marketing.list_suppressions.timestamp"
                | "-subscriptions.email.marketing.list_suppressions.timestamp"
                | "subscriptions.email.marketing.suppression.timestamp"
                | "-subscriptions.email.marketing.suppression.timestamp"),
            ) => {
                return Err(ApiErr::param(
                    "sort",
                    format!(
                        "The sort '{s}' is allowed by Klaviyo but not emulated by the sluice sandbox."
                    ),
                ));
            }
            _ => self.sort_of(
                &page,
                &["created", "-created", "id", "-id", "updated", "-updated"],
            )?,
        };
        let desc = sort.is_some_and(|s| s.starts_with('-'));
        let by_updated = sort.is_some_and(|s| s.ends_with("updated"));
        let mut set: Option<BTreeSet<u64>> = None;
        let (mut cb, mut ub) = (Bounds::default(), Bounds::default());
        for c in &conds {
            if self.identity(c, &mut set) {
                continue;
            }
            match c.field.as_str() {
                "created" => cb.apply(c.op, datetime_value(c)?),
                "updated" => ub.apply(c.op, datetime_value(c)?),
                other => return Err(not_emulated(other)),
            }
        }
        let prim = |i: u64| {
            if by_updated {
                self.updated_of(i)
            } else {
                i as i64
            }
        };
        let cur: Option<(i64, i64)> = page.pos.as_ref().map(|p| {
            (
                p.first().copied().unwrap_or(0),
                p.get(1).copied().unwrap_or(0),
            )
        });
        let ok = |i: u64| cb.contains(d.profile_created(i)) && ub.contains(self.updated_of(i));
        let mut items: Vec<((i64, i64), u64)> = Vec::new();
        let mut horizons = Vec::new();
        match set {
            Some(set) => {
                for i in set {
                    let k = (prim(i), i as i64);
                    if ok(i) && after(&k, cur.as_ref(), desc) {
                        items.push((k, i));
                    }
                }
            }
            None => {
                let n = d.spec.profiles;
                let created_at = |t: i64| d.first_profile_at(t, |d, i| d.profile_created(i));
                let updated_at = |t: i64| d.first_profile_at(t, |d, i| d.profile_updated(i));
                let mut lo = created_at(cb.lo).max(updated_at(ub.lo));
                let mut hi = created_at(cb.hi).min(updated_at(ub.hi));
                // The generated key is monotone in the index: the cursor is an index bound.
                let gprim_at = |t: i64| -> u64 {
                    if by_updated {
                        updated_at(t)
                    } else {
                        t.clamp(0, n as i64) as u64
                    }
                };
                if let Some((kt, ki)) = cur {
                    let (p, q) = (gprim_at(kt), gprim_at(kt.saturating_add(1)));
                    if desc {
                        hi = hi.min((ki.max(0) as u64).clamp(p, q));
                    } else {
                        lo = lo.max(((ki + 1).max(0) as u64).clamp(p, q));
                    }
                }
                let need = page.size + 1;
                let mut taken = Vec::new();
                let mut last = None;
                let mut i = if desc { hi } else { lo };
                while taken.len() < need && lo < hi && if desc { i > lo } else { i < hi } {
                    let idx = if desc { i - 1 } else { i };
                    if !self.ov.touched.contains_key(&idx) {
                        taken.push(idx);
                    }
                    last = Some(idx);
                    i = if desc { i - 1 } else { i + 1 };
                }
                let more = if desc { i > lo } else { i < hi };
                if let Some(l) = last.filter(|_| more) {
                    let gprim = if by_updated {
                        d.profile_updated(l)
                    } else {
                        l as i64
                    };
                    horizons.push((gprim, l as i64));
                }
                for idx in taken {
                    items.push(((prim(idx), idx as i64), idx));
                }
                for (&idx, _) in self.ov.touched.iter() {
                    let k = (prim(idx), idx as i64);
                    if ok(idx) && after(&k, cur.as_ref(), desc) {
                        items.push((k, idx));
                    }
                }
            }
        }
        let (page_items, next) = paginate(items, &horizons, page.size, desc);
        let data = page_items
            .into_iter()
            .map(|(_, i)| self.profile_json(i, None))
            .collect();
        Ok(self.collection(&page, data, None, next.map(|(a, b)| vec![a, b])))
    }

    fn members(&self, lists: bool, full: bool) -> Result<Value, ApiErr> {
        let d = self.d;
        let g = d.group_index(lists, &self.id).ok_or_else(|| {
            ApiErr::not_found(format!(
                "{} {} not found.",
                if lists { "List" } else { "Segment" },
                self.id
            ))
        })?;
        let gr = self.group(lists, g);
        let page = self.page(20, 100)?;
        let conds = self.filter(
            &page,
            if lists {
                LIST_MEMBERS_ALLOWED
            } else {
                SEGMENT_MEMBERS_ALLOWED
            },
        )?;
        let sort = self.sort_of(&page, &["joined_group_at", "-joined_group_at"])?;
        let desc = sort.is_some_and(|s| s.starts_with('-'));
        let mut set = None;
        let mut jb = Bounds::default();
        for c in &conds {
            if self.identity(c, &mut set) {
                continue;
            }
            match c.field.as_str() {
                "joined_group_at" => jb.apply(c.op, datetime_value(c)?),
                other => return Err(not_emulated(other)),
            }
        }
        let cur = page.pos.as_ref().and_then(|p| p.first().copied());
        let mut items: Vec<(i64, u64)> = Vec::new();
        let mut horizons = Vec::new();
        match set {
            Some(set) => {
                for i in set {
                    if d.is_member(gr, i)
                        && jb.contains(d.joined_at(gr, i))
                        && after(&(i as i64), cur.as_ref(), desc)
                    {
                        items.push((i as i64, i));
                    }
                }
            }
            None => {
                let joined = |t: i64| d.first_profile_at(t, |d, i| d.joined_at(gr, i));
                let mut lo = joined(jb.lo);
                let mut hi = joined(jb.hi);
                if let Some(k) = cur {
                    if desc {
                        hi = hi.min(k.max(0) as u64);
                    } else {
                        lo = lo.max((k + 1).max(0) as u64);
                    }
                }
                let mut scanned = 0u64;
                let mut i = if desc { hi } else { lo };
                let mut last = None;
                while items.len() <= page.size
                    && scanned < MEMBER_SCAN
                    && if desc { i > lo } else { i < hi }
                {
                    let idx = if desc { i - 1 } else { i };
                    if d.is_member(gr, idx) {
                        items.push((idx as i64, idx));
                    }
                    last = Some(idx);
                    scanned += 1;
                    i = if desc { i - 1 } else { i + 1 };
                }
                if let Some(l) = last.filter(|_| if desc { i > lo } else { i < hi }) {
                    horizons.push(l as i64);
                }
            }
        }
        let (page_items, next) = paginate(items, &horizons, page.size, desc);
        let data = page_items
            .into_iter()
            .map(|(_, i)| {
                if full {
                    self.profile_json(i, Some(d.joined_at(gr, i)))
                } else {
                    json!({"type": "profile", "id": d.profile_id(i)})
                }
            })
            .collect();
        Ok(self.collection(&page, data, None, next.map(|k| vec![k])))
    }
}

// ---- admin ----

fn admin_json(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn admin_error(msg: impl Into<String>) -> Response {
    admin_json(StatusCode::BAD_REQUEST, json!({"error": msg.into()}))
}

async fn admin_stats(State(sh): St) -> Response {
    let live = sh.live();
    let mut v = sh.stats.json();
    v["rate_limit_scale"] = json!(live.config.rate_limit_scale);
    v["slow"] = json!(sh.slow.load(Ordering::Relaxed));
    admin_json(StatusCode::OK, v)
}

async fn admin_stats_reset(State(sh): St) -> Response {
    sh.stats.reset();
    admin_json(StatusCode::OK, sh.stats.json())
}

async fn admin_faults(State(sh): St) -> Response {
    admin_json(StatusCode::OK, json!(sh.live().config.faults))
}

/// Swaps in a new configuration (keeping the overlay when `keep_overlay`).
fn install(sh: &Shared, config: KlaviyoConfig) -> Result<(), InvalidSpec> {
    let old = sh.live();
    let data = Dataset::new(&config.data)?;
    let overlay = if old.config.data == config.data {
        old.overlay.clone()
    } else {
        Arc::new(RwLock::new(Overlay {
            events: (0..data.metrics.len()).map(|_| BTreeMap::new()).collect(),
            ..Overlay::default()
        }))
    };
    sh.set_throttle(&config.faults);
    *sh.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Live {
        config,
        data,
        overlay,
    });
    Ok(())
}

async fn admin_set_faults(State(sh): St, body: Bytes) -> Response {
    let faults: FaultConfig = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return admin_error(format!("bad fault config: {e}")),
    };
    let mut config = sh.live().config.clone();
    config.faults = faults;
    // The data do not change, so the dataset is rebuilt cheaply and the overlay kept.
    match install(&sh, config) {
        Ok(()) => admin_json(StatusCode::OK, json!(sh.live().config.faults)),
        Err(e) => admin_error(e.to_string()),
    }
}

async fn admin_config(State(sh): St) -> Response {
    admin_json(StatusCode::OK, json!(sh.live().config))
}

async fn admin_set_config(State(sh): St, body: Bytes) -> Response {
    let config: KlaviyoConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return admin_error(format!("bad config: {e}")),
    };
    match install(&sh, config) {
        Ok(()) => {
            sh.limiter.reset();
            admin_json(StatusCode::OK, json!(sh.live().config))
        }
        Err(e) => admin_error(e.to_string()),
    }
}

fn parse_time(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64().map(|x| x.floor() as i64)),
        Value::String(s) => filter::parse_datetime(s)
            .map(|x| Some(x.floor() as i64))
            .ok_or_else(|| format!("'{s}' is not a datetime")),
        other => Err(format!("{other} is not a datetime")),
    }
}

async fn admin_events(State(sh): St, body: Bytes) -> Response {
    let live = sh.live();
    let d = &live.data;
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return admin_error(format!("bad JSON: {e}")),
    };
    let metric = match req["metric_id"].as_str() {
        Some(id) => match d.metric_index(id) {
            Some(m) => Some(m),
            None => return admin_error(format!("unknown metric_id {id}")),
        },
        None => None,
    };
    let when = match parse_time(&req["datetime"]) {
        Ok(t) => t.unwrap_or_else(|| chrono::Utc::now().timestamp()),
        Err(e) => return admin_error(e),
    };
    if d.metrics.is_empty() {
        return admin_error("the account has no metrics");
    }
    let mut ov = live.overlay.write().unwrap_or_else(|p| p.into_inner());
    let mut ids = Vec::new();
    if let Some(count) = req["count"].as_u64() {
        for _ in 0..count.min(1_000_000) {
            let seq = ov.next_seq;
            ov.next_seq += 1;
            let m = metric.unwrap_or((seq % d.metrics.len() as u64) as usize);
            let profile = h3(d.spec.seed ^ 0xADD, seq, 1, 0) % d.spec.profiles;
            let props = d.event_properties(m, (1 << 39) | seq, when);
            ids.push(push_event(d, &mut ov, m, seq, when, profile, props));
        }
    } else {
        let Some(m) = metric else {
            return admin_error("`metric_id` (or `count`) is required");
        };
        let profile = match req["profile_id"].as_str().map(|p| d.profile_index(p)) {
            Some(Some(p)) => p,
            _ => return admin_error("`profile_id` must be a generated profile's id"),
        };
        let props = match &req["properties"] {
            Value::Null => json!({}),
            v => v.clone(),
        };
        let seq = ov.next_seq;
        ov.next_seq += 1;
        ids.push(push_event(d, &mut ov, m, seq, when, profile, props));
    }
    admin_json(StatusCode::OK, json!({"ids": ids}))
}

fn push_event(
    d: &Dataset,
    ov: &mut Overlay,
    m: usize,
    seq: u64,
    ts: i64,
    profile: u64,
    properties: Value,
) -> String {
    let id = d.appended_event_id(m, seq);
    if ov.events.len() < d.metrics.len() {
        ov.events.resize_with(d.metrics.len(), BTreeMap::new);
    }
    ov.events[m].insert(
        (ts, seq),
        Appended {
            id: id.clone(),
            uuid: d.event_uuid(m, (1 << 39) | seq, ts),
            profile,
            properties,
        },
    );
    id
}

async fn admin_touch(State(sh): St, Path(id): Path<String>, body: Bytes) -> Response {
    let live = sh.live();
    let d = &live.data;
    let Some(i) = d.profile_index(&id) else {
        return admin_json(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no profile {id}")}),
        );
    };
    let req: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return admin_error(format!("bad JSON: {e}")),
        }
    };
    let updated = match parse_time(&req["updated"]) {
        Ok(t) => t.unwrap_or_else(|| chrono::Utc::now().timestamp()),
        Err(e) => return admin_error(e),
    };
    live.overlay
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .touched
        .insert(i, updated);
    let ov = live.overlay.read().unwrap_or_else(|p| p.into_inner());
    let cx = Ctx {
        base_json: String::new(),
        d,
        ov: &ov,
        q: Query::parse(""),
        base: String::new(),
        ep: Ep::Profile,
        id,
    };
    admin_json(StatusCode::OK, json!({"data": cx.profile_json(i, None)}))
}
