//! Profile writes: `POST /api/profiles` (create only), `PATCH /api/profiles/{id}`,
//! `POST /api/profile-import` (upsert), `POST /api/profile-bulk-import-jobs` and the reads of
//! import jobs and their `import-errors`.
//!
//! A write finds its profile by `id`, else by `email` (case-insensitive), `phone_number`,
//! `external_id`, in that order; identifiers belonging to two different profiles are a
//! `duplicate_profile` conflict. An omitted field is kept, `null` clears it, `location` and
//! `properties` are merged member by member. A new profile gets a ULID of the time it was
//! written (after every generated one). Refused: an `email` that is not an address, a
//! `phone_number` that is not E.164 ([`valid_phone`]; e.g. `0612345678` or `+1 555 0100`),
//! and a new profile without any of `email`, `phone_number`, `external_id`, `anonymous_id`.
//! A single write answers 400 with `source.pointer` to the attribute; a bulk import job
//! lists the profile as an import error with that pointer under
//! `/data/attributes/profiles/data/<n>` and its `original_payload`.
//!
//! Not modelled: list memberships (`relationships.lists` of an import job is accepted and
//! ignored; written profiles belong to no list or segment), `meta.patch_properties`, `_kx`.

use super::super::written::{
    IDENTIFIERS, JobKind, JobOutcome, WrittenProfile, merge_profile, valid_email, valid_phone,
};
use super::writes::{Reply, StoreOp, WriteCx, error_object, invalid_at, job_id};
use super::*;

/// Profiles per bulk import job at most.
const MAX_IMPORT_PROFILES: usize = 10_000;
/// Bytes per profile of a bulk import job at most.
const MAX_PROFILE_BYTES: usize = 100 * 1024;
/// Klaviyo's detail for a phone number it cannot parse.
const BAD_PHONE: &str = "Invalid phone number format (Example of a valid format: +13239169023)";

/// Why one profile write was refused: status, code, title, detail, and the pointer
/// relative to the profile resource object (`/attributes/phone_number`).
pub(super) struct ProfileError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub pointer: String,
    /// The profile the identifiers already belong to (`duplicate_profile`).
    pub duplicate: Option<String>,
}

fn bad(pointer: &str, detail: impl Into<String>) -> ProfileError {
    ProfileError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid",
        title: "Invalid input.",
        detail: detail.into(),
        pointer: pointer.to_owned(),
        duplicate: None,
    }
}

/// The text of identifier `f` in `attrs`, if given and not null.
fn ident<'a>(attrs: &'a Map<String, Value>, f: &str) -> Option<&'a str> {
    attrs
        .get(f)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Checks the identifiers a write gives.
fn check_attributes(attrs: &Map<String, Value>, has_id: bool) -> Result<(), ProfileError> {
    if let Some(e) = ident(attrs, "email")
        && !valid_email(e)
    {
        return Err(bad(
            "/attributes/email",
            format!("Invalid email address: '{e}'."),
        ));
    }
    if let Some(p) = ident(attrs, "phone_number")
        && !valid_phone(p)
    {
        return Err(bad("/attributes/phone_number", BAD_PHONE));
    }
    let identified = has_id
        || ["email", "phone_number", "external_id", "anonymous_id"]
            .iter()
            .any(|f| ident(attrs, f).is_some());
    if !identified {
        return Err(bad(
            "/attributes",
            "One of email, phone_number, external_id or anonymous_id is required.",
        ));
    }
    Ok(())
}

/// The key of identifier `f` with value `v` in [`Written::identifiers`].
fn ident_key(f: &str, v: &str) -> Option<(&'static str, String)> {
    Some(match f {
        "email" => ("email", v.to_ascii_lowercase()),
        "phone_number" => ("phone_number", v.to_owned()),
        "external_id" => ("external_id", v.to_owned()),
        _ => return None,
    })
}

