//! The Redshift destination, end to end, against a second Postgres database standing in
//! for Redshift (it runs the generated Redshift SQL: `MERGE`, temp staging tables, simple
//! queries) and against the S3 emulator moto for staged loads.
//!
//! The stand-in cannot execute `COPY … FROM 's3://…'`: in these tests a staged load puts
//! its objects on moto and then loads those same objects through the small-load
//! (`INSERT`) path. What is checked of a real `COPY` is its text (golden files) and the
//! objects and manifest it names.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_contracts::{MergeSpec, Mode, RecordBatch};
use sluice_destinations::Destinations;
use sluice_destinations::redshift::sql::{self, Flavour};
use sluice_e2e::redshift::{count_in, create_bucket, get_object, list_objects, s3_emulator};
use sluice_e2e::{
    SAILTHRU_SAMPLE_COUNTS, TestEnv, content_fingerprint_in, full_fingerprint_in, init_logging,
    repo_root, sailthru_sample, sailthru_tables, utc,
};
use sluice_sandbox::klaviyo::{KlaviyoConfig, KlaviyoDataSpec};
use sluice_store::cell::to_cell;
use sluice_store::ledger;
use sluice_store::load::{Catalog, Shape};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(300);

fn sample() -> String {
    sailthru_sample().to_str().expect("utf-8 path").to_string()
}

async fn assert_sample_counts(pool: &sluice_store::Pool, what: &str) {
    for (table, n) in SAILTHRU_SAMPLE_COUNTS {
        assert_eq!(
            count_in(pool, &format!("sailthru.{table}"))
                .await
                .expect("count"),
            n,
            "rows in sailthru.{table} ({what})"
        );
    }
}

