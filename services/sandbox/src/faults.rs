//! Fault injection shared by the emulators: one runtime-updatable [`FaultConfig`] per
//! emulated API, held by a [`Faults`], applied by the axum middleware [`inject`] (install it
//! with `axum::middleware::from_fn_with_state(faults.clone(), faults::inject)` on the routes
//! that should misbehave) and counted ([`FaultStats`]).
//!
//! Per request, in this order (each decided from `hash(seed, request number, knob)`, so a
//! sequential client sees the same faults on every run):
//! 1. a forced throttle burst ([`FaultConfig::throttle_seconds`]): 429 with `Retry-After`;
//! 2. latency: `latency_ms` plus uniform `0..=latency_jitter_ms`;
//! 3. a slow response (`slow_share`): held back `slow_ms` more (counted before the wait, as
//!    the client usually gives up first);
//! 4. a 500, 502 or 503 error body (`error_500_share`, `error_502_share`, `error_503_share`);
//! 5. a dropped connection (`drop_share`): the response body fails before any byte, so hyper
//!    closes the connection without a status line;
//! 6. a truncated body (`truncate_share`, successful responses only): the full
//!    `Content-Length` is announced, half the body is sent, then the connection is closed.
//!
//! [`throttle`] applies step 1 alone, for an API that wants a throttle burst outside its rate
//! limiter and the rest inside.
//!
//! The error bodies are the emulated API's own, built by the [`Responder`] given to
//! [`Faults::new`]. An outer layer that wants to hear of each injected fault as it happens
//! (e.g. to count it per endpoint) puts a [`FaultHook`] into the request's extensions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

/// Injected faults. Shares are probabilities in `0..=1` per request that reaches the fault
/// layer (for Klaviyo: `/api/` requests after authentication and rate limiting; for
/// commercetools: project API requests).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Seed of the per-request decisions.
    pub seed: u64,
    /// Share of 500 responses.
    pub error_500_share: f64,
    /// Share of 503 responses.
    pub error_503_share: f64,
    /// Latency added to every response, milliseconds.
    pub latency_ms: u64,
    /// Extra random latency, uniform in `0..=latency_jitter_ms` milliseconds.
    pub latency_jitter_ms: u64,
    /// Share of responses held back for [`slow_ms`](Self::slow_ms) before they are sent,
    /// to push a client past its timeout.
    pub slow_share: f64,
    /// How long a slow response is held back, milliseconds.
    pub slow_ms: u64,
    /// Share of connections closed without a response.
    pub drop_share: f64,
    /// Share of responses cut after half the body (with the full `Content-Length`).
    pub truncate_share: f64,
    /// When > 0: every request gets 429 for this many seconds from when the config
    /// is applied (`Retry-After` = the seconds left, ≥ 1).
    pub throttle_seconds: f64,
    /// Share of 502 responses (decided together with the 500 and 503 shares: one roll,
    /// 500 first, then 503, then 502).
    pub error_502_share: f64,
}

/// Which fault was injected into one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A 429 of a forced throttle burst.
    Throttled,
    /// A response held back `slow_ms`.
    Slow,
    /// An error response with this status (500, 502 or 503).
    Error(u16),
    /// A connection closed without a response.
    Dropped,
    /// A body cut after half its length.
    Truncated,
}

/// Builds an emulated API's error response for an injected fault: `(status, retry_after)`
/// where `retry_after` (whole seconds) is set for 429s of a throttle burst.
pub type Responder = fn(StatusCode, Option<u64>) -> Response;

/// Told of each fault as it is injected; put into a request's extensions by an outer layer.
#[derive(Clone)]
pub struct FaultHook(pub Arc<dyn Fn(FaultKind) + Send + Sync>);

/// Counters of what the layer saw and injected since the last reset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStats {
    /// Requests the layer decided on (those answered 429 by a throttle burst are not).
    pub requests: u64,
    /// Requests answered 429 by a throttle burst.
    pub throttled: u64,
    /// Responses delayed by `latency_ms`/`latency_jitter_ms` (> 0 ms).
    pub delayed: u64,
    /// Responses held back by `slow_share`.
    pub slow: u64,
    /// Injected 500s.
    pub error_500: u64,
    /// Injected 502s.
    pub error_502: u64,
    /// Injected 503s.
    pub error_503: u64,
    /// Dropped connections.
    pub dropped: u64,
    /// Truncated bodies.
    pub truncated: u64,
    /// Sum of every injected fault (`throttled + slow + error_* + dropped + truncated`).
    pub total: u64,
    /// Requests inside the layer right now.
    pub in_flight: u64,
    /// Most requests inside the layer at once.
    pub peak_concurrency: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    throttled: AtomicU64,
    delayed: AtomicU64,
    slow: AtomicU64,
    error_500: AtomicU64,
    error_502: AtomicU64,
    error_503: AtomicU64,
    dropped: AtomicU64,
    truncated: AtomicU64,
    in_flight: AtomicU64,
    peak: AtomicU64,
}

/// One emulated API's fault knobs and counters.
pub struct Faults {
    config: RwLock<FaultConfig>,
    throttle_until: Mutex<Option<Instant>>,
    /// The request number of the decisions.
    sequence: AtomicU64,
    counters: Counters,
    responder: Responder,
}

