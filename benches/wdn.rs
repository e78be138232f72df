//! The What Drops Now catalogue end to end against its floor: a generated catalogue from the
//! sandbox's emulation (the real API's limits: slower above 5 concurrent requests, refused
//! from 8; a fixed latency per request) through planner, fetchers, RabbitMQ and loader into
//! Postgres, the services as real (release) processes, with the connector's default cap of
//! 5 requests in flight.
//!
//! `cargo bench --bench wdn [-- PRODUCTS [LATENCY_MS [FETCHERS]]]` (defaults: 26,000 products
//! — the e2e test's catalogue, ~21,000 of them of the five default brands with ~57,000
//! offers — 20 ms, 2 fetchers).
//!
//! The floor is what the cap allows: requests ÷ 5 × latency (every request takes at least
//! the latency, and at most 5 are in flight). It prints the wall time of the job, the floor,
//! the gap between them, the emulator's peak and mean requests in flight, each service's CPU
//! seconds (and µs of CPU per row loaded) and the deepest backlog on the fetch and load queues, which together name what
//! the gap is made of.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_e2e::{TestEnv, cpu_seconds};
use sluice_sandbox::wdn::{NAMED_BRANDS, WdnConfig, WdnDataSpec, WdnStats};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = sluice_e2e::numeric_args();
    let products = args.first().copied().unwrap_or(26_000);
    let latency_ms = args.get(1).copied().unwrap_or(20);
    let fetchers = args.get(2).copied().unwrap_or(2) as usize;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cores} cores; Postgres, RabbitMQ, the sandbox and every service share them"
    );

    let mut config = WdnConfig {
        data: WdnDataSpec {
            seed: 7,
            brands: 8,
            products,
            retailers: 320,
            ..WdnDataSpec::default()
        },
        ..WdnConfig::default()
    };
    config.faults.latency_ms = latency_ms;
    let expected = config
        .served()
        .expected(&NAMED_BRANDS)
        .expect("the named brands");
    let mut env = TestEnv::new().await?;
    let base = env.start_wdn_sandbox(config).await?;
    let mut procs = vec![("planner".to_string(), env.spawn("planner", &[])?)];
    for i in 0..fetchers {
        // Enough tasks per fetcher that one always waits for a permit.
        procs.push((
            format!("fetcher-{i}"),
            env.spawn("fetcher", &[("SLUICE__FETCHER__CONCURRENCY", "8")])?,
        ));
    }
    procs.push((
        "loader".to_string(),
        env.spawn("loader", &[("SLUICE__LOADER__GROUP_PARTS", "32")])?,
    ));
    let pids: Vec<(String, u32)> = procs
        .into_iter()
        .map(|(name, i)| (name, env.pid(i)))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let broker = sluice_broker::Broker::connect(&env.settings.amqp, "bench").await?;
    let cpu_before: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let bench_cpu = cpu_seconds(std::process::id());
    let started = Instant::now();
    let job = env.request_job("wdn", "catalogue", json!({})).await?;
    let (report, max_fetch, max_load) = env.wait_job_watching_queues(&broker, job).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let stats: WdnStats =
        reqwest::get(format!("{}/_admin/stats", base.trim_end_matches("/api/v1")))
            .await?
            .json()
            .await?;
    let floor = stats.total as f64 / 5.0 * latency_ms as f64 / 1000.0;
    println!(
        "{} products ({} of the five brands), {} offers, {} retailers; {fetchers} fetcher(s), {latency_ms} ms per request",
        products,
        expected.products.len(),
        expected.offers.len(),
        expected.retailers.len()
    );
    println!(
        "job {} in {elapsed:.1} s: {} requests (brand_search {}, products {}, offers {}, retailers {}), {:.0} requests/s",
        report.summary.state,
        stats.total,
        stats.endpoint("brand_search"),
        stats.endpoint("products"),
        stats.endpoint("offers"),
        stats.endpoint("retailers"),
        stats.total as f64 / elapsed
    );
    println!(
        "floor (requests ÷ 5 × {latency_ms} ms): {floor:.1} s; gap {:.1} s ({:.2} × the floor); emulator: peak {} in flight, mean {:.2} over its {:.1} s of requests, {} slowed, {} refused",
        elapsed - floor,
        elapsed / floor,
        stats.peak_concurrency,
        stats.mean_in_flight,
        stats.span_ms / 1000.0,
        stats.slowed,
        stats.refused
    );
    println!("deepest backlog: fetch {max_fetch}, load {max_load} messages");
    let sandbox = cpu_seconds(std::process::id()) - bench_cpu;
    println!(
        "  {:<10} CPU {sandbox:>6.1} s ({:>3.0} % of one core)  (the bench process)",
        "sandbox",
        100.0 * sandbox / elapsed
    );
    let rows = report.summary.rows_loaded.max(1) as f64;
    println!("rows loaded: {rows} (every wdn.* table)");
    for ((name, pid), before) in pids.iter().zip(cpu_before) {
        let cpu = cpu_seconds(*pid) - before;
        println!(
            "  {name:<10} CPU {cpu:>6.1} s ({:>3.0} % of one core, {:>6.1} µs per row loaded)",
            100.0 * cpu / elapsed,
            1e6 * cpu / rows
        );
    }
    broker.close().await;
    env.teardown().await?;
    Ok(())
}
