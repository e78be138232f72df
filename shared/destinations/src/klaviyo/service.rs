//! The HTTP client of Klaviyo's write API, as the destination uses it: bulk jobs created
//! and polled, profile import errors paged, catalog ids looked up.
//!
//! - Headers: `Authorization: Klaviyo-API-Key <key>` (marked sensitive, never logged; error
//!   texts are scrubbed of it should Klaviyo echo it), `revision`, `accept` and
//!   `content-type: application/vnd.api+json`.
//! - Rate limits: one token bucket per account and operation (Klaviyo limits every endpoint
//!   on its own), with the limits of the operation's tier (`x-klaviyo-ratelimit` in
//!   `specs/klaviyo/{profiles,events,catalogs}.json`, see [`Call`]) divided by the live
//!   loader count, corrected from `RateLimit-*` and stopped by a 429's `Retry-After` — the
//!   Klaviyo source's limiter (`sluice_connectors::klaviyo::limiter`).
//! - Retries, as Klaviyo's SDKs: 429 is waited out (`Retry-After`, at most
//!   `max_throttle_waits` times), 503/504/524 and connection failures or timeouts are sent
//!   again [`TRANSIENT_RETRIES`] times (0.25 s doubling); then, and for any other 5xx, a
//!   transient [`StoreError`] (the loader retries the part). Sending a bulk job twice is
//!   harmless: every write of the destination is idempotent.
//! - 400, 409, 413 and 422 come back as [`Answer::Refused`] with Klaviyo's JSON:API errors,
//!   so the caller can find the objects refused (`source.pointer`), a 404 to a GET as
//!   [`Answer::NotFound`]; other 4xx are permanent
//!   errors (a wrong key, a missing scope: nothing a retry can fix).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use sluice_connectors::klaviyo::client::{describe_reqwest, error_detail, observe, retry_after};
use sluice_connectors::klaviyo::limiter::{Limiters, Tier};
use sluice_connectors::telemetry;
use sluice_store::StoreError;

/// In-process retries of a 503/504/524 or a failed connection (beyond the 429 waits).
pub const TRANSIENT_RETRIES: u32 = 3;

/// Catalog lookups (`any(ids,[…])`, 100 ids each) one call keeps in flight.
const LOOKUPS_IN_FLIGHT: usize = 4;

/// The `api` label of the destination's requests in the HTTP metrics.
const API: &str = "klaviyo";

/// One Klaviyo operation: the bucket it spends (`method` and path without ids, as
/// `POST /api/profile-bulk-import-jobs`) and its rate-limit tier from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The operation's name, the key of its bucket.
    pub operation: String,
    /// Its tier: M is 10/s 150/m, L 75/s 750/m, XL 350/s 3500/m.
    pub tier: Tier,
}

impl Call {
    /// `POST /api/profile-bulk-import-jobs` (`bulk_import_profiles`, 10/s 150/m).
    pub fn create_profile_import_job() -> Self {
        Self::new("POST /api/profile-bulk-import-jobs", Tier::M)
    }
    /// `GET /api/profile-bulk-import-jobs/{job_id}` (10/s 150/m).
    pub fn get_profile_import_job() -> Self {
        Self::new("GET /api/profile-bulk-import-jobs/{id}", Tier::M)
    }
    /// `GET /api/profile-bulk-import-jobs/{id}/import-errors` (10/s 150/m).
    pub fn get_import_errors() -> Self {
        Self::new(
            "GET /api/profile-bulk-import-jobs/{id}/import-errors",
            Tier::M,
        )
    }
    /// `POST /api/event-bulk-create-jobs` (`bulk_create_events`, 10/s 150/m).
    pub fn create_event_bulk_job() -> Self {
        Self::new("POST /api/event-bulk-create-jobs", Tier::M)
    }
    /// `POST /api/catalog-<kind>-bulk-<action>-jobs` (75/s 750/m).
    pub fn create_catalog_job(collection: &str) -> Self {
        Self::new(&format!("POST /api/{collection}"), Tier::L)
    }
    /// `GET /api/catalog-<kind>-bulk-<action>-jobs/{job_id}`: 75/s 750/m for item and
    /// variant create/update jobs, 350/s 3500/m for category jobs and every delete job.
    pub fn get_catalog_job(collection: &str) -> Self {
        let tier = if collection.starts_with("catalog-category") || collection.contains("-delete-")
        {
            Tier::Xl
        } else {
            Tier::L
        };
        Self::new(&format!("GET /api/{collection}/{{id}}"), tier)
    }
    /// `GET /api/catalog-items|catalog-variants|catalog-categories` and
    /// `GET /api/catalog-items/{id}/variants` (350/s 3500/m).
    pub fn get_catalog(path: &str) -> Self {
        Self::new(&format!("GET {path}"), Tier::Xl)
    }
    /// `GET /api/accounts` (1/s 15/m).
    pub fn get_accounts() -> Self {
        Self::new("GET /api/accounts", Tier::Xs)
    }