/// What [`Faults::decide`] chose for a request that is to be answered normally or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Answer normally; `truncate`: cut the body.
    Pass {
        /// Cut the body after half (see [`truncate`]).
        truncate: bool,
    },
    /// Answer with this error status instead (500, 502 or 503).
    Error(StatusCode),
    /// Close the connection without a response (see [`dropped`]).
    Drop,
}

impl Faults {
    /// Faults configured by `config`, error bodies built by `responder`.
    pub fn new(config: FaultConfig, responder: Responder) -> Arc<Self> {
        let f = Arc::new(Faults {
            config: RwLock::new(FaultConfig::default()),
            throttle_until: Mutex::new(None),
            sequence: AtomicU64::new(0),
            counters: Counters::default(),
            responder,
        });
        f.set(config);
        f
    }

    /// The configuration in force.
    pub fn config(&self) -> FaultConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration; a `throttle_seconds` > 0 starts a throttle burst now.
    pub fn set(&self, config: FaultConfig) {
        let until = (config.throttle_seconds > 0.0).then(|| {
            Instant::now() + Duration::from_secs_f64(config.throttle_seconds.min(86_400.0))
        });
        *self
            .throttle_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = until;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// The counters.
    pub fn stats(&self) -> FaultStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = FaultStats {
            requests: l(&c.requests),
            throttled: l(&c.throttled),
            delayed: l(&c.delayed),
            slow: l(&c.slow),
            error_500: l(&c.error_500),
            error_502: l(&c.error_502),
            error_503: l(&c.error_503),
            dropped: l(&c.dropped),
            truncated: l(&c.truncated),
            total: 0,
            in_flight: l(&c.in_flight),
            peak_concurrency: l(&c.peak),
        };
        s.total = s.throttled
            + s.slow
            + s.error_500
            + s.error_502
            + s.error_503
            + s.dropped
            + s.truncated;
        s
    }

    /// Zeroes the counters (the in-flight count is kept; the peak restarts from it).
    pub fn reset_stats(&self) {
        let c = &self.counters;
        for a in [
            &c.requests,
            &c.throttled,
            &c.delayed,
            &c.slow,
            &c.error_500,
            &c.error_502,
            &c.error_503,
            &c.dropped,
            &c.truncated,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        c.peak
            .store(c.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// When a throttle burst is on: the whole seconds left (≥ 1), counted as throttled.
    pub fn throttled(&self, hook: Option<&FaultHook>) -> Option<u64> {
        let now = Instant::now();
        let until = (*self
            .throttle_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()))
        .filter(|u| *u > now)?;
        let left = until - now;
        self.count(FaultKind::Throttled, hook);
        Some((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1))
    }

    /// Counts an injected fault and tells `hook` (for faults the caller applies, such as
    /// a truncation).
    pub fn count(&self, kind: FaultKind, hook: Option<&FaultHook>) {
        let c = &self.counters;
        let a = match kind {
            FaultKind::Throttled => &c.throttled,
            FaultKind::Slow => &c.slow,
            FaultKind::Error(500) => &c.error_500,
            FaultKind::Error(502) => &c.error_502,
            FaultKind::Error(_) => &c.error_503,
            FaultKind::Dropped => &c.dropped,
            FaultKind::Truncated => &c.truncated,
        };
        a.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = hook {
            (h.0)(kind);
        }
    }

    /// Decides the faults of the next request (the throttle burst aside, see
    /// [`throttled`](Self::throttled)): waits out the latency and a slow response, then
    /// says whether to answer, fail, drop or truncate. Injected faults are counted here and
    /// told to `hook`, except a truncation, which the caller applies (to a successful
    /// response only) and counts with [`count`](Self::count).
    pub async fn decide(&self, hook: Option<&FaultHook>) -> Verdict {
        let f = self.config();
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let roll = |k: u64| (h3(f.seed ^ 0xFA17, n, k, 0) >> 11) as f64 / (1u64 << 53) as f64;
        let latency = f.latency_ms
            + if f.latency_jitter_ms > 0 {
                h3(f.seed, n, 9, 0) % (f.latency_jitter_ms + 1)
            } else {
                0
            };
        if latency > 0 {
            self.counters.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if f.slow_ms > 0 && roll(4) < f.slow_share {
            self.count(FaultKind::Slow, hook);
            tokio::time::sleep(Duration::from_millis(f.slow_ms)).await;
        }
        let u = roll(1);
        if u < f.error_500_share + f.error_503_share + f.error_502_share {
            let status = if u < f.error_500_share {
                StatusCode::INTERNAL_SERVER_ERROR
            } else if u < f.error_500_share + f.error_503_share {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            self.count(FaultKind::Error(status.as_u16()), hook);
            return Verdict::Error(status);
        }
        if roll(2) < f.drop_share {
            self.count(FaultKind::Dropped, hook);
            return Verdict::Drop;
        }
        Verdict::Pass {
            truncate: roll(3) < f.truncate_share,
        }
    }

    /// The emulated API's body for an injected error.
    pub fn error_response(&self, status: StatusCode, retry_after: Option<u64>) -> Response {
        let mut r = (self.responder)(status, retry_after);
        if let Some(s) = retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }

    fn enter(&self) -> InFlight<'_> {
        let c = &self.counters;
        let now = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        c.peak.fetch_max(now, Ordering::Relaxed);
        InFlight(self)
    }
}

/// Decrements the in-flight count when the request ends (or its future is dropped).
struct InFlight<'a>(&'a Faults);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks a response the fault layer produced or altered (a response extension), so outer
/// layers can tell it from the handler's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injected(pub FaultKind);

/// The fault middleware: for `axum::middleware::from_fn_with_state(faults, inject)`.
pub async fn inject(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    let _in_flight = faults.enter();
    let hook = request.extensions().get::<FaultHook>().cloned();
    let (kind, mut response) = if let Some(wait) = faults.throttled(hook.as_ref()) {
        (
            FaultKind::Throttled,
            faults.error_response(StatusCode::TOO_MANY_REQUESTS, Some(wait)),
        )
    } else {
        match faults.decide(hook.as_ref()).await {
            Verdict::Error(status) => (
                FaultKind::Error(status.as_u16()),
                faults.error_response(status, None),
            ),
            Verdict::Drop => (FaultKind::Dropped, dropped()),
            Verdict::Pass { truncate: false } => return next.run(request).await,
            Verdict::Pass { truncate: true } => {
                let response = next.run(request).await;
                if !response.status().is_success() {
                    // Like the emulated APIs' own truncations: successful bodies only.
                    return response;
                }
                faults.count(FaultKind::Truncated, hook.as_ref());
                (FaultKind::Truncated, truncate(response).await)
            }
        }
    };
    response.extensions_mut().insert(Injected(kind));
    response
}

/// The throttle-burst half of the fault layer alone (a 429 with `Retry-After` while a burst
/// of [`FaultConfig::throttle_seconds`] is on): for an API whose burst must come before an
/// inner layer such as its rate limiter (so throttled requests use up no budget), installed
/// outside it, with [`inject`] inside. For
/// `axum::middleware::from_fn_with_state(faults, throttle)`.
pub async fn throttle(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    let hook = request.extensions().get::<FaultHook>().cloned();
    match faults.throttled(hook.as_ref()) {
        Some(wait) => {
            let mut r = faults.error_response(StatusCode::TOO_MANY_REQUESTS, Some(wait));
            r.extensions_mut().insert(Injected(FaultKind::Throttled));
            r
        }
        None => next.run(request).await,
    }
}

/// A response whose body fails before its first byte, so the connection is closed
/// without a status line.
pub fn dropped() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("sandbox fault: dropped connection"))
    });
    Response::new(Body::from_stream(stream))
}

