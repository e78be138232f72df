//! Metrics of requests to outside APIs, recorded where the connectors' HTTP clients send
//! them (catalog and meaning: `sluice_contracts::telemetry`, `docs/operations.md`). The
//! `api` label is a fixed name per API (`klaviyo`, `commercetools`, `commercetools_auth`),
//! never a URL, account or path.

use std::time::{Duration, Instant};

use sluice_contracts::telemetry::status_class;

/// One request to an outside API: its client span (OpenTelemetry's HTTP client
/// conventions: named `{method} {url.template}`, with `http.request.method`,
/// `url.template`, `http.response.status_code`, `http.request.resend_count`, `error.type`)
/// and, when it ends, its metrics. One per request sent — a retry or a request sent again
/// after a 429 is a request of its own —, never one per record.
pub(crate) struct Request {
    api: &'static str,
    started: Instant,
    span: tracing::Span,
}

impl Request {
    /// Starts a request of `api` in the current span: `route` is the path template
    /// (`/api/segments/{id}/relationships/profiles`), never a path with ids or a query;
    /// `resends` how many times this request was sent before (429 waits and retries).
    pub(crate) fn start(
        api: &'static str,
        method: &'static str,
        route: &str,
        resends: u32,
    ) -> Self {
        let span = tracing::info_span!(
            "http.request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            url.template = route,
            sluice.api = api,
            http.request.resend_count = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            sluice.retry_after_seconds = tracing::field::Empty,
        );
        if resends > 0 {
            span.record("http.request.resend_count", resends);
        }
        Self {
            api,
            started: Instant::now(),
            span,
        }
    }

    /// The request's span, to instrument sending it and reading its body with.
    pub(crate) fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// Notes the `Retry-After` of a 429 (or of any answer that asks to wait).
    pub(crate) fn retry_after(&self, wait: Duration) {
        self.span
            .record("sluice.retry_after_seconds", wait.as_secs_f64());
    }

    /// Ends the request: `status` is the response's status, or `None` when no complete
    /// response came (connection error, timeout, interrupted body). Counts it and observes
    /// its duration (`sluice_http_requests_total`, `sluice_http_request_duration_seconds`,
    /// `sluice_http_throttled_total`).
    pub(crate) fn finish(self, status: Option<u16>) {
        match status {
            Some(code) => {
                self.span.record("http.response.status_code", code);
                if code >= 400 {
                    self.span.record("error.type", code.to_string());
                    self.span.record("otel.status_code", "error");
                }
            }
            None => {
                self.span.record("error.type", "transport");
                self.span.record("otel.status_code", "error");
            }
        }
        request(self.api, self.started, status);
    }
}

/// The template of a request path for `url.template`: each segment that is not one of the
/// API's own words (`vocabulary`) is an id, written `{id}`; the query is left out.
/// `/api/segments/Xy12Ab/relationships/profiles` with Klaviyo's words is
/// `/api/segments/{id}/relationships/profiles`.
pub(crate) fn route_template(path: &str, vocabulary: &[&str]) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(if vocabulary.contains(&segment) {
            segment
        } else {
            "{id}"
        });
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Counts one request and observes its duration: `status` is the response's status, or
/// `None` when no complete response came (connection error, timeout, interrupted body).
pub fn request(api: &'static str, started: Instant, status: Option<u16>) {
    let class = status.map_or("error", status_class);
    metrics::counter!("sluice_http_requests_total", "api" => api, "status_class" => class)
        .increment(1);
    metrics::histogram!("sluice_http_request_duration_seconds", "api" => api)
        .record(started.elapsed().as_secs_f64());
    if status == Some(429) {
        metrics::counter!("sluice_http_throttled_total", "api" => api).increment(1);
    }
}

/// Observes a wait for the rate limiter before a request (waits under a millisecond are
/// no wait: the budget had room).
pub fn waited(api: &'static str, waited: Duration) {
    if waited >= Duration::from_millis(1) {
        metrics::histogram!("sluice_http_rate_limit_wait_seconds", "api" => api)
            .record(waited.as_secs_f64());
    }
}

/// Counts a request about to be repeated in process after a transient failure.
pub fn retried(api: &'static str) {
    metrics::counter!("sluice_http_retries_total", "api" => api).increment(1);
}

#[cfg(test)]
mod tests {
    use super::route_template;

    #[test]
    fn ids_become_placeholders_and_queries_go() {
        let words = ["api", "segments", "relationships", "profiles", "events"];
        assert_eq!(
            route_template(
                "/api/segments/Xy12Ab/relationships/profiles?page%5Bsize%5D=100",
                &words
            ),
            "/api/segments/{id}/relationships/profiles"
        );
        assert_eq!(
            route_template("/api/events?filter=x", &words),
            "/api/events"
        );
        assert_eq!(
            route_template("/retailers/17", &["retailers"]),
            "/retailers/{id}"
        );
        assert_eq!(route_template("", &words), "/");
    }
}
