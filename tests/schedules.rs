//! End to end: schedules added with `sluicectl schedules add`, fired by in-process planners
//! whose time is a [`ManualClock`] the test moves (no sleeping until a slot), over the real
//! RabbitMQ and Postgres.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sluice_e2e::{TestEnv, init_logging, sailthru_sample};
use sluice_planner::ManualClock;
use sluice_store::ledger::JobState;
use sluice_store::ledger::schedules::{self as store, Schedule, SlotOutcome, SlotRecord};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(120);

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// A planner of `env` reading `clock`, stopped by `stop`.
fn start_planner(env: &TestEnv, clock: &ManualClock, stop: CancellationToken) -> JoinHandle<()> {
    let (settings, clock) = (env.settings.clone(), clock.clock());
    tokio::spawn(async move {
        let registry =
            sluice_connectors::Registry::from_settings(&settings).expect("connector settings");
        if let Err(e) = sluice_planner::run_with_clock(settings, registry, clock, stop).await {
            eprintln!("planner: {e:#}");
        }
    })
}

/// Polls `probe` until it returns `Some`, failing after [`WAIT`] with `what`.
async fn wait_for<T, F: Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn schedule(env: &TestEnv, name: &str) -> Schedule {
    store::get_schedule(&**env.pool.get().await.expect("connection"), name)
        .await
        .expect("schedule")
        .expect("the schedule exists")
}

async fn slots(env: &TestEnv, name: &str) -> Vec<SlotRecord> {
    let mut slots = store::slot_records(&**env.pool.get().await.expect("connection"), name, 100)
        .await
        .expect("slot records");
    slots.reverse();
    slots
}

/// Waits until the planners have moved `name`'s next slot to `next` (everything before it
/// is handled and committed).
async fn wait_next_slot(env: &TestEnv, name: &str, next: &str) {
    let next = at(next);
    wait_for(&format!("schedule {name} to wait for {next}"), || async {
        (schedule(env, name).await.next_slot == Some(next)).then_some(())
    })
    .await;
}

/// The ids of every job in the ledger, oldest first.
async fn jobs(env: &TestEnv) -> Vec<Uuid> {
    env.pool
        .get()
        .await
        .expect("connection")
        .query("SELECT id FROM sluice.jobs ORDER BY requested_at, id", &[])
        .await
        .expect("jobs")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn sluicectl(env: &TestEnv, args: &[&str]) -> String {
    let out = env.sluicectl(args).await.expect("sluicectl runs");
    assert!(
        out.status.success(),
        "sluicectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_planners_fire_each_slot_once_skip_while_the_stream_runs_and_honour_pause() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let clock = ManualClock::new(at("2030-01-01T00:00:30Z"));
    let planners = [
        start_planner(&env, &clock, env.shutdown.child_token()),
        start_planner(&env, &clock, env.shutdown.child_token()),
    ];
    let export = sailthru_sample();
    let export = export.to_str().expect("utf-8 path");
    let added = sluicectl(
        &env,
        &[
            "schedules",
            "add",
            "hourly",
            "--cron",
            "0 * * * *",
            "--",
            "sync",
            "sailthru",
            "--export",
            export,
        ],
    )
    .await;
    assert!(added.contains("added schedule hourly"), "{added}");
    // Armed from the planners' clock, not this machine's: the first slot after 00:00:30.
    wait_next_slot(&env, "hourly", "2030-01-01T01:00:00Z").await;
    assert!(jobs(&env).await.is_empty());

    // Both planners wake at 01:00; one job is requested, with the slot's derived id.
    clock.set(at("2030-01-01T01:00:00Z"));
    wait_next_slot(&env, "hourly", "2030-01-01T02:00:00Z").await;
    let first = schedule(&env, "hourly")
        .await
        .job_id(at("2030-01-01T01:00:00Z"));
    assert_eq!(jobs(&env).await, vec![first]);

    // No fetcher runs yet, so the 01:00 job is still running at 02:00: skipped.
    clock.set(at("2030-01-01T02:00:10Z"));
    wait_next_slot(&env, "hourly", "2030-01-01T03:00:00Z").await;
    assert_eq!(jobs(&env).await, vec![first]);

    env.start_fetcher();
    env.start_loader();
    let report = env.wait_job(first, WAIT).await.expect("the 01:00 job ends");
    assert_eq!(report.summary.state, JobState::Succeeded, "{report:?}");

    clock.set(at("2030-01-01T03:00:00Z"));
    wait_next_slot(&env, "hourly", "2030-01-01T04:00:00Z").await;
    let third = schedule(&env, "hourly")
        .await
        .job_id(at("2030-01-01T03:00:00Z"));
    assert_eq!(jobs(&env).await, vec![first, third]);
    let report = env.wait_job(third, WAIT).await.expect("the 03:00 job ends");
    assert_eq!(report.summary.state, JobState::Succeeded, "{report:?}");

    // Paused over 04:00; resumed, it starts at the first slot after the planners' now.
    sluicectl(&env, &["schedules", "pause", "hourly"]).await;
    clock.set(at("2030-01-01T04:00:00Z"));
    sluicectl(&env, &["schedules", "resume", "hourly"]).await;
    wait_next_slot(&env, "hourly", "2030-01-01T05:00:00Z").await;
    assert_eq!(jobs(&env).await.len(), 2);

    let recorded: Vec<(DateTime<Utc>, SlotOutcome, Option<Uuid>)> = slots(&env, "hourly")
        .await
        .into_iter()
        .map(|r| (r.slot, r.outcome, r.job_id))
        .collect();
    assert_eq!(
        recorded,
        vec![
            (at("2030-01-01T01:00:00Z"), SlotOutcome::Fired, Some(first)),
            (
                at("2030-01-01T02:00:00Z"),
                SlotOutcome::Skipped,
                Some(first)
            ),
            (at("2030-01-01T03:00:00Z"), SlotOutcome::Fired, Some(third)),
        ]
    );

    // What an operator sees.
    let show: Value =
        serde_json::from_str(&sluicectl(&env, &["schedules", "show", "hourly", "--json"]).await)
            .expect("JSON");
    assert_eq!(show["schedule"]["params"]["export"], export);
    assert_eq!(show["slots"][1]["outcome"], "skipped");
    assert_eq!(show["slots"][1]["job_state"], "succeeded");
    assert!(
        show["slots"][1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&first.to_string()) && r.contains("still active")),
        "{show}"
    );
    let text = sluicectl(&env, &["schedules", "show", "hourly"]).await;
    assert!(
        text.contains(&format!(
            "2030-01-01T02:00:00Z  skipped  job {first} (succeeded)"
        )),
        "{text}"
    );
    let list = sluicectl(&env, &["schedules", "list", "--json"]).await;
    let listed: Value = serde_json::from_str(list.trim()).expect("one JSON line");
    assert_eq!(listed["name"], "hourly");
    assert_eq!(listed["next_slot"], "2030-01-01T05:00:00Z");
    assert_eq!(listed["last"]["outcome"], "fired");

    // A second schedule of the same name is refused; removing it keeps its jobs.
    let again = env
        .sluicectl(&[
            "schedules",
            "add",
            "hourly",
            "--cron",
            "0 * * * *",
            "--",
            "sync",
            "sailthru",
            "--export",
            export,
        ])
        .await
        .expect("sluicectl runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("a schedule named \"hourly\" exists"));
    sluicectl(&env, &["schedules", "rm", "hourly"]).await;
    assert_eq!(jobs(&env).await.len(), 2);

    env.shutdown.cancel();
    for planner in planners {
        planner.await.expect("planner task");
    }
    env.teardown().await.expect("teardown");
}

