//! End to end: the What Drops Now catalogue from the sandbox's emulation through planner →
//! two fetchers → loader into Postgres, against the emulation's ground truth: exact rows,
//! each product's offers and each retailer asked for once, the cap of concurrent requests
//! held across both fetchers and kept busy, nothing fresh fetched again, a run cancelled
//! half-way continued by the next one, and the analysis view on a hand-made catalogue.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_e2e::{TestEnv, init_logging};
use sluice_sandbox::wdn::{
    Brand, Catalogue, Expected, NAMED_BRANDS, Offer, Product, Retailer, WdnConfig, WdnDataSpec,
    WdnStats,
};

const WAIT: Duration = Duration::from_secs(600);

/// The full catalogue and the measurement of the cap's use do not run at the same time:
/// the one would starve the other of CPU and make the measurement say little.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn stats(base: &str) -> WdnStats {
    let admin = base.trim_end_matches("/api/v1");
    reqwest::get(format!("{admin}/_admin/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats body")
}

async fn reset(base: &str) {
    let admin = base.trim_end_matches("/api/v1");
    reqwest::Client::new()
        .post(format!("{admin}/_admin/stats/reset"))
        .send()
        .await
        .expect("reset");
}

async fn sync(env: &TestEnv, params: Value) -> sluice_store::ledger::JobReport {
    let job = env
        .request_job("wdn", "catalogue", params.clone())
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{params}: {report:#?}");
    assert_eq!(report.summary.rows_rejected, 0, "{:#?}", report.rejected);
    report
}

async fn rows(env: &TestEnv, sql: &str) -> Vec<Vec<Option<String>>> {
    let client = env.pool.get().await.expect("connection");
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect()
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    env.pool
        .get()
        .await
        .expect("connection")
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// A price as the API sent it (number or numeric string), as a number of cents.
fn cents(v: &Value) -> Option<i64> {
    let f = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some((f * 100.0).round() as i64)
}

fn stored_cents(v: &Option<String>) -> Option<i64> {
    v.as_deref()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|f| (f * 100.0).round() as i64)
}

/// Every table equals the ground truth: the same ids and, per id, the same content.
async fn assert_exact(env: &TestEnv, expected: &Expected) {
    let brands: BTreeMap<String, Vec<Option<String>>> =
        rows(env, "SELECT id, name, description, website FROM wdn.brands")
            .await
            .into_iter()
            .map(|r| (r[0].clone().unwrap_or_default(), r[1..].to_vec()))
            .collect();
    let want: BTreeMap<String, Vec<Option<String>>> = expected
        .brands
        .iter()
        .map(|b: &Brand| {
            (
                b.id.clone(),
                vec![
                    Some(b.name.clone()),
                    b.description.clone(),
                    b.website.clone(),
                ],
            )
        })
        .collect();
    assert_eq!(brands, want, "wdn.brands");

    let products: BTreeMap<String, Vec<Option<String>>> = rows(
        env,
        "SELECT id, name, description,
                to_char(release_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                brand_names, brand_names_array::text, resource->'attributes'->>'name'
           FROM wdn.products",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone().unwrap_or_default(), r[1..].to_vec()))
    .collect();
    assert_eq!(
        products.len(),
        expected.products.len(),
        "wdn.products count"
    );
    for p in &expected.products {
        let p: &Product = p;
        let names = serde_json::to_string(&p.brand_names).expect("names");
        let got = products
            .get(&p.id)
            .unwrap_or_else(|| panic!("product {} missing", p.id));
        assert_eq!(
            got,
            &vec![
                Some(p.name.clone()),
                p.description.clone(),
                p.release_at.clone(),
                Some(names.clone()),
                // jsonb's own text form: a space after each comma.
                Some(names.replace("\",\"", "\", \"")),
                Some(p.name.clone()),
            ],
            "product {}",
            p.id
        );
    }

    let offers: BTreeMap<String, Vec<Option<String>>> = rows(
        env,
        "SELECT id, product_id, retailer_id, original_currency,
                price_usd::text, price_gbp::text, price_eur::text FROM wdn.offers",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone().unwrap_or_default(), r[1..].to_vec()))
    .collect();
    assert_eq!(offers.len(), expected.offers.len(), "wdn.offers count");
    for o in &expected.offers {
        let o: &Offer = o;
        let got = offers
            .get(&o.id)
            .unwrap_or_else(|| panic!("offer {} missing", o.id));
        assert_eq!(
            (&got[0], &got[1], &got[2]),
            (
                &Some(o.product_id.clone()),
                &Some(o.retailer_id.clone()),
                &Some(o.original_currency.clone())
            ),
            "offer {}",
            o.id
        );
        assert_eq!(
            (
                stored_cents(&got[3]),
                stored_cents(&got[4]),
                stored_cents(&got[5])
            ),
            (
                cents(&o.price_usd),
                cents(&o.price_gbp),
                cents(&o.price_eur)
            ),
            "offer {} prices",
            o.id
        );
    }

    let retailers: BTreeMap<String, Vec<Option<String>>> =
        rows(env, "SELECT id, name, website FROM wdn.retailers")
            .await
            .into_iter()
            .map(|r| (r[0].clone().unwrap_or_default(), r[1..].to_vec()))
            .collect();
    let want: BTreeMap<String, Vec<Option<String>>> = expected
        .retailers
        .iter()
        .map(|r: &Retailer| (r.id.clone(), vec![Some(r.name.clone()), r.website.clone()]))
        .collect();
    assert_eq!(retailers, want, "wdn.retailers");
}

fn generated(products: u64) -> WdnDataSpec {
    WdnDataSpec {
        seed: 7,
        brands: 8,
        products,
        retailers: 320,
        ..WdnDataSpec::default()
    }
}

/// An emulation that never throttles (for speed tests of the pipeline, the cap is high).
fn unthrottled(data: WdnDataSpec) -> WdnConfig {
    WdnConfig {
        data,
        max_concurrency: 1_000,
        fail_concurrency: 2_000,
        ..WdnConfig::default()
    }
}

async fn env_with(config: WdnConfig, cap: u32, fetcher_concurrency: u16) -> (TestEnv, String) {
    let mut env = TestEnv::new().await.expect("env");
    let base = env.start_wdn_sandbox(config).await.expect("sandbox");
    env.set_connector_setting("wdn", "max_concurrency", &cap.to_string());
    env.set_connector_setting("wdn", "backoff_initial_ms", "50");
    env.set_connector_setting("wdn", "backoff_max_ms", "500");
    env.settings.fetcher.concurrency = fetcher_concurrency;
    // Offers parts are tiny and many: more of them per loader transaction.
    env.settings.loader.group_parts = 32;
    env.start_pipeline(2);
    (env, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generated_catalogue_lands_exactly_and_a_rerun_in_the_freshness_window_asks_for_no_product_or_offer()
 {
    init_logging();
    let _heavy = HEAVY.lock().await;
    let config = unthrottled(generated(26_000));
    let catalogue = config.served();
    let expected = catalogue.expected(&NAMED_BRANDS).expect("named brands");
    // The size the issue asks for.
    assert!(expected.brands.len() >= 5);
    assert!(
        expected.products.len() >= 20_000,
        "{}",
        expected.products.len()
    );
    assert!(expected.offers.len() >= 50_000, "{}", expected.offers.len());
    assert!(
        expected.retailers.len() >= 300,
        "{}",
        expected.retailers.len()
    );
    let (env, base) = env_with(config, 32, 16).await;

    let started = Instant::now();
    let report = sync(&env, json!({})).await;
    let first = stats(&base).await;
    println!(
        "full catalogue: {} products, {} offers, {} retailers in {:.1} s; {} requests, peak {} in flight, mean {:.2}",
        expected.products.len(),
        expected.offers.len(),
        expected.retailers.len(),
        started.elapsed().as_secs_f64(),
        first.total,
        first.peak_concurrency,
        first.mean_in_flight
    );
    assert_exact(&env, &expected).await;
    // Each product's offers and each retailer asked for exactly once (retailers are shared
    // by many offers and met by both fetchers), 404s counted as answers.
    assert_eq!(first.endpoint("offers"), expected.product_requests);
    let retailer_ids: BTreeSet<&str> = expected
        .offers
        .iter()
        .map(|o| o.retailer_id.as_str())
        .collect();
    assert_eq!(first.endpoint("retailers"), retailer_ids.len() as u64);
    assert_eq!(
        first.count("retailers", 404),
        expected.missing_retailers.len() as u64
    );
    assert!(first.count("offers", 404) > 0);
    assert!(first.peak_concurrency <= 32, "{first:?}");
    assert_eq!(first.refused, 0);
    // Empty and 404 offer lists are remembered like the others.
    let remembered = count(
        &env,
        "SELECT count(*) FROM sluice.fetched_resources WHERE key LIKE 'products/%/offers'",
    )
    .await;
    assert_eq!(remembered as u64, expected.product_requests);
    assert!(report.summary.tasks_total as u64 > expected.product_requests);

    // Inside the freshness window: the brand searches only, the same rows.
    reset(&base).await;
    let before = env
        .content_fingerprint("wdn.offers")
        .await
        .expect("fingerprint");
    let again = sync(&env, json!({})).await;
    let second = stats(&base).await;
    assert_eq!(second.endpoint("brand_search"), 5, "{second:?}");
    assert_eq!(
        (
            second.endpoint("products"),
            second.endpoint("offers"),
            second.endpoint("retailers")
        ),
        (0, 0, 0),
        "{second:?}"
    );
    assert_eq!(again.summary.tasks_total, 5);
    assert_eq!(
        env.content_fingerprint("wdn.offers")
            .await
            .expect("fingerprint"),
        before
    );
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_default_cap_of_five_holds_across_two_fetchers_and_is_kept_busy() {
    init_logging();
    let _heavy = HEAVY.lock().await;
    // The real API's limits (slower above 5, refused from 8) and 50 ms per request.
    let mut config = WdnConfig {
        data: generated(1_200),
        ..WdnConfig::default()
    };
    config.faults.latency_ms = 50;
    assert_eq!((config.max_concurrency, config.fail_concurrency), (5, 8));
    let expected = config.served().expected(&NAMED_BRANDS).expect("brands");
    let mut env = TestEnv::new().await.expect("env");
    let base = env.start_wdn_sandbox(config).await.expect("sandbox");
    // The connector's own default cap (5), two fetchers of 32 tasks each: a task spends
    // most of its time outside its request (taking the permit, shipping its batch), so it
    // takes several tasks per permit to keep every permit in use.
    env.settings.fetcher.concurrency = 32;
    env.settings.loader.group_parts = 32;
    env.start_pipeline(2);
    let started = Instant::now();
    sync(&env, json!({})).await;
    let s = stats(&base).await;
    let elapsed = started.elapsed().as_secs_f64();
    let floor = s.total as f64 / 5.0 * 0.050;
    println!(
        "cap 5: {} requests in {elapsed:.1} s (floor {floor:.1} s); peak {} in flight, mean {:.2}, {} slowed, {} refused",
        s.total, s.peak_concurrency, s.mean_in_flight, s.slowed, s.refused
    );
    assert!(s.peak_concurrency <= 5, "{s:?}");
    assert_eq!((s.slowed, s.refused), (0, 0), "{s:?}");
    // Kept busy: on average well over half the cap in flight from first to last request.
    assert!(s.mean_in_flight >= 3.0, "{s:?}");
    assert_exact(&env, &expected).await;
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_cancelled_half_way_is_continued_by_the_next_which_fetches_only_what_is_missing() {
    init_logging();
    let mut config = unthrottled(generated(4_000));
    config.faults.latency_ms = 2;
    let expected = config.served().expected(&NAMED_BRANDS).expect("brands");
    let (env, base) = env_with(config, 8, 8).await;
    let first = env
        .request_job("wdn", "catalogue", json!({}))
        .await
        .expect("job");
    // Cancel once about 40 % of the offers were asked for.
    let deadline = Instant::now() + WAIT;
    loop {
        let s = stats(&base).await;
        if s.endpoint("offers") * 10 >= expected.product_requests * 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the job never got going: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = env
        .sluicectl(&["jobs", "cancel", &first.to_string()])
        .await
        .expect("sluicectl");
    assert!(out.status.success(), "{out:?}");
    let report = env.wait_job(first, WAIT).await.expect("cancelled");
    assert_eq!(report.summary.state.as_str(), "cancelled");
    // Let what was in flight drain (its parts are dropped by the loader).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let done_offers = count(
        &env,
        "SELECT count(*) FROM sluice.fetched_resources WHERE key LIKE 'products/%/offers'",
    )
    .await as u64;
    let done_pages = count(
        &env,
        "SELECT count(*) FROM sluice.fetched_resources WHERE key LIKE 'brands/%/products%'",
    )
    .await as u64;
    assert!(
        done_offers > 0 && done_offers < expected.product_requests,
        "{done_offers}"
    );
    reset(&base).await;

    sync(&env, json!({})).await;
    let s = stats(&base).await;
    // Exactly the offers not yet fetched, and the product pages not yet fetched.
    assert_eq!(
        s.endpoint("offers"),
        expected.product_requests - done_offers
    );
    let pages: u64 = expected
        .brands
        .iter()
        .map(|b| {
            let n = expected
                .products
                .iter()
                .filter(|p| p.brand_names.contains(&b.name))
                .count() as u64;
            n.div_ceil(500).max(1)
        })
        .sum();
    assert_eq!(s.endpoint("products"), pages - done_pages);
    assert_exact(&env, &expected).await;

    // --full fetches everything again.
    reset(&base).await;
    sync(&env, json!({"full": true})).await;
    let s = stats(&base).await;
    assert_eq!(s.endpoint("offers"), expected.product_requests);
    assert_eq!(s.endpoint("products"), pages);
    assert_exact(&env, &expected).await;
    env.teardown().await.expect("teardown");
}

/// A hand-made catalogue whose ranking is worked out by hand below.
fn hand_made() -> Catalogue {
    let brand = |id: &str, name: &str| Brand {
        id: id.into(),
        name: name.into(),
        description: None,
        website: None,
    };
    let product = |id: &str, names: &[&str]| Product {
        id: id.into(),
        name: format!("product {id}"),
        description: None,
        release_at: Some("2024-05-01T10:00:00.000Z".into()),
        brand_names: names.iter().map(|n| (*n).to_string()).collect(),
    };
    let offer = |id: &str, product: &str, retailer: &str, usd: Value| Offer {
        id: id.into(),
        product_id: product.into(),
        retailer_id: retailer.into(),
        original_currency: "USD".into(),
        price_usd: usd,
        price_gbp: Value::Null,
        price_eur: Value::Null,
    };
    let retailer = |id: &str| Retailer {
        id: id.into(),
        name: format!("Shop {id}"),
        website: None,
    };
    Catalogue {
        brands: vec![
            brand("1", "Nike"),
            brand("2", "Adidas"),
            brand("3", "Vans"),
            brand("4", "Converse"),
            brand("5", "Jordan"),
            brand("6", "Nike SB"),
        ],
        products: vec![
            product("10", &["Nike"]),
            product("11", &["Adidas"]),
            product("12", &["Vans"]),
            product("13", &["Converse"]),
            product("14", &["Jordan"]),
            product("15", &["Converse", "Nike"]),
            product("16", &["Nike SB"]),
        ],
        offers: vec![
            // r1: Nike 50 and 70 → 60, Normal.
            offer("o1", "10", "r1", json!(50)),
            offer("o2", "10", "r1", json!("70.00")),
            // r2: Adidas 90; its Converse offer does not count → 90, Normal, first.
            offer("o3", "11", "r2", json!(90)),
            offer("o4", "13", "r2", json!(500)),
            // r3: Vans 150 and a Converse × Nike collaboration 250 → 200, High End
            // (inclusive), first.
            offer("o5", "12", "r3", json!(150)),
            offer("o6", "15", "r3", json!("250")),
            // r4: Nike 120 → High End, second.
            offer("o7", "10", "r4", json!(120.0)),
            // r5: Nike 300 → above 200, dropped.
            offer("o8", "10", "r5", json!(300)),
            // r6: Jordan only → not analysed.
            offer("o9", "14", "r6", json!(80)),
            // r7: Nike SB (its name contains "nike", as the original matched) 33.333 →
            // 33.33, Normal; r8: Nike 60 → ties r1 at rank 2, so r7 is fourth.
            offer("o10", "16", "r7", json!(33.333)),
            offer("o11", "10", "r8", json!(60)),
            // r9 answers 404: its offer is loaded, the retailer is not, nothing ranks.
            offer("o12", "10", "r9", json!(10)),
            // No USD price: not averaged.
            offer("o13", "11", "r1", Value::Null),
        ],
        retailers: ["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"]
            .into_iter()
            .map(retailer)
            .collect(),
        missing_offers: vec!["14".into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_analysis_view_ranks_a_hand_made_catalogue_as_the_original_did() {
    init_logging();
    let catalogue = hand_made();
    // Product 14's offers answer 404 in this catalogue: r6 and its Jordan offer are gone.
    let config = WdnConfig {
        catalogue: Some(catalogue.clone()),
        ..unthrottled(WdnDataSpec::default())
    };
    let (env, base) = env_with(config, 5, 4).await;
    sync(
        &env,
        json!({"brands": ["nike", "ADIDAS", "Vans", "Converse", "Jordan", "Nike SB"]}),
    )
    .await;
    let expected = catalogue
        .expected(&["Nike", "Adidas", "Vans", "Converse", "Jordan", "Nike SB"])
        .expect("brands");
    assert_exact(&env, &expected).await;
    let got = rows(
        &env,
        "SELECT segment, rank::text, retailer_id, retailer_name, avg_price_usd::text, offers::text
           FROM wdn.retailer_price_segments",
    )
    .await;
    let want: Vec<Vec<Option<String>>> = [
        ["High End", "1", "r3", "Shop r3", "200.00", "2"],
        ["High End", "2", "r4", "Shop r4", "120.00", "1"],
        ["Normal", "1", "r2", "Shop r2", "90.00", "1"],
        ["Normal", "2", "r1", "Shop r1", "60.00", "2"],
        ["Normal", "2", "r8", "Shop r8", "60.00", "1"],
        ["Normal", "4", "r7", "Shop r7", "33.33", "1"],
    ]
    .iter()
    .map(|r| r.iter().map(|c| Some((*c).to_string())).collect())
    .collect();
    assert_eq!(got, want);
    // The 404s are answers, not errors: recorded as fetched with nothing loaded.
    let s = stats(&base).await;
    assert_eq!((s.count("offers", 404), s.count("retailers", 404)), (1, 1));
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM sluice.fetched_resources WHERE key IN ('retailers/r9', 'products/14/offers')"
        )
        .await,
        2
    );

    // An unknown brand fails the job, naming it.
    let job = env
        .request_job("wdn", "catalogue", json!({"brands": ["Nike", "Reebokk"]}))
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state.as_str(), "failed");
    let error = report.summary.error.clone().unwrap_or_default();
    assert!(error.contains("unknown brand \"Reebokk\""), "{report:#?}");
    env.teardown().await.expect("teardown");
}
