//! Loader throughput next to raw binary COPY, in the same run, on the same rows.
//!
//! `cargo bench --bench loader [-- ROWS [BATCH [CONCURRENCY [GROUP_PARTS [GROUP_BYTES]]]]]`
//! (defaults 200000, 1000, 4, and the loader's defaults 8 and 2 MiB) against the Postgres at
//! `SLUICE_TEST_DATABASE_URL` (default the local server). It creates a scratch database, a
//! destination table shaped and indexed as `klaviyo.events` (migration V4: primary key,
//! indexes on (metric_id, datetime) and on profile_id), and an unindexed copy, then
//! measures:
//! 1. raw: one binary COPY of every row into the unindexed table;
//! 2. loader, one part per transaction, fresh inserts: the rows as `RecordBatch` parts of
//!    BATCH rows through `ledger::apply_batch` (JSON → typed cells, COPY into staging,
//!    upsert, ledger writes), CONCURRENCY parts at a time;
//! 3. the same, updates: the same keys again with changed values;
//! 4. the same, unchanged: the updated rows once more (a re-run or an overlapping
//!    window), which the loader recognises and does not rewrite;
//! 5. to 7. the same three through `ledger::apply_batches`, the parts handed in the groups
//!    the loader forms with a backlog (as many parts as fit `GROUP_PARTS` and
//!    `GROUP_BYTES` of messages), CONCURRENCY groups at a time, into the emptied table.
//!
//! Each phase starts with a new [`Catalog`], as a new loader process would, so the
//! direct-COPY back-off one phase learns does not carry into the next.
//!
//! Both raw COPYs are measured three times and their medians are the references. It prints
//! rows per second and each loader rate as a share of both, and for updates
//! how many were HOT (heap-only: no new index entries), from `pg_stat_user_tables`.
//! `SLUICE_BENCH_FILLFACTOR` sets the destination table's fillfactor (default
//! [`DEFAULT_FILLFACTOR`]); the raw COPY tables keep Postgres' default of 100.

use std::time::Instant;

use futures::StreamExt;
use postgres_types::{ToSql, Type};
use serde_json::{Value, json};
use sluice_contracts::{MESSAGE_VERSION, MergeSpec, Message, RecordBatch, Settings};
use sluice_e2e::cpu_seconds;
use sluice_store::cell::{Cell, to_cell};
use sluice_store::ledger;
use sluice_store::load::Catalog;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use uuid::Uuid;

const COLUMNS: [&str; 8] = [
    "id",
    "metric_id",
    "profile_id",
    "datetime",
    "timestamp",
    "uuid",
    "value",
    "event_properties",
];

/// How many times raw COPY is measured; the median is the reference.
const RAW_RUNS: usize = 3;

/// The destination table's fillfactor unless `SLUICE_BENCH_FILLFACTOR` says otherwise.
const DEFAULT_FILLFACTOR: u32 = 100;

fn ddl(fillfactor: u32) -> String {
    format!(
        "
CREATE SCHEMA bench;
CREATE TABLE bench.events (
    id text PRIMARY KEY, metric_id text, profile_id text, datetime timestamptz, timestamp bigint,
    uuid text, value double precision, event_properties jsonb,
    extra jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    _sluice_job_id uuid NOT NULL, _sluice_loaded_at timestamptz NOT NULL DEFAULT now())
    WITH (fillfactor = {fillfactor});
CREATE INDEX ON bench.events (metric_id, datetime);
CREATE INDEX ON bench.events (profile_id);
CREATE TABLE bench.events_raw (
    id text, metric_id text, profile_id text, datetime timestamptz, timestamp bigint,
    uuid text, value double precision, event_properties jsonb);
"
    )
}

/// Cumulative (updates, HOT updates) of `bench.events` from the statistics views.
async fn update_counts(client: &tokio_postgres::Client) -> anyhow::Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
              WHERE schemaname = 'bench' AND relname = 'events'",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

