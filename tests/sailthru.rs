//! End to end: Sailthru exports through planner → fetcher → loader over the real RabbitMQ
//! into the real Postgres.

use std::time::Duration;

use sluice_e2e::{
    SAILTHRU_SAMPLE_COUNTS, TestEnv, init_logging, read_zip, sailthru_sample, sailthru_tables,
    zip_archive,
};

const TABLES: [&str; 12] = [
    "blast",
    "message_blast",
    "message_blast_action",
    "message_blast_flat",
    "message_transactional",
    "message_transactional_action",
    "message_transactional_flat",
    "profile",
    "profile_geo",
    "profile_browser",
    "profile_lists_signup",
    "profile_vars",
];

const WAIT: Duration = Duration::from_secs(120);

async fn query_one_string(env: &TestEnv, sql: &str) -> String {
    let client = env.pool.get().await.expect("connection");
    let row = client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    row.get(0)
}

async fn fingerprints(env: &TestEnv) -> Vec<String> {
    let mut out = Vec::new();
    for t in sailthru_tables() {
        out.push(
            env.fingerprint(&format!("sailthru.{t}"))
                .await
                .expect("fingerprint"),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sample_export_lands_exactly_and_reloading_changes_nothing() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_pipeline(2);
    let sample = sailthru_sample();

    // A small page size makes several page tasks per member.
    let job = env
        .sync_sailthru(sample.to_str().expect("utf-8 path"), Some(7))
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_eq!(report.summary.rows_rejected, 0, "{:#?}", report.rejected);
    assert!(
        report.summary.tasks_total >= 12,
        "page size 7 splits members: {report:#?}"
    );
    assert_eq!(
        report.warnings.as_array().map(Vec::len),
        Some(4),
        "one warning per __MACOSX member: {:?}",
        report.warnings
    );

    let counts = env.counts("sailthru", &TABLES).await.expect("counts");
    for (table, n) in &SAILTHRU_SAMPLE_COUNTS {
        assert_eq!(counts[*table], *n, "rows in sailthru.{table}: {counts:?}");
    }
    assert_eq!(report.rows_per_table["sailthru.profile_vars"], 1525);

    // Values of sample records, as the export spells them.
    let check = |sql: &'static str, want: &'static str| (sql, want);
    for (sql, want) in [
        check(
            "SELECT name || '|' || day::text FROM sailthru.blast WHERE id = 6364286",
            "How To Sell Your Handmade Cards - Arts & Crafts Newsletter|2016-03-31",
        ),
        check(
            "SELECT message_id::text || '|' || send_time::text || '|' || device FROM sailthru.message_blast
              WHERE blast_id = 6364286 AND profile_id = '53c6e32d41b8f1a31200001e'",
            "4|2016-03-31 08:00:03.018|Firefox",
        ),
        check(
            "SELECT string_agg(action || '@' || to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS') || coalesce('>' || nullif(url, ''), ''), ',' ORDER BY ts, action)
               FROM sailthru.message_blast_action WHERE blast_id = 6364286 AND profile_id = '53c6e32d41b8f1a31200001e'",
            "open@2016-03-31T13:41:48.000,click@2016-03-31T13:41:49.000>http://li.about.com/click,open@2016-03-31T13:41:49.000",
        ),
        check(
            "SELECT count(*)::text || '|' || count(action_name)::text FROM sailthru.message_blast_flat
              WHERE blast_id = 6364286 AND profile_id = '5367b23af9c510f432f75c23'",
            "1|0",
        ),
        check(
            "SELECT template || '|' || send_time::text || '|' || to_char(a.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
               FROM sailthru.message_transactional m JOIN sailthru.message_transactional_action a ON a.message_id = m.id
              WHERE m.id = '56fca0e76e4adcca2a8ba972'",
            "Travel BX Welcome|2016-03-31 00:00:39.099|2016-03-31 04:06:12",
        ),
        check(
            "SELECT signup_time::text || '|' || create_date::text || '|' || total_messages::text || '|' || geo_count::text || '|' || last_open::text
               FROM sailthru.profile WHERE id = '5362b9aff9c510f432f47910'",
            "2014-05-07 11:49:33.375|2014-05-01 17:16:31|9659|574|2016-04-01 13:11:09",
        ),
        check(
            // Minute precision in the export: seconds are zero.
            "SELECT last_pageview::text FROM sailthru.profile WHERE id = '536a655ef9c510f432fa65b7'",
            "2016-03-20 02:42:00",
        ),
        check(
            // E-mail policy defaults to hash: SHA-256 of the lower-cased address.
            "SELECT (email = encode(sha256(convert_to(lower('<person@email.com>'), 'UTF8')), 'hex'))::text
               FROM sailthru.profile WHERE id = '5362b9aff9c510f432f47910'",
            "true",
        ),
        check(
            // Vars keep their JSON type: number, string, null.
            "SELECT string_agg(name || '=' || jsonb_typeof(value) || ':' || value::text, ',' ORDER BY name)
               FROM sailthru.profile_vars WHERE id = '5362b9aff9c510f432f47910' AND name IN ('booksl', 'artcraftsl', 'bookssl')",
            "artcraftsl=string:\"1\",booksl=number:1,bookssl=null:null",
        ),
        check(
            "SELECT count::text FROM sailthru.profile_geo
              WHERE id = '5362b9aff9c510f432f47910' AND scope = 'city' AND label = 'New York, NY US'",
            "188",
        ),
        check(
            "SELECT signup_time::text FROM sailthru.profile_lists_signup
              WHERE id = '5362b9aff9c510f432f47910' AND list = 'Master List'",
            "2014-06-09 11:57:26.06",
        ),
        check(
            // Case-differing var names are distinct rows.
            "SELECT count(*)::text FROM sailthru.profile_vars WHERE id = '5367ae22f9c510f432f759e4' AND lower(name) = 'group'",
            "2",
        ),
        check(
            "SELECT string_agg(stream || '@' || source_ts::date::text, ',' ORDER BY stream) FROM sluice.freshness",
            "blast@2016-04-01,message_blast@2016-04-01,message_transactional@2016-04-01,profile@2016-04-01",
        ),
    ] {
        assert_eq!(query_one_string(&env, sql).await, want, "{sql}");
    }

    // A second ingestion of the same export changes nothing, not even the load metadata.
    let before = fingerprints(&env).await;
    let again = env
        .sync_sailthru(sample.to_str().expect("utf-8 path"), None)
        .await
        .expect("job");
    let report = env.wait_job(again, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_eq!(
        fingerprints(&env).await,
        before,
        "a re-ingestion changed data"
    );
    assert_eq!(
        env.counts("sailthru", &TABLES).await.expect("counts"),
        counts
    );

    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resent_message_is_updated_and_gains_only_its_new_actions() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_pipeline(1);
    let sample = sailthru_sample();
    let first = env
        .sync_sailthru(sample.to_str().expect("utf-8 path"), None)
        .await
        .expect("job");
    assert_eq!(
        env.wait_job(first, WAIT).await.expect("ends").summary.state,
        "succeeded"
    );
    let blast_before = env
        .fingerprint("sailthru.blast")
        .await
        .expect("fingerprint");

    // Next day's export re-sends two messages: one that had no actions now has two opens and
    // a click; one that had two opens and a click gains one more open.
    let day2 = concat!(
        r#"{ "profile_id" : "5367b23af9c510f432f75c23", "send_time" : "2016-03-31T08:00:03.016", "opens" : [{ "ts" : { "$date" : 1459500000000 } }, { "ts" : { "$date" : 1459500060000 } }], "clicks" : [{ "url" : "http://example.com/a", "ts" : { "$date" : 1459500070000 } }], "blast_id" : 6364286, "message_id" : 1, "device" : "Chrome", "message_revenue" : null, "delivery_status" : null }"#,
        "\n",
        r#"{ "profile_id" : "53c6e32d41b8f1a31200001e", "send_time" : "2016-03-31T08:00:03.018", "opens" : [{ "ts" : { "$date" : 1459431708000 } }, { "ts" : { "$date" : 1459431709000 } }, { "ts" : { "$date" : 1459510000000 } }], "clicks" : [{ "url" : "http://li.about.com/click", "ts" : { "$date" : 1459431709000 } }], "blast_id" : 6364286, "message_id" : 4, "device" : "Firefox", "message_revenue" : null, "delivery_status" : null }"#,
        "\n"
    );
    // It also re-sends two profiles: one now has a single var and no list signups, the
    // other has lost every var.
    let members = read_zip(&sailthru_sample()).expect("sample");
    let profiles = String::from_utf8(
        members
            .iter()
            .find(|(n, _)| n == "profile.20160401.json")
            .expect("profile member")
            .1
            .clone(),
    )
    .expect("utf-8");
    let mut resent = String::new();
    for line in profiles.lines().filter(|l| !l.trim().is_empty()) {
        let mut record: serde_json::Value = serde_json::from_str(line).expect("sample line");
        match record["id"].as_str() {
            Some("5362b9aff9c510f432f47910") => {
                record["vars"] = serde_json::json!({ "booksl": 2 });
                record["lists_signup"] = serde_json::json!({});
            }
            Some("5362ba0bf9c510f432f4793c") => record["vars"] = serde_json::json!({}),
            _ => continue,
        }
        resent.push_str(&record.to_string());
        resent.push('\n');
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("export-20160402.zip");
    std::fs::write(
        &path,
        zip_archive(&[
            ("message_blast.20160402.json", day2.as_bytes()),
            ("profile.20160402.json", resent.as_bytes()),
        ])
        .expect("zip"),
    )
    .expect("write");
    let vars_of = |id: &'static str| {
        format!("SELECT count(*)::text FROM sailthru.profile_vars WHERE id = '{id}'")
    };
    let first_vars: i64 = query_one_string(&env, &vars_of("5362b9aff9c510f432f47910"))
        .await
        .parse()
        .expect("count");
    let second_vars: i64 = query_one_string(&env, &vars_of("5362ba0bf9c510f432f4793c"))
        .await
        .parse()
        .expect("count");
    let first_lists: i64 = query_one_string(
        &env,
        "SELECT count(*)::text FROM sailthru.profile_lists_signup WHERE id = '5362b9aff9c510f432f47910'",
    )
    .await
    .parse()
    .expect("count");
    assert!(first_vars > 1 && second_vars > 0 && first_lists > 0);
    let second = env
        .sync_sailthru(path.to_str().expect("utf-8 path"), None)
        .await
        .expect("job");
    assert_eq!(
        env.wait_job(second, WAIT)
            .await
            .expect("ends")
            .summary
            .state,
        "succeeded"
    );

    assert_eq!(
        env.count("sailthru.message_blast").await.expect("count"),
        20
    );
    assert_eq!(
        env.count("sailthru.message_blast_action")
            .await
            .expect("count"),
        8 + 3 + 1
    );
    assert_eq!(
        env.count("sailthru.message_blast_flat")
            .await
            .expect("count"),
        23 - 1 + 3 + 1
    );
    assert_eq!(
        query_one_string(
            &env,
            "SELECT device || '|' || export_date::text FROM sailthru.message_blast
              WHERE blast_id = 6364286 AND profile_id = '5367b23af9c510f432f75c23'"
        )
        .await,
        "Chrome|2016-04-02"
    );
    assert_eq!(
        query_one_string(
            &env,
            "SELECT count(*)::text FROM sailthru.message_blast WHERE export_date = '2016-04-02'"
        )
        .await,
        "2"
    );
    assert_eq!(
        env.fingerprint("sailthru.blast")
            .await
            .expect("fingerprint"),
        blast_before
    );
    let collections = |env: &TestEnv| {
        let env_pool = env.pool.clone();
        async move {
            let client = env_pool.get().await.expect("connection");
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM sailthru.profile_vars),
                            (SELECT count(*) FROM sailthru.profile_lists_signup),
                            (SELECT string_agg(name || '=' || value::text, ',') FROM sailthru.profile_vars
                              WHERE id = '5362b9aff9c510f432f47910'),
                            (SELECT count(*) FROM sailthru.profile_vars WHERE id = '5362ba0bf9c510f432f4793c'),
                            (SELECT count(*) FROM sailthru.profile_lists_signup WHERE id = '5362b9aff9c510f432f47910')",
                    &[],
                )
                .await
                .expect("query");
            (
                row.get::<_, i64>(0),
                row.get::<_, i64>(1),
                row.get::<_, Option<String>>(2),
                row.get::<_, i64>(3),
                row.get::<_, i64>(4),
            )
        }
    };
    let expected_collections = (
        1525 - first_vars - second_vars + 1,
        851 - first_lists,
        Some("booksl=2".to_string()),
        0,
        0,
    );
    assert_eq!(collections(&env).await, expected_collections);

    // Loading the older export again afterwards does not roll the messages back.
    let third = env
        .sync_sailthru(sample.to_str().expect("utf-8 path"), None)
        .await
        .expect("job");
    assert_eq!(
        env.wait_job(third, WAIT).await.expect("ends").summary.state,
        "succeeded"
    );
    assert_eq!(
        query_one_string(
            &env,
            "SELECT device || '|' || export_date::text FROM sailthru.message_blast
              WHERE blast_id = 6364286 AND profile_id = '5367b23af9c510f432f75c23'"
        )
        .await,
        "Chrome|2016-04-02"
    );
    assert_eq!(
        env.count("sailthru.message_blast_action")
            .await
            .expect("count"),
        12
    );
    // …nor bring back the removed vars and list signups.
    assert_eq!(collections(&env).await, expected_collections);
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_reported_by_file_and_line_and_the_rest_loads() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_pipeline(1);
    let members = read_zip(&sailthru_sample()).expect("sample");
    let blast = &members
        .iter()
        .find(|(n, _)| n == "blast.20160401.json")
        .expect("blast member")
        .1;
    // Corrupt line 3 of the blast member.
    let text = String::from_utf8(blast.clone()).expect("utf-8");
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    lines[2] = r#"{ "name" : "cut off", "day" : "2016-03-31", "id" : 63"#.to_string();
    let corrupt = lines.join("\n");
    let message_blast = &members
        .iter()
        .find(|(n, _)| n == "message_blast.20160401.json")
        .expect("member")
        .1;
    let archive = zip_archive(&[
        ("blast.20160401.json", corrupt.as_bytes()),
        ("message_blast.20160401.json", message_blast),
        ("clicks.20160401.json", b"{ \"id\" : 1 }\n"),
        ("notes.txt", b"not data\n"),
    ])
    .expect("zip");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.zip");
    std::fs::write(&path, &archive).expect("write");

    let job = env
        .sync_sailthru(path.to_str().expect("utf-8 path"), None)
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_eq!(env.count("sailthru.blast").await.expect("count"), 19);
    assert_eq!(
        env.count("sailthru.message_blast").await.expect("count"),
        20
    );
    assert_eq!(report.summary.rows_rejected, 2, "{:#?}", report.rejected);
    let sources: Vec<&str> = report.rejected.iter().map(|r| r.source.as_str()).collect();
    assert!(
        sources.contains(&"blast.20160401.json line 3"),
        "{sources:?}"
    );
    assert!(sources.contains(&"clicks.20160401.json"), "{sources:?}");
    let unknown = report
        .rejected
        .iter()
        .find(|r| r.source == "clicks.20160401.json")
        .expect("unknown member reported");
    assert!(
        unknown.error.contains("unknown table 'clicks'"),
        "{}",
        unknown.error
    );
    assert!(
        report
            .warnings
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w.as_str().unwrap_or_default().contains("notes.txt")),
        "{:?}",
        report.warnings
    );
    // The corrupt line's raw text is kept for the operator.
    assert_eq!(
        query_one_string(
            &env,
            "SELECT record #>> '{}' FROM sluice.rejected_rows WHERE source = 'blast.20160401.json line 3'"
        )
        .await,
        r#"{ "name" : "cut off", "day" : "2016-03-31", "id" : 63"#
    );

    // A truncated archive: the complete members load, the cut one loads its complete lines
    // and is reported.
    let bytes = std::fs::read(sailthru_sample()).expect("sample");
    let cut = bytes.len() * 7 / 10;
    let path = dir.path().join("truncated.zip");
    std::fs::write(&path, &bytes[..cut]).expect("write");
    let job = env
        .sync_sailthru(path.to_str().expect("utf-8 path"), None)
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    let truncated = report
        .rejected
        .iter()
        .find(|r| r.error.contains("truncated"))
        .unwrap_or_else(|| panic!("truncation reported: {:#?}", report.rejected));
    assert_eq!(truncated.source, "profile.20160401.json", "{truncated:?}");
    let profiles = env.count("sailthru.profile").await.expect("count");
    assert!(
        (1..20).contains(&profiles),
        "{profiles} profiles from the cut member"
    );
    assert!(
        truncated.error.contains(&format!("after line {profiles}")),
        "{} (loaded {profiles})",
        truncated.error
    );
    assert_eq!(
        env.count("sailthru.message_transactional")
            .await
            .expect("count"),
        20
    );

    env.teardown().await.expect("teardown");
}

