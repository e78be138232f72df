//! Once-per-resource child tasks (`sluice_contracts::Once`) and the outbox that publishes
//! recorded tasks.
//!
//! A connector marks a child task with the key of the resource it fetches. The fetcher
//! names such a child by its job and key and does not publish it; the loader, settling
//! the part that carries it:
//! 1. replaces each child whose resource was fetched (for the same connector, account and
//!    destination) less than `fresh_for_seconds` ago by the children that fetch had,
//!    recursively ([`expand_fresh`]) — so a re-run asks the source for nothing fresh, yet
//!    still reaches what lies below a fresh resource and is not;
//! 2. records the rest as pending, unpublished tasks (`ON CONFLICT DO NOTHING`: the same
//!    resource found by two tasks of one job is one task);
//! 3. after its commit, publishes the job's unpublished tasks ([`publish_outbox`], which
//!    the planner's outbox loop also runs, so a crash in between loses nothing).
//!
//! When the last part of a keyed task is settled, `sluice.fetched_resources` remembers the
//! fetch: when (UTC), by which job and task, and the children the task had — an empty
//! result included, so an empty list of offers is not asked for again while fresh.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use deadpool_postgres::Transaction;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_contracts::{FetchTask, Once, RecordBatchOf, TaskKind, ids};
use uuid::Uuid;

use super::jobs::{mark_published, unpublished_tasks};
use crate::{Context, Pool, StoreError};

/// Rounds of [`expand_fresh`] at most (a chain of fresh resources deeper than this is
/// fetched from its last level on).
const MAX_DEPTH: usize = 32;

/// A child as `sluice.fetched_resources.children` remembers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredChild {
    /// The child's stream.
    pub stream: String,
    /// What it fetches.
    pub kind: Value,
    /// Its resource key, when it is once-per-resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<Once>,
}

/// A child task about to be recorded.
#[derive(Debug, Clone)]
struct Candidate {
    job_id: Uuid,
    task_id: String,
    parent_id: String,
    stream: String,
    kind: Value,
    once: Option<Once>,
}

/// Remembers the fetches of the keyed tasks whose last part is among `parts`: the time
/// (now, UTC), the job, the task and its children. Nothing for tasks without a resource key.
///
/// # Errors
/// Database errors.
pub(super) async fn remember_fetches<R: Sync>(
    tx: &Transaction<'_>,
    parts: &[&RecordBatchOf<R>],
) -> Result<(), StoreError> {
    let last: Vec<&&RecordBatchOf<R>> = parts.iter().filter(|b| b.task_complete).collect();
    if last.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = last.iter().map(|b| b.task_id.as_str()).collect();
    let children: Vec<Value> = last
        .iter()
        .map(|b| {
            let stored: Vec<StoredChild> = b
                .children
                .iter()
                .map(|c| StoredChild {
                    stream: c.stream.clone(),
                    kind: serde_json::to_value(&c.kind).unwrap_or(Value::Null),
                    once: c.once.clone(),
                })
                .collect();
            serde_json::to_value(stored).unwrap_or(Value::Null)
        })
        .collect();
    crate::cached::execute(
        tx,
        "INSERT INTO sluice.fetched_resources
                (connector, account, destination, key, fetched_at, job_id, task_id, children)
         SELECT DISTINCT ON (j.connector, j.account, j.destination, t.resource_key)
                j.connector, j.account, j.destination, t.resource_key, now(), t.job_id, t.task_id, u.c
           FROM unnest($1::text[], $2::jsonb[]) WITH ORDINALITY AS u(id, c, o)
           JOIN sluice.tasks t ON t.task_id = u.id
           JOIN sluice.jobs j ON j.id = t.job_id
          WHERE t.resource_key IS NOT NULL
          ORDER BY j.connector, j.account, j.destination, t.resource_key, u.o DESC
         ON CONFLICT (connector, account, destination, key) DO UPDATE
            SET fetched_at = EXCLUDED.fetched_at, job_id = EXCLUDED.job_id,
                task_id = EXCLUDED.task_id, children = EXCLUDED.children",
        &[&ids, &children],
    )
    .await
    .context(|| format!("remembering the fetches of {} tasks", ids.len()))?;
    Ok(())
}

/// The once-per-resource children of a group of parts, fresh ones already replaced by
/// what they had: what [`record_keyed_children`] inserts. Computed by [`plan_keyed_children`]
/// before the job rows are locked (it only reads).
#[derive(Debug, Default)]
pub struct KeyedChildren(Vec<Candidate>);

