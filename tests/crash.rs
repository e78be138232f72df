//! Crash safety: SIGKILL the loader and a fetcher (real processes) in the middle of a large
//! generated export, start them again, and the tables still end with exactly the rows the
//! export holds.

use std::time::{Duration, Instant};

use sluice_e2e::{TestEnv, init_logging};

const SEED: u64 = 20_161_120;
const MESSAGES: u64 = 40_000;

async fn wait_until_rows(env: &TestEnv, job: uuid::Uuid, rows: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let report = env.report(job).await.expect("report");
        if report.summary.rows_loaded >= rows {
            return;
        }
        assert!(
            report.summary.state == "running" || report.summary.state == "queued",
            "job ended before the kill point: {report:#?}"
        );
        assert!(
            Instant::now() < deadline,
            "no progress to {rows} rows: {report:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_loader_and_fetcher_mid_job_loses_and_duplicates_nothing() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let (url, expected, total) = env
        .generated_sailthru_export(
            SEED,
            MESSAGES,
            chrono::NaiveDate::from_ymd_opt(2024, 1, 2).expect("date"),
        )
        .await
        .expect("generated export");

    // Small loader batches in flight and small pages: many tasks, many parts.
    let loader_env = [("SLUICE__LOADER__CONCURRENCY", "2")];
    env.spawn("planner", &[]).expect("planner");
    let fetcher_a = env
        .spawn("fetcher", &[("SLUICE__FETCHER__CONCURRENCY", "2")])
        .expect("fetcher");
    env.spawn("fetcher", &[("SLUICE__FETCHER__CONCURRENCY", "2")])
        .expect("fetcher");
    let loader = env.spawn("loader", &loader_env).expect("loader");

    let job = env.sync_sailthru(&url, Some(1000)).await.expect("job");

    // Kill the loader a quarter of the way in, and a fetcher halfway.
    wait_until_rows(&env, job, (total / 4) as i64, Duration::from_secs(240)).await;
    env.kill(loader).expect("kill loader");
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.spawn("loader", &loader_env).expect("loader again");
    wait_until_rows(&env, job, (total / 2) as i64, Duration::from_secs(240)).await;
    env.kill(fetcher_a).expect("kill fetcher");
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.spawn("fetcher", &[("SLUICE__FETCHER__CONCURRENCY", "2")])
        .expect("fetcher again");

    let report = env
        .wait_job(job, Duration::from_secs(600))
        .await
        .expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_eq!(report.summary.rows_rejected, 0, "{:#?}", report.rejected);
    for (table, n) in &expected {
        assert_eq!(
            env.count(&format!("sailthru.{table}"))
                .await
                .expect("count"),
            *n as i64,
            "rows in sailthru.{table}"
        );
    }
    // Every part was recorded exactly once, so the ledger's row total equals the export's.
    assert_eq!(report.summary.rows_loaded as u64, total, "{report:#?}");
    env.teardown().await.expect("teardown");
}
