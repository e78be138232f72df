//! The WDN routes: the catalogue API behind the throttle and fault layers, and the admin
//! routes (see the module docs of [`super`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{Catalogue, FaultConfig, InvalidConfig, WdnConfig, WdnStats};
use crate::faults::{self, Faults};

/// The catalogue with the indexes the routes need.
struct Indexed {
    catalogue: Catalogue,
    brand_by_id: HashMap<String, usize>,
    /// Brand id → product positions, in product id order.
    products_by_brand: HashMap<String, Vec<usize>>,
    product_by_id: HashMap<String, usize>,
    offers_by_product: HashMap<String, Vec<usize>>,
    missing_offers: HashSet<String>,
    retailer_by_id: HashMap<String, usize>,
}

impl Indexed {
    fn new(catalogue: Catalogue) -> Self {
        let brand_by_id = catalogue
            .brands
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id.clone(), i))
            .collect();
        let name_to_id: HashMap<&str, &str> = catalogue
            .brands
            .iter()
            .map(|b| (b.name.as_str(), b.id.as_str()))
            .collect();
        let mut products_by_brand: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in catalogue.products.iter().enumerate() {
            for name in &p.brand_names {
                if let Some(id) = name_to_id.get(name.as_str()) {
                    products_by_brand
                        .entry((*id).to_string())
                        .or_default()
                        .push(i);
                }
            }
        }
        for list in products_by_brand.values_mut() {
            list.sort_by(|&a, &b| catalogue.products[a].id.cmp(&catalogue.products[b].id));
            list.dedup();
        }
        let product_by_id = catalogue
            .products
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        let mut offers_by_product: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, o) in catalogue.offers.iter().enumerate() {
            offers_by_product
                .entry(o.product_id.clone())
                .or_default()
                .push(i);
        }
        let missing_offers = catalogue.missing_offers.iter().cloned().collect();
        let retailer_by_id = catalogue
            .retailers
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        Self {
            catalogue,
            brand_by_id,
            products_by_brand,
            product_by_id,
            offers_by_product,
            missing_offers,
            retailer_by_id,
        }
    }
}

struct Shared {
    config: WdnConfig,
    data: Indexed,
    faults: Arc<Faults>,
    in_flight: AtomicU64,
    peak: AtomicU64,
    total: AtomicU64,
    slowed: AtomicU64,
    refused: AtomicU64,
    busy_ns: AtomicU64,
    /// (first arrival, last end) since the last reset.
    span: Mutex<(Option<Instant>, Option<Instant>)>,
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
}

type St = State<Arc<Shared>>;

/// Builds the WDN routes (see the module docs) for `config`.
pub fn router(config: WdnConfig) -> Result<Router, InvalidConfig> {
    config.validate()?;
    let data = Indexed::new(config.served());
    let shared = Arc::new(Shared {
        faults: Faults::new(config.faults.clone(), fault_body),
        data,
        config,
        in_flight: AtomicU64::new(0),
        peak: AtomicU64::new(0),
        total: AtomicU64::new(0),
        slowed: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        busy_ns: AtomicU64::new(0),
        span: Mutex::new((None, None)),
        requests: Mutex::new(BTreeMap::new()),
    });
    let api = Router::new()
        .route("/wdn/api/v1/searches/brand_search", get(brand_search))
        .route("/wdn/api/v1/brands/{id}/products", get(products))
        .route("/wdn/api/v1/products/{id}/offers", get(offers))
        .route("/wdn/api/v1/retailers/{id}", get(retailer))
        .layer(middleware::from_fn_with_state(
            shared.faults.clone(),
            faults::inject,
        ))
        .layer(middleware::from_fn_with_state(shared.clone(), throttle));
    Ok(api
        .route("/wdn/_admin/stats", get(admin_stats))
        .route("/wdn/_admin/stats/reset", post(admin_reset))
        .route(
            "/wdn/_admin/faults",
            get(admin_faults).post(admin_set_faults),
        )
        .route("/wdn/_admin/config", get(admin_config))
        .with_state(shared))
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A JSON:API error document.
fn error(status: StatusCode, detail: impl Into<String>) -> Response {
    json_response(
        status,
        &json!({"errors": [{
            "status": status.as_u16().to_string(),
            "title": status.canonical_reason().unwrap_or(""),
            "detail": detail.into(),
        }]}),
    )
}

fn fault_body(status: StatusCode, retry_after: Option<u64>) -> Response {
    let mut r = error(status, "sandbox fault");
    if let Some(s) = retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The endpoint a path belongs to, for the stats.
fn endpoint(path: &str) -> &'static str {
    if path.ends_with("/brand_search") {
        "brand_search"
    } else if path.ends_with("/products") {
        "products"
    } else if path.ends_with("/offers") {
        "offers"
    } else if path.contains("/retailers/") {
        "retailers"
    } else {
        "other"
    }
}

/// Leaves the in-flight count when dropped (also when the client goes away mid-request).
struct InFlight {
    shared: Arc<Shared>,
    since: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.shared.busy_ns.fetch_add(
            now.duration_since(self.since).as_nanos() as u64,
            Ordering::Relaxed,
        );
        let mut span = self.shared.span.lock().unwrap_or_else(|p| p.into_inner());
        span.1 = Some(span.1.map_or(now, |t| t.max(now)));
    }
}

