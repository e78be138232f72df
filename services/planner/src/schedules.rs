//! The schedule loop: fires each slot of every stored schedule (`sluicectl schedules add`)
//! once, across any number of planner replicas.
//!
//! - **Exactly once.** A due schedule is handled under its row lock, taken with `SKIP
//!   LOCKED` ([`ledger::schedules::lock_due_schedule`]); the slot's job id is derived from
//!   the schedule and the slot ([`Schedule::job_id`]), the slot's outcome is recorded once
//!   (primary key schedule + slot) and `next_slot` moves past it in the same transaction.
//!   The job request is published (confirmed) before that transaction commits: a crash in
//!   between leaves the slot due, and the next attempt finds the job recorded by whoever
//!   consumed the request and only records the slot.
//! - **Skip while running.** A slot whose stream (connector/account/stream/destination)
//!   still has a queued or running job is recorded `skipped`, naming that job.
//! - **Catch-up.** A slot is on time when the loop handles it within [`ON_TIME`] of its
//!   time; older due slots were missed (no planner ran). With an on-time slot the missed
//!   ones are recorded and the on-time one fires; without, policy `once` fires the latest
//!   missed slot and `skip` fires nothing. Either way one record stands for the missed run.
//! - **Time** is read from a [`Clock`]: the system's in production, a [`ManualClock`] that
//!   tests move (no sleeping until a slot comes).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sluice_broker::{Broker, Headers, Route};
use sluice_service::metrics;
use sluice_store::Pool;
use sluice_store::ledger::{
    self,
    schedules::{self as store, Cadence, CatchUp, Schedule, SlotOutcome},
};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, info, warn};

/// How late a slot may be handled and still count as on time (not missed). The loop looks
/// at least every [`POLL`], so only an outage or a stalled database makes a slot this late.
pub const ON_TIME: TimeDelta = TimeDelta::seconds(60);

/// How often (real time) the loop looks for schedules added, resumed or due, besides
/// waking at the next known slot.
const POLL: Duration = Duration::from_secs(1);

/// Missed slots counted in a `missed` record's reason at most.
const MISSED_COUNT_CAP: usize = 10_000;

/// Where the planner reads the time of day (UTC).
#[derive(Clone, Debug)]
pub struct Clock(Source);

