//! The write side of the emulation: the operations on what was written
//! ([`super::super::written`]), their routes behind the same layers as the reads, the
//! request pipeline of every write (body size, JSON, the spec's request schema, then the
//! handler under the overlay's write lock), bulk jobs becoming final, and the admin view.
//!
//! | route | operation | tier |
//! |---|---|---|
//! | `POST /api/profiles` | `create_profile`: 201, or 409 `duplicate_profile` with `meta.duplicate_profile_id` | L |
//! | `PATCH /api/profiles/{id}` | `update_profile`: 200 | L |
//! | `POST /api/profile-import` | `create_or_update_profile`: 201 created, 200 updated | L |
//! | `POST /api/profile-bulk-import-jobs` | `bulk_import_profiles`: 202 and the job (≤ 10,000 profiles, ≤ 5 MB, ≤ 100 KB each) | M |
//! | `GET /api/profile-bulk-import-jobs/{id}` (`/import-errors`) | the job; its errors (20 / 100 per page) | M |
//! | `POST /api/events` | `create_event`: 202, no body | XL |
//! | `POST /api/event-bulk-create-jobs` | `bulk_create_events`: 202, no body (≤ 1,000 events, ≤ 5 MB) | M |
//! | `GET /api/catalog-{items,variants,categories}` (`/{id}`) | 100 / 100 per page; `filter` as the spec allows; `sort` `created`, `-created` | XL |
//! | `POST`, `PATCH /{id}`, `DELETE /{id}` on them | 201 / 200 / 204 | L |
//! | `POST /api/catalog-{item,variant,category}-bulk-{create,update,delete}-jobs` | 202 and the job (≤ 100 objects, ≤ 5 MB; ≤ 500 catalog jobs in progress, else 429) | L |
//! | `GET` of those jobs `/{id}` | status, counts, `errors[]` | L or XL as the spec says |
//! | `GET /api/profile-bulk-import-jobs`, `GET /api/catalog-…-bulk-…-jobs` | the jobs of that kind, oldest first (`sort=-created_at`: newest), filter `equals(status,…)` (profile jobs also `any`); 20 / 100 resp. 100 per page | as the spec says |
//! | `GET /api/catalog-items/{id}/variants`, `…/relationships/categories`, `GET /api/catalog-categories/{id}/relationships/items` | | XL |
//!
//! Every body is checked against the spec's request schema ([`schema`]); a refusal is a 400
//! whose error carries `source.pointer`. A body over 5 MB is a 413.

use super::super::schema;
use super::super::written::{Action, JobKind, Resource, Written};
use super::bulk_jobs::apply_catalog_job;
use super::profile_writes::apply_profile_job;
use super::*;

/// The largest request body, bytes (Klaviyo's 5 MB payload limit).
pub(super) const MAX_BODY: usize = 5 * 1024 * 1024;
/// Bodies read at most (larger ones get axum's plain 413).
const READ_LIMIT: usize = 4 * MAX_BODY;

/// An operation on written data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StoreOp {
    CreateProfile,
    UpdateProfile,
    ImportProfile,
    BulkImportProfiles,
    ProfileJob,
    ImportErrors,
    CreateEvent,
    BulkCreateEvents,
    CatalogList(Resource),
    CatalogGet(Resource),
    CatalogCreate(Resource),
    CatalogUpdate(Resource),
    CatalogDelete(Resource),
    CatalogBulk(Resource, Action),
    CatalogJob(Resource, Action),
    /// `GET` of the collection of profile import jobs.
    ProfileJobs,
    /// `GET` of the collection of catalog jobs of one kind.
    CatalogJobs(Resource, Action),
    ItemVariants,
    ItemCategoryIds,
    CategoryItemIds,
}

