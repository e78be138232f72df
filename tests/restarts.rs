//! RabbitMQ and Postgres restarted in the middle of a job: the services report the outage
//! on `/readyz`, reconnect on their own with backoff, and the job ends with exactly the
//! expected rows.
//!
//! These restart the machine's shared servers, so they are `#[ignore]`d in the normal
//! (parallel) run. Run them alone, as root, with:
//!
//! ```sh
//! cargo test --test restarts -- --ignored --test-threads 1
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use sluice_e2e::{TestEnv, init_logging};

const SEED: u64 = 77;
const MESSAGES: u64 = 60_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed");
}

fn pg_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .max()
        .expect("a version")
}

async fn ready(port: u16) -> Option<bool> {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    Some(response.status().is_success())
}

async fn wait_ready(port: u16, want: bool, within: Duration) {
    let deadline = Instant::now() + within;
    while ready(port).await != Some(want) {
        assert!(
            Instant::now() < deadline,
            "/readyz on port {port} never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rows loaded so far; `None` while the database is away.
async fn rows_loaded(env: &TestEnv, job: uuid::Uuid) -> Option<i64> {
    env.report(job).await.ok().map(|r| r.summary.rows_loaded)
}

async fn wait_rows(env: &TestEnv, job: uuid::Uuid, rows: i64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while rows_loaded(env, job).await.unwrap_or(0) < rows {
        assert!(Instant::now() < deadline, "no progress to {rows} rows");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "restarts the shared RabbitMQ and PostgreSQL; run alone with --ignored --test-threads 1"]
async fn broker_and_database_restarts_mid_job_lose_and_duplicate_nothing() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let (url, expected, total) = env
        .generated_sailthru_export(
            SEED,
            MESSAGES,
            chrono::NaiveDate::from_ymd_opt(2024, 2, 1).expect("date"),
        )
        .await
        .expect("generated export");

    let (loader_port, fetcher_port, planner_port) = (free_port(), free_port(), free_port());
    let loader_bind = format!("127.0.0.1:{loader_port}");
    let fetcher_bind = format!("127.0.0.1:{fetcher_port}");
    let planner_bind = format!("127.0.0.1:{planner_port}");
    env.spawn(
        "planner",
        &[("SLUICE__PLANNER__ADMIN_BIND", planner_bind.as_str())],
    )
    .expect("planner");
    env.spawn(
        "fetcher",
        &[
            ("SLUICE__FETCHER__ADMIN_BIND", fetcher_bind.as_str()),
            ("SLUICE__FETCHER__CONCURRENCY", "2"),
        ],
    )
    .expect("fetcher");
    env.spawn(
        "loader",
        &[
            ("SLUICE__LOADER__ADMIN_BIND", loader_bind.as_str()),
            ("SLUICE__LOADER__CONCURRENCY", "2"),
        ],
    )
    .expect("loader");
    for port in [planner_port, fetcher_port, loader_port] {
        wait_ready(port, true, Duration::from_secs(60)).await;
    }
    let job = env.sync_sailthru(&url, Some(500)).await.expect("job");

    // RabbitMQ goes away for a few seconds.
    wait_rows(&env, job, (total / 5) as i64).await;
    run("rabbitmqctl", &["-q", "stop_app"]);
    for port in [planner_port, fetcher_port, loader_port] {
        wait_ready(port, false, Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    run("rabbitmqctl", &["-q", "start_app"]);
    for port in [planner_port, fetcher_port, loader_port] {
        wait_ready(port, true, Duration::from_secs(90)).await;
    }

    // Then Postgres.
    wait_rows(&env, job, (total / 2) as i64).await;
    let version = pg_version();
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &version,
            "main",
            "stop",
            "-m",
            "fast",
        ],
    );
    wait_ready(loader_port, false, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    run(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", &version, "main", "start"],
    );
    wait_ready(loader_port, true, Duration::from_secs(90)).await;

    let deadline = Instant::now() + Duration::from_secs(600);
    let report = loop {
        if let Ok(report) = env.report(job).await
            && (report.summary.state == "succeeded" || report.summary.state == "failed")
        {
            break report;
        }
        assert!(Instant::now() < deadline, "the job never ended");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    for (table, n) in &expected {
        assert_eq!(
            env.count(&format!("sailthru.{table}"))
                .await
                .expect("count"),
            *n as i64,
            "rows in sailthru.{table}"
        );
    }
    assert_eq!(
        report.summary.rows_loaded as u64, total,
        "every part recorded once"
    );
    env.teardown().await.expect("teardown");
}
