//! Operator workflows through the real `sluicectl` binary: parking and replaying a failed
//! task, cancelling a job.

use std::time::Duration;

use sluice_e2e::{TestEnv, init_logging, sailthru_sample};

const WAIT: Duration = Duration::from_secs(120);

fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_task_is_parked_fails_the_job_and_replays_once_fixed() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_planner();
    env.start_loader();
    let dir = tempfile::tempdir().expect("tempdir");
    let export = dir.path().join("sailthru_export.zip");
    std::fs::copy(sailthru_sample(), &export).expect("copy sample");

    // Plan with no fetcher running, then take the archive away: every fetch now fails.
    let job = env
        .sync_sailthru(export.to_str().expect("utf-8"), None)
        .await
        .expect("job");
    let deadline = std::time::Instant::now() + WAIT;
    while env.report(job).await.expect("report").summary.state != "running" {
        assert!(std::time::Instant::now() < deadline, "job never planned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Moved away (not rewritten: the plan pinned the archive's ETag, which a copy changes).
    let aside = dir.path().join("aside.zip");
    std::fs::rename(&export, &aside).expect("move archive away");
    env.start_fetcher();

    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "failed", "{report:#?}");
    assert_eq!(report.failed_tasks.len(), 4, "{report:#?}");
    let error = report.summary.error.clone().unwrap_or_default();
    assert!(error.contains("4 task(s) failed"), "{error}");
    assert!(
        error.contains("sailthru_export.zip"),
        "the error names the archive: {error}"
    );
    assert_eq!(env.count("sailthru.blast").await.expect("count"), 0);

    let listed = env.sluicectl(&["dlq", "list"]).await.expect("dlq list");
    assert!(listed.status.success(), "{}", text(&listed));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("dlq list prints JSON lines"))
        .collect();
    assert_eq!(lines.len(), 4, "{}", text(&listed));
    assert!(
        lines
            .iter()
            .all(|l| l["job_id"] == job.to_string() && l["origin"] == "fetch")
    );
    assert!(lines.iter().all(|l| {
        l["error"]
            .as_str()
            .unwrap_or_default()
            .contains("sailthru_export.zip")
    }));

    // Listing left them parked; fix the cause and replay.
    std::fs::rename(&aside, &export).expect("move archive back");
    let replayed = env.sluicectl(&["dlq", "replay"]).await.expect("dlq replay");
    assert!(replayed.status.success(), "{}", text(&replayed));
    assert!(
        String::from_utf8_lossy(&replayed.stdout).contains("replayed 4, left parked 0"),
        "{}",
        text(&replayed)
    );

    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_eq!(
        env.count("sailthru.profile_vars").await.expect("count"),
        1525
    );
    let listed = env.sluicectl(&["dlq", "list"]).await.expect("dlq list");
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        0,
        "{}",
        text(&listed)
    );
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_job_stops_it_and_frees_the_stream() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_planner();
    env.start_loader();
    let sample = sailthru_sample();
    let job = env
        .sync_sailthru(sample.to_str().expect("utf-8"), Some(5))
        .await
        .expect("job");
    let deadline = std::time::Instant::now() + WAIT;
    while env.report(job).await.expect("report").summary.state != "running" {
        assert!(std::time::Instant::now() < deadline, "job never planned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = env
        .sluicectl(&["jobs", "cancel", &job.to_string()])
        .await
        .expect("cancel");
    assert!(out.status.success(), "{}", text(&out));
    // A fetcher that starts now finds only tasks of a cancelled job: nothing is loaded.
    env.start_fetcher();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = env.report(job).await.expect("report");
    assert_eq!(report.summary.state, "cancelled");
    assert_eq!(report.summary.rows_loaded, 0, "{report:#?}");
    assert_eq!(env.count("sailthru.blast").await.expect("count"), 0);
    let again = env
        .sluicectl(&["jobs", "cancel", &job.to_string()])
        .await
        .expect("cancel");
    assert!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("already ended: cancelled"),
        "{}",
        text(&again)
    );

    // The stream is free: the next job runs to the end.
    let next = env
        .sync_sailthru(sample.to_str().expect("utf-8"), None)
        .await
        .expect("job");
    let report = env.wait_job(next, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    let show = env
        .sluicectl(&["jobs", "show", &next.to_string(), "--json"])
        .await
        .expect("show");
    assert!(show.status.success(), "{}", text(&show));
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("json");
    assert_eq!(shown["state"], "succeeded");
    assert_eq!(shown["rows_per_table"]["sailthru.profile_geo"], 508);
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_that_crashes_its_fetcher_every_time_is_parked_and_replayed_once_fixed() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_planner_with_poison();
    env.start_loader();
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("poisoned");
    std::fs::write(&marker, b"crash").expect("marker");
    let job = env
        .request_job(
            "poison",
            "poison",
            serde_json::json!({ "poison_file": marker.to_str().expect("utf-8") }),
        )
        .await
        .expect("job");

    // A fetcher that takes one task at a time; a supervisor (this loop) restarts it after
    // every crash, as Kubernetes would.
    let poison_env = [
        ("SLUICE_E2E_POISON", "1"),
        ("SLUICE__FETCHER__CONCURRENCY", "1"),
    ];
    let mut fetcher = env.spawn("fetcher", &poison_env).expect("fetcher");
    let mut crashes = 0;
    let deadline = std::time::Instant::now() + WAIT;
    let report = loop {
        let report = env.report(job).await.expect("report");
        if report.summary.state == "failed" || report.summary.state == "succeeded" {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job never ended: {report:#?}"
        );
        if !env.is_running(fetcher) {
            crashes += 1;
            fetcher = env.spawn("fetcher", &poison_env).expect("fetcher again");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(report.summary.state, "failed", "{report:#?}");
    assert!(
        crashes >= 3,
        "the fetcher crashed on every delivery: {crashes}"
    );
    assert_eq!(report.failed_tasks.len(), 1, "{report:#?}");
    let (task, error) = &report.failed_tasks[0];
    let job_error = report.summary.error.clone().unwrap_or_default();
    assert!(
        job_error.contains(task.as_str()),
        "the job names the task: {job_error}"
    );
    assert!(
        error.contains("delivery limit"),
        "the reason is the delivery limit: {error}"
    );
    // The other two tasks loaded.
    assert_eq!(env.count("sailthru.blast").await.expect("count"), 2);

    // The cause goes away; the operator replays the parking lot.
    std::fs::remove_file(&marker).expect("cure");
    if !env.is_running(fetcher) {
        env.spawn("fetcher", &poison_env).expect("fetcher again");
    }
    let listed = env.sluicectl(&["dlq", "list"]).await.expect("dlq list");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(task.as_str()),
        "{}",
        text(&listed)
    );
    let replayed = env
        .sluicectl(&["dlq", "replay", "--job", &job.to_string()])
        .await
        .expect("replay");
    assert!(
        String::from_utf8_lossy(&replayed.stdout).contains("replayed 1, left parked 0"),
        "{}",
        text(&replayed)
    );
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_eq!(env.count("sailthru.blast").await.expect("count"), 3);
    env.teardown().await.expect("teardown");
}
