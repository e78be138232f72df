//! The commercetools → Klaviyo sync at Klaviyo's real rate limits: a generated commercetools
//! project pushed in the documented order (categories, products, customers, orders; one
//! job each) through planner, two fetchers, RabbitMQ and the loader into the sandbox's
//! Klaviyo emulation with its limiter at scale 1 (`rate_limit_scale: Some(1.0)`).
//!
//! `cargo bench --bench klaviyo_sync [-- CUSTOMERS [ORDERS [CATEGORIES [PRODUCTS]]]]`
//! (defaults 5,000, 20,000, 200, 2,000). Needs RabbitMQ and Postgres at their default local
//! addresses. For each kind of object (catalog categories, items, variants, profiles,
//! events) it prints, from the emulator's own counters (`GET /klaviyo/_admin/stats`, reset
//! before each push, and `GET /klaviyo/_admin/written`):
//! - objects/s over its push's wall time;
//! - write requests/s on the kind's bulk endpoint against that endpoint's steady limit
//!   (`x-klaviyo-ratelimit`: catalog bulk jobs L = 750/min, profile imports and event bulk
//!   jobs M = 150/min; target ≥ 90 % when the limit is what holds the push back);
//! - the same share while the kind was written (from its first to its latest write: the
//!   push's first seconds are planning and the first fetches);
//! - every endpoint the push called with its share of its own tier (Klaviyo limits each
//!   endpoint on its own, so a lookup or poll endpoint can be what holds a push back);
//! - the share of 429 answers over every request of the push (target < 1 %);
//! - for profiles, profiles/s through bulk import jobs and the profiles per job.
//!
//! The machine is shared with other builds: read the ratios to the limits, not the absolute
//! speeds.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_contracts::Mode;
use sluice_e2e::{TestEnv, klaviyo_stats};
use sluice_sandbox::commercetools::{CommercetoolsConfig, CommercetoolsDataSpec};
use sluice_sandbox::klaviyo::{KlaviyoConfig, KlaviyoDataSpec, WrittenSnapshot};

const DESTINATION: &str = "klaviyo";

/// Steady limits in requests per minute (`x-klaviyo-ratelimit`, the second number).
const TIER_L_PER_MINUTE: f64 = 750.0;
const TIER_M_PER_MINUTE: f64 = 150.0;

/// One kind of Klaviyo object a push writes.
struct Kind {
    /// As printed.
    name: &'static str,
    /// The push (commercetools stream) that writes it.
    stream: &'static str,
    /// The emulator's operation names of its bulk writes (`operations.json`).
    endpoints: &'static [&'static str],
    /// Its bulk job `type` prefix in the written state (`None`: written at once, no job).
    job_type: Option<&'static str>,
    /// The steady limit of its write endpoints, requests per minute, and the tier's name.
    tier: (f64, &'static str),
    /// Most objects one write request takes (Klaviyo's limit per bulk job).
    per_request: f64,
}

const KINDS: [Kind; 5] = [
    Kind {
        name: "catalog categories",
        stream: "categories",
        endpoints: &[
            "bulk_create_catalog_categories",
            "bulk_update_catalog_categories",
        ],
        job_type: Some("catalog-category-bulk-"),
        tier: (TIER_L_PER_MINUTE, "L"),
        per_request: 100.0,
    },
    Kind {
        name: "catalog items",
        stream: "products",
        endpoints: &["bulk_create_catalog_items", "bulk_update_catalog_items"],
        job_type: Some("catalog-item-bulk-"),
        tier: (TIER_L_PER_MINUTE, "L"),
        per_request: 100.0,
    },
    Kind {
        name: "catalog variants",
        stream: "products",
        endpoints: &[
            "bulk_create_catalog_variants",
            "bulk_update_catalog_variants",
        ],
        job_type: Some("catalog-variant-bulk-"),
        tier: (TIER_L_PER_MINUTE, "L"),
        per_request: 100.0,
    },
    Kind {
        name: "profiles",
        stream: "customers",
        endpoints: &["bulk_import_profiles"],
        job_type: Some("profile-bulk-import-job"),
        tier: (TIER_M_PER_MINUTE, "M"),
        per_request: 10_000.0,
    },
    Kind {
        name: "events",
        stream: "orders",
        endpoints: &["bulk_create_events"],
        job_type: None,
        tier: (TIER_M_PER_MINUTE, "M"),
        per_request: 1_000.0,
    },
];

