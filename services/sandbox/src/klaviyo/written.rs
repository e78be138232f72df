//! What was written through the emulated write endpoints, on top of the generated account:
//! profiles (new ones, and changes to generated ones), metrics created by name, the
//! deduplication keys of written events, catalog items, variants and categories, and bulk
//! jobs with their lifecycle. The HTTP side is `api/{profile_writes,event_writes,catalogs,
//! bulk_jobs}.rs`; the written events themselves live with the appended ones (so
//! `GET /api/events` serves them).
//!
//! All times are UTC: epoch seconds unless a name says `_ms`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::data::fmt_time;

/// How bulk jobs (profile import and catalog jobs) go through their lifecycle: `queued` for
/// `queued_ms`, then `processing` for `processing_ms`, then `complete` (their writes become
/// visible at that moment, in the order the jobs were created) or `cancelled` (nothing
/// written). Part of [`KlaviyoConfig`](super::KlaviyoConfig) as `jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobTiming {
    /// Milliseconds a new job stays `queued`.
    pub queued_ms: u64,
    /// Milliseconds it then stays `processing`.
    pub processing_ms: u64,
    /// Share (0..=1) of catalog bulk jobs that end `cancelled` instead of `complete`, decided
    /// by a hash of the job's number (so a run sees the same jobs cancelled).
    pub cancelled_share: f64,
}

impl Default for JobTiming {
    fn default() -> Self {
        JobTiming {
            queued_ms: 50,
            processing_ms: 100,
            cancelled_share: 0.0,
        }
    }
}

/// Profile attributes a write may set (the `ProfileImportJobCreateQuery` /
/// `ProfileUpsertQueryResourceObject` attributes of `profiles.json`, without `_kx` and `meta`).
pub(crate) const PROFILE_FIELDS: &[&str] = &[
    "email",
    "phone_number",
    "external_id",
    "anonymous_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
];

/// The members of a profile's `location`.
pub(crate) const LOCATION_FIELDS: &[&str] = &[
    "address1",
    "address2",
    "city",
    "country",
    "latitude",
    "longitude",
    "region",
    "zip",
    "timezone",
    "ip",
];

/// The identifiers a profile is found by, in the order a write looks them up.
pub(crate) const IDENTIFIERS: &[&str] = &["email", "phone_number", "external_id"];

/// A profile created by a write.
#[derive(Clone, Debug)]
pub(crate) struct WrittenProfile {
    /// A ULID like the generated ones (creation milliseconds first).
    pub id: String,
    /// What was written, merged ([`merge_profile`]): [`PROFILE_FIELDS`], `location`,
    /// `properties`.
    pub attributes: Map<String, Value>,
    pub created: i64,
    pub updated: i64,
    /// Time of its latest event, if it has one.
    pub last_event: Option<i64>,
}

/// A metric created by an event naming it.
#[derive(Clone, Debug)]
pub(crate) struct WrittenMetric {
    pub id: String,
    pub name: String,
    pub created: i64,
}

/// Where a written event is kept among the appended ones: `(metric index, timestamp, seq)`.
pub(crate) type EventRef = (usize, i64, u64);

