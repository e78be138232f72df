//! End to end: commercetools streams from the sandbox's emulation through planner → two
//! fetchers → loader into Postgres, compared with the emulation's ground truth, and the
//! real example responses of `../shared/specs/commercetools/examples` checked field by field.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_contracts::Mode;
use sluice_e2e::{TestEnv, init_logging, repo_root};
use sluice_sandbox::commercetools::{CommercetoolsConfig, CommercetoolsDataSpec, Resource, ids};

const WAIT: Duration = Duration::from_secs(300);

fn spec() -> CommercetoolsDataSpec {
    CommercetoolsDataSpec {
        seed: 7,
        customers: 1_500,
        // Past the API's 10,000-offset wall.
        orders: 12_000,
        categories: 40,
        products: 300,
        ..CommercetoolsDataSpec::default()
    }
}

async fn loaded_ids(env: &TestEnv, table: &str) -> BTreeSet<String> {
    env.pool
        .get()
        .await
        .expect("connection")
        .query(&format!("SELECT id FROM {table}"), &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A small generated project: `orders` orders (the streams these tests load) and a few
/// resources of every other kind.
fn small_spec(seed: u64, orders: u64) -> CommercetoolsDataSpec {
    CommercetoolsDataSpec {
        seed,
        customers: 50,
        orders,
        categories: 5,
        products: 20,
        ..CommercetoolsDataSpec::default()
    }
}

/// POSTs `body` to the emulator's admin route `route` (`patch`, `faults`, …), which must
/// accept it.
async fn admin_post(base: &str, route: &str, body: Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/commercetools/_admin/{route}"))
        .json(&body)
        .send()
        .await
        .expect(route);
    assert!(
        response.status().is_success(),
        "{route}: {}",
        response.status()
    );
}

/// The emulator's `GET /commercetools/_admin/stats`.
async fn emulator_stats(base: &str) -> Value {
    reqwest::get(format!("{base}/commercetools/_admin/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json")
}

async fn one_string(env: &TestEnv, sql: &str) -> String {
    env.pool
        .get()
        .await
        .expect("connection")
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn sync(
    env: &TestEnv,
    stream: &str,
    account: &str,
    mode: Mode,
) -> sluice_store::ledger::JobReport {
    let job = env
        .request_job_into(
            "commercetools",
            stream,
            account,
            json!({}),
            mode,
            "postgres",
        )
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{stream}: {report:#?}");
    assert_eq!(
        report.summary.rows_rejected, 0,
        "{stream}: {:#?}",
        report.rejected
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_stream_lands_with_exactly_the_emulators_ids_and_a_rerun_changes_nothing() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = spec();
    let base = env
        .start_commercetools_sandbox(CommercetoolsConfig {
            data: spec.clone(),
            ..CommercetoolsConfig::default()
        })
        .await
        .expect("sandbox");
    // Dense ranges split: 8 ranges of 1,500 orders, 2 pages each before splitting.
    env.connector_settings("commercetools")
        .set("dense_pages", 2);
    // No lag: the incremental job below reads the orders touched just before it.
    env.connector_settings("commercetools")
        .set("lag_seconds", 0);
    env.start_pipeline(2);

    for (stream, table, resource) in [
        ("orders", "commercetools.orders", Resource::Orders),
        ("customers", "commercetools.customers", Resource::Customers),
        (
            "categories",
            "commercetools.categories",
            Resource::Categories,
        ),
        (
            "products",
            "commercetools.products",
            Resource::ProductProjections,
        ),
    ] {
        let report = sync(&env, stream, "default", Mode::Full).await;
        let want: BTreeSet<String> = ids(&spec, resource).into_iter().collect();
        assert!(!want.is_empty());
        let got = loaded_ids(&env, table).await;
        assert_eq!(got.len(), want.len(), "{table}");
        assert!(got == want, "{table}: ids differ from the emulator's");
        assert_eq!(report.rows_per_table[table], want.len() as i64, "{table}");
        if stream == "orders" {
            assert!(
                report.summary.tasks_total > 8,
                "dense ranges split into child tasks: {report:#?}"
            );
        }
    }

    // Content: the stored resources are the emulator's, byte for byte as JSON.
    for (table, resource, strip) in [
        ("commercetools.orders", Resource::Orders, None),
        (
            "commercetools.customers",
            Resource::Customers,
            Some("password"),
        ),
        ("commercetools.categories", Resource::Categories, None),
        ("commercetools.products", Resource::ProductProjections, None),
    ] {
        for id in ids(&spec, resource).into_iter().step_by(997) {
            let mut want = sluice_sandbox::commercetools::resource(&spec, resource, &id)
                .expect("ground truth");
            if let (Some(field), Some(map)) = (strip, want.as_object_mut()) {
                map.remove(field);
            }
            let got: Value = env
                .pool
                .get()
                .await
                .expect("connection")
                .query_one(
                    &format!("SELECT resource FROM {table} WHERE id = $1"),
                    &[&id],
                )
                .await
                .expect("row")
                .get(0);
            assert_eq!(got, want, "{table} {id}");
        }
    }
    // Child rows match their parents' collections.
    let items: i64 = one_string(
        &env,
        "SELECT (sum(jsonb_array_length(resource->'lineItems') + coalesce(jsonb_array_length(resource->'customLineItems'), 0)))::text FROM commercetools.orders",
    )
    .await
    .parse()
    .expect("number");
    assert_eq!(
        env.count("commercetools.order_line_items")
            .await
            .expect("count"),
        items
    );
    assert_eq!(
        one_string(
            &env,
            "SELECT count(*)::text FROM commercetools.orders WHERE total IS DISTINCT FROM (resource->'totalPrice'->>'centAmount')::numeric / 10 ^ (resource->'totalPrice'->>'fractionDigits')::int"
        )
        .await,
        "0"
    );

    // A second full run rewrites nothing.
    let before = env
        .fingerprint("commercetools.orders")
        .await
        .expect("fingerprint");
    sync(&env, "orders", "default", Mode::Full).await;
    assert_eq!(
        env.fingerprint("commercetools.orders")
            .await
            .expect("fingerprint"),
        before
    );

    // Incremental: touch 25 orders; the incremental job rewrites exactly those.
    sync(&env, "orders", "default", Mode::Incremental).await;
    let touched: Value = reqwest::Client::new()
        .post(format!("{base}/commercetools/_admin/touch"))
        .json(&json!({"resource": "orders", "count": 25}))
        .send()
        .await
        .expect("touch")
        .error_for_status()
        .expect("touched")
        .json()
        .await
        .expect("json");
    let touched: BTreeSet<String> = touched["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect();
    assert_eq!(touched.len(), 25);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = sync(&env, "orders", "default", Mode::Incremental).await;
    let rewritten: BTreeSet<String> = env
        .pool
        .get()
        .await
        .expect("connection")
        .query(
            "SELECT id FROM commercetools.orders WHERE _sluice_job_id = $1",
            &[&report.summary.id],
        )
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rewritten, touched,
        "the incremental job rewrote other orders than the touched ones"
    );
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_real_example_responses_load_field_by_field() {
    init_logging();
    let examples = repo_root().join("../shared/specs/commercetools/examples");
    if !examples.is_dir() {
        panic!("{} is missing (tests read ../shared)", examples.display());
    }
    let mut env = TestEnv::new().await.expect("test environment");
    let config = CommercetoolsConfig {
        examples_dir: Some(examples),
        ..CommercetoolsConfig::default()
    };
    let examples_key = config.examples_project_key.clone();
    let client = config.clients[0].clone();
    let base = env
        .start_commercetools_sandbox(config)
        .await
        .expect("sandbox");
    for (key, value) in [
        ("api_url", base.clone()),
        ("auth_url", base.clone()),
        ("project_key", examples_key),
        ("client_id", client.client_id),
        ("client_secret", client.client_secret),
    ] {
        env.connector_settings("commercetools")
            .set(&format!("accounts.examples.{key}"), value);
    }
    env.start_pipeline(1);
    for stream in ["customers", "orders", "categories", "products"] {
        sync(&env, stream, "examples", Mode::Full).await;
    }
    for (sql, want) in [
        (
            "SELECT email || '|' || first_name || '|' || last_name || '|' || is_email_verified::text || '|' || version::text || '|' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS') || '|' || (resource ? 'password')::text
               FROM commercetools.customers WHERE id = '3cdcdcc8-80c5-41bb-abb5-ac8772c9cc24'",
            "johndoe@example.com|John|Doe|false|1|2022-09-19T14:34:35.843|false",
        ),
        (
            "SELECT order_state || '|' || customer_id || '|' || total_cent_amount::text || '|' || total_currency || '|' || total::text
               FROM commercetools.orders WHERE id = '92f5a867-bf19-47ab-982c-6720a03a3921'",
            "Open|7297c742-d8b0-484b-aadc-1d0ba6769dc9|1000|EUR|10.0000000000000000",
        ),
        (
            "SELECT kind || '|' || sku || '|' || name || '|' || quantity::text || '|' || total_cent_amount::text || '|' || currency
               FROM commercetools.order_line_items WHERE order_id = '92f5a867-bf19-47ab-982c-6720a03a3921' AND line_item_id = '7297c742-d8b0-484b-aadc-1d0ba1869dc9'",
            "line_item|some-sku-123|MyProduct|1|1000|EUR",
        ),
        (
            "SELECT name || '|' || slug || '|' || order_hint || '|' || ancestor_ids::text
               FROM commercetools.categories WHERE id = 'c2f93298-c967-44af-8c2a-d2220bf39eb2'",
            "Hats|hats|0.1|[\"123456\"]",
        ),
        (
            "SELECT name || '|' || product_type_id || '|' || published::text || '|' || version::text
               FROM commercetools.products WHERE id = '080feded-4f74-4d31-9309-f7ef6b7f1279'",
            "Some Products|1c095f1b-e638-4c7e-86c4-c58df873fca6|true|3",
        ),
        (
            "SELECT string_agg(variant_id::text || ':' || is_master::text || ':' || (attributes->0->>'name'), ',' ORDER BY variant_id)
               FROM commercetools.product_variants WHERE product_id = '080feded-4f74-4d31-9309-f7ef6b7f1279'",
            "1:true:text1",
        ),
    ] {
        assert_eq!(one_string(&env, sql).await, want, "{sql}");
    }
    env.teardown().await.expect("teardown");
}

/// 502s, 503s, dropped connections and truncated bodies from the API end with exactly the
/// emulator's orders: failed requests are retried (in process, then through the retry
/// tiers) and no page is lost or loaded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_faults_end_with_exact_rows() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = small_spec(11, 3_000);
    let base = env
        .start_commercetools_sandbox(CommercetoolsConfig {
            data: spec.clone(),
            faults: sluice_sandbox::commercetools::FaultConfig {
                seed: 3,
                error_502_share: 0.06,
                error_503_share: 0.06,
                drop_share: 0.03,
                truncate_share: 0.03,
                ..sluice_sandbox::commercetools::FaultConfig::default()
            },
            ..CommercetoolsConfig::default()
        })
        .await
        .expect("sandbox");
    env.connector_settings("commercetools")
        .set("page_size", 100);
    env.start_pipeline(2);
    let report = sync(&env, "orders", "default", Mode::Full).await;
    let want: BTreeSet<String> = ids(&spec, Resource::Orders).into_iter().collect();
    assert!(loaded_ids(&env, "commercetools.orders").await == want);
    assert_eq!(
        report.summary.rows_loaded as usize,
        want.len() + {
            // Every order's line items are loaded once too.
            env.count("commercetools.order_line_items")
                .await
                .expect("count") as usize
        }
    );
    let stats = emulator_stats(&base).await;
    let injected = stats["faults"]["total"].as_u64().unwrap_or_default();
    assert!(injected > 0, "no fault was injected: {stats}");
    env.teardown().await.expect("teardown");
}

/// Patches what the emulator serves for one order (a JSON merge patch).
async fn patch_order(base: &str, id: &str, patch: Value) {
    admin_post(
        base,
        "patch",
        json!({"resource": "orders", "id": id, "patch": patch}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unmappable_resources_are_rejected_naming_stream_and_id_and_the_rest_loads() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = small_spec(13, 1_000);
    let base = env
        .start_commercetools_sandbox(CommercetoolsConfig {
            data: spec.clone(),
            ..CommercetoolsConfig::default()
        })
        .await
        .expect("sandbox");
    // One range paged by 100 in id order, so the test knows which order ends a page.
    env.connector_settings("commercetools")
        .set("page_size", 100);
    env.connector_settings("commercetools").set("split_into", 1);
    let mut sorted = ids(&spec, Resource::Orders);
    sorted.sort();
    // The last order of the first full page comes without an id: the pager must go on
    // after it, not end the range there.
    patch_order(&base, &sorted[99], json!({"id": null})).await;
    patch_order(&base, &sorted[250], json!({"version": "three"})).await;
    patch_order(&base, &sorted[420], json!({"lastModifiedAt": 5})).await;
    env.start_pipeline(2);
    let job = env
        .request_job_into(
            "commercetools",
            "orders",
            "default",
            json!({}),
            Mode::Full,
            "postgres",
        )
        .await
        .expect("job");
    let report = env.wait_job(job, WAIT).await.expect("job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");

    // Exactly the three are missing, and each is rejected once, naming stream and id.
    let mut want: BTreeSet<String> = sorted.iter().cloned().collect();
    for i in [99, 250, 420] {
        want.remove(&sorted[i]);
    }
    assert!(loaded_ids(&env, "commercetools.orders").await == want);
    assert_eq!(report.summary.rows_rejected, 3, "{:#?}", report.rejected);
    let mut rejected: Vec<(String, String)> = report
        .rejected
        .iter()
        .map(|r| (r.source.clone(), r.error.clone()))
        .collect();
    rejected.sort();
    let mut expected = vec![
        (
            format!("commercetools orders {}", sorted[250]),
            format!("resource {}: version is not an integer", sorted[250]),
        ),
        (
            format!("commercetools orders {}", sorted[420]),
            format!(
                "resource {}: lastModifiedAt is not a string: 5",
                sorted[420]
            ),
        ),
        (
            format!("commercetools orders without an id, after {}", sorted[98]),
            "missing id".to_string(),
        ),
    ];
    expected.sort();
    assert_eq!(rejected, expected);
    // The stored raw record is the resource as served (without its id).
    let raw = one_string(
        &env,
        "SELECT record::text FROM sluice.rejected_rows WHERE error = 'missing id'",
    )
    .await;
    let raw: Value = serde_json::from_str(&raw).expect("raw json");
    assert!(raw.get("id").is_none() && raw["version"].is_i64(), "{raw}");
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttle_burst_is_waited_out_and_every_order_lands() {
    init_logging();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = small_spec(17, 600);
    let base = env
        .start_commercetools_sandbox(CommercetoolsConfig {
            data: spec.clone(),
            ..CommercetoolsConfig::default()
        })
        .await
        .expect("sandbox");
    env.connector_settings("commercetools")
        .set("page_size", 100);
    env.start_pipeline(2);
    // Every project request answers 429 with Retry-After for the next 1.5 s.
    admin_post(&base, "faults", json!({"throttle_seconds": 1.5})).await;
    let report = sync(&env, "orders", "default", Mode::Full).await;
    let want: BTreeSet<String> = ids(&spec, Resource::Orders).into_iter().collect();
    assert!(loaded_ids(&env, "commercetools.orders").await == want);
    assert!(report.failed_tasks.is_empty(), "{report:#?}");
    let stats = emulator_stats(&base).await;
    let throttled = stats["faults"]["throttled"].as_u64().unwrap_or_default();
    assert!(throttled > 0, "no request was throttled: {stats}");
    env.teardown().await.expect("teardown");
}
