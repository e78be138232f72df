//! The Klaviyo write: per table of the contract (`docs/klaviyo-sync.md`), objects chunked
//! by Klaviyo's limits into bulk jobs, each polled to a final state, each failed object a
//! reject with Klaviyo's error (see the module docs of `klaviyo`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::{Map, Value, json};
use sluice_contracts::{MergeSpec, RecordBatch, RejectedRecord};
use sluice_store::StoreError;
use sluice_store::ledger::PartWriter;
use sluice_store::load::{Changes, LoadOutcome};

use super::event_jobs::Event;
use super::service::{Answer, ApiError, Call, ImportError, Job, Service, Turn, first_poll_wait};
use super::{Klaviyo, MAX_CATALOG_JOBS_IN_PROGRESS};

/// Profiles, written with profile bulk import jobs.
pub const PROFILE_TABLE: &str = "klaviyo.profile";
/// Events, written with event bulk create jobs.
pub const EVENT_TABLE: &str = "klaviyo.event";
/// Catalog categories.
pub const CATEGORY_TABLE: &str = "klaviyo.catalog-category";
/// Catalog items.
pub const ITEM_TABLE: &str = "klaviyo.catalog-item";
/// Catalog variants.
pub const VARIANT_TABLE: &str = "klaviyo.catalog-variant";
/// Every table a `klaviyo` destination takes.
pub const TABLES: [&str; 5] = [
    PROFILE_TABLE,
    EVENT_TABLE,
    CATEGORY_TABLE,
    ITEM_TABLE,
    VARIANT_TABLE,
];

/// The columns a part may carry (`id` is required).
const COLUMNS: [&str; 5] = ["id", "attributes", "op", "relationships", "item_id"];

/// Profiles per profile bulk import job (`POST /api/profile-bulk-import-jobs`).
pub const MAX_PROFILES_PER_JOB: usize = 10_000;
/// Largest profile in a profile bulk import job, bytes of JSON (100 KB, read as the
/// smaller, decimal kilobytes).
pub const MAX_PROFILE_BYTES: usize = 100_000;
/// Events per event bulk create job (`POST /api/event-bulk-create-jobs`).
pub const MAX_EVENTS_PER_JOB: usize = 1_000;
/// Objects per catalog bulk job.
pub const MAX_CATALOG_PER_JOB: usize = 100;
/// Request body of any bulk job, bytes: Klaviyo's 5 MB (decimal, the smaller reading)
/// less room for the envelope.
pub const MAX_JOB_BYTES: usize = 5_000_000 - 64 * 1024;
/// Requests (with their polling) one write keeps in flight.
const CONCURRENCY: usize = 8;
/// Longest wait, in a variants write, for catalog items that another part is creating.
const ITEM_WAIT: Duration = Duration::from_secs(60);

/// A failed profile: its index, Klaviyo's error, whether that is about its phone number.
type ProfileFailure = (usize, String, bool);
/// Failed profiles, and failures no profile is named for.
type ProfileFailures = (Vec<ProfileFailure>, Vec<RejectedRecord>);
/// What [`post_isolating`] did: the requests accepted (positions and Klaviyo's
/// answer) and the positions refused, with why.
pub(super) type Posted = (Vec<(Vec<usize>, Option<Value>)>, Vec<(usize, String)>);
/// Builds a bulk request's body for some positions, with the positions each element of
/// its `data` list carries (to read `source.pointer`s back).
pub(super) type BuildBody<'a> = dyn Fn(&[usize]) -> (Value, Vec<Vec<usize>>) + Sync + 'a;
/// Rows refused as they are: part, row, why.
type Invalid = Vec<(usize, usize, String)>;

/// One object of a unit: the last row of its id.
#[derive(Debug, Clone)]
struct Obj {
    part: usize,
    row: usize,
    id: String,
    delete: bool,
    item_id: Option<String>,
    attributes: Value,
    relationships: Option<Value>,
}

/// What writing a unit's objects did.
#[derive(Debug, Default)]
struct Written {
    /// Objects refused, by index into the unit's objects, with Klaviyo's error.
    failed: Vec<(usize, String)>,
    /// Refusals that name no row of the unit (a variant deleted by the replace scope, a job
    /// error without a pointer).
    loose: Vec<RejectedRecord>,
    /// Created/updated/deleted, when Klaviyo tells (catalog jobs).
    changes: Option<Changes>,
}

#[async_trait::async_trait]
impl PartWriter for Klaviyo {
    async fn write(
        &self,
        units: &[Vec<&RecordBatch>],
    ) -> Result<Vec<Vec<LoadOutcome>>, StoreError> {
        // A unit's time is mostly waiting on Klaviyo (job lifecycles, polls, lookups, the
        // rate limiter), so the units of a group are written at once — except that a unit
        // sharing an object (or a variant-replacing item) with an earlier one waits for it,
        // so the later write of an object still lands last.
        let mut out: Vec<Vec<LoadOutcome>> = units.iter().map(|_| Vec::new()).collect();
        for wave in waves(units) {
            let written =
                futures::future::try_join_all(wave.iter().map(|&u| self.write_unit(&units[u])))
                    .await?;
            for (u, outcomes) in wave.into_iter().zip(written) {
                out[u] = outcomes;
            }
        }
        Ok(out)
    }
}

/// The units in waves, in order: each unit goes in the wave after the last one holding a
/// unit it shares a key with — an object id, or an item whose variants it replaces or
/// carries — so units within a wave touch nothing in common and the order of writes of
/// every key is the order of the units.
fn waves(units: &[Vec<&RecordBatch>]) -> Vec<Vec<usize>> {
    let mut last_wave: HashMap<String, usize> = HashMap::new();
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for (u, unit) in units.iter().enumerate() {
        let keys = unit_keys(unit);
        let wave = keys
            .iter()
            .filter_map(|k| last_wave.get(k).map(|w| w + 1))
            .max()
            .unwrap_or(0);
        for k in keys {
            last_wave.insert(k, wave);
        }
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push(u);
    }
    waves
}