impl StoreOp {
    /// Klaviyo's operation id.
    pub(super) fn name(self) -> &'static str {
        use Action::*;
        use Resource::*;
        match self {
            StoreOp::CreateProfile => "create_profile",
            StoreOp::UpdateProfile => "update_profile",
            StoreOp::ImportProfile => "create_or_update_profile",
            StoreOp::BulkImportProfiles => "bulk_import_profiles",
            StoreOp::ProfileJob => "get_bulk_import_profiles_job",
            StoreOp::ImportErrors => "get_errors_for_bulk_import_profiles_job",
            StoreOp::CreateEvent => "create_event",
            StoreOp::BulkCreateEvents => "bulk_create_events",
            StoreOp::CatalogList(Item) => "get_catalog_items",
            StoreOp::CatalogList(Variant) => "get_catalog_variants",
            StoreOp::CatalogList(Category) => "get_catalog_categories",
            StoreOp::CatalogGet(Item) => "get_catalog_item",
            StoreOp::CatalogGet(Variant) => "get_catalog_variant",
            StoreOp::CatalogGet(Category) => "get_catalog_category",
            StoreOp::CatalogCreate(Item) => "create_catalog_item",
            StoreOp::CatalogCreate(Variant) => "create_catalog_variant",
            StoreOp::CatalogCreate(Category) => "create_catalog_category",
            StoreOp::CatalogUpdate(Item) => "update_catalog_item",
            StoreOp::CatalogUpdate(Variant) => "update_catalog_variant",
            StoreOp::CatalogUpdate(Category) => "update_catalog_category",
            StoreOp::CatalogDelete(Item) => "delete_catalog_item",
            StoreOp::CatalogDelete(Variant) => "delete_catalog_variant",
            StoreOp::CatalogDelete(Category) => "delete_catalog_category",
            StoreOp::CatalogBulk(Item, Create) => "bulk_create_catalog_items",
            StoreOp::CatalogBulk(Item, Update) => "bulk_update_catalog_items",
            StoreOp::CatalogBulk(Item, Delete) => "bulk_delete_catalog_items",
            StoreOp::CatalogBulk(Variant, Create) => "bulk_create_catalog_variants",
            StoreOp::CatalogBulk(Variant, Update) => "bulk_update_catalog_variants",
            StoreOp::CatalogBulk(Variant, Delete) => "bulk_delete_catalog_variants",
            StoreOp::CatalogBulk(Category, Create) => "bulk_create_catalog_categories",
            StoreOp::CatalogBulk(Category, Update) => "bulk_update_catalog_categories",
            StoreOp::CatalogBulk(Category, Delete) => "bulk_delete_catalog_categories",
            StoreOp::CatalogJob(Item, Create) => "get_bulk_create_catalog_items_job",
            StoreOp::CatalogJob(Item, Update) => "get_bulk_update_catalog_items_job",
            StoreOp::CatalogJob(Item, Delete) => "get_bulk_delete_catalog_items_job",
            StoreOp::CatalogJob(Variant, Create) => "get_bulk_create_variants_job",
            StoreOp::CatalogJob(Variant, Update) => "get_bulk_update_variants_job",
            StoreOp::CatalogJob(Variant, Delete) => "get_bulk_delete_variants_job",
            StoreOp::CatalogJob(Category, Create) => "get_bulk_create_categories_job",
            StoreOp::CatalogJob(Category, Update) => "get_bulk_update_categories_job",
            StoreOp::CatalogJob(Category, Delete) => "get_bulk_delete_categories_job",
            StoreOp::ProfileJobs => "get_bulk_import_profiles_jobs",
            StoreOp::CatalogJobs(Item, Create) => "get_bulk_create_catalog_items_jobs",
            StoreOp::CatalogJobs(Item, Update) => "get_bulk_update_catalog_items_jobs",
            StoreOp::CatalogJobs(Item, Delete) => "get_bulk_delete_catalog_items_jobs",
            StoreOp::CatalogJobs(Variant, Create) => "get_bulk_create_variants_jobs",
            StoreOp::CatalogJobs(Variant, Update) => "get_bulk_update_variants_jobs",
            StoreOp::CatalogJobs(Variant, Delete) => "get_bulk_delete_variants_jobs",
            StoreOp::CatalogJobs(Category, Create) => "get_bulk_create_categories_jobs",
            StoreOp::CatalogJobs(Category, Update) => "get_bulk_update_categories_jobs",
            StoreOp::CatalogJobs(Category, Delete) => "get_bulk_delete_categories_jobs",
            StoreOp::ItemVariants => "get_variants_for_catalog_item",
            StoreOp::ItemCategoryIds => "get_category_ids_for_catalog_item",
            StoreOp::CategoryItemIds => "get_item_ids_for_catalog_category",
        }
    }

    /// The path after `/api/` of a request with path id `id` (with Klaviyo's trailing `/`).
    pub(super) fn rest(self, id: &str) -> String {
        match self {
            StoreOp::CreateProfile => "profiles/".to_owned(),
            StoreOp::UpdateProfile => format!("profiles/{id}/"),
            StoreOp::ImportProfile => "profile-import/".to_owned(),
            StoreOp::BulkImportProfiles | StoreOp::ProfileJobs => {
                "profile-bulk-import-jobs/".to_owned()
            }
            StoreOp::ProfileJob => format!("profile-bulk-import-jobs/{id}/"),
            StoreOp::ImportErrors => format!("profile-bulk-import-jobs/{id}/import-errors/"),
            StoreOp::CreateEvent => "events/".to_owned(),
            StoreOp::BulkCreateEvents => "event-bulk-create-jobs/".to_owned(),
            StoreOp::CatalogList(r) | StoreOp::CatalogCreate(r) => format!("{}/", r.path()),
            StoreOp::CatalogGet(r) | StoreOp::CatalogUpdate(r) | StoreOp::CatalogDelete(r) => {
                format!("{}/{id}/", r.path())
            }
            StoreOp::CatalogBulk(r, a) | StoreOp::CatalogJobs(r, a) => {
                format!("{}/", job_path(r, a))
            }
            StoreOp::CatalogJob(r, a) => format!("{}/{id}/", job_path(r, a)),
            StoreOp::ItemVariants => format!("catalog-items/{id}/variants/"),
            StoreOp::ItemCategoryIds => format!("catalog-items/{id}/relationships/categories/"),
            StoreOp::CategoryItemIds => format!("catalog-categories/{id}/relationships/items/"),
        }
    }

    /// Every operation.
    pub(super) fn all() -> Vec<StoreOp> {
        let mut out = vec![
            StoreOp::CreateProfile,
            StoreOp::UpdateProfile,
            StoreOp::ImportProfile,
            StoreOp::BulkImportProfiles,
            StoreOp::ProfileJob,
            StoreOp::ProfileJobs,
            StoreOp::ImportErrors,
            StoreOp::CreateEvent,
            StoreOp::BulkCreateEvents,
            StoreOp::ItemVariants,
            StoreOp::ItemCategoryIds,
            StoreOp::CategoryItemIds,
        ];
        for r in Resource::ALL {
            out.extend([
                StoreOp::CatalogList(r),
                StoreOp::CatalogGet(r),
                StoreOp::CatalogCreate(r),
                StoreOp::CatalogUpdate(r),
                StoreOp::CatalogDelete(r),
            ]);
            for a in [Action::Create, Action::Update, Action::Delete] {
                out.extend([
                    StoreOp::CatalogBulk(r, a),
                    StoreOp::CatalogJob(r, a),
                    StoreOp::CatalogJobs(r, a),
                ]);
            }
        }
        out
    }
}

