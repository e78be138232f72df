//! Client-side rate limiting: one token bucket per account and Klaviyo tier in each process.
//!
//! Klaviyo limits each account per tier with two windows at once: a 1-second burst window and
//! a 1-minute steady window (`x-klaviyo-ratelimit` in the spec: `{burst: "350/s", steady:
//! "3500/m"}` for tier XL). Every fetcher replica sends requests against the same account
//! budget, so each process takes its share:
//!
//! - refill rate (requests per second) = `steady_per_minute / 60 × steady_utilisation /
//!   replicas`;
//! - bucket capacity (requests) = `min(burst_per_second, (steady_per_minute − 60 × target
//!   rate) / 2) / replicas`, at least 1: a full bucket spent at once plus a minute of refill
//!   stays under the steady window (sliding or fixed), and under the burst window.
//!
//! `replicas` is read on every acquisition from [`crate::ConnectorContext`], so the share
//! follows the fetcher count live. Responses correct the bucket: `RateLimit-Remaining` /
//! `RateLimit-Reset` (account-wide, so they see the other replicas' spending) cap the rate to
//! this replica's share of what remains when the remaining budget runs low, and stop it until
//! the reset when nothing remains; a 429's `Retry-After` stops it for that long.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::settings::KlaviyoTierLimit;
use tokio::time::Instant;

/// Klaviyo's rate-limit tiers (`x-klaviyo-ratelimit` of each operation in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// 1/s burst, 15/m steady.
    Xs,
    /// 3/s, 60/m.
    S,
    /// 10/s, 150/m: `GET /api/metrics`.
    M,
    /// 75/s, 750/m: profiles, lists, segments, their member relationships.
    L,
    /// 350/s, 3500/m: `GET /api/events`.
    Xl,
}

impl Tier {
    /// The tier's key in `connectors.klaviyo.rate_limits` (`xs`, `s`, `m`, `l`, `xl`).
    pub fn key(self) -> &'static str {
        match self {
            Tier::Xs => "xs",
            Tier::S => "s",
            Tier::M => "m",
            Tier::L => "l",
            Tier::Xl => "xl",
        }
    }

    /// Klaviyo's published limits of the tier, used when the settings lack the tier.
    pub fn published(self) -> KlaviyoTierLimit {
        let (burst_per_second, steady_per_minute) = match self {
            Tier::Xs => (1.0, 15.0),
            Tier::S => (3.0, 60.0),
            Tier::M => (10.0, 150.0),
            Tier::L => (75.0, 750.0),
            Tier::Xl => (350.0, 3500.0),
        };
        KlaviyoTierLimit {
            burst_per_second,
            steady_per_minute,
        }
    }
}

/// One process's share of a tier's budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Refill rate, requests per second.
    pub per_second: f64,
    /// Bucket capacity, requests.
    pub burst: f64,
}

/// This process's share of `limit` when `replicas` fetchers share the account and aim at
/// `utilisation` (0–1] of the steady window together.
pub fn replica_quota(limit: KlaviyoTierLimit, utilisation: f64, replicas: u32) -> Quota {
    let replicas = f64::from(replicas.max(1));
    let utilisation = if utilisation.is_finite() && utilisation > 0.0 {
        utilisation.min(1.0)
    } else {
        1.0
    };
    let target = limit.steady_per_minute / 60.0 * utilisation;
    let headroom = (limit.steady_per_minute - target * 60.0).max(0.0);
    // Half the headroom: a full bucket plus a minute of refill stays clearly under the
    // steady window even when replicas' buckets start full together.
    let burst = limit.burst_per_second.min(headroom / 2.0).max(1.0);
    Quota {
        per_second: (target / replicas).max(1e-3),
        burst: (burst / replicas).max(1.0),
    }
}