/// The once-per-resource children (those with `once`) of `parts`, fresh ones replaced by
/// what they had ([`expand_fresh`]). Reads only: run it before locking the jobs, so the
/// lookups do not lengthen the time the job rows are held.
///
/// # Errors
/// Database errors.
pub async fn plan_keyed_children<R: Sync>(
    tx: &Transaction<'_>,
    parts: &[&RecordBatchOf<R>],
) -> Result<KeyedChildren, StoreError> {
    let keyed: Vec<Candidate> = parts
        .iter()
        .flat_map(|b| {
            b.children
                .iter()
                .filter(|c| c.once.is_some())
                .map(move |c| Candidate {
                    job_id: b.job_id,
                    task_id: c.task_id.clone(),
                    parent_id: b.task_id.clone(),
                    stream: c.stream.clone(),
                    kind: serde_json::to_value(&c.kind).unwrap_or(Value::Null),
                    once: c.once.clone(),
                })
        })
        .collect();
    if keyed.is_empty() {
        return Ok(KeyedChildren::default());
    }
    Ok(KeyedChildren(expand_fresh(tx, keyed).await?))
}

/// Records `planned` ([`plan_keyed_children`]) as pending, unpublished tasks (a task the
/// job has already is left alone), to be published by [`publish_outbox`]. Returns how many
/// new tasks were recorded per job.
///
/// # Errors
/// Database errors.
pub(super) async fn record_keyed_children(
    tx: &Transaction<'_>,
    planned: &KeyedChildren,
) -> Result<Vec<(Uuid, u64)>, StoreError> {
    let accepted = &planned.0;
    if accepted.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = accepted.iter().map(|c| c.task_id.as_str()).collect();
    let jobs: Vec<Uuid> = accepted.iter().map(|c| c.job_id).collect();
    let parents: Vec<&str> = accepted.iter().map(|c| c.parent_id.as_str()).collect();
    let streams: Vec<&str> = accepted.iter().map(|c| c.stream.as_str()).collect();
    let kinds: Vec<&Value> = accepted.iter().map(|c| &c.kind).collect();
    let keys: Vec<Option<&str>> = accepted
        .iter()
        .map(|c| c.once.as_ref().map(|o| o.key.as_str()))
        .collect();
    let rows = crate::cached::query(
        tx,
        "INSERT INTO sluice.tasks (task_id, job_id, parent_id, stream, kind, resource_key)
         SELECT t, j, p, s, k, r
           FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[])
                AS u(t, j, p, s, k, r)
          ORDER BY t
         ON CONFLICT (task_id) DO NOTHING RETURNING job_id",
        &[&ids, &jobs, &parents, &streams, &kinds, &keys],
    )
    .await
    .context(|| format!("recording {} keyed children", ids.len()))?;
    let mut added: Vec<(Uuid, u64)> = Vec::new();
    for r in rows {
        let job: Uuid = r.get(0);
        match added.iter_mut().find(|(j, _)| *j == job) {
            Some((_, n)) => *n += 1,
            None => added.push((job, 1)),
        }
    }
    Ok(added)
}