/// Merges `patch` into profile attributes `into`, as `POST /api/profile-import` does: an
/// omitted field is kept, `null` clears it; `location` and `properties` are merged member by
/// member.
pub(crate) fn merge_profile(into: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        let nested = k == "location" || k == "properties";
        match v {
            Value::Object(members) if nested => {
                let slot = into
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Some(o) = slot.as_object_mut() {
                    for (mk, mv) in members {
                        o.insert(mk.clone(), mv.clone());
                    }
                }
            }
            _ if nested || PROFILE_FIELDS.contains(&k.as_str()) => {
                into.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

/// The attributes a profile read serves for written attributes `a`: every field, `null` when
/// never written, `location` with all its members, `properties` an object.
pub(crate) fn profile_attributes(
    a: &Map<String, Value>,
    created: i64,
    updated: i64,
    last_event: Option<i64>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for f in PROFILE_FIELDS {
        out.insert((*f).to_owned(), a.get(*f).cloned().unwrap_or(Value::Null));
    }
    out.insert("created".into(), json!(fmt_time(created)));
    out.insert("updated".into(), json!(fmt_time(updated)));
    out.insert(
        "last_event_date".into(),
        last_event.map_or(Value::Null, |t| json!(fmt_time(t))),
    );
    let given = a.get("location").and_then(Value::as_object);
    let location: Map<String, Value> = LOCATION_FIELDS
        .iter()
        .map(|f| {
            let v = given
                .and_then(|g| g.get(*f))
                .cloned()
                .unwrap_or(Value::Null);
            ((*f).to_owned(), v)
        })
        .collect();
    out.insert("location".into(), Value::Object(location));
    out.insert(
        "properties".into(),
        match a.get("properties") {
            Some(Value::Object(p)) => Value::Object(p.clone()),
            _ => json!({}),
        },
    );
    out
}

/// Whether `phone` is E.164 (`+`, a non-zero digit, 6 to 14 more digits): the emulator
/// rejects every other phone number, as Klaviyo rejects numbers it cannot parse.
pub(crate) fn valid_phone(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Whether `email` looks like an address: one `@` with a non-empty local part and a domain
/// with a dot and no spaces.
pub(crate) fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

/// A catalog resource kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Resource {
    Item,
    Variant,
    Category,
}

impl Resource {
    /// The JSON:API type: `catalog-item`, `catalog-variant`, `catalog-category`.
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Resource::Item => "catalog-item",
            Resource::Variant => "catalog-variant",
            Resource::Category => "catalog-category",
        }
    }

    /// The collection's path segment: `catalog-items`, …
    pub(crate) fn path(self) -> &'static str {
        match self {
            Resource::Item => "catalog-items",
            Resource::Variant => "catalog-variants",
            Resource::Category => "catalog-categories",
        }
    }

    /// The member of a bulk job's attributes holding its resources: `items`, `variants`,
    /// `categories`.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Resource::Item => "items",
            Resource::Variant => "variants",
            Resource::Category => "categories",
        }
    }

    /// `Catalog item`, … (for messages).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Resource::Item => "Catalog item",
            Resource::Variant => "Catalog variant",
            Resource::Category => "Catalog category",
        }
    }

    /// The attributes a read serves, in order (`CatalogItemResponseObjectResource` etc. of
    /// `catalogs.json`), besides `created` and `updated`.
    pub(crate) fn fields(self) -> &'static [&'static str] {
        match self {
            Resource::Item => &[
                "external_id",
                "title",
                "description",
                "price",
                "url",
                "image_full_url",
                "image_thumbnail_url",
                "images",
                "custom_metadata",
                "published",
            ],
            Resource::Variant => &[
                "external_id",
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
            ],
            Resource::Category => &["external_id", "name"],
        }
    }

    /// Every kind.
    pub(crate) const ALL: [Resource; 3] = [Resource::Item, Resource::Variant, Resource::Category];
}

/// What a catalog bulk job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    /// `create`, `update`, `delete`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// One catalog object.
#[derive(Clone, Debug)]
pub(crate) struct CatalogObject {
    /// The attributes as written (create, then each update merged over).
    pub attributes: Map<String, Value>,
    pub created: i64,
    pub updated: i64,
    /// A variant's item id.
    pub item: Option<String>,
    /// An item's category ids.
    pub categories: BTreeSet<String>,
}

/// Why one catalog operation was refused: the HTTP status of a single request, the error
/// code and the detail, and the pointer relative to the resource object (`/id`,
/// `/relationships/item/data/id`).
#[derive(Clone, Debug)]
pub(crate) struct OpError {
    pub status: u16,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub pointer: &'static str,
}

