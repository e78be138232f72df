//! Rate limits shared by the emulators: a [`Limiter`] keeps request windows per budget, and
//! the middleware [`limit`] asks the API's classification ([`RateLimit::new`]) which budget a
//! request draws on, admits or throttles it, and describes the budget in `RateLimit-*`
//! headers of successful responses.
//!
//! A budget ([`Budget`]) has a key (what shares it, e.g. account and endpoint) and windows
//! ([`Window`]: at most `limit` requests per `seconds`). A request is admitted when every
//! window has room, and is then counted in each; a throttled request is not counted, so it
//! uses up nothing. Windows are sliding: a window holds the admitted requests of the last
//! `seconds` (exact instants).
//!
//! Install it with `axum::middleware::from_fn_with_state(rate_limit, ratelimit::limit)`,
//! inside [`crate::auth`] (the classification may read the request's
//! [`Principal`](crate::auth::Principal)).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::faults::{FaultKind, Injected};

/// At most `limit` requests per `seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Requests admitted per window, ≥ 1.
    pub limit: u32,
    /// Length of the window, seconds, ≥ 1.
    pub seconds: u64,
}

/// What one request draws on: every window of `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// What shares the budget (e.g. `<api key>/<endpoint>`).
    pub key: String,
    /// The windows, shortest first (e.g. a 1 s burst and a 60 s steady window).
    pub windows: Vec<Window>,
}

/// How an admitted request stands in each window of its budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Per window of the budget (same order): the window, the requests left in it, and the
    /// whole seconds (≥ 1) until it frees a slot.
    pub windows: Vec<(Window, u32, u64)>,
}

impl Admitted {
    /// The window the `RateLimit-*` headers describe: the one with the fewest requests left
    /// (the shorter on ties).
    fn reported(&self) -> Option<&(Window, u32, u64)> {
        self.windows.iter().min_by_key(|(_, left, _)| *left)
    }

    /// `RateLimit-Limit`: the reported window's limit, then every window as
    /// `<limit>;w=<seconds>` (`"10, 10;w=1, 150;w=60"`).
    pub fn limit_header(&self) -> String {
        let mut s = self
            .reported()
            .map(|(w, _, _)| w.limit.to_string())
            .unwrap_or_default();
        for (w, _, _) in &self.windows {
            s.push_str(&format!(", {};w={}", w.limit, w.seconds));
        }
        s
    }

    /// `RateLimit-Remaining`: requests left in the reported window.
    pub fn remaining(&self) -> u32 {
        self.reported().map_or(0, |(_, left, _)| *left)
    }

    /// `RateLimit-Reset`: whole seconds until the reported window frees a slot.
    pub fn reset(&self) -> u64 {
        self.reported().map_or(1, |(_, _, reset)| *reset)
    }
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// The windows of every budget.
#[derive(Default)]
pub struct Limiter {
    /// Per budget key, per window: the instants of the admitted requests in it.
    windows: Mutex<HashMap<String, Vec<VecDeque<Instant>>>>,
}

impl Limiter {
    /// Admits (counting it) or throttles (`Err(retry_after_seconds)`, ≥ 1: until every full
    /// window has room) a request on `budget` at `now`.
    pub fn check(&self, budget: &Budget, now: Instant) -> Result<Admitted, u64> {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let queues = map.entry(budget.key.clone()).or_default();
        queues.resize_with(budget.windows.len(), VecDeque::new);
        let period = |w: &Window| Duration::from_secs(w.seconds.max(1));
        for (q, w) in queues.iter_mut().zip(&budget.windows) {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= period(w))
            {
                q.pop_front();
            }
        }
        let free_at = |q: &VecDeque<Instant>, w: &Window| {
            q.front().map_or(1, |t| {
                ceil_secs((*t + period(w)).saturating_duration_since(now))
            })
        };
        let wait = queues
            .iter()
            .zip(&budget.windows)
            .filter(|(q, w)| q.len() >= w.limit as usize)
            .map(|(q, w)| free_at(q, w))
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        let mut out = Vec::with_capacity(budget.windows.len());
        for (q, w) in queues.iter_mut().zip(&budget.windows) {
            q.push_back(now);
            out.push((*w, w.limit - q.len() as u32, free_at(q, w)));
        }
        Ok(Admitted { windows: out })
    }

    /// Forgets every window.
    pub fn reset(&self) {
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

type Classify = dyn Fn(&Request) -> Option<Budget> + Send + Sync;

/// An API's rate limits, the state of [`limit`].
#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<Limiter>,
    classify: Arc<Classify>,
    throttled: fn(u64) -> Response,
}

impl RateLimit {
    /// Limits on `limiter`: `classify` names the budget of a request (`None`: unlimited, no
    /// headers), `throttled` builds the API's 429 body for a wait of whole seconds (the
    /// layer adds `Retry-After`).
    pub fn new(
        limiter: Arc<Limiter>,
        classify: impl Fn(&Request) -> Option<Budget> + Send + Sync + 'static,
        throttled: fn(u64) -> Response,
    ) -> Self {
        RateLimit {
            limiter,
            classify: Arc::new(classify),
            throttled,
        }
    }
}

/// The rate-limit middleware: for `axum::middleware::from_fn_with_state(rate_limit, limit)`.
/// Successful responses (also those the fault layer truncates, not its injected errors)
/// carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a throttled
/// request gets the API's 429 with `Retry-After`.
pub async fn limit(State(rl): State<RateLimit>, request: Request, next: Next) -> Response {
    let Some(budget) = (rl.classify)(&request) else {
        return next.run(request).await;
    };
    let admitted = match rl.limiter.check(&budget, Instant::now()) {
        Ok(a) => a,
        Err(wait) => {
            let mut r = (rl.throttled)(wait);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return r;
        }
    };
    let mut resp = next.run(request).await;
    let described = match resp.extensions().get::<Injected>() {
        Some(Injected(FaultKind::Truncated)) => true,
        Some(_) => false,
        None => resp.status().is_success(),
    };
    if described {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&admitted.limit_header()) {
            h.insert("ratelimit-limit", v);
        }
        h.insert(
            "ratelimit-remaining",
            HeaderValue::from(admitted.remaining()),
        );
        h.insert("ratelimit-reset", HeaderValue::from(admitted.reset()));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget {
            key: "k".into(),
            windows: vec![
                Window {
                    limit: 2,
                    seconds: 1,
                },
                Window {
                    limit: 3,
                    seconds: 60,
                },
            ],
        }
    }

    #[test]
    fn sliding_windows_admit_and_throttle() {
        let l = Limiter::default();
        let t0 = Instant::now();
        let b = budget();
        let a = l.check(&b, t0).expect("first");
        assert_eq!(a.limit_header(), "2, 2;w=1, 3;w=60");
        assert_eq!((a.remaining(), a.reset()), (1, 1));
        l.check(&b, t0).expect("second");
        assert_eq!(l.check(&b, t0), Err(1), "burst full");
        let t1 = t0 + Duration::from_millis(1500);
        let a = l.check(&b, t1).expect("burst freed");
        assert_eq!(a.limit_header(), "3, 2;w=1, 3;w=60", "steady is tighter");
        assert_eq!(a.remaining(), 0);
        // Steady full: the first request leaves it 60 s after t0.
        assert_eq!(l.check(&b, t1 + Duration::from_secs(1)), Err(58));
        l.reset();
        assert!(l.check(&b, t1).is_ok());
    }
}
