//! The Klaviyo emulation over real HTTP on port 0.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone as _, Utc};
use serde_json::{Value, json};
use sluice_sandbox::klaviyo::{self, FaultConfig, KlaviyoConfig, KlaviyoDataSpec};
use sluice_sandbox::{SandboxConfig, run_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const KEY: &str = "pk_sandbox";

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
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).unwrap();
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

async fn api(addr: SocketAddr, target: &str) -> Reply {
    api_key(addr, target, KEY).await
}

async fn api_key(addr: SocketAddr, target: &str, key: &str) -> Reply {
    let auth = format!("Klaviyo-API-Key {key}");
    raw(
        addr,
        "GET",
        target,
        &[("Authorization", &auth), ("revision", "2026-07-15")],
        "",
    )
    .await
    .unwrap()
}

async fn admin(addr: SocketAddr, path: &str, body: Value) -> Value {
    let r = raw(addr, "POST", path, &[], &body.to_string())
        .await
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

fn query(path: &str, params: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    format!("{path}?{}", s.finish())
}

/// Path and query of an absolute `links.next`.
fn target_of(link: &str) -> String {
    let rest = link.strip_prefix("http://").unwrap();
    rest[rest.find('/').unwrap()..].to_owned()
}

/// Every `data` item of a collection, following `links.next`.
async fn all_pages(addr: SocketAddr, first: String) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut target = first;
    let mut pages = 0;
    loop {
        let r = api(addr, &target).await;
        assert_eq!(
            r.status,
            200,
            "{target}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        pages += 1;
        out.extend(v["data"].as_array().unwrap().iter().cloned());
        match v["links"]["next"].as_str() {
            Some(next) => target = target_of(next),
            None => return (out, pages),
        }
    }
}

fn ts(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn spec() -> KlaviyoDataSpec {
    KlaviyoDataSpec {
        seed: 42,
        profiles: 3_000,
        metrics: 4,
        lists: 2,
        segments: 2,
        start: ts(2024, 3, 1, 0, 0),
        end: ts(2024, 3, 11, 0, 0),
        events_per_metric: 20_000,
        future_share: 0.0,
    }
}

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _cache: tempfile::TempDir,
}

async fn start(config: KlaviyoConfig) -> Server {
    let cache = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_with(
        SandboxConfig {
            cache_dir: cache.path().join("cache"),
        },
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
        self.task.await.unwrap().unwrap();
    }
}

fn unlimited() -> KlaviyoConfig {
    KlaviyoConfig {
        data: spec(),
        rate_limit_scale: None,
        ..KlaviyoConfig::default()
    }
}

fn error_of(r: &Reply) -> Value {
    r.json()["errors"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_revision_and_parameter_errors() {
    let s = start(unlimited()).await;
    let a = s.addr;
    let metric = klaviyo::metrics(&spec())[0].0.clone();

    let none = raw(a, "GET", "/api/events", &[("revision", "2026-07-15")], "")
        .await
        .unwrap();
    assert_eq!(none.status, 401);
    assert_eq!(error_of(&none)["code"], "not_authenticated");
    assert_eq!(error_of(&none)["status"], 401);
    assert_eq!(api_key(a, "/api/events", "pk_wrong").await.status, 401);

    let auth = format!("Klaviyo-API-Key {KEY}");
    let norev = raw(a, "GET", "/api/events", &[("Authorization", &auth)], "")
        .await
        .unwrap();
    assert_eq!(norev.status, 400);
    assert!(
        error_of(&norev)["detail"]
            .as_str()
            .unwrap()
            .contains("revision")
    );
    let badrev = raw(
        a,
        "GET",
        "/api/events",
        &[("Authorization", &auth), ("revision", "2026-13-45")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(badrev.status, 400);
    let suffixed = raw(
        a,
        "GET",
        "/api/metrics",
        &[("Authorization", &auth), ("revision", "2026-07-15.pre")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(suffixed.status, 200);

    for (path, filter, named) in [
        ("/api/events", "equals(foo,\"x\")".to_owned(), "'foo'"),
        (
            "/api/events",
            format!("less-than(metric_id,\"{metric}\")"),
            "less-than",
        ),
        (
            "/api/profiles",
            "greater-or-equal(updated,2024-01-01T00:00:00Z)".to_owned(),
            "greater-or-equal",
        ),
        (
            "/api/profiles",
            "equals(datetime,1)".to_owned(),
            "'datetime'",
        ),
        (
            "/api/lists",
            "equals(is_active,true)".to_owned(),
            "'is_active'",
        ),
        ("/api/events", "equals(metric_id".to_owned(), "expected"),
    ] {
        let r = api(a, &query(path, &[("filter", &filter)])).await;
        assert_eq!(r.status, 400, "{path} {filter}");
        let e = error_of(&r);
        assert_eq!(e["code"], "invalid");
        assert_eq!(e["source"]["parameter"], "filter");
        assert!(
            e["detail"].as_str().unwrap().contains(named),
            "{path} {filter}: {e}"
        );
    }
    // Allowed by the spec, not modelled: still a 400 that says so.
    let r = api(
        a,
        &query("/api/profiles", &[("filter", "equals(_kx,\"abc\")")]),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        error_of(&r)["detail"]
            .as_str()
            .unwrap()
            .contains("not emulated")
    );

    for (path, size, ok) in [
        ("/api/events", "0", false),
        ("/api/events", "1001", false),
        ("/api/events", "1000", true),
        ("/api/events", "x", false),
        ("/api/profiles", "100", true),
        ("/api/profiles", "101", false),
        ("/api/lists", "10", true),
        ("/api/lists", "11", false),
        ("/api/segments", "11", false),
        ("/api/metrics", "5", false),
    ] {
        let r = api(a, &query(path, &[("page[size]", size)])).await;
        assert_eq!(r.status == 200, ok, "{path} page[size]={size}");
        if !ok {
            assert_eq!(error_of(&r)["source"]["parameter"], "page[size]");
        }
    }
    let r = api(a, &query("/api/events", &[("sort", "uuid")])).await;
    assert_eq!(r.status, 400);
    assert_eq!(error_of(&r)["source"]["parameter"], "sort");
    let r = api(a, &query("/api/events", &[("page[cursor]", "zz")])).await;
    assert_eq!(r.status, 400);
    assert_eq!(api(a, "/api/metrics/nope00").await.status, 404);
    assert_eq!(api(a, "/api/forms").await.status, 404);
    let one = api(a, &format!("/api/metrics/{metric}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["data"]["attributes"]["name"], "Placed Order");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_paging_matches_ground_truth() {
    let s = start(unlimited()).await;
    let a = s.addr;
    let spec = spec();
    let metrics = klaviyo::metrics(&spec);
    let (from, to) = (ts(2024, 3, 2, 12, 0), ts(2024, 3, 7, 3, 0));
    for (m, sort, size) in [(0, "datetime", "1000"), (1, "-datetime", "777")] {
        let id = &metrics[m].0;
        let filter = format!(
            "and(equals(metric_id,\"{id}\"),greater-or-equal(datetime,{}),less-than(datetime,{}))",
            from.to_rfc3339(),
            to.to_rfc3339()
        );
        let (items, pages) = all_pages(
            a,
            query(
                "/api/events",
                &[("filter", &filter), ("sort", sort), ("page[size]", size)],
            ),
        )
        .await;
        let expected = klaviyo::event_ids(&spec, Some(id), from, to);
        assert!(expected.len() > 5_000, "{}", expected.len());
        assert!(pages >= expected.len() / 1000, "{pages}");
        let stamps: Vec<i64> = items
            .iter()
            .map(|e| e["attributes"]["timestamp"].as_i64().unwrap())
            .collect();
        if sort.starts_with('-') {
            assert!(stamps.windows(2).all(|w| w[0] >= w[1]));
        } else {
            assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
        }
        assert!(
            stamps
                .iter()
                .all(|&t| t >= from.timestamp() && t < to.timestamp())
        );
        for e in &items {
            let dt = DateTime::parse_from_rfc3339(e["attributes"]["datetime"].as_str().unwrap())
                .unwrap();
            assert_eq!(
                dt.timestamp(),
                e["attributes"]["timestamp"].as_i64().unwrap()
            );
            assert_eq!(e["relationships"]["metric"]["data"]["id"], id.as_str());
        }
        let mut got: Vec<String> = items
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        got.sort();
        assert_eq!(got, expected, "metric {m}");
    }

    // Every metric at once, with timestamp bounds, includes and sparse fields.
    let (from, to) = (ts(2024, 3, 3, 0, 0), ts(2024, 3, 3, 6, 0));
    let filter = format!(
        "greater-or-equal(timestamp,{}),less-than(timestamp,{})",
        from.timestamp(),
        to.timestamp()
    );
    let (items, _) = all_pages(
        a,
        query("/api/events", &[("filter", &filter), ("page[size]", "100")]),
    )
    .await;
    let mut got: Vec<String> = items
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    assert_eq!(got, klaviyo::event_ids(&spec, None, from, to));
    let r = api(
        a,
        &query(
            "/api/events",
            &[
                ("filter", &filter),
                ("page[size]", "5"),
                ("include", "profile,metric"),
                ("fields[event]", "datetime,event_properties"),
            ],
        ),
    )
    .await;
    let v = r.json();
    let attrs = v["data"][0]["attributes"].as_object().unwrap();
    assert_eq!(attrs.len(), 2, "{attrs:?}");
    let included = v["included"].as_array().unwrap();
    assert!(included.iter().any(|i| i["type"] == "metric"));
    assert!(included.iter().any(|i| i["type"] == "profile"));
    let order = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["relationships"]["metric"]["data"]["id"] == metrics[0].0.as_str());
    if let Some(order) = order {
        assert!(order["attributes"]["event_properties"]["$value"].is_number());
    }
    let next = v["links"]["next"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("http://{a}/api/events/?")),
        "{next}"
    );
    assert!(next.contains("page%5Bcursor%5D="), "{next}");

    // A profile's events.
    let sample = &items[0];
    let pid = sample["relationships"]["profile"]["data"]["id"]
        .as_str()
        .unwrap();
    let (mine, _) = all_pages(
        a,
        query(
            "/api/events",
            &[("filter", &format!("equals(profile_id,\"{pid}\")"))],
        ),
    )
    .await;
    assert!(mine.iter().any(|e| e["id"] == sample["id"]));
    assert!(
        mine.iter()
            .all(|e| e["relationships"]["profile"]["data"]["id"] == pid)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uniform_and_bursty_shapes() {
    let s = start(unlimited()).await;
    let a = s.addr;
    let metrics = klaviyo::metrics(&spec());
    for day in 2..5u32 {
        for (m, bursty) in [(0usize, false), (1, true)] {
            assert_eq!(
                metrics[m].1,
                if bursty {
                    "Received Email"
                } else {
                    "Placed Order"
                }
            );
            let filter = format!(
                "and(equals(metric_id,\"{}\"),greater-or-equal(datetime,{}),less-than(datetime,{}))",
                metrics[m].0,
                ts(2024, 3, day, 0, 0).to_rfc3339(),
                ts(2024, 3, day + 1, 0, 0).to_rfc3339()
            );
            let (items, _) = all_pages(
                a,
                query(
                    "/api/events",
                    &[("filter", &filter), ("page[size]", "1000")],
                ),
            )
            .await;
            let t: Vec<i64> = items
                .iter()
                .map(|e| e["attributes"]["timestamp"].as_i64().unwrap())
                .collect();
            assert!(t.len() > 500, "{}", t.len());
            // The most events in any 15-minute window.
            let mut best = 0;
            let mut lo = 0;
            for hi in 0..t.len() {
                while t[hi] - t[lo] >= 900 {
                    lo += 1;
                }
                best = best.max(hi - lo + 1);
            }
            let share = best as f64 / t.len() as f64;
            if bursty {
                assert!(share > 0.8, "day {day}: {share}");
            } else {
                assert!(share < 0.05, "day {day}: {share}");
                let mut hours = [0usize; 24];
                for x in &t {
                    hours[(x.rem_euclid(86_400) / 3600) as usize] += 1;
                }
                let mean = t.len() as f64 / 24.0;
                assert!(
                    hours
                        .iter()
                        .all(|&h| (h as f64) > 0.5 * mean && (h as f64) < 1.6 * mean),
                    "{hours:?}"
                );
            }
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_burst_and_steady() {
    // Scale 0.01: events (XL) 4/s, 35/min; metrics (M) 1/s, 2/min.
    let s = start(KlaviyoConfig {
        data: spec(),
        api_keys: vec!["k1".into(), "k2".into()],
        rate_limit_scale: Some(0.01),
        ..KlaviyoConfig::default()
    })
    .await;
    let a = s.addr;
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let r = api_key(a, "/api/events?page[size]=1", "k1").await;
        assert_eq!(r.status, 200);
        // The headers describe the steady (one-minute) window, as Klaviyo documents.
        assert!(
            r.headers["ratelimit-limit"].starts_with("35, 4;w=1, 35;w=60"),
            "{:?}",
            r.headers
        );
        let reset: u64 = r.headers["ratelimit-reset"].parse().unwrap();
        assert!((58..=60).contains(&reset), "{reset}");
        remaining.push(r.headers["ratelimit-remaining"].parse::<u64>().unwrap());
    }
    assert_eq!(remaining, vec![34, 33, 32, 31]);
    let r = api_key(a, "/api/events?page[size]=1", "k1").await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.headers["retry-after"].parse().unwrap();
    assert_eq!(retry, 1);
    assert_eq!(error_of(&r)["code"], "throttled");
    // Another account has its own budget; another endpoint too.
    assert_eq!(
        api_key(a, "/api/events?page[size]=1", "k2").await.status,
        200
    );
    assert_eq!(api_key(a, "/api/profiles", "k1").await.status, 200);

    // Steady window: 2 per minute on metrics, 1 per second.
    assert_eq!(api_key(a, "/api/metrics", "k2").await.status, 200);
    let burst = api_key(a, "/api/metrics", "k2").await;
    assert_eq!(burst.status, 429);
    assert_eq!(burst.headers["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(api_key(a, "/api/metrics", "k2").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let steady = api_key(a, "/api/metrics", "k2").await;
    assert_eq!(steady.status, 429);
    let retry: u64 = steady.headers["retry-after"].parse().unwrap();
    assert!((55..=60).contains(&retry), "{retry}");

    // Fixed windows: the burst window opened by the first of these requests frees all 4
    // slots when it closes, though 3 of them were used 0.6 s in (a sliding window would
    // still hold those 3 then).
    let t0 = Instant::now();
    assert_eq!(
        api_key(a, "/api/events?page[size]=1", "k2").await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(600).saturating_sub(t0.elapsed())).await;
    for _ in 0..3 {
        assert_eq!(
            api_key(a, "/api/events?page[size]=1", "k2").await.status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(1050).saturating_sub(t0.elapsed())).await;
    for _ in 0..4 {
        let r = api_key(a, "/api/events?page[size]=1", "k2").await;
        assert_eq!(r.status, 200, "{:?}", r.headers);
    }

    let stats = raw(a, "GET", "/klaviyo/_admin/stats", &[], "")
        .await
        .unwrap()
        .json();
    assert_eq!(stats["tiers"]["XL"]["throttled"], 1);
    assert_eq!(stats["tiers"]["XL"]["ok"], 13);
    assert_eq!(stats["tiers"]["M"]["throttled"], 2);
    assert_eq!(stats["endpoints"]["get_metrics"]["ok"], 2);
    assert!(stats["total"]["throttled_share"].as_f64().unwrap() > 0.0);

    // Unlimited at run time: no more 429s, no RateLimit headers.
    let mut config: KlaviyoConfig = serde_json::from_value(
        raw(a, "GET", "/klaviyo/_admin/config", &[], "")
            .await
            .unwrap()
            .json(),
    )
    .unwrap();
    config.rate_limit_scale = None;
    admin(a, "/klaviyo/_admin/config", json!(config)).await;
    for _ in 0..10 {
        let r = api_key(a, "/api/metrics", "k2").await;
        assert_eq!(r.status, 200);
        assert!(!r.headers.contains_key("ratelimit-limit"));
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_lists_and_segments() {
    let s = start(unlimited()).await;
    let a = s.addr;
    let spec = spec();

    // Lists and segments collections.
    let (lists, _) = all_pages(a, "/api/lists".into()).await;
    assert_eq!(lists.len(), 2);
    let (segments, _) = all_pages(a, "/api/segments?page[size]=1".into()).await;
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0]["type"], "segment");

    // Membership ids and full profiles.
    for (id, _) in klaviyo::segments(&spec) {
        let (items, _) = all_pages(
            a,
            format!("/api/segments/{id}/relationships/profiles?page%5Bsize%5D=100"),
        )
        .await;
        let got: Vec<String> = items
            .iter()
            .map(|p| {
                assert_eq!(p["type"], "profile");
                assert!(p.get("attributes").is_none());
                p["id"].as_str().unwrap().to_owned()
            })
            .collect();
        let expected = klaviyo::segment_member_ids(&spec, &id);
        assert!(expected.len() > 100);
        assert_eq!(got, expected);
    }
    let (list_id, _) = &klaviyo::lists(&spec)[0];
    let (items, _) = all_pages(
        a,
        format!("/api/lists/{list_id}/profiles?page%5Bsize%5D=100&sort=-joined_group_at"),
    )
    .await;
    let mut got: Vec<String> = items
        .iter()
        .map(|p| {
            assert!(p["attributes"]["joined_group_at"].is_string());
            p["id"].as_str().unwrap().to_owned()
        })
        .collect();
    got.reverse();
    assert_eq!(got, klaviyo::list_member_ids(&spec, list_id));
    assert_eq!(
        items[0]["attributes"]["email"],
        klaviyo::profile(&spec, items[0]["id"].as_str().unwrap()).unwrap()["attributes"]["email"]
    );

    // any(id, [...]) returns exactly those.
    let all = klaviyo::profile_ids(&spec);
    let pick: Vec<&str> = vec![&all[5], &all[17], &all[2999], &all[1234]];
    let list = pick
        .iter()
        .map(|p| format!("\"{p}\""))
        .chain(["\"01ZZZZZZZZZZZZZZZZZZZZZZZZ\"".to_owned()])
        .collect::<Vec<_>>()
        .join(",");
    let r = api(
        a,
        &query("/api/profiles", &[("filter", &format!("any(id,[{list}])"))]),
    )
    .await;
    let got: BTreeSet<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, pick.iter().map(|s| s.to_string()).collect());
    let p17 = klaviyo::profile(&spec, &all[17]).unwrap();
    let email = p17["attributes"]["email"].as_str().unwrap();
    let r = api(
        a,
        &query(
            "/api/profiles",
            &[("filter", &format!("equals(email,\"{email}\")"))],
        ),
    )
    .await;
    assert_eq!(r.json()["data"][0]["id"], all[17].as_str());
    assert_eq!(r.json()["data"][0]["attributes"], p17["attributes"]);

    // updated filter, sorted by updated, against the ground truth.
    let updated = |id: &str| {
        let p = klaviyo::profile(&spec, id).unwrap();
        DateTime::parse_from_rfc3339(p["attributes"]["updated"].as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    let (gt, lt) = (ts(2024, 3, 4, 0, 0), ts(2024, 3, 6, 0, 0));
    let filter = format!(
        "and(greater-than(updated,{}),less-than(updated,{}))",
        gt.to_rfc3339(),
        lt.to_rfc3339()
    );
    let expected: Vec<&String> = all
        .iter()
        .filter(|id| {
            let u = updated(id);
            u > gt.timestamp() && u < lt.timestamp()
        })
        .collect();
    let (items, _) = all_pages(
        a,
        query(
            "/api/profiles",
            &[
                ("filter", &filter),
                ("sort", "updated"),
                ("page[size]", "100"),
            ],
        ),
    )
    .await;
    let got: Vec<&str> = items.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert!(expected.len() > 200, "{}", expected.len());
    assert_eq!(got, expected);

    // A touched profile moves into a later updated window.
    let touched = all[10].clone();
    let when = ts(2024, 3, 20, 0, 0);
    let reply = admin(
        a,
        &format!("/klaviyo/_admin/profiles/{touched}/touch"),
        json!({"updated": when.to_rfc3339()}),
    )
    .await;
    assert_eq!(
        reply["data"]["attributes"]["updated"],
        "2024-03-20T00:00:00+00:00"
    );
    let filter = format!(
        "greater-than(updated,{})",
        ts(2024, 3, 10, 0, 0).to_rfc3339()
    );
    let (items, _) = all_pages(
        a,
        query(
            "/api/profiles",
            &[("filter", &filter), ("sort", "-updated")],
        ),
    )
    .await;
    assert_eq!(items[0]["id"], touched.as_str());
    let (items, _) = all_pages(a, query("/api/profiles", &[("page[size]", "100")])).await;
    let ids: Vec<&str> = items.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, all.iter().map(String::as_str).collect::<Vec<_>>());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_appear() {
    let s = start(unlimited()).await;
    let a = s.addr;
    let spec = spec();
    let (metric, _) = klaviyo::metrics(&spec)[0].clone();
    let profile = klaviyo::profile_ids(&spec)[7].clone();
    let (from, to) = (ts(2024, 3, 5, 0, 0), ts(2024, 3, 5, 2, 0));
    let one = admin(
        a,
        "/klaviyo/_admin/events",
        json!({"metric_id": metric, "profile_id": profile, "datetime": "2024-03-05T01:00:00Z",
               "properties": {"$value": 12.5, "OrderId": "X1"}}),
    )
    .await;
    let many = admin(
        a,
        "/klaviyo/_admin/events",
        json!({"count": 3, "metric_id": metric, "datetime": "2024-03-05T00:30:00+00:00"}),
    )
    .await;
    let late = admin(
        a,
        "/klaviyo/_admin/events",
        json!({"count": 1, "metric_id": metric}),
    )
    .await;
    let filter = format!(
        "and(equals(metric_id,\"{metric}\"),greater-or-equal(datetime,{}),less-than(datetime,{}))",
        from.to_rfc3339(),
        to.to_rfc3339()
    );
    let (items, _) = all_pages(
        a,
        query("/api/events", &[("filter", &filter), ("page[size]", "7")]),
    )
    .await;
    let mut got: Vec<String> = items
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut expected = klaviyo::event_ids(&spec, Some(&metric), from, to);
    expected.extend(
        one["ids"]
            .as_array()
            .unwrap()
            .iter()
            .chain(many["ids"].as_array().unwrap())
            .map(|v| v.as_str().unwrap().to_owned()),
    );
    expected.sort();
    assert_eq!(got, expected);
    let mine = items.iter().find(|e| e["id"] == one["ids"][0]).unwrap();
    assert_eq!(mine["attributes"]["event_properties"]["OrderId"], "X1");
    assert_eq!(mine["attributes"]["datetime"], "2024-03-05T01:00:00+00:00");
    assert_eq!(
        mine["relationships"]["profile"]["data"]["id"],
        profile.as_str()
    );
    // The one dated now is found by a bookmark-style query.
    let since = format!(
        "and(equals(metric_id,\"{metric}\"),greater-or-equal(datetime,{}))",
        ts(2024, 6, 1, 0, 0).to_rfc3339()
    );
    let (items, _) = all_pages(a, query("/api/events", &[("filter", &since)])).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], late["ids"][0]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_knobs() {
    let s = start(unlimited()).await;
    let a = s.addr;
    let set = |f: FaultConfig| admin(a, "/klaviyo/_admin/faults", json!(f));

    set(FaultConfig {
        error_500_share: 1.0,
        ..FaultConfig::default()
    })
    .await;
    assert_eq!(api(a, "/api/lists").await.status, 500);
    set(FaultConfig {
        error_503_share: 1.0,
        ..FaultConfig::default()
    })
    .await;
    assert_eq!(api(a, "/api/lists").await.status, 503);
    set(FaultConfig {
        error_502_share: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let r = api(a, "/api/lists").await;
    assert_eq!(r.status, 502);
    assert_eq!(error_of(&r)["status"], 502);

    set(FaultConfig {
        latency_ms: 300,
        latency_jitter_ms: 50,
        ..FaultConfig::default()
    })
    .await;
    let t = Instant::now();
    assert_eq!(api(a, "/api/lists").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    set(FaultConfig {
        drop_share: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let auth = format!("Klaviyo-API-Key {KEY}");
    let h = [("Authorization", auth.as_str()), ("revision", "2026-07-15")];
    assert!(raw(a, "GET", "/api/lists", &h, "").await.is_none());

    set(FaultConfig {
        truncate_share: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let r = raw(a, "GET", "/api/lists", &h, "").await.unwrap();
    assert_eq!(r.status, 200);
    let announced: usize = r.headers["content-length"].parse().unwrap();
    assert!(r.body.len() < announced, "{} of {announced}", r.body.len());
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    set(FaultConfig {
        slow_share: 1.0,
        slow_ms: 400,
        ..FaultConfig::default()
    })
    .await;
    let t = Instant::now();
    assert_eq!(api(a, "/api/lists").await.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );

    set(FaultConfig {
        throttle_seconds: 2.0,
        ..FaultConfig::default()
    })
    .await;
    let r = api(a, "/api/events").await;
    assert_eq!(r.status, 429);
    assert!(["1", "2"].contains(&r.headers["retry-after"].as_str()));
    assert_eq!(error_of(&r)["code"], "throttled");

    // Shares are per request and seeded.
    set(FaultConfig {
        seed: 9,
        error_503_share: 0.3,
        ..FaultConfig::default()
    })
    .await;
    let mut bad = 0;
    for _ in 0..100 {
        if api(a, "/api/metrics").await.status == 503 {
            bad += 1;
        }
    }
    assert!((15..=45).contains(&bad), "{bad}");

    set(FaultConfig::default()).await;
    assert_eq!(api(a, "/api/lists").await.status, 200);
    let stats = raw(a, "GET", "/klaviyo/_admin/stats", &[], "")
        .await
        .unwrap()
        .json();
    assert!(stats["total"]["faults"].as_u64().unwrap() >= 6 + bad);
    assert_eq!(stats["slow"], 1);
    assert_eq!(stats["total"]["throttled"], 1);

    // Throughput: many pages of events without rate limits.
    let t = Instant::now();
    let n = 300;
    for _ in 0..n {
        assert_eq!(api(a, "/api/events?page[size]=200").await.status, 200);
    }
    let per_min = n as f64 / t.elapsed().as_secs_f64() * 60.0;
    eprintln!("{per_min:.0} event pages per minute (one sequential client)");
    // Debug builds (and a busy test machine) are far slower than the release binary.
    let floor = if cfg!(debug_assertions) {
        300.0
    } else {
        3_500.0
    };
    assert!(per_min > floor, "{per_min}");
    s.stop().await;
}

#[test]
fn future_share_dates_events_after_end() {
    let spec = KlaviyoDataSpec {
        future_share: 0.1,
        ..spec()
    };
    let id = klaviyo::metrics(&spec)[0].0.clone();
    let inside = klaviyo::event_ids(&spec, Some(&id), spec.start, spec.end);
    let future = klaviyo::event_ids(
        &spec,
        Some(&id),
        spec.end,
        spec.end + chrono::Duration::days(366),
    );
    assert_eq!(inside.len() + future.len(), 20_000);
    assert_eq!(future.len(), 2_000);
    let none = klaviyo::event_ids(&spec, Some(&id), ts(2000, 1, 1, 0, 0), spec.start);
    assert!(none.is_empty());
}

/// `GET target` with the given `revision` header.
async fn api_revision(addr: SocketAddr, target: &str, revision: &str) -> Reply {
    let auth = format!("Klaviyo-API-Key {KEY}");
    raw(
        addr,
        "GET",
        target,
        &[("Authorization", &auth), ("revision", revision)],
        "",
    )
    .await
    .unwrap()
}

fn ids_of(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The JSON of a 200 reply (else a panic showing the body).
fn ok_json(r: &Reply, what: &str) -> Value {
    assert_eq!(
        r.status,
        200,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_may_be_the_next_link_or_what_follows_page_cursor_in_it() {
    // Klaviyo's SDKs hand back `links.next` (or the text after `page%5Bcursor%5D` in it,
    // `=` included) as the cursor.
    let s = start(unlimited()).await;
    let a = s.addr;
    let metric = klaviyo::metrics(&spec())[1].0.clone();
    let filter = format!("equals(metric_id,\"{metric}\")");
    let first = query(
        "/api/events",
        &[
            ("filter", &filter),
            ("page[size]", "50"),
            ("sort", "-datetime"),
        ],
    );
    let page1 = ok_json(&api(a, &first).await, "page 1");
    let next = page1["links"]["next"].as_str().unwrap().to_owned();
    let expected = ids_of(&ok_json(&api(a, &target_of(&next)).await, "page 2"));
    assert_eq!(expected.len(), 50);
    let after = next.split("page%5Bcursor%5D").nth(1).unwrap().to_owned();
    assert!(after.starts_with('='), "{after}");
    for cursor in [next.as_str(), after.as_str()] {
        let target = query(
            "/api/events",
            &[
                ("filter", &filter),
                ("page[size]", "50"),
                ("sort", "-datetime"),
                ("page[cursor]", cursor),
            ],
        );
        let got = ok_json(&api(a, &target).await, cursor);
        assert_eq!(ids_of(&got), expected, "{cursor}");
    }
    // Profiles too (another cursor shape).
    let page1 = ok_json(&api(a, "/api/profiles?page%5Bsize%5D=7").await, "profiles");
    let next = page1["links"]["next"].as_str().unwrap().to_owned();
    let expected = ids_of(&ok_json(&api(a, &target_of(&next)).await, "profiles 2"));
    let got = api(
        a,
        &query(
            "/api/profiles",
            &[("page[size]", "7"), ("page[cursor]", &next)],
        ),
    )
    .await;
    assert_eq!(ids_of(&ok_json(&got, "by URL")), expected);
    // Still a 400 for what is no cursor at all.
    let r = api(a, &query("/api/events", &[("page[cursor]", "=zz")])).await;
    assert_eq!(r.status, 400);
    assert_eq!(error_of(&r)["source"]["parameter"], "page[cursor]");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_datetimes_in_every_form_on_every_endpoint_and_field() {
    let s = start(unlimited()).await;
    let a = s.addr;
    let spec = spec();
    let (list, _) = klaviyo::lists(&spec)[0].clone();
    let (segment, _) = klaviyo::segments(&spec)[0].clone();
    // One instant written every way Klaviyo takes it.
    let forms = |t: DateTime<Utc>| -> Vec<String> {
        let f = |t: DateTime<Utc>, tail: &str| format!("{}{tail}", t.format("%Y-%m-%dT%H:%M:%S"));
        let h = |n: i64| chrono::Duration::minutes(n);
        vec![
            f(t, "Z"),
            f(t, "+00:00"),
            f(t, "+0000"),
            f(t, ".000000+0000"),
            f(t + h(90), "+0130"),
            f(t - h(300), "-0500"),
            format!("\"{}\"", f(t, "+0000")),
            format!("'{}'", f(t, ".000Z")),
        ]
    };
    let members = |kind: &str, id: &str| format!("/api/{kind}/{id}/relationships/profiles");
    let mid = ts(2024, 3, 5, 12, 0);
    let (early, late) = (ts(2000, 1, 1, 0, 0), ts(2030, 1, 1, 0, 0));
    let cases = [
        (
            "/api/events".to_owned(),
            "greater-or-equal",
            "datetime",
            mid,
        ),
        ("/api/events".to_owned(), "less-than", "datetime", mid),
        ("/api/profiles".to_owned(), "greater-than", "created", early),
        ("/api/profiles".to_owned(), "less-than", "updated", late),
        ("/api/lists".to_owned(), "greater-than", "created", early),
        ("/api/segments".to_owned(), "greater-than", "updated", early),
        (
            members("lists", &list),
            "greater-or-equal",
            "joined_group_at",
            early,
        ),
        (
            members("segments", &segment),
            "less-than",
            "joined_group_at",
            late,
        ),
        (
            format!("/api/lists/{list}/profiles"),
            "greater-than",
            "joined_group_at",
            early,
        ),
    ];
    for (path, op, field, at) in &cases {
        let mut first: Option<Vec<String>> = None;
        for form in forms(*at) {
            let filter = format!("{op}({field},{form})");
            let r = api(a, &query(path, &[("filter", &filter)])).await;
            let got = ids_of(&ok_json(&r, &format!("{path} {filter}")));
            assert!(!got.is_empty(), "{path} {filter}");
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(&got, f, "{path} {filter}"),
            }
        }
    }
    // The events split at `mid`: the instant was read the same in every form.
    let r = api(
        a,
        &query(
            "/api/events",
            &[
                ("filter", "less-than(datetime,2024-03-05T12:00:00+0000)"),
                ("sort", "-datetime"),
            ],
        ),
    )
    .await;
    let before = ok_json(&r, "before")["data"][0]["attributes"]["datetime"].clone();
    assert!(
        before.as_str().unwrap() < "2024-03-05T12:00:00+00:00",
        "{before}"
    );
    // An unencoded `+` arrives as a space: still that offset.
    let r = api(
        a,
        "/api/events?filter=greater-or-equal(datetime,2024-03-05T12:00:00+0000)",
    )
    .await;
    let plus = ids_of(&ok_json(&r, "raw +"));
    let r = api(
        a,
        &query(
            "/api/events",
            &[("filter", "greater-or-equal(datetime,2024-03-05T12:00:00Z)")],
        ),
    )
    .await;
    assert_eq!(plus, ids_of(&ok_json(&r, "Z")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_fields_and_additional_fields_follow_each_endpoints_spec() {
    let s = start(unlimited()).await;
    let a = s.addr;
    let spec = spec();
    let (list, _) = klaviyo::lists(&spec)[0].clone();
    let (segment, _) = klaviyo::segments(&spec)[1].clone();
    let metric = klaviyo::metrics(&spec)[0].0.clone();
    let profile = klaviyo::profile_ids(&spec)[0].clone();

    // Refused with Klaviyo's error, naming the parameter.
    for (target, parameter) in [
        ("/api/profiles?include=lists".to_owned(), "include"),
        ("/api/lists?include=profiles".to_owned(), "include"),
        (format!("/api/lists/{list}?include=segments"), "include"),
        (
            "/api/metrics?fields%5Bevent%5D=uuid".to_owned(),
            "fields[event]",
        ),
        (
            "/api/metrics?fields%5Bmetric%5D=name,size".to_owned(),
            "fields[metric]",
        ),
        (
            "/api/profiles?fields%5Bprofile%5D=email,shoe_size".to_owned(),
            "fields[profile]",
        ),
        (
            "/api/events?fields%5Bevent%5D=value".to_owned(),
            "fields[event]",
        ),
        (
            "/api/events?fields%5Bflow%5D=name".to_owned(),
            "fields[flow]",
        ),
        ("/api/events?include=tags".to_owned(), "include"),
        (
            format!("/api/segments/{segment}?additional-fields%5Bsegment%5D=subscriptions"),
            "additional-fields[segment]",
        ),
        (
            "/api/lists?additional-fields%5Blist%5D=profile_count".to_owned(),
            "additional-fields[list]",
        ),
        (
            "/api/profiles?additional-fields%5Bprofile%5D=profile_count".to_owned(),
            "additional-fields[profile]",
        ),
        (
            format!("/api/lists/{list}/relationships/profiles?fields%5Bprofile%5D=email"),
            "fields[profile]",
        ),
        ("/api/metrics?sort=name".to_owned(), "sort"),
        ("/api/metrics?page%5Bsize%5D=5".to_owned(), "page[size]"),
        (
            format!("/api/metrics/{metric}?page%5Bcursor%5D=x"),
            "page[cursor]",
        ),
    ] {
        let r = api(a, &target).await;
        assert_eq!(
            r.status,
            400,
            "{target}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = error_of(&r);
        assert_eq!(e["code"], "invalid", "{target}");
        assert_eq!(e["source"]["parameter"], parameter, "{target}");
    }

    // A profile with its lists and segments.
    let v = ok_json(
        &api(
            a,
            &format!("/api/profiles/{profile}?include=lists,segments&fields%5Blist%5D=name"),
        )
        .await,
        "profile",
    );
    let want_lists: Vec<String> = klaviyo::lists(&spec)
        .into_iter()
        .filter(|(id, _)| klaviyo::list_member_ids(&spec, id).contains(&profile))
        .map(|(id, _)| id)
        .collect();
    let want_segments: Vec<String> = klaviyo::segments(&spec)
        .into_iter()
        .filter(|(id, _)| klaviyo::segment_member_ids(&spec, id).contains(&profile))
        .map(|(id, _)| id)
        .collect();
    let rel = |name: &str| -> Vec<String> {
        v["data"]["relationships"][name]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(rel("lists"), want_lists);
    assert_eq!(rel("segments"), want_segments);
    let included = v["included"].as_array().unwrap();
    assert_eq!(included.len(), want_lists.len() + want_segments.len());
    for inc in included {
        let id = inc["id"].as_str().unwrap().to_owned();
        match inc["type"].as_str().unwrap() {
            "list" => {
                assert!(want_lists.contains(&id));
                // fields[list] applies to the included lists.
                assert_eq!(inc["attributes"].as_object().unwrap().len(), 1, "{inc}");
            }
            "segment" => assert!(want_segments.contains(&id)),
            other => panic!("included {other}"),
        }
    }
    assert!(
        !want_lists.is_empty() || !want_segments.is_empty(),
        "profile 0 belongs to something"
    );
    // include=lists is the XS tier (1/s, 15/m): counted there.
    let stats = raw(a, "GET", "/klaviyo/_admin/stats", &[], "")
        .await
        .unwrap()
        .json();
    assert_eq!(stats["tiers"]["XS"]["ok"], 1, "{stats}");

    // profile_count of a list and a segment.
    for (kind, id, members) in [
        ("lists", &list, klaviyo::list_member_ids(&spec, &list).len()),
        (
            "segments",
            &segment,
            klaviyo::segment_member_ids(&spec, &segment).len(),
        ),
    ] {
        let one = &kind[..kind.len() - 1];
        let v = ok_json(
            &api(
                a,
                &format!("/api/{kind}/{id}?additional-fields%5B{one}%5D=profile_count"),
            )
            .await,
            kind,
        );
        assert_eq!(v["data"]["attributes"]["profile_count"], members, "{kind}");
        let v = ok_json(&api(a, &format!("/api/{kind}/{id}")).await, kind);
        assert!(v["data"]["attributes"].get("profile_count").is_none());
    }

    // Event attributions: listed in the relationship and included.
    let v = ok_json(
        &api(a, "/api/events?include=attributions&page%5Bsize%5D=400").await,
        "events",
    );
    let mut listed = Vec::new();
    for e in v["data"].as_array().unwrap() {
        for x in e["relationships"]["attributions"]["data"]
            .as_array()
            .unwrap()
        {
            assert_eq!(x["type"], "attribution");
            listed.push((x["id"].as_str().unwrap().to_owned(), e["id"].clone()));
        }
    }
    assert!(!listed.is_empty(), "some events are attributed");
    let included = v["included"].as_array().unwrap();
    assert_eq!(included.len(), listed.len());
    for (inc, (id, event)) in included.iter().zip(&listed) {
        assert_eq!(inc["type"], "attribution");
        assert_eq!(inc["id"], id.as_str());
        assert_eq!(inc["relationships"]["event"]["data"]["id"], *event);
    }
    let v = ok_json(&api(a, "/api/events?page%5Bsize%5D=5").await, "plain");
    assert!(v.get("included").is_none());
    assert!(
        v["data"][0]["relationships"]["attributions"]
            .get("data")
            .is_none()
    );

    // Includes of resources the sandbox does not model: accepted, nothing included.
    for target in [
        "/api/lists?include=tags,flow-triggers".to_owned(),
        format!("/api/segments/{segment}?include=tags"),
        "/api/metrics?include=flow-triggers".to_owned(),
        "/api/profiles?include=push-tokens&page%5Bsize%5D=2".to_owned(),
    ] {
        let v = ok_json(&api(a, &target).await, &target);
        assert_eq!(v["included"], json!([]), "{target}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_are_klaviyos_and_old_ones_page_events_by_200() {
    let s = start(unlimited()).await;
    let a = s.addr;
    for (revision, status) in [
        ("2026-07-15", 200),
        ("2023-12-15", 200),
        ("2024-10-15.pre", 200),
        ("2024-01-01", 400),
        ("2026-07-16", 400),
        ("2026-07-15.beta", 400),
        ("2026-7-15", 400),
    ] {
        let r = api_revision(a, "/api/metrics", revision).await;
        assert_eq!(r.status, status, "{revision}");
        if status == 400 {
            assert_eq!(error_of(&r)["source"]["header"], "revision");
        }
    }
    // `page[size]` on events exists from 2026-01-15; before, 200 per page whatever it says.
    for (revision, per_page) in [
        ("2026-01-15", 10),
        ("2026-07-15", 10),
        ("2025-10-15", 200),
        ("2024-02-15", 200),
    ] {
        let r = api_revision(a, "/api/events?page%5Bsize%5D=10", revision).await;
        let v = ok_json(&r, revision);
        assert_eq!(v["data"].as_array().unwrap().len(), per_page, "{revision}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profiles_events_come_in_full_pages() {
    // 200 000 events of one metric over 2 000 profiles: about 100 each, scattered.
    let spec = KlaviyoDataSpec {
        metrics: 1,
        profiles: 2_000,
        events_per_metric: 200_000,
        ..spec()
    };
    let s = start(KlaviyoConfig {
        data: spec.clone(),
        rate_limit_scale: None,
        ..KlaviyoConfig::default()
    })
    .await;
    let a = s.addr;
    let pid = klaviyo::profile_ids(&spec)[3].clone();
    let filter = format!("equals(profile_id,\"{pid}\")");
    for size in ["200", "30"] {
        let mut target = query("/api/events", &[("filter", &filter), ("page[size]", size)]);
        let mut sizes = Vec::new();
        loop {
            let v = ok_json(&api(a, &target).await, &target);
            let data = v["data"].as_array().unwrap();
            assert!(
                data.iter()
                    .all(|e| e["relationships"]["profile"]["data"]["id"] == pid.as_str())
            );
            sizes.push(data.len());
            match v["links"]["next"].as_str() {
                Some(next) => target = target_of(next),
                None => break,
            }
        }
        let total: usize = sizes.iter().sum();
        assert!((50..=200).contains(&total), "{total}");
        let size: usize = size.parse().unwrap();
        let (last, full) = sizes.split_last().unwrap();
        assert!(full.iter().all(|n| *n == size), "{sizes:?}");
        assert!(*last <= size && (*last > 0 || full.is_empty()), "{sizes:?}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prev_links_lead_back_a_page() {
    let s = start(unlimited()).await;
    let a = s.addr;
    let spec = spec();
    let (list, _) = klaviyo::lists(&spec)[0].clone();
    for first in [
        "/api/events?page%5Bsize%5D=50&sort=-datetime".to_owned(),
        "/api/events?page%5Bsize%5D=50".to_owned(),
        "/api/profiles?page%5Bsize%5D=20&sort=-updated".to_owned(),
        "/api/profiles?page%5Bsize%5D=20".to_owned(),
        format!("/api/lists/{list}/relationships/profiles?page%5Bsize%5D=20"),
        format!("/api/lists/{list}/profiles?page%5Bsize%5D=20&sort=-joined_group_at"),
        "/api/segments?page%5Bsize%5D=1".to_owned(),
    ] {
        let mut pages = Vec::new();
        let mut target = first.clone();
        for _ in 0..3 {
            let v = ok_json(&api(a, &target).await, &target);
            pages.push(v.clone());
            match v["links"]["next"].as_str() {
                Some(next) => target = target_of(next),
                None => break,
            }
        }
        assert!(pages.len() >= 2, "{first}");
        assert!(pages[0]["links"]["prev"].is_null(), "{first}");
        for k in 1..pages.len() {
            let prev = pages[k]["links"]["prev"].as_str().unwrap();
            let back = ok_json(&api(a, &target_of(prev)).await, prev);
            assert_eq!(
                ids_of(&back),
                ids_of(&pages[k - 1]),
                "{first}: back from {k}"
            );
            // …and forward again.
            let next = back["links"]["next"].as_str().unwrap();
            let again = ok_json(&api(a, &target_of(next)).await, next);
            assert_eq!(ids_of(&again), ids_of(&pages[k]), "{first}: forward to {k}");
        }
        // The first page reached backwards has no prev.
        let prev = pages[1]["links"]["prev"].as_str().unwrap();
        let back = ok_json(&api(a, &target_of(prev)).await, prev);
        assert!(
            back["links"]["prev"].is_null(),
            "{first}: {}",
            back["links"]
        );
    }
    s.stop().await;
}