impl OpError {
    fn not_found(r: Resource, id: &str, pointer: &'static str) -> Self {
        OpError {
            status: 404,
            code: "not_found",
            title: "Not found.",
            detail: format!("{} with id '{id}' does not exist.", r.label()),
            pointer,
        }
    }
}

/// The catalog: objects by compound id (`$custom:::$default:::<external_id>`), per kind.
#[derive(Default)]
pub(crate) struct Catalog {
    pub items: BTreeMap<String, CatalogObject>,
    pub variants: BTreeMap<String, CatalogObject>,
    pub categories: BTreeMap<String, CatalogObject>,
}

/// The compound id of a created object: `<integration_type>:::<catalog_type>:::<external_id>`
/// (`$custom` and `$default` when left out: the only values Klaviyo accepts).
pub(crate) fn compound_id(attrs: &Map<String, Value>) -> String {
    let part = |k: &str, d: &str| attrs.get(k).and_then(Value::as_str).unwrap_or(d).to_owned();
    format!(
        "{}:::{}:::{}",
        part("integration_type", "$custom"),
        part("catalog_type", "$default"),
        part("external_id", "")
    )
}

fn rel_ids(data: &Value, rel: &str) -> Option<Vec<String>> {
    data["relationships"][rel]["data"].as_array().map(|a| {
        a.iter()
            .filter_map(|x| x["id"].as_str().map(str::to_owned))
            .collect()
    })
}

impl Catalog {
    pub(crate) fn map(&self, r: Resource) -> &BTreeMap<String, CatalogObject> {
        match r {
            Resource::Item => &self.items,
            Resource::Variant => &self.variants,
            Resource::Category => &self.categories,
        }
    }

    fn map_mut(&mut self, r: Resource) -> &mut BTreeMap<String, CatalogObject> {
        match r {
            Resource::Item => &mut self.items,
            Resource::Variant => &mut self.variants,
            Resource::Category => &mut self.categories,
        }
    }