/// `response` with the full `Content-Length` announced but only half the body sent, then
/// the connection closed.
pub async fn truncate(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    truncated_body(Response::from_parts(parts, Body::empty()), body.to_vec())
}

/// `head` (its body replaced) with half of `body` and `Content-Length: body.len()`.
pub fn truncated_body(head: Response, body: Vec<u8>) -> Response {
    let (mut parts, _) = head.into_parts();
    let len = body.len();
    let half = Bytes::from(body[..len / 2].to_vec());
    // Half the body, then (after hyper has flushed it) an error, which closes the
    // connection before `Content-Length` bytes were sent.
    let stream = futures::stream::unfold(Some(half), |half| async move {
        match half {
            Some(h) => Some((Ok(h), None)),
            None => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((
                    Err(std::io::Error::other("sandbox fault: truncated body")),
                    None,
                ))
            }
        }
    });
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Response::from_parts(parts, Body::from_stream(stream))
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser.
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a key and three numbers (the same as the Klaviyo generator's).
pub(crate) fn h3(key: u64, a: u64, b: u64, c: u64) -> u64 {
    mix64(mix64(mix64(key ^ a.wrapping_mul(GOLDEN)) ^ b) ^ c.wrapping_add(GOLDEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shares_are_counted() {
        fn body(status: StatusCode, _: Option<u64>) -> Response {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = status;
            r
        }
        let f = Faults::new(
            FaultConfig {
                seed: 3,
                error_502_share: 0.5,
                ..FaultConfig::default()
            },
            body,
        );
        let mut errors = 0;
        for _ in 0..200 {
            match f.decide(None).await {
                Verdict::Error(s) => {
                    assert_eq!(s, StatusCode::BAD_GATEWAY);
                    errors += 1;
                }
                Verdict::Pass { truncate } => assert!(!truncate),
                Verdict::Drop => panic!("no drops configured"),
            }
        }
        assert!((70..=130).contains(&errors), "{errors}");
        let s = f.stats();
        assert_eq!((s.requests, s.error_502, s.total), (200, errors, errors));
        f.set(FaultConfig {
            throttle_seconds: 5.0,
            ..FaultConfig::default()
        });
        assert_eq!(f.throttled(None), Some(5));
        assert_eq!(f.stats().throttled, 1);
        f.reset_stats();
        assert_eq!(f.stats(), FaultStats::default());
    }
}
