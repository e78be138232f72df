//! Rate limits (sliding windows) and request statistics.
//!
//! Each (account, endpoint) — or (account, tier) with [`RateLimitScope::Tier`] — keeps the
//! instants of its admitted requests of the last second and of the last minute. A request
//! is admitted when fewer than `burst` were admitted in the last 1 s **and** fewer than
//! `steady` in the last 60 s (sliding windows, exact). Throttled requests are not recorded,
//! so they do not use up the budget.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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

#[derive(Default)]
struct Windows {
    burst: VecDeque<Instant>,
    steady: VecDeque<Instant>,
}

/// Headers of an admitted request.
pub(crate) struct Admitted {
    /// `RateLimit-Limit`: the tighter window's limit, then both as `n;w=secs`.
    pub limit: String,
    /// `RateLimit-Remaining` of the tighter window.
    pub remaining: u32,
    /// `RateLimit-Reset`: whole seconds until the tighter window frees a slot.
    pub reset: u64,
}

/// The limiter of all budgets.
#[derive(Default)]
pub(crate) struct Limiter {
    windows: Mutex<HashMap<(String, &'static str), Windows>>,
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

impl Limiter {
    /// Admits (recording it) or throttles (`Err(retry_after_seconds)`, ≥ 1) a request.
    pub(crate) fn check(
        &self,
        account: &str,
        budget: &'static str,
        (burst, steady): (u32, u32),
        now: Instant,
    ) -> Result<Admitted, u64> {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = map.entry((account.to_owned(), budget)).or_default();
        let sec = Duration::from_secs(1);
        let min = Duration::from_secs(60);
        while w
            .burst
            .front()
            .is_some_and(|t| now.duration_since(*t) >= sec)
        {
            w.burst.pop_front();
        }
        while w
            .steady
            .front()
            .is_some_and(|t| now.duration_since(*t) >= min)
        {
            w.steady.pop_front();
        }
        let free_at = |q: &VecDeque<Instant>, win: Duration| {
            q.front()
                .map_or(1, |t| ceil_secs((*t + win).saturating_duration_since(now)))
        };
        if w.burst.len() >= burst as usize {
            let mut wait = free_at(&w.burst, sec);
            if w.steady.len() >= steady as usize {
                wait = wait.max(free_at(&w.steady, min));
            }
            return Err(wait);
        }
        if w.steady.len() >= steady as usize {
            return Err(free_at(&w.steady, min));
        }
        w.burst.push_back(now);
        w.steady.push_back(now);
        let burst_left = burst - w.burst.len() as u32;
        let steady_left = steady - w.steady.len() as u32;
        // The tighter window: the one with fewer requests left.
        let (limit, remaining, reset) = if steady_left < burst_left {
            (steady, steady_left, free_at(&w.steady, min))
        } else {
            (burst, burst_left, free_at(&w.burst, sec))
        };
        Ok(Admitted {
            limit: format!("{limit}, {burst};w=1, {steady};w=60"),
            remaining,
            reset,
        })
    }

    /// Forgets every window.
    pub(crate) fn reset(&self) {
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
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
}

impl Counts {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Ok => self.ok += 1,
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
        })
    }
}

/// Counters per tier, and per endpoint.
type CountMaps = (BTreeMap<Tier, Counts>, BTreeMap<&'static str, Counts>);

/// Counters per tier and per endpoint.
#[derive(Default)]
pub(crate) struct Stats {
    inner: Mutex<CountMaps>,
}

impl Stats {
    /// Counts one request.
    pub(crate) fn record(&self, tier: Tier, endpoint: &'static str, o: Outcome) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.entry(tier).or_default().add(o);
        g.1.entry(endpoint).or_default().add(o);
    }

    /// `{"tiers": {tier: counts}, "endpoints": {operation: counts}, "total": counts}` where
    /// counts are `{ok, throttled, client_errors, faults, total, throttled_share}`.
    pub(crate) fn json(&self) -> Value {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = Counts::default();
        for c in g.0.values() {
            total.ok += c.ok;
            total.throttled += c.throttled;
            total.client_errors += c.client_errors;
            total.faults += c.faults;
        }
        json!({
            "tiers": g.0.iter().map(|(t, c)| (t.name().to_owned(), c.json())).collect::<serde_json::Map<_, _>>(),
            "endpoints": g.1.iter().map(|(e, c)| ((*e).to_owned(), c.json())).collect::<serde_json::Map<_, _>>(),
            "total": total.json(),
        })
    }

    /// Zeroes every counter.
    pub(crate) fn reset(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.clear();
        g.1.clear();
    }
}
