//! The Redshift destination's write path next to the Postgres paths, in the same run, on
//! the same server.
//!
//! `cargo bench --bench redshift [-- ROWS [BATCH [GROUP [CONCURRENCY]]]]` (defaults 100000,
//! 1000, 4, 4) against the Postgres at `SLUICE_TEST_DATABASE_URL` (default the local server)
//! and, for the staged phase, the S3 emulator at `SLUICE_TEST_S3_ENDPOINT` (default
//! `http://127.0.0.1:5555`, started when missing). It makes a scratch ledger database (all
//! migrations) and two destination databases on the same server — one a Redshift
//! stand-in, one a plain Postgres destination — and loads the same `klaviyo.events` rows
//! (fresh keys) through `ledger::apply_batches`, in groups of GROUP parts of BATCH rows,
//! CONCURRENCY groups at a time, into:
//! 1. `postgres`, the ledger's database (one transaction for rows and ledger);
//! 2. `pg-other`, another Postgres database (its transaction, then the ledger's);
//! 3. `rs-insert`, the Redshift stand-in through multi-row `INSERT`s;
//! 4. `rs-staged`, the Redshift stand-in through S3 objects (`stage_rows = 1`), which the
//!    stand-in reads back and inserts where Redshift would `COPY` them.
//!
//! For each: rows per second, the share against phase 1, and this process's CPU seconds per
//! 1,000 rows. The stand-in is Postgres executing Redshift's SQL: the figures compare the
//! paths' own cost (rendering, statements, round trips), not a cluster's speed.

use std::time::Instant;

use futures::StreamExt;
use serde_json::{Value, json};
use sluice_contracts::config::Section;
use sluice_contracts::{MESSAGE_VERSION, MergeSpec, RecordBatch, Settings};
use sluice_destinations::Destinations;
use sluice_e2e::cpu_seconds;
use sluice_e2e::redshift::{create_bucket, s3_emulator};
use sluice_store::ledger;
use sluice_store::load::Catalog;
use uuid::Uuid;

const COLUMNS: [&str; 9] = [
    "id",
    "metric_id",
    "profile_id",
    "datetime",
    "timestamp",
    "uuid",
    "value",
    "event_properties",
    "extra",
];

