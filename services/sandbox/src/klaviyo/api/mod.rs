//! The Klaviyo routes: each operation behind the layers (outer to inner) [`record`]
//! (statistics), the shared [`auth`](crate::auth) layer with Klaviyo's key check,
//! [`check_revision`], the shared fault layer's throttle burst, the shared
//! [`ratelimit`](crate::ratelimit) layer with Klaviyo's tiers, and the shared fault layer;
//! then the handlers: the request context, paging, filters and sparse fieldsets here, the
//! resources in `events`, `profiles`, `metrics` and `groups` (lists and segments), the admin
//! routes in `admin`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

mod admin;
mod aggregates;
mod bulk_jobs;
mod catalogs;
mod engagement;
mod event_writes;
mod events;
mod groups;
mod metrics;
mod profile_writes;
mod profiles;
mod writes;

pub use writes::WrittenHandle;

use admin::*;

use super::data::{Dataset, GroupGen, fmt_time, h3, mix64};
use super::filter::{self, Allowed, Bounds, Cond, Lit, Op};
use super::limits::{Outcome, Stats, Tier};
use super::spec;
use super::{FaultConfig, InvalidSpec, KlaviyoConfig};
use crate::auth::{self, Auth, Principal};
use crate::faults::{self, FaultHook, FaultKind, Faults, Injected};
use crate::ratelimit::{self, Budget, Limiter, RateLimit, Reported, Windowing};

/// Events scanned at a time when filtering on `profile_id` (until the page is full).
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
    /// `event_properties` as compact JSON text (an object): a `Value` tree takes about
    /// eight times the room of its text, and a full-size commercetools sync writes some
    /// 85,000 events of a few KB each. Reads serve the text as it is.
    properties: Box<str>,
}

impl Appended {
    fn new(id: String, uuid: String, profile: u64, properties: &Value) -> Self {
        Appended {
            id,
            uuid,
            profile,
            properties: properties.to_string().into_boxed_str(),
        }
    }
}

/// What was added or changed at run time, on top of the generated data.
#[derive(Default)]
struct Overlay {
    /// Per metric: `(timestamp, seq) → event`.
    events: Vec<BTreeMap<(i64, u64), Appended>>,
    next_seq: u64,
    /// Touched profiles: index → `updated` (epoch seconds).
    touched: HashMap<u64, i64>,
    /// What the write endpoints wrote ([`writes`]).
    written: super::written::Written,
}

/// The configuration in force and its compiled data.
struct Live {
    config: KlaviyoConfig,
    data: Dataset,
    overlay: Arc<RwLock<Overlay>>,
}

struct Shared {
    live: RwLock<Arc<Live>>,
    /// The shared rate-limit windows (reset when the config is replaced).
    limiter: Arc<Limiter>,
    stats: Stats,
    /// The shared fault layer's knobs and counters (`slow` of the stats).
    faults: Arc<Faults>,
}

type St = State<Arc<Shared>>;