async fn sailthru_fingerprints(pool: &sluice_store::Pool, full: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for table in sailthru_tables() {
        let name = format!("sailthru.{table}");
        let print = if full {
            full_fingerprint_in(pool, &name).await
        } else {
            content_fingerprint_in(pool, &name).await
        };
        out.insert(name, print.expect("fingerprint"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sailthru_sample_lands_in_redshift_as_in_postgres_and_a_rerun_changes_nothing() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let rs = env
        .add_redshift_stand_in("rs", &[])
        .await
        .expect("stand-in");
    env.start_pipeline(2);

    let into_postgres = env.sync_sailthru(&sample(), Some(7)).await.expect("job");
    let postgres = env.wait_job(into_postgres, WAIT).await.expect("job ends");
    assert_eq!(postgres.summary.state, "succeeded", "{postgres:#?}");

    let into_redshift = env
        .sync_sailthru_into(&sample(), Some(7), "rs")
        .await
        .expect("job");
    let redshift = env.wait_job(into_redshift, WAIT).await.expect("job ends");
    assert_eq!(redshift.summary.state, "succeeded", "{redshift:#?}");
    assert_eq!(redshift.summary.destination, "rs");
    assert_eq!(
        redshift.summary.rows_rejected, 0,
        "{:#?}",
        redshift.rejected
    );
    assert_sample_counts(&rs, "redshift stand-in").await;
    assert_eq!(redshift.rows_per_table, postgres.rows_per_table);
    assert_eq!(redshift.summary.rows_loaded, postgres.summary.rows_loaded);
    assert_eq!(
        sailthru_fingerprints(&rs, false).await,
        sailthru_fingerprints(&env.pool, false).await,
        "the Redshift stand-in holds other values than the Postgres load"
    );

    // Again: not a row rewritten, not even the loader's columns.
    let before = sailthru_fingerprints(&rs, true).await;
    let again = env
        .sync_sailthru_into(&sample(), None, "rs")
        .await
        .expect("job");
    let report = env.wait_job(again, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_eq!(
        sailthru_fingerprints(&rs, true).await,
        before,
        "a re-run changed rows"
    );
    assert_sample_counts(&rs, "after the re-run").await;

    // The two destinations hold separate locks and bookmarks: the ledger's database was
    // not touched by the Redshift jobs.
    assert_sample_counts(&env.pool, "postgres").await;
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staged_loads_put_exactly_the_parts_rows_on_s3_by_table_and_date_and_load_them() {
    init_logging();
    let endpoint = s3_emulator().await.expect("S3 emulator");
    let mut env = TestEnv::new().await.expect("test environment");
    let bucket = format!("sluice-test-{}", env.id);
    create_bucket(&endpoint, &bucket).await.expect("bucket");
    let rs = env
        .add_redshift_stand_in(
            "rs",
            &[
                ("s3_bucket", &bucket),
                ("s3_endpoint", &endpoint),
                ("s3_region", "us-east-1"),
                ("s3_access_key_id", "testing"),
                ("s3_secret_access_key", "testing"),
                ("iam_role", "arn:aws:iam::123456789012:role/sluice-load"),
                ("stage_rows", "1"),
                ("keep_staged", "true"),
            ],
        )
        .await
        .expect("stand-in");
    env.start_pipeline(2);
    let job = env
        .sync_sailthru_into(&sample(), Some(50), "rs")
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_eq!(report.summary.rows_rejected, 0, "{:#?}", report.rejected);
    assert_sample_counts(&rs, "staged through S3").await;

    // Every object is `sluice/<schema>.<table>/<YYYY-MM-DD>/<job>/<task>-<part>.json.gz`
    // (or the write's `.manifest`), and the objects hold exactly the rows loaded.
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let keys = list_objects(&endpoint, &bucket, "sluice/")
        .await
        .expect("list");
    assert!(!keys.is_empty(), "nothing was staged");
    let mut lines_per_table: BTreeMap<String, i64> = BTreeMap::new();
    let mut manifests = 0;
    for key in &keys {
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 5, "{key}");
        assert_eq!(parts[0], "sluice", "{key}");
        assert!(parts[1].starts_with("sailthru."), "{key}");
        assert!(parts[2] == today || parts[2] < today.as_str(), "{key}");
        assert_eq!(parts[3], job.to_string(), "{key}");
        let body = get_object(&endpoint, &bucket, key).await.expect("object");
        if let Some(stem) = parts[4].strip_suffix(".manifest") {
            manifests += 1;
            let manifest: Value = serde_json::from_slice(&body).expect("manifest JSON");
            let entries = manifest["entries"].as_array().expect("entries");
            assert!(!entries.is_empty());
            // The manifest is named after the write's first object and lists it.
            let first = format!("s3://{bucket}/{}/{stem}.json.gz", parts[..4].join("/"));
            assert!(
                entries.iter().any(|e| e["url"] == first.as_str()),
                "{manifest}"
            );
            for entry in entries {
                assert_eq!(entry["mandatory"], true);
                let url = entry["url"].as_str().expect("url");
                let object = url
                    .strip_prefix(&format!("s3://{bucket}/"))
                    .expect("same bucket");
                assert!(
                    keys.iter().any(|k| k == object),
                    "manifest names a missing {url}"
                );
            }
            continue;
        }
        assert!(parts[4].ends_with(".json.gz"), "{key}");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .expect("gzip");
        for line in text.lines() {
            let row: Value = serde_json::from_str(line).expect("JSON line");
            assert!(row["_sluice_ord"].is_i64(), "{line}");
        }
        *lines_per_table.entry(parts[1].to_string()).or_default() += text.lines().count() as i64;
    }
    assert!(manifests > 0);
    assert_eq!(
        lines_per_table, report.rows_per_table,
        "the staged objects hold exactly the rows loaded, table by table"
    );
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn klaviyo_events_and_profiles_land_in_redshift_as_in_postgres() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = KlaviyoDataSpec {
        seed: 31,
        profiles: 1_500,
        start: utc(2024, 1, 1),
        end: utc(2024, 1, 15),
        events_per_metric: 4_000,
        ..KlaviyoDataSpec::default()
    };
    env.start_klaviyo_sandbox(KlaviyoConfig {
        data: spec.clone(),
        rate_limit_scale: None,
        ..KlaviyoConfig::default()
    })
    .await
    .expect("sandbox");
    let rs = env
        .add_redshift_stand_in("rs", &[])
        .await
        .expect("stand-in");
    env.start_pipeline(2);
    let events = json!({
        "since": spec.start.to_rfc3339(),
        "until": spec.end.to_rfc3339(),
        "metrics": ["Placed Order"],
        "page_size": 500,
    });
    for destination in ["postgres", "rs"] {
        for (stream, params) in [("events", events.clone()), ("profiles", json!({}))] {
            let job = env
                .request_job_into(
                    "klaviyo",
                    stream,
                    "default",
                    params,
                    Mode::Full,
                    destination,
                )
                .await
                .expect("job");
            let report = env.wait_job(job, WAIT).await.expect("job ends");
            assert_eq!(report.summary.state, "succeeded", "{report:#?}");
            assert_eq!(report.summary.rows_rejected, 0, "{:#?}", report.rejected);
        }
    }
    for table in ["klaviyo.events", "klaviyo.profiles"] {
        let rows = count_in(&rs, table).await.expect("count");
        assert!(rows > 0, "{table} is empty");
        assert_eq!(rows, env.count(table).await.expect("count"), "{table}");
        assert_eq!(
            content_fingerprint_in(&rs, table)
                .await
                .expect("fingerprint"),
            content_fingerprint_in(&env.pool, table)
                .await
                .expect("fingerprint"),
            "{table} differs between Redshift and Postgres"
        );
    }
    env.teardown().await.expect("teardown");
}

/// A loader process that dies between committing a write into Redshift and settling it
/// in the ledger (the protocol's one dangerous point): once restarted, the redelivered
/// part is written again harmlessly and counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loader_killed_between_the_redshift_write_and_the_ledger_settle_leaves_exact_rows() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let rs = env
        .add_redshift_stand_in("rs", &[])
        .await
        .expect("stand-in");
    env.spawn("planner", &[]).expect("planner");
    env.spawn("fetcher", &[]).expect("fetcher");
    let loader = env
        .spawn(
            "loader",
            &[
                ("SLUICE_CRASH_AFTER_DESTINATION_WRITE", "3"),
                ("SLUICE__LOADER__GROUP_PARTS", "1"),
            ],
        )
        .expect("loader");
    let job = env
        .sync_sailthru_into(&sample(), Some(7), "rs")
        .await
        .expect("job");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = env.exit_status(loader) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the loader never reached its crash point"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(6),
        "the loader should have aborted at the crash point: {status:?}"
    );
    // Its third write is in Redshift, but not in the ledger.
    let before = env.report(job).await.expect("report");
    assert_eq!(before.summary.state, "running", "{before:#?}");
    let settled: i64 = before.rows_per_table.values().sum();
    let mut in_redshift = 0;
    for table in sailthru_tables() {
        in_redshift += count_in(&rs, &format!("sailthru.{table}"))
            .await
            .expect("count");
    }
    assert!(
        in_redshift >= settled,
        "Redshift holds every settled row ({in_redshift} rows, {settled} settled)"
    );

    env.spawn("loader", &[]).expect("loader again");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    assert_sample_counts(&rs, "after the crash").await;

    // The same export into Postgres, without crash, for reference.
    let reference = env.sync_sailthru(&sample(), Some(7)).await.expect("job");
    let reference = env.wait_job(reference, WAIT).await.expect("job ends");
    assert_eq!(reference.summary.state, "succeeded", "{reference:#?}");
    assert_eq!(
        report.summary.rows_loaded, reference.summary.rows_loaded,
        "the ledger counts each row once"
    );
    assert_eq!(report.rows_per_table, reference.rows_per_table);
    assert_eq!(
        sailthru_fingerprints(&rs, false).await,
        sailthru_fingerprints(&env.pool, false).await
    );
    env.teardown().await.expect("teardown");
}

fn batch(job_id: Uuid, task: &str, part: u32, last: bool, rows: Vec<Value>) -> RecordBatch {
    RecordBatch {
        v: sluice_contracts::MESSAGE_VERSION,
        job_id,
        task_id: format!("{job_id}/{task}"),
        stream: "items".into(),
        part,
        task_complete: last,
        table: "rsx.items".into(),
        columns: vec!["id".into(), "name".into(), "v".into(), "doc".into()],
        rows: rows
            .into_iter()
            .map(|r| r.as_array().cloned().unwrap_or_default())
            .collect(),
        merge: MergeSpec {
            version_column: Some("v".into()),
            ..MergeSpec::default()
        },
        children: Vec::new(),
        cursor_max: None,
        rejected: Vec::new(),
    }
}

/// Groups of parts with duplicate keys, older versions, identical rows and values
/// Redshift refuses leave in the stand-in exactly what the Postgres path leaves, and the
/// refused rows are rejects naming their column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redshift_writes_keep_the_postgres_paths_semantics_row_for_row() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.pool
        .get()
        .await
        .expect("connection")
        .batch_execute(
            "CREATE SCHEMA rsx;
             CREATE TABLE rsx.items (id bigint PRIMARY KEY, name text, v bigint NOT NULL, doc jsonb,
                 _sluice_job_id uuid, _sluice_loaded_at timestamptz NOT NULL DEFAULT now());",
        )
        .await
        .expect("table");
    let rs = env
        .add_redshift_stand_in("rs", &[])
        .await
        .expect("stand-in");
    let catalog = Catalog::default();
    let destinations = Destinations::build(&env.settings, &env.pool, &catalog).expect("build");
    let long = "x".repeat(sql::MAX_VARCHAR_BYTES + 1);
    let parts = |job: Uuid| {
        vec![
            batch(
                job,
                "t1",
                0,
                false,
                vec![
                    json!([1, "a", 1, {"k": [1, 2]}]),
                    json!([2, "it's a \\ backslash", 1, null]),
                    json!([2, "b-last", 1, {"q": "\"quoted\""}]),
                    json!([3, long, 1, null]),
                ],
            ),
            batch(
                job,
                "t1",
                1,
                true,
                vec![
                    json!([1, "a-older", 0, null]),
                    json!([4, "d \\ back'slash", 2, {"nested": {"x": null}}]),
                    json!([5, "bad-version", null, null]),
                ],
            ),
            batch(
                job,
                "t2",
                0,
                true,
                vec![
                    json!([1, "a-newer", 3, {"k": []}]),
                    json!([4, "d \\ back'slash", 2, {"nested": {"x": null}}]),
                ],
            ),
        ]
    };
    for destination in ["postgres", "rs"] {
        let job = Uuid::new_v4();
        let client = env.pool.get().await.expect("connection");
        client
            .execute(
                "INSERT INTO sluice.jobs (id, connector, stream, state, destination) VALUES ($1, 'test', 'items', 'running', $2)",
                &[&job, &destination],
            )
            .await
            .expect("job");
        client
            .execute(
                "INSERT INTO sluice.tasks (task_id, job_id, stream, kind, published_at)
                 SELECT t, $2, 'items', '{}'::jsonb, now() FROM unnest($1::text[]) t",
                &[&vec![format!("{job}/t1"), format!("{job}/t2")], &job],
            )
            .await
            .expect("tasks");
        let target = destinations.get(destination).expect("destination");
        let applied = ledger::apply_batches(&env.pool, target.write(), &parts(job))
            .await
            .expect("applied");
        assert!(applied.iter().all(|a| a.applied), "{applied:?}");
        // Both refuse the null version; only Redshift refuses the 64 KiB name.
        let refused = if destination == "rs" { 2 } else { 1 };
        assert_eq!(
            applied.iter().map(|a| a.rejected).sum::<u64>(),
            refused,
            "{destination}"
        );
        assert_eq!(
            applied
                .iter()
                .filter_map(|a| a.job_finished)
                .collect::<Vec<_>>(),
            vec![ledger::JobState::Succeeded]
        );
        // A redelivery of the whole group is skipped by the ledger.
        let again = ledger::apply_batches(&env.pool, target.write(), &parts(job))
            .await
            .expect("again");
        assert!(again.iter().all(|a| !a.applied));
    }
    // Postgres stores the long name (its text has no limit) where Redshift refuses it.
    let pg = env.pool.get().await.expect("connection");
    pg.execute("DELETE FROM rsx.items WHERE id = 3", &[])
        .await
        .expect("delete");
    let rows = |pool: sluice_store::Pool| async move {
        pool.get()
            .await
            .expect("connection")
            .query(
                "SELECT id, name, v, doc::text FROM rsx.items ORDER BY id",
                &[],
            )
            .await
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, Option<String>>(3),
                )
            })
            .collect::<Vec<_>>()
    };
    let want = rows(env.pool.clone()).await;
    assert_eq!(
        want.iter().map(|r| (r.0, r.1.as_str())).collect::<Vec<_>>(),
        vec![(1, "a-newer"), (2, "b-last"), (4, "d \\ back'slash")]
    );
    assert_eq!(rows(rs.clone()).await, want);
    let rejects: Vec<String> = pg
        .query(
            "SELECT j.destination || ': ' || r.error FROM sluice.rejected_rows r JOIN sluice.jobs j ON j.id = r.job_id ORDER BY 1",
            &[],
        )
        .await
        .expect("rejects")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rejects.len(), 3, "{rejects:?}");
    assert!(
        rejects
            .iter()
            .any(|e| e.starts_with("rs: column name: 65536 bytes, over Redshift's VARCHAR(65535)")),
        "{rejects:?}"
    );
    assert_eq!(
        rejects
            .iter()
            .filter(|e| e.contains("version column v is null"))
            .count(),
        2,
        "{rejects:?}"
    );
    env.teardown().await.expect("teardown");
}

