//! The commercetools emulation over real HTTP on port 0.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone as _, Utc};
use serde_json::{Value, json};
use sluice_sandbox::commercetools::{
    self, ApiClient, CommercetoolsConfig, CommercetoolsDataSpec, FaultConfig, Project, Resource,
};
use sluice_sandbox::klaviyo::KlaviyoConfig;
use sluice_sandbox::{SandboxConfig, run_with_commercetools};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const KEY: &str = "sluice-sandbox";
/// `sluice-sandbox:sluice-sandbox-secret` in base64.
const BASIC: &str = "Basic c2x1aWNlLXNhbmRib3g6c2x1aWNlLXNhbmRib3gtc2VjcmV0";

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection; `None` when the server closed the
/// connection without a status line.
async fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Reply> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the sandbox accepts connections");
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream
        .write_all(head.as_bytes())
        .await
        .expect("the request is written");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

fn q(path: &str, params: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    format!("{path}?{}", s.finish())
}

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _cache: tempfile::TempDir,
}

async fn start(config: CommercetoolsConfig) -> Server {
    let cache = tempfile::tempdir().expect("a temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port 0 is free");
    let addr = listener.local_addr().expect("a bound address");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_with_commercetools(
        SandboxConfig {
            cache_dir: cache.path().join("cache"),
        },
        KlaviyoConfig::default(),
        config,
        listener,
        shutdown.clone(),
    ));
    Server {
        addr,
        shutdown,
        task,
        _cache: cache,
    }
}

impl Server {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("the server task does not panic")
            .expect("the server stops cleanly");
    }

    /// A token of the default client (all scopes), or with `scope`.
    async fn token(&self, scope: Option<&str>) -> String {
        let body = match scope {
            Some(s) => q("", &[("grant_type", "client_credentials"), ("scope", s)])[1..].to_owned(),
            None => "grant_type=client_credentials".to_owned(),
        };
        let r = raw(
            self.addr,
            "POST",
            "/oauth/token",
            &[
                ("Authorization", BASIC),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &body,
        )
        .await
        .expect("a token response");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    async fn get_with(&self, token: &str, target: &str) -> Reply {
        let auth = format!("Bearer {token}");
        raw(self.addr, "GET", target, &[("Authorization", &auth)], "")
            .await
            .expect("a response")
    }

    async fn send(&self, token: &str, method: &str, target: &str, body: &Value) -> Reply {
        let auth = format!("Bearer {token}");
        raw(
            self.addr,
            method,
            target,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &body.to_string(),
        )
        .await
        .expect("a response")
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let r = raw(self.addr, "POST", path, &[], &body.to_string())
            .await
            .expect("an admin response");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()
    }

    async fn stats(&self) -> Value {
        raw(self.addr, "GET", "/commercetools/_admin/stats", &[], "")
            .await
            .expect("stats")
            .json()
    }
}

/// Query parameters and the ids they must give.
type Case<'a> = (Vec<(&'a str, String)>, Vec<String>);

fn spec() -> CommercetoolsDataSpec {
    CommercetoolsDataSpec {
        seed: 7,
        customers: 300,
        orders: 1_200,
        categories: 50,
        products: 200,
        start: Utc
            .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .single()
            .expect("a valid date"),
        span_days: 200,
    }
}

fn config() -> CommercetoolsConfig {
    CommercetoolsConfig {
        data: spec(),
        ..CommercetoolsConfig::default()
    }
}

fn ground_truth() -> Project {
    Project::generate(KEY, &spec()).expect("a valid spec")
}

/// The first error of a commercetools error body, after checking the envelope.
fn error_of(r: &Reply, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["statusCode"], status, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v["errors"][0].clone()
}

fn ids_of(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_owned())
        .collect()
}

fn ms(v: &Value, field: &str) -> i64 {
    DateTime::parse_from_rfc3339(v[field].as_str().expect("a time"))
        .expect("RFC 3339")
        .timestamp_millis()
}

