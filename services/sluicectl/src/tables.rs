//! `sluicectl tables SCHEMA`: row counts of a destination schema.

use std::process::ExitCode;

use sluice_contracts::Settings;

use crate::{destinations, pool};

/// Prints the row count of every table and view of `schema` in `destination`: aligned
/// text, or with `json` one object per line (`{"table", "kind", "rows"}`).
pub(crate) async fn tables(
    settings: &Settings,
    schema: &str,
    destination: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pool = pool(settings).await?;
    let destination = destinations(settings, &pool)?.get(destination)?;
    let tables = destination.table_counts(schema).await?;
    if tables.is_empty() {
        eprintln!(
            "schema {schema:?} has no tables in destination {} (run `sluicectl migrate{}`?)",
            destination.name(),
            if destination.name() == sluice_contracts::DEFAULT_DESTINATION {
                String::new()
            } else {
                format!(" --destination {}", destination.name())
            }
        );
        return Ok(ExitCode::from(1));
    }
    for t in tables {
        if json {
            println!(
                "{}",
                serde_json::json!({"table": t.name, "kind": t.kind, "rows": t.rows})
            );
        } else {
            println!("{:<45} {:<5} {:>12}", t.name, t.kind, t.rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}
