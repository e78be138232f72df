//! `sluicectl`, the operator's CLI: apply migrations, start syncs and follow them, inspect
//! and cancel jobs, and look at or replay the parking lot.
//!
//! It reads the same configuration as the services (`SLUICE_CONFIG`, `SLUICE__…`), talks to
//! RabbitMQ to publish requests and to Postgres to read the ledger. Output meant for scripts
//! goes to stdout (the job id of `sync`, `--json` reports); progress goes to stderr.
//!
//! Exit codes: 0 success; 1 error or a job that failed or was cancelled; 2 with `--strict`
//! when a job succeeded but rejected records.

mod sync;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use sluice_broker::lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use sluice_broker::{ATTEMPTS_HEADER, Broker, ERROR_HEADER, Headers, ORIGIN_HEADER, Route};
use sluice_contracts::{
    ControlAction, ControlMessage, FetchTask, JobRequest, MESSAGE_VERSION, Message, Mode,
    RecordBatch, Settings,
};
use sluice_destinations::Destinations;
use sluice_store::ledger::{self, CancelResult, JobReport};
use sluice_store::load::Catalog;
use sluice_store::{Pool, StoreError};
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
    /// Inspect and cancel jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The parking lot (dead letters).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Row counts of a destination schema's tables and views (exact `count(*)`).
    Tables {
        /// The schema, e.g. `sailthru`.
        schema: String,
        /// The destination to count in (default `postgres`, the ledger's database).
        #[arg(long, default_value = sluice_contracts::DEFAULT_DESTINATION)]
        destination: String,
    },
    /// How fresh each stream is: latest source time and load time (`sluice.freshness`).
    Freshness,
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
    init_logging();
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
        Command::Jobs(cmd) => jobs(&settings, cmd).await,
        Command::Tables {
            schema,
            destination,
        } => tables(&settings, &schema, &destination).await,
        Command::Freshness => freshness(&settings).await,
        Command::Dlq(cmd) => dlq(&settings, cmd).await,
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The configured destinations, over the ledger's pool.
fn destinations(settings: &Settings, pool: &Pool) -> anyhow::Result<Destinations> {
    Ok(Destinations::build(settings, pool, &Catalog::default())?)
}

async fn pool(settings: &Settings) -> anyhow::Result<Pool> {
    let pool = sluice_store::connect(&settings.database).await?;
    sluice_store::migrate(&pool).await?;
    Ok(pool)
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
    ledger::insert_job(&**pool.get().await?, &request).await?;
    broker
        .publish(
            Route::Jobs,
            &request,
            Headers::default().traced(request.job_id),
        )
        .await
        .context("publishing the job request")?;
    broker.close().await;
    println!("{}", request.job_id);
    if !options.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_for(&pool, request.job_id, options).await
}

