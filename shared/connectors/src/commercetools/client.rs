//! The HTTP side: an OAuth2 client-credentials token per account, cached and renewed before
//! it expires, shared by every task of the process; paged queries with commercetools'
//! errors mapped to [`ConnectorError`]s.
//!
//! - Token: `POST {auth_url}/oauth/token` with HTTP Basic (client id : secret) and
//!   `grant_type=client_credentials` (`scope` when configured); renewed when less than a
//!   tenth of its lifetime (at most 5 minutes) is left. A query answered 401 renews the
//!   token once and is sent again; a second 401 is permanent, naming the account.
//! - 502, 503, 504, timeouts, connection errors and undecodable bodies: retried in process
//!   [`TRANSIENT_RETRIES`] times with backoff (0.25 s doubling), then transient.
//! - 429: the same, each wait at least the response's `Retry-After` (seconds, at most 60).
//! - Other 4xx: permanent, with commercetools' `errors[].code`/`message` and the path.
//! - The secret and the token never appear in logs or errors.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::Instrument;

use super::settings::CommercetoolsAccount;
use crate::{ConnectorError, telemetry};

/// The `api` label of requests to the project's API.
const API: &str = "commercetools";
/// The `api` label of token requests to the auth service.
const AUTH_API: &str = "commercetools_auth";

/// In-process retries of a transient failure of one request.
pub const TRANSIENT_RETRIES: u32 = 3;

/// The longest `Retry-After` waited out in process; a longer one is capped to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// `PagedQueryResponse`: the page's resources and how many came.
#[derive(Debug)]
pub struct Page {
    /// `results`.
    pub results: Vec<Value>,
    /// `count`.
    pub count: u64,
}

struct Token {
    value: SecretString,
    renew_at: Instant,
}

/// One account's client.
pub struct Client {
    http: reqwest::Client,
    account_name: String,
    account: CommercetoolsAccount,
    token: Mutex<Option<Token>>,
}

fn transient(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Transient(anyhow::anyhow!("{e}"))
}

fn permanent(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Permanent(anyhow::anyhow!("{e}"))
}

/// commercetools' error body as one line: `code: message; …`.
fn describe_errors(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return body.chars().take(200).collect();
    };
    let mut parts: Vec<String> = value["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["code"].as_str().unwrap_or("error"),
                        e["message"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        parts.push(value["message"].as_str().unwrap_or_default().to_string());
    }
    parts.join("; ")
}