impl Shared {
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Builds the Klaviyo routes (see the module docs) for `config`.
pub fn router(config: KlaviyoConfig) -> Result<Router, InvalidSpec> {
    build(config, &mut None)
}

/// [`router`], and a handle on what the write endpoints write (for in-process tests).
pub fn router_with_handle(config: KlaviyoConfig) -> Result<(Router, WrittenHandle), InvalidSpec> {
    let mut handle = None;
    let router = build(config, &mut handle)?;
    match handle {
        Some(h) => Ok((router, h)),
        None => Err(InvalidSpec(
            "the Klaviyo emulation was built without its state".into(),
        )),
    }
}

/// [`router`], putting the handle on its state into `handle`.
fn build(config: KlaviyoConfig, handle: &mut Option<WrittenHandle>) -> Result<Router, InvalidSpec> {
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
        // Klaviyo's windows are fixed and its headers describe the steady window.
        limiter: Arc::new(Limiter::new(Windowing::Fixed, Reported::Longest)),
        stats: Stats::default(),
        faults: Faults::new(config.faults.clone(), fault_body),
    });
    *handle = Some(WrittenHandle(shared.clone()));
    let auth = klaviyo_auth(&shared);
    let limits = klaviyo_limits(&shared);
    // Each operation, outer to inner: statistics, the key check, the revision, a forced
    // throttle burst (before the limiter, so it uses up no budget), Klaviyo's rate limits,
    // the other faults, the handler.
    let layered = |m: axum::routing::MethodRouter<Arc<Shared>>, ep: Ep| {
        m.layer(axum::middleware::from_fn_with_state(
            shared.faults.clone(),
            faults::inject,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limits.clone(),
            ratelimit::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            shared.faults.clone(),
            faults::throttle,
        ))
        .layer(axum::middleware::from_fn(check_revision))
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            (shared.clone(), ep),
            record,
        ))
    };
    macro_rules! ep {
        ($e:expr) => {
            layered(
                get(
                    move |st: St, h: HeaderMap, RawQuery(q): RawQuery| async move {
                        serve(st, $e, None, h, q).await
                    },
                ),
                $e,
            )
        };
    }
    macro_rules! ep_id {
        ($e:expr) => {
            layered(
                get(
                    move |st: St, Path(id): Path<String>, h: HeaderMap, RawQuery(q): RawQuery| async move {
                        serve(st, $e, Some(id), h, q).await
                    },
                ),
                $e,
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
    let r = writes::routes(r, &layered);
    let r = engagement::Route::mount(r, |r, path, ep, with_id| {
        both(r, path, if with_id { ep_id!(ep) } else { ep!(ep) })
    });
    let r = both(
        r,
        "/api/metric-aggregates",
        layered(
            post(aggregates::metric_aggregates),
            Ep::Engagement(engagement::Route::MetricAggregates),
        ),
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
    /// The write side and the reads of written data ([`writes`]).
    Store(writes::StoreOp),
    Members {
        lists: bool,
        full: bool,
    },
    /// Campaigns, flows, templates, tags, metric aggregates (`engagement`, `aggregates`).
    Engagement(engagement::Route),
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
            Ep::Store(op) => op.name(),
            Ep::Engagement(r) => r.name(),
        }
    }
}

/// Every emulated operation's id ([`Ep::name`]), each in the spec table.
#[cfg(test)]
pub(super) const OPERATION_IDS: &[&str] = &[
    "get_metrics",
    "get_metric",
    "get_events",
    "get_profiles",
    "get_profile",
    "get_lists",
    "get_list",
    "get_segments",
    "get_segment",
    "get_profile_ids_for_list",
    "get_profiles_for_list",
    "get_profile_ids_for_segment",
    "get_profiles_for_segment",
];

/// The operation ids of the `engagement` and `aggregates` routes.
#[cfg(test)]
pub(super) const ENGAGEMENT_OPERATION_IDS: &[&str] = engagement::Route::OPERATION_IDS;

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

/// The tier of a request to `ep` with query `q`: the operation's `x-klaviyo-ratelimit`, or
/// the stricter tier its description gives for a parameter value the request uses
/// (`additional-fields[profile]=predictive_analytics`, `include=lists`, …).
fn tier_of(ep: Ep, q: &Query) -> Tier {
    let op = spec::operation(ep.name());
    let mut limits = op.limits;
    for (param, value, burst, steady) in &op.limits_when {
        if q.list(param).iter().any(|v| v == value) && *burst < limits[0] {
            limits = [*burst, *steady];
        }
    }
    Tier::of(limits)
}

/// A 429 in Klaviyo's shape with `Retry-After: wait`.
fn throttled_response(wait: u64) -> Response {
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
}

/// Klaviyo's bodies of the faults injected by the shared fault layer.
fn fault_body(status: StatusCode, retry_after: Option<u64>) -> Response {
    let (code, title) = match status {
        StatusCode::TOO_MANY_REQUESTS => return throttled_response(retry_after.unwrap_or(1)),
        StatusCode::INTERNAL_SERVER_ERROR => ("error", "A server error occurred."),
        StatusCode::BAD_GATEWAY => ("error", "Bad gateway."),
        _ => ("service_unavailable", "Service unavailable."),
    };
    ApiErr {
        status,
        code,
        title,
        detail: "Injected by the sluice sandbox's fault knobs.".into(),
        source: None,
    }
    .response()
}

/// The operation and tier of a request, put into its extensions by [`record`].
#[derive(Clone, Copy)]
struct Operation {
    ep: Ep,
    tier: Tier,
}

/// The outer layer of every `/api/` route: records each request's outcome per tier and
/// endpoint (injected faults as they happen, through a [`FaultHook`]; the rest from the
/// response: 2xx ok, 429 throttled, other client errors).
async fn record(
    State((sh, ep)): State<(Arc<Shared>, Ep)>,
    mut request: Request,
    next: Next,
) -> Response {
    let q = Query::parse(request.uri().query().unwrap_or(""));
    let tier = tier_of(ep, &q);
    // Faults are counted per tier and endpoint as they are injected (a slow response
    // before its wait, as the client usually gives up first).
    let hook_stats = sh.clone();
    let hook = FaultHook(Arc::new(move |kind| {
        let o = match kind {
            FaultKind::Throttled => Outcome::Throttled,
            _ => Outcome::Fault,
        };
        hook_stats.stats.record(tier, ep.name(), o, 0);
    }));
    request.extensions_mut().insert(hook);
    request.extensions_mut().insert(Operation { ep, tier });
    // The body's exact length: its `Content-Length`, or the size of a body built whole;
    // a chunked body of unknown length counts 0.
    let bytes = axum::body::HttpBody::size_hint(request.body())
        .exact()
        .unwrap_or(0);
    let resp = next.run(request).await;
    let outcome = match resp.extensions().get::<Injected>() {
        // Counted by the hook.
        Some(_) => None,
        None if resp.status().is_success() => Some(Outcome::Ok),
        None if resp.status() == StatusCode::TOO_MANY_REQUESTS => Some(Outcome::Throttled),
        None => Some(Outcome::ClientError),
    };
    if let Some(o) = outcome {
        sh.stats.record(tier, ep.name(), o, bytes);
    }
    resp
}

/// Klaviyo's key check: `Authorization: Klaviyo-API-Key <key>` with a key of
/// [`KlaviyoConfig::api_keys`] (the principal), else 401 `not_authenticated`.
fn klaviyo_auth(shared: &Arc<Shared>) -> Auth {
    let sh = shared.clone();
    Auth::new(move |request| {
        let key = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("Klaviyo-API-Key "))
            .map(str::trim);
        match key.filter(|k| sh.live().config.api_keys.iter().any(|a| a == k)) {
            Some(k) => Ok(Principal(k.to_owned())),
            None => Err(Box::new(
                ApiErr {
                    status: StatusCode::UNAUTHORIZED,
                    code: "not_authenticated",
                    title: "Authentication credentials were not provided.",
                    detail: "Missing or invalid private key.".into(),
                    source: None,
                }
                .response(),
            )),
        }
    })
}