    /// Creates one object from its resource object `data` (already checked against the
    /// spec's schema) at `now`; its id.
    pub(crate) fn create(
        &mut self,
        r: Resource,
        data: &Value,
        now: i64,
    ) -> Result<String, OpError> {
        let given = data["attributes"].as_object().cloned().unwrap_or_default();
        let id = compound_id(&given);
        if self.map(r).contains_key(&id) {
            return Err(OpError {
                status: 409,
                code: "conflict",
                title: "Conflict.",
                detail: format!("{} with id '{id}' already exists.", r.label()),
                pointer: "/attributes/external_id",
            });
        }
        let mut attributes = Map::new();
        for f in r.fields() {
            attributes.insert(
                (*f).to_owned(),
                given.get(*f).cloned().unwrap_or(Value::Null),
            );
        }
        // Klaviyo's defaults for what a create leaves out.
        for (k, d) in [
            ("published", json!(true)),
            ("images", json!([])),
            ("custom_metadata", json!({})),
        ] {
            if r != Resource::Category && attributes.get(k).is_none_or(Value::is_null) {
                attributes.insert(k.to_owned(), d);
            }
        }
        if r == Resource::Variant && attributes["inventory_policy"].is_null() {
            attributes.insert("inventory_policy".into(), json!(0));
        }
        let mut obj = CatalogObject {
            attributes,
            created: now,
            updated: now,
            item: None,
            categories: BTreeSet::new(),
        };
        match r {
            Resource::Variant => {
                let item = data["relationships"]["item"]["data"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if !self.items.contains_key(&item) {
                    return Err(OpError::not_found(
                        Resource::Item,
                        &item,
                        "/relationships/item/data/id",
                    ));
                }
                obj.item = Some(item);
            }
            Resource::Item => {
                let cats = rel_ids(data, "categories").unwrap_or_default();
                if let Some(missing) = cats.iter().find(|c| !self.categories.contains_key(*c)) {
                    return Err(OpError::not_found(
                        Resource::Category,
                        missing,
                        "/relationships/categories/data",
                    ));
                }
                obj.categories = cats.into_iter().collect();
            }
            Resource::Category => {
                for item in rel_ids(data, "items").unwrap_or_default() {
                    if let Some(i) = self.items.get_mut(&item) {
                        i.categories.insert(id.clone());
                    }
                }
            }
        }
        self.map_mut(r).insert(id.clone(), obj);
        Ok(id)
    }

    /// Updates object `id` with resource object `data` (attributes given replace those
    /// stored; `relationships.categories` of an item or `items` of a category replace its
    /// links).
    pub(crate) fn update(
        &mut self,
        r: Resource,
        id: &str,
        data: &Value,
        now: i64,
    ) -> Result<(), OpError> {
        if !self.map(r).contains_key(id) {
            return Err(OpError::not_found(r, id, "/id"));
        }
        let cats = match r {
            Resource::Item => rel_ids(data, "categories"),
            _ => None,
        };
        if let Some(missing) = cats
            .iter()
            .flatten()
            .find(|c| !self.categories.contains_key(*c))
        {
            return Err(OpError::not_found(
                Resource::Category,
                missing,
                "/relationships/categories/data",
            ));
        }
        if r == Resource::Category
            && let Some(items) = rel_ids(data, "items")
        {
            for (iid, item) in self.items.iter_mut() {
                if items.contains(iid) {
                    item.categories.insert(id.to_owned());
                } else {
                    item.categories.remove(id);
                }
            }
        }
        let Some(obj) = self.map_mut(r).get_mut(id) else {
            return Err(OpError::not_found(r, id, "/id"));
        };
        if let Some(given) = data["attributes"].as_object() {
            for f in r.fields() {
                if *f != "external_id"
                    && let Some(v) = given.get(*f)
                {
                    obj.attributes.insert((*f).to_owned(), v.clone());
                }
            }
        }
        if let Some(c) = cats {
            obj.categories = c.into_iter().collect();
        }
        obj.updated = now;
        Ok(())
    }

    /// Deletes object `id` (an item's variants go with it; a category leaves its items).
    pub(crate) fn delete(&mut self, r: Resource, id: &str) -> Result<(), OpError> {
        if self.map_mut(r).remove(id).is_none() {
            return Err(OpError::not_found(r, id, "/id"));
        }
        match r {
            Resource::Item => self.variants.retain(|_, v| v.item.as_deref() != Some(id)),
            Resource::Category => {
                for item in self.items.values_mut() {
                    item.categories.remove(id);
                }
            }
            Resource::Variant => {}
        }
        Ok(())
    }

    /// The attributes a read serves for `obj`.
    pub(crate) fn attributes_json(r: Resource, obj: &CatalogObject) -> Map<String, Value> {
        let mut out = Map::new();
        for f in r.fields() {
            out.insert(
                (*f).to_owned(),
                obj.attributes.get(*f).cloned().unwrap_or(Value::Null),
            );
        }
        if r != Resource::Category {
            out.insert("created".into(), json!(fmt_time(obj.created)));
        }
        out.insert("updated".into(), json!(fmt_time(obj.updated)));
        out
    }
}

/// What a bulk job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobKind {
    /// `profile-bulk-import-job`.
    Profiles,
    /// `catalog-<resource>-bulk-<action>-job`.
    Catalog(Resource, Action),
}

impl JobKind {
    /// The job resource's JSON:API type.
    pub(crate) fn type_name(self) -> String {
        match self {
            JobKind::Profiles => "profile-bulk-import-job".to_owned(),
            JobKind::Catalog(r, a) => format!("{}-bulk-{}-job", r.type_name(), a.name()),
        }
    }
}

