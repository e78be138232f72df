//! The HTTP side: authenticated GETs against one account, rate limited, with Klaviyo's
//! errors mapped to [`ConnectorError`]s.
//!
//! - Headers: `Authorization: Klaviyo-API-Key <key>`, `revision`, `accept:
//!   application/vnd.api+json`. The key never appears in logs or errors (error texts are
//!   also scrubbed of it, should Klaviyo echo it).
//! - 429: the bucket is stopped for `Retry-After` seconds and the request sent again, at most
//!   `max_throttle_waits` times (a `Retry-After` above `max_retry_after_seconds` is not
//!   waited): then [`ConnectorError::Transient`].
//! - 5xx, timeouts, connection errors, truncated or undecodable bodies: retried in process
//!   [`TRANSIENT_RETRIES`] times with backoff (0.25 s doubling), then transient — so a
//!   task of many pages is not thrown back to the retry queues by one bad response.
//! - Other 4xx (and redirects, which are not followed so the key never leaves the
//!   configured origin): permanent, with Klaviyo's error `code`/`detail` and the request path.
//! - `links.next` is reduced to path and query and joined to the configured base URL, so a
//!   next link naming another host never receives the key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

/// In-process retries of a transient failure of one request (beyond the 429 waits).
pub const TRANSIENT_RETRIES: u32 = 3;

/// Whether [`Client::get`] may send a failed request again.
enum Retry {
    Yes,
    No,
}

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use super::limiter::{Bucket, Limiters, Tier};
use crate::{ConnectorError, telemetry};

/// The `api` label of Klaviyo's requests.
const API: &str = "klaviyo";

/// The words of Klaviyo's paths (every other segment is an id), for `url.template`.
const ROUTE_WORDS: &[&str] = &[
    "api",
    "events",
    "profiles",
    "metrics",
    "lists",
    "segments",
    "relationships",
];

/// Settings of one account's client.
#[derive(Clone)]
pub struct ClientConfig {
    /// The account name (the limiter key).
    pub account: String,
    /// API origin, for example `https://a.klaviyo.com` (may carry a path prefix).
    pub base_url: String,
    /// Private API key.
    pub api_key: SecretString,
    /// `revision` header.
    pub revision: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// 429s waited in process per request.
    pub max_throttle_waits: u32,
    /// Longest `Retry-After` waited in process.
    pub max_retry_after: Duration,
}

/// One account's client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    config: ClientConfig,
    limiters: Arc<Limiters>,
}

/// A JSON:API document and its next page. `D` is how a resource of `data` is read and `I`
/// one of `included`: JSON values ([`decode`]), or rows already (`events_page::decode`:
/// events, and the profiles among `included`).
#[derive(Debug)]
pub struct Page<D = Value, I = Value> {
    /// The document's `data` array (a single resource is wrapped into one).
    pub data: Vec<D>,
    /// The document's `included` resources.
    pub included: Vec<I>,
    /// `links.next` as path and query relative to the base URL (`/api/events?page%5B…`).
    pub next: Option<String>,
}

impl<D, I> Page<D, I> {
    /// The page with each resource of `data` read by `f` (`included` and `next` as they are).
    pub fn map<E>(self, f: impl FnMut(D) -> E) -> Page<E, I> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            included: self.included,
            next: self.next,
        }
    }
}

