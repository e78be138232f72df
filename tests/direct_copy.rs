//! New keys go into the destination with one plain COPY; a batch with an existing key
//! rolls that attempt back and is upserted, leaving exactly what the upsert alone leaves.

use serde_json::{Value, json};
use sluice_contracts::MergeSpec;
use sluice_e2e::{TestEnv, init_logging};
use sluice_store::load::{Catalog, load_rows};
use uuid::Uuid;

const DDL: &str = "
CREATE SCHEMA dc;
CREATE TABLE dc.items (
    id bigint PRIMARY KEY, name text, qty int, tags jsonb NOT NULL DEFAULT '[]',
    _sluice_job_id uuid NOT NULL, _sluice_loaded_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON dc.items (name);
";

fn columns() -> Vec<String> {
    ["id", "name", "qty"].map(String::from).to_vec()
}

fn row(id: i64, name: &str, qty: Value) -> Vec<Value> {
    vec![json!(id), json!(name), qty]
}

/// Loads `rows` for `job` in one committed transaction.
async fn load(
    env: &TestEnv,
    catalog: &Catalog,
    job: Uuid,
    rows: &[Vec<Value>],
) -> sluice_store::load::LoadOutcome {
    let mut client = env.pool.get().await.expect("connection");
    let tx = client.transaction().await.expect("begin");
    let outcome = load_rows(
        &tx,
        catalog,
        job,
        "dc.items",
        &columns(),
        rows,
        &MergeSpec::default(),
    )
    .await
    .expect("load");
    tx.commit().await.expect("commit");
    outcome
}

/// (id, name, qty, tags, job) of every row, by id.
async fn stored(env: &TestEnv) -> Vec<(i64, String, i32, Value, Uuid)> {
    env.pool
        .get()
        .await
        .expect("connection")
        .query(
            "SELECT id, name, qty, tags, _sluice_job_id FROM dc.items ORDER BY id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

async fn backing_off(env: &TestEnv, catalog: &Catalog) -> bool {
    let client = env.pool.get().await.expect("connection");
    catalog
        .table(&**client, "dc.items")
        .await
        .expect("table")
        .direct
        .backing_off()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_keys_are_copied_in_and_a_batch_with_stored_keys_falls_back_to_the_upsert() {
    init_logging();
    let env = TestEnv::new().await.expect("test environment");
    env.pool
        .get()
        .await
        .expect("connection")
        .batch_execute(DDL)
        .await
        .expect("table");
    let catalog = Catalog::default();

    // A backfill: keys 1..=1000 are new, one row is refused.
    let first = Uuid::new_v4();
    let mut rows: Vec<Vec<Value>> = (1..=1000).map(|i| row(i, "a", json!(i))).collect();
    rows.push(row(1001, "a", json!("many")));
    let outcome = load(&env, &catalog, first, &rows).await;
    assert_eq!((outcome.rows, outcome.written), (1000, 1000));
    assert_eq!(outcome.rejected.len(), 1, "{:?}", outcome.rejected);
    assert!(
        outcome.rejected[0].error.contains("qty"),
        "{:?}",
        outcome.rejected[0]
    );
    assert!(
        !backing_off(&env, &catalog).await,
        "the direct COPY went through"
    );
    let after_first = stored(&env).await;
    assert_eq!(after_first.len(), 1000);
    assert!(
        after_first
            .iter()
            .all(|(_, _, _, tags, job)| *tags == json!([]) && *job == first),
        "defaults and the job id are filled in"
    );

    // New keys first, stored ones last, so the COPY has written 100 rows when the first
    // stored key refuses it: 1101..=1200 new, 901..=950 identical, 951..=1000 changed.
    let second = Uuid::new_v4();
    let mut rows: Vec<Vec<Value>> = (1101..=1200).map(|i| row(i, "b", json!(i))).collect();
    rows.extend((901..=950).map(|i| row(i, "a", json!(i))));
    rows.extend((951..=1000).map(|i| row(i, "c", json!(-i))));
    let outcome = load(&env, &catalog, second, &rows).await;
    assert_eq!(outcome.rows, 200);
    assert_eq!(
        outcome.written, 150,
        "100 new and 50 changed rows; identical ones are not rewritten"
    );
    assert!(
        backing_off(&env, &catalog).await,
        "the refused COPY backs off"
    );
    let after_second = stored(&env).await;
    assert_eq!(after_second.len(), 1100, "each key once");
    for (id, name, qty, _, job) in &after_second {
        let expected = match id {
            1..=950 => ("a", *id as i32, first),
            951..=1000 => ("c", -*id as i32, second),
            1101..=1200 => ("b", *id as i32, second),
            _ => panic!("unexpected key {id}"),
        };
        assert_eq!(
            (name.as_str(), *qty, *job),
            expected,
            "row {id} after the fallback"
        );
    }

    // Duplicate keys in a batch never take the direct path: the last one wins.
    let third = Uuid::new_v4();
    let outcome = load(
        &env,
        &catalog,
        third,
        &[row(2000, "x", json!(1)), row(2000, "y", json!(2))],
    )
    .await;
    assert_eq!(outcome.written, 1);
    let last = stored(&env).await.pop().expect("row 2000");
    assert_eq!((last.0, last.1.as_str(), last.2), (2000, "y", 2));
    env.teardown().await.expect("teardown");
}
