//! Schedules (`sluice.schedules`, `sluice.schedule_runs`, V12): a stored sync request that
//! the planner fires at every slot of a 5-field cron expression in an IANA time zone.
//!
//! - [`Cadence`]: the parsed expression and zone, and the slot arithmetic (every time is
//!   UTC outside it; the zone only decides which instants match);
//! - what `sluicectl schedules add|list|show|pause|resume|rm` reads and writes;
//! - what the planner's schedule loop uses: [`lock_due_schedule`] (a row lock taken with
//!   `SKIP LOCKED`, so each due schedule is handled by one planner at a time), the outcome
//!   of each slot ([`record_slot`], once per schedule and slot by the primary key) and the
//!   stream's active job ([`active_job_of_stream`]).

use std::error::Error;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use deadpool_postgres::Transaction;
use postgres_types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use serde::Serialize;
use serde_json::Value;
use sluice_contracts::{JobRequest, MESSAGE_VERSION, Mode};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::JobState;
use crate::{Context, StoreError};

text_enum! {
    /// What the planner does with the slots that passed while no planner ran
    /// (`sluice.schedules.catch_up`).
    CatchUp {
        /// Run nothing for them; the next run is the next slot to come.
        Skip = "skip",
        /// Run one job for the latest of them, at once.
        Once = "once",
    }
}

text_enum! {
    /// What became of one slot of a schedule (`sluice.schedule_runs.outcome`).
    SlotOutcome {
        /// A job was requested for it (`job_id`).
        Fired = "fired",
        /// The stream's previous job was still queued or running (`job_id` names it).
        Skipped = "skipped",
        /// It passed while no planner ran and the catch-up policy did not run it; one
        /// record stands for a run of consecutive missed slots (`reason` counts them).
        Missed = "missed",
    }
}

/// Why a schedule's expression or time zone was refused.
#[derive(Debug, thiserror::Error)]
pub enum CadenceError {
    /// Not a standard 5-field cron expression (minute hour day-of-month month day-of-week).
    #[error(
        "invalid cron expression {expression:?}: {reason} (expected 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\")"
    )]
    Cron {
        /// The expression as given.
        expression: String,
        /// croner's explanation.
        reason: String,
    },
    /// Not an IANA time zone name.
    #[error(
        "unknown time zone {0:?}: use an IANA name such as UTC, Europe/Berlin or America/New_York"
    )]
    TimeZone(String),
}

/// A parsed schedule cadence: a standard 5-field cron expression (vixie-cron semantics: a
/// day matches when day-of-month OR day-of-week does, when both are restricted) read in an
/// IANA time zone, so `0 3 * * *` in `Europe/Berlin` is 03:00 Berlin time in summer and in
/// winter. Slots are instants; a wall time skipped by a DST change has no slot, and one
/// repeated by it has one (croner's rules).
#[derive(Debug, Clone)]
pub struct Cadence {
    cron: Cron,
    tz: Tz,
}

impl Cadence {
    /// Parses `expression` (exactly 5 fields: no seconds, no year) and `timezone` (an IANA
    /// name).
    ///
    /// # Errors
    /// [`CadenceError`] naming the expression or the zone.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, CadenceError> {
        let invalid = |reason: String| CadenceError::Cron {
            expression: expression.to_string(),
            reason,
        };
        let fields = expression.split_whitespace().count();
        if fields != 5 {
            return Err(invalid(format!("it has {fields} fields")));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| invalid(e.to_string()))?;
        let tz = Tz::from_str(timezone).map_err(|_| CadenceError::TimeZone(timezone.into()))?;
        Ok(Self { cron, tz })
    }

    /// The first slot strictly after `t`; `None` when the expression never matches again
    /// (`0 0 30 2 *`, February 30th).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }

    /// The latest slot at or before `t`, if one exists after `not_before` (inclusive).
    pub fn latest_at_or_before(
        &self,
        t: DateTime<Utc>,
        not_before: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|s| s.with_timezone(&Utc))
            .filter(|s| *s >= not_before)
    }

    /// How many slots lie in `[from, until]`, counting at most `cap` (a minutely schedule
    /// after a long outage has more slots than are worth counting).
    pub fn count_between(&self, from: DateTime<Utc>, until: DateTime<Utc>, cap: usize) -> usize {
        if from > until {
            return 0;
        }
        self.cron
            .iter_from(from.with_timezone(&self.tz), croner::Direction::Forward)
            .take_while(|s| s.with_timezone(&Utc) <= until)
            .take(cap)
            .count()
    }
}