#[derive(Debug)]
struct State {
    /// Tokens in the bucket; negative when requests have reserved future tokens.
    tokens: f64,
    /// When `tokens` was last brought up to date; in the future while the bucket is stopped.
    last: Instant,
    /// Account-wide requests per second still allowed until the instant, from headers.
    cap: Option<(f64, Instant)>,
    /// No request leaves before this instant (a 429 or an exhausted window), even those
    /// that reserved their token before the pause began.
    paused_until: Option<Instant>,
}

/// A token bucket for one account and tier, shared by the tasks of one process.
#[derive(Debug)]
pub struct Bucket {
    limit: KlaviyoTierLimit,
    utilisation: f64,
    replicas: Arc<AtomicU32>,
    state: Mutex<State>,
}

impl Bucket {
    /// A full bucket.
    pub fn new(limit: KlaviyoTierLimit, utilisation: f64, replicas: Arc<AtomicU32>) -> Self {
        let quota = replica_quota(limit, utilisation, replicas.load(Ordering::Relaxed));
        Self {
            limit,
            utilisation,
            replicas,
            state: Mutex::new(State {
                tokens: quota.burst,
                last: Instant::now(),
                cap: None,
                paused_until: None,
            }),
        }
    }

    fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    fn quota_at(&self, now: Instant, state: &mut State) -> Quota {
        let mut quota = replica_quota(self.limit, self.utilisation, self.replicas());
        match state.cap {
            Some((_, until)) if until <= now => state.cap = None,
            Some((rate, _)) => {
                quota.per_second = quota
                    .per_second
                    .min((rate / f64::from(self.replicas())).max(1e-3));
            }
            None => {}
        }
        quota
    }

    /// The current per-process quota (with any header correction in force).
    pub fn quota(&self) -> Quota {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.quota_at(Instant::now(), &mut state)
    }

    /// Waits until this process may send one request.
    pub async fn acquire(&self) {
        let ready = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let quota = self.quota_at(now, &mut state);
            if now > state.last {
                let elapsed = now.duration_since(state.last).as_secs_f64();
                state.tokens = (state.tokens + elapsed * quota.per_second).min(quota.burst);
                state.last = now;
            }
            state.tokens = state.tokens.min(quota.burst) - 1.0;
            let deficit = (-state.tokens).max(0.0);
            state.last.max(now) + Duration::from_secs_f64(deficit / quota.per_second)
        };
        tokio::time::sleep_until(ready).await;
        loop {
            let paused = {
                let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.paused_until.filter(|&until| until > Instant::now())
            };
            match paused {
                Some(until) => tokio::time::sleep_until(until).await,
                None => break,
            }
        }
    }

    /// Stops the bucket for `pause` (a 429's `Retry-After`, or an exhausted window).
    pub fn pause(&self, pause: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let until = now + pause;
        if now > state.last {
            // Tokens refilled up to now are forfeited: the account has nothing left.
            state.last = now;
        }
        state.tokens = state.tokens.min(0.0);
        if until > state.last {
            state.last = until;
        }
        if state.paused_until.is_none_or(|p| p < until) {
            state.paused_until = Some(until);
        }
    }

    /// Corrects the bucket from a response's `RateLimit-Limit` (`limit`, optional),
    /// `RateLimit-Remaining` (`remaining`) and `RateLimit-Reset` (`reset`, seconds until the
    /// window resets). Below 10% of the limit (or fewer than two requests per replica) left,
    /// the rate is capped to this replica's share of `remaining / reset` until the reset;
    /// with nothing left the bucket stops until the reset.
    pub fn observe(&self, limit: Option<f64>, remaining: f64, reset: Duration) {
        let reset = reset.max(Duration::from_millis(100));
        if remaining <= 0.0 {
            self.pause(reset);
            return;
        }
        let limit = limit.unwrap_or(self.limit.steady_per_minute);
        let low_water = (limit * 0.1).max(2.0 * f64::from(self.replicas()));
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if remaining < low_water {
            state.cap = Some((remaining / reset.as_secs_f64(), Instant::now() + reset));
        } else {
            state.cap = None;
        }
    }
}

