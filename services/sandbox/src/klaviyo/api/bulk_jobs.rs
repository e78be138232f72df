//! Catalog bulk jobs: `POST /api/catalog-{item,variant,category}-bulk-{create,update,delete}-jobs`
//! (202 and the job; 1 to 100 objects; while 500 catalog jobs are in progress a new one is a
//! 429 `throttled` with `Retry-After` until the oldest is final) and
//! `GET …/{job_id}`: `status` `queued` → `processing` → `complete` (or `cancelled`, see
//! [`JobTiming`](super::super::JobTiming)), `total_count`, `completed_count`,
//! `failed_count`, `completed_at`, `expires_at` and `errors[]`: one JSON:API error per object
//! refused (exists already on create, missing on update or delete, a variant's item or an
//! item's category missing), `source.pointer` `/data/attributes/<items|variants|categories>/data/<n>…`.
//! The objects are written when the job becomes final, jobs in the order they were created.

use super::super::written::{Action, Job, JobKind, JobOutcome, Resource, Written};
use super::writes::{Reply, StoreOp, WriteCx, error_object, invalid_at};
use super::*;

/// Objects per catalog bulk job at most.
const MAX_JOB_OBJECTS: usize = 100;
/// Catalog bulk jobs in progress at most.
const MAX_JOBS_IN_PROGRESS: usize = 500;

/// Applies one catalog job's objects at `now_ms`.
pub(super) fn apply_catalog_job(
    w: &mut Written,
    r: Resource,
    a: Action,
    payload: &[Value],
    now_ms: i64,
) -> JobOutcome {
    let now = now_ms.div_euclid(1000);
    let mut out = JobOutcome::default();
    for (n, data) in payload.iter().enumerate() {
        let id = data["id"].as_str().unwrap_or_default();
        let result = match a {
            Action::Create => w.catalog.create(r, data, now),
            Action::Update => w.catalog.update(r, id, data, now).map(|()| id.to_owned()),
            Action::Delete => w.catalog.delete(r, id).map(|()| id.to_owned()),
        };
        match result {
            Ok(id) => {
                out.completed += 1;
                out.ids.push(id);
            }
            Err(e) => {
                out.failed += 1;
                let pointer = format!("/data/attributes/{}/data/{n}{}", r.plural(), e.pointer);
                out.errors
                    .push(error_object(e.status, e.code, e.title, &e.detail, &pointer));
            }
        }
    }
    out
}

/// Whether the `k`-th job ends `cancelled` at share `share` (a hash of `k` and the seed).
pub(super) fn catalog_job_cancelled(share: f64, seed: u64, k: u64) -> bool {
    let draw = (h3(seed, 0xCA7, k, 0) >> 11) as f64 / (1u64 << 53) as f64;
    share > 0.0 && draw < share
}

impl WriteCx<'_> {
    /// `POST /api/catalog-…-bulk-…-jobs`.
    pub(super) fn catalog_bulk(
        &self,
        ov: &mut Overlay,
        r: Resource,
        a: Action,
        doc: &Value,
    ) -> Result<Reply, ApiErr> {
        let objects = doc["data"]["attributes"][r.plural()]["data"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if objects.is_empty() || objects.len() > MAX_JOB_OBJECTS {
            return Err(invalid_at(
                format!("/data/attributes/{}/data", r.plural()),
                format!(
                    "A bulk {} job takes 1 to {MAX_JOB_OBJECTS} {}, not {}.",
                    a.name(),
                    r.plural(),
                    objects.len()
                ),
            ));
        }
        let in_progress = ov.written.catalog_jobs_in_progress();
        if in_progress >= MAX_JOBS_IN_PROGRESS {
            let oldest = ov.written.jobs[ov.written.applied..]
                .iter()
                .map(|j| j.done_ms)
                .min()
                .unwrap_or(self.now_ms);
            let wait = ((oldest - self.now_ms).max(0) as u64).div_ceil(1000).max(1);
            let mut resp = ApiErr {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "throttled",
                title: "Request was throttled.",
                detail: format!(
                    "{MAX_JOBS_IN_PROGRESS} catalog bulk jobs are in progress; a new one is \
                     accepted when one of them is final. Expected available in {wait} second{}.",
                    if wait == 1 { "" } else { "s" }
                ),
                source: None,
            }
            .response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return Ok(Reply::Raw(resp));
        }
        let k = ov.written.jobs.len() as u64;
        let cancel = catalog_job_cancelled(
            self.live.config.jobs.cancelled_share,
            self.live.data.spec.seed,
            k,
        );
        let job = self.new_job(ov, JobKind::Catalog(r, a), objects, cancel);
        let cx = self.ctx(ov, Ep::Store(StoreOp::CatalogJob(r, a)));
        let doc = cx.catalog_job_doc(&ov.written.jobs[job], r, a);
        Ok(Reply::Doc(StatusCode::ACCEPTED, doc))
    }
}