/// The throttle (outermost layer): counts requests in flight, slows them down above
/// `max_concurrency` and refuses them at `fail_concurrency`.
async fn throttle(State(s): St, request: Request, next: Next) -> Response {
    let since = Instant::now();
    let n = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.peak.fetch_max(n, Ordering::SeqCst);
    s.total.fetch_add(1, Ordering::Relaxed);
    {
        let mut span = s.span.lock().unwrap_or_else(|p| p.into_inner());
        span.0.get_or_insert(since);
    }
    let guard = InFlight {
        shared: s.clone(),
        since,
    };
    let name = endpoint(request.uri().path());
    let max = u64::from(s.config.max_concurrency);
    let response = if n >= u64::from(s.config.fail_concurrency) {
        let refused = s.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let status = if refused % 2 == 1 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        error(
            status,
            format!("{n} requests in flight: slow down (at most {max} at once)"),
        )
    } else {
        if n > max {
            s.slowed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(
                s.config.overload_delay_ms * (n - max),
            ))
            .await;
        }
        next.run(request).await
    };
    *s.requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(name.to_string())
        .or_default()
        .entry(response.status().as_u16())
        .or_default() += 1;
    drop(guard);
    response
}

/// `page` and `page_size` of a list request, or a 400 naming the bad one.
fn paging(s: &Shared, query: &HashMap<String, String>) -> Result<(usize, usize), Box<Response>> {
    let read = |name: &str, default: u32, max: u32| -> Result<usize, Box<Response>> {
        match query.get(name) {
            None => Ok(default as usize),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n as usize),
                _ => Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    format!("{name} must be a whole number from 1 to {max}, found {v:?}"),
                ))),
            },
        }
    };
    Ok((
        read("page", 1, u32::MAX)?,
        read(
            "page_size",
            s.config.default_page_size,
            s.config.max_page_size,
        )?,
    ))
}

/// One page of `items` as a list document.
fn page_of(items: Vec<Value>, page: usize, size: usize) -> Response {
    let total = items.len();
    let data: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"data": data, "meta": {"page": {"current_page": page, "total_count": total}}}),
    )
}

async fn brand_search(State(s): St, Query(q): Query<HashMap<String, String>>) -> Response {
    let (page, size) = match paging(&s, &q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Some(term) = q.get("q").map(|t| t.trim().to_lowercase()) else {
        return error(StatusCode::BAD_REQUEST, "q is required");
    };
    let found: Vec<Value> = s
        .data
        .catalogue
        .brands
        .iter()
        .filter(|b| b.name.to_lowercase().contains(&term))
        .map(super::Brand::to_json)
        .collect();
    page_of(found, page, size)
}

async fn products(
    State(s): St,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (page, size) = match paging(&s, &q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if !s.data.brand_by_id.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, format!("no brand {id}"));
    }
    let list = s
        .data
        .products_by_brand
        .get(&id)
        .map(|l| {
            l.iter()
                .map(|&i| s.data.catalogue.products[i].to_json())
                .collect()
        })
        .unwrap_or_default();
    page_of(list, page, size)
}