/// A schedule as stored (`sluice.schedules`).
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    /// Its name, chosen by the operator (unique).
    pub name: String,
    /// Random at creation; each slot's job id is derived from it ([`Schedule::job_id`]).
    pub id: Uuid,
    /// The 5-field cron expression.
    pub cron: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
    /// What to do with slots missed while no planner ran.
    pub catch_up: CatchUp,
    /// Connector of the jobs.
    pub connector: String,
    /// Stream of the jobs.
    pub stream: String,
    /// Credential set.
    pub account: String,
    /// Destination the jobs write to.
    pub destination: String,
    /// The jobs' parameters, as `sluicectl sync` builds them from its options.
    pub params: Value,
    /// Full or incremental.
    pub mode: Mode,
    /// Paused schedules fire nothing (and catch nothing up when resumed).
    pub paused: bool,
    /// The first slot the planner has not handled yet, UTC; `None` until a planner has
    /// seen the schedule since it was added or resumed.
    pub next_slot: Option<DateTime<Utc>>,
    /// When added, UTC.
    pub created_at: DateTime<Utc>,
}

impl Schedule {
    /// The cadence of the stored expression and zone.
    ///
    /// # Errors
    /// Only if the row was written by something other than [`add_schedule`]'s callers.
    pub fn cadence(&self) -> Result<Cadence, CadenceError> {
        Cadence::parse(&self.cron, &self.timezone)
    }

    /// The job id of the slot at `slot`: UUID v5 of the schedule's id and the slot's
    /// RFC 3339 UTC time, so every planner derives the same id for the same slot.
    pub fn job_id(&self, slot: DateTime<Utc>) -> Uuid {
        Uuid::new_v5(
            &self.id,
            slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .as_bytes(),
        )
    }

    /// The job request of one slot, as `sluicectl sync` would publish it (`requested_at`:
    /// when the request is made, UTC).
    pub fn request(&self, slot: DateTime<Utc>, requested_at: DateTime<Utc>) -> JobRequest {
        JobRequest {
            v: MESSAGE_VERSION,
            job_id: self.job_id(slot),
            connector: self.connector.clone(),
            stream: self.stream.clone(),
            account: self.account.clone(),
            params: self.params.clone(),
            mode: self.mode,
            requested_at,
            destination: self.destination.clone(),
        }
    }
}

const SCHEDULE_COLUMNS: &str = "name, id, cron, timezone, catch_up, connector, stream, account, \
     destination, params, mode, paused, next_slot, created_at";

fn schedule(r: &tokio_postgres::Row) -> Schedule {
    Schedule {
        name: r.get(0),
        id: r.get(1),
        cron: r.get(2),
        timezone: r.get(3),
        catch_up: r.get(4),
        connector: r.get(5),
        stream: r.get(6),
        account: r.get(7),
        destination: r.get(8),
        params: r.get(9),
        // The column's CHECK allows these two only.
        mode: if r.get::<_, &str>(10) == Mode::Incremental.as_str() {
            Mode::Incremental
        } else {
            Mode::Full
        },
        paused: r.get(11),
        next_slot: r.get(12),
        created_at: r.get(13),
    }
}

/// A schedule to add: the cadence and the request its slots fire.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// Unique name.
    pub name: String,
    /// 5-field cron expression (checked with [`Cadence::parse`] before).
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    /// Catch-up policy.
    pub catch_up: CatchUp,
    /// Connector.
    pub connector: String,
    /// Stream.
    pub stream: String,
    /// Credential set.
    pub account: String,
    /// Destination.
    pub destination: String,
    /// Parameters (checked against the connector's specs before).
    pub params: Value,
    /// Full or incremental.
    pub mode: Mode,
}