/// Replaces every candidate whose resource is fresh — fetched into its job's destination
/// for the job's connector and account less than its `fresh_for_seconds` ago — by the
/// children that fetch had (ids derived as the fetcher derives them, under the candidate's
/// id; keyed ones inheriting the candidate's `fresh_for_seconds`), and so on down, at most
/// [`MAX_DEPTH`] levels. Returns the candidates to record.
async fn expand_fresh(
    tx: &Transaction<'_>,
    mut frontier: Vec<Candidate>,
) -> Result<Vec<Candidate>, StoreError> {
    let mut accepted = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for depth in 0..MAX_DEPTH {
        frontier.retain(|c| seen.insert(c.task_id.clone()));
        let checks: Vec<(Uuid, &str, i64)> = frontier
            .iter()
            .filter_map(|c| {
                let o = c.once.as_ref()?;
                Some((c.job_id, o.key.as_str(), o.fresh_for_seconds? as i64))
            })
            .collect();
        if checks.is_empty() || depth + 1 == MAX_DEPTH {
            accepted.append(&mut frontier);
            break;
        }
        let mut fresh: HashMap<(Uuid, String), Value> = HashMap::new();
        let mut jobs: Vec<Uuid> = checks.iter().map(|c| c.0).collect();
        jobs.sort_unstable();
        jobs.dedup();
        for job in jobs {
            let keys: Vec<&str> = checks.iter().filter(|c| c.0 == job).map(|c| c.1).collect();
            let ages: Vec<i64> = checks.iter().filter(|c| c.0 == job).map(|c| c.2).collect();
            // One job at a time, so each key is one lookup of the primary key.
            let rows = crate::cached::query(
                tx,
                "SELECT r.key, r.children
                   FROM sluice.jobs j
                   CROSS JOIN unnest($2::text[], $3::int8[]) AS u(k, age)
                   JOIN sluice.fetched_resources r
                     ON r.connector = j.connector AND r.account = j.account
                    AND r.destination = j.destination AND r.key = u.k
                  WHERE j.id = $1 AND r.fetched_at > now() - make_interval(secs => u.age)",
                &[&job, &keys, &ages],
            )
            .await
            .context(|| format!("checking {} resources for freshness", keys.len()))?;
            for r in rows {
                fresh.insert((job, r.get(0)), r.get(1));
            }
        }
        let mut next = Vec::new();
        for c in frontier.drain(..) {
            let Some(children) = c
                .once
                .as_ref()
                .and_then(|o| fresh.get(&(c.job_id, o.key.clone())))
            else {
                accepted.push(c);
                continue;
            };
            let stored: Vec<StoredChild> =
                serde_json::from_value(children.clone()).unwrap_or_default();
            let inherited = c.once.as_ref().and_then(|o| o.fresh_for_seconds);
            for (i, child) in stored.into_iter().enumerate() {
                let once = child.once.map(|o| Once {
                    key: o.key,
                    fresh_for_seconds: inherited,
                });
                next.push(Candidate {
                    job_id: c.job_id,
                    task_id: match &once {
                        Some(o) => ids::keyed_task_id(c.job_id, &o.key),
                        None => ids::child_task_id(&c.task_id, i),
                    },
                    parent_id: c.task_id.clone(),
                    stream: child.stream,
                    kind: child.kind,
                    once,
                });
            }
        }
        frontier = next;
        if frontier.is_empty() {
            break;
        }
    }
    Ok(accepted)
}

/// Tasks published per outbox transaction. Their rows stay locked until it commits, and a
/// task fetched meanwhile cannot be settled (its row is locked): keep it short.
const OUTBOX_BATCH: i64 = 100;

/// Publishes recorded but unpublished tasks (of one job, or of every running job),
/// [`OUTBOX_BATCH`] per transaction, all of a batch at once through `publish` (so their
/// confirms are awaited together, not one after another), marking them published once
/// every one returned `Ok` (the publisher waits for the broker's confirm). Returns how
/// many were published. Several publishers (planners, loaders) never publish the same
/// task at once (`SKIP LOCKED`).
///
/// # Errors
/// Database errors or the first error of `publish`; tasks not marked are published again
/// by a later call.
pub async fn publish_outbox<F, Fut>(
    pool: &Pool,
    job_id: Option<Uuid>,
    mut publish: F,
) -> anyhow::Result<usize>
where
    F: FnMut(FetchTask) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut total = 0;
    loop {
        let mut client = pool.get().await?;
        let tx = client.transaction().await.context(|| "begin".into())?;
        let batch = unpublished_tasks(&tx, job_id, OUTBOX_BATCH).await?;
        if batch.is_empty() {
            return Ok(total);
        }
        let mut published = Vec::with_capacity(batch.len());
        let mut sends = Vec::with_capacity(batch.len());
        for t in &batch {
            let kind: TaskKind = match serde_json::from_value(t.kind.clone()) {
                Ok(k) => k,
                Err(e) => {
                    tracing::error!(task_id = %t.task_id, error = %e, "recorded task has an unreadable kind");
                    continue;
                }
            };
            sends.push(publish(FetchTask {
                v: sluice_contracts::MESSAGE_VERSION,
                task_id: t.task_id.clone(),
                job_id: t.job_id,
                connector: t.connector.clone(),
                stream: t.stream.clone(),
                account: t.account.clone(),
                kind,
                attempt: 1,
                params: t.params.clone(),
                once: None,
            }));
            published.push(t.task_id.clone());
        }
        futures::future::try_join_all(sends).await?;
        mark_published(&*tx, &published).await?;
        tx.commit().await.context(|| "commit".into())?;
        total += published.len();
        // A short batch was the last; a pass that published nothing (unreadable kinds, logged
        // above) must not spin.
        if (batch.len() as i64) < OUTBOX_BATCH || published.is_empty() {
            return Ok(total);
        }
    }
}