/// The buckets of one process, by account and tier.
#[derive(Debug)]
pub struct Limiters {
    limits: HashMap<Tier, KlaviyoTierLimit>,
    utilisation: f64,
    replicas: Arc<AtomicU32>,
    buckets: Mutex<HashMap<(String, Tier), Arc<Bucket>>>,
}

impl Limiters {
    /// Limiters with the settings' tier limits (`rate_limits.<tier>`, else Klaviyo's
    /// published ones) and the shared replica count.
    pub fn new(
        settings: &std::collections::BTreeMap<String, KlaviyoTierLimit>,
        utilisation: f64,
        replicas: Arc<AtomicU32>,
    ) -> Self {
        let limits = [Tier::Xs, Tier::S, Tier::M, Tier::L, Tier::Xl]
            .into_iter()
            .map(|t| {
                let limit = settings
                    .get(t.key())
                    .copied()
                    .filter(|l| l.burst_per_second > 0.0 && l.steady_per_minute > 0.0)
                    .unwrap_or_else(|| t.published());
                (t, limit)
            })
            .collect();
        Self {
            limits,
            utilisation,
            replicas,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket of `account` and `tier`.
    pub fn bucket(&self, account: &str, tier: Tier) -> Arc<Bucket> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .entry((account.to_string(), tier))
            .or_insert_with(|| {
                Arc::new(Bucket::new(
                    self.limits.get(&tier).copied().unwrap_or(tier.published()),
                    self.utilisation,
                    self.replicas.clone(),
                ))
            })
            .clone()
    }

    /// The bucket of one operation of `account` (Klaviyo limits each endpoint on its own,
    /// with the limits of its `tier`): the Klaviyo destination's writes, whose bulk-job
    /// creation, job polling and lookups must not spend each other's budget.
    /// `operation` is a fixed name (`POST /api/profile-bulk-import-jobs`).
    pub fn operation_bucket(&self, account: &str, operation: &str, tier: Tier) -> Arc<Bucket> {
        self.bucket(&format!("{account} {operation}"), tier)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quota_divides_by_replicas() {
        let xl = Tier::Xl.published();
        let one = replica_quota(xl, 0.95, 1);
        let three = replica_quota(xl, 0.95, 3);
        assert!((one.per_second - 3500.0 / 60.0 * 0.95).abs() < 1e-9);
        assert!((three.per_second * 3.0 - one.per_second).abs() < 1e-9);
        assert!((three.burst * 3.0 - one.burst).abs() < 1e-9);
        // A full bucket plus a minute of refill stays within the steady window.
        assert!(one.burst + one.per_second * 60.0 <= 3500.0 + 1e-6);
        assert!(one.burst <= 350.0);
        // 0 replicas reads as 1.
        assert_eq!(replica_quota(xl, 0.95, 0), one);
    }

    #[test]
    fn each_operation_has_its_own_bucket_divided_by_the_replicas() {
        let replicas = Arc::new(AtomicU32::new(2));
        let limiters = Limiters::new(&std::collections::BTreeMap::new(), 0.95, replicas);
        let post =
            limiters.operation_bucket("default", "POST /api/profile-bulk-import-jobs", Tier::M);
        let again =
            limiters.operation_bucket("default", "POST /api/profile-bulk-import-jobs", Tier::M);
        let poll =
            limiters.operation_bucket("default", "GET /api/profile-bulk-import-jobs/{id}", Tier::M);
        assert!(Arc::ptr_eq(&post, &again));
        assert!(!Arc::ptr_eq(&post, &poll));
        assert!(!Arc::ptr_eq(&post, &limiters.bucket("default", Tier::M)));
        assert_eq!(post.quota(), replica_quota(Tier::M.published(), 0.95, 2));
    }

    async fn count_for_a_minute(bucket: &Bucket) -> u32 {
        let start = Instant::now();
        let mut n = 0u32;
        loop {
            bucket.acquire().await;
            if Instant::now().duration_since(start) > Duration::from_secs(60) {
                return n;
            }
            n += 1;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_rate_follows_the_replica_count() {
        let replicas = Arc::new(AtomicU32::new(1));
        let bucket = Bucket::new(Tier::M.published(), 0.95, replicas.clone());
        let per_minute = |replicas: u32| {
            let q = replica_quota(Tier::M.published(), 0.95, replicas);
            q.burst + q.per_second * 60.0
        };
        let n1 = count_for_a_minute(&bucket).await;
        assert!(
            f64::from(n1) <= per_minute(1) + 1.0 && f64::from(n1) >= 0.9 * 150.0 - 1.0,
            "{n1}"
        );
        replicas.store(3, Ordering::Relaxed);
        let n3 = count_for_a_minute(&bucket).await;
        let expect = 150.0 * 0.95 / 3.0;
        assert!((f64::from(n3) - expect).abs() <= 3.0, "{n3} vs {expect}");
    }

    #[tokio::test(start_paused = true)]
    async fn headers_and_retry_after_slow_the_bucket() {
        let bucket = Bucket::new(Tier::L.published(), 0.95, Arc::new(AtomicU32::new(1)));
        let base = bucket.quota().per_second;
        bucket.observe(Some(750.0), 500.0, Duration::from_secs(30));
        assert_eq!(bucket.quota().per_second, base);
        bucket.observe(Some(750.0), 20.0, Duration::from_secs(10));
        assert!((bucket.quota().per_second - 2.0).abs() < 1e-9);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(bucket.quota().per_second, base);

        bucket.pause(Duration::from_secs(5));
        let start = Instant::now();
        bucket.acquire().await;
        assert!(Instant::now().duration_since(start) >= Duration::from_secs(5));
    }

    /// Three replicas, eight concurrent tasks each, against a server keeping sliding 1 s and
    /// 60 s logs of tier XL: at least 90% of the steady limit over five minutes, no 429.
    #[tokio::test(start_paused = true)]
    async fn three_replicas_run_near_the_limit_without_tripping_it() {
        use std::collections::VecDeque;
        let limit = Tier::Xl.published();
        let replicas = Arc::new(AtomicU32::new(3));
        let log = Arc::new(Mutex::new((VecDeque::<Instant>::new(), 0u32, 0u32)));
        let start = Instant::now();
        let horizon = Duration::from_secs(300);
        let mut handles = Vec::new();
        for _ in 0..3 {
            let bucket = Arc::new(Bucket::new(limit, 0.95, replicas.clone()));
            for _ in 0..8 {
                let (bucket, log) = (bucket.clone(), log.clone());
                handles.push(tokio::spawn(async move {
                    loop {
                        bucket.acquire().await;
                        let now = Instant::now();
                        if now.duration_since(start) > horizon {
                            return;
                        }
                        {
                            let mut g = log.lock().unwrap();
                            while g
                                .0
                                .front()
                                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
                            {
                                g.0.pop_front();
                            }
                            let last_second = g
                                .0
                                .iter()
                                .rev()
                                .take_while(|t| now.duration_since(**t) < Duration::from_secs(1))
                                .count();
                            if g.0.len() as f64 >= limit.steady_per_minute
                                || last_second as f64 >= limit.burst_per_second
                            {
                                g.2 += 1;
                            } else {
                                g.0.push_back(now);
                                g.1 += 1;
                            }
                        }
                        // Request latency.
                        tokio::time::sleep(Duration::from_millis(150)).await;
                    }
                }));
            }
        }
        for h in handles {
            h.await.unwrap();
        }
        let (_, ok, throttled) = *log.lock().unwrap();
        let per_minute = f64::from(ok) / 5.0;
        assert_eq!(throttled, 0);
        assert!(
            per_minute >= 0.9 * limit.steady_per_minute,
            "{per_minute}/min"
        );
    }
}