fn row(i: u64) -> Vec<Value> {
    let ts = 1_700_000_000 + i as i64 * 7;
    let dt = chrono::DateTime::from_timestamp(ts, 0).expect("valid time");
    vec![
        json!(format!("4{i:025}")),
        json!(format!("M{:05}", i % 12)),
        json!(format!("01J{:023}", i % 50_000)),
        json!(dt.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        json!(ts),
        json!(Uuid::from_u128(u128::from(i) << 8).to_string()),
        json!((i % 1000) as f64 * 1.25),
        json!({
            "$value": (i % 1000) as f64 * 1.25,
            "OrderId": format!("O-{i}"),
            "ItemNames": ["Jeans", "Shirt"],
            "Categories": ["Women", "Women > Pants"],
        }),
        json!({}),
    ]
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn section(kind: &str, url: &str, extra: &[(&str, Value)]) -> Section {
    let mut map = serde_json::Map::new();
    map.insert("kind".into(), kind.into());
    map.insert("url".into(), url.into());
    for (k, v) in extra {
        map.insert((*k).into(), v.clone());
    }
    Section(map)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows = arg(0, 100_000) as u64;
    let batch = arg(1, 1_000) as u64;
    let group = arg(2, 4);
    let concurrency = arg(3, 4);
    let base = std::env::var("SLUICE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (head, _) = base.rsplit_once('/').expect("database URL");
    let id = Uuid::new_v4().simple().to_string()[..8].to_string();
    let names = [
        format!("sluice_bench_rs_{id}"),
        format!("sluice_bench_rs_{id}_pg"),
        format!("sluice_bench_rs_{id}_rs"),
    ];
    let url = |name: &str| format!("{head}/{name}");

    let endpoint = s3_emulator().await?;
    let bucket = format!("sluice-bench-{id}");
    create_bucket(&endpoint, &bucket).await?;

    let mut settings = Settings::load_from(
        None,
        [("SLUICE__DATABASE__URL".to_string(), url(&names[0]))],
    )?;
    settings
        .destinations
        .insert("pg-other".into(), section("postgres", &url(&names[1]), &[]));
    settings.destinations.insert(
        "rs-insert".into(),
        section("redshift", &url(&names[2]), &[]),
    );
    settings.destinations.insert(
        "rs-staged".into(),
        section(
            "redshift",
            &url(&names[2]),
            &[
                ("s3_bucket", json!(bucket)),
                ("s3_endpoint", json!(endpoint)),
                ("s3_region", json!("us-east-1")),
                ("s3_access_key_id", json!("testing")),
                ("s3_secret_access_key", json!("testing")),
                ("iam_role", json!("arn:aws:iam::123456789012:role/bench")),
                ("stage_rows", json!(1)),
            ],
        ),
    );
    let pool = sluice_store::connect(&settings.database).await?;
    sluice_store::migrate(&pool).await?;
    let catalog = Catalog::default();
    let destinations = Destinations::build(&settings, &pool, &catalog)?;
    for name in ["pg-other", "rs-insert"] {
        destinations.get(name)?.migrate().await?;
    }

    println!(
        "{rows} klaviyo.events rows, parts of {batch}, groups of {group}, {concurrency} groups at a time"
    );
    let mut reference = None;
    for name in ["postgres", "pg-other", "rs-insert", "rs-staged"] {
        let destination = destinations.get(name)?;
        // An empty target for every phase.
        let target = match name {
            "postgres" => pool.clone(),
            "pg-other" => sluice_store::db::pool(&sluice_contracts::config::DatabaseSettings {
                url: url(&names[1]).into(),
                pool_size: 1,
            })?,
            _ => sluice_store::db::pool(&sluice_contracts::config::DatabaseSettings {
                url: url(&names[2]).into(),
                pool_size: 1,
            })?,
        };
        target
            .get()
            .await?
            .batch_execute("TRUNCATE klaviyo.events")
            .await?;
        let job = Uuid::new_v4();
        let parts: Vec<RecordBatch> = (0..rows.div_ceil(batch))
            .map(|p| RecordBatch {
                v: MESSAGE_VERSION,
                job_id: job,
                task_id: format!("{job}/{p}"),
                stream: "events".into(),
                part: 0,
                task_complete: true,
                table: "klaviyo.events".into(),
                columns: COLUMNS.iter().map(|c| c.to_string()).collect(),
                rows: (p * batch..((p + 1) * batch).min(rows)).map(row).collect(),
                merge: MergeSpec::default(),
                children: Vec::new(),
                cursor_max: None,
                rejected: Vec::new(),
            })
            .collect();
        let ids: Vec<String> = parts.iter().map(|p| p.task_id.clone()).collect();
        let client = pool.get().await?;
        client
            .execute(
                "INSERT INTO sluice.jobs (id, connector, stream, state, destination) VALUES ($1, 'klaviyo', 'events', 'running', $2)",
                &[&job, &name],
            )
            .await?;
        client
            .execute(
                "INSERT INTO sluice.tasks (task_id, job_id, stream, kind, published_at)
                 SELECT t, $2, 'events', '{}'::jsonb, now() FROM unnest($1::text[]) t",
                &[&ids, &job],
            )
            .await?;
        drop(client);
        let cpu = cpu_seconds(std::process::id());
        let started = Instant::now();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(parts.chunks(group))
            .map(|chunk| {
                let (pool, destination) = (pool.clone(), destination.clone());
                async move {
                    let applied = ledger::apply_batches(&pool, destination.write(), chunk).await?;
                    anyhow::ensure!(applied.iter().all(|a| a.applied), "a part was skipped");
                    Ok(())
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for r in results {
            r?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let own = cpu_seconds(std::process::id()) - cpu;
        let loaded: i64 = target
            .get()
            .await?
            .query_one("SELECT count(*) FROM klaviyo.events", &[])
            .await?
            .get(0);
        anyhow::ensure!(loaded == rows as i64, "{name}: {loaded} rows of {rows}");
        let rate = rows as f64 / seconds;
        let share = match reference {
            None => {
                reference = Some(rate);
                1.0
            }
            Some(r) => rate / r,
        };
        println!(
            "{name:<10} {rate:>10.0} rows/s  {share:>5.2}x of postgres  {:>6.3} CPU s per 1000 rows (bench process)",
            own / rows as f64 * 1000.0
        );
    }

    pool.close();
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    for name in &names {
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
    }
    Ok(())
}