/// The generated profile with identifier `f` = `v`, unless a write changed it.
fn generated_by(d: &Dataset, ov: &Overlay, f: &str, v: &str) -> Option<u64> {
    let i = match f {
        "email" => d.profile_by_email(v),
        "phone_number" => d.profile_by_phone(v),
        _ => d.profile_by_external_id(v),
    }?;
    let changed = ov
        .written
        .overrides
        .get(&i)
        .is_some_and(|o| o.contains_key(f));
    (!changed).then_some(i)
}

/// The profile whose identifier `f` is `v`: as a write set it, else the generated one
/// (unless a write changed that identifier of it).
pub(super) fn identified(d: &Dataset, ov: &Overlay, f: &str, v: &str) -> Option<u64> {
    ident_key(f, v)
        .and_then(|k| ov.written.identifiers.get(&k).copied())
        .or_else(|| generated_by(d, ov, f, v))
}

/// The profile a write with `id` and `attrs` is about: `Ok(None)` when there is none yet.
pub(super) fn find_profile(
    d: &Dataset,
    ov: &Overlay,
    id: Option<&str>,
    attrs: &Map<String, Value>,
) -> Result<Option<u64>, ProfileError> {
    if let Some(id) = id {
        let i = d
            .profile_index(id)
            .or_else(|| ov.written.profile_ids.get(id).copied());
        return match i {
            Some(i) => Ok(Some(i)),
            None => Err(ProfileError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                title: "Not found.",
                detail: format!("Profile {id} not found."),
                pointer: "/id".to_owned(),
                duplicate: None,
            }),
        };
    }
    let mut found: Option<u64> = None;
    for f in IDENTIFIERS {
        let Some(v) = ident(attrs, f) else { continue };
        let hit = identified(d, ov, f, v);
        match (found, hit) {
            (_, None) => {}
            (None, Some(h)) => found = Some(h),
            (Some(a), Some(h)) if a == h => {}
            (Some(_), Some(h)) => {
                let id = if h < d.spec.profiles {
                    d.profile_id(h)
                } else {
                    ov.written.profiles[(h - d.spec.profiles) as usize]
                        .id
                        .clone()
                };
                return Err(ProfileError {
                    status: StatusCode::CONFLICT,
                    code: "duplicate_profile",
                    title: "Conflict.",
                    detail: format!(
                        "The {f} '{v}' belongs to another profile than the other identifiers."
                    ),
                    pointer: format!("/attributes/{f}"),
                    duplicate: Some(id),
                });
            }
        }
    }
    Ok(found)
}

/// A ULID for a profile written at `now_ms` (its creation milliseconds first, then the
/// written profile's number, so written ids sort in creation order).
fn written_profile_id(now_ms: i64, k: u64) -> String {
    const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let ms = now_ms.max(0) as u64 & 0xFFFF_FFFF_FFFF;
    let value: u128 =
        (u128::from(ms) << 80) | (u128::from(k) << 40) | u128::from(mix64(k) & 0xFF_FFFF_FFFF);
    (0..26)
        .map(|i| {
            let shift = 125 - 5 * i as u32;
            CROCKFORD[((value >> shift) & 31) as usize] as char
        })
        .collect()
}

