//! End to end: Klaviyo events (or commercetools orders) from an unthrottled sandbox through
//! planner, fetchers, RabbitMQ and loader into Postgres, with the services as real
//! (release) processes.
//!
//! `cargo bench --bench pipeline [-- EVENTS [FETCHER COUNTS…] [include_profile]]` (defaults:
//! 1,000,000 events; runs with 1, 2 and 4 fetchers, then one run of 2 × EVENTS with 2
//! fetchers for growth; `include_profile` asks for the events' profiles too).
//! `cargo bench --bench pipeline -- commercetools [ORDERS [FETCHER COUNTS…]]` (defaults
//! 100,000 orders, 1, 2 and 4 fetchers): a commercetools orders backfill instead, counting
//! resources (orders and their line items) per second.
//! `cargo bench --bench pipeline -- sailthru [MESSAGES [FETCHER COUNTS…]]` (defaults
//! 200,000 messages, 1, 2 and 4 fetchers): a generated Sailthru data-exporter archive
//! (served by the sandbox, fetched once before the clock starts), counting rows of every
//! `sailthru.*` table.
//! For each run it prints records per second, each service's CPU seconds, CPU µs per
//! record loaded and peak RSS (`VmHWM`), the CPU of Postgres and RabbitMQ (every process of
//! theirs, so other clients' too on a shared machine), and the deepest backlog seen on the
//! fetch and load queues, which together name the bottleneck: the process that used the
//! most CPU per second of wall time while its input queue was backed up. The sum of every
//! process's CPU per record gives the ceiling the machine's cores put on the run; Klaviyo
//! runs also print issue 15's targets beside their measured values.
//!
//! The services inherit the bench's environment, so `SLUICE__…` variables change their
//! settings for a run (`SLUICE__CONNECTORS__KLAVIYO__PAGE_SIZES__EVENTS=100`,
//! `SLUICE__FETCHER__MAX_PART_BYTES`, `SLUICE__LOADER__GROUP_BYTES`); the bench prints the
//! ones set.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_e2e::{TestEnv, cpu_seconds, cpu_seconds_of, utc};
use sluice_sandbox::commercetools::{CommercetoolsConfig, CommercetoolsDataSpec};
use sluice_sandbox::klaviyo::{KlaviyoConfig, KlaviyoDataSpec, metric_id};

/// The processes sluice runs beside, by command name, as printed.
const BESIDE: [(&str, &str); 2] = [("postgres", "Postgres"), ("beam.smp", "RabbitMQ")];

struct Proc {
    name: String,
    pid: u32,
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What a run loads.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    Klaviyo,
    Commercetools,
    Sailthru,
}

