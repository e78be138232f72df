//! `sluicectl schedules add|list|show|pause|resume|rm`: syncs the planner fires on a cron
//! cadence (`sluice.schedules`; how the planner fires them: `sluice_planner::schedules`).
//!
//! `add` takes the request as `sluicectl sync` does, after `--`, and checks it the same way
//! (the connector's parameter specs and its own checks, the destination) before anything is
//! stored; the cron expression (5 fields) and the time zone (IANA) are checked too.

use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::json;
use sluice_contracts::Settings;
use sluice_store::ledger::schedules::{
    self as store, Cadence, CatchUp, NewSchedule, Schedule, SlotRecord,
};

use crate::{pool, sync};

/// How many recorded slots `schedules show` prints.
const SHOWN_SLOTS: i64 = 20;

/// Schedule commands.
#[derive(Subcommand, Debug)]
pub enum SchedulesCommand {
    /// Add a schedule: `schedules add NAME --cron "0 3 * * *" [--tz Europe/Berlin]
    /// [--catch-up once] -- sync <connector> [<stream>] [options]`.
    Add(AddArgs),
    /// Every schedule: cadence, stream, next slot, last outcome.
    List {
        /// JSON lines (the schedule and its `last` slot record) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One schedule and its latest slots: fired (with the job's state), skipped (the job
    /// that was still running) or missed.
    Show {
        /// The schedule's name.
        name: String,
        /// JSON (`{"schedule", "slots"}`) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop firing a schedule (its running job is not touched).
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Fire a paused schedule again, from its next slot on (the slots of the pause are not
    /// caught up).
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Remove a schedule and its slot records (its jobs stay in the ledger).
    Rm {
        /// The schedule's name.
        name: String,
    },
}

/// `schedules add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// A name of your choice, unique.
    pub name: String,
    /// 5-field cron expression: minute hour day-of-month month day-of-week.
    #[arg(long)]
    pub cron: String,
    /// IANA time zone the expression is read in.
    #[arg(long = "tz", default_value = "UTC")]
    pub timezone: String,
    /// After planner downtime: `once` runs the latest missed slot at once, `skip` waits for
    /// the next slot.
    #[arg(long, default_value = "skip", value_parser = ["skip", "once"])]
    pub catch_up: String,
    /// The stored schedule as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The request, as after `sluicectl`: `sync <connector> [<stream>] [options]`.
    #[arg(last = true, required = true, value_name = "sync …")]
    pub request: Vec<String>,
}

/// Reads the request after `--` exactly as `sluicectl sync` reads its arguments.
fn parse_request(args: &[String]) -> anyhow::Result<sync::SyncCommand> {
    if args.first().map(String::as_str) != Some("sync") {
        bail!(
            "the request after `--` must start with `sync` (e.g. `-- sync sailthru --export s3://bucket/export.zip`)"
        );
    }
    let matches = clap::Command::new("sluicectl schedules add … --")
        .subcommand(sync::command())
        .try_get_matches_from(std::iter::once("sluicectl").chain(args.iter().map(String::as_str)))
        .map_err(|e| anyhow::anyhow!("{}", e.render()))?;
    let sync_matches = matches
        .subcommand_matches("sync")
        .context("the request after `--` must start with `sync`")?;
    let sync = sync::from_matches(sync_matches)?;
    if sync.options.wait || sync.options.strict || sync.options.timeout.is_some() {
        bail!(
            "--wait, --strict and --timeout follow one job: a schedule's jobs are followed with `sluicectl schedules show` and `jobs show`"
        );
    }
    Ok(sync)
}

pub(crate) async fn schedules(
    settings: &Settings,
    cmd: SchedulesCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        SchedulesCommand::Add(args) => add(settings, args).await,
        SchedulesCommand::List { json } => {
            let pool = pool(settings).await?;
            let client = pool.get().await?;
            let schedules = store::list_schedules(&**client).await?;
            if !json {
                println!(
                    "{:<20}  {:<16}  {:<16}  {:<8}  {:<30}  {:<25}  last",
                    "name", "cron", "tz", "catch-up", "sync", "next slot"
                );
            }
            for s in &schedules {
                let last = store::slot_records(&**client, &s.name, 1)
                    .await?
                    .into_iter()
                    .next();
                if json {
                    let mut value = serde_json::to_value(s)?;
                    value["last"] = serde_json::to_value(&last)?;
                    println!("{value}");
                } else {
                    println!(
                        "{:<20}  {:<16}  {:<16}  {:<8}  {:<30}  {:<25}  {}",
                        s.name,
                        s.cron,
                        s.timezone,
                        s.catch_up.as_str(),
                        format!("{}/{}/{}", s.connector, s.account, s.stream),
                        next_slot_text(s),
                        last.as_ref().map_or_else(|| "-".to_string(), slot_text)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SchedulesCommand::Show { name, json } => {
            let pool = pool(settings).await?;
            let client = pool.get().await?;
            let Some(s) = store::get_schedule(&**client, &name).await? else {
                eprintln!("no schedule {name:?}");
                return Ok(ExitCode::from(1));
            };
            let slots = store::slot_records(&**client, &name, SHOWN_SLOTS).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"schedule": s, "slots": slots}))?
                );
            } else {
                print_schedule(&s);
                if slots.is_empty() {
                    println!("slots     none yet");
                } else {
                    println!("slots     (latest {} first)", slots.len());
                    for r in &slots {
                        println!("  {}", slot_text(r));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SchedulesCommand::Pause { name } => set_paused(settings, &name, true).await,
        SchedulesCommand::Resume { name } => set_paused(settings, &name, false).await,
        SchedulesCommand::Rm { name } => {
            let pool = pool(settings).await?;
            if store::remove_schedule(&**pool.get().await?, &name).await? {
                println!("removed schedule {name}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no schedule {name:?}");
                Ok(ExitCode::from(1))
            }
        }
    }
}

async fn add(settings: &Settings, args: AddArgs) -> anyhow::Result<ExitCode> {
    let cadence = Cadence::parse(&args.cron, &args.timezone)?;
    let now = Utc::now();
    if cadence.next_after(now).is_none() {
        bail!(
            "the cron expression {:?} matches no time after now",
            args.cron
        );
    }
    let request = parse_request(&args.request)?;
    sync::check(settings, &request)?;
    let destination = &request.options.destination;
    if !sluice_destinations::is_configured(settings, destination)? {
        bail!(
            "unknown destination {destination:?}: configure it with SLUICE__DESTINATIONS__{}__KIND",
            destination.to_uppercase()
        );
    }
    let new = NewSchedule {
        name: args.name.clone(),
        cron: args.cron.split_whitespace().collect::<Vec<_>>().join(" "),
        timezone: args.timezone.clone(),
        catch_up: args
            .catch_up
            .parse::<CatchUp>()
            .map_err(anyhow::Error::msg)?,
        connector: request.connector,
        stream: request.stream,
        account: request.options.account,
        destination: request.options.destination,
        params: request.params,
        mode: request.mode,
    };
    let pool = pool(settings).await?;
    let Some(s) = store::add_schedule(&**pool.get().await?, &new).await? else {
        bail!(
            "a schedule named {:?} exists: remove it first (`sluicectl schedules rm {}`) or choose another name",
            args.name,
            args.name
        );
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "added schedule {}: {}/{}/{} into {}, first slot {}",
            s.name,
            s.connector,
            s.account,
            s.stream,
            s.destination,
            next_slot_text(&s)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_paused(settings: &Settings, name: &str, paused: bool) -> anyhow::Result<ExitCode> {
    let pool = pool(settings).await?;
    if store::set_paused(&**pool.get().await?, name, paused).await? {
        println!(
            "{} schedule {name}",
            if paused { "paused" } else { "resumed" }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("no schedule {name:?}");
        Ok(ExitCode::from(1))
    }
}

/// The next slot the planner will handle; before a planner has seen the schedule (just
/// added or resumed), the first slot after this machine's now, marked `≈`.
fn next_slot_text(s: &Schedule) -> String {
    if s.paused {
        return "paused".into();
    }
    match s.next_slot {
        Some(t) => rfc3339(t),
        None => s
            .cadence()
            .ok()
            .and_then(|c| c.next_after(Utc::now()))
            .map_or_else(|| "-".into(), |t| format!("≈{}", rfc3339(t))),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn slot_text(r: &SlotRecord) -> String {
    let mut text = format!("{}  {:<7}", rfc3339(r.slot), r.outcome.as_str());
    if let Some(job) = r.job_id {
        text.push_str(&format!("  job {job}"));
        if let Some(state) = r.job_state {
            text.push_str(&format!(" ({state})"));
        }
    }
    if let Some(reason) = &r.reason {
        text.push_str(&format!("  {reason}"));
    }
    text
}

fn print_schedule(s: &Schedule) {
    println!("schedule  {}", s.name);
    println!("cron      {} ({})", s.cron, s.timezone);
    println!("catch-up  {}", s.catch_up);
    println!(
        "sync      {}/{}/{} into {} ({})",
        s.connector,
        s.account,
        s.stream,
        s.destination,
        s.mode.as_str()
    );
    println!("params    {}", s.params);
    println!("state     {}", if s.paused { "paused" } else { "active" });
    println!("next slot {}", next_slot_text(s));
    println!("added     {}", rfc3339(s.created_at));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sluice_contracts::Mode;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_request_is_read_like_sluicectl_sync() {
        let sync = parse_request(&args(&[
            "sync",
            "klaviyo",
            "events",
            "--metric",
            "Placed Order",
            "--incremental",
            "--destination",
            "rs",
        ]))
        .unwrap();
        assert_eq!(
            (sync.connector.as_str(), sync.stream.as_str()),
            ("klaviyo", "events")
        );
        assert_eq!(sync.params, json!({"metrics": ["Placed Order"]}));
        assert_eq!(sync.mode, Mode::Incremental);
        assert_eq!(sync.options.destination, "rs");
    }

    #[test]
    fn a_request_that_sync_would_refuse_is_refused() {
        for (words, needle) in [
            (vec!["jobs", "list"], "must start with `sync`"),
            (vec!["sync", "klaviyo", "nope"], "nope"),
            (vec!["sync", "klaviyo", "segment_members"], "--segment"),
            (
                vec!["sync", "klaviyo", "events", "--wait"],
                "a schedule's jobs",
            ),
        ] {
            let e = parse_request(&args(&words)).unwrap_err().to_string();
            assert!(e.contains(needle), "{words:?}: {e}");
        }
    }

    #[test]
    fn add_takes_its_options_before_the_double_dash() {
        let cli = crate::parse_cli([
            "sluicectl",
            "schedules",
            "add",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--tz",
            "Europe/Berlin",
            "--catch-up",
            "once",
            "--",
            "sync",
            "klaviyo",
            "metrics",
        ])
        .unwrap();
        let crate::Command::Schedules(SchedulesCommand::Add(add)) = cli.command else {
            panic!("not schedules add");
        };
        assert_eq!(
            (add.name.as_str(), add.cron.as_str(), add.timezone.as_str()),
            ("nightly", "0 3 * * *", "Europe/Berlin")
        );
        assert_eq!(add.catch_up, "once");
        assert_eq!(add.request, args(&["sync", "klaviyo", "metrics"]));
        assert!(
            crate::parse_cli(["sluicectl", "schedules", "add", "x", "--cron", "0 3 * * *"])
                .is_err()
        );
    }
}