/// Writes `attrs` to profile `i` (or a new profile when `None`) at `now_ms`; the profile's
/// index and whether it was created.
pub(super) fn upsert(
    d: &Dataset,
    ov: &mut Overlay,
    i: Option<u64>,
    attrs: &Map<String, Value>,
    now_ms: i64,
) -> (u64, bool) {
    let now = now_ms.div_euclid(1000);
    let n = d.spec.profiles;
    let (i, created) = match i {
        Some(i) => (i, false),
        None => {
            let k = ov.written.profiles.len() as u64;
            // Keep ids in creation order even if the clock steps back.
            let last_ms = ov
                .written
                .profiles
                .last()
                .map_or(0, |p| p.created.saturating_mul(1000));
            let id = written_profile_id(now_ms.max(last_ms), k);
            ov.written.profile_ids.insert(id.clone(), n + k);
            ov.written.profiles.push(WrittenProfile {
                id,
                attributes: Map::new(),
                created: now,
                updated: now,
                last_event: None,
            });
            (n + k, true)
        }
    };
    // The identifiers it had, to re-index those the write changes.
    let old: Vec<(&'static str, Option<String>)> = IDENTIFIERS
        .iter()
        .filter(|f| attrs.contains_key(**f))
        .map(|f| {
            let v = if i < n {
                let over = ov.written.overrides.get(&i).and_then(|o| o.get(*f));
                match over {
                    Some(v) => v.as_str().map(str::to_owned),
                    None => match *f {
                        "email" => Some(d.profile_email(i)),
                        "phone_number" => d.profile_phone(i),
                        _ => d.profile_external_id(i),
                    },
                }
            } else {
                ov.written.profiles[(i - n) as usize]
                    .attributes
                    .get(*f)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            (*f, v)
        })
        .collect();
    if i < n {
        merge_profile(ov.written.overrides.entry(i).or_default(), attrs);
        ov.touched.insert(i, now);
    } else {
        let p = &mut ov.written.profiles[(i - n) as usize];
        merge_profile(&mut p.attributes, attrs);
        p.updated = now;
    }
    for (f, before) in old {
        if let Some(k) = before.and_then(|b| ident_key(f, &b))
            && ov.written.identifiers.get(&k) == Some(&i)
        {
            ov.written.identifiers.remove(&k);
        }
        if let Some(k) = ident(attrs, f).and_then(|v| ident_key(f, v)) {
            ov.written.identifiers.insert(k, i);
        }
    }
    (i, created)
}

/// Finds or creates the profile of one write and writes it: its index and whether it was
/// created. `create_only` refuses an existing one (409 `duplicate_profile`).
pub(super) fn write_profile(
    d: &Dataset,
    ov: &mut Overlay,
    data: &Value,
    create_only: bool,
    now_ms: i64,
) -> Result<(u64, bool), ProfileError> {
    let attrs = data["attributes"].as_object().cloned().unwrap_or_default();
    let id = data["id"].as_str().filter(|s| !s.is_empty());
    check_attributes(&attrs, id.is_some())?;
    let found = find_profile(d, ov, id, &attrs)?;
    if create_only && let Some(i) = found {
        let id = if i < d.spec.profiles {
            d.profile_id(i)
        } else {
            ov.written.profiles[(i - d.spec.profiles) as usize]
                .id
                .clone()
        };
        return Err(ProfileError {
            status: StatusCode::CONFLICT,
            code: "duplicate_profile",
            title: "Conflict.",
            detail: "A profile already exists with one of these identifiers.".to_owned(),
            pointer: "/attributes".to_owned(),
            duplicate: Some(id),
        });
    }
    Ok(upsert(d, ov, found, &attrs, now_ms))
}

/// Checks a profile write without writing (what [`write_profile`] would refuse).
pub(super) fn check_profile(d: &Dataset, ov: &Overlay, data: &Value) -> Result<(), ProfileError> {
    let attrs = data["attributes"].as_object().cloned().unwrap_or_default();
    let id = data["id"].as_str().filter(|s| !s.is_empty());
    check_attributes(&attrs, id.is_some())?;
    find_profile(d, ov, id, &attrs).map(|_| ())
}

/// Applies a profile import job's profiles: each upserted, or an import error.
pub(super) fn apply_profile_job(
    d: &Dataset,
    ov: &mut Overlay,
    payload: &[Value],
    now_ms: i64,
) -> JobOutcome {
    let mut out = JobOutcome::default();
    for (n, data) in payload.iter().enumerate() {
        match write_profile(d, ov, data, false, now_ms) {
            Ok((i, _)) => {
                out.completed += 1;
                let id = if i < d.spec.profiles {
                    d.profile_id(i)
                } else {
                    ov.written.profiles[(i - d.spec.profiles) as usize]
                        .id
                        .clone()
                };
                out.ids.push(id);
            }
            Err(e) => {
                out.failed += 1;
                let pointer = format!("/data/attributes/profiles/data/{n}{}", e.pointer);
                let err = error_object(e.status.as_u16(), e.code, e.title, &e.detail, &pointer);
                out.import_errors.push(json!({
                    "type": "import-error",
                    "id": err["id"],
                    "attributes": {
                        "code": e.code,
                        "title": e.title,
                        "detail": e.detail,
                        "source": {"pointer": pointer},
                        "original_payload": data.get("attributes").cloned().unwrap_or(Value::Null),
                    },
                    "links": {"self": Value::Null},
                }));
            }
        }
    }
    out
}

impl WriteCx<'_> {
    /// `POST /api/profiles`, `PATCH /api/profiles/{id}`, `POST /api/profile-import`.
    pub(super) fn profile_write(
        &self,
        ov: &mut Overlay,
        op: StoreOp,
        doc: &Value,
    ) -> Result<Reply, ApiErr> {
        let mut data = doc["data"].clone();
        if op == StoreOp::UpdateProfile {
            if data["id"].as_str() != Some(self.id) {
                return Err(ApiErr {
                    status: StatusCode::CONFLICT,
                    code: "conflict",
                    title: "Conflict.",
                    detail: format!(
                        "The id in the body ({}) is not the id in the path ({}).",
                        data["id"], self.id
                    ),
                    source: Some(("pointer", "/data/id".into())),
                });
            }
        } else if op == StoreOp::CreateProfile {
            // Create only: the id is Klaviyo's to give.
            if let Some(o) = data.as_object_mut() {
                o.remove("id");
            }
        }
        let create_only = op == StoreOp::CreateProfile;
        let (i, created) = match write_profile(&self.live.data, ov, &data, create_only, self.now_ms)
        {
            Ok(x) => x,
            Err(e) => return Ok(Reply::Raw(e.response("/data"))),
        };
        let cx = self.ctx(ov, Ep::Store(op));
        // The profile as `GET /api/profiles/{id}` serves it.
        let resource = cx.profile_json(i, None);
        let links = json!({"self": resource["links"]["self"].clone()});
        let doc = json!({"data": resource, "links": links});
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(Reply::Doc(status, doc))
    }

    /// `POST /api/profile-bulk-import-jobs`: checks the limits, queues the job.
    pub(super) fn bulk_import(&self, ov: &mut Overlay, doc: &Value) -> Result<Reply, ApiErr> {
        let profiles = doc["data"]["attributes"]["profiles"]["data"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if profiles.is_empty() || profiles.len() > MAX_IMPORT_PROFILES {
            return Err(invalid_at(
                "/data/attributes/profiles/data",
                format!(
                    "A bulk import job takes 1 to {MAX_IMPORT_PROFILES} profiles, not {}.",
                    profiles.len()
                ),
            ));
        }
        for (n, p) in profiles.iter().enumerate() {
            let size = serde_json::to_vec(p).map(|b| b.len()).unwrap_or(0);
            if size > MAX_PROFILE_BYTES {
                return Err(invalid_at(
                    format!("/data/attributes/profiles/data/{n}"),
                    format!(
                        "A profile is at most 100 KB ({MAX_PROFILE_BYTES} bytes), this one {size}."
                    ),
                ));
            }
        }
        let job = self.new_job(ov, JobKind::Profiles, profiles, false);
        let cx = self.ctx(ov, Ep::Store(StoreOp::ProfileJob));
        let doc = cx.profile_job_doc(&ov.written.jobs[job]);
        Ok(Reply::Doc(StatusCode::ACCEPTED, doc))
    }

    /// Queues a job of `kind` over `payload`; its position in [`Written::jobs`].
    pub(super) fn new_job(
        &self,
        ov: &mut Overlay,
        kind: JobKind,
        payload: Vec<Value>,
        cancel: bool,
    ) -> usize {
        let timing = &self.live.config.jobs;
        let k = ov.written.jobs.len();
        let id = job_id(kind, k as u64, self.live.data.spec.seed);
        let started_ms = self.now_ms + timing.queued_ms as i64;
        ov.written.job_index.insert(id.clone(), k);
        ov.written.jobs.push(super::super::written::Job {
            id,
            kind,
            created_ms: self.now_ms,
            started_ms,
            done_ms: started_ms + timing.processing_ms as i64,
            cancel,
            payload,
            outcome: None,
        });
        k
    }
}

impl ProfileError {
    /// The error response of a single write, the pointer under `prefix`; a
    /// `duplicate_profile` carries `meta.duplicate_profile_id`.
    pub(super) fn response(&self, prefix: &str) -> Response {
        let mut body = ApiErr {
            status: self.status,
            code: self.code,
            title: self.title,
            detail: self.detail.clone(),
            source: Some(("pointer", format!("{prefix}{}", self.pointer))),
        }
        .body();
        if let Some(id) = &self.duplicate {
            body["errors"][0]["meta"] = json!({"duplicate_profile_id": id});
        }
        json_response(self.status, &body)
    }
}

impl Ctx<'_> {
    /// The job document of a profile import job.
    pub(super) fn profile_job_doc(&self, job: &super::super::written::Job) -> Value {
        let now = super::writes::now_ms();
        let o = job.outcome.clone().unwrap_or_default();
        let done = job.outcome.is_some();
        let b = &self.base;
        let id = &job.id;
        let ms_time = |ms: i64| fmt_time(ms.div_euclid(1000));
        let data = json!({
            "type": "profile-bulk-import-job",
            "id": id,
            "attributes": {
                "status": job.status(now),
                "created_at": ms_time(job.created_ms),
                "total_count": job.payload.len(),
                "completed_count": o.completed,
                "failed_count": o.failed,
                "completed_at": if done { json!(ms_time(job.done_ms)) } else { Value::Null },
                "expires_at": ms_time(job.created_ms + 7 * 86_400_000),
                "started_at": if now >= job.started_ms { json!(ms_time(job.started_ms)) } else { Value::Null },
            },
            "relationships": {
                "lists": {"data": [], "links": {
                    "self": format!("{b}/api/profile-bulk-import-jobs/{id}/relationships/lists/"),
                    "related": format!("{b}/api/profile-bulk-import-jobs/{id}/lists/"),
                }},
                "profiles": {"links": {
                    "self": format!("{b}/api/profile-bulk-import-jobs/{id}/relationships/profiles/"),
                    "related": format!("{b}/api/profile-bulk-import-jobs/{id}/profiles/"),
                }},
                "import-errors": {"links": {
                    "related": format!("{b}/api/profile-bulk-import-jobs/{id}/import-errors/"),
                }},
            },
            "links": {"self": format!("{b}/api/profile-bulk-import-jobs/{id}/")},
        });
        json!({"data": data, "links": {"self": format!("{b}/api/profile-bulk-import-jobs/{id}/")}})
    }

    fn the_profile_job(&self) -> Result<&super::super::written::Job, ApiErr> {
        self.ov
            .written
            .job(&self.id, JobKind::Profiles)
            .ok_or_else(|| ApiErr::not_found(format!("Bulk import job {} not found.", self.id)))
    }

    /// `GET /api/profile-bulk-import-jobs/{id}`.
    pub(super) fn profile_job(&self) -> Result<Value, ApiErr> {
        Ok(self.profile_job_doc(self.the_profile_job()?))
    }

    /// `GET /api/profile-bulk-import-jobs/{id}/import-errors`: offset pages (20 / 100).
    pub(super) fn import_errors(&self) -> Result<Value, ApiErr> {
        let job = self.the_profile_job()?;
        let page = self.page(20, 100)?;
        let errors = job
            .outcome
            .as_ref()
            .map(|o| o.import_errors.as_slice())
            .unwrap_or_default();
        let fields = self.q.list("fields[import-error]");
        self.offset_page(&page, (0..errors.len()).collect(), |n| {
            let mut e = errors[n].clone();
            if let Some(a) = e["attributes"].as_object().cloned() {
                e["attributes"] = Value::Object(sparse(a, &fields));
            }
            e["links"] = json!({"self": format!("{}/api/import-errors/{}/", self.base, e["id"].as_str().unwrap_or_default())});
            e
        })
    }
}
