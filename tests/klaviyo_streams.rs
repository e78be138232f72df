//! End to end: the Klaviyo engagement streams (campaigns, flows, templates, tags,
//! suppressions, metric aggregates) from the sandbox's emulation through planner → two
//! fetchers → loader into Postgres, compared with the emulation's ground truth and, for
//! metric aggregates, with the same aggregates computed in SQL over `klaviyo.events`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use sluice_contracts::Mode;
use sluice_e2e::{TestEnv, init_logging, utc};
use sluice_sandbox::klaviyo::{
    KlaviyoConfig, KlaviyoDataSpec, campaigns, flow_messages, flows, lists, segments, suppressions,
    tag_groups, tag_links, tags, templates,
};

const WAIT: Duration = Duration::from_secs(300);

fn spec(seed: u64) -> KlaviyoDataSpec {
    KlaviyoDataSpec {
        seed,
        profiles: 1_500,
        start: utc(2024, 1, 1),
        end: utc(2024, 1, 15),
        events_per_metric: 3_000,
        ..KlaviyoDataSpec::default()
    }
}

fn unlimited(spec: KlaviyoDataSpec) -> KlaviyoConfig {
    KlaviyoConfig {
        data: spec,
        rate_limit_scale: None,
        ..KlaviyoConfig::default()
    }
}

fn metric_id(spec: &KlaviyoDataSpec, name: &str) -> String {
    sluice_sandbox::klaviyo::metric_id(spec, name)
        .unwrap_or_else(|| panic!("the sandbox has a metric {name}"))
}