    fn new(operation: &str, tier: Tier) -> Self {
        Self {
            operation: operation.to_string(),
            tier,
        }
    }
}

/// A JSON:API error object as Klaviyo sends it (`errors[]` of a 4xx, a catalog job's
/// `errors[]`, a profile import error's `attributes`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ApiError {
    /// `code`: `invalid`, `duplicate_profile`, `throttled`, …
    #[serde(default)]
    pub code: String,
    /// `title`: a high-level message.
    #[serde(default)]
    pub title: String,
    /// `detail`: what was wrong.
    #[serde(default)]
    pub detail: String,
    /// `source`: where in the request body (`pointer`, a JSON pointer).
    #[serde(default)]
    pub source: ErrorSource,
}

/// `source` of an [`ApiError`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ErrorSource {
    /// JSON pointer into the request body (`/data/attributes/items/data/3/attributes/title`).
    #[serde(default)]
    pub pointer: Option<String>,
}

impl ApiError {
    /// `code: detail (pointer)`, as error texts show it.
    pub fn describe(&self) -> String {
        let mut s = match (self.code.as_str(), self.detail.as_str()) {
            ("", "") => self.title.clone(),
            (c, "") => format!("{c}: {}", self.title),
            ("", d) => d.to_string(),
            (c, d) => format!("{c}: {d}"),
        };
        if let Some(p) = self.source.pointer.as_deref().filter(|p| !p.is_empty()) {
            s.push_str(&format!(" (pointer {p})"));
        }
        s
    }
}

/// Klaviyo's answer to a request that it did not fail outright.
#[derive(Debug)]
pub enum Answer {
    /// 2xx: the document, or `None` for an empty body (202 of event bulk jobs, 204).
    Ok(Option<Value>),
    /// 404 to a GET: the resource does not exist.
    NotFound,
    /// 400/409/413/422: the request was refused for what it carries.
    Refused {
        /// The HTTP status.
        status: u16,
        /// Klaviyo's `errors[]` (empty when the body had none).
        errors: Vec<ApiError>,
        /// The errors as one text (or the body's start).
        detail: String,
    },
}

/// A place in an operation's rate limit, taken by [`Service::turn`] and spent by
/// [`Service::send_in_turn`].
#[derive(Debug)]
pub struct Turn(());

/// Status of a bulk job (`data.attributes` of `…-bulk-…-jobs/{id}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job id Klaviyo generated.
    pub id: String,
    /// `queued`, `processing`, `complete` or `cancelled`.
    pub status: String,
    /// `total_count`: operations in the job.
    pub total_count: u64,
    /// `completed_count`.
    pub completed_count: u64,
    /// `failed_count`.
    pub failed_count: u64,
    /// `errors[]` (catalog jobs; profile jobs page theirs at `import-errors`).
    pub errors: Vec<ApiError>,
}

