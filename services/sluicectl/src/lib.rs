//! `sluicectl`, the operator's CLI: apply migrations, start syncs and follow them, schedule
//! them, inspect and cancel jobs, and look at or replay the parking lot.
//!
//! It reads the same configuration as the services (`SLUICE_CONFIG`, `SLUICE__…`), talks to
//! RabbitMQ to publish requests and to Postgres to read the ledger. Output meant for scripts
//! goes to stdout (the job id of `sync`, `--json` reports); progress goes to stderr.
//!
//! Exit codes: 0 success; 1 error or a job that failed or was cancelled; 2 with `--strict`
//! when a job succeeded but rejected records.

mod bookmarks;
mod check;
mod dlq;
mod follow;
mod freshness;
mod jobs;
mod klaviyo;
mod schedules;
mod sync;
mod tables;

use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use serde_json::Value;
use sluice_broker::{Broker, Headers, Route};
use sluice_contracts::{JobRequest, MESSAGE_VERSION, Mode, Settings};
use sluice_destinations::Destinations;
use sluice_store::Pool;
use sluice_store::ledger;
use sluice_store::load::Catalog;
use tracing::Instrument;
use uuid::Uuid;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "sluicectl",
    version,
    about = "Operate sluice: syncs, jobs, dead letters."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the database if missing and apply pending migrations; with --destination,
    /// also create that destination's schemas, tables and views.
    Migrate {
        /// A destination of the `destinations` settings (e.g. `rs`); default: the ledger's
        /// database only.
        #[arg(long)]
        destination: Option<String>,
    },
    /// Start a sync job (subcommands generated from the connectors' declarations).
    #[command(skip)]
    Sync(sync::SyncCommand),
    /// List every connector, its streams, their parameters and tables.
    Streams,
    /// Check a connector's credentials and reachability, without a job.
    Check {
        /// The connector (`klaviyo`, `commercetools`, `sailthru`).
        connector: String,
        /// Credential set of the connector.
        #[arg(long, default_value = "default")]
        account: String,
    },
    /// Inspect and cancel jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Syncs fired on a cron cadence by the planner.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// Where each stream's next incremental job continues.
    #[command(subcommand)]
    Bookmarks(BookmarksCommand),
    /// The parking lot (dead letters).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Klaviyo-side operations of the commercetools → Klaviyo sync.
    #[command(subcommand)]
    Klaviyo(klaviyo::KlaviyoCommand),
    /// Row counts of a destination schema's tables and views (exact `count(*)`).
    Tables {
        /// The schema, e.g. `sailthru`.
        schema: String,
        /// The destination to count in (default `postgres`, the ledger's database).
        #[arg(long, default_value = sluice_contracts::DEFAULT_DESTINATION)]
        destination: String,
        /// JSON lines (`{"table", "kind", "rows"}`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// How fresh each stream is: latest source time and load time (`sluice.freshness`),
    /// with the name of what a stream's id stands for (a Klaviyo metric).
    Freshness {
        /// JSON lines (`{"connector", "account", "stream", "name", "source_ts",
        /// "loaded_at", "job_id"}`) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Options every sync takes (`--account`, `--destination`, `--wait`, `--strict`,
/// `--timeout`; see `sync.rs`).
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Credential set of the connector.
    pub account: String,
    /// Where the records go: a destination of the `destinations` settings
    /// (`SLUICE__DESTINATIONS__<NAME>__KIND`); default `postgres`, the ledger's database.
    pub destination: String,
    /// Follow the job until it ends; exit non-zero unless it succeeded.
    pub wait: bool,
    /// With --wait: exit 2 when the job succeeded but rejected records.
    pub strict: bool,
    /// With --wait: give up waiting after this many seconds (the job keeps running).
    pub timeout: Option<u64>,
}

/// Job commands.
#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// The most recent jobs.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One job: state, tasks, rows per table, rejected records, errors.
    Show {
        /// Job id.
        id: Uuid,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: fetchers drop its tasks, nothing more of it is loaded, the lock is freed.
    Cancel {
        /// Job id.
        id: Uuid,
    },
}

/// Bookmark commands.
#[derive(Subcommand, Debug)]
pub enum BookmarksCommand {
    /// Every stream's bookmark per destination: the greatest cursor loaded, and how many
    /// task streams (Klaviyo metrics) have a cursor of their own.
    List {
        /// JSON lines (the whole bookmark) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget a stream's bookmark: its next incremental job reads from the start. Refused
    /// while a job holds the stream.
    Reset {
        /// The connector.
        connector: String,
        /// The job stream (`events`, `profiles`, `orders`, …).
        stream: String,
        /// Credential set.
        #[arg(long, default_value = "default")]
        account: String,
        /// The destination whose bookmark to forget.
        #[arg(long, default_value = sluice_contracts::DEFAULT_DESTINATION)]
        destination: String,
    },
}

/// Parking-lot commands.
#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List parked messages with their reason.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Send parked messages back to work (all, or those of one job).
    Replay {
        /// Only messages of this job.
        #[arg(long)]
        job: Option<Uuid>,
    },
    /// Delete every parked message.
    Purge {
        /// Required: purging loses the messages.
        #[arg(long)]
        yes: bool,
    },
}

/// The `sluicectl` program: parses the command line, runs it, prints errors with their
/// cause chain to stderr.
pub async fn main() -> ExitCode {
    let cli = match parse_cli(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Parses a command line: the derived commands, plus `sync`, whose subcommands come from
/// the connectors' declarations.
///
/// # Errors
/// clap's error (usage, `--help`, `--version` included), to print and exit with.
pub fn parse_cli(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command()
        .subcommand(sync::command())
        .try_get_matches_from(args)?;
    if let Some(("sync", sync_matches)) = matches.subcommand() {
        let command = sync::from_matches(sync_matches).map_err(|e| {
            Cli::command().error(clap::error::ErrorKind::InvalidSubcommand, e.to_string())
        })?;
        return Ok(Cli {
            command: Command::Sync(command),
        });
    }
    Cli::from_arg_matches(&matches)
}

/// Runs a command.
///
/// # Errors
/// Configuration, connection and database errors, with context.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load()?;
    // Kept to the end: dropping it exports the spans still buffered (a job's root span).
    let _telemetry = sluice_service::init_cli_tracing(&settings, "sluicectl");
    match cli.command {
        Command::Migrate { destination } => {
            let pool = sluice_store::connect(&settings.database).await?;
            let applied = sluice_store::migrate(&pool).await?;
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                println!("applied migrations: {applied:?}");
            }
            if let Some(name) = destination {
                let destination = destinations(&settings, &pool)?.get(&name)?;
                for line in destination.migrate().await? {
                    println!("{line}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync(sync) => {
            sync::check(&settings, &sync)?;
            crate::sync_job(
                &settings,
                &sync.connector,
                &sync.stream,
                sync.params,
                sync.mode,
                &sync.options,
            )
            .await
        }
        Command::Streams => {
            sync::print_streams();
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { connector, account } => {
            check::check(&settings, &connector, &account).await
        }
        Command::Jobs(cmd) => jobs::jobs(&settings, cmd).await,
        Command::Schedules(cmd) => schedules::schedules(&settings, cmd).await,
        Command::Bookmarks(cmd) => bookmarks::bookmarks(&settings, cmd).await,
        Command::Tables {
            schema,
            destination,
            json,
        } => tables::tables(&settings, &schema, &destination, json).await,
        Command::Freshness { json } => freshness::freshness(&settings, json).await,
        Command::Dlq(cmd) => dlq::dlq(&settings, cmd).await,
        Command::Klaviyo(cmd) => klaviyo::klaviyo(&settings, cmd).await,
    }
}

/// The configured destinations, over the ledger's pool.
pub(crate) fn destinations(settings: &Settings, pool: &Pool) -> anyhow::Result<Destinations> {
    Ok(Destinations::build(settings, pool, &Catalog::default())?)
}

/// The ledger's pool: the database must exist and be migrated (only `migrate` creates
/// and migrates, so a mistyped name fails naming the database).
pub(crate) async fn pool(settings: &Settings) -> anyhow::Result<Pool> {
    Ok(sluice_store::connect_existing(&settings.database).await?)
}

/// Records and publishes a job request; with `--wait` follows it.
async fn sync_job(
    settings: &Settings,
    connector: &str,
    stream: &str,
    params: Value,
    mode: Mode,
    options: &SyncOptions,
) -> anyhow::Result<ExitCode> {
    // An unknown destination fails here, before a job is recorded.
    if !sluice_destinations::is_configured(settings, &options.destination)? {
        anyhow::bail!(
            "unknown destination {:?}: configure it with SLUICE__DESTINATIONS__{}__KIND (configured: {})",
            options.destination,
            options.destination.to_uppercase(),
            sluice_destinations::DestinationConfig::all(settings)?
                .into_keys()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let pool = pool(settings).await?;
    let broker = Broker::connect(&settings.amqp, "sluicectl").await?;
    let request = JobRequest {
        v: MESSAGE_VERSION,
        job_id: Uuid::new_v4(),
        connector: connector.into(),
        stream: stream.into(),
        account: options.account.clone(),
        params,
        mode,
        requested_at: Utc::now(),
        destination: options.destination.clone(),
    };
    // The job's trace starts here: the request is its root span.
    let root = sluice_service::job_root_span(&request, "sluicectl");
    let headers = root.in_scope(|| Headers::default().traced(request.job_id));
    async {
        ledger::insert_job(&**pool.get().await?, &request).await?;
        broker
            .publish(Route::Jobs, &request, headers)
            .await
            .context("publishing the job request")
    }
    .instrument(root)
    .await?;
    broker.close().await;
    println!("{}", request.job_id);
    if !options.wait {
        return Ok(ExitCode::SUCCESS);
    }
    follow::wait_for(settings, &pool, request.job_id, options).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_is_read_by_every_section() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/sluice.example.toml"
        );
        let settings = Settings::load_from(Some(path), std::iter::empty()).unwrap();
        assert_eq!(settings.loader.group_parts, 8);
        // Each connector reads its section (a wrong type or value fails here, naming it).
        let registry = sluice_connectors::Registry::from_settings(&settings).unwrap();
        assert_eq!(registry.iter().count(), sluice_connectors::CONNECTORS.len());
        assert!(settings.connectors["klaviyo"].0.contains_key("page_sizes"));
        sluice_destinations::DestinationConfig::all(&settings).unwrap();
    }
}
