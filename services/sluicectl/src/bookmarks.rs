//! `sluicectl bookmarks list|reset`: where each stream's next incremental job continues.

use std::process::ExitCode;

use sluice_contracts::Settings;
use sluice_store::ledger::{self, ResetResult};

use crate::{BookmarksCommand, pool};

/// Lists or resets bookmarks (`sluice.stream_state`).
pub(crate) async fn bookmarks(
    settings: &Settings,
    cmd: BookmarksCommand,
) -> anyhow::Result<ExitCode> {
    let pool = pool(settings).await?;
    match cmd {
        BookmarksCommand::List { json } => {
            let marks = ledger::list_bookmarks(&**pool.get().await?).await?;
            if json {
                for b in &marks {
                    println!("{}", serde_json::to_string(b)?);
                }
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<40} {:<12} {:<32} {:>8}  updated (UTC)",
                "stream", "destination", "cursor", "streams"
            );
            for b in &marks {
                let streams = b.bookmark["streams"].as_object().map_or(0, |s| s.len());
                println!(
                    "{:<40} {:<12} {:<32} {:>8}  {}",
                    format!("{}/{}/{}", b.connector, b.account, b.stream),
                    b.destination,
                    b.bookmark["cursor"].as_str().unwrap_or("-"),
                    streams,
                    b.updated_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BookmarksCommand::Reset {
            connector,
            stream,
            account,
            destination,
        } => {
            let name = format!("{connector}/{account}/{stream} in destination {destination}");
            match ledger::reset_bookmark(&pool, &connector, &account, &stream, &destination).await?
            {
                ResetResult::Reset(was) => {
                    println!(
                        "reset the bookmark of {name} (was {}); its next incremental job reads from the start",
                        was["cursor"].as_str().unwrap_or("-")
                    );
                    Ok(ExitCode::SUCCESS)
                }
                ResetResult::NotFound => {
                    eprintln!("{name} has no bookmark (see `sluicectl bookmarks list`)");
                    Ok(ExitCode::from(1))
                }
                ResetResult::Held(job) => {
                    eprintln!(
                        "job {job} holds {name}: its success would write the bookmark again; wait for it or `sluicectl jobs cancel {job}` first"
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