/// What a unit writes to: `<table> <id>` of every row, and `item <id>` of every item whose
/// variants it carries or replaces.
fn unit_keys(unit: &[&RecordBatch]) -> HashSet<String> {
    let mut keys = HashSet::new();
    for batch in unit {
        let at = |name: &str| batch.columns.iter().position(|c| c == name);
        let (id_at, item_at) = (at("id"), at("item_id"));
        for row in &batch.rows {
            if let Some(id) = id_at.and_then(|i| row.get(i)) {
                keys.insert(format!("{} {id}", batch.table));
            }
            if let Some(item) = item_at.and_then(|i| row.get(i)).filter(|v| !v.is_null()) {
                keys.insert(format!("item {item}"));
            }
        }
        for k in &batch.merge.scope_keys {
            if let Some(item) = k.first() {
                keys.insert(format!("item {item}"));
            }
        }
    }
    keys
}

impl Klaviyo {
    fn schema_error(&self, message: String) -> StoreError {
        StoreError::Schema(format!("destination {} (klaviyo): {message}", self.name))
    }

    async fn write_unit(&self, unit: &[&RecordBatch]) -> Result<Vec<LoadOutcome>, StoreError> {
        let Some(first) = unit.first() else {
            return Ok(Vec::new());
        };
        let table = first.table.as_str();
        if !TABLES.contains(&table) {
            return Err(self.schema_error(format!(
                "takes the tables {} (docs/klaviyo-sync.md), not {table}",
                TABLES.join(", ")
            )));
        }
        let (objs, invalid) = self.objects(unit)?;
        let started = Instant::now();
        let mut written = Written::default();
        match table {
            PROFILE_TABLE => self.write_profiles(&objs, &mut written).await?,
            EVENT_TABLE => self.write_events(&objs, &mut written).await?,
            _ => {
                let kind = CatalogKind::of(table).unwrap_or(CatalogKind::Category);
                self.write_catalog(kind, &objs, &first.merge, &mut written)
                    .await?;
            }
        }
        tracing::debug!(destination = %self.name, table, objects = objs.len(), refused = written.failed.len(), seconds = started.elapsed().as_secs_f64(), "klaviyo write done");
        Ok(outcomes(table, unit, &objs, invalid, written))
    }