/// `catalog-item-bulk-create-jobs`, …
pub(super) fn job_path(r: Resource, a: Action) -> String {
    let one = match r {
        Resource::Item => "item",
        Resource::Variant => "variant",
        Resource::Category => "category",
    };
    format!("catalog-{one}-bulk-{}-jobs", a.name())
}

type MR = axum::routing::MethodRouter<Arc<Shared>>;

/// Adds the write side's routes to `r`, each behind `layered` (the read routes' layers).
pub(super) fn routes(
    r: Router<Arc<Shared>>,
    layered: &dyn Fn(MR, Ep) -> MR,
) -> Router<Arc<Shared>> {
    use axum::routing::{delete, patch};
    let mut r = r;
    for op in StoreOp::all() {
        let spec_op = spec::operation(op.name());
        let path = spec_op.path.replace("{job_id}", "{id}");
        let has_id = path.contains("{id}");
        let m: MR = match (spec_op.method.as_str(), has_id) {
            ("get", false) => get(
                move |st: St, h: HeaderMap, RawQuery(q): RawQuery| async move {
                    serve(st, Ep::Store(op), None, h, q).await
                },
            ),
            ("get", true) => get(
                move |st: St, Path(id): Path<String>, h: HeaderMap, RawQuery(q): RawQuery| async move {
                    serve(st, Ep::Store(op), Some(id), h, q).await
                },
            ),
            (method, false) => {
                let h = move |st: St, h: HeaderMap, body: Bytes| async move {
                    write(st, op, None, h, body).await
                };
                match method {
                    "patch" => patch(h),
                    "delete" => delete(h),
                    _ => post(h),
                }
            }
            (method, true) => {
                let h = move |st: St, Path(id): Path<String>, h: HeaderMap, body: Bytes| async move {
                    write(st, op, Some(id), h, body).await
                };
                match method {
                    "patch" => patch(h),
                    "delete" => delete(h),
                    _ => post(h),
                }
            }
        };
        // Bodies up to well over Klaviyo's limit are read, so that the emulator itself
        // answers a too-large one (413) in Klaviyo's error shape.
        let m = layered(m, Ep::Store(op)).layer(axum::extract::DefaultBodyLimit::max(READ_LIMIT));
        r = r.route(&path, m.clone()).route(&format!("{path}/"), m);
    }
    r.route("/klaviyo/_admin/written", get(admin_written))
        .route("/klaviyo/_admin/written/{part}", get(admin_written_part))
}

