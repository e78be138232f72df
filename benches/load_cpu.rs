//! The loader's CPU per Klaviyo event (issue 15), without the database: real `RecordBatch`
//! parts of `klaviyo.events` as a fetcher publishes them (a page of 1,000 Placed Order
//! events from the sandbox's Klaviyo emulator, through the connector and
//! `sluice_fetcher::encode_parts`, as `benches/fetch_cpu.rs` builds them), run through what
//! the loader does with a part up to the bytes of binary COPY — `RecordBatch::decode`, the
//! batch checked against the table (`Shape::validate`, the columns of `klaviyo.events` as
//! migration V4 declares them and the catalog describes them), the duplicate-key check,
//! each row into typed cells (`Shape::cells`, the checks of `sluice_store::cell`), and the
//! cells encoded as binary COPY rows with the same `ToSql` calls `BinaryCopyInWriter`
//! makes — `ITERATIONS` times.
//!
//! By default the parts are decoded as the loader does, into `RawRecordBatch`es whose
//! cells stay JSON text; with `values` as `RecordBatch`es of `serde_json::Value` rows (the
//! loader's path before, still what the Redshift and Klaviyo destinations read).
//!
//! `cargo bench --bench load_cpu [-- ITERATIONS [values]]` (default 200 pages) prints wall and CPU
//! time per event (meaningless on a loaded box). The repeatable figure is the instruction
//! count under callgrind, collected only inside [`measured`] (see `docs/benchmarks.md`,
//! "Issue 15: the loader's CPU per Klaviyo event"):
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='load_cpu::measured' \
//!     target/release/deps/load_cpu-<hash> 5
//! ```
//!
//! instructions per event = the run's total `Ir` / ((ITERATIONS + 1) × events per page):
//! `measured` also runs one warm-up page.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use postgres_types::{IsNull, ToSql, Type};
use sluice_contracts::{Message, RawRows, RecordBatch, RecordBatchOf};
use sluice_store::cell::Cell;
use sluice_store::load::{Column, PartRows, Shape, TableInfo, has_duplicate_keys};
use uuid::Uuid;

/// Events per page (the connector's default `page_sizes.events`, the API's maximum).
const PAGE_SIZE: usize = 1000;
/// `fetcher.max_part_bytes`' default.
const MAX_PART_BYTES: usize = 4 << 20;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iterations: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200);
    let values = args.iter().any(|a| a == "values");
    let parts = event_parts()?;
    let info = Arc::new(events_table());

    // Both decodings write the very same COPY bytes.
    let (mut from_values, mut from_raw) = (Vec::new(), Vec::new());
    for body in &parts {
        part::<Vec<Vec<serde_json::Value>>>(body, &info, Some(&mut from_values))?;
        part::<RawRows>(body, &info, Some(&mut from_raw))?;
    }
    anyhow::ensure!(
        from_values == from_raw,
        "raw rows and Value rows gave different COPY bytes"
    );

    // One warm-up round, also to count the events a round loads.
    let (events, copy_bytes) = measured(&parts, &info, 1, values)?;
    anyhow::ensure!(
        (PAGE_SIZE - 10..=PAGE_SIZE).contains(&events),
        "the parts hold {events} events, not a page of {PAGE_SIZE}"
    );
    let cpu = sluice_e2e::cpu_seconds(std::process::id());
    let wall = Instant::now();
    measured(&parts, &info, iterations, values)?;
    let wall = wall.elapsed().as_secs_f64();
    let cpu = sluice_e2e::cpu_seconds(std::process::id()) - cpu;
    let per = 1e6 / (iterations * events) as f64;
    println!(
        "load_cpu: {} part(s) of {events} events ({} KB of RecordBatch), {} KB of binary COPY per round, {iterations} rounds, rows as {}",
        parts.len(),
        parts.iter().map(Vec::len).sum::<usize>() / 1024,
        copy_bytes / 1024,
        if values { "Values" } else { "raw JSON text" },
    );
    println!(
        "  per event: {:.2} µs wall, {:.2} µs CPU (load average {})",
        wall * per,
        cpu * per,
        sluice_e2e::load_average()
    );
    Ok(())
}

/// The measured work: `iterations` rounds of every part from its message body to binary
/// COPY rows, the rows decoded as `Value`s or as raw text. Returns the rows of the last
/// round that reached the COPY and its bytes.
#[inline(never)]
fn measured(
    parts: &[Vec<u8>],
    info: &Arc<TableInfo>,
    iterations: usize,
    values: bool,
) -> anyhow::Result<(usize, usize)> {
    let mut last = (0, 0);
    for _ in 0..iterations {
        let (mut rows, mut bytes) = (0, 0);
        for body in parts {
            let (r, b) = if values {
                part::<Vec<Vec<serde_json::Value>>>(black_box(body), info, None)?
            } else {
                part::<RawRows>(black_box(body), info, None)?
            };
            rows += r;
            bytes += b;
        }
        last = (rows, bytes);
    }
    Ok(last)
}