/// How a job ended (set when it is applied).
#[derive(Clone, Debug, Default)]
pub(crate) struct JobOutcome {
    pub completed: u64,
    pub failed: u64,
    /// Catalog jobs: JSON:API error objects (`id`, `status`, `code`, `title`, `detail`,
    /// `source.pointer`).
    pub errors: Vec<Value>,
    /// Profile import jobs: `import-error` resources.
    pub import_errors: Vec<Value>,
    /// Ids of the objects it created or changed.
    pub ids: Vec<String>,
}

/// A bulk job.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub id: String,
    pub kind: JobKind,
    pub created_ms: i64,
    /// When it leaves `queued`.
    pub started_ms: i64,
    /// When it is final (applied at the first request from then on).
    pub done_ms: i64,
    /// Ends `cancelled` ([`JobTiming::cancelled_share`]).
    pub cancel: bool,
    /// The resource objects (or `{type, id}` for deletes) as posted.
    pub payload: Vec<Value>,
    /// Set when applied.
    pub outcome: Option<JobOutcome>,
}

impl Job {
    /// `queued`, `processing`, `complete` or `cancelled` at `now_ms`: final only once
    /// applied.
    pub(crate) fn status(&self, now_ms: i64) -> &'static str {
        match &self.outcome {
            Some(_) if self.cancel => "cancelled",
            Some(_) => "complete",
            None if now_ms < self.started_ms => "queued",
            None => "processing",
        }
    }

    /// Whether it is in progress (not applied).
    pub(crate) fn in_progress(&self) -> bool {
        self.outcome.is_none()
    }
}

/// Everything written.
#[derive(Default)]
pub(crate) struct Written {
    /// Profiles created by writes: profile index = generated profiles + position.
    pub profiles: Vec<WrittenProfile>,
    /// Written profile id → profile index.
    pub profile_ids: HashMap<String, u64>,
    /// `email` (lower case), `phone_number`, `external_id` → profile index, for written
    /// profiles and generated ones a write changed an identifier of.
    pub identifiers: HashMap<(&'static str, String), u64>,
    /// Generated profiles changed by writes: index → the attributes written over them.
    pub overrides: HashMap<u64, Map<String, Value>>,
    /// Metrics created by events: metric index = generated metrics + position.
    pub metrics: Vec<WrittenMetric>,
    /// Metric name → metric index, for the metrics events were written to.
    pub metric_names: HashMap<String, usize>,
    /// `(profile index, metric index, unique_id or "@<epoch second>")` of every written
    /// event (a repeat is dropped).
    pub event_keys: HashSet<(u64, usize, String)>,
    /// The written events, in the order written.
    pub events: Vec<EventRef>,
    /// Events dropped as repeats.
    pub events_deduplicated: u64,
    pub catalog: Catalog,
    /// Jobs in creation order.
    pub jobs: Vec<Job>,
    /// Job id → position in `jobs`.
    pub job_index: HashMap<String, usize>,
    /// Jobs before this position are applied.
    pub applied: usize,
}

impl Written {
    /// The job with this id and kind.
    pub(crate) fn job(&self, id: &str, kind: JobKind) -> Option<&Job> {
        self.job_index
            .get(id)
            .and_then(|&i| self.jobs.get(i))
            .filter(|j| j.kind == kind)
    }

    /// Catalog jobs not yet final.
    pub(crate) fn catalog_jobs_in_progress(&self) -> usize {
        self.jobs[self.applied.min(self.jobs.len())..]
            .iter()
            .filter(|j| matches!(j.kind, JobKind::Catalog(..)) && j.in_progress())
            .count()
    }
}

/// What the write endpoints wrote, as `GET /klaviyo/_admin/written` serves it (deserialize
/// its JSON into this) and [`WrittenHandle::snapshot`](super::WrittenHandle::snapshot) gives
/// it. Times are RFC 3339 UTC texts as the reads serve them, `timestamp` epoch seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WrittenSnapshot {
    /// How many of each.
    pub counts: WrittenCounts,
    /// Profiles created by writes, and generated profiles a write changed, with their
    /// attributes as `GET /api/profiles/{id}` serves them.
    pub profiles: Vec<WrittenResource>,
    /// Metrics events were written to (`id`, `name`).
    pub metrics: Vec<WrittenMetricName>,
    /// Written events in the order written (repeats dropped).
    pub events: Vec<WrittenEvent>,
    /// Events dropped as repeats.
    pub events_deduplicated: u64,
    /// Catalog items (`category_ids` set).
    pub catalog_items: Vec<WrittenResource>,
    /// Catalog variants (`item_id` set).
    pub catalog_variants: Vec<WrittenResource>,
    /// Catalog categories.
    pub catalog_categories: Vec<WrittenResource>,
    /// Bulk jobs in creation order.
    pub jobs: Vec<WrittenJob>,
}