impl Client {
    /// Builds the client.
    ///
    /// # Errors
    /// Permanent when the base URL is not an http(s) URL or the key is not a valid header.
    pub fn new(config: ClientConfig, limiters: Arc<Limiters>) -> Result<Self, ConnectorError> {
        let base = config.base_url.trim_end_matches('/').to_string();
        match Url::parse(&base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(ConnectorError::Permanent(anyhow::anyhow!(
                    "klaviyo account '{}': base_url '{}' is not an http(s) URL",
                    config.account,
                    base
                )));
            }
        }
        let mut headers = reqwest::header::HeaderMap::new();
        let mut auth = reqwest::header::HeaderValue::from_str(&format!(
            "Klaviyo-API-Key {}",
            config.api_key.expose_secret()
        ))
        .map_err(|_| {
            ConnectorError::Permanent(anyhow::anyhow!(
                "klaviyo account '{}': the API key contains characters not allowed in a header",
                config.account
            ))
        })?;
        auth.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        headers.insert(
            "revision",
            reqwest::header::HeaderValue::from_str(&config.revision).map_err(|_| {
                ConnectorError::Permanent(anyhow::anyhow!(
                    "setting connectors.klaviyo.revision '{}' is not a valid header value",
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
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                ConnectorError::Permanent(anyhow::anyhow!("building the HTTP client: {e}"))
            })?;
        Ok(Self {
            http,
            base,
            config,
            limiters,
        })
    }

    /// The URL of `path` (starting with `/api/`) with the query pairs, as path and query
    /// relative to the base (the form page cursors are stored in).
    pub fn relative(path: &str, query: &[(&str, String)]) -> String {
        let mut url = Url::parse("http://base.invalid").unwrap_or_else(|_| unreachable!());
        url.set_path(path);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Reduces a `links.next` value to path and query relative to the base URL.
    pub fn relative_next(&self, next: &str) -> Option<String> {
        let next = next.trim();
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
        let url = Url::parse(next).ok()?;
        let base_path = Url::parse(&self.base)
            .map(|b| b.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let path = url.path();
        let path = path
            .strip_prefix(&base_path)
            .filter(|p| p.starts_with('/'))
            .unwrap_or(path);
        Some(match url.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        })
    }

    fn bucket(&self, tier: Tier) -> Arc<Bucket> {
        self.limiters.bucket(&self.config.account, tier)
    }

    /// Removes the key from a text, should a server have echoed it.
    fn scrub(&self, text: String) -> String {
        let key = self.config.api_key.expose_secret();
        if key.len() >= 4 && text.contains(key) {
            text.replace(key, "[REDACTED]")
        } else {
            text
        }
    }

    /// GETs one page (`rel` from [`Client::relative`] or a `next` link) and decodes it,
    /// retrying transient failures in process.
    ///
    /// # Errors
    /// See the module documentation.
    pub async fn get(&self, tier: Tier, rel: &str) -> Result<Page, ConnectorError> {
        self.send(tier, rel, None, &decode).await
    }

    /// [`Client::get`] with the page's body read by `decode` (a typed reader, such as
    /// `events_page::decode`) instead of the generic [`decode`].
    ///
    /// # Errors
    /// See the module documentation; a body `decode` refuses is a transient error, as in
    /// [`Client::get`].
    pub async fn get_with<T>(
        &self,
        tier: Tier,
        rel: &str,
        decode: &(dyn Fn(&[u8]) -> Result<T, String> + Sync),
    ) -> Result<T, ConnectorError> {
        self.send(tier, rel, None, decode).await
    }

    /// POSTs a JSON:API document to `rel` (a query like `POST /api/metric-aggregates`) and
    /// decodes the answer as [`Client::get`] does, with the same retries: such queries read
    /// and change nothing, so sending one again is harmless.
    ///
    /// # Errors
    /// See the module documentation.
    pub async fn post(&self, tier: Tier, rel: &str, body: &Value) -> Result<Page, ConnectorError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ConnectorError::Permanent(anyhow::anyhow!("encoding POST {rel}: {e}")))?;
        self.send(tier, rel, Some(&bytes), &decode).await
    }

    async fn send<T>(
        &self,
        tier: Tier,
        rel: &str,
        body: Option<&[u8]>,
        decode: &(dyn Fn(&[u8]) -> Result<T, String> + Sync),
    ) -> Result<T, ConnectorError> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0;
        loop {
            match self.get_once(tier, rel, attempt, body, decode).await {
                Ok(page) => return Ok(page),
                // Throttling was already waited out in `get_once`: not retried again here.
                Err((e @ ConnectorError::Transient(_), Retry::Yes))
                    if attempt < TRANSIENT_RETRIES =>
                {
                    attempt += 1;
                    telemetry::retried(API);
                    tracing::debug!(error = %e, attempt, "klaviyo request failed; retrying in process");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// One request of [`Client::send`] (`attempt`: retries before it; `body`: a POST's
    /// JSON, else a GET), waiting out 429s.
    async fn get_once<T>(
        &self,
        tier: Tier,
        rel: &str,
        attempt: u32,
        body: Option<&[u8]>,
        decode: &(dyn Fn(&[u8]) -> Result<T, String> + Sync),
    ) -> Result<T, (ConnectorError, Retry)> {
        let method = if body.is_some() { "POST" } else { "GET" };
        let shown = format!("{method} {}", shown_path(rel));
        let route = telemetry::route_template(rel, ROUTE_WORDS);
        let url = format!("{}{rel}", self.base);
        let bucket = self.bucket(tier);
        let mut waits = 0u32;
        loop {
            let waiting = Instant::now();
            bucket.acquire().await;
            telemetry::waited(API, waiting.elapsed());
            let request = telemetry::Request::start(API, method, &route, attempt + waits);
            let call = match body {
                None => self.http.get(&url),
                Some(b) => self
                    .http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/vnd.api+json")
                    .body(b.to_vec()),
            };
            let response = match call.send().instrument(request.span()).await {
                Ok(r) => r,
                Err(e) if crate::is_dns_failure(&crate::error_chain(&e)) => {
                    request.finish(None);
                    // Not retried: a name that does not resolve is a wrong base URL.
                    return Err((
                        ConnectorError::Permanent(anyhow::anyhow!(
                            "{shown}: the host of {} could not be resolved (DNS), tried once: check the account's base_url (SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__<ACCOUNT>__BASE_URL)",
                            sluice_contracts::redact::redact_url(&self.base)
                        )),
                        Retry::No,
                    ));
                }
                Err(e) => {
                    request.finish(None);
                    return Err((
                        ConnectorError::Transient(anyhow::anyhow!(
                            "{}",
                            self.scrub(format!("{shown}: {}", describe_reqwest(&e)))
                        )),
                        Retry::Yes,
                    ));
                }
            };
            observe(&bucket, response.headers());
            let status = response.status();
            if status.as_u16() == 429 {
                let retry_after = retry_after(response.headers());
                bucket.pause(retry_after);
                request.retry_after(retry_after);
                let body = response
                    .text()
                    .instrument(request.span())
                    .await
                    .unwrap_or_default();
                request.finish(Some(429));
                if waits >= self.config.max_throttle_waits
                    || retry_after > self.config.max_retry_after
                {
                    return Err((
                        ConnectorError::Transient(anyhow::anyhow!(
                            "{}",
                            self.scrub(format!(
                                "{shown}: throttled by Klaviyo (429, Retry-After {}s) after {waits} in-process waits: {}",
                                retry_after.as_secs_f64(),
                                error_detail(&body)
                            ))
                        )),
                        Retry::No,
                    ));
                }
                waits += 1;
                tracing::debug!(path = %shown, retry_after_s = retry_after.as_secs_f64(), waits, "klaviyo throttled; waiting");
                continue;
            }
            let body = match response.bytes().instrument(request.span()).await {
                Ok(b) => {
                    request.finish(Some(status.as_u16()));
                    b
                }
                Err(e) => {
                    request.finish(None);
                    return Err((
                        ConnectorError::Transient(anyhow::anyhow!(
                            "{}",
                            self.scrub(format!(
                                "{shown}: reading the {status} response body failed: {}",
                                describe_reqwest(&e)
                            ))
                        )),
                        Retry::Yes,
                    ));
                }
            };
            if status.is_success() {
                return decode(&body).map_err(|why| {
                    (
                        ConnectorError::Transient(anyhow::anyhow!(
                            "{shown}: undecodable {status} response ({} bytes): {why}",
                            body.len()
                        )),
                        Retry::Yes,
                    )
                });
            }
            let detail = self.scrub(error_detail(&String::from_utf8_lossy(&body)));
            let message = format!("{shown}: Klaviyo answered {status}: {detail}");
            return Err(if status.is_server_error() || status.as_u16() == 408 {
                (
                    ConnectorError::Transient(anyhow::anyhow!(message)),
                    Retry::Yes,
                )
            } else {
                (
                    ConnectorError::Permanent(anyhow::anyhow!(message)),
                    Retry::No,
                )
            });
        }
    }
}

/// The path and decoded query of a request, shortened, for messages.
fn shown_path(rel: &str) -> String {
    let decoded = match rel.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => rel.to_string(),
    };
    if decoded.chars().count() > 300 {
        format!("{}…", decoded.chars().take(300).collect::<String>())
    } else {
        decoded
    }
}

/// What went wrong with a request, without its URL: timed out, connection failed, body
/// interrupted, and the causes.
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body interrupted"
    } else {
        "request failed"
    };
    // Walk the source chain without the URL (reqwest's Display adds it; harmless, but long).
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    if causes.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}

/// Decodes a JSON:API document. The `links` of its resources and of their relationships are
/// skipped, not built: no row keeps them, and on Klaviyo's events they are about half of a
/// page's bytes, so building and dropping them was a large share of a fetcher's CPU per
/// event (issue 15, `docs/benchmarks.md`).
pub(crate) fn decode(body: &[u8]) -> Result<Page, String> {
    let doc: Document = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let data = match doc.data.0 {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        v @ Value::Object(_) => vec![v],
        other => {
            return Err(format!(
                "`data` must be an array or an object, found {}",
                super::records::short(&other)
            ));
        }
    };
    let included = doc.included.into_vec();
    let next = doc
        .links
        .get("next")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Page {
        data,
        included,
        next,
    })
}