/// Klaviyo's rate limits: the tier of the request's operation ([`Operation`]), scaled by
/// [`KlaviyoConfig::rate_limit_scale`] (`None`: unlimited), one budget per account and
/// endpoint or tier ([`KlaviyoConfig::rate_limit_scope`]).
fn klaviyo_limits(shared: &Arc<Shared>) -> RateLimit {
    let sh = shared.clone();
    RateLimit::new(
        shared.limiter.clone(),
        move |request| {
            let op = request.extensions().get::<Operation>()?;
            let account = request.extensions().get::<Principal>()?;
            let live = sh.live();
            let scale = live.config.rate_limit_scale?;
            let budget = match live.config.rate_limit_scope {
                super::RateLimitScope::Endpoint => op.ep.name(),
                super::RateLimitScope::Tier => op.tier.name(),
            };
            Some(Budget {
                key: format!("{}/{budget}", account.0),
                windows: op.tier.windows(scale),
            })
        },
        throttled_response,
    )
}

/// The `revision` header: a revision Klaviyo published ([`spec::REVISIONS`], also with
/// `.pre`), else 400.
async fn check_revision(request: Request, next: Next) -> Response {
    match request
        .headers()
        .get("revision")
        .and_then(|v| v.to_str().ok())
    {
        Some(r) if spec::published(r.trim()) => next.run(request).await,
        other => {
            let detail = match other {
                None => "Missing `revision` header. Use a revision like 2026-07-15.".to_owned(),
                Some(r) => format!(
                    "Invalid revision header `{r}`: not a published revision (YYYY-MM-DD, e.g. {}, \
                     optionally with `.pre`).",
                    spec::REVISIONS.join(", ")
                ),
            };
            ApiErr {
                status: StatusCode::BAD_REQUEST,
                code: "invalid",
                title: "Invalid input.",
                detail,
                source: Some(("header", "revision".into())),
            }
            .response()
        }
    }
}