/// Adds a schedule; `None` when the name is taken.
///
/// # Errors
/// Database errors.
pub async fn add_schedule(
    client: &impl GenericClient,
    new: &NewSchedule,
) -> Result<Option<Schedule>, StoreError> {
    let row = client
        .query_opt(
            &format!(
                "INSERT INTO sluice.schedules
                   (name, id, cron, timezone, catch_up, connector, stream, account, destination, params, mode)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (name) DO NOTHING RETURNING {SCHEDULE_COLUMNS}"
            ),
            &[
                &new.name,
                &Uuid::new_v4(),
                &new.cron,
                &new.timezone,
                &new.catch_up,
                &new.connector,
                &new.stream,
                &new.account,
                &new.destination,
                &new.params,
                &new.mode.as_str(),
            ],
        )
        .await
        .context(|| format!("adding schedule {}", new.name))?;
    Ok(row.as_ref().map(schedule))
}

/// One schedule by name.
///
/// # Errors
/// Database errors.
pub async fn get_schedule(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<Schedule>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT {SCHEDULE_COLUMNS} FROM sluice.schedules WHERE name = $1"),
            &[&name],
        )
        .await
        .context(|| format!("reading schedule {name}"))?;
    Ok(row.as_ref().map(schedule))
}

/// Every schedule, by name.
///
/// # Errors
/// Database errors.
pub async fn list_schedules(client: &impl GenericClient) -> Result<Vec<Schedule>, StoreError> {
    let rows = client
        .query(
            &format!("SELECT {SCHEDULE_COLUMNS} FROM sluice.schedules ORDER BY name"),
            &[],
        )
        .await
        .context(|| "listing schedules".into())?;
    Ok(rows.iter().map(schedule).collect())
}

/// Pauses or resumes a schedule; `false` when there is no such schedule. Resuming clears
/// `next_slot`, so the planner starts again at the first slot after its clock's now: the
/// slots of the pause are not caught up.
///
/// # Errors
/// Database errors.
pub async fn set_paused(
    client: &impl GenericClient,
    name: &str,
    paused: bool,
) -> Result<bool, StoreError> {
    let n = client
        .execute(
            "UPDATE sluice.schedules
                SET paused = $2, updated_at = now(),
                    next_slot = CASE WHEN $2 THEN next_slot END
              WHERE name = $1",
            &[&name, &paused],
        )
        .await
        .context(|| format!("pausing or resuming schedule {name}"))?;
    Ok(n == 1)
}

/// Removes a schedule and its slot records (its jobs stay); `false` when there is none.
///
/// # Errors
/// Database errors.
pub async fn remove_schedule(client: &impl GenericClient, name: &str) -> Result<bool, StoreError> {
    let n = client
        .execute("DELETE FROM sluice.schedules WHERE name = $1", &[&name])
        .await
        .context(|| format!("removing schedule {name}"))?;
    Ok(n == 1)
}

/// One recorded slot, with the state of its job (`schedules show`).
#[derive(Debug, Clone, Serialize)]
pub struct SlotRecord {
    /// The slot's time, UTC.
    pub slot: DateTime<Utc>,
    /// Fired, skipped or missed.
    pub outcome: SlotOutcome,
    /// The slot's job (fired), or the job it was skipped for (skipped).
    pub job_id: Option<Uuid>,
    /// That job's current state, if it is in the ledger.
    pub job_state: Option<JobState>,
    /// Why it was skipped or missed.
    pub reason: Option<String>,
    /// When the planner recorded it, UTC (database time).
    pub recorded_at: DateTime<Utc>,
}

/// The latest `limit` recorded slots of a schedule, newest first.
///
/// # Errors
/// Database errors.
pub async fn slot_records(
    client: &impl GenericClient,
    name: &str,
    limit: i64,
) -> Result<Vec<SlotRecord>, StoreError> {
    let rows = client
        .query(
            "SELECT r.slot, r.outcome, r.job_id, j.state, r.reason, r.recorded_at
               FROM sluice.schedule_runs r LEFT JOIN sluice.jobs j ON j.id = r.job_id
              WHERE r.schedule = $1 ORDER BY r.slot DESC LIMIT $2",
            &[&name, &limit],
        )
        .await
        .context(|| format!("reading the slots of schedule {name}"))?;
    Ok(rows
        .iter()
        .map(|r| SlotRecord {
            slot: r.get(0),
            outcome: r.get(1),
            job_id: r.get(2),
            job_state: r.get(3),
            reason: r.get(4),
            recorded_at: r.get(5),
        })
        .collect())
}