#[derive(Clone, Debug)]
enum Source {
    System,
    Manual(watch::Receiver<DateTime<Utc>>),
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// The current time, UTC.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Source::System => Utc::now(),
            Source::Manual(rx) => *rx.borrow(),
        }
    }

    /// Waits until the clock reads `t` or later.
    pub async fn sleep_until(&self, t: DateTime<Utc>) {
        match &self.0 {
            Source::System => {
                let wait = (t - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            Source::Manual(rx) => {
                let mut rx = rx.clone();
                // An error means the ManualClock is gone: time stands still for good.
                if rx.wait_for(|now| *now >= t).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// A clock that moves only when told (tests drive the planner's time through it).
#[derive(Debug)]
pub struct ManualClock(watch::Sender<DateTime<Utc>>);

impl ManualClock {
    /// A clock that reads `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(watch::Sender::new(start))
    }

    /// A [`Clock`] reading this one, for a planner.
    pub fn clock(&self) -> Clock {
        Clock(Source::Manual(self.0.subscribe()))
    }

    /// Sets the time (backwards too).
    pub fn set(&self, t: DateTime<Utc>) {
        self.0.send_replace(t);
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: TimeDelta) {
        self.0.send_modify(|now| *now += by);
    }

    /// The time it reads.
    pub fn now(&self) -> DateTime<Utc> {
        *self.0.borrow()
    }
}

/// What to do with a schedule's due slots at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPlan {
    /// The slot to run now, if any.
    pub run: Option<DateTime<Utc>>,
    /// The first missed slot and how many were missed (up to the cap), not run.
    pub missed: Option<(DateTime<Utc>, usize)>,
    /// The first slot after those handled here (`None`: the expression never matches
    /// again).
    pub next_slot: Option<DateTime<Utc>>,
}

/// Decides what becomes of the slots in `[next_slot, now]` (see the module's account).
pub fn plan_slots(
    cadence: &Cadence,
    next_slot: DateTime<Utc>,
    now: DateTime<Utc>,
    catch_up: CatchUp,
) -> SlotPlan {
    let Some(latest) = cadence.latest_at_or_before(now, next_slot) else {
        // Nothing due (next_slot is not a slot of the expression any more, or lies ahead).
        return SlotPlan {
            run: None,
            missed: None,
            next_slot: cadence.next_after(now.max(next_slot) - TimeDelta::seconds(1)),
        };
    };
    let on_time = now - latest <= ON_TIME;
    let run = (on_time || catch_up == CatchUp::Once).then_some(latest);
    let missed_until = if run.is_some() {
        latest - TimeDelta::seconds(1)
    } else {
        latest
    };
    let missed = match cadence.count_between(next_slot, missed_until, MISSED_COUNT_CAP) {
        0 => None,
        n => cadence
            .latest_at_or_before(next_slot, next_slot)
            .or_else(|| cadence.next_after(next_slot - TimeDelta::seconds(1)))
            .map(|first| (first, n)),
    };
    SlotPlan {
        run,
        missed,
        next_slot: cadence.next_after(latest),
    }
}

/// Starts the schedule loop of one planner session; it stops when the guard is dropped or
/// `stop` is cancelled.
pub fn spawn(broker: Arc<Broker>, pool: Pool, clock: Clock, stop: CancellationToken) -> DropGuard {
    let guard = stop.clone().drop_guard();
    tokio::spawn(async move {
        loop {
            let wake = match tick(&broker, &pool, &clock).await {
                Ok(wake) => wake,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "schedules: firing failed; retrying");
                    None
                }
            };
            tokio::select! {
                () = async {
                    match wake {
                        Some(t) => clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
                () = tokio::time::sleep(POLL) => {}
                () = stop.cancelled() => break,
            }
        }
    });
    guard
}

/// Handles every schedule due at the clock's now, one transaction each; returns when the
/// next known slot comes. A schedule that fails (its publish, its transaction) is left
/// due for the next tick and does not hold up the others.
async fn tick(
    broker: &Broker,
    pool: &Pool,
    clock: &Clock,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let mut failed: Vec<String> = Vec::new();
    loop {
        let now = clock.now();
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let Some(schedule) = store::lock_due_schedule(&tx, now, &failed).await? else {
            break;
        };
        let handled = match handle(broker, &tx, &schedule, now).await {
            Ok(outcomes) => tx.commit().await.map(|()| outcomes).map_err(Into::into),
            Err(e) => Err(e),
        };
        match handled {
            Ok(outcomes) => {
                // Counted once committed: a rolled-back slot is handled again.
                for outcome in outcomes {
                    metrics::counter!(
                        "sluice_schedule_slots_total",
                        "connector" => schedule.connector.clone(),
                        "outcome" => outcome.as_str(),
                    )
                    .increment(1);
                }
            }
            Err(e) => {
                warn!(schedule = %schedule.name, error = %format!("{e:#}"), "schedules: handling a due schedule failed; retrying");
                failed.push(schedule.name);
            }
        }
    }
    Ok(store::earliest_next_slot(&**pool.get().await?).await?)
}

/// Handles one due schedule inside `tx`, which holds its row lock; returns the outcomes
/// it recorded.
async fn handle(
    broker: &Broker,
    tx: &deadpool_postgres::Transaction<'_>,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<SlotOutcome>> {
    let name = &schedule.name;
    let cadence = match schedule.cadence() {
        Ok(c) => c,
        Err(e) => {
            // Written by hand around sluicectl: stop firing it rather than fail every tick.
            warn!(schedule = %name, error = %e, "schedules: pausing a schedule that cannot be read");
            store::set_paused(&**tx, name, true).await?;
            return Ok(Vec::new());
        }
    };
    let Some(next_slot) = schedule.next_slot else {
        // Added or resumed: start at the first slot after now, catching nothing up.
        let first = cadence.next_after(now);
        info!(schedule = %name, next_slot = ?first, "schedules: armed");
        advance(tx, name, first).await?;
        return Ok(Vec::new());
    };
    let plan = plan_slots(&cadence, next_slot, now, schedule.catch_up);
    let mut outcomes = Vec::new();
    if let Some((first, n)) = plan.missed {
        let reason = format!(
            "{n}{} slot(s) from {} passed while no planner ran (catch-up {})",
            if n >= MISSED_COUNT_CAP { "+" } else { "" },
            first.to_rfc3339(),
            schedule.catch_up
        );
        warn!(schedule = %name, %reason, "schedules: missed slots");
        store::record_slot(tx, name, first, SlotOutcome::Missed, None, Some(&reason)).await?;
        outcomes.push(SlotOutcome::Missed);
    }
    if let Some(slot) = plan.run {
        outcomes.push(fire(broker, tx, schedule, slot).await?);
    }
    advance(tx, name, plan.next_slot).await?;
    Ok(outcomes)
}

/// Moves `next_slot` on; an expression that matches no later time (`0 0 30 2 *`, refused
/// by `schedules add`) pauses its schedule instead of leaving it due for ever.
async fn advance(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    next_slot: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    match next_slot {
        Some(t) => store::set_next_slot(tx, name, Some(t)).await?,
        None => {
            warn!(schedule = %name, "schedules: the expression matches no later time; pausing the schedule");
            store::set_paused(&**tx, name, true).await?;
        }
    }
    Ok(())
}

/// Fires one slot: records and publishes its job, or records it skipped.
async fn fire(
    broker: &Broker,
    tx: &deadpool_postgres::Transaction<'_>,
    schedule: &Schedule,
    slot: DateTime<Utc>,
) -> anyhow::Result<SlotOutcome> {
    let name = &schedule.name;
    let job_id = schedule.job_id(slot);
    if store::job_exists(&**tx, job_id).await? {
        // Published by an attempt that did not commit: its request was consumed.
        store::record_slot(tx, name, slot, SlotOutcome::Fired, Some(job_id), None).await?;
        return Ok(SlotOutcome::Fired);
    }
    if let Some(active) = store::active_job_of_stream(
        &**tx,
        &schedule.connector,
        &schedule.account,
        &schedule.stream,
        &schedule.destination,
    )
    .await?
    {
        let reason = format!(
            "job {active} of {}/{}/{} into {} was still active",
            schedule.connector, schedule.account, schedule.stream, schedule.destination
        );
        info!(schedule = %name, %slot, %reason, "schedules: slot skipped");
        store::record_slot(
            tx,
            name,
            slot,
            SlotOutcome::Skipped,
            Some(active),
            Some(&reason),
        )
        .await?;
        return Ok(SlotOutcome::Skipped);
    }
    // requested_at is when the request is made (wall time, like `sluicectl sync`); the
    // slot's time is in sluice.schedule_runs.
    let request = schedule.request(slot, Utc::now());
    ledger::insert_job(&**tx, &request).await?;
    store::record_slot(tx, name, slot, SlotOutcome::Fired, Some(job_id), None).await?;
    // The root of the job's trace (docs/operations.md, "Traces").
    let root = sluice_service::job_root_span(&request, "schedule");
    let headers = root.in_scope(|| Headers::default().traced(job_id));
    broker
        .publish(Route::Jobs, &request, headers)
        .instrument(root)
        .await?;
    info!(schedule = %name, %slot, %job_id, "schedules: slot fired");
    Ok(SlotOutcome::Fired)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn an_on_time_slot_runs_and_the_next_is_the_following_slot() {
        let hourly = Cadence::parse("0 * * * *", "UTC").unwrap();
        for policy in [CatchUp::Skip, CatchUp::Once] {
            let plan = plan_slots(
                &hourly,
                at("2030-01-01T01:00:00Z"),
                at("2030-01-01T01:00:20Z"),
                policy,
            );
            assert_eq!(
                plan,
                SlotPlan {
                    run: Some(at("2030-01-01T01:00:00Z")),
                    missed: None,
                    next_slot: Some(at("2030-01-01T02:00:00Z")),
                }
            );
        }
    }

    #[test]
    fn after_downtime_once_runs_the_latest_missed_slot_and_skip_none() {
        let hourly = Cadence::parse("0 * * * *", "UTC").unwrap();
        let (from, now) = (at("2030-01-01T01:00:00Z"), at("2030-01-01T03:30:00Z"));
        let once = plan_slots(&hourly, from, now, CatchUp::Once);
        assert_eq!(once.run, Some(at("2030-01-01T03:00:00Z")));
        assert_eq!(once.missed, Some((from, 2)));
        assert_eq!(once.next_slot, Some(at("2030-01-01T04:00:00Z")));
        let skip = plan_slots(&hourly, from, now, CatchUp::Skip);
        assert_eq!(skip.run, None);
        assert_eq!(skip.missed, Some((from, 3)));
        assert_eq!(skip.next_slot, Some(at("2030-01-01T04:00:00Z")));
        // With a slot on time, both run it and record the earlier ones as missed.
        let now = at("2030-01-01T03:00:10Z");
        for policy in [CatchUp::Skip, CatchUp::Once] {
            let plan = plan_slots(&hourly, from, now, policy);
            assert_eq!(plan.run, Some(at("2030-01-01T03:00:00Z")));
            assert_eq!(plan.missed, Some((from, 2)));
        }
    }

    #[test]
    fn a_slot_not_yet_due_changes_nothing() {
        let hourly = Cadence::parse("0 * * * *", "UTC").unwrap();
        let plan = plan_slots(
            &hourly,
            at("2030-01-01T02:00:00Z"),
            at("2030-01-01T01:59:59Z"),
            CatchUp::Once,
        );
        assert_eq!(
            plan,
            SlotPlan {
                run: None,
                missed: None,
                next_slot: Some(at("2030-01-01T02:00:00Z")),
            }
        );
    }

    #[tokio::test]
    async fn a_manual_clock_wakes_its_sleepers_when_moved() {
        let manual = ManualClock::new(at("2030-01-01T00:00:00Z"));
        let clock = manual.clock();
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(at("2030-01-01T01:00:00Z")).await }
        });
        manual.advance(TimeDelta::minutes(30));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        manual.set(at("2030-01-01T01:00:00Z"));
        sleeper.await.unwrap();
        assert_eq!(clock.now(), at("2030-01-01T01:00:00Z"));
    }
}