async fn written(klaviyo: &str) -> anyhow::Result<WrittenSnapshot> {
    Ok(reqwest::get(format!("{klaviyo}/klaviyo/_admin/written"))
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// `stats["endpoints"][endpoint][field]` summed over `endpoints`.
fn endpoint_sum(stats: &Value, endpoints: &[&str], field: &str) -> f64 {
    endpoints
        .iter()
        .map(|e| stats["endpoints"][*e][field].as_f64().unwrap_or(0.0))
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = sluice_e2e::numeric_args();
    let spec = CommercetoolsDataSpec {
        seed: 33,
        customers: args.first().copied().unwrap_or(5_000),
        orders: args.get(1).copied().unwrap_or(20_000),
        categories: args.get(2).map_or(200, |&n| n as u32),
        products: args.get(3).copied().unwrap_or(2_000),
        ..CommercetoolsDataSpec::default()
    };
    let mut env = TestEnv::new().await?;
    let commercetools = env
        .start_commercetools_sandbox(CommercetoolsConfig {
            data: spec.clone(),
            ..CommercetoolsConfig::default()
        })
        .await?;
    let klaviyo = env
        .start_klaviyo_sandbox(KlaviyoConfig {
            data: KlaviyoDataSpec {
                seed: 33,
                profiles: 5,
                events_per_metric: 5,
                ..KlaviyoDataSpec::default()
            },
            // Klaviyo's own limits (`None` would be unlimited).
            rate_limit_scale: Some(1.0),
            ..KlaviyoConfig::default()
        })
        .await?;
    env.add_klaviyo_destination(DESTINATION, &[("preferred_locale", "en-GB")]);
    // A free port for the sync API a Klaviyo destination turns on (not the plugin's 6779).
    env.enable_sync_api(DESTINATION)?;
    env.start_pipeline(2);
    // Let every service connect (and the loaders count each other) before the clock starts.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "klaviyo sync: {} categories, {} products, {} customers, {} orders; {cores} cores shared with Postgres, RabbitMQ, the emulators and every service",
        spec.categories, spec.products, spec.customers, spec.orders
    );
    let http = reqwest::Client::new();
    for stream in ["categories", "products", "customers", "orders"] {
        http.post(format!("{klaviyo}/klaviyo/_admin/stats/reset"))
            .send()
            .await?
            .error_for_status()?;
        http.post(format!("{commercetools}/commercetools/_admin/stats/reset"))
            .send()
            .await?
            .error_for_status()?;
        let before = written(&klaviyo).await?;
        let started = Instant::now();
        let job = env
            .request_job_into(
                "commercetools",
                stream,
                "default",
                json!({}),
                Mode::Full,
                DESTINATION,
            )
            .await?;
        let report = env.wait_job(job, Duration::from_secs(3600)).await?;
        let elapsed = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            report.summary.state == "succeeded",
            "the {stream} push ended {}: {:?}",
            report.summary.state,
            report.summary.error
        );
        let after = written(&klaviyo).await?;
        let stats = klaviyo_stats(&klaviyo).await?;
        let (ok, throttled) = (
            stats["total"]["ok"].as_f64().unwrap_or(0.0),
            stats["total"]["throttled"].as_f64().unwrap_or(0.0),
        );
        println!(
            "{stream} push: {} rows loaded, {} rejected, {elapsed:.1} s; {} requests, 429 responses {throttled} = {:.2} %",
            report.summary.rows_loaded,
            report.summary.rows_rejected,
            ok + throttled,
            100.0 * throttled / (ok + throttled).max(1.0)
        );
        let read: Value = http
            .get(format!("{commercetools}/commercetools/_admin/stats"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        println!(
            "  commercetools requests by resource (status: count): {}",
            read["requests"]["by_resource"]
        );
        println!("  Klaviyo requests per endpoint, busiest first:");
        for line in endpoint_table(&stats, elapsed) {
            println!("{line}");
        }
        for kind in KINDS.iter().filter(|k| k.stream == stream) {
            let new_jobs = &after.jobs[before.jobs.len()..];
            let (objects, jobs) = match kind.job_type {
                Some(prefix) => {
                    let jobs: Vec<_> = new_jobs
                        .iter()
                        .filter(|j| j.kind.starts_with(prefix))
                        .collect();
                    (
                        jobs.iter().map(|j| j.completed_count).sum::<u64>() as f64,
                        jobs.len(),
                    )
                }
                None => (
                    (after.counts.events + after.counts.events_deduplicated
                        - before.counts.events
                        - before.counts.events_deduplicated) as f64,
                    0,
                ),
            };
            let requests = endpoint_sum(&stats, kind.endpoints, "ok");
            let refused = endpoint_sum(&stats, kind.endpoints, "throttled");
            let (per_minute, tier) = kind.tier;
            let steady = per_minute / 60.0;
            let line = format!(
                "  {:<18} {objects:>7} objects, {:>8.1} objects/s; {requests:>5} write requests = {:>5.2}/s = {:>5.1} % of tier {tier}'s steady {steady:.2}/s ({:.0} objects per request); 429s on its endpoints {refused} = {:.2} %",
                kind.name,
                objects / elapsed,
                requests / elapsed,
                100.0 * requests / elapsed / steady,
                objects / requests.max(1.0),
                100.0 * refused / (requests + refused).max(1.0),
            );
            println!("{line}");
            let bytes = endpoint_sum(&stats, kind.endpoints, "ok_request_bytes");
            println!(
                "  {:<18} {:.2} MB per write request on average (Klaviyo's limit: 5 MB, {} objects)",
                "",
                bytes / requests.max(1.0) / 1e6,
                kind.per_request
            );
            if let Some(w) = write_window(&stats, kind.endpoints) {
                println!(
                    "  {:<18} while it wrote (first write {:.1} s, last {:.1} s into the push): {:.2} requests/s = {:.1} % of the steady limit",
                    "",
                    w.first,
                    w.last,
                    w.rate,
                    100.0 * w.rate / steady
                );
            }
            // What the tier allows at best: full jobs at the steady rate. A push that is
            // short of it is held back by something else (the fetch, lookups, job
            // lifecycles), whatever its share of requests.
            let capacity = steady * kind.per_request;
            let tier_bound = (objects / kind.per_request).ceil() / steady;
            println!(
                "  {:<18} {:.1} % of the tier's object capacity ({capacity:.0}/s: full jobs of {} at the steady rate); the tier alone needs {tier_bound:.1} s of the push's {elapsed:.1} s",
                "",
                100.0 * objects / elapsed / capacity,
                kind.per_request
            );
            if kind.name == "profiles" {
                let import = format!(
                    "  profiles through bulk import jobs: {:.1} profiles/s, {jobs} jobs of {:.0} profiles on average",
                    objects / elapsed,
                    objects / (jobs.max(1) as f64)
                );
                println!("{import}");
            }
        }
    }
    env.teardown().await?;
    Ok(())
}

/// When an endpoint (or several, together) answered 2xx during a push, from the emulator's
/// `first_ok_ms`/`last_ok_ms`: seconds from the counters' reset (the push's start) to the
/// first and the latest answer, and the requests per second between them.
struct WriteWindow {
    first: f64,
    last: f64,
    rate: f64,
}

/// The write window of `endpoints` together; `None` with fewer than two requests (no rate).
fn write_window(stats: &Value, endpoints: &[&str]) -> Option<WriteWindow> {
    let field = |e: &str, f: &str| stats["endpoints"][e][f].as_f64();
    let first = endpoints
        .iter()
        .filter_map(|e| field(e, "first_ok_ms"))
        .reduce(f64::min)?;
    let last = endpoints
        .iter()
        .filter_map(|e| field(e, "last_ok_ms"))
        .reduce(f64::max)?;
    let ok = endpoint_sum(stats, endpoints, "ok");
    // n requests span n − 1 intervals.
    (ok >= 2.0 && last > first).then(|| WriteWindow {
        first: first / 1000.0,
        last: last / 1000.0,
        rate: (ok - 1.0) / ((last - first) / 1000.0),
    })
}

/// Every endpoint the push called, busiest first by its share of its tier's steady limit
/// over the push (the endpoint with the highest share is the tier closest to holding the
/// push back): requests, 429s, that share, and the share while the endpoint was in use.
fn endpoint_table(stats: &Value, elapsed: f64) -> Vec<String> {
    let mut rows: Vec<(f64, String)> = stats["endpoints"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(e, c)| {
            let ok = c["ok"].as_f64().unwrap_or(0.0);
            let steady = c["steady_per_minute"].as_f64().unwrap_or(f64::INFINITY) / 60.0;
            let share = 100.0 * ok / elapsed / steady;
            let window = write_window(stats, &[e.as_str()]).map_or(String::new(), |w| {
                format!(
                    ", {:.1} % from {:.1} s to {:.1} s",
                    100.0 * w.rate / steady,
                    w.first,
                    w.last
                )
            });
            (
                share,
                format!(
                    "    {e:<40} tier {:<2} {ok:>5} ok, {:>3} 429s: {share:>5.1} % of its steady limit over the push{window}",
                    c["tier"].as_str().unwrap_or("?"),
                    c["throttled"],
                ),
            )
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    rows.into_iter().map(|(_, line)| line).collect()
}