/// Locks one schedule that needs the planner at `now` — not paused, and with no
/// `next_slot` yet or one at or before `now` — skipping schedules another planner holds
/// and those named in `except` (they failed in this round), so every due schedule is
/// handled by exactly one planner at a time. The lock lasts until `tx` ends; whoever
/// takes it next sees the `next_slot` this one committed.
///
/// # Errors
/// Database errors.
pub async fn lock_due_schedule(
    tx: &Transaction<'_>,
    now: DateTime<Utc>,
    except: &[String],
) -> Result<Option<Schedule>, StoreError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {SCHEDULE_COLUMNS} FROM sluice.schedules
                  WHERE NOT paused AND (next_slot IS NULL OR next_slot <= $1)
                    AND name <> ALL($2)
                  ORDER BY next_slot NULLS FIRST, name LIMIT 1
                    FOR UPDATE SKIP LOCKED"
            ),
            &[&now, &except],
        )
        .await
        .context(|| "looking for due schedules".into())?;
    Ok(row.as_ref().map(schedule))
}

/// The earliest `next_slot` of any active schedule, UTC: when the planner's schedule loop
/// has work next.
///
/// # Errors
/// Database errors.
pub async fn earliest_next_slot(
    client: &impl GenericClient,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(client
        .query_one(
            "SELECT min(next_slot) FROM sluice.schedules WHERE NOT paused",
            &[],
        )
        .await
        .context(|| "reading the next schedule slot".into())?
        .get(0))
}

/// Sets the first slot the planner has not handled yet.
///
/// # Errors
/// Database errors.
pub async fn set_next_slot(
    tx: &Transaction<'_>,
    name: &str,
    next_slot: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE sluice.schedules SET next_slot = $2, updated_at = now() WHERE name = $1",
        &[&name, &next_slot],
    )
    .await
    .context(|| format!("advancing schedule {name}"))?;
    Ok(())
}

/// Records what became of a slot; a slot already recorded keeps its first record.
///
/// # Errors
/// Database errors.
pub async fn record_slot(
    tx: &Transaction<'_>,
    name: &str,
    slot: DateTime<Utc>,
    outcome: SlotOutcome,
    job_id: Option<Uuid>,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sluice.schedule_runs (schedule, slot, outcome, job_id, reason)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (schedule, slot) DO NOTHING",
        &[&name, &slot, &outcome, &job_id, &reason],
    )
    .await
    .context(|| format!("recording slot {slot} of schedule {name}"))?;
    Ok(())
}

/// The queued or running job of a stream into a destination, if any (the oldest).
///
/// # Errors
/// Database errors.
pub async fn active_job_of_stream(
    client: &impl GenericClient,
    connector: &str,
    account: &str,
    stream: &str,
    destination: &str,
) -> Result<Option<Uuid>, StoreError> {
    Ok(client
        .query_opt(
            "SELECT id FROM sluice.jobs
              WHERE connector = $1 AND account = $2 AND stream = $3 AND destination = $4
                AND state IN ('queued', 'running')
              ORDER BY requested_at LIMIT 1",
            &[&connector, &account, &stream, &destination],
        )
        .await
        .context(|| format!("looking for an active job of {connector}/{account}/{stream}"))?
        .map(|r| r.get(0)))
}