/// The handler of every `/api/` route (behind [`gate`] and the fault layer).
async fn serve(
    State(sh): St,
    ep: Ep,
    id: Option<String>,
    headers: HeaderMap,
    query: Option<String>,
) -> Response {
    let live = sh.live();
    writes::settle(&live, writes::now_ms());
    let q = Query::parse(query.as_deref().unwrap_or(""));
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
        revision: headers
            .get("revision")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(spec::EVENTS_PAGE_SIZE_SINCE)
            .trim()
            .to_owned(),
    };
    let result = cx.handle();
    drop(overlay);
    let body = match result {
        Ok(Doc::Json(v)) => serde_json::to_vec(&v).unwrap_or_default(),
        Ok(Doc::Raw(s)) => s.into_bytes(),
        Err(e) => return e.response(),
    };
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_API));
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
    /// A `links.prev` cursor: the items just before `pos` (in page order), not after it.
    back: bool,
}

/// Where a collection page's links lead: cursor positions (see [`Page`]).
#[derive(Default)]
struct PageLinks {
    /// The items after this position.
    next: Option<Vec<i64>>,
    /// The position and whether the items are those before it (`true`, keyset pages) or
    /// from it on (`false`, offset pages).
    prev: Option<(Vec<i64>, bool)>,
}