/// The id of the `k`-th job (of kind `kind`): 32 hex digits of a hash of both and `seed`.
pub(super) fn job_id(kind: JobKind, k: u64, seed: u64) -> String {
    let tag = match kind {
        JobKind::Profiles => 0,
        JobKind::Catalog(r, a) => 1 + (r as u64) * 3 + a as u64,
    };
    format!(
        "{:016x}{:016x}",
        h3(seed, 0x10B, k, tag),
        h3(seed, 0x10B, k, tag ^ 0xFF)
    )
}

/// Now, epoch milliseconds.
pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Applies every job that became final by `now_ms`, in creation order.
pub(super) fn settle(live: &Live, now_ms: i64) {
    let ready = |ov: &Overlay| {
        ov.written
            .jobs
            .get(ov.written.applied)
            .is_some_and(|j| j.done_ms <= now_ms)
    };
    if !ready(&live.overlay.read().unwrap_or_else(|p| p.into_inner())) {
        return;
    }
    let mut ov = live.overlay.write().unwrap_or_else(|p| p.into_inner());
    while ready(&ov) {
        let k = ov.written.applied;
        ov.written.applied += 1;
        let (kind, cancel) = (ov.written.jobs[k].kind, ov.written.jobs[k].cancel);
        // Taken out while applied (the job list is written to meanwhile), then put back.
        let payload = std::mem::take(&mut ov.written.jobs[k].payload);
        let outcome = if cancel {
            super::super::written::JobOutcome::default()
        } else {
            match kind {
                JobKind::Profiles => apply_profile_job(&live.data, &mut ov, &payload, now_ms),
                JobKind::Catalog(r, a) => {
                    apply_catalog_job(&mut ov.written, r, a, &payload, now_ms)
                }
            }
        };
        let job = &mut ov.written.jobs[k];
        job.payload = payload;
        job.outcome = Some(outcome);
    }
}

/// The base URL of the `links` of a request with `headers`.
pub(super) fn base_of(live: &Live, headers: &HeaderMap) -> String {
    live.config
        .public_url
        .clone()
        .unwrap_or_else(|| {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        })
        .trim_end_matches('/')
        .to_owned()
}

/// A 400 of a body refused at `pointer`.
pub(super) fn invalid_at(pointer: impl Into<String>, detail: impl Into<String>) -> ApiErr {
    ApiErr {
        status: StatusCode::BAD_REQUEST,
        code: "invalid",
        title: "Invalid input.",
        detail: detail.into(),
        source: Some(("pointer", pointer.into())),
    }
}

/// A JSON:API error object (for a job's `errors[]` or an import error).
pub(super) fn error_object(
    status: u16,
    code: &str,
    title: &str,
    detail: &str,
    pointer: &str,
) -> Value {
    let n = ERROR_IDS.fetch_add(1, Ordering::Relaxed);
    let id = format!("{:016x}{:016x}", mix64(n ^ 0xE7), mix64(n ^ 0x7E));
    json!({
        "id": format!("{}-{}-{}-{}-{}", &id[..8], &id[8..12], &id[12..16], &id[16..20], &id[20..32]),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
        "source": {"pointer": pointer},
    })
}

/// What a write handler answers: a document and its status, or nothing (202/204).
pub(super) enum Reply {
    Doc(StatusCode, Value),
    Empty(StatusCode),
    Raw(Response),
}

