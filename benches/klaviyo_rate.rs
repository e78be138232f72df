//! Extraction at the API's rate limit: an events backfill from the sandbox's Klaviyo
//! emulation at Klaviyo's real XL limits (350/s burst, 3500/min steady) with three
//! fetchers, through RabbitMQ and the loader into Postgres.
//!
//! `cargo bench --bench klaviyo_rate [-- EVENTS [PAGE_SIZE [FETCHERS]]]` (defaults 600000,
//! 100, 3). Needs RabbitMQ and Postgres at their default local addresses. Prints requests
//! per second achieved against the steady limit (target ≥ 90 %) and the share of 429
//! responses (target < 1 %), from the sandbox's own counters.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_e2e::{TestEnv, klaviyo_stats, utc};
use sluice_sandbox::klaviyo::{KlaviyoConfig, KlaviyoDataSpec, metric_id};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = sluice_e2e::numeric_args();
    let events = args.first().copied().unwrap_or(600_000);
    let page_size = args.get(1).copied().unwrap_or(100);
    let fetchers = args.get(2).copied().unwrap_or(3) as usize;

    let spec = KlaviyoDataSpec {
        seed: 5,
        profiles: 20_000,
        start: utc(2024, 1, 1),
        end: utc(2024, 3, 1),
        events_per_metric: events,
        ..KlaviyoDataSpec::default()
    };
    let placed = metric_id(&spec, "Placed Order").expect("metric");
    let mut env = TestEnv::new().await?;
    let sandbox = env
        .start_klaviyo_sandbox(KlaviyoConfig {
            data: spec.clone(),
            rate_limit_scale: Some(1.0),
            ..KlaviyoConfig::default()
        })
        .await?;
    env.start_pipeline(fetchers);
    // Let every fetcher connect and count its peers before the clock starts.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let http = reqwest::Client::new();
    http.post(format!("{sandbox}/klaviyo/_admin/stats/reset"))
        .send()
        .await?;

    let started = Instant::now();
    let job = env
        .request_job(
            "klaviyo",
            "events",
            json!({
                "since": spec.start.to_rfc3339(),
                "until": spec.end.to_rfc3339(),
                "metrics": [placed],
                "page_size": page_size,
            }),
        )
        .await?;
    let report = env.wait_job(job, Duration::from_secs(3600)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = klaviyo_stats(&sandbox).await?;
    let tier = &stats["tiers"]["XL"];
    let ok = tier["ok"].as_f64().unwrap_or(0.0);
    let throttled = tier["throttled"].as_f64().unwrap_or(0.0);
    let steady = 3500.0 / 60.0;
    println!(
        "events backfill: {} events, page size {page_size}, {fetchers} fetchers, tier XL (350/s, 3500/min)",
        report.summary.rows_loaded
    );
    println!("job state {}, {elapsed:.1} s", report.summary.state);
    println!(
        "requests/s {:.1} = {:.1} % of the steady limit ({steady:.1}/s)",
        ok / elapsed,
        100.0 * ok / elapsed / steady
    );
    println!(
        "429 responses {throttled} of {} = {:.2} %",
        ok + throttled,
        100.0 * throttled / (ok + throttled).max(1.0)
    );
    println!("sandbox stats: {}", stats["tiers"]["XL"]);
    env.teardown().await?;
    Ok(())
}