/// One page of one list of [`WrittenSnapshot`], as `GET /klaviyo/_admin/written/{part}`
/// serves it (`part`: `profiles`, `metrics`, `events`, `catalog_items`,
/// `catalog_variants`, `catalog_categories` or `jobs`; query `offset` (default 0) and
/// `limit` (1..=1000, default 1000)), so that a large written state is read back a page at
/// a time instead of as one document. The entries are in the snapshot's order; `T` is
/// the snapshot's entry type ([`WrittenResource`], [`WrittenEvent`], …).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WrittenPage<T> {
    /// The part's name.
    pub part: String,
    /// Entries of the part in all.
    pub total: u64,
    /// Position of the first entry of `data` in the part.
    pub offset: u64,
    /// The `offset` of the next page; `None` on the last page.
    pub next_offset: Option<u64>,
    /// The entries.
    pub data: Vec<T>,
}

/// How many of each kind [`WrittenSnapshot`] holds (also served alone by
/// `GET /klaviyo/_admin/written/counts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenCounts {
    /// Entries of [`WrittenSnapshot::profiles`].
    pub profiles: u64,
    /// Entries of [`WrittenSnapshot::metrics`].
    pub metrics: u64,
    /// Entries of [`WrittenSnapshot::events`].
    pub events: u64,
    /// Events dropped as repeats.
    pub events_deduplicated: u64,
    /// Catalog items.
    pub catalog_items: u64,
    /// Catalog variants.
    pub catalog_variants: u64,
    /// Catalog categories.
    pub catalog_categories: u64,
    /// Bulk jobs created.
    pub jobs: u64,
    /// Bulk jobs not final yet.
    pub jobs_in_progress: u64,
}

/// A profile or catalog object: its id and attributes as the reads serve them; a variant's
/// `item_id`, an item's `category_ids`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WrittenResource {
    /// Its id.
    pub id: String,
    /// The attributes as read.
    pub attributes: Map<String, Value>,
    /// A variant's item id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// An item's category ids, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_ids: Option<Vec<String>>,
}

/// A metric by id and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenMetricName {
    /// Its id.
    pub id: String,
    /// The metric's name.
    pub name: String,
}

/// One written event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WrittenEvent {
    /// Its id.
    pub id: String,
    /// Its metric's id.
    pub metric_id: String,
    /// The metric's name.
    pub metric: String,
    /// Its profile's id.
    pub profile_id: String,
    /// Epoch seconds.
    pub timestamp: i64,
    /// `timestamp` as RFC 3339 UTC.
    pub datetime: String,
    /// The event's `uuid`.
    pub uuid: String,
    /// `properties` plus `$value`, `$value_currency`, `$event_id` when given.
    pub event_properties: Value,
}

/// One bulk job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenJob {
    /// Its id.
    pub id: String,
    /// `profile-bulk-import-job`, `catalog-item-bulk-create-job`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// `queued`, `processing`, `complete`, `cancelled`.
    pub status: String,
    /// Objects in the job.
    pub total_count: u64,
    /// Objects written (0 until final).
    pub completed_count: u64,
    /// Objects refused (0 until final).
    pub failed_count: u64,
}
