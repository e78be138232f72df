//! HTTP to the WDN API: every request under the global concurrency cap (a permit of
//! [`crate::ConnectorContext::acquire`] held from sending to the end of the body), retried
//! on 429, 5xx, timeouts and broken connections with a doubling backoff.

use std::time::Duration;

use anyhow::anyhow;
use reqwest::StatusCode;
use serde_json::Value;

use super::settings::WdnSettings;
use crate::{ConnectorContext, ConnectorError, telemetry};
use tracing::Instrument;

/// The name of the permits that cap WDN's concurrent requests.
pub const PERMITS: &str = "wdn";

/// The `api` label of WDN's requests.
const API: &str = "wdn";

/// The words of WDN's paths (every other segment is an id), for `url.template`.
const ROUTE_WORDS: &[&str] = &[
    "searches",
    "brand_search",
    "brands",
    "products",
    "retailers",
    "offers",
];

/// A WDN API client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    settings: WdnSettings,
    ctx: ConnectorContext,
}

/// What one try of a request came to.
enum Try {
    Done(Option<Value>),
    /// Worth another try after at least this long (`Retry-After`), with the reason.
    Again(Option<Duration>, String),
}

impl Client {
    /// A client of `settings.base_url` taking its permits from `ctx`.
    ///
    /// # Errors
    /// The HTTP client cannot be built (TLS setup).
    pub fn new(settings: &WdnSettings, ctx: ConnectorContext) -> Result<Self, ConnectorError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.request_timeout_seconds))
            .user_agent("sluice-wdn")
            .build()
            .map_err(|e| ConnectorError::Permanent(anyhow!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: settings.base_url.trim_end_matches('/').to_string(),
            settings: settings.clone(),
            ctx,
        })
    }

    /// `GET <base><path>` with `query`: the JSON body, or `None` for a 404. 429, 5xx,
    /// timeouts, broken connections and unreadable bodies are tried again after
    /// `backoff_initial_ms` doubling up to `backoff_max_ms` (or `Retry-After`, when
    /// longer), `max_attempts` tries in all.
    ///
    /// # Errors
    /// [`ConnectorError::Transient`] after the last try; [`ConnectorError::Permanent`] for
    /// other 4xx answers and bodies that are not JSON, naming the URL.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Option<Value>, ConnectorError> {
        let url = format!("{}{path}", self.base);
        let mut wait = Duration::from_millis(self.settings.backoff_initial_ms);
        let max_wait = Duration::from_millis(self.settings.backoff_max_ms);
        let attempts = self.settings.max_attempts.max(1);
        let mut last = String::new();
        let route = telemetry::route_template(path, ROUTE_WORDS);
        for attempt in 1..=attempts {
            match self.try_once(&url, &route, query, attempt - 1).await? {
                Try::Done(body) => return Ok(body),
                Try::Again(retry_after, why) => {
                    last = why;
                    if attempt == attempts {
                        break;
                    }
                    let pause = retry_after
                        .map_or(wait, |r| r.max(wait))
                        .min(max_wait.max(wait));
                    telemetry::retried(API);
                    tracing::debug!(%url, attempt, wait_ms = pause.as_millis() as u64, reason = %last, "WDN request failed; trying again");
                    tokio::time::sleep(pause).await;
                    wait = (wait * 2).min(max_wait);
                }
            }
        }
        Err(ConnectorError::Transient(anyhow!(
            "GET {url}: {last} ({attempts} tries)"
        )))
    }

    /// One try of a request (`route`: its path template; `resends`: tries before it).
    async fn try_once(
        &self,
        url: &str,
        route: &str,
        query: &[(&str, String)],
        resends: u32,
    ) -> Result<Try, ConnectorError> {
        // The permit is held until the body has been read: the API counts a request in
        // flight until its response is complete.
        let permit = self
            .ctx
            .acquire(PERMITS, self.settings.max_concurrency)
            .await?;
        let request = telemetry::Request::start(API, "GET", route, resends);
        let response = match self
            .http
            .get(url)
            .query(query)
            .send()
            .instrument(request.span())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                request.finish(None);
                return Ok(Try::Again(None, format!("request failed: {e}")));
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if let Some(wait) = retry_after {
            request.retry_after(wait);
        }
        let body = response.bytes().instrument(request.span()).await;
        drop(permit);
        let body = match body {
            Ok(b) => {
                request.finish(Some(status.as_u16()));
                b
            }
            Err(e) => {
                request.finish(None);
                return Ok(Try::Again(None, format!("reading the body failed: {e}")));
            }
        };
        if status == StatusCode::NOT_FOUND {
            return Ok(Try::Done(None));
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Ok(Try::Again(retry_after, format!("HTTP {status}")));
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.chars().take(300).collect();
            return Err(ConnectorError::Permanent(anyhow!(
                "GET {url}: HTTP {status}: {text}"
            )));
        }
        serde_json::from_slice(&body)
            .map(|v| Try::Done(Some(v)))
            .map_err(|e| ConnectorError::Permanent(anyhow!("GET {url}: the body is not JSON: {e}")))
    }
}

/// `meta.page.total_count` of a list answer.
pub fn total_count(body: &Value) -> Option<u64> {
    body["meta"]["page"]["total_count"].as_u64()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    fn settings(base: &str) -> WdnSettings {
        let mut s: WdnSettings = crate::framework::settings_section(
            &sluice_contracts::Settings::defaults(),
            "wdn",
            super::super::settings::DEFAULTS,
        )
        .unwrap();
        s.base_url = format!("{base}/api/v1");
        s.backoff_initial_ms = 10;
        s.backoff_max_ms = 40;
        s.max_attempts = 4;
        s
    }

    #[tokio::test]
    async fn throttles_are_retried_404_is_none_and_other_4xx_fail_naming_the_url() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v1/retailers/1"))
            .respond_with(ResponseTemplate::new(429))
            .up_to_n_times(2)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v1/retailers/1"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": {"id": "1"}})),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v1/retailers/2"))
            .respond_with(ResponseTemplate::new(404))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v1/retailers/3"))
            .respond_with(ResponseTemplate::new(403).set_body_string("forbidden here"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v1/retailers/4"))
            .and(query_param("x", "y"))
            .respond_with(ResponseTemplate::new(503))
            .mount(&server)
            .await;
        let client = Client::new(&settings(&server.uri()), ConnectorContext::default()).unwrap();
        let one = client.get("/retailers/1", &[]).await.unwrap().unwrap();
        assert_eq!(one["data"]["id"], "1");
        assert!(client.get("/retailers/2", &[]).await.unwrap().is_none());
        let err = client.get("/retailers/3", &[]).await.unwrap_err();
        assert!(!err.is_transient());
        let text = err.to_string();
        assert!(
            text.contains("/api/v1/retailers/3")
                && text.contains("403")
                && text.contains("forbidden here"),
            "{text}"
        );
        let err = client
            .get("/retailers/4", &[("x", "y".to_string())])
            .await
            .unwrap_err();
        assert!(err.is_transient());
        assert!(
            err.to_string().contains("503") && err.to_string().contains("4 tries"),
            "{err}"
        );
    }
}