impl Ctx<'_> {
    /// The document of catalog job `job`.
    pub(super) fn catalog_job_doc(&self, job: &Job, r: Resource, a: Action) -> Value {
        let now = super::writes::now_ms();
        let o = job.outcome.clone().unwrap_or_default();
        let done = job.outcome.is_some();
        let b = &self.base;
        let id = &job.id;
        let path = super::writes::job_path(r, a);
        let ms_time = |ms: i64| fmt_time(ms.div_euclid(1000));
        let rel = r.plural();
        let mut relationships = json!({
            rel: {"links": {
                "self": format!("{b}/api/{path}/{id}/relationships/{rel}/"),
                "related": format!("{b}/api/{path}/{id}/{rel}/"),
            }},
        });
        if a != Action::Delete {
            relationships[rel]["data"] = o
                .ids
                .iter()
                .map(|x| json!({"type": r.type_name(), "id": x}))
                .collect();
        }
        let data = json!({
            "type": JobKind::Catalog(r, a).type_name(),
            "id": id,
            "attributes": {
                "status": job.status(now),
                "created_at": ms_time(job.created_ms),
                "total_count": job.payload.len(),
                "completed_count": o.completed,
                "failed_count": o.failed,
                "completed_at": if done { json!(ms_time(job.done_ms)) } else { Value::Null },
                "errors": o.errors,
                "expires_at": ms_time(job.created_ms + 7 * 86_400_000),
            },
            "relationships": relationships,
            "links": {"self": format!("{b}/api/{path}/{id}/")},
        });
        let mut doc = json!({"data": data, "links": {"self": format!("{b}/api/{path}/{id}/")}});
        if !self.includes().is_empty() {
            let cat = &self.ov.written.catalog;
            doc["included"] = o
                .ids
                .iter()
                .filter_map(|x| cat.map(r).get(x).map(|obj| self.catalog_json(r, x, obj)))
                .collect();
        }
        doc
    }

    /// `GET /api/catalog-…-bulk-…-jobs/{job_id}`.
    pub(super) fn catalog_job(&self, r: Resource, a: Action) -> Result<Value, ApiErr> {
        let job = self
            .ov
            .written
            .job(&self.id, JobKind::Catalog(r, a))
            .ok_or_else(|| ApiErr::not_found(format!("Job {} not found.", self.id)))?;
        Ok(self.catalog_job_doc(job, r, a))
    }
}

const PROFILE_JOBS_ALLOWED: Allowed = &[("status", &[Op::Any, Op::Equals])];
const CATALOG_JOBS_ALLOWED: Allowed = &[("status", &[Op::Equals])];

impl Ctx<'_> {
    /// `GET /api/profile-bulk-import-jobs` and `GET /api/catalog-…-bulk-…-jobs`: the jobs of
    /// `kind` in creation order (newest first with a `-` sort), offset pages.
    pub(super) fn jobs(&self, kind: JobKind) -> Result<Value, ApiErr> {
        let (page, allowed) = match kind {
            JobKind::Profiles => (self.page(20, 100)?, PROFILE_JOBS_ALLOWED),
            JobKind::Catalog(..) => (self.page(100, 100)?, CATALOG_JOBS_ALLOWED),
        };
        let conds = self.filter(&page, allowed)?;
        let now = super::writes::now_ms();
        let jobs = &self.ov.written.jobs;
        let mut all: Vec<usize> = (0..jobs.len())
            .filter(|&k| {
                jobs[k].kind == kind
                    && conds
                        .iter()
                        .all(|c| text_value(c).contains(&jobs[k].status(now)))
            })
            .collect();
        if page.sort.as_deref().is_some_and(|s| s.starts_with('-')) {
            all.reverse();
        }
        let mut doc = self.offset_page(&page, all, |k| match kind {
            JobKind::Profiles => self.profile_job_doc(&jobs[k])["data"].clone(),
            JobKind::Catalog(r, a) => self.catalog_job_doc(&jobs[k], r, a)["data"].clone(),
        })?;
        if let Some(o) = doc.as_object_mut()
            && self.includes().is_empty()
        {
            o.remove("included");
        }
        Ok(doc)
    }
}
