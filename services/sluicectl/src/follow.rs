//! `sync --wait`: following a job until it ends — a progress line on stderr, a notice
//! when no planner picks the job up, and an honest word on Ctrl-C (the job keeps running).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sluice_broker::{Broker, Route};
use sluice_contracts::Settings;
use sluice_store::Pool;
use sluice_store::ledger::{JobState, JobSummary};
use uuid::Uuid;

use crate::SyncOptions;
use crate::jobs::{print_report, report};

/// How long a job may stay `queued` before `--wait` says that no planner took it.
pub(crate) const QUEUED_NOTICE: Duration = Duration::from_secs(5);

/// How often the ledger is read.
const POLL: Duration = Duration::from_millis(500);

/// Exit code after Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

/// What the progress line shows at one moment: the bar's length and position (tasks) and
/// the text after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Bar length: the job's tasks, at least 1 (a bar of length 0 is drawn full).
    pub len: u64,
    /// Bar position: tasks done, failed or cancelled.
    pub pos: u64,
    /// Tasks, rows, rejects and — once there is a basis — rows per second and an ETA.
    pub text: String,
}

/// The progress of job `s`, `running_for` after this command first saw it running with
/// `rows_at_start` rows loaded (`None` while it has not been seen running).
///
/// Rows per second need 2 s of running and a row loaded since; the ETA needs a task
/// finished and one still to do. It extrapolates the time per task so far over the tasks
/// known now, and a job whose tasks spawn children (pages, split windows) learns of more
/// tasks as it runs, so it is a lower bound until the last ones are known.
pub(crate) fn progress(
    s: &JobSummary,
    running_for: Option<Duration>,
    rows_at_start: i64,
) -> Progress {
    let total = s.tasks_total.max(0) as u64;
    let done = (s.tasks_done.max(0) as u64).min(total);
    if s.state == JobState::Queued || total == 0 {
        return Progress {
            len: 1,
            pos: 0,
            text: if s.state == JobState::Queued {
                "waiting for a planner".into()
            } else {
                "planning".into()
            },
        };
    }
    let mut text = format!(
        "{done}/{total} tasks, {} rows, {} rejected",
        s.rows_loaded, s.rows_rejected
    );
    if let Some(running) = running_for.filter(|d| *d >= Duration::from_secs(2)) {
        let new_rows = s.rows_loaded - rows_at_start;
        if new_rows > 0 {
            let rate = new_rows as f64 / running.as_secs_f64();
            text.push_str(&format!(", {rate:.0} rows/s"));
        }
        if done > 0 && done < total && !s.state.is_terminal() {
            let eta = running.as_secs_f64() * (total - done) as f64 / done as f64;
            text.push_str(&format!(", ETA {}", human(Duration::from_secs_f64(eta))));
        }
    }
    Progress {
        len: total,
        pos: done,
        text,
    }
}

/// `1h 02m`, `3m 05s`, `42s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