/// The handler of every write route (behind the same layers as the reads).
async fn write(
    State(sh): St,
    op: StoreOp,
    id: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let live = sh.live();
    if body.len() > MAX_BODY {
        return ApiErr {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            title: "Payload too large.",
            detail: format!(
                "The request body is {} bytes; the limit is 5 MB ({MAX_BODY} bytes).",
                body.len()
            ),
            source: Some(("pointer", "/data".into())),
        }
        .response();
    }
    let deleting = matches!(op, StoreOp::CatalogDelete(_));
    let doc: Value = if body.iter().all(u8::is_ascii_whitespace) && deleting {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return ApiErr {
                    status: StatusCode::BAD_REQUEST,
                    code: "parse_error",
                    title: "Malformed request.",
                    detail: format!("The request body is not valid JSON: {e}"),
                    source: Some(("pointer", "/".into())),
                }
                .response();
            }
        }
    };
    if let Err(e) = schema::check(op.name(), &doc) {
        return invalid_at(e.pointer, e.detail).response();
    }
    let now = now_ms();
    settle(&live, now);
    let base = base_of(&live, &headers);
    let id = id.unwrap_or_default();
    let mut ov = live.overlay.write().unwrap_or_else(|p| p.into_inner());
    let w = WriteCx {
        live: &live,
        base: &base,
        id: &id,
        now_ms: now,
    };
    let result = match op {
        StoreOp::CreateProfile | StoreOp::UpdateProfile | StoreOp::ImportProfile => {
            w.profile_write(&mut ov, op, &doc)
        }
        StoreOp::BulkImportProfiles => w.bulk_import(&mut ov, &doc),
        StoreOp::CreateEvent => w.create_event(&mut ov, &doc),
        StoreOp::BulkCreateEvents => w.bulk_events(&mut ov, &doc),
        StoreOp::CatalogCreate(r) | StoreOp::CatalogUpdate(r) | StoreOp::CatalogDelete(r) => {
            w.catalog_write(&mut ov, op, r, &doc)
        }
        StoreOp::CatalogBulk(r, a) => w.catalog_bulk(&mut ov, r, a, &doc),
        _ => Err(ApiErr::not_found("No such write operation.")),
    };
    drop(ov);
    match result {
        Ok(Reply::Doc(status, v)) => json_response(status, &v),
        Ok(Reply::Empty(status)) => status.into_response(),
        Ok(Reply::Raw(r)) => r,
        Err(e) => e.response(),
    }
}

/// What every write handler needs besides the overlay.
pub(super) struct WriteCx<'a> {
    pub live: &'a Live,
    pub base: &'a str,
    /// The path id (empty when the route has none).
    pub id: &'a str,
    pub now_ms: i64,
}

impl WriteCx<'_> {
    /// Now, epoch seconds.
    pub(super) fn now(&self) -> i64 {
        self.now_ms.div_euclid(1000)
    }

    /// A read context over `ov` (to render resources as the reads do).
    pub(super) fn ctx<'b>(&'b self, ov: &'b Overlay, ep: Ep) -> Ctx<'b> {
        let quoted = serde_json::to_string(self.base).unwrap_or_default();
        Ctx {
            base_json: quoted[1..quoted.len().saturating_sub(1).max(1)].to_owned(),
            d: &self.live.data,
            ov,
            q: Query::parse(""),
            base: self.base.to_owned(),
            ep,
            id: self.id.to_owned(),
            revision: String::new(),
        }
    }
}

// ---- the reads' view of written data ----

