//! The `sluice` ledger: jobs, tasks, batches, locks, bookmarks, freshness, rejected rows.
//!
//! - [`jobs`]: the job and task state machine — intake, stream locks, plans, the outbox,
//!   outcomes, completion, bookmarks, cancel and replay;
//! - [`apply`]: applying `RecordBatch` parts — claim, write (in the ledger's transaction, or
//!   in a destination of its own), settle;
//! - [`reports`]: what `sluicectl jobs list|show` prints;
//! - [`bookmarks`]: listing and resetting stream bookmarks (`sluicectl bookmarks`);
//! - [`resources`]: once-per-resource child tasks, fresh resources skipped, and the outbox
//!   that publishes recorded tasks;
//! - [`schedules`]: stored schedules, their cadence, and what became of each slot.
//!
//! Every function that changes a job's state takes the job row lock first
//! (`SELECT … FOR NO KEY UPDATE`) and the task rows after it, always in that order, so
//! loaders, the planner and `sluicectl jobs cancel` serialise on the job without deadlocks.
//! That lock is what makes "a job is finished when none of its tasks is pending" exact, and
//! what guarantees that nothing of a cancelled job is settled after the cancel commits.

pub mod apply;
pub mod bookmarks;
pub mod jobs;
pub mod reports;
pub mod resources;

pub use apply::*;
pub use bookmarks::*;
pub use jobs::*;
pub use reports::*;
pub use resources::publish_outbox;

use std::error::Error;
use std::fmt;

use postgres_types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// Declares a state enum stored as `text` in the ledger (`ToSql`/`FromSql` on `text` and
/// `varchar`), with its SQL spellings, `Display`, `FromStr` and comparison with `&str`.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The spelling stored in the ledger.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(concat!("unknown ", stringify!($name), " {:?}"), other)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl ToSql for $name {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut bytes::BytesMut,
            ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                <&str as ToSql>::accepts(ty)
            }
            to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
                Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
            }
            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }
    };
}

// After `text_enum!`, which it uses.
pub mod schedules;

text_enum! {
    /// A job's state (`sluice.jobs.state`): `queued → running → succeeded | failed |
    /// cancelled`.
    JobState {
        /// Requested, not yet planned.
        Queued = "queued",
        /// Planned; tasks are being fetched and loaded.
        Running = "running",
        /// Every task done.
        Succeeded = "succeeded",
        /// Planning failed, or a task failed (the error names it).
        Failed = "failed",
        /// Cancelled by an operator.
        Cancelled = "cancelled",
    }
}

impl JobState {
    /// True for states a job never leaves (short of `sluicectl dlq replay`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

text_enum! {
    /// A task's state (`sluice.tasks.state`): `pending → done | failed | cancelled`.
    TaskState {
        /// Not yet finished: fetching, or parts still to load.
        Pending = "pending",
        /// Every part loaded.
        Done = "done",
        /// Parked or failed permanently (the error says why).
        Failed = "failed",
        /// Its job was cancelled or failed first.
        Cancelled = "cancelled",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_their_ledger_spellings() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(JobState::Cancelled.is_terminal() && !JobState::Running.is_terminal());
        assert_eq!(TaskState::Done, "done");
        assert!("paused".parse::<JobState>().unwrap_err().contains("paused"));
    }
}