/// The parts of a JSON:API document a page needs (other members are skipped).
#[derive(serde::Deserialize)]
struct Document {
    #[serde(default)]
    data: Resources,
    #[serde(default)]
    included: Resources,
    #[serde(default)]
    links: Value,
}

/// `data` or `included`: a resource or an array of resources, each without its `links` and
/// its relationships' `links`; any other JSON as it is (for `decode` to refuse or ignore).
#[derive(Default)]
pub(crate) struct Resources(Value);

impl Resources {
    /// The resources of an `included` array; nothing for any other JSON (as [`decode`]
    /// reads `included`).
    pub(crate) fn into_vec(self) -> Vec<Value> {
        match self.0 {
            Value::Array(a) => a,
            _ => Vec::new(),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Resources {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Linkless(Level::Resources)).map(Resources)
    }
}

/// Where [`Linkless`] is in a document: which members named `links` it skips.
#[derive(Clone, Copy)]
enum Level {
    /// `data`/`included`: an array of resources, or one.
    Resources,
    /// A resource object: skips `links`.
    Resource,
    /// A resource's `relationships` object.
    Relationships,
    /// One relationship object: skips `links`.
    Relationship,
}

/// Reads a JSON value as `serde_json::Value` would, leaving out the `links` members of its
/// [`Level`].
#[derive(Clone, Copy)]
struct Linkless(Level);

impl<'de> serde::de::DeserializeSeed<'de> for Linkless {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Linkless {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        match self.0 {
            Level::Resources => {
                while let Some(v) = seq.next_element_seed(Linkless(Level::Resource))? {
                    out.push(v);
                }
            }
            _ => {
                while let Some(v) = seq.next_element::<Value>()? {
                    out.push(v);
                }
            }
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // One resource as `data` (not an array): this map is the resource itself.
        let level = match self.0 {
            Level::Resources => Level::Resource,
            other => other,
        };
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = match (level, key.as_str()) {
                (Level::Resource | Level::Relationship, "links") => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
                (Level::Resource, "relationships") => {
                    map.next_value_seed(Linkless(Level::Relationships))?
                }
                (Level::Relationships, _) => map.next_value_seed(Linkless(Level::Relationship))?,
                _ => map.next_value::<Value>()?,
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Klaviyo's error text: `code: detail (source)` of each error, else the body's start.
pub fn error_detail(body: &str) -> String {
    if let Ok(doc) = serde_json::from_str::<Value>(body)
        && let Some(errors) = doc.get("errors").and_then(Value::as_array)
    {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
                let mut s = match (field("code"), field("detail"), field("title")) {
                    ("", "", t) => t.to_string(),
                    (c, "", t) => format!("{c}: {t}"),
                    ("", d, _) => d.to_string(),
                    (c, d, _) => format!("{c}: {d}"),
                };
                if let Some(src) = e.get("source").and_then(Value::as_object)
                    && let Some((k, v)) = src.iter().next()
                {
                    s.push_str(&format!(" ({k} {})", v.as_str().unwrap_or("")));
                }
                s
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let body = body.trim();
    if body.is_empty() {
        "(empty body)".into()
    } else if body.chars().count() > 300 {
        format!("{}…", body.chars().take(300).collect::<String>())
    } else {
        body.to_string()
    }
}

/// The first number of a header value (`RateLimit-Limit: 700, 75;w=1` → 700).
fn header_number(headers: &reqwest::header::HeaderMap, name: &str) -> Option<f64> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value
        .split([',', ';'])
        .next()?
        .trim()
        .trim_start_matches("r=");
    first
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
}

/// Feeds `RateLimit-*` headers to the bucket. `RateLimit-Reset` is seconds until the window
/// resets (an epoch-seconds value is converted).
pub fn observe(bucket: &Bucket, headers: &reqwest::header::HeaderMap) {
    let Some(remaining) = header_number(headers, "ratelimit-remaining") else {
        return;
    };
    let reset = header_number(headers, "ratelimit-reset").unwrap_or(60.0);
    let reset = if reset > 1_000_000_000.0 {
        let now = chrono::Utc::now().timestamp() as f64;
        (reset - now).max(0.0)
    } else {
        reset
    };
    let limit = header_number(headers, "ratelimit-limit");
    bucket.observe(limit, remaining, Duration::from_secs_f64(reset.min(3600.0)));
}

/// A 429's `Retry-After` (seconds; at least 0.1 s, 1 s when absent or unreadable).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    let secs = header_number(headers, "retry-after").unwrap_or(1.0);
    Duration::from_secs_f64(secs.clamp(0.1, 86_400.0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pages_decode_without_the_links_of_resources_and_relationships() {
        let body = serde_json::json!({
            "data": [
                {"type": "event", "id": "E1", "links": {"self": "x"},
                 "attributes": {"links": {"kept": true}, "n": 1.5, "k": [1, {"links": 2}]},
                 "relationships": {
                     "profile": {"data": {"type": "profile", "id": "P1"},
                                 "links": {"self": "y", "related": "z"}},
                     "odd": 5}},
                "not a resource"
            ],
            "included": [{"type": "profile", "id": "P1", "links": {"self": "p"}}],
            "links": {"self": "s", "next": "https://a.klaviyo.com/api/events?page%5Bcursor%5D=c"},
            "meta": {"ignored": true}
        });
        let page = decode(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            page.data,
            vec![
                serde_json::json!({"type": "event", "id": "E1",
                    "attributes": {"links": {"kept": true}, "n": 1.5, "k": [1, {"links": 2}]},
                    "relationships": {"profile": {"data": {"type": "profile", "id": "P1"}},
                                      "odd": 5}}),
                serde_json::json!("not a resource"),
            ]
        );
        assert_eq!(
            page.included,
            vec![serde_json::json!({"type": "profile", "id": "P1"})]
        );
        assert_eq!(
            page.next.as_deref(),
            Some("https://a.klaviyo.com/api/events?page%5Bcursor%5D=c")
        );

        let one = decode(br#"{"data": {"type": "metric", "id": "M", "links": {}}, "included": 3}"#)
            .unwrap();
        assert_eq!(
            one.data,
            vec![serde_json::json!({"type": "metric", "id": "M"})]
        );
        assert!(one.included.is_empty() && one.next.is_none());
        assert!(decode(br#"{"data": null}"#).unwrap().data.is_empty());
        assert!(decode(b"{}").unwrap().data.is_empty());
        let err = decode(br#"{"data": "x"}"#).unwrap_err();
        assert!(
            err.contains("`data` must be an array or an object"),
            "{err}"
        );
        assert!(decode(b"{\"data\": [").is_err());
    }

    #[test]
    fn relative_urls_and_details() {
        let rel = Client::relative(
            "/api/events",
            &[("filter", "equals(metric_id,\"M\")".into())],
        );
        assert_eq!(rel, "/api/events?filter=equals%28metric_id%2C%22M%22%29");
        assert_eq!(
            shown_path(&rel),
            "/api/events?filter=equals(metric_id,\"M\")"
        );
        let body = r#"{"errors":[{"id":"1","status":400,"code":"invalid","title":"Invalid input.","detail":"'sort' is not valid","source":{"parameter":"sort"}}]}"#;
        assert_eq!(
            error_detail(body),
            "invalid: 'sort' is not valid (parameter sort)"
        );
    }
}