impl Ctx<'_> {
    /// Number of metrics: generated, then created by events.
    pub(super) fn metric_count(&self) -> usize {
        self.d.metrics.len() + self.ov.written.metrics.len()
    }

    /// The id of metric `m`.
    pub(super) fn mid(&self, m: usize) -> &str {
        match m.checked_sub(self.d.metrics.len()) {
            None => &self.d.metrics[m].id,
            Some(k) => &self.ov.written.metrics[k].id,
        }
    }

    /// The index of the metric with this id.
    pub(super) fn metric_idx(&self, id: &str) -> Option<usize> {
        self.d.metric_index(id).or_else(|| {
            self.ov
                .written
                .metrics
                .iter()
                .position(|m| m.id == id)
                .map(|k| k + self.d.metrics.len())
        })
    }

    /// The id of profile `i` (generated, or written when `i` ≥ the generated count).
    pub(super) fn pid(&self, i: u64) -> String {
        match i.checked_sub(self.d.spec.profiles) {
            None => self.d.profile_id(i),
            Some(k) => self.ov.written.profiles[k as usize].id.clone(),
        }
    }

    /// The index of the profile with this id.
    pub(super) fn profile_idx(&self, id: &str) -> Option<u64> {
        self.d
            .profile_index(id)
            .or_else(|| self.ov.written.profile_ids.get(id).copied())
    }

    /// Creation time of profile `i`, epoch seconds.
    pub(super) fn created_of(&self, i: u64) -> i64 {
        match i.checked_sub(self.d.spec.profiles) {
            None => self.d.profile_created(i),
            Some(k) => self.ov.written.profiles[k as usize].created,
        }
    }

    /// The attributes of profile `i` as read: generated (with what writes changed over them)
    /// or written.
    pub(super) fn profile_attrs(&self, i: u64) -> Map<String, Value> {
        match i.checked_sub(self.d.spec.profiles) {
            None => {
                let mut a = self.d.profile_attributes(i, self.updated_of(i));
                if let Some(patch) = self.ov.written.overrides.get(&i) {
                    super::super::written::merge_profile(&mut a, patch);
                }
                a
            }
            Some(k) => {
                let p = &self.ov.written.profiles[k as usize];
                super::super::written::profile_attributes(
                    &p.attributes,
                    p.created,
                    p.updated,
                    p.last_event,
                )
            }
        }
    }

    /// The profile whose `field` (`email`, `phone_number`, `external_id`) is `value`: as a
    /// write set it, else the generated one (unless a write changed that field of it).
    pub(super) fn identified(&self, field: &str, value: &str) -> Option<u64> {
        super::profile_writes::identified(self.d, self.ov, field, value)
    }

    /// Reads of written data.
    pub(super) fn store_get(&self, op: StoreOp) -> Result<Value, ApiErr> {
        match op {
            StoreOp::ProfileJob => self.profile_job(),
            StoreOp::ImportErrors => self.import_errors(),
            StoreOp::CatalogList(r) => self.catalog_list(r, None),
            StoreOp::CatalogGet(r) => self.catalog_one(r),
            StoreOp::CatalogJob(r, a) => self.catalog_job(r, a),
            StoreOp::ProfileJobs => self.jobs(JobKind::Profiles),
            StoreOp::CatalogJobs(r, a) => self.jobs(JobKind::Catalog(r, a)),
            StoreOp::ItemVariants => {
                if !self.ov.written.catalog.items.contains_key(&self.id) {
                    return Err(ApiErr::not_found(format!(
                        "Catalog item with id '{}' does not exist.",
                        self.id
                    )));
                }
                self.catalog_list(Resource::Variant, Some(&self.id))
            }
            StoreOp::ItemCategoryIds | StoreOp::CategoryItemIds => self.catalog_links(op),
            _ => Err(ApiErr::not_found("No such read operation.")),
        }
    }
}

// ---- admin ----

/// The lists of what was written, each served whole by `GET /klaviyo/_admin/written` and
/// page by page by `GET /klaviyo/_admin/written/{part}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    Profiles,
    Metrics,
    Events,
    CatalogItems,
    CatalogVariants,
    CatalogCategories,
    Jobs,
}

impl Part {
    pub(super) const ALL: [Part; 7] = [
        Part::Profiles,
        Part::Metrics,
        Part::Events,
        Part::CatalogItems,
        Part::CatalogVariants,
        Part::CatalogCategories,
        Part::Jobs,
    ];

