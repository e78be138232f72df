//! Deterministic identifiers.
//!
//! Task ids are derived, never random: a parent task that is fetched again after a crash
//! re-creates exactly the same child ids, so the ledger's `ON CONFLICT DO NOTHING` makes the
//! second copy a no-op.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The id of the `index`-th task (0-based) that the planner creates for `job_id`.
///
/// Shape: 32 lowercase hex characters (the first 128 bits of SHA-256 of `"<job_id>/<index>"`).
pub fn root_task_id(job_id: Uuid, index: usize) -> String {
    derive(&job_id.to_string(), index)
}

/// The id of the `index`-th child (0-based) that task `parent_task_id` fans out to.
///
/// Same shape as [`root_task_id`]; stable across re-runs of the parent.
pub fn child_task_id(parent_task_id: &str, index: usize) -> String {
    derive(parent_task_id, index)
}

/// The id of the child task of `job_id` that fetches the resource `key` (see
/// [`crate::Once`]): the same whichever task of the job finds the resource.
///
/// Same shape as [`root_task_id`] (of SHA-256 of `"<job_id>/key/<key>"`); never equal to
/// a root or indexed child id, whose hashed text has no `/key/`.
pub fn keyed_task_id(job_id: Uuid, key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(job_id.to_string().as_bytes());
    hasher.update(b"/key/");
    hasher.update(key.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

fn derive(parent: &str, index: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(parent.as_bytes());
    hasher.update(b"/");
    hasher.update(index.to_string().as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let job = Uuid::from_u128(42);
        assert_eq!(root_task_id(job, 0), root_task_id(job, 0));
        assert_ne!(root_task_id(job, 0), root_task_id(job, 1));
        let parent = root_task_id(job, 0);
        assert_eq!(child_task_id(&parent, 3), child_task_id(&parent, 3));
        assert_ne!(child_task_id(&parent, 3), root_task_id(job, 3));
        assert_eq!(parent.len(), 32);
        assert!(parent.chars().all(|c| c.is_ascii_hexdigit()));
        let keyed = keyed_task_id(job, "retailers/7");
        assert_eq!(keyed, keyed_task_id(job, "retailers/7"));
        assert_ne!(keyed, keyed_task_id(job, "retailers/8"));
        assert_ne!(keyed, keyed_task_id(Uuid::from_u128(43), "retailers/7"));
        assert_eq!(keyed.len(), 32);
    }
}