async fn run(
    source: Source,
    events: u64,
    fetchers: usize,
    include_profile: bool,
) -> anyhow::Result<f64> {
    let spec = KlaviyoDataSpec {
        seed: 9,
        profiles: 50_000,
        start: utc(2024, 1, 1),
        end: utc(2024, 4, 1),
        events_per_metric: events,
        ..KlaviyoDataSpec::default()
    };
    let placed = metric_id(&spec, "Placed Order").expect("metric");
    let mut env = TestEnv::new().await?;
    let commercetools = CommercetoolsDataSpec {
        seed: 9,
        customers: 10_000,
        orders: events,
        categories: 20,
        products: 200,
        ..CommercetoolsDataSpec::default()
    };
    match source {
        Source::Klaviyo => {
            env.start_klaviyo_sandbox(KlaviyoConfig {
                data: spec.clone(),
                rate_limit_scale: None,
                ..KlaviyoConfig::default()
            })
            .await?;
        }
        Source::Commercetools => {
            env.start_commercetools_sandbox(CommercetoolsConfig {
                data: commercetools,
                ..CommercetoolsConfig::default()
            })
            .await?;
        }
        Source::Sailthru => {}
    }
    // Generated and fetched once here, so neither counts against the job.
    let export = match source {
        Source::Sailthru => Some(
            env.generated_sailthru_export(
                9,
                events,
                chrono::NaiveDate::from_ymd_opt(2024, 1, 2).expect("date"),
            )
            .await?
            .0,
        ),
        _ => None,
    };
    let mut procs = Vec::new();
    let mut spawned = Vec::new();
    spawned.push(("planner".to_string(), env.spawn("planner", &[])?));
    for i in 0..fetchers {
        spawned.push((format!("fetcher-{i}"), env.spawn("fetcher", &[])?));
    }
    spawned.push(("loader".to_string(), env.spawn("loader", &[])?));
    for (name, index) in spawned {
        procs.push(Proc {
            name,
            pid: env.pid(index),
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let broker = sluice_broker::Broker::connect(&env.settings.amqp, "bench").await?;
    let cpu_before: Vec<f64> = procs.iter().map(|p| cpu_seconds(p.pid)).collect();
    let bench_cpu = cpu_seconds(std::process::id());
    let beside_before: Vec<f64> = BESIDE
        .iter()
        .map(|(comm, _)| cpu_seconds_of(comm))
        .collect();
    let started = Instant::now();
    let job = match source {
        Source::Klaviyo => {
            env.request_job(
                "klaviyo",
                "events",
                json!({
                    "since": spec.start.to_rfc3339(),
                    "until": spec.end.to_rfc3339(),
                    "metrics": [placed],
                    "include_profile": include_profile,
                }),
            )
            .await?
        }
        Source::Commercetools => {
            env.request_job("commercetools", "orders", json!({}))
                .await?
        }
        Source::Sailthru => {
            env.sync_sailthru(export.as_deref().expect("generated above"), None)
                .await?
        }
    };
    let (report, max_fetch, max_load) = env.wait_job_watching_queues(&broker, job).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let rows = report.summary.rows_loaded as f64;
    let what = match source {
        Source::Klaviyo => "events",
        Source::Commercetools => "orders",
        Source::Sailthru => "messages",
    };
    let unit = match source {
        Source::Klaviyo if include_profile => "rows/s (events and their profiles)",
        Source::Klaviyo => "events/s",
        Source::Commercetools => "resources/s (orders and line items)",
        Source::Sailthru => "rows/s (every sailthru.* table)",
    };
    println!(
        "{fetchers} fetcher(s), {events} {what} generated: job {} in {elapsed:.1} s, {rows} rows, {:.0} {unit}; deepest backlog: fetch {max_fetch}, load {max_load} messages",
        report.summary.state,
        rows / elapsed
    );
    let sandbox = cpu_seconds(std::process::id()) - bench_cpu;
    println!(
        "  {:<10} CPU {sandbox:>6.1} s ({:>3.0} % of one core)  (the bench process)",
        "sandbox",
        100.0 * sandbox / elapsed
    );
    let (mut fetchers_cpu, mut sluice_cpu) = (0.0, 0.0);
    let (mut fetcher_rss, mut loader_rss) = (0.0f64, 0.0f64);
    for (p, before) in procs.iter().zip(cpu_before) {
        let cpu = cpu_seconds(p.pid) - before;
        sluice_cpu += cpu;
        if p.name.starts_with("fetcher") {
            fetchers_cpu += cpu;
            fetcher_rss = fetcher_rss.max(peak_rss_mb(p.pid));
        } else if p.name == "loader" {
            loader_rss = peak_rss_mb(p.pid);
        }
        println!(
            "  {:<10} CPU {cpu:>6.1} s ({:>3.0} % of one core, {:>5.1} µs per record)  peak RSS {:>6.1} MB",
            p.name,
            100.0 * cpu / elapsed,
            1e6 * cpu / rows.max(1.0),
            peak_rss_mb(p.pid)
        );
    }
    let per = |cpu: f64| 1e6 * cpu / rows.max(1.0);
    let mut everything = sluice_cpu + sandbox;
    for ((comm, what), before) in BESIDE.iter().zip(beside_before) {
        let cpu = cpu_seconds_of(comm) - before;
        everything += cpu;
        println!(
            "  {what:<10} CPU {cpu:>6.1} s ({:>3.0} % of one core, {:>5.1} µs per record)  (every `{comm}` process, other clients' too)",
            100.0 * cpu / elapsed,
            per(cpu)
        );
    }
    println!(
        "  fetchers together: {:.1} µs of CPU per record; load average {}",
        per(fetchers_cpu),
        sluice_e2e::load_average()
    );
    // The ceiling the machine puts on this run: every process above shares its cores, so
    // at this CPU per record no pipeline on it can pass cores / Σ CPU per record.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "  all processes: {:.1} µs of CPU per record (sluice {:.1}, the sandbox, Postgres and RabbitMQ {:.1}): {cores} cores allow at most {:.0} records/s at that cost",
        per(everything),
        per(sluice_cpu),
        per(everything - sluice_cpu),
        cores * rows.max(1.0) / everything.max(1e-9)
    );
    if source == Source::Klaviyo {
        // Per event, not per row: with `include=profile` the profiles are rows too.
        let per_event = |cpu: f64| 1e6 * cpu / events.max(1) as f64;
        println!(
            "  targets (issue 15): fetchers ≤ {} µs per event (include=profile {}): {:.1}; all sluice processes ≤ 12 µs: {:.1}; ≥ 58,000 events/s end to end: {:.0}; peak RSS ≤ 128 MB: fetchers {fetcher_rss:.1} MB, loader {loader_rss:.1} MB",
            if include_profile { 8 } else { 5 },
            if include_profile { "on" } else { "off" },
            per_event(fetchers_cpu),
            per_event(sluice_cpu),
            events as f64 / elapsed
        );
    }
    broker.close().await;
    env.teardown().await?;
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let source = if std::env::args().any(|a| a == "commercetools") {
        Source::Commercetools
    } else if std::env::args().any(|a| a == "sailthru") {
        Source::Sailthru
    } else {
        Source::Klaviyo
    };
    let args = sluice_e2e::numeric_args();
    let default_size = match source {
        Source::Klaviyo => 1_000_000,
        Source::Commercetools => 100_000,
        Source::Sailthru => 200_000,
    };
    let events = args.first().copied().unwrap_or(default_size);
    let counts: Vec<usize> = if args.len() > 1 {
        args[1..].iter().map(|&n| n as usize).collect()
    } else {
        vec![1, 2, 4]
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cores} cores; Postgres, RabbitMQ, the sandbox and every service share them; load average {}",
        sluice_e2e::load_average()
    );
    // Values of names that may hold a secret are not printed.
    for (name, value) in std::env::vars().filter(|(n, _)| n.starts_with("SLUICE__")) {
        let secret = ["URL", "KEY", "SECRET", "PASSWORD", "TOKEN"]
            .iter()
            .any(|s| name.contains(s));
        println!(
            "setting {name}={}",
            if secret { "…" } else { value.as_str() }
        );
    }
    // Klaviyo events with their profiles (`include=profile`): the fetcher also converts
    // about one profile per event.
    let include_profile = std::env::args().any(|a| a == "include_profile");
    let mut two = None;
    for &n in &counts {
        let t = run(source, events, n, include_profile).await?;
        if n == 2 {
            two = Some(t);
        }
    }
    if let Some(t1) = two.filter(|_| source == Source::Klaviyo) {
        let t2 = run(source, events * 2, 2, include_profile).await?;
        println!(
            "growth: {} events took {:.2} × the time of {events} (target ≤ 2.2×)",
            events * 2,
            t2 / t1
        );
    }
    Ok(())
}