async fn wait_for(pool: &Pool, job_id: Uuid, options: &SyncOptions) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:>10} [{bar:30}] {pos}/{len} tasks, {prefix} ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let deadline = options
        .timeout
        .map(|s| std::time::Instant::now() + Duration::from_secs(s));
    let waited = std::time::Instant::now();
    let mut warned_queued = false;
    let report = loop {
        let report = report(pool, job_id).await?;
        let s = &report.summary;
        bar.set_length(s.tasks_total.max(0) as u64);
        bar.set_position(s.tasks_done.max(0) as u64);
        bar.set_message(s.state.to_string());
        bar.set_prefix(format!(
            "{} rows, {} rejected",
            s.rows_loaded, s.rows_rejected
        ));
        bar.tick();
        if s.state.is_terminal() {
            break report;
        }
        if s.state == ledger::JobState::Queued
            && !warned_queued
            && waited.elapsed() > Duration::from_secs(30)
        {
            bar.println(format!(
                "job {job_id} is still queued after 30 s: is a planner running and connected to the same RabbitMQ prefix?"
            ));
            warned_queued = true;
        }
        if deadline.is_some_and(|d| std::time::Instant::now() > d) {
            bar.abandon();
            eprintln!("gave up waiting; job {job_id} is still {}", s.state);
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    bar.finish_and_clear();
    print_report(&report);
    let s = &report.summary;
    Ok(match s.state {
        ledger::JobState::Succeeded if options.strict && s.rows_rejected > 0 => ExitCode::from(2),
        ledger::JobState::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

async fn report(pool: &Pool, job_id: Uuid) -> anyhow::Result<JobReport> {
    ledger::job_report(&**pool.get().await?, job_id)
        .await?
        .with_context(|| format!("no job {job_id}"))
}

fn print_report(r: &JobReport) {
    let s = &r.summary;
    println!("job       {}", s.id);
    println!(
        "stream    {}/{}/{} ({})",
        s.connector, s.account, s.stream, r.mode
    );
    println!("into      {}", s.destination);
    println!("state     {}", s.state);
    if let Some(e) = &s.error {
        println!("error     {e}");
    }
    println!(
        "tasks     {}/{} ({})",
        s.tasks_done,
        s.tasks_total,
        r.tasks
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("requested {}", s.requested_at.to_rfc3339());
    if let Some(f) = s.finished_at {
        println!("finished  {}", f.to_rfc3339());
    }
    println!(
        "rows      {} loaded, {} rejected",
        s.rows_loaded, s.rows_rejected
    );
    for (table, rows) in &r.rows_per_table {
        println!("  {table:<40} {rows:>12}");
    }
    if let Some(warnings) = r.warnings.as_array().filter(|w| !w.is_empty()) {
        println!("warnings");
        for w in warnings {
            println!("  {}", w.as_str().unwrap_or_default());
        }
    }
    if !r.rejected.is_empty() {
        println!(
            "rejected records (first {}; all in sluice.rejected_rows)",
            r.rejected.len()
        );
        for rej in &r.rejected {
            println!("  {}: {}", rej.source, rej.error);
        }
    }
    if !r.failed_tasks.is_empty() {
        println!("failed tasks");
        for (task, error) in &r.failed_tasks {
            println!("  {task}: {error}");
        }
    }
}

async fn jobs(settings: &Settings, cmd: JobsCommand) -> anyhow::Result<ExitCode> {
    let pool = pool(settings).await?;
    match cmd {
        JobsCommand::List { limit, json } => {
            let jobs = ledger::list_jobs(&**pool.get().await?, limit).await?;
            if json {
                for j in &jobs {
                    println!("{}", serde_json::to_string(j)?);
                }
            } else {
                println!(
                    "{:<36}  {:<10}  {:<28}  {:<12}  {:>11}  {:>12}  {:>8}  requested",
                    "id", "state", "stream", "destination", "tasks", "rows", "rejected"
                );
                for j in &jobs {
                    println!(
                        "{:<36}  {:<10}  {:<28}  {:<12}  {:>11}  {:>12}  {:>8}  {}",
                        j.id,
                        j.state.as_str(),
                        format!("{}/{}/{}", j.connector, j.account, j.stream),
                        j.destination,
                        format!("{}/{}", j.tasks_done, j.tasks_total),
                        j.rows_loaded,
                        j.rows_rejected,
                        j.requested_at.format("%Y-%m-%d %H:%M:%S")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Show { id, json } => {
            let r = report(&pool, id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_report(&r);
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Cancel { id } => match ledger::cancel_job(&pool, id).await? {
            CancelResult::Cancelled => {
                let broker = Broker::connect(&settings.amqp, "sluicectl").await?;
                broker
                    .broadcast(&ControlMessage {
                        v: MESSAGE_VERSION,
                        job_id: id,
                        action: ControlAction::Cancel,
                    })
                    .await?;
                broker.close().await;
                println!("cancelled job {id}");
                Ok(ExitCode::SUCCESS)
            }
            CancelResult::AlreadyEnded(state) => {
                eprintln!("job {id} already ended: {state}");
                Ok(ExitCode::from(1))
            }
            CancelResult::NotFound => {
                eprintln!("no job {id}");
                Ok(ExitCode::from(1))
            }
        },
    }
}

async fn tables(settings: &Settings, schema: &str, destination: &str) -> anyhow::Result<ExitCode> {
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
        println!("{:<45} {:<5} {:>12}", t.name, t.kind, t.rows);
    }
    Ok(ExitCode::SUCCESS)
}

async fn freshness(settings: &Settings) -> anyhow::Result<ExitCode> {
    let pool = pool(settings).await?;
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT connector || '/' || account || '/' || stream, source_ts, loaded_at, job_id
               FROM sluice.freshness_latest ORDER BY 1",
            &[],
        )
        .await?;
    println!(
        "{:<45} {:<25} {:<25} job",
        "stream", "source time (UTC)", "loaded at (UTC)"
    );
    for r in rows {
        let stream: String = r.get(0);
        let source: chrono::DateTime<Utc> = r.get(1);
        let loaded: chrono::DateTime<Utc> = r.get(2);
        let job: Uuid = r.get(3);
        println!(
            "{stream:<45} {:<25} {:<25} {job}",
            source.format("%Y-%m-%d %H:%M:%S"),
            loaded.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A parked message as `dlq list` shows it.
#[derive(Debug, serde::Serialize)]
struct Parked {
    kind: String,
    origin: String,
    job_id: Option<Uuid>,
    task_id: Option<String>,
    attempts: String,
    error: String,
}

fn describe(delivery: &sluice_broker::lapin::message::Delivery) -> Parked {
    let props = &delivery.properties;
    let kind = props
        .kind()
        .as_ref()
        .map(|k| k.as_str().to_string())
        .unwrap_or_default();
    let death = sluice_broker::first_death(props);
    let origin = sluice_broker::header_str(props, ORIGIN_HEADER)
        .or_else(|| death.as_ref().map(|(key, _)| key.clone()))
        .unwrap_or_default();
    let error = sluice_broker::header_str(props, ERROR_HEADER)
        .or_else(|| {
            death
                .as_ref()
                .map(|(_, reason)| format!("dead-lettered: {reason}"))
        })
        .unwrap_or_default();
    let (job_id, task_id) = if kind == FetchTask::KIND {
        FetchTask::decode(&delivery.data)
            .map(|t| (Some(t.job_id), Some(t.task_id)))
            .unwrap_or_default()
    } else if kind == RecordBatch::KIND {
        RecordBatch::decode(&delivery.data)
            .map(|b| (Some(b.job_id), Some(b.task_id)))
            .unwrap_or_default()
    } else if kind == JobRequest::KIND {
        JobRequest::decode(&delivery.data)
            .map(|j| (Some(j.job_id), None))
            .unwrap_or_default()
    } else {
        (None, None)
    };
    Parked {
        kind,
        origin,
        job_id,
        task_id,
        attempts: sluice_broker::header_str(props, ATTEMPTS_HEADER).unwrap_or_default(),
        error,
    }
}

async fn dlq(settings: &Settings, cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    let broker = Broker::connect(&settings.amqp, "sluicectl").await?;
    let queue = broker.topology().parked();
    // Messages taken with basic.get stay unacknowledged until acked; closing the channel
    // returns every one not acked to the queue, so listing never loses anything.
    let channel = broker.channel().await?;
    let code = match cmd {
        DlqCommand::List { limit } => {
            let mut n = 0;
            while n < limit {
                let Some(msg) = channel
                    .basic_get(queue.clone().into(), BasicGetOptions::default())
                    .await?
                else {
                    break;
                };
                println!("{}", serde_json::to_string(&describe(&msg.delivery))?);
                n += 1;
            }
            eprintln!("{n} parked message(s) shown");
            ExitCode::SUCCESS
        }
        DlqCommand::Replay { job } => {
            let pool = pool(settings).await?;
            let (mut replayed, mut kept) = (0, 0);
            loop {
                let Some(msg) = channel
                    .basic_get(queue.clone().into(), BasicGetOptions::default())
                    .await?
                else {
                    break;
                };
                let parked = describe(&msg.delivery);
                if job.is_some() && parked.job_id != job {
                    kept += 1;
                    continue;
                }
                match replay_one(&broker, &pool, &parked, &msg.delivery.data).await {
                    Ok(true) => {
                        msg.delivery.ack(BasicAckOptions::default()).await?;
                        replayed += 1;
                    }
                    Ok(false) => kept += 1,
                    Err(e) => {
                        eprintln!("could not replay {parked:?}: {e:#}");
                        kept += 1;
                    }
                }
            }
            println!("replayed {replayed}, left parked {kept}");
            ExitCode::SUCCESS
        }
        DlqCommand::Purge { yes } => {
            if !yes {
                eprintln!("refusing to purge without --yes");
                return Ok(ExitCode::from(1));
            }
            let n = channel
                .queue_purge(queue.clone().into(), QueuePurgeOptions::default())
                .await?;
            println!("purged {n} parked message(s)");
            ExitCode::SUCCESS
        }
    };
    let _ = channel.close(200, "bye".into()).await;
    broker.close().await;
    Ok(code)
}

/// Reopens the ledger entry of a parked message and publishes it again with a fresh attempt
/// count. Returns false (left parked) when its job can no longer take it.
async fn replay_one(
    broker: &Broker,
    pool: &Pool,
    parked: &Parked,
    body: &[u8],
) -> anyhow::Result<bool> {
    let Some(job_id) = parked.job_id else {
        eprintln!(
            "left parked: undecodable {} message ({})",
            parked.kind, parked.error
        );
        return Ok(false);
    };
    let headers = Headers::default().traced(job_id);
    if parked.kind == FetchTask::KIND {
        let mut task = FetchTask::decode(body)?;
        if !reopen(pool, job_id, &task.task_id).await? {
            return Ok(false);
        }
        task.attempt = 1;
        broker.publish(Route::Fetch, &task, headers).await?;
    } else if parked.kind == RecordBatch::KIND {
        let batch = RecordBatch::decode(body)?;
        if !reopen(pool, job_id, &batch.task_id).await? {
            return Ok(false);
        }
        broker.publish(Route::Load, &batch, headers).await?;
    } else if parked.kind == JobRequest::KIND {
        let request = JobRequest::decode(body)?;
        if !ledger::reopen_job(pool, job_id).await? {
            eprintln!("left parked: job {job_id} cannot be reopened");
            return Ok(false);
        }
        broker.publish(Route::Jobs, &request, headers).await?;
    } else {
        return Ok(false);
    }
    Ok(true)
}

async fn reopen(pool: &Pool, job_id: Uuid, task_id: &str) -> Result<bool, StoreError> {
    let ok = ledger::reopen_task(pool, job_id, task_id).await?;
    if !ok {
        eprintln!(
            "left parked: task {task_id} of job {job_id} (job cancelled, succeeded, or its stream is held by another job)"
        );
    }
    Ok(ok)
}