/// Whether a job is recorded in the ledger.
///
/// # Errors
/// Database errors.
pub async fn job_exists(client: &impl GenericClient, job_id: Uuid) -> Result<bool, StoreError> {
    Ok(client
        .query_opt("SELECT 1 FROM sluice.jobs WHERE id = $1", &[&job_id])
        .await
        .context(|| format!("looking up job {job_id}"))?
        .is_some())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn slots_follow_the_expression_in_its_time_zone() {
        let daily = Cadence::parse("0 3 * * *", "Europe/Berlin").unwrap();
        // 03:00 in Berlin is 01:00 UTC in summer (CEST) and 02:00 UTC in winter (CET).
        assert_eq!(
            daily.next_after(at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T01:00:00Z"))
        );
        assert_eq!(
            daily.next_after(at("2026-12-01T05:00:00Z")),
            Some(at("2026-12-02T02:00:00Z"))
        );
        // Strictly after: a slot at exactly `t` is not next.
        let hourly = Cadence::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(
            hourly.next_after(at("2026-01-01T10:00:00Z")),
            Some(at("2026-01-01T11:00:00Z"))
        );
        assert_eq!(
            hourly.latest_at_or_before(at("2026-01-01T10:00:00Z"), at("2026-01-01T09:00:00Z")),
            Some(at("2026-01-01T10:00:00Z"))
        );
        assert_eq!(
            hourly.latest_at_or_before(at("2026-01-01T10:59:59Z"), at("2026-01-01T10:30:00Z")),
            None
        );
        assert_eq!(
            hourly.count_between(at("2026-01-01T01:00:00Z"), at("2026-01-01T03:30:00Z"), 100),
            3
        );
        assert_eq!(
            hourly.count_between(at("2026-01-01T01:00:00Z"), at("2027-01-01T00:00:00Z"), 100),
            100
        );
        // Day of month OR day of week, as cron has it: the 1st, and every Monday.
        let either = Cadence::parse("0 0 1 * 1", "UTC").unwrap();
        assert_eq!(
            either.next_after(at("2026-06-01T00:00:00Z")),
            Some(at("2026-06-08T00:00:00Z"))
        );
        assert_eq!(
            Cadence::parse("0 0 30 2 *", "UTC")
                .unwrap()
                .next_after(at("2026-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn a_dst_gap_has_no_slot_and_a_repeated_hour_one() {
        // 2026-03-29 02:30 does not exist in Berlin (clocks jump 02:00 → 03:00).
        let gap = Cadence::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let next = gap.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert_ne!(next, at("2026-03-29T01:30:00Z"));
        assert!(next > at("2026-03-28T12:00:00Z"));
        // 2026-10-25 02:30 happens twice in Berlin: one slot.
        let repeated = Cadence::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            repeated.count_between(at("2026-10-24T12:00:00Z"), at("2026-10-25T12:00:00Z"), 10),
            1
        );
    }

    #[test]
    fn only_five_field_expressions_and_iana_zones_are_accepted() {
        for (cron, tz, needle) in [
            ("0 3 * *", "UTC", "it has 4 fields"),
            ("0 0 3 * * *", "UTC", "it has 6 fields"),
            (
                "61 3 * * *",
                "UTC",
                "invalid cron expression \"61 3 * * *\"",
            ),
            (
                "0 3 * * *",
                "Mars/Olympus",
                "unknown time zone \"Mars/Olympus\"",
            ),
        ] {
            let e = Cadence::parse(cron, tz).unwrap_err().to_string();
            assert!(e.contains(needle), "{cron} {tz}: {e}");
        }
    }

    #[test]
    fn each_slot_has_its_own_job_id_and_each_schedule_its_own() {
        let mut s = Schedule {
            name: "nightly".into(),
            id: Uuid::new_v4(),
            cron: "0 3 * * *".into(),
            timezone: "UTC".into(),
            catch_up: CatchUp::Once,
            connector: "sailthru".into(),
            stream: "export".into(),
            account: "default".into(),
            destination: "postgres".into(),
            params: serde_json::json!({"export": "/x.zip"}),
            mode: Mode::Incremental,
            paused: false,
            next_slot: None,
            created_at: Utc::now(),
        };
        let (a, b) = (at("2026-01-01T03:00:00Z"), at("2026-01-02T03:00:00Z"));
        assert_eq!(s.job_id(a), s.job_id(a));
        assert_ne!(s.job_id(a), s.job_id(b));
        let request = s.request(a, b);
        assert_eq!(request.job_id, s.job_id(a));
        assert_eq!(request.mode, Mode::Incremental);
        assert_eq!(request.params["export"], "/x.zip");
        let first = s.job_id(a);
        s.id = Uuid::new_v4();
        assert_ne!(
            s.job_id(a),
            first,
            "a re-added schedule must not reuse old jobs"
        );
    }
}