impl Client {
    /// Builds the client of account `name`.
    ///
    /// # Errors
    /// Permanent when the HTTP client cannot be built.
    pub fn new(
        name: &str,
        account: CommercetoolsAccount,
        timeout: Duration,
    ) -> Result<Self, ConnectorError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(permanent)?;
        Ok(Self {
            http,
            account_name: name.to_string(),
            account,
            token: Mutex::new(None),
        })
    }

    /// The account's project key.
    pub fn project_key(&self) -> &str {
        &self.account.project_key
    }

    /// A valid token: the cached one, or a new one when it is due for renewal (or `renew`).
    async fn token(&self, renew: bool) -> Result<SecretString, ConnectorError> {
        let mut cached = self.token.lock().await;
        if !renew
            && let Some(token) = cached.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(token.value.clone());
        }
        let url = format!(
            "{}/oauth/token",
            self.account.auth_url.trim_end_matches('/')
        );
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if let Some(scopes) = &self.account.scopes {
            form.push(("scope", scopes.clone()));
        }
        let request = telemetry::Request::start(AUTH_API, "POST", "/oauth/token", 0);
        let sent = self
            .http
            .post(&url)
            .basic_auth(
                &self.account.client_id,
                Some(self.account.client_secret.expose_secret()),
            )
            .form(&form)
            .send()
            .instrument(request.span())
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                request.finish(None);
                let dns = crate::is_dns_failure(&crate::error_chain(&e));
                let text = format!("commercetools token request: {}", e.without_url());
                let error = if dns {
                    permanent(format!(
                        "{text}: the host of {} could not be resolved (DNS), tried once: check auth_url",
                        sluice_contracts::redact::redact_url(&self.account.auth_url)
                    ))
                } else {
                    transient(text)
                };
                return Err(error);
            }
        };
        let status = response.status();
        let body = match response.text().instrument(request.span()).await {
            Ok(body) => body,
            Err(e) => {
                request.finish(None);
                return Err(transient(format!(
                    "commercetools token response: {}",
                    e.without_url()
                )));
            }
        };
        request.finish(Some(status.as_u16()));
        if status.is_server_error() {
            return Err(transient(format!(
                "commercetools token request: HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(permanent(format!(
                "commercetools refused the credentials of account {} (client {}): HTTP {status}: {}",
                self.account_name,
                self.account.client_id,
                describe_errors(&body)
            )));
        }
        let value: Value = serde_json::from_str(&body)
            .map_err(|e| transient(format!("commercetools token response: {e}")))?;
        let access = value["access_token"]
            .as_str()
            .ok_or_else(|| permanent("commercetools token response has no access_token"))?;
        let lifetime = value["expires_in"].as_u64().unwrap_or(172_800);
        let margin = (lifetime / 10).min(300);
        let token = SecretString::from(access.to_string());
        *cached = Some(Token {
            value: token.clone(),
            renew_at: Instant::now() + Duration::from_secs(lifetime.saturating_sub(margin)),
        });
        Ok(token)
    }

    /// A token from the auth URL, then `GET {api_url}/{projectKey}` (the project), once
    /// each: what `sluicectl check commercetools` asks. Returns the project's name.
    ///
    /// # Errors
    /// The token request's error; a refusal of the project request naming its status.
    pub async fn project(&self) -> Result<String, ConnectorError> {
        let token = self.token(true).await?;
        let path = format!("/{}", self.account.project_key);
        let url = format!("{}{path}", self.account.api_url.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .map_err(|e| transient(format!("GET {path}: {}", e.without_url())))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| transient(format!("GET {path}: reading the body: {}", e.without_url())))?;
        if !status.is_success() {
            return Err(permanent(format!(
                "GET {path}: HTTP {status}: {}",
                describe_errors(&body)
            )));
        }
        let project: Value = serde_json::from_str(&body)
            .map_err(|e| permanent(format!("GET {path}: undecodable body: {e}")))?;
        Ok(project["name"]
            .as_str()
            .or(project["key"].as_str())
            .unwrap_or(&self.account.project_key)
            .to_string())
    }

    /// `GET {api_url}/{projectKey}/{endpoint}?{query}`: one page of a query.
    ///
    /// # Errors
    /// Transient for 5xx, 429, timeouts and connection errors after the in-process retries;
    /// permanent for other refusals (a second 401 names the account).
    pub async fn query(
        &self,
        endpoint: &str,
        query: &[(String, String)],
    ) -> Result<Page, ConnectorError> {
        let path = format!("/{}/{endpoint}", self.account.project_key);
        let Some(mut page) = self.get(endpoint, query, false).await? else {
            return Err(permanent(format!("GET {path}: HTTP 404")));
        };
        let results = match page["results"].take() {
            Value::Array(items) => items,
            _ => {
                return Err(permanent(format!(
                    "GET {path}: the answer has no results array"
                )));
            }
        };
        let count = page["count"].as_u64().unwrap_or(results.len() as u64);
        Ok(Page { results, count })
    }

    /// `GET {api_url}/{projectKey}/{endpoint}` of one resource: `None` when commercetools
    /// answers 404 (`ResourceNotFound`).
    ///
    /// # Errors
    /// As [`Client::query`].
    pub async fn resource(&self, endpoint: &str) -> Result<Option<Value>, ConnectorError> {
        self.get(endpoint, &[], true).await
    }

    /// One GET of `/{projectKey}/{endpoint}` decoded, retried as the module says; a 404 is
    /// `None` when `missing_ok`, else permanent.
    async fn get(
        &self,
        endpoint: &str,
        query: &[(String, String)],
        missing_ok: bool,
    ) -> Result<Option<Value>, ConnectorError> {
        let path = format!("/{}/{endpoint}", self.account.project_key);
        let url = format!("{}{path}", self.account.api_url.trim_end_matches('/'));
        let mut renewed = false;
        let mut attempt = 0;
        let mut delay = Duration::from_millis(250);
        let route = format!("/{{projectKey}}/{endpoint}");
        loop {
            let token = self.token(false).await?;
            let request =
                telemetry::Request::start(API, "GET", &route, attempt + u32::from(renewed));
            let sent = self
                .http
                .get(&url)
                .bearer_auth(token.expose_secret())
                .query(query)
                .send()
                .instrument(request.span())
                .await;
            let failure = match sent {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())));
                    if let Some(wait) = retry_after
                        && status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    {
                        request.retry_after(wait);
                    }
                    let text = response.text().instrument(request.span()).await;
                    let answered = text.as_ref().ok().map(|_| status.as_u16());
                    request.finish(answered);
                    match text {
                        Ok(body) if status.is_success() => {
                            match serde_json::from_str::<Value>(&body) {
                                Ok(value) => return Ok(Some(value)),
                                Err(e) => format!("GET {path}: undecodable body: {e}"),
                            }
                        }
                        Ok(_) if status == reqwest::StatusCode::NOT_FOUND && missing_ok => {
                            return Ok(None);
                        }
                        Ok(_) if status == reqwest::StatusCode::UNAUTHORIZED && !renewed => {
                            // Expired or revoked early: one new token, then the same request.
                            renewed = true;
                            self.token(true).await?;
                            continue;
                        }
                        Ok(body) if status == reqwest::StatusCode::UNAUTHORIZED => {
                            return Err(permanent(format!(
                                "commercetools rejected a fresh token of account {} (project {}): {}",
                                self.account_name,
                                self.account.project_key,
                                describe_errors(&body)
                            )));
                        }
                        Ok(body) if status.is_server_error() => {
                            format!("GET {path}: HTTP {status}: {}", describe_errors(&body))
                        }
                        Ok(body) if status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                            // Throttled: wait what the API asks (else the backoff), then
                            // try again; past the retries the task goes to a retry tier.
                            if let Some(wait) = retry_after {
                                telemetry::waited(API, wait);
                                delay = delay.max(wait);
                            }
                            format!("GET {path}: HTTP 429: {}", describe_errors(&body))
                        }
                        Ok(body) => {
                            return Err(permanent(format!(
                                "GET {path}: HTTP {status}: {}",
                                describe_errors(&body)
                            )));
                        }
                        Err(e) => format!("GET {path}: reading the body: {}", e.without_url()),
                    }
                }
                Err(e) if crate::is_dns_failure(&crate::error_chain(&e)) => {
                    request.finish(None);
                    return Err(permanent(format!(
                        "GET {path}: the host of {} could not be resolved (DNS), tried once: check api_url",
                        sluice_contracts::redact::redact_url(&self.account.api_url)
                    )));
                }
                Err(e) => {
                    request.finish(None);
                    format!("GET {path}: {}", e.without_url())
                }
            };
            attempt += 1;
            if attempt > TRANSIENT_RETRIES {
                return Err(transient(format!("{failure} (after {attempt} attempts)")));
            }
            telemetry::retried(API);
            tracing::debug!(%failure, attempt, "commercetools request failed; retrying");
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
}
