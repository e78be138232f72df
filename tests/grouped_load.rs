//! Several parts in one transaction (`ledger::apply_batches`, the loader's groups) leave
//! exactly what applying them one at a time leaves; a part that cannot be loaded fails
//! alone.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_broker::lapin::options::QueueDeclareOptions;
use sluice_broker::lapin::types::FieldTable;
use sluice_broker::{Broker, Headers, Route};
use sluice_contracts::{MESSAGE_VERSION, MergeSpec, RecordBatch, RejectedRecord};
use sluice_e2e::{TestEnv, init_logging};
use sluice_store::ledger;
use sluice_store::load::Catalog;
use uuid::Uuid;

const DDL: &str = "
CREATE SCHEMA grp;
CREATE TABLE grp.grouped (
    id bigint PRIMARY KEY, name text CHECK (name <> 'bad'), v bigint,
    _sluice_job_id uuid NOT NULL, _sluice_loaded_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE grp.single (LIKE grp.grouped INCLUDING ALL);
";

fn part(
    table: &str,
    job_id: Uuid,
    task: &str,
    part: u32,
    last: bool,
    rows: Vec<Value>,
) -> RecordBatch {
    RecordBatch {
        v: MESSAGE_VERSION,
        job_id,
        task_id: format!("{job_id}/{task}"),
        stream: "items".into(),
        part,
        task_complete: last,
        table: table.into(),
        columns: vec!["id".into(), "name".into(), "v".into()],
        rows: rows
            .into_iter()
            .map(|r| r.as_array().cloned().unwrap_or_default())
            .collect(),
        merge: MergeSpec {
            version_column: Some("v".into()),
            ..MergeSpec::default()
        },
        children: Vec::new(),
        cursor_max: Some(format!("2024-01-0{}", part + 1)),
        rejected: Vec::new(),
    }
}

/// The parts of job `job_id` for `table` (and one part of `cancelled`), in delivery order.
fn parts(table: &str, job_id: Uuid, cancelled: Uuid) -> Vec<RecordBatch> {
    let mut with_reject = part(table, job_id, "t3", 0, true, vec![json!([5, "e", 1])]);
    with_reject.rejected.push(RejectedRecord {
        source: "test line 1".into(),
        table: Some(table.into()),
        error: "unparsable".into(),
        raw: json!("{oops"),
    });
    let first = part(
        table,
        job_id,
        "t1",
        0,
        false,
        // Key 1 is stored with a newer version; key 3 twice in the part: the last wins even
        // with a lower version.
        vec![
            json!([1, "a", 4]),
            json!([2, "a", 1]),
            json!([3, "a", 3]),
            json!([3, "a2", 2]),
        ],
    );
    vec![
        first.clone(),
        // Key 2: newer than part 1's; key 3: older than part 1's last; a null version is
        // rejected.
        part(
            table,
            job_id,
            "t2",
            0,
            true,
            vec![
                json!([2, "b", 3]),
                json!([3, "b", 1]),
                json!([4, "b", null]),
            ],
        ),
        // Key 2 again with the same version: the later part wins.
        part(table, job_id, "t1", 1, true, vec![json!([2, "c", 3])]),
        // A copy of a part already in the group: a redelivery.
        first,
        part(table, cancelled, "tk", 0, true, vec![json!([9, "k", 1])]),
        with_reject,
    ]
}

/// A job in `state` with `tasks` recorded as the planner records them.
async fn new_job(env: &TestEnv, state: &str, tasks: &[&str]) -> Uuid {
    let job_id = Uuid::new_v4();
    let client = env.pool.get().await.expect("connection");
    client
        .execute(
            "INSERT INTO sluice.jobs (id, connector, stream, state) VALUES ($1, 'test', 'items', $2)",
            &[&job_id, &state],
        )
        .await
        .expect("job");
    let ids: Vec<String> = tasks.iter().map(|t| format!("{job_id}/{t}")).collect();
    client
        .execute(
            "INSERT INTO sluice.tasks (task_id, job_id, stream, kind, published_at)
             SELECT t, $2, 'items', '{}'::jsonb, now() FROM unnest($1::text[]) t",
            &[&ids, &job_id],
        )
        .await
        .expect("tasks");
    job_id
}

async fn rows(env: &TestEnv, table: &str) -> Vec<(i64, String, i64)> {
    env.pool
        .get()
        .await
        .expect("connection")
        .query(&format!("SELECT id, name, v FROM {table} ORDER BY id"), &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// What the ledger says about a job: state, rows loaded, rows rejected, and per task
/// (without the job id prefix) state, rows and cursor.
async fn ledger_state(env: &TestEnv, job_id: Uuid) -> Vec<String> {
    let client = env.pool.get().await.expect("connection");
    let job = client
        .query_one(
            "SELECT state, rows_loaded, rows_rejected FROM sluice.jobs WHERE id = $1",
            &[&job_id],
        )
        .await
        .expect("job");
    let mut out = vec![format!(
        "job {} {} {}",
        job.get::<_, String>(0),
        job.get::<_, i64>(1),
        job.get::<_, i64>(2)
    )];
    for t in client
        .query(
            "SELECT task_id, state, rows_loaded, cursor_max, final_part FROM sluice.tasks
              WHERE job_id = $1 ORDER BY task_id",
            &[&job_id],
        )
        .await
        .expect("tasks")
    {
        let id: String = t.get(0);
        out.push(format!(
            "{} {} {} {:?} {:?}",
            id.rsplit('/').next().unwrap_or_default(),
            t.get::<_, String>(1),
            t.get::<_, i64>(2),
            t.get::<_, Option<String>>(3),
            t.get::<_, Option<i32>>(4)
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_parts_leaves_what_one_at_a_time_leaves() {
    init_logging();
    let env = TestEnv::new().await.expect("test environment");
    let catalog = Catalog::default();
    let client = env.pool.get().await.expect("connection");
    client.batch_execute(DDL).await.expect("tables");
    let old_job = new_job(&env, "succeeded", &[]).await;
    for table in ["grp.grouped", "grp.single"] {
        client
            .execute(
                &format!(
                    "INSERT INTO {table} (id, name, v, _sluice_job_id) VALUES (1, 'stored', 5, $1)"
                ),
                &[&old_job],
            )
            .await
            .expect("stored row");
    }

    // One at a time.
    let (single_job, single_cancelled) = (
        new_job(&env, "running", &["t1", "t2", "t3"]).await,
        new_job(&env, "cancelled", &[]).await,
    );
    let mut single = Vec::new();
    for p in parts("grp.single", single_job, single_cancelled) {
        single.push(
            ledger::apply_batch(&env.pool, &catalog, &p)
                .await
                .expect("part"),
        );
    }

    // As one group.
    let (job, cancelled) = (
        new_job(&env, "running", &["t1", "t2", "t3"]).await,
        new_job(&env, "cancelled", &[]).await,
    );
    let group = parts("grp.grouped", job, cancelled);
    let grouped = ledger::apply_batches(&env.pool, ledger::Write::Ledger(&catalog), &group)
        .await
        .expect("group");

    let expected = vec![
        (1, "stored".to_string(), 5),
        (2, "c".to_string(), 3),
        (3, "a2".to_string(), 2),
        (5, "e".to_string(), 1),
    ];
    assert_eq!(rows(&env, "grp.single").await, expected);
    assert_eq!(rows(&env, "grp.grouped").await, expected);
    let summary = |r: &[ledger::BatchApplied]| -> Vec<(bool, u64, u64, Option<ledger::JobState>)> {
        r.iter()
            .map(|a| (a.applied, a.rows, a.rejected, a.job_finished))
            .collect()
    };
    assert_eq!(
        summary(&grouped)
            .into_iter()
            .map(|(a, r, j, _)| (a, r, j))
            .collect::<Vec<_>>(),
        vec![
            (true, 4, 0),
            (true, 2, 1),
            (true, 1, 0),
            (false, 0, 0),
            (false, 0, 0),
            (true, 1, 1),
        ]
    );
    assert_eq!(
        summary(&single)
            .into_iter()
            .map(|(a, r, j, _)| (a, r, j))
            .collect::<Vec<_>>(),
        summary(&grouped)
            .into_iter()
            .map(|(a, r, j, _)| (a, r, j))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        grouped
            .iter()
            .filter_map(|a| a.job_finished.map(ledger::JobState::as_str))
            .collect::<Vec<_>>(),
        vec!["succeeded"]
    );
    let ledger_single = ledger_state(&env, single_job).await;
    assert_eq!(ledger_single[0], "job succeeded 8 2", "{ledger_single:?}");
    assert_eq!(ledger_state(&env, job).await, ledger_single);
    assert_eq!(
        ledger_state(&env, cancelled).await,
        ledger_state(&env, single_cancelled).await
    );
    assert_eq!(
        ledger_state(&env, cancelled).await,
        vec!["job cancelled 0 0".to_string()]
    );

    // The whole group delivered again: every part was seen before.
    let again = ledger::apply_batches(&env.pool, ledger::Write::Ledger(&catalog), &group)
        .await
        .expect("group again");
    assert!(again.iter().all(|a| !a.applied), "{again:?}");
    assert_eq!(rows(&env, "grp.grouped").await, expected);
    assert_eq!(ledger_state(&env, job).await, ledger_single);

    // A group with a part the table refuses commits nothing.
    let job2 = new_job(&env, "running", &["g", "b"]).await;
    let bad_group = vec![
        part("grp.grouped", job2, "g", 0, true, vec![json!([10, "x", 1])]),
        part(
            "grp.grouped",
            job2,
            "b",
            0,
            true,
            vec![json!([11, "bad", 1])],
        ),
    ];
    let err = ledger::apply_batches(&env.pool, ledger::Write::Ledger(&catalog), &bad_group)
        .await
        .expect_err("check violation");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("check constraint"), "{err}");
    assert_eq!(
        ledger_state(&env, job2).await,
        vec![
            "job running 0 0".to_string(),
            "b pending 0 None None".to_string(),
            "g pending 0 None None".to_string(),
        ]
    );
    assert_eq!(rows(&env, "grp.grouped").await, expected);
    drop(client);
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_parks_only_the_bad_part_of_a_group() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    env.pool
        .get()
        .await
        .expect("connection")
        .batch_execute(DDL)
        .await
        .expect("tables");
    let job = new_job(&env, "running", &["t0", "t1", "t2", "t3", "t4", "t5"]).await;
    // A backlog before the loader starts, so it forms groups.
    let broker = Broker::connect(&env.settings.amqp, "grouped-load-test")
        .await
        .expect("broker");
    for i in 0..6_i64 {
        let name = if i == 3 { "bad" } else { "ok" };
        let p = part(
            "grp.grouped",
            job,
            &format!("t{i}"),
            0,
            true,
            vec![json!([i * 10, name, 1]), json!([i * 10 + 1, "ok", 1])],
        );
        broker
            .publish(Route::Load, &p, Headers::default())
            .await
            .expect("publish");
    }
    env.settings.loader.concurrency = 1;
    env.start_loader();

    let report = env
        .wait_job(job, Duration::from_secs(60))
        .await
        .expect("job ends");
    assert_eq!(report.summary.state, "failed", "{report:#?}");
    assert_eq!(report.failed_tasks.len(), 1, "{report:#?}");
    assert_eq!(report.failed_tasks[0].0, format!("{job}/t3"));
    assert!(
        report.failed_tasks[0].1.contains("check constraint"),
        "{report:#?}"
    );
    assert_eq!(report.summary.rows_loaded, 10, "{report:#?}");
    assert_eq!(env.count("grp.grouped").await.expect("count"), 10);
    let parked = broker
        .channel()
        .await
        .expect("channel")
        .queue_declare(
            broker.topology().parked().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("parked queue")
        .message_count();
    assert_eq!(parked, 1, "only the bad part is parked");
    broker.close().await;
    env.teardown().await.expect("teardown");
}