fn row(i: u64, generation: u64) -> Vec<Value> {
    let ts = 1_700_000_000 + i as i64 * 7;
    let dt = chrono::DateTime::from_timestamp(ts, 0).expect("valid time");
    vec![
        json!(format!("4{i:025}")),
        json!(format!("M{:05}", i % 12)),
        json!(format!("01J{:023}", i % 50_000)),
        json!(dt.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        json!(ts),
        json!(Uuid::from_u128(u128::from(i) << 8 | u128::from(generation)).to_string()),
        json!((i % 1000) as f64 * 1.25 + generation as f64),
        json!({
            "$value": (i % 1000) as f64 * 1.25 + generation as f64,
            "OrderId": format!("O-{i}"),
            "ItemNames": ["Jeans", "Shirt"],
            "Categories": ["Women", "Women > Pants"],
            "$extra": {"Discount": "SUMMER", "generation": generation},
        }),
    ]
}

/// Jiffies of the whole machine from `/proc/stat`: (busy, total) summed over all cores.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait are the 4th and 5th values of the "cpu" line.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Where the CPU went during one measured phase: the machine's busy share of all its cores
/// and this process's share (the rest is mostly Postgres).
struct CpuShare {
    machine: (u64, u64),
    /// This process's CPU seconds at the start.
    own: f64,
}

impl CpuShare {
    fn start() -> Self {
        Self {
            machine: machine_jiffies(),
            own: cpu_seconds(std::process::id()),
        }
    }

    /// "busy N % of the machine (this process M %)" since `start`.
    fn report(&self) -> String {
        let (busy, total) = machine_jiffies();
        let total = (total - self.machine.1).max(1) as f64;
        format!(
            "CPU busy {:.0} % (this process {:.0} %)",
            100.0 * (busy - self.machine.0) as f64 / total,
            // Jiffies are 1/100 s, so CPU seconds × 100 are jiffies.
            100.0 * 100.0 * (cpu_seconds(std::process::id()) - self.own) / total
        )
    }
}

/// One binary COPY of `rows` into `table`, converting each value as the loader does;
/// returns the seconds it took.
async fn copy_rows(
    client: &tokio_postgres::Client,
    table: &str,
    types: &[Type],
    rows: &[Vec<Value>],
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let sink = client
        .copy_in(&format!("COPY {table} FROM STDIN BINARY"))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    futures::pin_mut!(writer);
    for r in rows {
        let cells: Vec<Cell> = r
            .iter()
            .zip(types)
            .map(|(v, t)| to_cell(v, t).expect("valid cell"))
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await?;
    }
    writer.finish().await?;
    Ok(started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = sluice_e2e::numeric_args();
    let rows = args.first().copied().unwrap_or(200_000);
    let batch = args.get(1).copied().unwrap_or(1000) as usize;
    let concurrency = args.get(2).copied().unwrap_or(4) as usize;
    let group_parts = args.get(3).copied().unwrap_or(8).max(1) as usize;
    let group_bytes = args.get(4).copied().unwrap_or(2 << 20) as usize;

    let base = std::env::var("SLUICE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (head, _) = base.rsplit_once('/').expect("database URL");
    let db = format!("sluice_bench_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let settings = Settings::load_from(
        None,
        vec![
            ("SLUICE__DATABASE__URL".to_string(), format!("{head}/{db}")),
            (
                "SLUICE__DATABASE__POOL_SIZE".to_string(),
                (concurrency + 2).to_string(),
            ),
        ],
    )?;
    let pool = sluice_store::connect(&settings.database).await?;
    sluice_store::migrate(&pool).await?;
    let fillfactor: u32 = match std::env::var("SLUICE_BENCH_FILLFACTOR") {
        Ok(v) => v.parse()?,
        Err(_) => DEFAULT_FILLFACTOR,
    };
    pool.get().await?.batch_execute(&ddl(fillfactor)).await?;

    let fresh: Vec<Vec<Value>> = (0..rows).map(|i| row(i, 0)).collect();
    let updated: Vec<Vec<Value>> = (0..rows).map(|i| row(i, 1)).collect();
    let bytes: usize = fresh
        .iter()
        .map(|r| serde_json::to_vec(r).map_or(0, |v| v.len()))
        .sum();
    println!(
        "rows {rows}, batch {batch}, concurrency {concurrency}, destination fillfactor {fillfactor}, ~{} bytes of JSON per row, Postgres {}",
        bytes / rows.max(1) as usize,
        pool.get()
            .await?
            .query_one("SHOW server_version", &[])
            .await?
            .get::<_, String>(0)
    );

    // 1. Raw binary COPY of the same rows (typed cells prepared as the loader would).
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::TEXT,
        Type::FLOAT8,
        Type::JSONB,
    ];
    // A single COPY of 200,000 rows takes half a second and varies by ±25 % between
    // runs, so each reference is the median of RAW_RUNS: into an unindexed table (the
    // target's reference) and, for comparison, into a table with the destination's indexes.
    let client = pool.get().await?;
    client
        .batch_execute(
            "CREATE TABLE bench.events_indexed (LIKE bench.events_raw);
             ALTER TABLE bench.events_indexed ADD PRIMARY KEY (id);
             CREATE INDEX ON bench.events_indexed (metric_id, datetime);
             CREATE INDEX ON bench.events_indexed (profile_id);",
        )
        .await?;
    let mut medians = Vec::new();
    for (table, what) in [
        ("bench.events_raw", "unindexed"),
        ("bench.events_indexed", "with the destination's indexes"),
    ] {
        let mut rates = Vec::with_capacity(RAW_RUNS);
        for _ in 0..RAW_RUNS {
            client.batch_execute(&format!("TRUNCATE {table}")).await?;
            let cpu = CpuShare::start();
            let rate = rows as f64 / copy_rows(&client, table, &types, &fresh).await?;
            println!(
                "raw binary COPY ({what}): {rate:>10.0} rows/s  {}",
                cpu.report()
            );
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!("raw binary COPY ({what}), median of {RAW_RUNS}: {median:>10.0} rows/s");
        medians.push(median);
    }
    let (raw, indexed) = (medians[0], medians[1]);
    println!(
        "raw binary COPY with the destination's indexes = {:.2} × unindexed",
        indexed / raw
    );
    drop(client);

    // 2 to 5. Through the loader, one part per transaction and then in groups.
    for grouped in [false, true] {
        pool.get()
            .await?
            .batch_execute("TRUNCATE bench.events")
            .await?;
        for (label, data) in [
            ("fresh inserts", &fresh),
            ("updates", &updated),
            ("unchanged", &updated),
        ] {
            // A new loader process per phase: the loader's direct-COPY back-off (see
            // `DirectInserts`) learnt from one phase's conflicts does not spill into the next.
            let catalog = Catalog::default();
            let job_id = Uuid::new_v4();
            pool.get()
                .await?
                .execute(
                    "INSERT INTO sluice.jobs (id, connector, stream, state) VALUES ($1, 'bench', 'events', 'running')",
                    &[&job_id],
                )
                .await?;
            let batches: Vec<RecordBatch> = data
                .chunks(batch)
                .enumerate()
                .map(|(i, chunk)| RecordBatch {
                    v: MESSAGE_VERSION,
                    job_id,
                    task_id: format!("{job_id}-{i}"),
                    stream: "events".into(),
                    part: 0,
                    task_complete: true,
                    table: "bench.events".into(),
                    columns: COLUMNS.iter().map(|c| c.to_string()).collect(),
                    rows: chunk.to_vec(),
                    merge: MergeSpec::default(),
                    children: Vec::new(),
                    cursor_max: None,
                    rejected: Vec::new(),
                })
                .collect();
            // The loader's grouping with a backlog: parts join a group while it holds fewer
            // than GROUP_PARTS and less than GROUP_BYTES of messages.
            let message_bytes = batches.first().map_or(1, |b| b.encode().len()).max(1);
            let per_group = if grouped {
                group_bytes.div_ceil(message_bytes).clamp(1, group_parts)
            } else {
                1
            };
            // Task rows as the planner records them, so completion bookkeeping is real.
            let ids: Vec<String> = batches.iter().map(|b| b.task_id.clone()).collect();
            pool.get()
                .await?
                .execute(
                    "INSERT INTO sluice.tasks (task_id, job_id, stream, kind, published_at)
                     SELECT t, $2, 'events', '{}'::jsonb, now() FROM unnest($1::text[]) t",
                    &[&ids, &job_id],
                )
                .await?;
            let stats = pool.get().await?;
            let before = update_counts(&stats).await?;
            let cpu = CpuShare::start();
            let started = Instant::now();
            let results: Vec<_> = futures::stream::iter(batches.chunks(per_group))
                .map(|group| ledger::apply_batches(&pool, ledger::Write::Ledger(&catalog), group))
                .buffer_unordered(concurrency)
                .collect()
                .await;
            let elapsed = started.elapsed().as_secs_f64();
            let cpu = cpu.report();
            for r in results {
                assert!(r?.iter().all(|a| a.applied), "every part applied");
            }
            let state = ledger::job_state(&**pool.get().await?, job_id).await?;
            assert_eq!(
                state,
                Some(ledger::JobState::Succeeded),
                "every task completed"
            );
            let rate = rows as f64 / elapsed;
            let how = if grouped {
                format!(
                    "{per_group} parts/tx ({} KiB messages)",
                    message_bytes / 1024
                )
            } else {
                "1 part/tx".to_string()
            };
            // Backends report their statistics shortly after going idle: wait (up to 15 s)
            // until every update is counted, then report the HOT share.
            let mut after = update_counts(&stats).await?;
            if label == "updates" {
                for _ in 0..30 {
                    if after.0 - before.0 >= rows as i64 {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    after = update_counts(&stats).await?;
                }
            }
            let (updates, hot) = (after.0 - before.0, after.1 - before.1);
            let hot_share = if updates > 0 {
                format!(
                    ", {hot}/{updates} HOT ({:.0} %)",
                    100.0 * hot as f64 / updates as f64
                )
            } else {
                String::new()
            };
            println!(
                "loader, {how}, {label:<14} {rate:>10.0} rows/s  = {:.2} × raw COPY ({:.2} × into the indexed table){hot_share}  {cpu}",
                rate / raw,
                rate / indexed
            );
        }
    }
    let count: i64 = pool
        .get()
        .await?
        .query_one("SELECT count(*) FROM bench.events WHERE value >= 1", &[])
        .await?
        .get(0);
    assert!(count > 0, "updates landed");

    pool.close();
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await?;
    Ok(())
}