/// The rows of `sql` (text columns only) as tuples joined by `|`.
async fn rows(env: &TestEnv, sql: &str) -> BTreeSet<String> {
    let client = env.pool.get().await.expect("connection");
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

async fn run(env: &TestEnv, stream: &str, params: serde_json::Value, mode: Mode) -> uuid::Uuid {
    let job = env
        .request_job_mode("klaviyo", stream, params, mode)
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{stream}: {report:#?}");
    assert_eq!(
        report.summary.rows_rejected, 0,
        "{stream}: {:#?}",
        report.rejected
    );
    job
}

fn set<I: IntoIterator<Item = String>>(items: I) -> BTreeSet<String> {
    items.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engagement_streams_land_with_exactly_the_sandbox_ids_and_content() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = spec(21);
    env.start_klaviyo_sandbox(unlimited(spec.clone()))
        .await
        .expect("sandbox");
    // Small hand-over so the paged streams hand pages to child tasks too.
    env.connector_settings("klaviyo").set("dense_pages", 1);
    env.start_pipeline(2);

    for stream in ["campaigns", "flows", "templates", "tags", "suppressions"] {
        run(&env, stream, json!({}), Mode::Full).await;
    }
    run(
        &env,
        "events",
        json!({"since": spec.start.to_rfc3339(), "until": spec.end.to_rfc3339(),
               "metrics": ["Received Email", "Opened Email"]}),
        Mode::Full,
    )
    .await;

    // Campaigns of every channel, each with its one message.
    let served = campaigns(&spec);
    assert!(served.iter().any(|c| c.channel == "sms"), "both channels");
    assert_eq!(
        rows(&env, "SELECT id, channel, name, to_char(send_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') FROM klaviyo.campaigns").await,
        set(served.iter().map(|c| format!(
            "{}|{}|{}|{}",
            c.id,
            c.channel,
            c.name,
            chrono::DateTime::from_timestamp(c.send_time, 0).expect("time").format("%Y-%m-%dT%H:%M:%S")
        ))),
    );
    assert_eq!(
        rows(
            &env,
            "SELECT campaign_id, id, channel FROM klaviyo.campaign_messages"
        )
        .await,
        set(served
            .iter()
            .map(|c| format!("{}|{}|{}", c.id, c.message_id, c.channel))),
    );
    let typed = rows(
        &env,
        "SELECT count(*)::text FROM klaviyo.campaigns WHERE status IS NULL OR send_strategy IS NULL OR tracking_options IS NULL OR audiences IS NULL OR created_at IS NULL OR updated_at IS NULL",
    )
    .await;
    assert_eq!(typed, set(["0".to_string()]));

    // An incremental job reads per channel from the bookmark (the greatest updated_at)
    // minus the lookback (3600 s): the campaigns updated in that last hour, with their
    // messages.
    let job = env
        .request_job_mode("klaviyo", "campaigns", json!({}), Mode::Incremental)
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    let recent: usize = ["email", "sms"]
        .iter()
        .map(|channel| {
            let of: Vec<_> = served.iter().filter(|c| c.channel == *channel).collect();
            let last = of.iter().map(|c| c.updated_at).max().expect("campaigns");
            of.iter().filter(|c| c.updated_at >= last - 3600).count()
        })
        .sum();
    assert_eq!(
        report.summary.rows_loaded,
        2 * recent as i64,
        "campaign and message rows of the last hour only: {report:#?}"
    );

    // Flows, their actions and messages.
    let served_flows = flows(&spec);
    assert_eq!(
        rows(&env, "SELECT flow_id, id FROM klaviyo.flow_actions").await,
        set(served_flows
            .iter()
            .flat_map(|(f, actions)| actions.iter().map(move |a| format!("{f}|{a}")))),
    );
    assert_eq!(
        rows(&env, "SELECT id FROM klaviyo.flows").await,
        set(served_flows.iter().map(|(f, _)| f.clone())),
    );
    assert_eq!(
        rows(
            &env,
            "SELECT id, flow_id, flow_action_id FROM klaviyo.flow_messages"
        )
        .await,
        set(flow_messages(&spec)
            .into_iter()
            .map(|(m, f, a)| format!("{m}|{f}|{a}"))),
    );
    assert_eq!(
        rows(&env, "SELECT id FROM klaviyo.templates").await,
        set(templates(&spec))
    );

    // Tags, their groups and one link table per kind.
    assert_eq!(
        rows(&env, "SELECT id, name, tag_group_id FROM klaviyo.tags").await,
        set(tags(&spec)
            .into_iter()
            .map(|(t, n, g)| format!("{t}|{n}|{g}"))),
    );
    assert_eq!(
        rows(&env, "SELECT id FROM klaviyo.tag_groups").await,
        set(tag_groups(&spec))
    );
    for (kind, table, column) in [
        ("campaign", "tag_campaigns", "campaign_id"),
        ("flow", "tag_flows", "flow_id"),
        ("list", "tag_lists", "list_id"),
        ("segment", "tag_segments", "segment_id"),
    ] {
        let want = set(tag_links(&spec, kind)
            .into_iter()
            .map(|(t, r)| format!("{t}|{r}")));
        assert!(!want.is_empty(), "{kind}: some links");
        assert_eq!(
            rows(
                &env,
                &format!("SELECT tag_id, {column} FROM klaviyo.{table}")
            )
            .await,
            want,
            "{kind} links"
        );
    }
    assert!(!lists(&spec).is_empty() && !segments(&spec).is_empty());

    // Suppressions with reason and time.
    let want = set(suppressions(&spec).into_iter().map(|(p, r, t)| {
        let t = chrono::DateTime::parse_from_rfc3339(&t).expect("time");
        format!("{p}|{r}|{}", t.format("%Y-%m-%dT%H:%M:%S"))
    }));
    assert!(want.len() > 50, "about one profile in ten");
    assert_eq!(
        rows(&env, "SELECT profile_id, reason, to_char(\"timestamp\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') FROM klaviyo.suppressions").await,
        want
    );

    // The emails' `$message` and `$flow` are the campaigns' and flows' messages and flows.
    let unknown = rows(
        &env,
        "SELECT DISTINCT e.event_properties->>'$message' FROM klaviyo.events e
          WHERE NOT EXISTS (SELECT 1 FROM klaviyo.campaign_messages m WHERE m.id = e.event_properties->>'$message')
            AND NOT EXISTS (SELECT 1 FROM klaviyo.flow_messages m WHERE m.id = e.event_properties->>'$message')",
    )
    .await;
    assert!(
        unknown.is_empty(),
        "messages of no campaign or flow: {unknown:?}"
    );
    let from_flows = rows(
        &env,
        "SELECT count(*)::text FROM klaviyo.events e JOIN klaviyo.flow_messages m
             ON m.id = e.event_properties->>'$message' AND m.flow_id = e.event_properties->>'$flow'",
    )
    .await;
    let n: i64 = from_flows
        .iter()
        .next()
        .expect("a count")
        .parse()
        .expect("a number");
    assert!(n > 100, "a share of the emails come from flows: {n}");
    env.teardown().await.expect("teardown");
}

/// `(metric id, day, dimensions JSON, measurement) → value` of `klaviyo.metric_aggregates`
/// or of the same aggregate computed over `klaviyo.events`.
async fn aggregates(env: &TestEnv, sql: &str) -> BTreeMap<(String, String, String, String), f64> {
    let client = env.pool.get().await.expect("connection");
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2), r.get(3)), r.get::<_, f64>(4)))
        .collect()
}

const STORED: &str = "SELECT metric_id, to_char(date AT TIME ZONE 'UTC', 'YYYY-MM-DD'), dimensions, measurement, value
                        FROM klaviyo.metric_aggregates WHERE interval = 'day' AND grouping = '[\"$message\"]'";

/// The same aggregates over the extracted events: count, sum(value), distinct profiles per
/// metric, UTC day and `$message` (JSON array text, as stored; empty when absent).
const COMPUTED: &str = "WITH e AS (
        SELECT metric_id, to_char(datetime AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
               jsonb_build_array(coalesce(event_properties->>'$message', ''))::text AS dims,
               value, profile_id FROM klaviyo.events)
    SELECT metric_id, day, dims, 'count', count(*)::float8 FROM e GROUP BY 1, 2, 3
    UNION ALL SELECT metric_id, day, dims, 'sum_value', round(coalesce(sum(value), 0)::numeric, 2)::float8 FROM e GROUP BY 1, 2, 3
    UNION ALL SELECT metric_id, day, dims, 'unique', count(DISTINCT profile_id)::float8 FROM e GROUP BY 1, 2, 3";

