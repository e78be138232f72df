//! Klaviyo's rate-limit tiers and budgets, and request statistics.
//!
//! Each (account, endpoint) — or (account, tier) with [`RateLimitScope::Tier`] — is one
//! budget of the shared limiter ([`crate::ratelimit`]) with two windows: `burst` requests
//! per second and `steady` per minute ([`Tier::windows`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ratelimit::Window;

/// A Klaviyo rate-limit tier (`x-klaviyo-ratelimit` of each operation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Tier {
    /// 1/s, 15/m.
    XS,
    /// 3/s, 60/m.
    S,
    /// 10/s, 150/m.
    M,
    /// 75/s, 750/m.
    L,
    /// 350/s, 3500/m.
    XL,
}

impl Tier {
    /// `(burst per second, steady per minute)` at scale 1.
    pub fn limits(self) -> (u32, u32) {
        match self {
            Tier::XS => (1, 15),
            Tier::S => (3, 60),
            Tier::M => (10, 150),
            Tier::L => (75, 750),
            Tier::XL => (350, 3500),
        }
    }

    /// The tier of `[burst per second, steady per minute]` (the spec's
    /// `x-klaviyo-ratelimit`); limits of no tier take the tier of their burst rate.
    pub fn of([burst, steady]: [u32; 2]) -> Tier {
        let all = [Tier::XS, Tier::S, Tier::M, Tier::L, Tier::XL];
        all.into_iter()
            .find(|t| t.limits() == (burst, steady))
            .or_else(|| all.into_iter().rev().find(|t| t.limits().0 <= burst))
            .unwrap_or(Tier::XS)
    }

    /// `XS` … `XL`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::XS => "XS",
            Tier::S => "S",
            Tier::M => "M",
            Tier::L => "L",
            Tier::XL => "XL",
        }
    }

    /// `(burst, steady)` scaled: each `max(1, round(limit · scale))`.
    pub fn scaled(self, scale: f64) -> (u32, u32) {
        let (b, s) = self.limits();
        let f = |x: u32| ((f64::from(x) * scale).round().clamp(1.0, 1e9)) as u32;
        (f(b), f(s))
    }

    /// The budget's windows at `scale`: the burst per second, then the steady per minute.
    pub(crate) fn windows(self, scale: f64) -> Vec<Window> {
        let (burst, steady) = self.scaled(scale);
        vec![
            Window {
                limit: burst,
                seconds: 1,
            },
            Window {
                limit: steady,
                seconds: 60,
            },
        ]
    }
}

/// What one rate-limit budget is shared by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    /// One budget per account and endpoint (operation), as Klaviyo does.
    #[default]
    Endpoint,
    /// One budget per account and tier: all endpoints of a tier share it.
    Tier,
}

/// How one request ended, for the statistics.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    /// 2xx.
    Ok,
    /// 429 from the limiter or a forced throttle burst.
    Throttled,
    /// Other 4xx (auth, revision, bad parameters, not found).
    ClientError,
    /// Injected 500/503, dropped connection or truncated body.
    Fault,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    ok: u64,
    throttled: u64,
    client_errors: u64,
    faults: u64,
    /// Request body bytes of the 2xx answers (each body's exact length, 0 when unknown).
    ok_request_bytes: u64,
    /// Milliseconds from the last reset to the first and the latest 2xx answer.
    first_ok_ms: Option<u64>,
    last_ok_ms: Option<u64>,
}

impl Counts {
    fn add(&mut self, o: Outcome, at_ms: u64, bytes: u64) {
        match o {
            Outcome::Ok => {
                self.ok += 1;
                self.ok_request_bytes += bytes;
                self.first_ok_ms.get_or_insert(at_ms);
                self.last_ok_ms = Some(at_ms);
            }
            Outcome::Throttled => self.throttled += 1,
            Outcome::ClientError => self.client_errors += 1,
            Outcome::Fault => self.faults += 1,
        }
    }

    fn json(&self) -> Value {
        let total = self.ok + self.throttled + self.client_errors + self.faults;
        json!({
            "ok": self.ok,
            "throttled": self.throttled,
            "client_errors": self.client_errors,
            "faults": self.faults,
            "total": total,
            "throttled_share": if total == 0 { 0.0 } else { self.throttled as f64 / total as f64 },
            "ok_request_bytes": self.ok_request_bytes,
            "first_ok_ms": self.first_ok_ms,
            "last_ok_ms": self.last_ok_ms,
        })
    }
}

/// Counters per tier, and per endpoint (with the endpoint's tier).
#[derive(Default)]
struct CountMaps {
    tiers: BTreeMap<Tier, Counts>,
    endpoints: BTreeMap<&'static str, (Tier, Counts)>,
    /// When the counters were last reset (or created).
    since: Option<Instant>,
}

/// Counters per tier and per endpoint.
#[derive(Default)]
pub(crate) struct Stats {
    inner: Mutex<CountMaps>,
}

impl Stats {
    /// Counts one request whose body was `bytes` long.
    pub(crate) fn record(&self, tier: Tier, endpoint: &'static str, o: Outcome, bytes: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let since = *g.since.get_or_insert_with(Instant::now);
        let at_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        g.tiers.entry(tier).or_default().add(o, at_ms, bytes);
        g.endpoints
            .entry(endpoint)
            .or_insert((tier, Counts::default()))
            .1
            .add(o, at_ms, bytes);
    }

    /// `{"tiers": {tier: counts}, "endpoints": {operation: counts + {"tier": name,
    /// "steady_per_minute": Klaviyo's steady limit of the tier, unscaled}},
    /// "total": counts}` where counts are `{ok, throttled, client_errors, faults, total,
    /// throttled_share, ok_request_bytes, first_ok_ms, last_ok_ms}`: the request body bytes
    /// of the 2xx answers, and the milliseconds from
    /// the last reset to the first and the latest 2xx answer (null before any), so a
    /// benchmark can rate an endpoint over the time it was written to.
    pub(crate) fn json(&self) -> Value {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = Counts::default();
        for c in g.tiers.values() {
            total.ok += c.ok;
            total.throttled += c.throttled;
            total.client_errors += c.client_errors;
            total.faults += c.faults;
            total.ok_request_bytes += c.ok_request_bytes;
            total.first_ok_ms = match (total.first_ok_ms, c.first_ok_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            total.last_ok_ms = total.last_ok_ms.max(c.last_ok_ms);
        }
        let endpoint = |tier: &Tier, c: &Counts| {
            let mut v = c.json();
            v["tier"] = json!(tier.name());
            v["steady_per_minute"] = json!(tier.limits().1);
            v
        };
        json!({
            "tiers": g.tiers.iter().map(|(t, c)| (t.name().to_owned(), c.json())).collect::<serde_json::Map<_, _>>(),
            "endpoints": g.endpoints.iter().map(|(e, (t, c))| ((*e).to_owned(), endpoint(t, c))).collect::<serde_json::Map<_, _>>(),
            "total": total.json(),
        })
    }

    /// Zeroes every counter and restarts the clock of `first_ok_ms`/`last_ok_ms`.
    pub(crate) fn reset(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.tiers.clear();
        g.endpoints.clear();
        g.since = Some(Instant::now());
    }
}
