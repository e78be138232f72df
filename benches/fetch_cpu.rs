//! The fetcher's CPU per Klaviyo event (issue 15), without the network: a real page of
//! `GET /api/events` as the sandbox's Klaviyo emulator serves it (`page[size]=1000`,
//! optionally `include=profile`), run through what a fetcher does with each middle page of
//! an events task — decode the JSON:API body, convert the events (and included profiles)
//! into rows through the connector's `Collector`, hand them over, and encode the
//! `RecordBatch` parts (`sluice_fetcher::encode_parts`) — `ITERATIONS` times.
//!
//! `cargo bench --bench fetch_cpu [-- ITERATIONS [include_profile]]` (default 200
//! iterations) prints wall and CPU time per event (meaningless on a loaded box). The
//! repeatable figure is the instruction count under callgrind, collected only inside
//! [`measured`] (see `docs/benchmarks.md`, "Issue 15"):
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='fetch_cpu::measured' \
//!     target/release/deps/fetch_cpu-<hash> 20
//! ```
//!
//! instructions per event = the run's total `Ir` / ((ITERATIONS + 1) × 1,000): `measured`
//! also runs one warm-up page.

use std::hint::black_box;
use std::time::Instant;

use sluice_contracts::{FetchTask, TaskKind};
use sluice_sandbox::klaviyo::{KlaviyoConfig, KlaviyoDataSpec, metric_id};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Events per page (the connector's default `page_sizes.events`, the API's maximum).
const PAGE_SIZE: usize = 1000;
/// `fetcher.max_part_bytes`' default.
const MAX_PART_BYTES: usize = 4 << 20;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iterations: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200);
    let include_profile = args.iter().any(|a| a == "include_profile");

    let (body, metric) = page_body(include_profile)?;
    let task = FetchTask {
        v: 1,
        task_id: "bench".into(),
        job_id: Uuid::nil(),
        connector: "klaviyo".into(),
        stream: format!("events/{metric}"),
        account: "default".into(),
        kind: TaskKind::TimeRange {
            start: sluice_e2e::utc(2024, 1, 1),
            end: sluice_e2e::utc(2024, 3, 1),
            partition: Some(metric.clone()),
        },
        attempt: 1,
        params: serde_json::Value::Null,
        once: None,
    };
    // One warm-up page (cold caches, first allocations), also to count what a page holds:
    // a middle page hands over all its events but those at its last instant, which wait
    // for the next page (a split would re-read them), so 999 of the 1,000 converted here.
    let (handed_over, bytes) = measured(&task, &body, &metric, include_profile, 1)?;
    anyhow::ensure!(
        (PAGE_SIZE - 10..=PAGE_SIZE).contains(&handed_over),
        "the sandbox served a page of {handed_over} events, not a full page of {PAGE_SIZE}"
    );
    let events = PAGE_SIZE;

    let cpu = process_cpu_seconds();
    let wall = Instant::now();
    measured(&task, &body, &metric, include_profile, iterations)?;
    let wall = wall.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu;
    let per = 1e6 / (iterations * events) as f64;
    println!(
        "fetch_cpu: page of {events} events ({} KB body, include=profile {}), {} KB of RecordBatch parts per page, {iterations} pages",
        body.len() / 1024,
        if include_profile { "on" } else { "off" },
        bytes / 1024,
    );
    println!(
        "  per event: {:.2} µs wall, {:.2} µs CPU (target ≤ {} µs CPU; load average {})",
        wall * per,
        cpu * per,
        if include_profile { 8 } else { 5 },
        load_average()
    );
    Ok(())
}

/// The measured work: `iterations` pages from `body` to encoded parts. Returns the events
/// the last page handed over and the bytes of its parts.
#[inline(never)]
fn measured(
    task: &FetchTask,
    body: &[u8],
    metric: &str,
    include_profile: bool,
    iterations: usize,
) -> anyhow::Result<(usize, usize)> {
    let mut last = (0, 0);
    for _ in 0..iterations {
        let tables = sluice_connectors::klaviyo::bench_events_page(
            task,
            black_box(body),
            Some(metric),
            include_profile,
        )
        .map_err(|e| anyhow::anyhow!("undecodable page: {e}"))?;
        let events = tables
            .iter()
            .filter(|t| t.table == "klaviyo.events")
            .map(|t| t.rows.len())
            .sum();
        let mut next_part = 0;
        let parts =
            sluice_fetcher::encode_parts(task, tables, &mut next_part, None, MAX_PART_BYTES);
        last = (events, parts.iter().map(Vec::len).sum());
        black_box(parts);
    }
    Ok(last)
}

/// Serves a generated account from the sandbox in process, GETs the first page of 1,000
/// Placed Order events as the connector asks for it, and stops the sandbox. Returns the
/// body and the metric's id.
fn page_body(include_profile: bool) -> anyhow::Result<(Vec<u8>, String)> {
    let spec = KlaviyoDataSpec {
        seed: 15,
        profiles: 5_000,
        start: sluice_e2e::utc(2024, 1, 1),
        end: sluice_e2e::utc(2024, 3, 1),
        events_per_metric: 5_000,
        ..KlaviyoDataSpec::default()
    };
    let metric = metric_id(&spec, "Placed Order")
        .ok_or_else(|| anyhow::anyhow!("the generated account has no Placed Order metric"))?;
    let config = KlaviyoConfig {
        data: spec,
        rate_limit_scale: None,
        ..KlaviyoConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let mut sandbox_config = sluice_sandbox::Config::default().with(&config);
        sandbox_config.cache_dir = std::env::temp_dir().join("sluice-bench-fetch-cpu");
        let server = tokio::spawn(sluice_sandbox::run(sandbox_config, listener, stop.clone()));
        let mut query = vec![
            (
                "filter",
                format!(
                    "and(equals(metric_id,\"{metric}\"),greater-or-equal(datetime,2024-01-01T00:00:00Z),less-than(datetime,2024-03-01T00:00:00Z))"
                ),
            ),
            ("sort", "datetime".to_string()),
            ("page[size]", PAGE_SIZE.to_string()),
        ];
        if include_profile {
            query.push(("include", "profile".to_string()));
        }
        let response = reqwest::Client::new()
            .get(format!("{url}/api/events"))
            .query(&query)
            .header("Authorization", "Klaviyo-API-Key pk_sandbox")
            .header("revision", "2026-07-15")
            .header("accept", "application/vnd.api+json")
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?.to_vec();
        anyhow::ensure!(
            status.is_success(),
            "the sandbox answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        stop.cancel();
        server.await??;
        anyhow::Ok(body)
    })?;
    Ok((body, metric))
}

/// This process's user + system CPU seconds (`/proc/self/stat`), 0 where unreadable.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// The 1-minute load average, for reading the wall figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}