/// The cursor of a `page[cursor]` value: the value itself, or what Klaviyo's SDKs hand back
/// as the cursor: the whole `links.next` URL, or the text after `page%5Bcursor%5D` in it
/// (leading `=` and any later parameters included).
fn cursor_token(given: &str) -> String {
    let mut c = given.trim();
    for marker in ["page%5Bcursor%5D", "page%5bcursor%5d", "page[cursor]"] {
        if let Some(i) = c.find(marker) {
            c = &c[i + marker.len()..];
            break;
        }
    }
    let c = c.strip_prefix('=').unwrap_or(c);
    let c = c.split('&').next().unwrap_or_default();
    url::form_urlencoded::parse(format!("c={c}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
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
    /// The request's `revision` header (a published one: checked by [`check_revision`]).
    revision: String,
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

impl Ctx<'_> {
    fn handle(&self) -> Result<Doc, ApiErr> {
        self.check_params()?;
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
                    .metric_idx(&self.id)
                    .ok_or_else(|| ApiErr::not_found(format!("Metric {} not found.", self.id)))?;
                Ok(self.single(self.metric_json(m)))
            }
            Ep::Events => Err(ApiErr::not_found("events")),
            Ep::Profiles => self.profiles(),
            Ep::Profile => self.profile(),
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
                Ok(self.single(self.group_json(lists, g)))
            }
            Ep::Members { lists, full } => self.members(lists, full),
            Ep::Store(op) => self.store_get(op),
            Ep::Engagement(r) => self.engagement(r),
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
            Ep::Store(op) => op.rest(&self.id),
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
            Ep::Engagement(r) => r.path(&self.id),
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

    /// Every query parameter is one of the operation's in the spec, and each value of an
    /// enumerated one (`include`, `fields[…]`, `additional-fields[…]`, `sort`) one of its
    /// enum; else 400 naming the parameter. `page[size]` on `GET /api/events` before
    /// revision [`spec::EVENTS_PAGE_SIZE_SINCE`] is ignored, as Klaviyo does.
    fn check_params(&self) -> Result<(), ApiErr> {
        let op = spec::operation(self.ep.name());
        for (k, v) in &self.q.pairs {
            let Some(allowed) = op.params.get(k) else {
                if k == "page[size]" && self.events_page_size_ignored() {
                    continue;
                }
                let mut names: Vec<&str> = op.params.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(ApiErr::param(
                    k,
                    format!(
                        "'{k}' is not a valid query parameter for {}. Allowed: {}",
                        op.path,
                        names.join(", ")
                    ),
                ));
            };
            let Some(values) = allowed else { continue };
            let items: Vec<&str> = if k == "sort" {
                vec![v.trim()]
            } else {
                v.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .collect()
            };
            if let Some(bad) = items.iter().find(|x| !values.iter().any(|a| a == *x)) {
                return Err(ApiErr::param(
                    k,
                    format!(
                        "'{bad}' is not a valid value of '{k}' for this endpoint. Allowed: {}",
                        values.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether this is `GET /api/events` at a revision before it took `page[size]`.
    fn events_page_size_ignored(&self) -> bool {
        let date = self.revision.split('.').next().unwrap_or_default();
        matches!(self.ep, Ep::Events) && date < spec::EVENTS_PAGE_SIZE_SINCE
    }

    /// `page[size]` (checked against `min 1`, `max`), the effective filter and sort, and
    /// the cursor position and direction.
    fn page(&self, default: usize, max: usize) -> Result<Page, ApiErr> {
        let size = match self.q.get("page[size]") {
            _ if self.events_page_size_ignored() => default,
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
        let Some(given) = self.q.get("page[cursor]") else {
            return Ok(Page {
                filter: filter.unwrap_or_default(),
                sort,
                pos: None,
                size,
                back: false,
            });
        };
        let bad = || ApiErr::param("page[cursor]", format!("Invalid page cursor '{given}'."));
        let c: Value = hex::decode(cursor_token(given))
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
            back: c["b"].as_bool().unwrap_or(false),
        })
    }

    /// The links of a keyset page: `first` and `last` are the page's keys (in page order,
    /// after reversing a backward page), `more` what [`paginate`] returned (where to go on
    /// in the direction the page was read).
    fn keyset_links(
        page: &Page,
        first: Option<Vec<i64>>,
        last: Option<Vec<i64>>,
        more: Option<Vec<i64>>,
    ) -> PageLinks {
        if page.back {
            PageLinks {
                next: last,
                prev: more.map(|p| (p, true)),
            }
        } else {
            PageLinks {
                next: more,
                prev: page.pos.as_ref().and(first).map(|p| (p, true)),
            }
        }
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

    /// A `page[cursor]` link of this request's query.
    fn cursor_link(&self, page: &Page, pos: &[i64], back: bool) -> String {
        let mut c = json!({"p": pos, "f": page.filter, "s": page.sort});
        if back {
            c["b"] = json!(true);
        }
        let cursor = hex::encode(serde_json::to_vec(&c).unwrap_or_default());
        format!("{}?{}", self.path(), self.q.encode(Some(&cursor)))
    }

    /// A collection document.
    fn collection(
        &self,
        page: &Page,
        data: Vec<Value>,
        included: Option<Vec<Value>>,
        links: PageLinks,
    ) -> Value {
        let next = links.next.map(|p| self.cursor_link(page, &p, false));
        let prev = links.prev.map(|(p, back)| self.cursor_link(page, &p, back));
        let mut doc = json!({
            "data": data,
            "links": {"self": self.self_link(), "next": next, "prev": prev},
        });
        if let Some(inc) = included {
            doc["included"] = Value::Array(inc);
        }
        doc
    }

    /// A single-resource document; with an `include` (all of whose resources, flows and
    /// tags, the sandbox does not model) an empty `included`.
    fn single(&self, data: Value) -> Value {
        let mut doc = json!({"data": data, "links": {"self": self.self_link()}});
        if !self.includes().is_empty() {
            doc["included"] = json!([]);
        }
        doc
    }

    /// The `include` values (checked against the spec by [`Ctx::check_params`]).
    fn includes(&self) -> Vec<String> {
        self.q.list("include")
    }

    /// Whether `include` names `what`.
    fn including(&self, what: &str) -> bool {
        self.includes().iter().any(|i| i == what)
    }

    // ---- resources ----

    fn rel(&self, kind: &str, id: &str, rel: &str) -> Value {
        json!({
            "self": format!("{}/api/{kind}/{id}/relationships/{rel}/", self.base),
            "related": format!("{}/api/{kind}/{id}/{rel}/", self.base),
        })
    }
}