/// A click URL that no compression shortens: 12,000 bytes of hex digits from a hash chain.
fn incompressible_url() -> String {
    use std::fmt::Write as _;
    let mut url = String::from("https://track.example.com/c?d=");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while url.len() < 12_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let _ = write!(url, "{x:016x}");
    }
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_types_out_of_range_values_bad_timestamps_and_oversize_keys_are_rejected_row_by_row()
{
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_pipeline(1);
    let members = read_zip(&sailthru_sample()).expect("sample");
    let message_blast = String::from_utf8(
        members
            .iter()
            .find(|(n, _)| n == "message_blast.20160401.json")
            .expect("member")
            .1
            .clone(),
    )
    .expect("utf-8");
    let url = incompressible_url();
    let bad = [
        // Lines 1–4 after the sample's: each has one bad value.
        r#"{ "profile_id" : "p-wrong-type", "blast_id" : 6364286, "message_id" : 101, "message_revenue" : "lots" }"#.to_string(),
        r#"{ "profile_id" : "p-out-of-range", "blast_id" : 6364286, "message_id" : 102, "message_revenue" : 99999999999999999999 }"#.to_string(),
        r#"{ "profile_id" : "p-bad-time", "blast_id" : 6364286, "message_id" : 103, "send_time" : "2016-02-30T25:61:00.000" }"#.to_string(),
        // The message itself is fine; its click's URL is too long for the table's key.
        format!(
            r#"{{ "profile_id" : "p-oversize", "blast_id" : 6364286, "message_id" : 104, "clicks" : [{{ "url" : "{url}", "ts" : {{ "$date" : 1459431709000 }} }}, {{ "url" : "http://ok.example.com/", "ts" : {{ "$date" : 1459431709000 }} }}] }}"#
        ),
    ];
    let sample_lines = message_blast.trim_end().split('\n').count();
    let member = format!("{}\n{}\n", message_blast.trim_end(), bad.join("\n"));
    let archive = zip_archive(&[("message_blast.20160401.json", member.as_bytes())]).expect("zip");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad-values.zip");
    std::fs::write(&path, &archive).expect("write");

    let job = env
        .sync_sailthru(path.to_str().expect("utf-8 path"), None)
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_eq!(report.summary.rows_rejected, 4, "{:#?}", report.rejected);
    // The sample's messages and the oversize-click message load; the three bad lines do not.
    assert_eq!(
        env.count("sailthru.message_blast").await.expect("count"),
        sample_lines as i64 + 1
    );
    let ok_click = query_one_string(
        &env,
        "SELECT url FROM sailthru.message_blast_action WHERE profile_id = 'p-oversize'",
    )
    .await;
    assert_eq!(ok_click, "http://ok.example.com/");

    let client = env.pool.get().await.expect("connection");
    let rows = client
        .query(
            "SELECT source, coalesce(table_name, ''), error, record::text FROM sluice.rejected_rows WHERE job_id = $1 ORDER BY source",
            &[&job],
        )
        .await
        .expect("rejected rows");
    let rejected: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let find = |needle: &str| {
        rejected
            .iter()
            .find(|r| r.3.contains(needle))
            .unwrap_or_else(|| panic!("no rejected record holds {needle}: {rejected:#?}"))
    };
    let wrong = find("p-wrong-type");
    assert!(wrong.2.contains("message_revenue"), "{wrong:?}");
    assert!(
        wrong.0.contains(&format!("line {}", sample_lines + 1)),
        "{wrong:?}"
    );
    let range = find("p-out-of-range");
    assert!(range.2.contains("message_revenue"), "{range:?}");
    let time = find("p-bad-time");
    assert!(time.2.contains("send_time"), "{time:?}");
    let oversize = find(&url[..200]);
    assert_eq!(oversize.1, "sailthru.message_blast_action", "{oversize:?}");
    assert!(oversize.2.contains("url"), "{:?}", oversize.2);
    drop(client);

    // `jobs show` reports the count and the first rejects.
    let show = env
        .sluicectl(&["jobs", "show", &job.to_string()])
        .await
        .expect("show");
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("4 rejected"), "{text}");
    assert!(text.contains("message_revenue"), "{text}");
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_job_on_a_running_stream_is_refused() {
    init_logging();
    let env = TestEnv::new().await.expect("test environment");
    // No fetchers: the first job stays running.
    let mut env = env;
    env.start_planner();
    let sample = sailthru_sample();
    let first = env
        .sync_sailthru(sample.to_str().expect("utf-8 path"), None)
        .await
        .expect("job");
    let deadline = std::time::Instant::now() + WAIT;
    while env.report(first).await.expect("report").summary.state != "running" {
        assert!(
            std::time::Instant::now() < deadline,
            "first job never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = env
        .sync_sailthru(sample.to_str().expect("utf-8 path"), None)
        .await
        .expect("job");
    let report = env.wait_job(second, WAIT).await.expect("second job ends");
    assert_eq!(report.summary.state, "failed");
    let error = report.summary.error.unwrap_or_default();
    assert!(
        error.contains("already has a running job") && error.contains(&first.to_string()),
        "{error}"
    );
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archive_without_a_data_member_fails_naming_the_archive() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_pipeline(1);
    let archive = zip_archive(&[
        ("README.txt", b"not an export".as_slice()),
        (
            "__MACOSX/._blast.20160401.json",
            b"resource fork".as_slice(),
        ),
    ])
    .expect("zip");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-data.zip");
    std::fs::write(&path, &archive).expect("write");
    let job = env
        .sync_sailthru(path.to_str().expect("utf-8 path"), None)
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "failed", "{report:#?}");
    let error = report.summary.error.clone().unwrap_or_default();
    assert!(
        error.contains(path.to_str().expect("utf-8"))
            && error.contains("has no data member")
            && error.contains("README.txt"),
        "{error}"
    );
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_host_fails_the_job_at_once_naming_it() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_pipeline(1);
    let started = std::time::Instant::now();
    let job = env
        .sync_sailthru("http://sluice-no-such-host.invalid/export.zip", None)
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "failed", "{report:#?}");
    let error = report.summary.error.clone().unwrap_or_default();
    assert!(
        error.contains("host sluice-no-such-host.invalid could not be resolved")
            && !error.contains("retries"),
        "{error}"
    );
    // One try, not retries inside retries (it took 33 s).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    env.teardown().await.expect("teardown");
}