/// Follows `job_id` until it ends, drawing progress on stderr, then prints its report.
/// Exit code: 0 when it succeeded (2 with `--strict` and rejected records), 1 when it
/// failed, was cancelled or `--timeout` passed, 130 on Ctrl-C — which stops the waiting
/// only: the job keeps running, and the message says how to follow or cancel it.
///
/// # Errors
/// Database errors reading the job.
pub(crate) async fn wait_for(
    settings: &Settings,
    pool: &Pool,
    job_id: Uuid,
    options: &SyncOptions,
) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:>10} [{bar:30}] {prefix} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let deadline = options
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    let waited = Instant::now();
    let mut noticed_queued = false;
    let mut running_since: Option<(Instant, i64)> = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let report = loop {
        let report = report(pool, job_id).await?;
        let s = &report.summary;
        if s.state != JobState::Queued && running_since.is_none() {
            running_since = Some((Instant::now(), s.rows_loaded));
        }
        let p = progress(
            s,
            running_since.map(|(t, _)| t.elapsed()),
            running_since.map_or(0, |(_, r)| r),
        );
        bar.set_length(p.len);
        bar.set_position(p.pos);
        bar.set_message(s.state.to_string());
        bar.set_prefix(p.text);
        bar.tick();
        if s.state.is_terminal() {
            break report;
        }
        if s.state == JobState::Queued && !noticed_queued && waited.elapsed() >= QUEUED_NOTICE {
            let notice = queued_notice(settings, job_id, waited.elapsed()).await;
            // A bar drawn nowhere (stderr is not a terminal) drops its println.
            if bar.is_hidden() {
                eprintln!("{notice}");
            } else {
                bar.println(notice);
            }
            noticed_queued = true;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            bar.abandon();
            eprintln!("gave up waiting; job {job_id} is still {}", s.state);
            return Ok(ExitCode::from(1));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut interrupted => {
                bar.abandon();
                eprintln!(
                    "stopped waiting; job {job_id} keeps running ({}). Follow it with `sluicectl jobs show {job_id}`, stop it with `sluicectl jobs cancel {job_id}`",
                    s.state
                );
                return Ok(ExitCode::from(INTERRUPTED));
            }
        }
    };
    bar.finish_and_clear();
    print_report(&report);
    let s = &report.summary;
    Ok(match s.state {
        JobState::Succeeded if options.strict && s.rows_rejected > 0 => ExitCode::from(2),
        JobState::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// Why a job may still be queued, from the jobs queue: no consumer means no planner is
/// running on this broker and prefix.
async fn queued_notice(settings: &Settings, job_id: Uuid, waited: Duration) -> String {
    let head = format!("job {job_id} is still queued after {} s", waited.as_secs());
    let consumers = match Broker::connect(&settings.amqp, "sluicectl").await {
        Ok(broker) => {
            let queue = broker.topology().queue(Route::Jobs);
            let counts = broker.queue_counts(&queue).await.map(|(_, c)| (queue, c));
            broker.close().await;
            counts.ok()
        }
        Err(_) => None,
    };
    match consumers {
        Some((queue, 0)) => format!(
            "{head}: no planner has picked it up — nothing consumes queue {queue}. Start sluice-planner with the same SLUICE__AMQP__URL and SLUICE__AMQP__PREFIX ({}); the job starts when one does",
            settings.amqp.prefix
        ),
        Some((queue, n)) => format!(
            "{head}: no planner has picked it up yet ({n} planner(s) consume {queue}; they may be busy with other jobs)"
        ),
        None => format!(
            "{head}: no planner has picked it up (is sluice-planner running on the same RabbitMQ prefix?)"
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn summary(state: JobState, done: i64, total: i64, rows: i64) -> JobSummary {
        JobSummary {
            id: Uuid::nil(),
            connector: "sailthru".into(),
            stream: "export".into(),
            account: "default".into(),
            destination: "postgres".into(),
            state,
            tasks_done: done,
            tasks_total: total,
            rows_loaded: rows,
            rows_rejected: 0,
            requested_at: chrono::Utc::now(),
            finished_at: None,
            error: None,
        }
    }

    #[test]
    fn a_queued_job_draws_an_empty_bar() {
        let p = progress(&summary(JobState::Queued, 0, 0, 0), None, 0);
        assert_eq!((p.len, p.pos), (1, 0));
        assert_eq!(p.text, "waiting for a planner");
        // Planned but no task recorded yet: still empty, not full.
        let p = progress(
            &summary(JobState::Running, 0, 0, 0),
            Some(Duration::from_secs(1)),
            0,
        );
        assert_eq!((p.len, p.pos), (1, 0));
    }

    #[test]
    fn rate_and_eta_appear_once_there_is_a_basis() {
        let s = summary(JobState::Running, 0, 40, 0);
        let p = progress(&s, Some(Duration::from_secs(1)), 0);
        assert_eq!((p.len, p.pos), (40, 0));
        assert_eq!(p.text, "0/40 tasks, 0 rows, 0 rejected");
        // 10 of 40 tasks and 5,000 rows (1,000 of them before we looked) in 8 s.
        let s = summary(JobState::Running, 10, 40, 5000);
        let p = progress(&s, Some(Duration::from_secs(8)), 1000);
        assert_eq!((p.len, p.pos), (40, 10));
        assert_eq!(
            p.text,
            "10/40 tasks, 5000 rows, 0 rejected, 500 rows/s, ETA 24s"
        );
        assert_eq!(human(Duration::from_secs(3725)), "1h 02m");
        assert_eq!(human(Duration::from_secs(185)), "3m 05s");
    }
}