impl Job {
    /// Whether the job reached a final state (`complete` or `cancelled`).
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "complete" | "cancelled")
    }

    /// Decodes a job document (`{"data": {"id", "attributes": {…}}}`).
    ///
    /// # Errors
    /// What is missing, for the caller's message.
    pub fn decode(doc: &Value) -> Result<Self, String> {
        let data = doc.get("data").ok_or("no `data`")?;
        let id = data
            .get("id")
            .and_then(Value::as_str)
            .ok_or("no `data.id`")?
            .to_string();
        let attributes = data.get("attributes").ok_or("no `data.attributes`")?;
        let status = attributes
            .get("status")
            .and_then(Value::as_str)
            .ok_or("no `data.attributes.status`")?
            .to_string();
        let count = |k: &str| attributes.get(k).and_then(Value::as_u64).unwrap_or(0);
        let errors = match attributes.get("errors") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|e| serde_json::from_value(e.clone()).unwrap_or_default())
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            id,
            status,
            total_count: count("total_count"),
            completed_count: count("completed_count"),
            failed_count: count("failed_count"),
            errors,
        })
    }
}

/// One failed profile of a profile import job (`GET …/import-errors`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportError {
    /// The error.
    pub error: ApiError,
    /// `original_payload`: the profile as sent (may be null).
    pub original_payload: Value,
}

/// Settings of the client of one account.
#[derive(Clone)]
pub struct ServiceConfig {
    /// The destination's name, for messages.
    pub destination: String,
    /// The Klaviyo account name (the limiter key).
    pub account: String,
    /// API origin, `https://a.klaviyo.com` (may carry a path prefix).
    pub base_url: String,
    /// Private API key.
    pub api_key: SecretString,
    /// `revision` header (`YYYY-MM-DD`).
    pub revision: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// 429s waited in process per request.
    pub max_throttle_waits: u32,
    /// Longest `Retry-After` waited in process.
    pub max_retry_after: Duration,
}

/// The client.
pub struct Service {
    http: reqwest::Client,
    base: String,
    config: ServiceConfig,
    limiters: Arc<Limiters>,
}