    /// The unit's objects (the last row of each id wins) and the rows refused as they are.
    fn objects(&self, unit: &[&RecordBatch]) -> Result<(Vec<Obj>, Invalid), StoreError> {
        let mut objs: Vec<Obj> = Vec::new();
        let mut by_id: HashMap<String, usize> = HashMap::new();
        let mut invalid = Vec::new();
        for (p, batch) in unit.iter().enumerate() {
            if let Some(unknown) = batch
                .columns
                .iter()
                .find(|c| !COLUMNS.contains(&c.as_str()))
            {
                return Err(self.schema_error(format!(
                    "{} has no column {unknown:?} (columns: {})",
                    batch.table,
                    COLUMNS.join(", ")
                )));
            }
            let at = |name: &str| batch.columns.iter().position(|c| c == name);
            let Some(id_at) = at("id") else {
                return Err(
                    self.schema_error(format!("a part of {} has no id column", batch.table))
                );
            };
            let (attributes_at, op_at, relationships_at, item_at) = (
                at("attributes"),
                at("op"),
                at("relationships"),
                at("item_id"),
            );
            for (r, row) in batch.rows.iter().enumerate() {
                let get = |i: Option<usize>| i.and_then(|i| row.get(i)).unwrap_or(&Value::Null);
                let obj = (|| {
                    let id = match get(Some(id_at)) {
                        Value::String(s) if !s.is_empty() => s.clone(),
                        other => return Err(format!("id must be a non-empty string, not {other}")),
                    };
                    let delete = match get(op_at) {
                        Value::Null => false,
                        Value::String(s) if s == "upsert" => false,
                        Value::String(s) if s == "delete" => true,
                        other => {
                            return Err(format!(
                                "op must be \"upsert\" or \"delete\", not {other}"
                            ));
                        }
                    };
                    let attributes = json_object(get(attributes_at));
                    if !delete && attributes.is_none() {
                        return Err("attributes must be a JSON object".to_string());
                    }
                    let relationships = json_object(get(relationships_at));
                    let item_id = get(item_at).as_str().map(str::to_string).or_else(|| {
                        relationships
                            .as_ref()
                            .and_then(|r| r.pointer("/item/data/id"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    });
                    Ok(Obj {
                        part: p,
                        row: r,
                        id,
                        delete,
                        item_id,
                        attributes: attributes.unwrap_or(Value::Null),
                        relationships,
                    })
                })();
                match obj {
                    Ok(obj) => match by_id.get(&obj.id) {
                        Some(&i) => objs[i] = obj,
                        None => {
                            by_id.insert(obj.id.clone(), objs.len());
                            objs.push(obj);
                        }
                    },
                    Err(why) => invalid.push((p, r, why)),
                }
            }
        }
        Ok((objs, invalid))
    }

    // ---- bulk requests -------------------------------------------------------------------

    /// [`post_isolating`] with this destination's client.
    async fn post_isolating(
        &self,
        call: &Call,
        path: &str,
        positions: Vec<usize>,
        build: &BuildBody<'_>,
    ) -> Result<Posted, StoreError> {
        post_isolating(&self.service, None, call, path, positions, build).await
    }

    // ---- profiles ------------------------------------------------------------------------

    async fn write_profiles(&self, objs: &[Obj], w: &mut Written) -> Result<(), StoreError> {
        let mut resources: Vec<Value> = objs
            .iter()
            .map(|o| json!({"type": "profile", "attributes": o.attributes}))
            .collect();
        let mut round = Vec::new();
        for (i, o) in objs.iter().enumerate() {
            if o.delete {
                w.failed.push((
                    i,
                    "Klaviyo profiles are not deleted by a sync (op \"delete\")".into(),
                ));
                continue;
            }
            let size = resources[i].to_string().len();
            if size > MAX_PROFILE_BYTES {
                w.failed.push((
                    i,
                    format!(
                        "the profile is {size} bytes of JSON, over Klaviyo's {MAX_PROFILE_BYTES}-byte limit per profile"
                    ),
                ));
            } else {
                round.push(i);
            }
        }
        // The plugin's fallback: a profile refused for its phone number goes once more
        // without it.
        for attempt in 0..2 {
            if round.is_empty() {
                break;
            }
            let (failures, loose) = self.profile_round(&resources, &round).await?;
            w.loose.extend(loose);
            round = Vec::new();
            for (i, error, phone) in failures {
                let has_phone = resources[i]
                    .pointer("/attributes/phone_number")
                    .is_some_and(|p| !p.is_null());
                if attempt == 0 && phone && has_phone {
                    if let Some(a) = resources[i]
                        .get_mut("attributes")
                        .and_then(Value::as_object_mut)
                    {
                        a.remove("phone_number");
                    }
                    tracing::debug!(destination = %self.name, id = %objs[i].id, %error, "profile refused for its phone number: sending it again without");
                    round.push(i);
                } else if attempt == 1 {
                    w.failed
                        .push((i, format!("{error} (sent again without its phone number)")));
                } else {
                    w.failed.push((i, error));
                }
            }
        }
        Ok(())
    }

    /// One round of profile import jobs; the profiles that failed, with the error and
    /// whether it is about the phone number, and the failures no profile is named for.
    async fn profile_round(
        &self,
        resources: &[Value],
        round: &[usize],
    ) -> Result<ProfileFailures, StoreError> {
        let chunks = chunk(round, MAX_PROFILES_PER_JOB, |i| {
            resources[i].to_string().len()
        });
        let build = |batch: &[usize]| {
            let data: Vec<&Value> = batch.iter().map(|&i| &resources[i]).collect();
            (
                json!({"data": {"type": "profile-bulk-import-job",
                    "attributes": {"profiles": {"data": data}}}}),
                batch.iter().map(|&i| vec![i]).collect(),
            )
        };
        let results: Vec<Result<ProfileFailures, StoreError>> = stream::iter(chunks)
            .map(|c| async move {
                let (accepted, refused) = self
                    .post_isolating(
                        &Call::create_profile_import_job(),
                        "/api/profile-bulk-import-jobs",
                        c,
                        &build,
                    )
                    .await?;
                let mut failures: Vec<ProfileFailure> = refused
                    .into_iter()
                    .map(|(i, why)| {
                        let phone = why.to_lowercase().contains("phone");
                        (i, why, phone)
                    })
                    .collect();
                let mut loose = Vec::new();
                for (batch, doc) in accepted {
                    let job = self.accepted_job(doc, "profile-bulk-import-jobs")?;
                    let job = self
                        .service
                        .poll(
                            &Call::get_profile_import_job(),
                            "profile-bulk-import-jobs",
                            job,
                            self.poll_interval,
                            self.poll_timeout,
                        )
                        .await?;
                    let (failed, unnamed) =
                        self.profile_job_failures(&job, &batch, resources).await?;
                    failures.extend(failed);
                    loose.extend(unnamed);
                }
                Ok((failures, loose))
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let (mut failures, mut loose) = (Vec::new(), Vec::new());
        for r in results {
            let (f, l) = r?;
            failures.extend(f);
            loose.extend(l);
        }
        Ok((failures, loose))
    }

    /// The failed profiles of a final profile import job, from its `import-errors`.
    async fn profile_job_failures(
        &self,
        job: &Job,
        batch: &[usize],
        resources: &[Value],
    ) -> Result<ProfileFailures, StoreError> {
        let mut failed: HashMap<usize, (Vec<String>, bool)> = HashMap::new();
        let mut unmatched: Vec<String> = Vec::new();
        if job.failed_count > 0 || job.status == "cancelled" {
            let errors = self.service.import_errors(&job.id).await?;
            let by = |field: &str| -> HashMap<String, usize> {
                batch
                    .iter()
                    .filter_map(|&i| {
                        resources[i]
                            .pointer(&format!("/attributes/{field}"))
                            .and_then(Value::as_str)
                            .map(|v| (v.to_string(), i))
                    })
                    .collect()
            };
            let (by_external_id, by_email) = (by("external_id"), by("email"));
            for ImportError {
                error,
                original_payload,
            } in errors
            {
                let payload = original_payload
                    .get("attributes")
                    .unwrap_or(&original_payload);
                let field = |k: &str| payload.get(k).and_then(Value::as_str);
                let found = field("external_id")
                    .and_then(|x| by_external_id.get(x))
                    .or_else(|| field("email").and_then(|e| by_email.get(e)))
                    .copied()
                    .or_else(|| {
                        let layout: Vec<Vec<usize>> = batch.iter().map(|&i| vec![i]).collect();
                        pointed(error.source.pointer.as_deref(), &layout)
                            .first()
                            .copied()
                    });
                match found {
                    Some(i) => {
                        let entry = failed.entry(i).or_default();
                        entry.0.push(error.describe());
                        entry.1 |= about_phone(&error);
                    }
                    None => unmatched.push(error.describe()),
                }
            }
            if job.status == "cancelled" {
                for &i in batch {
                    failed.entry(i).or_insert_with(|| {
                        (
                            vec![format!(
                                "profile bulk import job {} was cancelled by Klaviyo (completed {} of {})",
                                job.id, job.completed_count, job.total_count
                            )],
                            false,
                        )
                    });
                }
            }
        }
        // Failures Klaviyo counts but no import error ties to a profile of the job.
        let unaccounted = job.failed_count.saturating_sub(failed.len() as u64);
        let loose = if unaccounted > 0 || !unmatched.is_empty() {
            vec![RejectedRecord {
                source: format!("klaviyo: profile bulk import job {}", job.id),
                table: Some(PROFILE_TABLE.to_string()),
                error: format!(
                    "{unaccounted} of {} profiles failed without an import error naming them: {}",
                    job.total_count,
                    if unmatched.is_empty() {
                        "no error given".to_string()
                    } else {
                        unmatched.join("; ")
                    }
                ),
                raw: json!({"job_id": job.id, "failed_count": job.failed_count}),
            }]
        } else {
            Vec::new()
        };
        let failed = failed
            .into_iter()
            .map(|(i, (errors, phone))| {
                (
                    i,
                    format!(
                        "Klaviyo's profile import job {}: {}",
                        job.id,
                        errors.join("; ")
                    ),
                    phone,
                )
            })
            .collect();
        Ok((failed, loose))
    }

    /// The job of a bulk job's 202 answer.
    fn accepted_job(&self, doc: Option<Value>, collection: &str) -> Result<Job, StoreError> {
        doc.as_ref()
            .ok_or_else(|| "an empty answer".to_string())
            .and_then(Job::decode)
            .map_err(|why| StoreError::Destination {
                message: format!(
                    "destination {} (klaviyo): POST /api/{collection}: the answer is not a job: {why}",
                    self.name
                ),
                transient: true,
            })
    }

    // ---- events --------------------------------------------------------------------------

    async fn write_events(&self, objs: &[Obj], w: &mut Written) -> Result<(), StoreError> {
        // Per event: its profile (the group key) and the event resource without it.
        let mut events: Vec<Option<(String, Value, Value)>> = Vec::with_capacity(objs.len());
        let mut positions = Vec::new();
        for (i, o) in objs.iter().enumerate() {
            let mut attributes = match (&o.attributes, o.delete) {
                (Value::Object(a), false) => a.clone(),
                _ => {
                    w.failed
                        .push((i, "Klaviyo events cannot be deleted (op \"delete\")".into()));
                    events.push(None);
                    continue;
                }
            };
            let Some(profile) = attributes
                .remove("profile")
                .and_then(|p| p.get("data").cloned())
                .filter(Value::is_object)
            else {
                w.failed.push((
                    i,
                    "attributes.profile.data is missing: an event needs its profile".into(),
                ));
                events.push(None);
                continue;
            };
            events.push(Some((
                profile.to_string(),
                profile,
                json!({"type": "event", "attributes": attributes}),
            )));
            positions.push(i);
        }
        // Events of one profile go together: one element of the job per profile.
        positions.sort_by(|&a, &b| {
            let key = |i: usize| events[i].as_ref().map(|e| e.0.as_str());
            key(a).cmp(&key(b)).then(a.cmp(&b))
        });
        let ready: Vec<Event> = positions
            .into_iter()
            .filter_map(|i| {
                events[i].take().map(|(key, profile, resource)| Event {
                    origin: i,
                    key,
                    profile,
                    resource,
                })
            })
            .collect();
        // In jobs shared with the other event writes in flight (`event_jobs`).
        w.failed.extend(self.event_jobs.write(ready).await?);
        Ok(())
    }

    // ---- catalog -------------------------------------------------------------------------

    async fn write_catalog(
        &self,
        kind: CatalogKind,
        objs: &[Obj],
        merge: &MergeSpec,
        w: &mut Written,
    ) -> Result<(), StoreError> {
        let upserts: Vec<usize> = (0..objs.len()).filter(|&i| !objs[i].delete).collect();
        let deletes: Vec<usize> = (0..objs.len()).filter(|&i| objs[i].delete).collect();
        let replaces_variants = kind == CatalogKind::Variant
            && merge.replace_scope.as_deref() == Some(&["item_id".to_string()][..]);
        // The three lookups ask different things of Klaviyo and none needs another's
        // answer, so they go at once: each is a round trip or more that the part would
        // otherwise wait for in turn.
        let with_items = async {
            if kind == CatalogKind::Variant {
                self.variants_with_items(objs, &upserts).await
            } else {
                Ok((upserts.clone(), Vec::new()))
            }
        };
        // Variants of the part's items that the part does not carry (a products job).
        let gone = async {
            if !replaces_variants {
                return Ok(Vec::new());
            }
            let mut items: Vec<String> = merge
                .scope_keys
                .iter()
                .filter_map(|k| k.first().and_then(Value::as_str).map(str::to_string))
                .collect();
            items.extend(objs.iter().filter_map(|o| o.item_id.clone()));
            items.sort_unstable();
            items.dedup();
            let carried: HashSet<&str> = objs.iter().map(|o| o.id.as_str()).collect();
            let items: Vec<&str> = items.iter().map(String::as_str).collect();
            let listed = self.service.items_variants(&items).await?;
            // In the part's item order, so the delete jobs are the same from run to run.
            let gone: Vec<String> = items
                .iter()
                .filter_map(|item| listed.get(*item))
                .flatten()
                .filter(|v| !carried.contains(v.as_str()))
                .cloned()
                .collect();
            Ok::<_, StoreError>(gone)
        };
        // Every id of the part, even a variant's whose item turns out missing: asking for
        // one id too many costs nothing, waiting for the items first would.
        let ids: Vec<&str> = objs.iter().map(|o| o.id.as_str()).collect();
        let existing = self.service.existing(kind.collection(), &ids);
        let ((upserts, orphans), gone, existing) =
            futures::future::try_join3(with_items, gone, existing).await?;
        w.failed.extend(orphans);

        let (updates, creates): (Vec<usize>, Vec<usize>) = upserts
            .iter()
            .partition(|&&i| existing.contains(&objs[i].id));
        let mut to_delete: Vec<Target> = deletes
            .iter()
            .filter(|&&i| existing.contains(&objs[i].id))
            .map(|&i| Target::row(i, &objs[i]))
            .collect();
        to_delete.extend(gone.into_iter().map(|id| Target { obj: None, id }));

        let mut changes = Changes::default();
        let create_targets: Vec<Target> =
            creates.iter().map(|&i| Target::row(i, &objs[i])).collect();
        let update_targets: Vec<Target> =
            updates.iter().map(|&i| Target::row(i, &objs[i])).collect();
        // Creates, updates and deletes act on different ids (a part carries the last row
        // of each id, and the replace scope deletes only ids it does not carry), so no job
        // waits for another's.
        let (created, updated, deleted) = futures::future::try_join3(
            self.catalog_jobs(kind, Action::Create, objs, &create_targets),
            self.catalog_jobs(kind, Action::Update, objs, &update_targets),
            self.catalog_jobs(kind, Action::Delete, objs, &to_delete),
        )
        .await?;
        changes.inserted = created.completed;
        changes.updated = updated.completed;
        self.settle_targets(kind, &update_targets, updated, w);

        // A create refused because the object exists by now (a write of the same part
        // before a crash, still queued when the ids were looked up) becomes an update.
        let failed_creates: Vec<(Target, String)> = created
            .failed
            .iter()
            .map(|(p, why)| (create_targets[*p].clone(), why.clone()))
            .collect();
        if !failed_creates.is_empty() {
            let ids: Vec<&str> = failed_creates.iter().map(|(t, _)| t.id.as_str()).collect();
            let now = self.service.existing(kind.collection(), &ids).await?;
            let (retry, refused): (Vec<_>, Vec<_>) = failed_creates
                .into_iter()
                .partition(|(t, _)| now.contains(&t.id));
            for (t, why) in refused {
                self.refuse(kind, t, why, w);
            }
            let retry: Vec<Target> = retry.into_iter().map(|(t, _)| t).collect();
            let again = self
                .catalog_jobs(kind, Action::Update, objs, &retry)
                .await?;
            changes.updated += again.completed;
            self.settle_targets(kind, &retry, again, w);
        }
        w.loose.extend(created.loose);

        changes.deleted = deleted.completed;
        if !deleted.failed.is_empty() {
            // A delete that failed because the object is gone already did its work.
            let ids: Vec<&str> = deleted
                .failed
                .iter()
                .map(|(p, _)| to_delete[*p].id.as_str())
                .collect();
            let still = self.service.existing(kind.collection(), &ids).await?;
            for (p, why) in &deleted.failed {
                if still.contains(&to_delete[*p].id) {
                    self.refuse(kind, to_delete[*p].clone(), why.clone(), w);
                }
            }
        }
        w.loose.extend(deleted.loose);
        w.changes = Some(changes);
        Ok(())
    }

    /// Records the failures of `targets`' jobs.
    fn settle_targets(
        &self,
        kind: CatalogKind,
        targets: &[Target],
        done: JobsDone,
        w: &mut Written,
    ) {
        for (p, why) in done.failed {
            self.refuse(kind, targets[p].clone(), why, w);
        }
        w.loose.extend(done.loose);
    }

    fn refuse(&self, kind: CatalogKind, target: Target, why: String, w: &mut Written) {
        match target.obj {
            Some(i) => w.failed.push((i, why)),
            None => w.loose.push(RejectedRecord {
                source: format!("klaviyo: {} {}", kind.table(), target.id),
                table: Some(kind.table().to_string()),
                error: format!("deleting a variant the item no longer has: {why}"),
                raw: json!({"id": target.id}),
            }),
        }
    }

    /// The variants whose catalog item exists, waiting up to [`ITEM_WAIT`] for items another
    /// part is creating (parts are loaded concurrently, the items of a products job beside
    /// its variants), and the others refused with why. The wait between lookups starts
    /// short and doubles up to the poll interval, as job polls do.
    async fn variants_with_items(
        &self,
        objs: &[Obj],
        upserts: &[usize],
    ) -> Result<(Vec<usize>, Vec<(usize, String)>), StoreError> {
        let mut items: Vec<&str> = upserts
            .iter()
            .filter_map(|&i| objs[i].item_id.as_deref())
            .collect();
        items.sort_unstable();
        items.dedup();
        let started = Instant::now();
        let wait = ITEM_WAIT.min(self.poll_timeout);
        let mut pause = first_poll_wait(self.poll_interval);
        let mut found: HashSet<String> = HashSet::new();
        loop {
            let missing: Vec<&str> = items
                .iter()
                .copied()
                .filter(|i| !found.contains(*i))
                .collect();
            if missing.is_empty() {
                break;
            }
            found.extend(self.service.existing("catalog-items", &missing).await?);
            if missing.iter().all(|i| found.contains(*i)) || started.elapsed() >= wait {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.poll_interval);
        }
        let (mut keep, mut refused) = (Vec::new(), Vec::new());
        for &i in upserts {
            match objs[i].item_id.as_deref() {
                Some(item) if found.contains(item) => keep.push(i),
                Some(item) => refused.push((
                    i,
                    format!(
                        "its catalog item {item} is not in Klaviyo (waited {} s): push the products' items first, or see why the item was rejected",
                        wait.as_secs()
                    ),
                )),
                None => refused.push((
                    i,
                    "a variant needs its item: item_id or relationships.item.data.id".into(),
                )),
            }
        }
        Ok((keep, refused))
    }

    /// Runs `targets` through `action` bulk jobs of `kind` (at most 100 and 5 MB each, at
    /// most [`MAX_CATALOG_JOBS_IN_PROGRESS`] in progress across the loaders), each polled
    /// to a final state.
    async fn catalog_jobs(
        &self,
        kind: CatalogKind,
        action: Action,
        objs: &[Obj],
        targets: &[Target],
    ) -> Result<JobsDone, StoreError> {
        if targets.is_empty() {
            return Ok(JobsDone::default());
        }
        let resources: Vec<Value> = targets
            .iter()
            .map(|t| kind.resource(action, &t.id, t.obj.map(|i| &objs[i])))
            .collect();
        let positions: Vec<usize> = (0..targets.len()).collect();
        let chunks = chunk(&positions, MAX_CATALOG_PER_JOB, |p| {
            resources[p].to_string().len()
        });
        let collection = kind.job_collection(action);
        let list = kind.list_key();
        let job_type = kind.job_type(action);
        let build = |batch: &[usize]| {
            let data: Vec<&Value> = batch.iter().map(|&p| &resources[p]).collect();
            (
                json!({"data": {"type": job_type, "attributes": {list: {"data": data}}}}),
                batch.iter().map(|&p| vec![p]).collect(),
            )
        };
        let path = format!("/api/{collection}");
        let results: Vec<Result<JobsDone, StoreError>> = stream::iter(chunks)
            .map(|c| {
                let (collection, path, build) = (&collection, &path, &build);
                async move {
                    // Each job holds one permit per loader, so the loaders together keep
                    // within Klaviyo's limit of jobs in progress.
                    let share = self
                        .replicas
                        .load(Ordering::Relaxed)
                        .clamp(1, MAX_CATALOG_JOBS_IN_PROGRESS);
                    let _permits = self.catalog_jobs.acquire_many(share).await.map_err(|_| {
                        StoreError::Destination {
                            message: format!("destination {}: shutting down", self.name),
                            transient: true,
                        }
                    })?;
                    let (accepted, refused) = self
                        .post_isolating(&Call::create_catalog_job(collection), path, c, build)
                        .await?;
                    let mut done = JobsDone {
                        failed: refused,
                        ..JobsDone::default()
                    };
                    for (batch, doc) in accepted {
                        let job = self.accepted_job(doc, collection)?;
                        let job = self
                            .service
                            .poll(
                                &Call::get_catalog_job(collection),
                                collection,
                                job,
                                self.poll_interval,
                                self.poll_timeout,
                            )
                            .await?;
                        done.add_job(&job, &batch, kind, action);
                    }
                    Ok(done)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut all = JobsDone::default();
        for r in results {
            let r = r?;
            all.completed += r.completed;
            all.failed.extend(r.failed);
            all.loose.extend(r.loose);
        }
        Ok(all)
    }
}

/// An object a catalog job acts on: a row of the unit, or (deletes of the replace scope)
/// an id only.
#[derive(Debug, Clone)]
struct Target {
    obj: Option<usize>,
    id: String,
}

impl Target {
    fn row(i: usize, obj: &Obj) -> Self {
        Self {
            obj: Some(i),
            id: obj.id.clone(),
        }
    }
}

/// What a run of catalog jobs did: positions are into its targets.
#[derive(Debug, Default)]
struct JobsDone {
    completed: u64,
    failed: Vec<(usize, String)>,
    loose: Vec<RejectedRecord>,
}

impl JobsDone {
    /// Adds a final job over `batch` (positions): its `errors[]` by `source.pointer`; a job
    /// cancelled, or failures no error names, fail the positions not otherwise accounted.
    fn add_job(&mut self, job: &Job, batch: &[usize], kind: CatalogKind, action: Action) {
        self.completed += job.completed_count;
        let layout: Vec<Vec<usize>> = batch.iter().map(|&p| vec![p]).collect();
        let mut named: HashMap<usize, Vec<String>> = HashMap::new();
        let mut unnamed: Vec<String> = Vec::new();
        for e in &job.errors {
            let at = pointed(e.source.pointer.as_deref(), &layout);
            if at.is_empty() {
                unnamed.push(e.describe());
            }
            for p in at {
                named.entry(p).or_default().push(e.describe());
            }
        }
        let what = format!(
            "catalog {} bulk {} job {}",
            kind.noun(),
            action.verb(),
            job.id
        );
        let unaccounted = job.failed_count.saturating_sub(named.len() as u64);
        if job.status == "cancelled"
            || (unaccounted > 0 && unaccounted as usize >= batch.len() - named.len())
        {
            // Every object without an error of its own may have failed.
            let why = if job.status == "cancelled" {
                format!(
                    "{what} was cancelled by Klaviyo (completed {} of {})",
                    job.completed_count, job.total_count
                )
            } else {
                format!(
                    "{what} failed: {}",
                    if unnamed.is_empty() {
                        "Klaviyo gave no error".to_string()
                    } else {
                        unnamed.join("; ")
                    }
                )
            };
            for &p in batch {
                named.entry(p).or_insert_with(|| vec![why.clone()]);
            }
        } else if unaccounted > 0 || !unnamed.is_empty() {
            self.loose.push(RejectedRecord {
                source: format!("klaviyo: {what}"),
                table: Some(kind.table().to_string()),
                error: format!(
                    "{unaccounted} of {} objects failed without naming which: {}",
                    job.total_count,
                    unnamed.join("; ")
                ),
                raw: json!({"job_id": job.id, "failed_count": job.failed_count}),
            });
        }
        for (p, why) in named {
            self.failed.push((p, format!("{what}: {}", why.join("; "))));
        }
    }
}

/// POSTs `positions` with `build` (the body and, per element of its `data` list, the
/// positions it carries), isolating what Klaviyo refuses: the positions a refusal's
/// `source.pointer` names are refused and the rest sent again; a refusal naming none is
/// split in halves (a single position is refused with it). Returns the accepted
/// requests (positions and answer) and the refused positions. `turn`, if taken, is spent
/// by the first request.
pub(super) async fn post_isolating(
    service: &Service,
    turn: Option<Turn>,
    call: &Call,
    path: &str,
    positions: Vec<usize>,
    build: &BuildBody<'_>,
) -> Result<Posted, StoreError> {
    let mut accepted = Vec::new();
    let mut refused: Vec<(usize, String)> = Vec::new();
    let mut pending = vec![positions];
    let mut turn = turn;
    while let Some(batch) = pending.pop() {
        if batch.is_empty() {
            continue;
        }
        let (body, layout) = build(&batch);
        match service
            .send_in_turn(turn.take(), call, Method::POST, path, Some(&body))
            .await?
        {
            Answer::Ok(doc) => accepted.push((batch, doc)),
            Answer::NotFound => {
                return Err(service.error(format!("POST {path}: Klaviyo answered 404"), false));
            }
            Answer::Refused {
                status,
                errors,
                detail,
            } => {
                let mut named: HashMap<usize, Vec<String>> = HashMap::new();
                for e in &errors {
                    for p in pointed(e.source.pointer.as_deref(), &layout) {
                        named.entry(p).or_default().push(e.describe());
                    }
                }
                if !named.is_empty() {
                    let rest: Vec<usize> = batch
                        .iter()
                        .copied()
                        .filter(|p| !named.contains_key(p))
                        .collect();
                    refused.extend(named.into_iter().map(|(p, why)| {
                        (
                            p,
                            format!("Klaviyo refused it ({status}): {}", why.join("; ")),
                        )
                    }));
                    pending.push(rest);
                } else if batch.len() == 1 {
                    refused.push((batch[0], format!("Klaviyo refused it ({status}): {detail}")));
                } else {
                    let half = batch.len() / 2;
                    pending.push(batch[half..].to_vec());
                    pending.push(batch[..half].to_vec());
                }
            }
        }
    }
    Ok((accepted, refused))
}

/// A bulk job action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// The three catalog resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CatalogKind {
    Category,
    Item,
    Variant,
}

/// Attributes an update job takes (`Catalog*UpdateQueryResourceObject`); create-only
/// ones (`external_id`, `integration_type`, `catalog_type`) are left out.
const ITEM_UPDATE: &[&str] = &[
    "title",
    "price",
    "description",
    "url",
    "image_full_url",
    "image_thumbnail_url",
    "images",
    "custom_metadata",
    "published",
];
const VARIANT_UPDATE: &[&str] = &[
    "title",
    "description",
    "sku",
    "inventory_policy",
    "inventory_quantity",
    "price",
    "url",
    "image_full_url",
    "image_thumbnail_url",
    "images",
    "custom_metadata",
    "published",
];
const CATEGORY_UPDATE: &[&str] = &["name"];

impl CatalogKind {
    fn of(table: &str) -> Option<Self> {
        match table {
            CATEGORY_TABLE => Some(Self::Category),
            ITEM_TABLE => Some(Self::Item),
            VARIANT_TABLE => Some(Self::Variant),
            _ => None,
        }
    }
    fn table(self) -> &'static str {
        match self {
            Self::Category => CATEGORY_TABLE,
            Self::Item => ITEM_TABLE,
            Self::Variant => VARIANT_TABLE,
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Self::Category => "category",
            Self::Item => "item",
            Self::Variant => "variant",
        }
    }
    /// The JSON:API type (`catalog-item`).
    fn resource_type(self) -> String {
        format!("catalog-{}", self.noun())
    }
    /// The collection (`catalog-items`), for lookups.
    fn collection(self) -> &'static str {
        match self {
            Self::Category => "catalog-categories",
            Self::Item => "catalog-items",
            Self::Variant => "catalog-variants",
        }
    }
    /// The key of the objects in a bulk job (`items`).
    fn list_key(self) -> &'static str {
        match self {
            Self::Category => "categories",
            Self::Item => "items",
            Self::Variant => "variants",
        }
    }
    /// `catalog-item-bulk-create-jobs`.
    fn job_collection(self, action: Action) -> String {
        format!("catalog-{}-bulk-{}-jobs", self.noun(), action.verb())
    }
    /// `catalog-item-bulk-create-job`.
    fn job_type(self, action: Action) -> String {
        format!("catalog-{}-bulk-{}-job", self.noun(), action.verb())
    }
    /// The object as `action`'s job takes it.
    fn resource(self, action: Action, id: &str, obj: Option<&Obj>) -> Value {
        let kind = self.resource_type();
        let (attributes, relationships) = match obj {
            Some(o) => (o.attributes.clone(), o.relationships.clone()),
            None => (Value::Null, None),
        };
        match action {
            Action::Delete => json!({"type": kind, "id": id}),
            Action::Create => {
                let mut r = json!({"type": kind, "attributes": attributes});
                if let Some(rel) = relationships {
                    r["relationships"] = rel;
                }
                r
            }
            Action::Update => {
                let allowed = match self {
                    Self::Category => CATEGORY_UPDATE,
                    Self::Item => ITEM_UPDATE,
                    Self::Variant => VARIANT_UPDATE,
                };
                let attributes: Map<String, Value> = attributes
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| allowed.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let mut r = json!({"type": kind, "id": id, "attributes": attributes});
                // An item's categories can be updated; a variant's item cannot change.
                if self == Self::Item
                    && let Some(categories) =
                        relationships.and_then(|r| r.get("categories").cloned())
                {
                    r["relationships"] = json!({"categories": categories});
                }
                r
            }
        }
    }
}

/// The positions a JSON pointer into a bulk body names: `/data/attributes/<list>/data/<g>…`
/// names `layout[g]`, and `…/<g>/attributes/events/data/<j>…` (events of a profile) only
/// `layout[g][j]`. Empty when it names none.
fn pointed(pointer: Option<&str>, layout: &[Vec<usize>]) -> Vec<usize> {
    let Some(pointer) = pointer else {
        return Vec::new();
    };
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    if parts.len() < 5 || parts[0] != "data" || parts[1] != "attributes" || parts[3] != "data" {
        return Vec::new();
    }
    let Some(group) = parts[4].parse::<usize>().ok().and_then(|g| layout.get(g)) else {
        return Vec::new();
    };
    if parts.len() >= 9
        && parts[5] == "attributes"
        && parts[6] == "events"
        && parts[7] == "data"
        && let Some(&p) = parts[8].parse::<usize>().ok().and_then(|j| group.get(j))
    {
        return vec![p];
    }
    group.clone()
}

/// Whether an error is about the profile's phone number.
fn about_phone(e: &ApiError) -> bool {
    e.source
        .pointer
        .as_deref()
        .is_some_and(|p| p.contains("phone_number"))
        || format!("{} {} {}", e.code, e.title, e.detail)
            .to_lowercase()
            .contains("phone")
}

/// `positions` cut into runs of at most `max` whose sizes (`size`, bytes, plus a comma
/// each) add up to at most [`MAX_JOB_BYTES`].
fn chunk(positions: &[usize], max: usize, size: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for &p in positions {
        let s = size(p) + 1;
        if !current.is_empty() && (current.len() >= max || bytes + s > MAX_JOB_BYTES) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(p);
        bytes += s;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A JSON object column's value: an object, or a string holding one.
fn json_object(v: &Value) -> Option<Value> {
    match v {
        Value::Object(_) => Some(v.clone()),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object),
        _ => None,
    }
}

/// Per part: rows written and rows refused (invalid rows, and objects Klaviyo refused, on
/// the part of their row); refusals naming no row go on the last part, and the changes on
/// the last part (zeros on the others), as `load_units` does.
fn outcomes(
    table: &str,
    unit: &[&RecordBatch],
    objs: &[Obj],
    invalid: Invalid,
    written: Written,
) -> Vec<LoadOutcome> {
    let mut out: Vec<LoadOutcome> = unit
        .iter()
        .map(|b| LoadOutcome {
            rows: b.rows.len() as u64,
            ..LoadOutcome::default()
        })
        .collect();
    let mut failed: HashMap<usize, Vec<String>> = HashMap::new();
    for (i, why) in written.failed {
        failed.entry(i).or_default().push(why);
    }
    let mut refused: Vec<(usize, usize, String)> = invalid;
    refused.extend(
        failed
            .into_iter()
            .map(|(i, why)| (objs[i].part, objs[i].row, why.join("; "))),
    );
    refused.sort_by_key(|(p, r, _)| (*p, *r));
    for (p, r, error) in refused {
        let batch = unit[p];
        let raw: Map<String, Value> = batch
            .columns
            .iter()
            .cloned()
            .zip(batch.rows[r].iter().cloned())
            .collect();
        let id = batch.rows[r]
            .get(batch.columns.iter().position(|c| c == "id").unwrap_or(0))
            .and_then(Value::as_str)
            .unwrap_or("?");
        out[p].rows = out[p].rows.saturating_sub(1);
        out[p].rejected.push(RejectedRecord {
            source: format!("klaviyo: {table} {id}"),
            table: Some(table.to_string()),
            error,
            raw: Value::Object(raw),
        });
    }
    for o in &mut out {
        o.written = o.rows;
    }
    if let Some(last) = out.last_mut() {
        last.rejected.extend(written.loose);
    }
    if let Some(changes) = written.changes {
        for o in &mut out {
            o.changes = Some(Changes::default());
        }
        if let Some(last) = out.last_mut() {
            last.changes = Some(changes);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pointers_name_objects_and_events() {
        let layout = vec![vec![7], vec![3, 4, 5]];
        assert_eq!(
            pointed(
                Some("/data/attributes/items/data/0/attributes/title"),
                &layout
            ),
            vec![7]
        );
        assert_eq!(
            pointed(
                Some("/data/attributes/events-bulk-create/data/1/attributes/profile/data"),
                &layout
            ),
            vec![3, 4, 5]
        );
        assert_eq!(
            pointed(
                Some(
                    "/data/attributes/events-bulk-create/data/1/attributes/events/data/2/attributes/time"
                ),
                &layout
            ),
            vec![5]
        );
        assert!(pointed(Some("/data/attributes/items/data/9"), &layout).is_empty());
        assert!(pointed(Some("/data"), &layout).is_empty());
        assert!(pointed(None, &layout).is_empty());
    }

    #[test]
    fn units_sharing_an_object_or_an_item_go_in_later_waves() {
        let part = super::super::tests::batch;
        let items = |ids: &[&str]| {
            part(
                ITEM_TABLE,
                &["id"],
                ids.iter().map(|i| vec![json!(i)]).collect(),
            )
        };
        let variants = |rows: &[(&str, &str)]| {
            part(
                VARIANT_TABLE,
                &["id", "item_id"],
                rows.iter().map(|(v, i)| vec![json!(v), json!(i)]).collect(),
            )
        };
        let a = items(&["I1", "I2"]);
        let b = items(&["I3"]);
        let c = items(&["I2", "I4"]);
        let d = variants(&[("V1", "I1")]);
        // Carries no variant of I1 but replaces its variants (they are all gone).
        let mut e = variants(&[]);
        e.merge.replace_scope = Some(vec!["item_id".into()]);
        e.merge.scope_keys = vec![vec![json!("I1")]];
        let f = variants(&[("V2", "I5")]);
        // The same id in another table is another object.
        let g = part(CATEGORY_TABLE, &["id"], vec![vec![json!("I2")]]);
        let units: Vec<Vec<&RecordBatch>> = [&a, &b, &c, &d, &e, &f, &g]
            .into_iter()
            .map(|p| vec![p])
            .collect();
        assert_eq!(waves(&units), vec![vec![0, 1, 3, 5, 6], vec![2, 4]]);
        // A third write of I4 waits for the second.
        let h = items(&["I4"]);
        let mut more = units.clone();
        more.push(vec![&h]);
        assert_eq!(waves(&more), vec![vec![0, 1, 3, 5, 6], vec![2, 4], vec![7]]);
    }

    #[test]
    fn chunks_respect_count_and_bytes() {
        let positions: Vec<usize> = (0..250).collect();
        let by_count = chunk(&positions, 100, |_| 10);
        assert_eq!(
            by_count.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        let big = MAX_JOB_BYTES / 3;
        let by_bytes = chunk(&positions[..7], 100, |_| big);
        assert_eq!(
            by_bytes.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 2, 1]
        );
        assert!(chunk(&[], 100, |_| 1).is_empty());
    }

    #[test]
    fn updates_leave_out_create_only_attributes() {
        let obj = Obj {
            part: 0,
            row: 0,
            id: "$custom:::$default:::P1".into(),
            delete: false,
            item_id: None,
            attributes: json!({"external_id": "P1", "title": "T", "integration_type": "$custom", "url": "u"}),
            relationships: Some(
                json!({"categories": {"data": [{"type": "catalog-category", "id": "C"}]}}),
            ),
        };
        let update = CatalogKind::Item.resource(Action::Update, &obj.id, Some(&obj));
        assert_eq!(
            update,
            json!({"type": "catalog-item", "id": "$custom:::$default:::P1",
                   "attributes": {"title": "T", "url": "u"},
                   "relationships": {"categories": {"data": [{"type": "catalog-category", "id": "C"}]}}})
        );
        let create = CatalogKind::Item.resource(Action::Create, &obj.id, Some(&obj));
        assert_eq!(create["attributes"]["external_id"], "P1");
        assert!(create.get("id").is_none());
        let variant = CatalogKind::Variant.resource(
            Action::Update,
            "V",
            Some(&Obj {
                relationships: Some(json!({"item": {"data": {"type": "catalog-item", "id": "I"}}})),
                ..obj.clone()
            }),
        );
        assert!(variant.get("relationships").is_none());
        assert_eq!(
            CatalogKind::Category.resource(Action::Delete, "C", None),
            json!({"type": "catalog-category", "id": "C"})
        );
    }
}
