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

use sluice_contracts::FetchTask;

/// Events per page (the connector's default `page_sizes.events`, the API's maximum).
const PAGE_SIZE: usize = 1000;
/// `fetcher.max_part_bytes`' default.
const MAX_PART_BYTES: usize = 4 << 20;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iterations: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200);
    let include_profile = args.iter().any(|a| a == "include_profile");

    let (body, metric) = sluice_e2e::klaviyo_events_page(include_profile)?;
    let task = sluice_e2e::klaviyo_events_task(&metric);
    // One warm-up page (cold caches, first allocations), also to count what a page holds:
    // a middle page hands over all its events but those at its last instant, which wait
    // for the next page (a split would re-read them), so 999 of the 1,000 converted here.
    let (handed_over, bytes) = measured(&task, &body, &metric, include_profile, 1)?;
    anyhow::ensure!(
        (PAGE_SIZE - 10..=PAGE_SIZE).contains(&handed_over),
        "the sandbox served a page of {handed_over} events, not a full page of {PAGE_SIZE}"
    );
    let events = PAGE_SIZE;

    let cpu = sluice_e2e::cpu_seconds(std::process::id());
    let wall = Instant::now();
    measured(&task, &body, &metric, include_profile, iterations)?;
    let wall = wall.elapsed().as_secs_f64();
    let cpu = sluice_e2e::cpu_seconds(std::process::id()) - cpu;
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
        sluice_e2e::load_average()
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