/// One part from its body to binary COPY rows; the rows that reached the COPY and the
/// bytes (appended to `keep` when given).
fn part<R>(
    body: &[u8],
    info: &Arc<TableInfo>,
    mut keep: Option<&mut Vec<u8>>,
) -> anyhow::Result<(usize, usize)>
where
    R: PartRows + serde::Serialize + for<'de> serde::Deserialize<'de>,
{
    let job = Uuid::nil();
    let (mut rows, mut bytes) = (0, 0);
    {
        {
            let batch = RecordBatchOf::<R>::decode(body)?;
            let shape =
                Shape::validate(info.clone(), &batch.table, &batch.columns, &batch.merge, 1)?;
            black_box(has_duplicate_keys(&shape.pk_positions, &[&batch.rows]));
            // The direct COPY's columns: the batch's, then `_sluice_job_id`.
            let mut types: Vec<Type> = shape.cols.iter().map(|c| c.ty.clone()).collect();
            types.push(Type::UUID);
            let mut buf = BytesMut::with_capacity(64 << 10);
            let mut cells: Vec<Cell> = Vec::with_capacity(types.len());
            let mut rejected = Vec::new();
            for i in 0..batch.rows.len() {
                let row = batch.rows.row(i);
                if let Err(error) = shape.row_cells(row, &mut cells) {
                    rejected.push(shape.reject_row(row, error));
                    continue;
                }
                cells.push(Cell::Uuid(job));
                copy_row(&mut buf, &types, &cells)?;
                rows += 1;
                // `BinaryCopyInWriter` hands its buffer to the connection past 4 KiB.
                if buf.len() > 4096 {
                    let chunk = buf.split();
                    bytes += chunk.len();
                    if let Some(keep) = keep.as_deref_mut() {
                        keep.extend_from_slice(&chunk);
                    }
                }
            }
            bytes += buf.len();
            if let Some(keep) = keep {
                keep.extend_from_slice(&buf);
            }
            anyhow::ensure!(rejected.is_empty(), "rows refused: {rejected:?}");
        }
    }
    Ok((rows, bytes))
}

/// One binary COPY row as `BinaryCopyInWriter::write` encodes it: the field count, then
/// per field its length (-1 for NULL) and `to_sql_checked`'s bytes.
fn copy_row(buf: &mut BytesMut, types: &[Type], cells: &[Cell]) -> anyhow::Result<()> {
    buf.put_i16(cells.len() as i16);
    for (cell, ty) in cells.iter().zip(types) {
        let at = buf.len();
        buf.put_i32(0);
        let len = match cell
            .to_sql_checked(ty, buf)
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            IsNull::Yes => -1,
            IsNull::No => (buf.len() - at - 4) as i32,
        };
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

/// `klaviyo.events` as the catalog describes it (migration V4).
fn events_table() -> TableInfo {
    let column = |name: &str, ty: Type, has_default: bool, not_null: bool| Column {
        name: name.into(),
        ty,
        has_default,
        not_null,
        generated: false,
    };
    TableInfo {
        schema: "klaviyo".into(),
        name: "events".into(),
        quoted: "\"klaviyo\".\"events\"".into(),
        oid: 16_384,
        columns: vec![
            column("id", Type::TEXT, false, true),
            column("metric_id", Type::TEXT, false, false),
            column("profile_id", Type::TEXT, false, false),
            column("datetime", Type::TIMESTAMPTZ, false, false),
            column("timestamp", Type::INT8, false, false),
            column("uuid", Type::TEXT, false, false),
            column("value", Type::FLOAT8, false, false),
            column("event_properties", Type::JSONB, false, false),
            column("extra", Type::JSONB, true, true),
            column("_sluice_job_id", Type::UUID, false, true),
            column("_sluice_loaded_at", Type::TIMESTAMPTZ, true, true),
        ],
        primary_key: vec!["id".into()],
        btree_indexes: vec![
            (
                "events_metric_datetime".into(),
                vec!["metric_id".into(), "datetime".into()],
            ),
            ("events_pkey".into(), vec!["id".into()]),
            ("events_profile".into(), vec!["profile_id".into()]),
        ],
        direct: Arc::default(),
    }
}

/// The `RecordBatch` parts of `klaviyo.events` a fetcher publishes for a middle page of an
/// events task (`include=profile` off).
fn event_parts() -> anyhow::Result<Vec<Vec<u8>>> {
    let (body, metric) = sluice_e2e::klaviyo_events_page(false)?;
    let task = sluice_e2e::klaviyo_events_task(&metric);
    let tables = sluice_connectors::klaviyo::bench_events_page(&task, &body, Some(&metric), false)
        .map_err(|e| anyhow::anyhow!("undecodable page: {e}"))?;
    let mut next_part = 0;
    let parts = sluice_fetcher::encode_parts(&task, tables, &mut next_part, None, MAX_PART_BYTES);
    let mut events = Vec::new();
    for part in parts {
        if RecordBatch::decode(&part)?.table == "klaviyo.events" {
            events.push(part);
        }
    }
    anyhow::ensure!(
        !events.is_empty(),
        "the page gave no part of klaviyo.events"
    );
    Ok(events)
}
