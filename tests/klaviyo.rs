//! End to end: Klaviyo streams from the sandbox's emulation through planner → two fetchers
//! → loader into Postgres, compared with the emulation's ground truth.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sluice_contracts::Mode;
use sluice_e2e::{TestEnv, init_logging, klaviyo_stats, utc};
use sluice_sandbox::klaviyo::{
    FaultConfig, KlaviyoConfig, KlaviyoDataSpec, event_ids, list_member_ids, lists,
    segment_member_ids, segments,
};

const WAIT: Duration = Duration::from_secs(300);

fn spec(seed: u64) -> KlaviyoDataSpec {
    KlaviyoDataSpec {
        seed,
        profiles: 3_000,
        start: utc(2024, 1, 1),
        end: utc(2024, 1, 31),
        events_per_metric: 12_000,
        ..KlaviyoDataSpec::default()
    }
}

fn metric_id(spec: &KlaviyoDataSpec, name: &str) -> String {
    sluice_sandbox::klaviyo::metric_id(spec, name)
        .unwrap_or_else(|| panic!("the sandbox has a metric {name}"))
}

async fn loaded_ids(env: &TestEnv, sql: &str, param: &str) -> BTreeSet<String> {
    let client = env.pool.get().await.expect("connection");
    client
        .query(sql, &[&param])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

fn unlimited(spec: KlaviyoDataSpec) -> KlaviyoConfig {
    KlaviyoConfig {
        data: spec,
        rate_limit_scale: None,
        ..KlaviyoConfig::default()
    }
}

async fn assert_events_match(
    env: &TestEnv,
    spec: &KlaviyoDataSpec,
    metric: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) {
    let want: BTreeSet<String> = event_ids(spec, Some(metric), start, end)
        .into_iter()
        .collect();
    let got = loaded_ids(
        env,
        "SELECT id FROM klaviyo.events WHERE metric_id = $1",
        metric,
    )
    .await;
    assert!(!want.is_empty());
    assert_eq!(got.len(), want.len(), "events of metric {metric}");
    assert!(
        got == want,
        "event ids of metric {metric} differ from the sandbox's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_of_both_shapes_over_30_days_land_with_exactly_the_sandbox_ids() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = spec(11);
    env.start_klaviyo_sandbox(unlimited(spec.clone()))
        .await
        .expect("sandbox");
    // Small pages and an early split make the bursty metric split its dense windows.
    env.connector_settings("klaviyo").set("dense_pages", 2);
    env.connector_settings("klaviyo").set("split_into", 4);
    env.start_pipeline(2);

    let job = env
        .request_job(
            "klaviyo",
            "events",
            json!({
                "since": spec.start.to_rfc3339(),
                "until": spec.end.to_rfc3339(),
                "metrics": ["Placed Order", "Received Email"],
                "page_size": 200,
            }),
        )
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_eq!(report.summary.rows_rejected, 0, "{:#?}", report.rejected);
    let mut events = 0;
    for name in ["Placed Order", "Received Email"] {
        let metric = metric_id(&spec, name);
        assert_events_match(&env, &spec, &metric, spec.start, spec.end).await;
        events += event_ids(&spec, Some(&metric), spec.start, spec.end).len();
    }
    // Split windows hand their last instant to their first child: each event is loaded by
    // exactly one task.
    assert_eq!(report.summary.rows_loaded, events as i64, "{report:#?}");
    // 2 metrics × 4 planned windows; dense windows split into children.
    assert!(
        report.summary.tasks_total > 8,
        "dense windows were split: {report:#?}"
    );

    // Typed columns of one event, as the sandbox serves it.
    let client = env.pool.get().await.expect("connection");
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE datetime IS NULL OR profile_id IS NULL OR timestamp IS NULL OR event_properties IS NULL),
                    count(*) FILTER (WHERE extract(epoch FROM datetime)::bigint <> timestamp)
               FROM klaviyo.events",
            &[],
        )
        .await
        .expect("query");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (0, 0));
    // Freshness is per metric.
    let streams: i64 = client
        .query_one(
            "SELECT count(DISTINCT stream) FROM sluice.freshness WHERE connector = 'klaviyo'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(streams, 2);
    drop(client);
    // `sluicectl freshness` names each metric beside its id.
    let out = env
        .sluicectl(&["freshness", "--json"])
        .await
        .expect("freshness");
    assert!(out.status.success(), "{out:?}");
    let mut named: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON lines"))
        .map(|f| {
            (
                f["stream"].as_str().unwrap_or_default().to_string(),
                f["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    named.sort();
    let mut want: Vec<(String, String)> = ["Placed Order", "Received Email"]
        .iter()
        .map(|n| (format!("events/{}", metric_id(&spec, n)), n.to_string()))
        .collect();
    want.sort();
    assert_eq!(named, want);
    let text = env.sluicectl(&["freshness"]).await.expect("freshness");
    let printed = String::from_utf8_lossy(&text.stdout);
    assert!(
        printed.contains("Placed Order") && printed.contains("Received Email"),
        "{printed}"
    );
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segment_profiles_match_the_segment_members() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = spec(12);
    env.start_klaviyo_sandbox(unlimited(spec.clone()))
        .await
        .expect("sandbox");
    env.start_pipeline(2);
    let (segment, _) = segments(&spec).into_iter().next().expect("a segment");
    let job = env
        .request_job("klaviyo", "segment_members", json!({ "segment": segment }))
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");

    let want: BTreeSet<String> = segment_member_ids(&spec, &segment).into_iter().collect();
    assert!(want.len() > 100, "a segment of several pages");
    let members = loaded_ids(
        &env,
        "SELECT profile_id FROM klaviyo.segment_members WHERE segment_id = $1",
        &segment,
    )
    .await;
    assert!(
        members == want,
        "segment members differ: {} loaded, {} expected",
        members.len(),
        want.len()
    );
    let profiles = loaded_ids(
        &env,
        "SELECT p.id FROM klaviyo.profiles p JOIN klaviyo.segment_members m ON m.profile_id = p.id WHERE m.segment_id = $1",
        &segment,
    )
    .await;
    assert!(profiles == want, "every member's profile is loaded");
    // A profile's attributes as the sandbox serves them.
    let first = want.iter().next().expect("a member");
    let served = sluice_sandbox::klaviyo::profile(&spec, first).expect("profile");
    let client = env.pool.get().await.expect("connection");
    let email: Option<String> = client
        .query_one("SELECT email FROM klaviyo.profiles WHERE id = $1", &[first])
        .await
        .expect("query")
        .get(0);
    assert_eq!(email.as_deref(), served["attributes"]["email"].as_str());
    drop(client);
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incremental_run_after_new_events_loads_exactly_the_new_ones() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = spec(13);
    let sandbox = env
        .start_klaviyo_sandbox(unlimited(spec.clone()))
        .await
        .expect("sandbox");
    env.start_pipeline(2);
    let placed = metric_id(&spec, "Placed Order");
    let someone = sluice_sandbox::klaviyo::profile_ids(&spec)
        .into_iter()
        .next()
        .expect("a profile");

    let first = env
        .request_job_mode(
            "klaviyo",
            "events",
            json!({ "since": spec.start.to_rfc3339(), "until": spec.end.to_rfc3339(), "metrics": [placed] }),
            Mode::Full,
        )
        .await
        .expect("job");
    assert_eq!(
        env.wait_job(first, WAIT).await.expect("ends").summary.state,
        "succeeded"
    );
    let before = loaded_ids(
        &env,
        "SELECT id FROM klaviyo.events WHERE metric_id = $1",
        &placed,
    )
    .await;

    // New events arrive: an hour ago, and one dated next year (future-dated events load,
    // but must not push the bookmark past now).
    let http = reqwest::Client::new();
    let mut added = BTreeSet::new();
    let an_hour_ago = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let next_year = (Utc::now() + chrono::Duration::days(300)).to_rfc3339();
    for datetime in [
        an_hour_ago.as_str(),
        an_hour_ago.as_str(),
        next_year.as_str(),
    ] {
        let response: serde_json::Value = http
            .post(format!("{sandbox}/klaviyo/_admin/events"))
            .json(&json!({ "metric_id": placed, "profile_id": someone, "datetime": datetime, "properties": {"$value": 12.5} }))
            .send()
            .await
            .expect("sandbox")
            .error_for_status()
            .expect("event appended")
            .json()
            .await
            .expect("json");
        for id in response["ids"].as_array().expect("ids") {
            added.insert(id.as_str().expect("id").to_string());
        }
    }
    assert_eq!(added.len(), 3);

    let second = env
        .request_job_mode(
            "klaviyo",
            "events",
            json!({ "metrics": [placed] }),
            Mode::Incremental,
        )
        .await
        .expect("job");
    let report = env.wait_job(second, WAIT).await.expect("ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    let after = loaded_ids(
        &env,
        "SELECT id FROM klaviyo.events WHERE metric_id = $1",
        &placed,
    )
    .await;
    let new: BTreeSet<String> = after.difference(&before).cloned().collect();
    // The incremental window ends at now − lag: the future-dated event waits for its time.
    let expected_new: BTreeSet<String> = added.iter().take(3).cloned().collect();
    let written_by_second = loaded_ids(
        &env,
        "SELECT id FROM klaviyo.events WHERE _sluice_job_id::text = $1",
        &second.to_string(),
    )
    .await;
    assert!(
        new.is_subset(&expected_new),
        "only appended events are new: {new:?}"
    );
    assert_eq!(
        new.len(),
        2,
        "the two events of an hour ago are new: {new:?}"
    );
    assert_eq!(
        written_by_second, new,
        "the incremental run wrote exactly the new events"
    );
    // The bookmark never passes now.
    let client = env.pool.get().await.expect("connection");
    let cursor: String = client
        .query_one(
            "SELECT bookmark->>'cursor' FROM sluice.stream_state WHERE connector = 'klaviyo' AND stream = 'events'",
            &[],
        )
        .await
        .expect("bookmark")
        .get(0);
    let cursor: DateTime<Utc> = cursor.parse().expect("RFC 3339 cursor");
    assert!(cursor <= Utc::now(), "bookmark {cursor} is in the future");
    drop(client);
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_and_injected_faults_are_absorbed() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = KlaviyoDataSpec {
        events_per_metric: 4_000,
        ..spec(14)
    };
    let sandbox = env
        .start_klaviyo_sandbox(KlaviyoConfig {
            data: spec.clone(),
            // XL at 5%: 17 requests per second, 175 per minute.
            rate_limit_scale: Some(0.05),
            faults: FaultConfig {
                seed: 7,
                error_500_share: 0.04,
                error_503_share: 0.04,
                truncate_share: 0.03,
                drop_share: 0.03,
                // Past the client's 1-second timeout below.
                slow_share: 0.1,
                slow_ms: 2_500,
                ..FaultConfig::default()
            },
            ..KlaviyoConfig::default()
        })
        .await
        .expect("sandbox");
    // The connector believes in Klaviyo's real limits: the sandbox's 429s must be absorbed.
    env.connector_settings("klaviyo")
        .set("max_retry_after_seconds", 5);
    env.connector_settings("klaviyo")
        .set("request_timeout_seconds", 1);
    env.start_pipeline(2);
    let placed = metric_id(&spec, "Placed Order");
    let job = env
        .request_job(
            "klaviyo",
            "events",
            json!({ "since": spec.start.to_rfc3339(), "until": spec.end.to_rfc3339(), "metrics": [placed], "page_size": 100 }),
        )
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_events_match(&env, &spec, &placed, spec.start, spec.end).await;
    let stats = klaviyo_stats(&sandbox).await.expect("stats");
    let total = &stats["total"];
    assert!(
        total["faults"].as_u64().unwrap_or(0) > 0,
        "faults were injected: {stats}"
    );
    assert!(
        total["throttled"].as_u64().unwrap_or(0) > 0,
        "429s were served: {stats}"
    );
    assert!(
        stats["slow"].as_u64().unwrap_or(0) > 0,
        "responses were held past the client timeout: {stats}"
    );
    env.teardown().await.expect("teardown");
}

/// A fetcher that starts after `sluicectl jobs cancel` never heard the broadcast; the
/// loader repeats it when the first part of the cancelled job reaches it, so the fetcher
/// stops after a task or two instead of fetching the whole job for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fetcher_started_after_a_cancel_learns_it_from_the_loader() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = spec(21);
    let sandbox = env
        .start_klaviyo_sandbox(KlaviyoConfig {
            faults: FaultConfig {
                // Every request takes a while, so fetching all 30 tasks would take 9 s.
                latency_ms: 300,
                ..FaultConfig::default()
            },
            ..unlimited(spec.clone())
        })
        .await
        .expect("sandbox");
    env.connector_settings("klaviyo").set("split_into", 30);
    env.settings.fetcher.concurrency = 1;
    env.start_planner();
    env.start_loader();
    let placed = metric_id(&spec, "Placed Order");
    let job = env
        .request_job(
            "klaviyo",
            "events",
            json!({ "since": spec.start.to_rfc3339(), "until": spec.end.to_rfc3339(), "metrics": [placed] }),
        )
        .await
        .expect("job");
    let deadline = std::time::Instant::now() + WAIT;
    while env.report(job).await.expect("report").summary.tasks_total < 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "the job was never planned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cancel = env
        .sluicectl(&["jobs", "cancel", &job.to_string()])
        .await
        .expect("cancel");
    assert!(cancel.status.success(), "{cancel:?}");
    let http = reqwest::Client::new();
    http.post(format!("{sandbox}/klaviyo/_admin/stats/reset"))
        .send()
        .await
        .expect("reset stats");

    env.start_fetcher();
    // Wait until the fetcher has gone quiet: no new request for 2 s.
    let requests = || async {
        let stats = klaviyo_stats(&sandbox).await.expect("stats");
        stats["total"]["total"].as_u64().unwrap_or(0)
    };
    let mut seen = requests().await;
    let mut quiet_since = std::time::Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        assert!(
            std::time::Instant::now() < deadline,
            "the fetcher never went quiet"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = requests().await;
        if now != seen {
            (seen, quiet_since) = (now, std::time::Instant::now());
        }
    }
    assert!(
        (1..10).contains(&seen),
        "the late fetcher made {seen} requests for a cancelled job of 30 tasks"
    );
    let report = env.report(job).await.expect("report");
    assert_eq!(report.summary.state, "cancelled");
    assert_eq!(report.summary.rows_loaded, 0, "{report:#?}");
    assert_eq!(env.count("klaviyo.events").await.expect("count"), 0);
    env.teardown().await.expect("teardown");
}

/// Runs a members job of `stream` (`list_members`/`segment_members`) for `group` in pages
/// of 20 and returns its report.
async fn members_job(env: &TestEnv, stream: &str, group: &str) -> sluice_store::ledger::JobReport {
    let key = if stream == "list_members" {
        "list"
    } else {
        "segment"
    };
    let job = env
        .request_job("klaviyo", stream, json!({ key: group, "page_size": 20 }))
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_members_job_replaces_the_groups_members_and_only_them() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let before = KlaviyoDataSpec {
        profiles: 1_200,
        ..spec(13)
    };
    let url = env
        .start_klaviyo_sandbox(unlimited(before.clone()))
        .await
        .expect("sandbox");
    // One page per task: a group's members span many tasks, loaded in any order.
    env.connector_settings("klaviyo").set("dense_pages", 1);
    env.start_pipeline(2);
    let all_lists = lists(&before);
    let (list, other_list) = (all_lists[0].0.clone(), all_lists[1].0.clone());
    let (segment, _) = segments(&before).into_iter().next().expect("a segment");
    let ids = |v: Vec<String>| v.into_iter().collect::<BTreeSet<String>>();
    let list_sql = "SELECT profile_id FROM klaviyo.list_members WHERE list_id = $1";
    let segment_sql = "SELECT profile_id FROM klaviyo.segment_members WHERE segment_id = $1";

    members_job(&env, "list_members", &list).await;
    members_job(&env, "list_members", &other_list).await;
    members_job(&env, "segment_members", &segment).await;
    let list_before = ids(list_member_ids(&before, &list));
    assert!(list_before.len() > 100, "a list of many pages");
    assert_eq!(loaded_ids(&env, list_sql, &list).await, list_before);
    assert_eq!(
        loaded_ids(&env, segment_sql, &segment).await,
        ids(segment_member_ids(&before, &segment))
    );

    // The account changes: fewer profiles, so members leave (and ids change).
    let after = KlaviyoDataSpec {
        profiles: 700,
        ..before.clone()
    };
    reqwest::Client::new()
        .post(format!("{url}/klaviyo/_admin/config"))
        .json(&unlimited(after.clone()))
        .send()
        .await
        .expect("config")
        .error_for_status()
        .expect("config accepted");
    assert_eq!(lists(&after)[0].0, list, "the list keeps its id");
    let list_after = ids(list_member_ids(&after, &list));
    let left = list_before.difference(&list_after).count() as i64;
    assert!(left > 0, "members left the list");

    let report = members_job(&env, "list_members", &list).await;
    assert_eq!(loaded_ids(&env, list_sql, &list).await, list_after);
    // Each member of the list once; the ones that left removed once.
    let c = &report.changes_per_table["klaviyo.list_members"];
    assert_eq!(c.rows, list_after.len() as i64, "{c:?}");
    assert_eq!(c.deleted, Some(left), "{c:?}");
    members_job(&env, "segment_members", &segment).await;
    assert_eq!(
        loaded_ids(&env, segment_sql, &segment).await,
        ids(segment_member_ids(&after, &segment))
    );
    // Another list's members are its own job's business.
    assert_eq!(
        loaded_ids(&env, list_sql, &other_list).await,
        ids(list_member_ids(&before, &other_list))
    );
    env.teardown().await.expect("teardown");
}