async fn offers(
    State(s): St,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (page, size) = match paging(&s, &q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if !s.data.product_by_id.contains_key(&id) || s.data.missing_offers.contains(&id) {
        return error(StatusCode::NOT_FOUND, format!("no offers of product {id}"));
    }
    let list = s
        .data
        .offers_by_product
        .get(&id)
        .map(|l| {
            l.iter()
                .map(|&i| s.data.catalogue.offers[i].to_json())
                .collect()
        })
        .unwrap_or_default();
    page_of(list, page, size)
}

async fn retailer(State(s): St, Path(id): Path<String>) -> Response {
    match s.data.retailer_by_id.get(&id) {
        Some(&i) => json_response(
            StatusCode::OK,
            &json!({"data": s.data.catalogue.retailers[i].to_json()}),
        ),
        None => error(StatusCode::NOT_FOUND, format!("no retailer {id}")),
    }
}

fn stats(s: &Shared) -> WdnStats {
    let (first, last) = *s.span.lock().unwrap_or_else(|p| p.into_inner());
    let busy_ms = s.busy_ns.load(Ordering::Relaxed) as f64 / 1e6;
    let span_ms = match (first, last) {
        (Some(a), Some(b)) if b > a => b.duration_since(a).as_secs_f64() * 1e3,
        _ => 0.0,
    };
    WdnStats {
        requests: s.requests.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        total: s.total.load(Ordering::Relaxed),
        slowed: s.slowed.load(Ordering::Relaxed),
        refused: s.refused.load(Ordering::Relaxed),
        in_flight: s.in_flight.load(Ordering::SeqCst),
        peak_concurrency: s.peak.load(Ordering::SeqCst),
        busy_ms,
        span_ms,
        mean_in_flight: if span_ms > 0.0 {
            busy_ms / span_ms
        } else {
            0.0
        },
        faults: s.faults.stats(),
    }
}

async fn admin_stats(State(s): St) -> Response {
    json_response(StatusCode::OK, &json!(stats(&s)))
}

async fn admin_reset(State(s): St) -> Response {
    s.total.store(0, Ordering::Relaxed);
    s.slowed.store(0, Ordering::Relaxed);
    s.refused.store(0, Ordering::Relaxed);
    s.busy_ns.store(0, Ordering::Relaxed);
    // The peak restarts from what is in flight now.
    s.peak
        .store(s.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    *s.span.lock().unwrap_or_else(|p| p.into_inner()) = (None, None);
    s.requests.lock().unwrap_or_else(|p| p.into_inner()).clear();
    s.faults.reset_stats();
    json_response(StatusCode::OK, &json!(stats(&s)))
}

async fn admin_faults(State(s): St) -> Response {
    json_response(StatusCode::OK, &json!(s.faults.config()))
}

async fn admin_set_faults(State(s): St, axum::Json(config): axum::Json<FaultConfig>) -> Response {
    s.faults.set(config);
    json_response(StatusCode::OK, &json!(s.faults.config()))
}

async fn admin_config(State(s): St) -> Response {
    let mut config = s.config.clone();
    // The catalogue's contents are the ground truth, not configuration to echo.
    let given = config.catalogue.take().is_some();
    let mut v = json!(config);
    v["catalogue_given"] = json!(given);
    json_response(StatusCode::OK, &v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    async fn get(app: &axum::Router, uri: &str) -> (u16, Value) {
        let response = app
            .clone()
            .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    use axum::http::Request;

    #[tokio::test]
    async fn lists_page_and_404s_mean_none() {
        let config = WdnConfig::default();
        let catalogue = config.served();
        let app = router(config).unwrap();
        let (status, body) = get(&app, "/wdn/api/v1/searches/brand_search?q=nike").await;
        assert_eq!(status, 200);
        let names: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["attributes"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["Nike", "Nike SB"]);
        let nike = catalogue.brand("nike").unwrap();
        let all = catalogue.products_of("Nike");
        let (status, body) = get(
            &app,
            &format!("/wdn/api/v1/brands/{}/products?page=2&page_size=7", nike.id),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["meta"]["page"]["current_page"], 2);
        assert_eq!(body["meta"]["page"]["total_count"], all.len());
        assert_eq!(body["data"][0]["id"], all[7].id.as_str());
        assert_eq!(body["data"][0], all[7].to_json());
        let missing = &catalogue.missing_offers[0];
        let (status, _) = get(&app, &format!("/wdn/api/v1/products/{missing}/offers")).await;
        assert_eq!(status, 404);
        let offer = &catalogue.offers[0];
        let (status, body) = get(
            &app,
            &format!("/wdn/api/v1/products/{}/offers", offer.product_id),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["data"][0], offer.to_json());
        let (status, body) = get(
            &app,
            &format!("/wdn/api/v1/retailers/{}", offer.retailer_id),
        )
        .await;
        assert!(status == 200 || status == 404);
        if status == 200 {
            assert_eq!(body["data"]["id"], offer.retailer_id.as_str());
        }
        let (status, body) = get(&app, "/wdn/api/v1/brands/1000/products?page_size=0").await;
        assert_eq!(status, 400);
        assert!(
            body["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("page_size")
        );
        let (status, _) = get(&app, "/wdn/api/v1/retailers/1").await;
        assert_eq!(status, 404);
        let (_, stats) = get(&app, "/wdn/_admin/stats").await;
        let stats: WdnStats = serde_json::from_value(stats).unwrap();
        assert_eq!(stats.count("offers", 404), 1);
        assert_eq!(stats.count("retailers", 404), 1);
        assert_eq!(stats.endpoint("products"), 2);
        assert_eq!(stats.peak_concurrency, 1);
    }

    #[tokio::test]
    async fn above_the_limit_requests_slow_down_then_fail() {
        let config = WdnConfig {
            max_concurrency: 2,
            fail_concurrency: 4,
            overload_delay_ms: 50,
            faults: FaultConfig {
                latency_ms: 200,
                ..FaultConfig::default()
            },
            ..WdnConfig::default()
        };
        let app = router(config).unwrap();
        let calls = (0..6).map(|_| get(&app, "/wdn/api/v1/retailers/1"));
        let statuses: Vec<u16> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let refused = statuses.iter().filter(|&&s| s == 429 || s == 503).count();
        assert_eq!(refused, 3, "{statuses:?}");
        assert!(statuses.contains(&429) && statuses.contains(&503));
        let (_, stats) = get(&app, "/wdn/_admin/stats").await;
        let stats: WdnStats = serde_json::from_value(stats).unwrap();
        // Three held, the fourth counted while it was refused (refusals answer at once, so
        // the later ones found four in flight again, not more).
        assert_eq!(stats.peak_concurrency, 4);
        assert_eq!((stats.refused, stats.slowed), (3, 1));
        // Three requests of ~200 ms overlapped: on average more than one was in flight.
        assert!(stats.mean_in_flight > 1.0, "{stats:?}");
    }
}