fn golden(name: &str, actual: &str) {
    let path = repo_root().join("tests/golden/redshift").join(name);
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("golden dir");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SLUICE_BLESS=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "generated SQL differs from {} (SLUICE_BLESS=1 rewrites it after review):\n{actual}",
        path.display()
    );
}

/// The SQL the Redshift destination generates for one table of each connector: DDL,
/// staging, de-duplication, guards, `MERGE` and the S3 `COPY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_redshift_sql_matches_the_golden_files() {
    let env = TestEnv::new().await.expect("test environment");
    let catalog = Catalog::default();
    let client = env.pool.get().await.expect("connection");
    let job = Uuid::parse_str("00000000-0000-4000-8000-000000000001").expect("uuid");
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00.5Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let cases: [(&str, MergeSpec, Value); 4] = [
        (
            "klaviyo.events",
            MergeSpec::default(),
            json!(["evt_1", "met_1", "prof_1", "2024-01-01T00:00:00Z", 1704067200, "u-1", 9.5, {"a": "it's \\ here"}, {}]),
        ),
        (
            "klaviyo.profiles",
            MergeSpec {
                version_column: Some("updated".into()),
                ..MergeSpec::default()
            },
            Value::Null,
        ),
        (
            "commercetools.order_line_items",
            MergeSpec {
                version_column: Some("version".into()),
                replace_scope: Some(vec!["order_id".into()]),
                scope_keys: vec![vec![json!("92f5a867-bf19-47ab-982c-6720a03a3921")]],
                scope_version: None,
                scope_parent: None,
            },
            Value::Null,
        ),
        (
            "sailthru.profile_geo",
            MergeSpec {
                version_column: Some("export_date".into()),
                replace_scope: Some(vec!["id".into()]),
                scope_keys: vec![vec![json!("5362b9aff9c510f432f47910")]],
                scope_version: Some(json!("2016-04-01")),
                scope_parent: Some("sailthru.profile".into()),
            },
            Value::Null,
        ),
    ];
    for (table, merge, sample_row) in cases {
        let info = catalog.table(&**client, table).await.expect("table");
        let columns: Vec<String> = info
            .columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| c.name.clone())
            .filter(|c| !c.starts_with("_sluice_"))
            .collect();
        let shape = Shape::validate(info.clone(), table, &columns, &merge, 2)
            .or_else(|_| Shape::validate(info.clone(), table, &columns, &merge, 1))
            .expect("shape")
            .without_index_limits();
        let parent = merge
            .scope_parent
            .as_ref()
            .map(|p| format!("\"{}\"", p.replace('.', "\".\"")));
        let mut text = String::new();
        let mut push = |label: &str, statement: String| {
            text.push_str(&format!("-- {label}\n{statement};\n\n"));
        };
        push(
            "table (Redshift)",
            sql::create_table(&info, Flavour::Redshift),
        );
        push(
            "table (stand-in)",
            sql::create_table(&info, Flavour::StandIn),
        );
        push("stage", sql::create_stage("\"_sluice_stage_0\"", &shape));
        if let Some(row) = sample_row.as_array() {
            let cells: Vec<_> = row
                .iter()
                .zip(&shape.cols)
                .map(|(v, c)| to_cell(v, &c.ty).expect("cell"))
                .collect();
            let mut insert = sql::insert_head("\"_sluice_stage_0\"", &shape);
            sql::push_row(&mut insert, &cells, 1 << 32);
            push("insert", insert);
        }
        for statement in
            sql::replace_scope("\"_sluice_stage_0\"", "\"_sluice_scope_0\"", &shape, &merge)
        {
            push("replace scope", statement);
        }
        push(
            "dedupe",
            sql::dedupe("\"_sluice_stage_0\"", "\"_sluice_dedup_0\"", &shape, 2),
        );
        if let Some(statement) =
            sql::drop_older_than_parent("\"_sluice_dedup_0\"", &shape, parent.as_deref())
        {
            push("parent guard", statement);
        }
        push("stale rows", sql::drop_stale("\"_sluice_dedup_0\"", &shape));
        push("merge", sql::merge("\"_sluice_dedup_0\"", &shape, job, &at));
        push(
            "copy",
            sql::copy_from_s3(
                "\"_sluice_stage_0\"",
                &shape,
                &format!("s3://bucket/sluice/{table}/2026-12-01/{job}/t-0.manifest"),
                "arn:aws:iam::123456789012:role/sluice-load",
                Some("us-east-1"),
            ),
        );
        golden(&format!("{table}.sql"), &text);
    }
    drop(client);
    env.teardown().await.expect("teardown");
}

/// Unused destinations names give the operator a clear refusal at every entry point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_into_an_unknown_destination_fails_naming_it() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.start_pipeline(1);
    let job = env
        .request_job_into(
            "sailthru",
            "export",
            "default",
            json!({"export": sample()}),
            Mode::Full,
            "warehouse",
        )
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "failed");
    let error = report.summary.error.clone().unwrap_or_default();
    assert!(
        error.contains("unknown destination \"warehouse\"")
            && error.contains("SLUICE__DESTINATIONS__WAREHOUSE__KIND"),
        "{error}"
    );
    let out = env
        .sluicectl(&[
            "sync",
            "sailthru",
            "--export",
            &sample(),
            "--destination",
            "warehouse",
        ])
        .await
        .expect("sluicectl");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown destination \"warehouse\""),
        "{stderr}"
    );
    env.teardown().await.expect("teardown");
}
