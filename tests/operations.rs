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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relative_export_is_read_from_the_callers_directory() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_pipeline(1);
    // The caller's directory is not the services' (theirs is the test's).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(sailthru_sample(), dir.path().join("sample.zip")).expect("copy sample");

    let missing = env
        .sluicectl_in(
            dir.path(),
            &[],
            &["sync", "sailthru", "--export", "missing.zip"],
        )
        .await
        .expect("sluicectl");
    let wanted = std::path::absolute(dir.path().join("missing.zip")).expect("absolute");
    assert!(
        !missing.status.success()
            && String::from_utf8_lossy(&missing.stderr)
                .contains(&format!("no file {}", wanted.display())),
        "{}",
        text(&missing)
    );
    assert_eq!(env.count("sluice.jobs").await.expect("count"), 0);

    let synced = env
        .sluicectl_in(
            dir.path(),
            &[],
            &["sync", "sailthru", "--export", "sample.zip", "--wait"],
        )
        .await
        .expect("sluicectl");
    assert!(synced.status.success(), "{}", text(&synced));
    assert_eq!(
        env.count("sailthru.profile_vars").await.expect("count"),
        1525
    );
    let tables = env
        .sluicectl(&["tables", "sailthru", "--json"])
        .await
        .expect("tables");
    let counts: std::collections::BTreeMap<String, i64> = String::from_utf8_lossy(&tables.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON lines"))
        .map(|t| {
            (
                t["table"].as_str().unwrap_or_default().to_string(),
                t["rows"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    for (table, rows) in sluice_e2e::SAILTHRU_SAMPLE_COUNTS {
        assert_eq!(
            counts.get(&format!("sailthru.{table}")),
            Some(&rows),
            "{table}"
        );
    }
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mistaken_options_are_refused_before_a_job_is_recorded() {
    init_logging();
    let env = TestEnv::new().await.expect("test environment");
    let here = std::env::current_dir().expect("cwd");
    for (args, needle) in [
        (
            vec![
                "sync",
                "klaviyo",
                "events",
                "--since",
                "2024-02-01",
                "--until",
                "2024-01-01",
            ],
            "parameter 'since' (2024-02-01 00:00:00 UTC) must be before 'until' (2024-01-01 00:00:00 UTC)",
        ),
        (
            vec!["sync", "klaviyo", "events", "--since", "yesterday"],
            "yesterday",
        ),
        (
            vec!["sync", "klaviyo", "list_members", "--list", "a/b"],
            "parameter 'list' is not a Klaviyo id",
        ),
        (vec!["sync", "klaviyo", "list_members"], "--list"),
        (
            vec!["sync", "klaviyo", "profiles", "--page-size", "101"],
            "101",
        ),
        (
            vec![
                "sync",
                "sailthru",
                "--export",
                "Cargo.toml",
                "--email-policy",
                "encrypt",
            ],
            "encrypt",
        ),
        (
            vec![
                "sync",
                "commercetools",
                "orders",
                "--since",
                "2024-03-01",
                "--until",
                "2024-02-01",
            ],
            "must be before 'until'",
        ),
    ] {
        let out = env
            .sluicectl_in(&here, &[], &args)
            .await
            .expect("sluicectl");
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert_eq!(
        env.count("sluice.jobs").await.expect("count"),
        0,
        "no mistake left a job"
    );
    // A plain date is midnight UTC, recorded as such.
    let out = env
        .sluicectl_in(
            &here,
            &[],
            &["sync", "klaviyo", "events", "--since", "2024-01-01"],
        )
        .await
        .expect("sluicectl");
    assert!(out.status.success(), "{}", text(&out));
    let since: String = env
        .pool
        .get()
        .await
        .expect("client")
        .query_one("SELECT params->>'since' FROM sluice.jobs", &[])
        .await
        .expect("job")
        .get(0);
    assert_eq!(since, "2024-01-01T00:00:00+00:00");
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_commands_never_create_a_mistyped_database() {
    init_logging();
    let env = TestEnv::new().await.expect("test environment");
    let here = std::env::current_dir().expect("cwd");
    let typo = format!("sluice_typo_{}", env.id);
    let url = env.settings.database.url().to_string();
    let (head, _) = url.rsplit_once('/').expect("database in URL");
    let typo_url = format!("{head}/{typo}");
    let job = uuid::Uuid::new_v4().to_string();
    for args in [
        vec!["jobs", "list"],
        vec!["jobs", "show", job.as_str()],
        vec!["tables", "sailthru"],
        vec!["freshness"],
        vec!["freshness", "--json"],
        vec!["tables", "sailthru", "--json"],
        vec!["dlq", "replay"],
        vec!["sync", "sailthru", "--export", "Cargo.toml"],
    ] {
        let out = env
            .sluicectl_in(&here, &[("SLUICE__DATABASE__URL", &typo_url)], &args)
            .await
            .expect("sluicectl");
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr)
                    .contains(&format!("database \"{typo}\" does not exist")),
            "{args:?}: {}",
            text(&out)
        );
    }
    let exists = env
        .pool
        .get()
        .await
        .expect("client")
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&typo])
        .await
        .expect("pg_database");
    assert!(exists.is_none(), "{typo} was created");
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_sends_each_parked_message_back_once() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_planner();
    env.start_loader();
    let dir = tempfile::tempdir().expect("tempdir");
    let export = dir.path().join("sailthru_export.zip");
    std::fs::copy(sailthru_sample(), &export).expect("copy sample");
    // One record per task: 80 tasks, each parked at once when the archive is gone.
    let job = env
        .sync_sailthru(export.to_str().expect("utf-8"), Some(1))
        .await
        .expect("job");
    let deadline = std::time::Instant::now() + WAIT;
    while env.report(job).await.expect("report").summary.state != "running" {
        assert!(std::time::Instant::now() < deadline, "job never planned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_file(&export).expect("take the archive away");
    env.start_fetcher();
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "failed", "{report:#?}");
    let tasks = report.summary.tasks_total;
    assert_eq!(tasks, 80);

    // Replayed without a cure, every task fails and is parked again at once — behind the
    // messages still to replay. Each must be replayed once by this command.
    let replayed = env
        .sluicectl(&["dlq", "replay", "--job", &job.to_string()])
        .await
        .expect("replay");
    assert!(
        String::from_utf8_lossy(&replayed.stdout)
            .contains(&format!("replayed {tasks}, left parked 0")),
        "{}",
        text(&replayed)
    );
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "failed", "{report:#?}");
    // Each task ran once more: one parked message per task again.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed = env.sluicectl(&["dlq", "list"]).await.expect("dlq list");
        let n = String::from_utf8_lossy(&listed.stdout).lines().count() as i64;
        if n == tasks {
            break;
        }
        assert!(
            n < tasks && std::time::Instant::now() < deadline,
            "{n} parked for {tasks} tasks: {}",
            text(&listed)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_on_a_job_no_planner_takes_says_so_and_ctrl_c_leaves_it_running() {
    init_logging();
    let env = TestEnv::new().await.expect("test environment");
    let here = std::env::current_dir().expect("cwd");
    let sample = sailthru_sample();
    let mut child = env
        .sluicectl_command(
            &here,
            &[],
            &[
                "sync",
                "sailthru",
                "--export",
                sample.to_str().expect("utf-8"),
                "--wait",
            ],
        )
        .expect("sluicectl")
        .spawn()
        .expect("spawn");
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let notice = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = stderr.next_line().await.expect("stderr") {
            if line.contains("still queued") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("a notice within 20 s");
    assert!(
        notice.contains("no planner has picked it up") && notice.contains(".jobs"),
        "{notice}"
    );
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut rest = String::new();
    while let Some(line) = stderr.next_line().await.expect("stderr") {
        rest.push_str(&line);
        rest.push('\n');
    }
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .await
        .expect("stdout");
    let code = child.wait().await.expect("exit").code();
    assert_eq!(code, Some(130), "{rest}");
    let job = stdout.trim();
    assert!(
        rest.contains(&format!("job {job} keeps running"))
            && rest.contains(&format!("sluicectl jobs cancel {job}")),
        "{rest}"
    );
    let report = env.report(job.parse().expect("job id")).await.expect("job");
    assert_eq!(report.summary.state, "queued");
    env.teardown().await.expect("teardown");
}

/// `jobs show --json` of a job, through the binary.
async fn shown(env: &TestEnv, job: uuid::Uuid) -> serde_json::Value {
    let out = env
        .sluicectl(&["jobs", "show", &job.to_string(), "--json"])
        .await
        .expect("jobs show");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_show_counts_inserted_updated_and_unchanged_rows_per_table() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_pipeline(1);
    let sample = sailthru_sample();
    let sample = sample.to_str().expect("utf-8");
    let tables = sluice_e2e::sailthru_tables();

    let first = env.sync_sailthru(sample, None).await.expect("job");
    assert_eq!(
        env.wait_job(first, WAIT).await.expect("ends").summary.state,
        "succeeded"
    );
    let report = shown(&env, first).await;
    for t in &tables {
        let c = &report["changes_per_table"][format!("sailthru.{t}")];
        assert!(c["rows"].as_i64().unwrap_or(0) > 0, "{t}: {c}");
        assert_eq!(c["inserted"], c["rows"], "{t}: {c}");
        assert_eq!(
            (c["updated"].as_i64(), c["unchanged"].as_i64()),
            (Some(0), Some(0)),
            "{t}: {c}"
        );
    }

    // The same export again: nothing changes, and the report says so.
    let again = env.sync_sailthru(sample, None).await.expect("job");
    assert_eq!(
        env.wait_job(again, WAIT).await.expect("ends").summary.state,
        "succeeded"
    );
    let report = shown(&env, again).await;
    for t in &tables {
        let c = &report["changes_per_table"][format!("sailthru.{t}")];
        assert_eq!(
            (c["inserted"].as_i64(), c["updated"].as_i64()),
            (Some(0), Some(0)),
            "{t}: {c}"
        );
        assert_eq!(c["unchanged"], c["rows"], "{t}: {c}");
        assert_eq!(c["deleted"].as_i64(), Some(0), "{t}: {c}");
    }
    let text_report = env
        .sluicectl(&["jobs", "show", &again.to_string()])
        .await
        .expect("jobs show");
    let printed = String::from_utf8_lossy(&text_report.stdout);
    assert!(
        printed.contains("unchanged")
            && printed
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["sailthru.blast", "20", "0", "0", "20", "0"]),
        "{printed}"
    );

    // One blast renamed, one added: 1 updated, 1 inserted, the rest unchanged.
    let members = sluice_e2e::read_zip(&sailthru_sample()).expect("sample");
    let blast = members
        .iter()
        .find(|(n, _)| n == "blast.20160401.json")
        .map(|(_, b)| String::from_utf8(b.clone()).expect("utf-8"))
        .expect("blast member");
    let changed = blast.replacen(
        "How To Sell Your Handmade Cards",
        "How To Sell Your Handmade Cards (renamed)",
        1,
    ) + "{ \"name\" : \"A new blast\", \"day\" : \"2016-03-31\", \"id\" : 1 }\n";
    let archive =
        sluice_e2e::zip_archive(&[("blast.20160401.json", changed.as_bytes())]).expect("zip");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("changed.zip");
    std::fs::write(&path, archive).expect("write");
    let third = env
        .sync_sailthru(path.to_str().expect("utf-8"), None)
        .await
        .expect("job");
    assert_eq!(
        env.wait_job(third, WAIT).await.expect("ends").summary.state,
        "succeeded"
    );
    let c = shown(&env, third).await["changes_per_table"]["sailthru.blast"].clone();
    assert_eq!(
        (
            c["rows"].as_i64(),
            c["inserted"].as_i64(),
            c["updated"].as_i64(),
            c["unchanged"].as_i64()
        ),
        (Some(21), Some(1), Some(1), Some(19)),
        "{c}"
    );
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_reaches_each_connector_without_a_job() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_klaviyo_sandbox(sluice_sandbox::klaviyo::KlaviyoConfig::default())
        .await
        .expect("klaviyo sandbox");
    env.start_commercetools_sandbox(sluice_sandbox::commercetools::CommercetoolsConfig::default())
        .await
        .expect("commercetools sandbox");
    let here = std::env::current_dir().expect("cwd");
    for (args, extra, ok, needle) in [
        (
            vec!["check", "klaviyo"],
            vec![],
            true,
            "GET /api/metrics answered",
        ),
        (
            vec!["check", "klaviyo"],
            vec![(
                "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY",
                "pk_wrong",
            )],
            false,
            "401",
        ),
        (
            vec!["check", "klaviyo", "--account", "eu"],
            vec![],
            false,
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__EU__API_KEY",
        ),
        (
            vec!["check", "commercetools"],
            vec![],
            true,
            "token granted, project",
        ),
        (
            vec!["check", "commercetools"],
            vec![(
                "SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__CLIENT_SECRET",
                "wrong-secret",
            )],
            false,
            "refused the credentials of account default",
        ),
        (
            vec!["check", "sailthru"],
            vec![],
            true,
            "nothing to check without an export",
        ),
        (
            vec!["check", "salesforce"],
            vec![],
            false,
            "unknown connector",
        ),
        // An unknown host is said at once, not retried inside retries.
        (
            vec!["check", "klaviyo"],
            vec![(
                "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__BASE_URL",
                "http://sluice-no-such-host.invalid",
            )],
            false,
            "could not be resolved (DNS), tried once",
        ),
        (
            vec!["check", "commercetools"],
            vec![(
                "SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__AUTH_URL",
                "http://sluice-no-such-host.invalid",
            )],
            false,
            "could not be resolved (DNS), tried once",
        ),
    ] {
        let out = env
            .sluicectl_in(&here, &extra, &args)
            .await
            .expect("sluicectl");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.success(),
            ok,
            "{args:?} {extra:?}: {}",
            text(&out)
        );
        assert!(
            printed.contains(needle),
            "{args:?} {extra:?}: {}",
            text(&out)
        );
        assert!(
            !printed.contains("pk_wrong") && !printed.contains("wrong-secret"),
            "{printed}"
        );
    }
    assert_eq!(env.count("sluice.jobs").await.expect("count"), 0);
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bookmarks_are_listed_and_reset_but_not_under_a_running_job() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_pipeline(1);
    let sample = sailthru_sample();
    let job = env
        .sync_sailthru(sample.to_str().expect("utf-8"), None)
        .await
        .expect("job");
    assert_eq!(
        env.wait_job(job, WAIT).await.expect("ends").summary.state,
        "succeeded"
    );
    let listed = env
        .sluicectl(&["bookmarks", "list", "--json"])
        .await
        .expect("list");
    let marks: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(marks.len(), 1, "{}", text(&listed));
    assert_eq!(
        (
            &marks[0]["connector"],
            &marks[0]["stream"],
            &marks[0]["bookmark"]["cursor"]
        ),
        (
            &serde_json::json!("sailthru"),
            &serde_json::json!("export"),
            &serde_json::json!("2016-04-01")
        )
    );
    let table = env.sluicectl(&["bookmarks", "list"]).await.expect("list");
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("sailthru/default/export"),
        "{}",
        text(&table)
    );

    // A job holding the stream: the reset is refused, naming it.
    env.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = env
        .sync_sailthru(sample.to_str().expect("utf-8"), None)
        .await
        .expect("job");
    let mut client = env.pool.get().await.expect("client");
    {
        // What a planner does first: take the stream lock.
        let tx = client.transaction().await.expect("tx");
        tx.execute(
            "INSERT INTO sluice.locks (connector, account, stream, destination, job_id)
             VALUES ('sailthru', 'default', 'export', 'postgres', $1)",
            &[&held],
        )
        .await
        .expect("lock");
        tx.commit().await.expect("commit");
    }
    drop(client);
    let refused = env
        .sluicectl(&["bookmarks", "reset", "sailthru", "export"])
        .await
        .expect("reset");
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains(&format!("job {held} holds")),
        "{}",
        text(&refused)
    );
    let out = env
        .sluicectl(&["jobs", "cancel", &held.to_string()])
        .await
        .expect("cancel");
    assert!(out.status.success(), "{}", text(&out));

    let reset = env
        .sluicectl(&["bookmarks", "reset", "sailthru", "export"])
        .await
        .expect("reset");
    assert!(
        reset.status.success()
            && String::from_utf8_lossy(&reset.stdout).contains("(was 2016-04-01)"),
        "{}",
        text(&reset)
    );
    assert_eq!(env.count("sluice.stream_state").await.expect("count"), 0);
    let again = env
        .sluicectl(&["bookmarks", "reset", "sailthru", "export"])
        .await
        .expect("reset");
    assert!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("has no bookmark"),
        "{}",
        text(&again)
    );
    env.teardown().await.expect("teardown");
}
