//! Secrets never reach logs or errors; hostile table and column names in a batch cannot
//! break or inject SQL.

use std::time::Duration;

use serde_json::json;
use sluice_contracts::{MESSAGE_VERSION, MergeSpec, RecordBatch};
use sluice_e2e::{TestEnv, init_logging};
use sluice_sandbox::klaviyo::{KlaviyoConfig, KlaviyoDataSpec};
use sluice_store::StoreError;
use sluice_store::ledger;
use sluice_store::load::Catalog;

const API_KEY: &str = "pk_d0NotLogMe_7f3a9c1e";
const WRONG_KEY: &str = "pk_wr0ngSecret_55aa11";
const DB_PASSWORD: &str = "pg-Secret-Do-Not-Log-91";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_and_passwords_never_appear_in_logs_or_errors() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = KlaviyoDataSpec {
        profiles: 500,
        events_per_metric: 2_000,
        ..KlaviyoDataSpec::default()
    };
    let sandbox = env
        .start_klaviyo_sandbox(KlaviyoConfig {
            data: spec.clone(),
            api_keys: vec![API_KEY.into()],
            rate_limit_scale: None,
            ..KlaviyoConfig::default()
        })
        .await
        .expect("sandbox");
    // The services run as processes whose whole output is captured: the database URL
    // carries a password (trust authentication ignores it), account `default` the right
    // key and account `other` a wrong one.
    let db_url =
        env.settings
            .database
            .url()
            .replacen("postgres@", &format!("postgres:{DB_PASSWORD}@"), 1);
    assert!(db_url.contains(DB_PASSWORD), "{}", db_url.len());
    let secrets_env = [
        ("SLUICE__DATABASE__URL", db_url.as_str()),
        (
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY",
            API_KEY,
        ),
        (
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__OTHER__API_KEY",
            WRONG_KEY,
        ),
        (
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__OTHER__BASE_URL",
            sandbox.as_str(),
        ),
        (
            "SLUICE__LOG__LEVEL",
            "debug,h2=info,hyper=info,reqwest=info,lapin=info,tokio_postgres=info",
        ),
    ];
    env.spawn("planner", &secrets_env).expect("planner");
    env.spawn("fetcher", &secrets_env).expect("fetcher");
    env.spawn("loader", &secrets_env).expect("loader");

    let good = env
        .request_job("klaviyo", "events", json!({ "metrics": ["Placed Order"], "since": spec.start.to_rfc3339(), "until": spec.end.to_rfc3339() }))
        .await
        .expect("job");
    let report = env
        .wait_job(good, Duration::from_secs(180))
        .await
        .expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");

    // A job of the account with the wrong key fails with Klaviyo's 401.
    let other = env
        .request_job_as(
            "klaviyo",
            "metrics",
            "other",
            json!({}),
            sluice_contracts::Mode::Full,
        )
        .await
        .expect("job");
    let report = env
        .wait_job(other, Duration::from_secs(180))
        .await
        .expect("job ends");
    assert_eq!(report.summary.state, "failed", "{report:#?}");
    let error = format!("{report:?}");
    assert!(
        error.contains("401"),
        "the failure names Klaviyo's answer: {error}"
    );

    // Nothing anywhere carries a secret: service logs, job errors, parked messages.
    let mut logs = String::new();
    for entry in std::fs::read_dir(std::env::temp_dir()).expect("tmp") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.starts_with(&format!("sluice-e2e-{}-", env.id)) && name.ends_with(".log") {
            logs.push_str(&std::fs::read_to_string(&path).expect("log"));
        }
    }
    assert!(
        logs.len() > 1000,
        "the services logged (debug level): {} bytes",
        logs.len()
    );
    let client = env.pool.get().await.expect("connection");
    let ledger_text: String = client
        .query_one(
            "SELECT coalesce(string_agg(coalesce(error, ''), ' '), '') FROM
               (SELECT error FROM sluice.jobs UNION ALL SELECT error FROM sluice.tasks
                UNION ALL SELECT error FROM sluice.rejected_rows) e",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    drop(client);
    let dlq = env.sluicectl(&["dlq", "list"]).await.expect("dlq list");
    let dlq_text =
        String::from_utf8_lossy(&dlq.stdout).to_string() + &String::from_utf8_lossy(&dlq.stderr);
    for secret in [API_KEY, WRONG_KEY, DB_PASSWORD] {
        assert!(!logs.contains(secret), "a service log contains a secret");
        assert!(
            !ledger_text.contains(secret),
            "the ledger contains a secret"
        );
        assert!(
            !dlq_text.contains(secret),
            "the parking lot listing contains a secret"
        );
    }
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_table_and_column_names_are_refused_without_touching_sql() {
    init_logging();
    let env = TestEnv::new().await.expect("test environment");
    let catalog = Catalog::default();
    let job_id = uuid::Uuid::new_v4();
    // A running job: parts of unknown jobs are skipped before their rows are looked at.
    env.pool
        .get()
        .await
        .expect("connection")
        .execute(
            "INSERT INTO sluice.jobs (id, connector, stream, state) VALUES ($1, 'sailthru', 'export', 'running')",
            &[&job_id],
        )
        .await
        .expect("job");
    let batch = |table: &str, columns: Vec<&str>| RecordBatch {
        v: MESSAGE_VERSION,
        job_id,
        task_id: format!("t-{}", uuid::Uuid::new_v4()),
        stream: "blast".into(),
        part: 0,
        task_complete: true,
        table: table.into(),
        columns: columns.into_iter().map(String::from).collect(),
        rows: vec![vec![json!(1); 4]],
        merge: MergeSpec::default(),
        children: Vec::new(),
        cursor_max: None,
        rejected: Vec::new(),
    };
    for (table, columns) in [
        (
            r#"sailthru.blast"; DROP TABLE sailthru.profile; --"#,
            vec!["id", "name", "day", "export_date"],
        ),
        (
            "sailthru.blast",
            vec![
                "id",
                r#"name" = 'x'; DROP TABLE sailthru.profile; --"#,
                "day",
                "export_date",
            ],
        ),
        ("sluice.jobs", vec!["id", "connector", "stream", "account"]),
        (
            "pg_catalog.pg_class",
            vec!["oid", "relname", "relkind", "relnamespace"],
        ),
    ] {
        let err = ledger::apply_batch(&env.pool, &catalog, &batch(table, columns))
            .await
            .expect_err("refused");
        assert!(matches!(err, StoreError::Schema(_)), "{table}: {err}");
    }
    assert_eq!(
        env.count("sailthru.profile")
            .await
            .expect("the table is still there"),
        0
    );
    assert_eq!(
        env.count("sluice.jobs")
            .await
            .expect("the ledger is untouched"),
        1
    );
    assert_eq!(
        env.count("sluice.batches")
            .await
            .expect("no part was claimed"),
        0
    );
    env.teardown().await.expect("teardown");
}
