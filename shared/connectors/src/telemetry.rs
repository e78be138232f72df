//! Metrics of requests to outside APIs, recorded where the connectors' HTTP clients send
//! them (catalog and meaning: `sluice_contracts::telemetry`, `docs/operations.md`). The
//! `api` label is a fixed name per API (`klaviyo`, `commercetools`, `commercetools_auth`),
//! never a URL, account or path.

use std::time::{Duration, Instant};

use sluice_contracts::telemetry::status_class;

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