/// Every generated `r` body in id order.
fn bodies(p: &Project, r: Resource) -> Vec<Value> {
    p.ids(r)
        .iter()
        .map(|id| p.get(r, id).expect("listed ids resolve"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_flow_and_auth_errors() {
    let s = start(CommercetoolsConfig {
        examples_dir: examples_dir(),
        ..config()
    })
    .await;
    let a = s.addr;
    let form = [("Content-Type", "application/x-www-form-urlencoded")];

    // Wrong secret, no credentials.
    let wrong = format!(
        "Basic {}",
        "c2x1aWNlLXNhbmRib3g6d3Jvbmc=" // sluice-sandbox:wrong
    );
    for headers in [vec![("Authorization", wrong.as_str())], vec![]] {
        let mut h = headers.clone();
        h.extend(form);
        let r = raw(
            a,
            "POST",
            "/oauth/token",
            &h,
            "grant_type=client_credentials",
        )
        .await
        .expect("a response");
        let e = error_of(&r, 401);
        assert_eq!(e["code"], "invalid_client");
        assert_eq!(r.json()["error"], "invalid_client");
    }
    // Bad grant type and scope.
    let mut h = vec![("Authorization", BASIC)];
    h.extend(form);
    let r = raw(a, "POST", "/oauth/token", &h, "grant_type=password")
        .await
        .expect("a response");
    assert_eq!(error_of(&r, 400)["code"], "unsupported_grant_type");
    let r = raw(
        a,
        "POST",
        "/oauth/token",
        &h,
        "grant_type=client_credentials&scope=manage_project%3Aother-project",
    )
    .await
    .expect("a response");
    assert_eq!(error_of(&r, 400)["code"], "invalid_scope");

    // A good token.
    let r = raw(
        a,
        "POST",
        "/oauth/token",
        &h,
        "grant_type=client_credentials",
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 172_800);
    let scope = t["scope"].as_str().expect("scope");
    assert!(
        scope
            .split(' ')
            .any(|s| s == "manage_project:sluice-sandbox"),
        "{scope}"
    );
    if examples_dir().is_some() {
        assert!(
            scope
                .split(' ')
                .any(|s| s == "manage_project:sluice-examples"),
            "{scope}"
        );
    }
    let token = t["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        s.get_with(&token, "/sluice-sandbox/orders").await.status,
        200
    );

    // Missing and unknown tokens.
    let r = raw(a, "GET", "/sluice-sandbox/orders", &[], "")
        .await
        .expect("a response");
    assert_eq!(error_of(&r, 401)["code"], "invalid_token");
    let r = s.get_with("not-a-token", "/sluice-sandbox/orders").await;
    assert_eq!(error_of(&r, 401)["code"], "invalid_token");
    assert_eq!(r.json()["error"], "invalid_token");

    // Scopes: per resource and per project.
    let orders_only = s.token(Some("view_orders:sluice-sandbox")).await;
    assert_eq!(
        s.get_with(&orders_only, "/sluice-sandbox/orders")
            .await
            .status,
        200
    );
    let r = s.get_with(&orders_only, "/sluice-sandbox/customers").await;
    assert_eq!(error_of(&r, 403)["code"], "insufficient_scope");
    let r = s.get_with(&orders_only, "/sluice-examples/orders").await;
    assert_eq!(error_of(&r, 403)["code"], "insufficient_scope");
    let r = s
        .send(
            &s.token(Some("view_key_value_documents:sluice-sandbox"))
                .await,
            "POST",
            "/sluice-sandbox/custom-objects",
            &json!({"container": "c", "key": "k", "value": 1}),
        )
        .await;
    assert_eq!(error_of(&r, 403)["code"], "insufficient_scope");

    // Expiry through the admin route.
    let expired = s
        .admin("/commercetools/_admin/tokens/expire", json!({}))
        .await;
    assert!(
        expired["expired"].as_u64().expect("a count") >= 3,
        "{expired}"
    );
    let r = s.get_with(&token, "/sluice-sandbox/orders").await;
    assert_eq!(error_of(&r, 401)["code"], "invalid_token");

    let stats = s.stats().await;
    assert_eq!(stats["tokens"]["issued"], 3, "{stats}");
    assert_eq!(stats["tokens"]["rejected"], 4, "{stats}");
    assert_eq!(stats["auth_failures"], 6, "{stats}");
    s.stop().await;

    // A real lifetime.
    let s = start(CommercetoolsConfig {
        token_lifetime_seconds: 1,
        clients: vec![ApiClient {
            client_id: "sluice-sandbox".into(),
            client_secret: "sluice-sandbox-secret".into(),
            scopes: vec!["view_orders:{projectKey}".into()],
        }],
        ..config()
    })
    .await;
    let token = s.token(None).await;
    assert_eq!(
        s.get_with(&token, "/sluice-sandbox/orders").await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let r = s.get_with(&token, "/sluice-sandbox/orders").await;
    assert_eq!(error_of(&r, 401)["code"], "invalid_token");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_limits_and_offset_cap() {
    let s = start(config()).await;
    let t = s.token(None).await;
    let truth = ground_truth();
    // Default order: createdAt ascending.
    let mut want = bodies(&truth, Resource::Orders);
    want.sort_by_key(|b| ms(b, "createdAt"));
    let want_ids: Vec<String> = want
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_owned())
        .collect();

    let v = s.get_with(&t, "/sluice-sandbox/orders").await.json();
    assert_eq!(
        (v["limit"].clone(), v["offset"].clone()),
        (json!(20), json!(0))
    );
    assert_eq!(v["count"], 20);
    assert_eq!(v["total"], 1_200);
    assert_eq!(ids_of(&v), want_ids[..20]);
    assert_eq!(v["results"][0], want[0], "bodies are the ground truth");

    let v = s
        .get_with(
            &t,
            "/sluice-sandbox/orders?limit=500&offset=1000&withTotal=false",
        )
        .await
        .json();
    assert_eq!(v["count"], 200);
    assert!(v.get("total").is_none(), "{}", v["total"]);
    assert_eq!(ids_of(&v), want_ids[1000..]);

    let r = s.get_with(&t, "/sluice-sandbox/orders?limit=501").await;
    let e = error_of(&r, 400);
    assert_eq!(e["code"], "InvalidInput");
    assert!(
        e["message"].as_str().expect("message").contains("500"),
        "{e}"
    );
    assert_eq!(
        s.get_with(&t, "/sluice-sandbox/orders?offset=10000")
            .await
            .json()["count"],
        0
    );
    let r = s.get_with(&t, "/sluice-sandbox/orders?offset=10001").await;
    let e = error_of(&r, 400);
    assert_eq!(e["code"], "InvalidInput");
    assert!(
        e["message"].as_str().expect("message").contains("10000"),
        "{e}"
    );
    let r = s.get_with(&t, "/sluice-sandbox/orders?limit=-1").await;
    assert_eq!(error_of(&r, 400)["code"], "InvalidInput");
    let r = s
        .get_with(&t, "/sluice-sandbox/orders?withTotal=maybe")
        .await;
    assert_eq!(error_of(&r, 400)["code"], "InvalidInput");

    // By id, unknown id, unknown endpoint.
    let id = &want_ids[5];
    let r = s
        .get_with(&t, &format!("/sluice-sandbox/orders/{id}"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), want[5]);
    let r = s
        .get_with(
            &t,
            "/sluice-sandbox/orders/00000000-0000-4000-8000-000000000000",
        )
        .await;
    let e = error_of(&r, 404);
    assert_eq!(e["code"], "ResourceNotFound");
    let r = s.get_with(&t, "/sluice-sandbox/payments").await;
    assert_eq!(error_of(&r, 404)["code"], "ResourceNotFound");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_iteration_past_the_offset_cap() {
    let spec = CommercetoolsDataSpec {
        orders: 12_345,
        ..spec()
    };
    let s = start(CommercetoolsConfig {
        data: spec.clone(),
        ..CommercetoolsConfig::default()
    })
    .await;
    let t = s.token(None).await;
    let want = commercetools::ids(&spec, Resource::Orders);
    assert_eq!(want.len(), 12_345);
    let mut got: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut pages = 0;
    loop {
        let mut params = vec![("sort", "id asc"), ("withTotal", "false"), ("limit", "500")];
        let cond = got.last().map(|l| format!("id > \"{l}\""));
        if let Some(c) = &cond {
            params.push(("where", c));
        }
        let v = s
            .get_with(&t, &q("/sluice-sandbox/orders", &params))
            .await
            .json();
        assert!(v.get("total").is_none());
        pages += 1;
        let ids = ids_of(&v);
        let n = ids.len();
        got.extend(ids);
        if n < 500 {
            break;
        }
    }
    eprintln!(
        "{pages} keyset pages of 500 orders in {:?}",
        started.elapsed()
    );
    assert_eq!(pages, 25);
    assert_eq!(got.len(), want.len());
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>().len(),
        got.len(),
        "no id twice"
    );
    assert_eq!(got, want, "every id once, in id order");
    // The total with a `where` is capped like commercetools' approximate totals.
    let v = s
        .get_with(
            &t,
            &q(
                "/sluice-sandbox/orders",
                &[("where", "id > \"0\""), ("limit", "1")],
            ),
        )
        .await
        .json();
    assert_eq!(v["total"], 10_000);
    let v = s
        .get_with(&t, "/sluice-sandbox/orders?limit=1")
        .await
        .json();
    assert_eq!(v["total"], 12_345);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_predicates() {
    let s = start(config()).await;
    let t = s.token(None).await;
    let truth = ground_truth();
    let customers = bodies(&truth, Resource::Customers);
    let ids: Vec<String> = truth.ids(Resource::Customers);
    let pivot = ids[100].clone();
    let mut times: Vec<i64> = customers.iter().map(|c| ms(c, "lastModifiedAt")).collect();
    times.sort_unstable();
    let t_mid = times[150];
    let at = |m: i64| {
        Utc.timestamp_millis_opt(m)
            .single()
            .expect("a time")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let mid = at(t_mid);
    let created_mid = ms(&customers[42], "createdAt");
    let filter = |f: &dyn Fn(&Value) -> bool| -> Vec<String> {
        customers
            .iter()
            .filter(|c| f(c))
            .map(|c| c["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let cases: Vec<Case> = vec![
        (
            vec![("where", format!("id > \"{pivot}\""))],
            ids[101..].to_vec(),
        ),
        (
            vec![("where", format!("id >= \"{pivot}\""))],
            ids[100..].to_vec(),
        ),
        (
            vec![("where", format!("id < \"{pivot}\""))],
            ids[..100].to_vec(),
        ),
        (
            vec![(
                "where",
                format!("id in (\"{}\", \"{}\", \"nope\")", ids[3], ids[250]),
            )],
            vec![ids[3].clone(), ids[250].clone()],
        ),
        (
            vec![
                ("where", "lastModifiedAt >= :since".to_owned()),
                ("var.since", mid.clone()),
            ],
            filter(&|c| ms(c, "lastModifiedAt") >= t_mid),
        ),
        (
            vec![
                ("where", "lastModifiedAt > :since".to_owned()),
                ("var.since", mid.clone()),
            ],
            filter(&|c| ms(c, "lastModifiedAt") > t_mid),
        ),
        (
            vec![
                ("where", "lastModifiedAt < :until".to_owned()),
                ("var.until", mid.clone()),
            ],
            filter(&|c| ms(c, "lastModifiedAt") < t_mid),
        ),
        (
            vec![("where", format!("createdAt >= \"{}\"", at(created_mid)))],
            filter(&|c| ms(c, "createdAt") >= created_mid),
        ),
        (
            vec![
                ("where", "createdAt < :c and id > :p".to_owned()),
                ("var.c", at(created_mid)),
                ("var.p", pivot.clone()),
            ],
            filter(&|c| {
                ms(c, "createdAt") < created_mid && c["id"].as_str().expect("id") > pivot.as_str()
            }),
        ),
        (
            // Repeated `where`s are ANDed.
            vec![
                ("where", format!("id > \"{pivot}\"")),
                ("where", "lastModifiedAt >= :since".to_owned()),
                ("var.since", mid.clone()),
            ],
            filter(&|c| {
                ms(c, "lastModifiedAt") >= t_mid && c["id"].as_str().expect("id") > pivot.as_str()
            }),
        ),
    ];
    for (params, want) in cases {
        assert!(
            !want.is_empty() && want.len() < 300,
            "a discriminating case: {params:?}"
        );
        let mut p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        p.extend([("sort", "id asc"), ("limit", "500")]);
        let v = s
            .get_with(&t, &q("/sluice-sandbox/customers", &p))
            .await
            .json();
        assert_eq!(ids_of(&v), want, "{params:?}");
        assert_eq!(v["total"], want.len(), "{params:?}");
    }

    // Published products.
    let products = bodies(&truth, Resource::Products);
    let published: Vec<String> = products
        .iter()
        .filter(|p| p["masterData"]["published"] == true)
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(published.len() < products.len() && !published.is_empty());
    let v = s
        .get_with(
            &t,
            &q(
                "/sluice-sandbox/products",
                &[
                    ("where", "masterData(published = true)"),
                    ("sort", "id asc"),
                    ("limit", "500"),
                ],
            ),
        )
        .await
        .json();
    assert_eq!(ids_of(&v), published);
    let v = s
        .get_with(
            &t,
            &q(
                "/sluice-sandbox/products",
                &[("where", "masterData(published = false)"), ("limit", "500")],
            ),
        )
        .await
        .json();
    assert_eq!(v["count"], products.len() - published.len());
    let v = s
        .get_with(
            &t,
            &q(
                "/sluice-sandbox/product-projections",
                &[
                    ("where", "published = true"),
                    ("sort", "id asc"),
                    ("limit", "500"),
                ],
            ),
        )
        .await
        .json();
    assert_eq!(ids_of(&v), published);
    // Each resource has its own form of the test.
    for (path, w) in [
        ("/sluice-sandbox/products", "published = true"),
        (
            "/sluice-sandbox/product-projections",
            "masterData(published = true)",
        ),
    ] {
        let r = s.get_with(&t, &q(path, &[("where", w)])).await;
        assert_eq!(error_of(&r, 400)["code"], "InvalidInput", "{path} {w}");
    }

    // Unsupported predicates are errors naming them.
    for (w, needle) in [
        ("email = \"a@example.com\"", "email"),
        ("id = \"a\" or id = \"b\"", "or"),
        ("lastModifiedAt > :missing", "missing"),
        ("id contains \"a\"", "contains"),
        ("masterData(published = true)", "published"),
    ] {
        let r = s
            .get_with(&t, &q("/sluice-sandbox/customers", &[("where", w)]))
            .await;
        let e = error_of(&r, 400);
        assert_eq!(e["code"], "InvalidInput", "{w}");
        let m = e["message"].as_str().expect("message");
        assert!(m.contains(needle), "{w}: {m}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_orders() {
    let s = start(config()).await;
    let t = s.token(None).await;
    let truth = ground_truth();
    let all = bodies(&truth, Resource::Categories);
    let sorted = |key: &dyn Fn(&Value) -> (i64, String), desc: bool| -> Vec<String> {
        let mut v: Vec<(i64, String)> = all.iter().map(key).collect();
        v.sort();
        if desc {
            v.reverse();
        }
        v.into_iter().map(|(_, id)| id).collect()
    };
    let id = |c: &Value| c["id"].as_str().expect("id").to_owned();
    for (sort, want) in [
        ("id asc", sorted(&|c| (0, id(c)), false)),
        ("id desc", sorted(&|c| (0, id(c)), true)),
        (
            "createdAt desc",
            sorted(&|c| (ms(c, "createdAt"), id(c)), true),
        ),
        (
            "createdAt asc",
            sorted(&|c| (ms(c, "createdAt"), id(c)), false),
        ),
        (
            "lastModifiedAt asc",
            sorted(&|c| (ms(c, "lastModifiedAt"), id(c)), false),
        ),
    ] {
        let v = s
            .get_with(
                &t,
                &q(
                    "/sluice-sandbox/categories",
                    &[("sort", sort), ("limit", "500")],
                ),
            )
            .await
            .json();
        assert_eq!(ids_of(&v), want, "{sort}");
    }
    // A second sort breaks ties of the first.
    s.admin(
        "/commercetools/_admin/touch",
        json!({"resource": "categories", "count": 6, "at": "2030-01-01T00:00:00Z"}),
    )
    .await;
    let v = s
        .get_with(
            &t,
            &q(
                "/sluice-sandbox/categories",
                &[
                    ("sort", "lastModifiedAt desc"),
                    ("sort", "id desc"),
                    ("limit", "6"),
                ],
            ),
        )
        .await
        .json();
    let got = ids_of(&v);
    let mut want = got.clone();
    want.sort();
    want.reverse();
    assert_eq!(got, want);
    assert!(
        v["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|c| c["lastModifiedAt"] == "2030-01-01T00:00:00.000Z")
    );
    for bad in ["name.en asc", "id", "id sideways"] {
        let r = s
            .get_with(&t, &q("/sluice-sandbox/categories", &[("sort", bad)]))
            .await;
        assert_eq!(error_of(&r, 400)["code"], "InvalidInput", "{bad}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expand_references() {
    let s = start(config()).await;
    let t = s.token(None).await;
    let truth = ground_truth();
    let v = s
        .get_with(
            &t,
            &q(
                "/sluice-sandbox/categories",
                &[("expand", "ancestors[*]"), ("limit", "500")],
            ),
        )
        .await
        .json();
    let mut deepest = 0;
    for c in v["results"].as_array().expect("results") {
        let anc = c["ancestors"].as_array().expect("ancestors");
        deepest = deepest.max(anc.len());
        for a in anc {
            let id = a["id"].as_str().expect("id");
            assert_eq!(a["typeId"], "category");
            assert_eq!(Some(a["obj"].clone()), truth.get(Resource::Categories, id));
        }
        assert!(c["parent"].get("obj").is_none(), "only the asked path");
    }
    assert!(deepest >= 2, "a tree several levels deep: {deepest}");

    let pid = &truth.ids(Resource::ProductProjections)[0];
    let r = s
        .get_with(
            &t,
            &format!(
                "/sluice-sandbox/product-projections/{pid}?expand=categories%5B*%5D&expand=categories%5B*%5D.ancestors%5B*%5D"
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    let cats = p["categories"].as_array().expect("categories");
    assert!(!cats.is_empty());
    for c in cats {
        let id = c["id"].as_str().expect("id");
        let obj = &c["obj"];
        let mut plain = obj.clone();
        for a in plain["ancestors"].as_array_mut().expect("ancestors") {
            let a = a.as_object_mut().expect("a reference");
            assert!(a.remove("obj").is_some(), "nested expansion");
        }
        assert_eq!(Some(plain), truth.get(Resource::Categories, id));
    }

    let product = bodies(&truth, Resource::Products)
        .into_iter()
        .find(|p| {
            p["masterData"]["current"]["categories"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
        })
        .expect("a product in some category");
    let id = product["id"].as_str().expect("id");
    let v = s
        .get_with(
            &t,
            &q(
                &format!("/sluice-sandbox/products/{id}"),
                &[("expand", "masterData.current.categories[*]")],
            ),
        )
        .await
        .json();
    let current = v["masterData"]["current"]["categories"]
        .as_array()
        .expect("categories");
    assert!(!current.is_empty());
    for c in current {
        let cid = c["id"].as_str().expect("id");
        assert_eq!(Some(c["obj"].clone()), truth.get(Resource::Categories, cid));
    }
    let staged = v["masterData"]["staged"]["categories"]
        .as_array()
        .expect("categories");
    assert!(
        staged.iter().all(|c| c.get("obj").is_none()),
        "only the asked path"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_projections_current_staged_unpublished() {
    let s = start(config()).await;
    let t = s.token(None).await;
    let truth = ground_truth();
    let products = bodies(&truth, Resource::Products);
    let unpublished = products
        .iter()
        .find(|p| p["masterData"]["published"] == false)
        .expect("some unpublished product");
    let changed = products
        .iter()
        .find(|p| {
            p["masterData"]["published"] == true && p["masterData"]["hasStagedChanges"] == true
        })
        .expect("some product with staged changes");
    let uid = unpublished["id"].as_str().expect("id");
    let cid = changed["id"].as_str().expect("id");

    let r = s
        .get_with(&t, &format!("/sluice-sandbox/product-projections/{uid}"))
        .await;
    assert_eq!(error_of(&r, 404)["code"], "ResourceNotFound");
    let r = s
        .get_with(
            &t,
            &format!("/sluice-sandbox/product-projections/{uid}?staged=true"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["published"], false);

    let current = s
        .get_with(&t, &format!("/sluice-sandbox/product-projections/{cid}"))
        .await
        .json();
    let staged = s
        .get_with(
            &t,
            &format!("/sluice-sandbox/product-projections/{cid}?staged=true"),
        )
        .await
        .json();
    assert_eq!(current["name"], changed["masterData"]["current"]["name"]);
    assert_eq!(staged["name"], changed["masterData"]["staged"]["name"]);
    assert_ne!(current["name"], staged["name"]);
    assert_eq!(current["hasStagedChanges"], true);
    assert_eq!(
        current["masterVariant"],
        changed["masterData"]["current"]["masterVariant"]
    );

    let published: BTreeSet<String> = products
        .iter()
        .filter(|p| p["masterData"]["published"] == true)
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect();
    let list = s
        .get_with(&t, "/sluice-sandbox/product-projections?limit=500")
        .await
        .json();
    assert_eq!(list["total"], published.len());
    assert_eq!(
        ids_of(&list).into_iter().collect::<BTreeSet<_>>(),
        published
    );
    let list = s
        .get_with(
            &t,
            "/sluice-sandbox/product-projections?limit=500&staged=true",
        )
        .await
        .json();
    assert_eq!(list["total"], products.len());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_objects() {
    let s = start(config()).await;
    let t = s.token(None).await;
    let base = "/sluice-sandbox/custom-objects";
    let r = s
        .send(
            &t,
            "POST",
            base,
            &json!({"container": "sluice", "key": "cursor", "value": {"a": 1}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    assert_eq!(created["version"], 1);
    assert_eq!(created["value"], json!({"a": 1}));
    let id = created["id"].clone();

    let r = s
        .send(
            &t,
            "POST",
            base,
            &json!({"container": "sluice", "key": "cursor", "value": "two", "version": 1}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let replaced = r.json();
    assert_eq!(
        (replaced["version"].clone(), replaced["id"].clone()),
        (json!(2), id)
    );
    assert_eq!(replaced["value"], "two");

    let r = s
        .send(
            &t,
            "POST",
            base,
            &json!({"container": "sluice", "key": "cursor", "value": 3, "version": 1}),
        )
        .await;
    let e = error_of(&r, 409);
    assert_eq!(e["code"], "ConcurrentModification");
    assert_eq!(
        r.json()["message"],
        "Version mismatch. Concurrent modification."
    );
    assert_eq!(e["currentVersion"], 2);

    let r = s.get_with(&t, &format!("{base}/sluice/cursor")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), replaced);
    let list = s.get_with(&t, &format!("{base}/sluice")).await.json();
    assert_eq!(list["count"], 1);

    let r = s
        .send(
            &t,
            "DELETE",
            &format!("{base}/sluice/cursor?version=1"),
            &json!(null),
        )
        .await;
    assert_eq!(error_of(&r, 409)["code"], "ConcurrentModification");
    let r = s
        .send(
            &t,
            "DELETE",
            &format!("{base}/sluice/cursor?version=2"),
            &json!(null),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["value"], "two");
    let r = s.get_with(&t, &format!("{base}/sluice/cursor")).await;
    assert_eq!(error_of(&r, 404)["code"], "ResourceNotFound");
    let r = s
        .send(&t, "DELETE", &format!("{base}/sluice/cursor"), &json!(null))
        .await;
    assert_eq!(error_of(&r, 404)["code"], "ResourceNotFound");

    for bad in [
        json!({"container": "has space", "key": "k", "value": 1}),
        json!({"container": "c", "key": "k/../x", "value": 1}),
    ] {
        let r = s.send(&t, "POST", base, &bad).await;
        assert_eq!(error_of(&r, 400)["code"], "InvalidInput", "{bad}");
    }
    let r = s.send(&t, "POST", base, &json!({"container": "c"})).await;
    assert_eq!(error_of(&r, 400)["code"], "InvalidJsonInput");
    s.stop().await;
}

/// The examples folder, when this machine has it (override: `SLUICE_COMMERCETOOLS_EXAMPLES`).
fn examples_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SLUICE_COMMERCETOOLS_EXAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/specs/commercetools/examples"));
    dir.is_dir().then_some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_project_served_verbatim() {
    let Some(dir) = examples_dir() else {
        eprintln!("SKIPPED: no commercetools examples folder (set SLUICE_COMMERCETOOLS_EXAMPLES)");
        return;
    };
    let s = start(CommercetoolsConfig {
        examples_dir: Some(dir.clone()),
        ..config()
    })
    .await;
    let t = s.token(None).await;
    let file = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).expect("the example file"))
            .expect("JSON")
    };
    let by_id = |v: &Value| -> Vec<Value> {
        let mut r = v["results"].as_array().expect("results").clone();
        r.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        r
    };
    for r in [
        "customers",
        "orders",
        "categories",
        "products",
        "product-projections",
        "custom-objects",
    ] {
        let want = file(&format!("{r}.example.json"));
        let got = s
            .get_with(&t, &format!("/sluice-examples/{r}?limit=500"))
            .await;
        assert_eq!(got.status, 200, "{r}: {}", got.text());
        let got = got.json();
        assert_eq!(by_id(&got), by_id(&want), "{r}");
        assert_eq!(
            got["total"],
            want["results"].as_array().expect("results").len()
        );
    }
    for (r, single) in [
        ("customers", "customer"),
        ("orders", "order"),
        ("categories", "category"),
        ("products", "product"),
        ("product-projections", "product-projection"),
    ] {
        let want = file(&format!("{single}.example.json"));
        let id = want["id"].as_str().expect("id");
        let got = s.get_with(&t, &format!("/sluice-examples/{r}/{id}")).await;
        assert_eq!(got.status, 200, "{r}/{id}");
        assert_eq!(got.json(), want, "{single}");
    }
    let want = file("custom-object.example.json");
    let got = s
        .get_with(
            &t,
            "/sluice-examples/custom-objects/test-container/test-key",
        )
        .await;
    assert_eq!(got.json(), want);
    // Exact values of real JSON survive (floats, nested values).
    let obj = s
        .get_with(
            &t,
            "/sluice-examples/custom-objects/test-container/ac390383-370f-43f8-a534-db1604cb96a8",
        )
        .await
        .json();
    assert_eq!(
        obj["value"]["geoLocation"]["coordinates"][0].as_f64(),
        Some(13.412119019109015)
    );
    // Queries work on the examples too.
    let v = s
        .get_with(
            &t,
            &q(
                "/sluice-examples/product-projections",
                &[("where", "lastModifiedAt > \"2015-01-01T00:00:00.000Z\"")],
            ),
        )
        .await
        .json();
    assert_eq!(ids_of(&v), vec!["e779ec1a-0a98-4135-8344-d51bdafd4fe6"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touched_resources_show_up_incrementally() {
    let s = start(config()).await;
    let t = s.token(None).await;
    let mut truth = ground_truth();
    let at: DateTime<Utc> = Utc
        .with_ymd_and_hms(2031, 5, 6, 7, 8, 9)
        .single()
        .expect("a time");
    let before = truth.get(Resource::Orders, &truth.ids(Resource::Orders)[0]);
    let want = truth.touch(Resource::Orders, 25, at);
    let got = s
        .admin(
            "/commercetools/_admin/touch",
            json!({"resource": "orders", "count": 25, "at": at}),
        )
        .await;
    assert_eq!(got["ids"], json!(want));
    assert_eq!(got["resources"].as_array().expect("resources").len(), 25);
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(truth.modified_since(Resource::Orders, at), sorted);
    let v = s
        .get_with(
            &t,
            &q(
                "/sluice-sandbox/orders",
                &[
                    ("where", "lastModifiedAt >= :t"),
                    ("var.t", &at.to_rfc3339()),
                    ("sort", "id asc"),
                    ("limit", "100"),
                ],
            ),
        )
        .await
        .json();
    assert_eq!(ids_of(&v), sorted);
    for body in v["results"].as_array().expect("results") {
        let id = body["id"].as_str().expect("id");
        assert_eq!(Some(body.clone()), truth.get(Resource::Orders, id));
        assert_eq!(body["lastModifiedAt"], "2031-05-06T07:08:09.000Z");
    }
    // A second touch picks others (or the same again) and bumps versions further.
    let first = &want[0];
    let old = truth.get(Resource::Orders, first).expect("exists");
    let want2 = truth.touch(Resource::Orders, 3, at);
    let got2 = s
        .admin(
            "/commercetools/_admin/touch",
            json!({"resource": "orders", "count": 3, "at": at}),
        )
        .await;
    assert_eq!(got2["ids"], json!(want2));
    let r = s
        .get_with(&t, &format!("/sluice-sandbox/orders/{first}"))
        .await
        .json();
    assert_eq!(Some(r.clone()), truth.get(Resource::Orders, first));
    assert!(r["version"].as_u64() >= old["version"].as_u64());
    // Untouched orders are unchanged.
    let zero = &truth.ids(Resource::Orders)[0];
    if !want.contains(zero) && !want2.contains(zero) {
        assert_eq!(truth.get(Resource::Orders, zero), before);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_and_counters() {
    let s = start(config()).await;
    let a = s.addr;
    let t = s.token(None).await;
    let set = |f: FaultConfig| {
        let s = &s;
        async move { s.admin("/commercetools/_admin/faults", json!(f)).await }
    };
    let auth = format!("Bearer {t}");
    let h = [("Authorization", auth.as_str())];

    set(FaultConfig {
        error_502_share: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let r = s.get_with(&t, "/sluice-sandbox/orders").await;
    assert_eq!(error_of(&r, 502)["code"], "BadGateway");
    // The token endpoint is not behind the fault layer.
    let _ = s.token(None).await;

    set(FaultConfig {
        error_503_share: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let r = s.get_with(&t, "/sluice-sandbox/customers").await;
    assert_eq!(error_of(&r, 503)["code"], "OverCapacity");

    set(FaultConfig {
        drop_share: 1.0,
        ..FaultConfig::default()
    })
    .await;
    assert!(
        raw(a, "GET", "/sluice-sandbox/orders", &h, "")
            .await
            .is_none()
    );

    set(FaultConfig {
        truncate_share: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let r = raw(a, "GET", "/sluice-sandbox/orders", &h, "")
        .await
        .expect("a status line");
    assert_eq!(r.status, 200);
    let announced: usize = r.headers["content-length"].parse().expect("a length");
    assert!(r.body.len() < announced, "{} of {announced}", r.body.len());
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    set(FaultConfig {
        throttle_seconds: 2.0,
        ..FaultConfig::default()
    })
    .await;
    let r = s.get_with(&t, "/sluice-sandbox/orders").await;
    assert_eq!(r.status, 429);
    assert!(["1", "2"].contains(&r.headers["retry-after"].as_str()));

    set(FaultConfig {
        latency_ms: 250,
        ..FaultConfig::default()
    })
    .await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            raw(
                a,
                "GET",
                "/sluice-sandbox/orders?limit=1",
                &[("Authorization", &auth)],
                "",
            )
            .await
            .map(|r| r.status)
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("no panic"), Some(200));
    }
    assert!(started.elapsed() >= Duration::from_millis(250));

    // Seeded shares.
    set(FaultConfig {
        seed: 5,
        error_503_share: 0.3,
        ..FaultConfig::default()
    })
    .await;
    let mut bad = 0u64;
    for _ in 0..100 {
        if s.get_with(&t, "/sluice-sandbox/categories?limit=1")
            .await
            .status
            == 503
        {
            bad += 1;
        }
    }
    assert!((15..=45).contains(&bad), "{bad}");
    set(FaultConfig::default()).await;

    let stats = s.stats().await;
    let f = &stats["faults"];
    assert_eq!(f["error_502"], 1, "{stats}");
    assert_eq!(f["error_503"], 1 + bad, "{stats}");
    assert_eq!(f["dropped"], 1, "{stats}");
    assert_eq!(f["truncated"], 1, "{stats}");
    assert_eq!(f["throttled"], 1, "{stats}");
    assert_eq!(f["delayed"], 6, "{stats}");
    assert_eq!(f["total"], 5 + bad, "{stats}");
    assert_eq!(
        f["requests"], 110,
        "throttled requests are not decided: {stats}"
    );
    assert!(
        f["peak_concurrency"].as_u64().expect("peak") >= 2,
        "{stats}"
    );
    assert_eq!(stats["peak_concurrency"], f["peak_concurrency"]);
    assert_eq!(stats["tokens"]["issued"], 2);
    assert_eq!(
        stats["requests"]["by_resource"]["orders"]["502"], 1,
        "{stats}"
    );
    assert_eq!(
        stats["requests"]["by_resource"]["categories"]["503"], bad,
        "{stats}"
    );
    assert_eq!(stats["requests"]["total"], 111, "{stats}");
    let reset = s
        .admin("/commercetools/_admin/stats/reset", json!({}))
        .await;
    assert_eq!(reset["faults"]["total"], 0);
    assert_eq!(reset["requests"]["total"], 0);
    s.stop().await;
}