fn assert_same(
    stored: &BTreeMap<(String, String, String, String), f64>,
    computed: &BTreeMap<(String, String, String, String), f64>,
) {
    // Klaviyo answers every day of the range for every group: zeros where there were no
    // events, which the events have no row for.
    let nonzero: BTreeMap<_, _> = stored
        .iter()
        .filter(|(k, _)| {
            stored
                .get(&(k.0.clone(), k.1.clone(), k.2.clone(), "count".into()))
                .is_some_and(|c| *c > 0.0)
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(
        nonzero.keys().collect::<Vec<_>>(),
        computed.keys().collect::<Vec<_>>(),
        "the same metrics, days, dimension values and measurements"
    );
    for (k, v) in computed {
        assert!(
            (nonzero[k] - v).abs() < 0.005,
            "{k:?}: stored {} computed {v}",
            nonzero[k]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metric_aggregates_equal_sql_over_the_events_and_incremental_runs_reread_the_lookback() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = spec(22);
    let sandbox = env
        .start_klaviyo_sandbox(unlimited(spec.clone()))
        .await
        .expect("sandbox");
    env.start_pipeline(2);
    let names = ["Placed Order", "Received Email", "Clicked Email"];
    let range = json!({"since": spec.start.to_rfc3339(), "until": spec.end.to_rfc3339(),
                       "metrics": names});
    run(&env, "events", range.clone(), Mode::Full).await;
    let mut params = range.clone();
    params["by"] = json!(["$message"]);
    params["lookback_days"] = json!(2);
    run(&env, "metric_aggregates", params.clone(), Mode::Full).await;

    let stored = aggregates(&env, STORED).await;
    let computed = aggregates(&env, COMPUTED).await;
    assert!(
        computed.len() > 3 * 14 * 3,
        "several groups per metric and day"
    );
    let metrics: BTreeSet<&String> = computed.keys().map(|k| &k.0).collect();
    assert_eq!(metrics.len(), names.len());
    assert_same(&stored, &computed);

    // Two late events: one in the lookback (the last two days), one before it.
    let placed = metric_id(&spec, "Placed Order");
    let someone = sluice_sandbox::klaviyo::profile_ids(&spec)
        .into_iter()
        .next()
        .expect("a profile");
    let http = reqwest::Client::new();
    for datetime in ["2024-01-14T12:00:00Z", "2024-01-05T12:00:00Z"] {
        http.post(format!("{sandbox}/klaviyo/_admin/events"))
            .json(
                &json!({"metric_id": placed, "profile_id": someone, "datetime": datetime,
                          "properties": {"$value": 7.25}}),
            )
            .send()
            .await
            .expect("sandbox")
            .error_for_status()
            .expect("event appended");
    }
    let second = run(&env, "metric_aggregates", params, Mode::Incremental).await;

    let after = aggregates(&env, STORED).await;
    let key = |day: &str, m: &str| {
        (
            placed.clone(),
            day.to_string(),
            "[\"\"]".to_string(),
            m.to_string(),
        )
    };
    assert_eq!(
        after[&key("2024-01-14", "count")],
        stored[&key("2024-01-14", "count")] + 1.0
    );
    assert!(
        (after[&key("2024-01-14", "sum_value")] - stored[&key("2024-01-14", "sum_value")] - 7.25)
            .abs()
            < 0.005
    );
    assert_eq!(
        after[&key("2024-01-05", "count")],
        stored[&key("2024-01-05", "count")],
        "days before the lookback are not read again"
    );
    // The second job's tasks cover the lookback days only, one per metric.
    let windows = rows(
        &env,
        &format!(
            "SELECT DISTINCT kind->>'start', kind->>'end' FROM sluice.tasks WHERE job_id = '{second}'"
        ),
    )
    .await;
    let windows: Vec<(String, String)> = windows
        .into_iter()
        .map(|w| {
            let (s, e) = w.split_once('|').expect("two columns");
            (s.to_string(), e.to_string())
        })
        .collect();
    assert_eq!(windows.len(), 1, "{windows:?}");
    let (s, e) = &windows[0];
    assert!(s.starts_with("2024-01-13T00:00:00"), "{s}");
    assert!(e.starts_with("2024-01-15T00:00:00"), "{e}");
    let days = rows(
        &env,
        &format!(
            "SELECT DISTINCT to_char(date AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM klaviyo.metric_aggregates WHERE _sluice_job_id = '{second}'"
        ),
    )
    .await;
    assert_eq!(
        days,
        set(["2024-01-14".to_string()]),
        "only the changed day was rewritten"
    );
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluicectl_streams_lists_the_engagement_streams_with_their_parameters() {
    init_logging();
    let env = TestEnv::new().await.expect("test environment");
    let out = env.sluicectl(&["streams"]).await.expect("streams");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "campaigns",
        "flows",
        "templates",
        "tags",
        "suppressions",
        "metric_aggregates",
        "--lookback-days",
        "--measurement",
        "--channel",
        "--interval",
        "--by",
    ] {
        assert!(text.contains(needle), "{needle} in:\n{text}");
    }
    env.teardown().await.expect("teardown");
}