/// After downtime (a planner stopped while its clock jumps 2½ hours ahead), `once` runs the
/// latest missed slot and `skip` runs none; both record the rest as missed and go on at
/// the next slot.
async fn catch_up_after_downtime(policy: &str) {
    init_logging();
    let env = TestEnv::new().await.expect("test environment");
    let clock = ManualClock::new(at("2030-01-01T00:00:30Z"));
    let stop = env.shutdown.child_token();
    let planner = start_planner(&env, &clock, stop.clone());
    let export = sailthru_sample();
    sluicectl(
        &env,
        &[
            "schedules",
            "add",
            "nightly",
            "--cron",
            "0 * * * *",
            "--catch-up",
            policy,
            "--",
            "sync",
            "sailthru",
            "--export",
            export.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    wait_next_slot(&env, "nightly", "2030-01-01T01:00:00Z").await;

    stop.cancel();
    planner.await.expect("planner task");
    clock.advance(TimeDelta::minutes(150));
    let planner = start_planner(&env, &clock, env.shutdown.child_token());
    // 02:30:30: the slots of 01:00 and 02:00 passed while no planner ran.
    wait_next_slot(&env, "nightly", "2030-01-01T03:00:00Z").await;

    let s = schedule(&env, "nightly").await;
    let recorded: Vec<(DateTime<Utc>, SlotOutcome, Option<Uuid>)> = slots(&env, "nightly")
        .await
        .into_iter()
        .map(|r| (r.slot, r.outcome, r.job_id))
        .collect();
    let missed = (at("2030-01-01T01:00:00Z"), SlotOutcome::Missed, None);
    let latest = at("2030-01-01T02:00:00Z");
    if policy == "once" {
        assert_eq!(
            recorded,
            vec![missed, (latest, SlotOutcome::Fired, Some(s.job_id(latest)))]
        );
        assert_eq!(jobs(&env).await, vec![s.job_id(latest)]);
        assert!(
            slots(&env, "nightly").await[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("1 slot(s)"))
        );
    } else {
        assert_eq!(recorded, vec![missed]);
        assert!(jobs(&env).await.is_empty());
        assert!(
            slots(&env, "nightly").await[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("2 slot(s)"))
        );
    }

    // Back on time at 03:00: it fires (skip), or is skipped while the 02:00 job, which no
    // fetcher runs, is still active (once).
    clock.set(at("2030-01-01T03:00:00Z"));
    wait_next_slot(&env, "nightly", "2030-01-01T04:00:00Z").await;
    let three = at("2030-01-01T03:00:00Z");
    let last = slots(&env, "nightly").await.pop().expect("a record");
    assert_eq!(last.slot, three);
    if policy == "once" {
        assert_eq!(
            (last.outcome, last.job_id),
            (SlotOutcome::Skipped, Some(s.job_id(latest)))
        );
    } else {
        assert_eq!(
            (last.outcome, last.job_id),
            (SlotOutcome::Fired, Some(s.job_id(three)))
        );
        assert_eq!(jobs(&env).await, vec![s.job_id(three)]);
    }

    env.shutdown.cancel();
    planner.await.expect("planner task");
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catch_up_once_runs_the_latest_missed_slot() {
    catch_up_after_downtime("once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catch_up_skip_runs_no_missed_slot() {
    catch_up_after_downtime("skip").await;
}