    /// The member of the snapshot holding it, and the path segment of its pages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Part::Profiles => "profiles",
            Part::Metrics => "metrics",
            Part::Events => "events",
            Part::CatalogItems => "catalog_items",
            Part::CatalogVariants => "catalog_variants",
            Part::CatalogCategories => "catalog_categories",
            Part::Jobs => "jobs",
        }
    }

    pub(super) fn parse(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Entries `offset..offset + limit` of `part` (in a stable order: profiles by profile
/// index, metrics by metric index, events in the order written, catalog objects by id,
/// jobs in creation order) and how many there are in all. Jobs that became final are
/// applied by the caller ([`settle`]) first.
fn part_page(
    live: &Live,
    ov: &Overlay,
    now: i64,
    part: Part,
    offset: usize,
    limit: usize,
) -> (usize, Vec<Value>) {
    let w = WriteCx {
        live,
        base: "",
        id: "",
        now_ms: now,
    };
    let cx = w.ctx(ov, Ep::Profiles);
    let d = &live.data;
    let written: &Written = &ov.written;
    match part {
        Part::Profiles => {
            // Generated profiles a write changed, then the profiles writes created.
            let mut changed: Vec<u64> = written.overrides.keys().copied().collect();
            changed.sort_unstable();
            let created = (0..written.profiles.len() as u64).map(|k| d.spec.profiles + k);
            let total = changed.len() + written.profiles.len();
            let page = changed
                .into_iter()
                .chain(created)
                .skip(offset)
                .take(limit)
                .map(|i| json!({"id": cx.pid(i), "attributes": cx.profile_attrs(i)}))
                .collect();
            (total, page)
        }
        Part::Metrics => {
            let mut metrics: Vec<(usize, &String)> = written
                .metric_names
                .iter()
                .map(|(name, &m)| (m, name))
                .collect();
            metrics.sort_unstable();
            let page = metrics
                .iter()
                .skip(offset)
                .take(limit)
                .map(|&(m, name)| json!({"id": cx.mid(m), "name": name}))
                .collect();
            (metrics.len(), page)
        }
        Part::Events => {
            let page = written
                .events
                .iter()
                .skip(offset)
                .take(limit)
                .filter_map(|&(m, ts, seq)| {
                    let e = ov.events.get(m)?.get(&(ts, seq))?;
                    let name = match m.checked_sub(d.metrics.len()) {
                        None => &d.metrics[m].name,
                        Some(k) => &written.metrics[k].name,
                    };
                    Some(json!({
                        "id": e.id,
                        "metric_id": cx.mid(m),
                        "metric": name,
                        "profile_id": cx.pid(e.profile),
                        "timestamp": ts,
                        "datetime": fmt_time(ts),
                        "uuid": e.uuid,
                        "event_properties": serde_json::from_str::<Value>(&e.properties)
                            .unwrap_or(Value::Null),
                    }))
                })
                .collect();
            (written.events.len(), page)
        }
        Part::CatalogItems | Part::CatalogVariants | Part::CatalogCategories => {
            let r = match part {
                Part::CatalogItems => Resource::Item,
                Part::CatalogVariants => Resource::Variant,
                _ => Resource::Category,
            };
            let objects = written.catalog.map(r);
            let page = objects
                .iter()
                .skip(offset)
                .take(limit)
                .map(|(id, o)| {
                    let mut v = json!({
                        "id": id,
                        "attributes": super::super::written::Catalog::attributes_json(r, o),
                    });
                    if let Some(item) = &o.item {
                        v["item_id"] = json!(item);
                    }
                    if r == Resource::Item {
                        v["category_ids"] = json!(o.categories);
                    }
                    v
                })
                .collect();
            (objects.len(), page)
        }
        Part::Jobs => {
            let page = written
                .jobs
                .iter()
                .skip(offset)
                .take(limit)
                .map(|j| {
                    let (completed, failed) = j
                        .outcome
                        .as_ref()
                        .map_or((0, 0), |o| (o.completed, o.failed));
                    json!({
                        "id": j.id,
                        "type": j.kind.type_name(),
                        "status": j.status(now),
                        "total_count": j.payload.len(),
                        "completed_count": completed,
                        "failed_count": failed,
                    })
                })
                .collect();
            (written.jobs.len(), page)
        }
    }
}

/// How many of each part there are ([`WrittenCounts`](super::super::WrittenCounts)).
fn counts(ov: &Overlay) -> Value {
    let written: &Written = &ov.written;
    json!({
        "profiles": written.overrides.len() + written.profiles.len(),
        "metrics": written.metric_names.len(),
        "events": written.events.len(),
        "events_deduplicated": written.events_deduplicated,
        "catalog_items": written.catalog.items.len(),
        "catalog_variants": written.catalog.variants.len(),
        "catalog_categories": written.catalog.categories.len(),
        "jobs": written.jobs.len(),
        "jobs_in_progress": written.jobs.iter().filter(|j| j.in_progress()).count(),
    })
}

/// What was written, as `GET /klaviyo/_admin/written` serves it: `{"profiles": [{id,
/// attributes}] (generated ones a write changed, then written ones), "metrics": [{id,
/// name}], "events": [{id, metric_id, metric, profile_id, datetime, timestamp, uuid,
/// event_properties}], "events_deduplicated", "catalog_items" | "catalog_variants" |
/// "catalog_categories": [{id, attributes, item_id?, category_ids?}], "jobs": [{id, type,
/// status, total_count, completed_count, failed_count}], "counts": {…}}`.
pub(super) fn snapshot(live: &Live) -> Value {
    let now = now_ms();
    settle(live, now);
    let ov = live.overlay.read().unwrap_or_else(|p| p.into_inner());
    let mut out = json!({
        "counts": counts(&ov),
        "events_deduplicated": ov.written.events_deduplicated,
    });
    for part in Part::ALL {
        out[part.name()] = Value::Array(part_page(live, &ov, now, part, 0, usize::MAX).1);
    }
    out
}

/// Entries of one part of the written state, as `GET /klaviyo/_admin/written/{part}`
/// serves them: `{"part", "total", "offset", "next_offset" (null on the last page),
/// "data": [...]}` (the entries as in [`snapshot`]); `GET /klaviyo/_admin/written/counts`
/// serves the counts alone.
pub(super) fn written_page(live: &Live, part: Part, offset: usize, limit: usize) -> Value {
    let now = now_ms();
    settle(live, now);
    let ov = live.overlay.read().unwrap_or_else(|p| p.into_inner());
    let (total, data) = part_page(live, &ov, now, part, offset, limit);
    let end = offset.saturating_add(data.len());
    json!({
        "part": part.name(),
        "total": total,
        "offset": offset,
        "next_offset": (end < total && !data.is_empty()).then_some(end),
        "data": data,
    })
}

/// The counts of [`snapshot`] alone.
pub(super) fn written_counts(live: &Live) -> Value {
    settle(live, now_ms());
    counts(&live.overlay.read().unwrap_or_else(|p| p.into_inner()))
}

/// The most entries one page of `GET /klaviyo/_admin/written/{part}` serves (and its
/// default): a page of events of a large order is a few megabytes.
pub(super) const WRITTEN_PAGE_MAX: usize = 1_000;

async fn admin_written(State(sh): St) -> Response {
    (StatusCode::OK, axum::Json(snapshot(&sh.live()))).into_response()
}

async fn admin_written_part(
    State(sh): St,
    Path(part): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let bad =
        |msg: String| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": msg}))).into_response();
    if part == "counts" {
        return (StatusCode::OK, axum::Json(written_counts(&sh.live()))).into_response();
    }
    let Some(p) = Part::parse(&part) else {
        let names: Vec<&str> = Part::ALL.iter().map(|p| p.name()).collect();
        return bad(format!(
            "/klaviyo/_admin/written/{part}: no such part; one of counts, {}",
            names.join(", ")
        ));
    };
    let (mut offset, mut limit) = (0, WRITTEN_PAGE_MAX);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let number = |what: &str| {
            v.parse::<usize>().map_err(|_| {
                format!("/klaviyo/_admin/written/{part}: {what}={v:?} is not a whole number")
            })
        };
        match k.as_ref() {
            "offset" => match number("offset") {
                Ok(n) => offset = n,
                Err(e) => return bad(e),
            },
            "limit" => match number("limit") {
                Ok(n) if (1..=WRITTEN_PAGE_MAX).contains(&n) => limit = n,
                Ok(n) => {
                    return bad(format!(
                        "/klaviyo/_admin/written/{part}: limit={n} is outside 1..={WRITTEN_PAGE_MAX}"
                    ));
                }
                Err(e) => return bad(e),
            },
            other => {
                return bad(format!(
                    "/klaviyo/_admin/written/{part}: unknown parameter {other:?} (offset, limit)"
                ));
            }
        }
    }
    (
        StatusCode::OK,
        axum::Json(written_page(&sh.live(), p, offset, limit)),
    )
        .into_response()
}

/// A handle on a running emulation's written state, for in-process tests
/// ([`crate::klaviyo::router_with_handle`]).
#[derive(Clone)]
pub struct WrittenHandle(pub(super) Arc<Shared>);

impl WrittenHandle {
    /// What was written, as `GET /klaviyo/_admin/written` serves it (jobs that became final
    /// are applied first).
    pub fn snapshot(&self) -> Value {
        snapshot(&self.0.live())
    }

    /// [`WrittenHandle::snapshot`], typed.
    ///
    /// # Panics
    /// Never in practice: the snapshot is built in the typed shape (checked by a test).
    pub fn typed(&self) -> super::super::WrittenSnapshot {
        match serde_json::from_value(self.snapshot()) {
            Ok(s) => s,
            Err(e) => panic!("the written snapshot does not fit WrittenSnapshot: {e}"),
        }
    }
}

#[cfg(test)]
#[path = "writes_tests.rs"]
mod tests;