impl Service {
    /// Builds the client (no request is sent).
    ///
    /// # Errors
    /// Permanent when the base URL is not http(s) or the key or revision is not a valid
    /// header value.
    pub fn new(config: ServiceConfig, limiters: Arc<Limiters>) -> Result<Self, StoreError> {
        let base = config.base_url.trim_end_matches('/').to_string();
        let name = &config.destination;
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(crate::config_error(format!(
                "destination {name}: the Klaviyo account {:?} has base_url {:?}, not an http(s) URL",
                config.account, base
            )));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        let mut auth = reqwest::header::HeaderValue::from_str(&format!(
            "Klaviyo-API-Key {}",
            config.api_key.expose_secret()
        ))
        .map_err(|_| {
            crate::config_error(format!(
                "destination {name}: the API key of Klaviyo account {:?} contains characters not allowed in a header",
                config.account
            ))
        })?;
        auth.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        headers.insert(
            "revision",
            reqwest::header::HeaderValue::from_str(&config.revision).map_err(|_| {
                crate::config_error(format!(
                    "destination {name}: connectors.klaviyo.revision {:?} is not a valid header value",
                    config.revision
                ))
            })?,
        );
        headers.insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static("application/vnd.api+json"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            // Not followed: the key must never leave the configured origin.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::config_error(format!("destination {name}: HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            config,
            limiters,
        })
    }

    pub(crate) fn error(&self, message: String, transient: bool) -> StoreError {
        let key = self.config.api_key.expose_secret();
        let message = if key.len() >= 4 && message.contains(key) {
            message.replace(key, "[REDACTED]")
        } else {
            message
        };
        StoreError::Destination {
            message: format!(
                "destination {} (klaviyo): {message}",
                self.config.destination
            ),
            transient,
        }
    }

    /// Sends one request (`rel`: path and query, `/api/…`) with `body` as JSON:API, rate
    /// limited and retried as the module documentation says.
    ///
    /// # Errors
    /// Transient: throttling past the waits, 5xx, timeouts; permanent: 4xx other than the
    /// [`Answer::Refused`] ones, redirects, undecodable 2xx bodies.
    pub async fn send(
        &self,
        call: &Call,
        method: Method,
        rel: &str,
        body: Option<&Value>,
    ) -> Result<Answer, StoreError> {
        self.send_in_turn(None, call, method, rel, body).await
    }

    /// Waits until `call`'s rate limit lets one request go, and takes that place: the
    /// request is then sent with [`Service::send_in_turn`]. For a caller that builds the
    /// request from what gathered while it waited (events of several parts in one job).
    pub async fn turn(&self, call: &Call) -> Turn {
        let bucket =
            self.limiters
                .operation_bucket(&self.config.account, &call.operation, call.tier);
        let waiting = Instant::now();
        bucket.acquire().await;
        telemetry::waited(API, waiting.elapsed());
        Turn(())
    }

    /// [`Service::send`], the first attempt spending `turn` (taken by [`Service::turn`] for
    /// the same `call`) instead of waiting again; retries wait as usual.
    ///
    /// # Errors
    /// As [`Service::send`].
    pub async fn send_in_turn(
        &self,
        turn: Option<Turn>,
        call: &Call,
        method: Method,
        rel: &str,
        body: Option<&Value>,
    ) -> Result<Answer, StoreError> {
        let mut held = turn.is_some();
        let url = format!("{}{rel}", self.base);
        let shown = format!("{method} {}", shown_path(rel));
        let body = body.map(|b| b.to_string());
        let bucket =
            self.limiters
                .operation_bucket(&self.config.account, &call.operation, call.tier);
        let (mut waits, mut retries) = (0u32, 0u32);
        let mut delay = Duration::from_millis(250);
        loop {
            if !std::mem::take(&mut held) {
                let waiting = Instant::now();
                bucket.acquire().await;
                telemetry::waited(API, waiting.elapsed());
            }
            let started = Instant::now();
            let mut request = self.http.request(method.clone(), &url);
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/vnd.api+json")
                    .body(body.clone());
            }
            let failure = match request.send().await {
                Err(e) => {
                    telemetry::request(API, started, None);
                    format!("{shown}: {}", describe_reqwest(&e))
                }
                Ok(response) => {
                    observe(&bucket, response.headers());
                    let status = response.status();
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let wait = retry_after(response.headers());
                        bucket.pause(wait);
                        let text = response.text().await.unwrap_or_default();
                        telemetry::request(API, started, Some(429));
                        if waits >= self.config.max_throttle_waits
                            || wait > self.config.max_retry_after
                        {
                            return Err(self.error(
                                format!(
                                    "{shown}: throttled by Klaviyo (429, Retry-After {}s) after {waits} in-process waits: {}",
                                    wait.as_secs_f64(),
                                    error_detail(&text)
                                ),
                                true,
                            ));
                        }
                        waits += 1;
                        tracing::debug!(operation = %call.operation, retry_after_s = wait.as_secs_f64(), waits, "klaviyo throttled a write; waiting");
                        continue;
                    }
                    let bytes = match response.bytes().await {
                        Ok(b) => b,
                        Err(e) => {
                            telemetry::request(API, started, None);
                            return Err(self.error(
                                format!(
                                    "{shown}: reading the {status} answer failed: {}",
                                    describe_reqwest(&e)
                                ),
                                true,
                            ));
                        }
                    };
                    telemetry::request(API, started, Some(status.as_u16()));
                    let text = String::from_utf8_lossy(&bytes);
                    if status.is_success() {
                        if bytes.iter().all(u8::is_ascii_whitespace) {
                            return Ok(Answer::Ok(None));
                        }
                        return serde_json::from_slice(&bytes)
                            .map(|doc| Answer::Ok(Some(doc)))
                            .map_err(|e| {
                                self.error(
                                    format!(
                                        "{shown}: undecodable {status} answer ({} bytes): {e}",
                                        bytes.len()
                                    ),
                                    true,
                                )
                            });
                    }
                    let detail = error_detail(&text);
                    match status.as_u16() {
                        400 | 409 | 413 | 422 => {
                            return Ok(Answer::Refused {
                                status: status.as_u16(),
                                errors: decode_errors(&text),
                                detail,
                            });
                        }
                        404 if method == Method::GET => return Ok(Answer::NotFound),
                        // As Klaviyo's SDKs: these pass, so they are sent again.
                        503 | 504 | 524 => format!("{shown}: Klaviyo answered {status}: {detail}"),
                        s if s >= 500 || s == 408 => {
                            return Err(self.error(
                                format!("{shown}: Klaviyo answered {status}: {detail}"),
                                true,
                            ));
                        }
                        _ => {
                            return Err(self.error(
                                format!("{shown}: Klaviyo answered {status}: {detail}"),
                                false,
                            ));
                        }
                    }
                }
            };
            if retries >= TRANSIENT_RETRIES {
                return Err(self.error(format!("{failure} (tried {} times)", retries + 1), true));
            }
            retries += 1;
            telemetry::retried(API);
            tracing::debug!(error = %self.error(failure, true), retries, "klaviyo write failed; retrying in process");
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    /// A GET that must succeed with a document: a refusal is a permanent error.
    ///
    /// # Errors
    /// As [`Service::send`]; a refused or empty answer (permanent).
    pub async fn get(&self, call: &Call, rel: &str) -> Result<Value, StoreError> {
        match self.send(call, Method::GET, rel, None).await? {
            Answer::Ok(Some(doc)) => Ok(doc),
            Answer::Ok(None) => {
                Err(self.error(format!("GET {}: empty answer", shown_path(rel)), true))
            }
            Answer::NotFound => Err(self.error(
                format!("GET {}: Klaviyo answered 404 Not Found", shown_path(rel)),
                false,
            )),
            Answer::Refused { status, detail, .. } => Err(self.error(
                format!(
                    "GET {}: Klaviyo answered {status}: {detail}",
                    shown_path(rel)
                ),
                false,
            )),
        }
    }

    /// The status of the bulk job `id` of `collection` (`profile-bulk-import-jobs`,
    /// `catalog-item-bulk-create-jobs`, …).
    ///
    /// # Errors
    /// As [`Service::get`]; an undecodable job (transient).
    pub async fn job(&self, call: &Call, collection: &str, id: &str) -> Result<Job, StoreError> {
        let rel = format!("/api/{collection}/{}", encode_segment(id));
        let doc = self.get(call, &rel).await?;
        Job::decode(&doc).map_err(|why| {
            self.error(
                format!("GET /api/{collection}/{id}: not a job: {why}"),
                true,
            )
        })
    }

    /// Polls the job until it is final, at most `timeout` (then a transient error naming
    /// the job and its last state): first after an eighth of `interval`, each wait twice the
    /// last up to `interval` — a job of one part is often final within a second, and a
    /// fixed `interval` made every job cost at least that; a long job is still asked about
    /// once per `interval`. Jobs still `queued` are polled like `processing` ones.
    ///
    /// # Errors
    /// As [`Service::job`]; the timeout.
    pub async fn poll(
        &self,
        call: &Call,
        collection: &str,
        mut job: Job,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Job, StoreError> {
        let started = Instant::now();
        let mut wait = first_poll_wait(interval);
        while !job.is_final() {
            if started.elapsed() >= timeout {
                return Err(self.error(
                    format!(
                        "bulk job {} of /api/{collection} is still {} after {} s (completed {} of {}); the part will be written again",
                        job.id,
                        job.status,
                        timeout.as_secs(),
                        job.completed_count,
                        job.total_count
                    ),
                    true,
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(interval);
            job = self.job(call, collection, &job.id).await?;
        }
        Ok(job)
    }

    /// Every import error of profile import job `id` (`GET …/import-errors`, pages of 100
    /// following `links.next`).
    ///
    /// # Errors
    /// As [`Service::get`].
    pub async fn import_errors(&self, id: &str) -> Result<Vec<ImportError>, StoreError> {
        let call = Call::get_import_errors();
        let mut next = Some(format!(
            "/api/profile-bulk-import-jobs/{}/import-errors?page%5Bsize%5D=100",
            encode_segment(id)
        ));
        let mut out = Vec::new();
        while let Some(rel) = next.take() {
            let doc = self.get(&call, &rel).await?;
            for e in doc
                .get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let attributes = e.get("attributes").cloned().unwrap_or(Value::Null);
                out.push(ImportError {
                    error: serde_json::from_value(attributes.clone()).unwrap_or_default(),
                    original_payload: attributes
                        .get("original_payload")
                        .cloned()
                        .unwrap_or(Value::Null),
                });
            }
            next = self.next_link(&doc);
        }
        Ok(out)
    }

    /// The ids among `ids` that exist in `collection` (`catalog-items`, `catalog-variants`,
    /// `catalog-categories`), asked 100 at a time with `filter=any(ids,[…])`.
    ///
    /// # Errors
    /// As [`Service::get`].
    pub async fn existing(
        &self,
        collection: &str,
        ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let found = self
            .by_ids(&format!("/api/{collection}"), ids, &[], |doc| {
                Ok(ids_of(doc).collect())
            })
            .await?;
        Ok(found.into_iter().collect())
    }

    /// The ids of every variant of each of `items` that Klaviyo has, by item; an item it
    /// does not have is absent from the map.
    ///
    /// One `GET /api/catalog-items?filter=any(ids,[…])&include=variants` per 100 items
    /// (sparse fieldsets: only `external_id` of either type), reading each item's
    /// `relationships.variants.data` — a products part names tens of items, and one request
    /// per item (`GET /api/catalog-items/{id}/variants`) made the lookups, not the writes,
    /// what held a products push back (`docs/benchmarks.md`, issue 12). Klaviyo does not
    /// document a cap on the related ids it includes, so an item listing
    /// [`INCLUDED_VARIANTS_CHECKED`] or more is listed again on its own, paged, by
    /// [`Service::item_variants`]: a cap at that size could not hide a variant.
    ///
    /// # Errors
    /// As [`Service::send`]; a page without `data` or an item without
    /// `relationships.variants.data` is an error naming it (the answer is not what the
    /// spec says, and guessing "no variants" would keep stale ones).
    pub async fn items_variants(
        &self,
        items: &[&str],
    ) -> Result<std::collections::HashMap<String, Vec<String>>, StoreError> {
        let query = [
            ("include", "variants"),
            ("fields[catalog-item]", "external_id"),
            ("fields[catalog-variant]", "external_id"),
        ];
        let listed = self
            .by_ids("/api/catalog-items", items, &query, item_variant_ids)
            .await?;
        let mut by_item = std::collections::HashMap::new();
        for (item, variants) in listed {
            let variants = if variants.len() >= INCLUDED_VARIANTS_CHECKED {
                self.item_variants(&item).await?
            } else {
                variants
            };
            by_item.insert(item, variants);
        }
        Ok(by_item)
    }

    /// `GET path?filter=any(ids,[…])&<query>&page[size]=100` for every 100 of `ids`, a few
    /// at once, each followed through its pages; what `read` takes from each page.
    ///
    /// # Errors
    /// As [`Service::get`]; a page `read` refuses, with its reason and the request.
    async fn by_ids<T: Send>(
        &self,
        path: &str,
        ids: &[&str],
        query: &[(&str, &str)],
        read: impl Fn(&Value) -> Result<Vec<T>, String> + Sync,
    ) -> Result<Vec<T>, StoreError> {
        use futures::stream::{self, StreamExt};
        let call = Call::get_catalog(path);
        // A few lookups at once: their tier (350/s) is the roomiest, and the bucket paces them.
        // Owned chunks: a borrowed one makes the future not `Send` for every lifetime.
        let chunks: Vec<String> = ids
            .chunks(100)
            .map(|chunk| serde_json::to_string(chunk).unwrap_or_default())
            .collect();
        let pages: Vec<Result<Vec<T>, StoreError>> = stream::iter(chunks)
            .map(|chunk| {
                let (call, read) = (&call, &read);
                async move {
                    let mut params = vec![("filter", format!("any(ids,{chunk})"))];
                    params.extend(query.iter().map(|&(k, v)| (k, v.to_string())));
                    params.push(("page[size]", "100".into()));
                    let mut next = Some(relative(path, &params));
                    let mut found = Vec::new();
                    while let Some(rel) = next.take() {
                        let doc = self.get(call, &rel).await?;
                        found.extend(read(&doc).map_err(|why| {
                            self.error(format!("GET {}: {why}", shown_path(&rel)), false)
                        })?);
                        next = self.next_link(&doc);
                    }
                    Ok(found)
                }
            })
            .buffer_unordered(LOOKUPS_IN_FLIGHT)
            .collect()
            .await;
        let mut found = Vec::new();
        for page in pages {
            found.extend(page?);
        }
        Ok(found)
    }

    /// The ids of every variant of catalog item `item` (`GET /api/catalog-items/{id}/variants`,
    /// paged); an item Klaviyo does not have (404) has none.
    ///
    /// # Errors
    /// As [`Service::send`].
    pub async fn item_variants(&self, item: &str) -> Result<Vec<String>, StoreError> {
        let call = Call::get_catalog("/api/catalog-items/{id}/variants");
        let mut next = Some(format!(
            "/api/catalog-items/{}/variants?page%5Bsize%5D=100",
            encode_segment(item)
        ));
        let mut out = Vec::new();
        while let Some(rel) = next.take() {
            match self.send(&call, Method::GET, &rel, None).await {
                Ok(Answer::Ok(Some(doc))) => {
                    out.extend(ids_of(&doc));
                    next = self.next_link(&doc);
                }
                Ok(Answer::Ok(None) | Answer::NotFound) => {}
                Ok(Answer::Refused { status, detail, .. }) => {
                    return Err(self.error(
                        format!(
                            "GET {}: Klaviyo answered {status}: {detail}",
                            shown_path(&rel)
                        ),
                        false,
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// `GET /api/accounts`: whether the key is accepted.
    ///
    /// # Errors
    /// As [`Service::get`].
    pub async fn check(&self) -> Result<(), StoreError> {
        self.get(&Call::get_accounts(), "/api/accounts")
            .await
            .map(|_| ())
    }

    /// `links.next` reduced to path and query under the configured base (a link naming
    /// another host never receives the key).
    fn next_link(&self, doc: &Value) -> Option<String> {
        let next = doc
            .get("links")
            .and_then(|l| l.get("next"))
            .and_then(Value::as_str)?
            .trim();
        if next.is_empty() {
            return None;
        }
        if let Some(rest) = next.strip_prefix(&self.base)
            && rest.starts_with('/')
        {
            return Some(rest.to_string());
        }
        if next.starts_with('/') {
            return Some(next.to_string());
        }
        let url = url_path_and_query(next)?;
        let base_path = url_path_and_query(&self.base).unwrap_or_default();
        let base_path = base_path.trim_end_matches('/');
        Some(
            url.strip_prefix(base_path)
                .filter(|p| p.starts_with('/'))
                .map_or(url.clone(), str::to_string),
        )
    }
}

/// The first wait of a poll that waits at most `interval`: an eighth of it (at least 1 ms),
/// doubled at each poll after.
pub(crate) fn first_poll_wait(interval: Duration) -> Duration {
    (interval / 8).max(Duration::from_millis(1)).min(interval)
}

/// `data[].id` of a document.
/// An item listing this many variants in `relationships.variants.data` is listed again on its
/// own ([`Service::items_variants`]).
pub const INCLUDED_VARIANTS_CHECKED: usize = 100;

/// Each item of a `GET /api/catalog-items?include=variants` page with the ids in its
/// `relationships.variants.data`.
///
/// # Errors
/// The page has no `data` list, or an item has no `id` or no `relationships.variants.data`
/// list: what is missing.
fn item_variant_ids(doc: &Value) -> Result<Vec<(String, Vec<String>)>, String> {
    let data = doc
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the answer has no `data` list")?;
    data.iter()
        .map(|item| {
            let id = item
                .get("id")
                .and_then(Value::as_str)
                .ok_or("an item of the answer has no `id`")?;
            let variants = item
                .pointer("/relationships/variants/data")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    format!("item {id} has no `relationships.variants.data` (asked with include=variants)")
                })?;
            Ok((
                id.to_string(),
                variants
                    .iter()
                    .filter_map(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect(),
            ))
        })
        .collect()
}

fn ids_of(doc: &Value) -> impl Iterator<Item = String> + '_ {
    doc.get("data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
}

/// Path and query of an absolute URL (`https://h/x?y` → `/x?y`).
fn url_path_and_query(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    Some(match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".to_string(),
    })
}

/// `path?k=v&…` with the values percent-encoded.
pub fn relative(path: &str, query: &[(&str, String)]) -> String {
    let pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect();
    if pairs.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", pairs.join("&"))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path segment (a job id, a compound catalog id: `$custom:::$default:::X`): RFC 3986's
/// `pchar`s are kept (so the compound id reads as Klaviyo writes it), the rest encoded.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path and decoded query of a request, shortened, for messages.
fn shown_path(rel: &str) -> String {
    let decoded = match rel.split_once('?') {
        Some((path, query)) => format!("{path}?{}", percent_decode(query)),
        None => percent_decode(rel),
    };
    if decoded.chars().count() > 300 {
        format!("{}…", decoded.chars().take(300).collect::<String>())
    } else {
        decoded
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `errors[]` of a JSON:API error body.
fn decode_errors(body: &str) -> Vec<ApiError> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|doc| doc.get("errors").cloned())
        .and_then(|e| serde_json::from_value(e).ok())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_and_shown_decoded() {
        let rel = relative(
            "/api/catalog-items",
            &[("filter", r#"any(ids,["$custom:::$default:::A B"])"#.into())],
        );
        assert_eq!(
            rel,
            "/api/catalog-items?filter=any%28ids%2C%5B%22%24custom%3A%3A%3A%24default%3A%3A%3AA%20B%22%5D%29"
        );
        assert_eq!(
            shown_path(&rel),
            r#"/api/catalog-items?filter=any(ids,["$custom:::$default:::A B"])"#
        );
        assert_eq!(
            encode_segment("$custom:::$default:::A/B C"),
            "$custom:::$default:::A%2FB%20C"
        );
        assert_eq!(
            Call::get_catalog_job("catalog-category-bulk-create-jobs").tier,
            Tier::Xl
        );
        assert_eq!(
            Call::get_catalog_job("catalog-item-bulk-update-jobs").tier,
            Tier::L
        );
        assert_eq!(
            Call::get_catalog_job("catalog-variant-bulk-delete-jobs").tier,
            Tier::Xl
        );
    }

    #[test]
    fn polls_start_at_an_eighth_of_the_interval() {
        let ms = Duration::from_millis;
        assert_eq!(first_poll_wait(ms(1000)), ms(125));
        assert_eq!(first_poll_wait(ms(4)), ms(1));
        assert_eq!(first_poll_wait(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn jobs_decode_with_their_errors() {
        let job = Job::decode(&serde_json::json!({"data": {"type": "catalog-item-bulk-create-job", "id": "J1",
            "attributes": {"status": "complete", "total_count": 3, "completed_count": 2, "failed_count": 1,
              "errors": [{"id": "e", "code": "invalid", "title": "Invalid input", "detail": "title is required",
                          "source": {"pointer": "/data/attributes/items/data/1/attributes/title"}}]}}}))
        .unwrap();
        assert!(job.is_final());
        assert_eq!(
            (job.total_count, job.completed_count, job.failed_count),
            (3, 2, 1)
        );
        assert_eq!(
            job.errors[0].describe(),
            "invalid: title is required (pointer /data/attributes/items/data/1/attributes/title)"
        );
        assert!(Job::decode(&serde_json::json!({"data": {"id": "x"}})).is_err());
    }
}
