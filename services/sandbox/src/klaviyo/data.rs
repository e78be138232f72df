//! The generated Klaviyo account: a pure, lazily evaluated function of a [`KlaviyoDataSpec`].
//!
//! Nothing proportional to the number of events or profiles is held in memory:
//!
//! - **Events.** The time line (`start..end`, plus a year after `end` when
//!   [`KlaviyoDataSpec::future_share`] > 0) is cut into slots of one day (86 400 s, aligned
//!   on `start`; the last slot before `end` may be shorter). Each metric's events are split
//!   over the slots by seeded weights (a per-metric prefix sum, `O(slots)`), each slot's over
//!   its minutes and each minute's over its seconds the same way (computed on demand,
//!   1 440 + 60 weights). An event is therefore `(metric, index)`, with indexes in datetime
//!   order; [`Dataset::count_before`] maps a time to an index and [`Dataset::times`] lists the
//!   times of an index range, both without materialising other events. Ties (same second)
//!   are ordered by index. Everything else of an event (id, uuid, profile, properties)
//!   derives from `(seed, metric, index)`.
//! - **Shapes.** Uniform metrics (orders, browsing) spread a slot's events evenly at random;
//!   bursty metrics (emails) put ~88% of a slot's events in the 10 minutes after a daily
//!   campaign send time (between 08:00 and 20:00 after the slot start) and the rest evenly.
//! - **Profiles.** Profile `i` is created at `start - 730 days + i·step + jitter` (whole
//!   seconds, strictly increasing, so ULID-like ids sort like indexes) and last updated at
//!   `start + i·ustep + jitter` (non-decreasing over `start..end`), so `created`/`updated`
//!   bounds are index ranges (binary search). Email, phone number and external id embed the
//!   index, so they are looked up in `O(1)`.
//! - **Lists and segments.** Profile `i` is a member of list/segment `g` when a hash of
//!   `(seed, g, i)` falls below the group's share (5–60%); `joined_group_at` is just after the
//!   profile's creation, so it increases with the index too.

use chrono::{TimeZone as _, Utc};
use serde_json::{Map, Value, json};

use super::KlaviyoDataSpec;

mod engagement;
pub use engagement::{Campaign, FlowMessage};
pub(crate) use engagement::{FLOW_ACTIONS, FLOWS, TAG_GROUPS, TAGS, TEMPLATES};

/// The golden-ratio increment of SplitMix64.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// Seconds per slot.
const DAY: i64 = 86_400;
/// How long before `start` profiles begin to be created, in seconds.
const PROFILE_HISTORY: i64 = 730 * DAY;
/// How far after `end` future events may be dated, in seconds.
const FUTURE_SPAN: i64 = 365 * DAY;
/// Share of a bursty slot's events in its campaign window.
const BURST_SHARE: f64 = 0.88;
/// Minutes of a campaign window.
const BURST_MINUTES: usize = 10;

/// SplitMix64's finaliser (a bijection).
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a key and three numbers.
pub(crate) fn h3(key: u64, a: u64, b: u64, c: u64) -> u64 {
    mix64(mix64(mix64(key ^ a.wrapping_mul(GOLDEN)) ^ b) ^ c.wrapping_add(GOLDEN))
}

/// A hash as a number in `[0, 1)`.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Key of one kind of generated thing for a seed.
fn stream(seed: u64, kind: u64) -> u64 {
    mix64(seed.wrapping_mul(GOLDEN) ^ mix64(kind ^ 0x4B1A_7140_5A4D_B0C5))
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// `width` base-62 digits of `n` (most significant first, wrapping).
fn base62(mut n: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A 6-character id (like Klaviyo's `Y6nRLr`): 4 seeded characters, then the index in 2.
fn short_id(key: u64, index: u64) -> String {
    format!("{}{}", base62(mix64(key ^ index), 4), base62(index, 2))
}

/// The inverse of [`short_id`]'s index part (ids are checked by the caller).
fn short_id_index(id: &str) -> Option<u64> {
    if id.len() != 6 {
        return None;
    }
    let mut n = 0u64;
    for b in id[4..].bytes() {
        n = n * 62 + BASE62.iter().position(|&c| c == b)? as u64;
    }
    Some(n)
}

/// Event shapes over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Evenly at random over each day.
    Uniform,
    /// Clustered after a daily campaign send.
    Bursty,
}

/// What event properties a metric carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Order,
    Email,
    Browse,
}

/// (name, shape, kind, integration index)
const METRICS: &[(&str, Shape, Kind, usize)] = &[
    ("Placed Order", Shape::Uniform, Kind::Order, 1),
    ("Received Email", Shape::Bursty, Kind::Email, 0),
    ("Opened Email", Shape::Bursty, Kind::Email, 0),
    ("Clicked Email", Shape::Bursty, Kind::Email, 0),
    ("Viewed Product", Shape::Uniform, Kind::Browse, 2),
    ("Started Checkout", Shape::Uniform, Kind::Order, 1),
    ("Ordered Product", Shape::Uniform, Kind::Order, 1),
    ("Active on Site", Shape::Uniform, Kind::Browse, 2),
    ("Added to Cart", Shape::Uniform, Kind::Order, 2),
    ("Bounced Email", Shape::Bursty, Kind::Email, 0),
    ("Unsubscribed", Shape::Bursty, Kind::Email, 0),
    ("Fulfilled Order", Shape::Uniform, Kind::Order, 1),
];

/// (id, key, name, category)
const INTEGRATIONS: &[(&str, &str, &str, &str)] = &[
    ("0rG4eQ", "klaviyo", "Klaviyo", "Internal"),
    ("0eMvjm", "shopify", "Shopify", "eCommerce"),
    ("7FtS4J", "api", "API", "API"),
];

const FIRST: &[&str] = &[
    "Sarah", "James", "Maria", "Wei", "Aisha", "Lukas", "Sofia", "Noah", "Priya", "Mateo", "Emma",
    "Oliver", "Yuki", "Amara", "Liam", "Chloe",
];
const LAST: &[&str] = &[
    "Mason", "Smith", "Garcia", "Chen", "Khan", "Müller", "Rossi", "Johnson", "Patel", "Silva",
    "Brown", "Nguyen", "Tanaka", "Okafor", "O'Brien", "Dubois",
];
const DOMAINS: &[&str] = &[
    "klaviyo-demo.com",
    "example.com",
    "example.org",
    "mail.example.net",
];
const ORGS: &[&str] = &[
    "Example Corporation",
    "Acme Inc.",
    "Globex",
    "Initech",
    "Umbrella Retail",
];
const TITLES: &[&str] = &[
    "Regional Manager",
    "Engineer",
    "Buyer",
    "Designer",
    "Student",
    "Director of Sales",
];
/// (city, region, country, zip prefix, timezone, latitude, longitude)
const PLACES: &[(&str, &str, &str, &str, &str, f64, f64)] = &[
    (
        "New York",
        "NY",
        "United States",
        "100",
        "America/New_York",
        40.7128,
        -74.006,
    ),
    (
        "Boston",
        "MA",
        "United States",
        "021",
        "America/New_York",
        42.3601,
        -71.0589,
    ),
    (
        "Austin",
        "TX",
        "United States",
        "787",
        "America/Chicago",
        30.2672,
        -97.7431,
    ),
    (
        "London",
        "England",
        "United Kingdom",
        "EC1",
        "Europe/London",
        51.5072,
        -0.1276,
    ),
    (
        "Berlin",
        "Berlin",
        "Germany",
        "101",
        "Europe/Berlin",
        52.52,
        13.405,
    ),
    (
        "Toronto",
        "ON",
        "Canada",
        "M5V",
        "America/Toronto",
        43.6532,
        -79.3832,
    ),
];
const LOCALES: &[&str] = &["en-US", "en-GB", "de-DE", "fr-CA", "es-ES"];
const PRODUCTS: &[(&str, f64)] = &[
    ("Winnie the Pooh", 9.99),
    ("A Tale of Two Cities", 19.99),
    ("Ceramic Mug", 14.5),
    ("Linen Shirt", 49.0),
    ("Trail Running Shoes", 129.95),
    ("Espresso Beans 1kg", 24.0),
    ("Desk Lamp", 39.9),
];
const SUBJECTS: &[&str] = &[
    "New arrivals are here",
    "Your weekly picks",
    "Last chance: 20% off",
    "We miss you",
    "Back in stock",
];
const LIST_NAMES: &[&str] = &[
    "Newsletter",
    "VIP",
    "Preview List",
    "SMS Subscribers",
    "Wholesale",
    "Sweepstakes",
];
const SEGMENT_NAMES: &[&str] = &[
    "Repeat Purchasers",
    "Engaged (30 days)",
    "Lapsed Customers",
    "High Value",
    "New Subscribers",
    "Browse Abandoners",
];

/// RFC 3339 in Klaviyo's shape, `2022-11-08T01:23:45+00:00` (UTC, whole seconds).
pub(crate) fn fmt_time(epoch_s: i64) -> String {
    Utc.timestamp_opt(epoch_s, 0)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string())
        .unwrap_or_default()
}

/// A spec whose parameters are out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSpec(pub String);

impl std::fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid Klaviyo data spec: {}", self.0)
    }
}

impl std::error::Error for InvalidSpec {}

/// One generated metric.
pub(crate) struct MetricGen {
    /// Metric id (6 characters).
    pub id: String,
    /// Display name.
    pub name: String,
    shape: Shape,
    kind: Kind,
    integration: usize,
    key: u64,
    /// Events before each slot: `cum[s]`; `cum[slots]` is the metric's total.
    cum: Vec<u64>,
}

/// A list or a segment.
pub(crate) struct GroupGen {
    /// Id (6 characters).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// Seconds since the epoch.
    pub updated: i64,
    key: u64,
    /// Membership probability in parts per 2^32.
    share: u64,
    /// Starred (segments only).
    pub starred: bool,
    /// Double opt-in (lists only).
    pub double_opt_in: bool,
}

/// A spec compiled for serving: metrics, groups and the time line.
pub(crate) struct Dataset {
    pub spec: KlaviyoDataSpec,
    pub metrics: Vec<MetricGen>,
    pub lists: Vec<GroupGen>,
    pub segments: Vec<GroupGen>,
    /// Slot starts (epoch seconds), ascending, contiguous.
    slot_start: Vec<i64>,
    /// Slot lengths in seconds (≤ 86 400).
    slot_len: Vec<i64>,
    /// End of the last slot.
    timeline_end: i64,
    start: i64,
    profile_key: u64,
    event_key: u64,
    /// Seconds between profile creations.
    pstep: i64,
    /// Seconds between profile updates (may be 0).
    ustep: i64,
}

/// Largest supported sizes.
const MAX_PROFILES: u64 = 50_000_000;
const MAX_GROUPS: u32 = 3_000;
const MAX_EVENTS_PER_METRIC: u64 = 1 << 38;
const MAX_RANGE_DAYS: i64 = 20 * 366;

/// Cumulative split of `count` over `weights`: `out[0] = 0`, `out[n] = count`, non-decreasing.
fn split(count: u64, weights: &[f64], out: &mut Vec<u64>) {
    out.clear();
    out.push(0);
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let n = weights.len();
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        let c = if i + 1 == n {
            count
        } else if total > 0.0 {
            ((count as f64) * acc / total).floor().min(count as f64) as u64
        } else {
            0
        };
        out.push(c);
    }
}

impl Dataset {
    /// Compiles `spec` (validating it).
    pub(crate) fn new(spec: &KlaviyoDataSpec) -> Result<Self, InvalidSpec> {
        let start = spec.start.timestamp();
        let end = spec.end.timestamp();
        if end <= start {
            return Err(InvalidSpec("`end` must be after `start`".into()));
        }
        if (end - start) / DAY > MAX_RANGE_DAYS {
            return Err(InvalidSpec("`start..end` must be at most 20 years".into()));
        }
        if spec.profiles == 0 || spec.profiles > MAX_PROFILES {
            return Err(InvalidSpec(format!(
                "`profiles` must be 1..={MAX_PROFILES}"
            )));
        }
        if spec.metrics > MAX_GROUPS || spec.lists > MAX_GROUPS || spec.segments > MAX_GROUPS {
            return Err(InvalidSpec(format!(
                "`metrics`, `lists` and `segments` must be at most {MAX_GROUPS}"
            )));
        }
        if spec.events_per_metric > MAX_EVENTS_PER_METRIC {
            return Err(InvalidSpec(format!(
                "`events_per_metric` must be at most {MAX_EVENTS_PER_METRIC}"
            )));
        }
        if !(0.0..=1.0).contains(&spec.future_share) {
            return Err(InvalidSpec("`future_share` must be within 0..=1".into()));
        }
        let mut slot_start = Vec::new();
        let mut slot_len = Vec::new();
        let mut t = start;
        while t < end {
            slot_start.push(t);
            slot_len.push((end - t).min(DAY));
            t += DAY;
        }
        let main_slots = slot_start.len();
        if spec.future_share > 0.0 {
            let mut t = end;
            while t < end + FUTURE_SPAN {
                slot_start.push(t);
                slot_len.push(DAY);
                t += DAY;
            }
        }
        let timeline_end = slot_start
            .last()
            .zip(slot_len.last())
            .map_or(end, |(s, l)| s + l);
        let seed = spec.seed;
        let metric_key = stream(seed, 1);
        let mut weights = Vec::with_capacity(slot_start.len());
        let mut metrics = Vec::new();
        for m in 0..u64::from(spec.metrics) {
            let (name, shape, kind, integration) = METRICS[m as usize % METRICS.len()];
            let round = m as usize / METRICS.len();
            let name = if round == 0 {
                name.to_owned()
            } else {
                format!("{name} {}", round + 1)
            };
            let key = h3(metric_key, m, 0, 0);
            let total = spec.events_per_metric;
            let future = ((total as f64) * spec.future_share).round() as u64;
            let future = if slot_start.len() > main_slots {
                future.min(total)
            } else {
                0
            };
            let main = total - future;
            weights.clear();
            for (s, len) in slot_len.iter().enumerate().take(main_slots) {
                weights.push((0.5 + unit(h3(key, 1, s as u64, 0))) * *len as f64);
            }
            let mut cum = Vec::new();
            split(main, &weights, &mut cum);
            if slot_start.len() > main_slots {
                weights.clear();
                for s in main_slots..slot_start.len() {
                    weights.push(0.5 + unit(h3(key, 1, s as u64, 0)));
                }
                let mut fut = Vec::new();
                split(future, &weights, &mut fut);
                cum.extend(fut.iter().skip(1).map(|c| c + main));
            }
            metrics.push(MetricGen {
                id: short_id(metric_key, m),
                name,
                shape,
                kind,
                integration,
                key,
                cum,
            });
        }
        let group = |kind: u64, count: u32, names: &[&str]| -> Vec<GroupGen> {
            let gkey = stream(seed, kind);
            (0..u64::from(count))
                .map(|g| {
                    let key = h3(gkey, g, 0, 0);
                    let base = names[g as usize % names.len()];
                    let round = g as usize / names.len();
                    let created =
                        start - PROFILE_HISTORY - DAY + (mix64(key) % (DAY as u64)) as i64;
                    GroupGen {
                        id: short_id(gkey, g),
                        name: if round == 0 {
                            base.to_owned()
                        } else {
                            format!("{base} {}", round + 1)
                        },
                        created,
                        updated: start + (mix64(key ^ 1) % ((end - start) as u64)) as i64,
                        key,
                        share: ((0.05 + 0.55 * unit(mix64(key ^ 2))) * (1u64 << 32) as f64) as u64,
                        starred: mix64(key ^ 3).is_multiple_of(4),
                        double_opt_in: mix64(key ^ 4).is_multiple_of(2),
                    }
                })
                .collect()
        };
        let lists = group(3, spec.lists, LIST_NAMES);
        let segments = group(4, spec.segments, SEGMENT_NAMES);
        let p = spec.profiles as i64;
        Ok(Dataset {
            spec: spec.clone(),
            metrics,
            lists,
            segments,
            slot_start,
            slot_len,
            timeline_end,
            start,
            profile_key: stream(seed, 2),
            event_key: stream(seed, 5),
            pstep: (PROFILE_HISTORY / p).max(1),
            ustep: (end - start) / p,
        })
    }

    /// The metric with this id.
    pub(crate) fn metric_index(&self, id: &str) -> Option<usize> {
        let i = short_id_index(id)? as usize;
        (self.metrics.get(i)?.id == id).then_some(i)
    }

    /// The list (`lists == true`) or segment with this id.
    pub(crate) fn group_index(&self, lists: bool, id: &str) -> Option<usize> {
        let groups = if lists { &self.lists } else { &self.segments };
        let i = short_id_index(id)? as usize;
        (groups.get(i)?.id == id).then_some(i)
    }

    /// Number of generated events of metric `m`.
    pub(crate) fn metric_total(&self, m: usize) -> u64 {
        self.metrics[m].cum.last().copied().unwrap_or(0)
    }

    /// Minute weights of slot `s` of metric `m`, cumulative counts into `out`.
    fn minute_cum(&self, m: usize, s: usize, out: &mut Vec<u64>) {
        let metric = &self.metrics[m];
        let count = metric.cum[s + 1] - metric.cum[s];
        let len = self.slot_len[s];
        let minutes = ((len + 59) / 60) as usize;
        let mut w = Vec::with_capacity(minutes);
        for j in 0..minutes {
            let valid = (len - j as i64 * 60).min(60) as f64 / 60.0;
            w.push((0.5 + unit(h3(metric.key, 2, s as u64, j as u64))) * valid);
        }
        if metric.shape == Shape::Bursty {
            let bg: f64 = w.iter().sum();
            // The campaign goes out between 08:00 and 20:00 after the slot start.
            let send = 480 + (h3(metric.key, 3, s as u64, 0) % 720) as usize;
            let norm: f64 = (0..BURST_MINUTES).map(|k| (-(k as f64) / 3.0).exp()).sum();
            let scale = if bg > 0.0 {
                (1.0 - BURST_SHARE) / bg
            } else {
                0.0
            };
            for x in w.iter_mut() {
                *x *= scale;
            }
            for k in 0..BURST_MINUTES {
                if let Some(x) = w.get_mut(send + k) {
                    let valid = (len - (send + k) as i64 * 60).min(60) as f64 / 60.0;
                    *x += BURST_SHARE * (-(k as f64) / 3.0).exp() / norm * valid;
                }
            }
        }
        split(count, &w, out);
    }

    /// Cumulative counts of the 60 seconds of minute `j` of slot `s` (`count` events).
    fn second_cum(&self, m: usize, s: usize, j: usize, count: u64, out: &mut Vec<u64>) {
        let key = self.metrics[m].key;
        let len = self.slot_len[s];
        let mut w = [0.0f64; 60];
        for (k, x) in w.iter_mut().enumerate() {
            if (j * 60 + k) as i64 >= len {
                break;
            }
            *x = 0.5 + unit(h3(key, 4 + ((s as u64) << 20), j as u64, k as u64));
        }
        split(count, &w, out);
    }

    /// Events of metric `m` dated before `t` (epoch seconds).
    pub(crate) fn count_before(&self, m: usize, t: i64) -> u64 {
        let metric = &self.metrics[m];
        let Some(&first) = self.slot_start.first() else {
            return 0;
        };
        if t <= first {
            return 0;
        }
        if t >= self.timeline_end {
            return self.metric_total(m);
        }
        let s = self.slot_start.partition_point(|&x| x <= t) - 1;
        let base = metric.cum[s];
        if metric.cum[s + 1] == base {
            return base;
        }
        let off = t - self.slot_start[s];
        let (j, k) = ((off / 60) as usize, (off % 60) as usize);
        let mut mc = Vec::new();
        self.minute_cum(m, s, &mut mc);
        let mut sc = Vec::new();
        self.second_cum(m, s, j, mc[j + 1] - mc[j], &mut sc);
        base + mc[j] + sc[k]
    }

    /// Times (epoch seconds) of the events `a..b` of metric `m`, ascending.
    pub(crate) fn times(&self, m: usize, a: u64, b: u64) -> Vec<i64> {
        let metric = &self.metrics[m];
        let b = b.min(self.metric_total(m));
        let mut out = Vec::with_capacity(b.saturating_sub(a) as usize);
        if a >= b {
            return out;
        }
        let mut idx = a;
        let mut s = metric.cum[1..].partition_point(|&c| c <= a);
        let (mut mc, mut sc) = (Vec::new(), Vec::new());
        while idx < b && s < self.slot_start.len() {
            let base = metric.cum[s];
            let slot_end = metric.cum[s + 1];
            if idx >= slot_end {
                s += 1;
                continue;
            }
            self.minute_cum(m, s, &mut mc);
            let mut j = mc.partition_point(|&c| base + c <= idx) - 1;
            while idx < b && idx < slot_end {
                let mbase = base + mc[j];
                let mend = base + mc[j + 1];
                if idx >= mend {
                    j += 1;
                    continue;
                }
                self.second_cum(m, s, j, mend - mbase, &mut sc);
                let mut k = sc.partition_point(|&c| mbase + c <= idx) - 1;
                while idx < b && idx < mend {
                    while mbase + sc[k + 1] <= idx {
                        k += 1;
                    }
                    out.push(self.slot_start[s] + (j * 60 + k) as i64);
                    idx += 1;
                }
            }
            s += 1;
        }
        out
    }

    /// Id of generated event `idx` of metric `m` (11 base-62 characters, unique).
    pub(crate) fn event_id(&self, m: usize, idx: u64) -> String {
        base62(mix64(self.event_key ^ ((m as u64) << 40 | idx)), 11)
    }

    /// Id of the `seq`-th appended event of metric `m`.
    pub(crate) fn appended_event_id(&self, m: usize, seq: u64) -> String {
        base62(
            mix64(self.event_key ^ ((m as u64) << 40 | 1 << 39 | seq)),
            11,
        )
    }

    /// Profile index of generated event `idx` of metric `m`.
    pub(crate) fn event_profile(&self, m: usize, idx: u64) -> u64 {
        h3(self.event_key, m as u64, idx, 1) % self.spec.profiles
    }

    /// The id (32 hex digits) of the attribution of generated event `idx` of metric `m`:
    /// a quarter of the events of metrics other than the email ones (`… Email`) have one.
    pub(crate) fn event_attribution(&self, m: usize, idx: u64) -> Option<String> {
        if self.metrics[m].name.contains("Email") {
            return None;
        }
        let r = h3(self.event_key, m as u64, idx, 3);
        r.is_multiple_of(4)
            .then(|| format!("{:016x}{:016x}", mix64(r), mix64(r ^ 0xA77)))
    }

    /// A v1-looking uuid of an event.
    pub(crate) fn event_uuid(&self, m: usize, idx: u64, ts: i64) -> String {
        let r = h3(self.event_key, m as u64, idx, 2);
        format!(
            "{:08x}-{:04x}-11ef-8{:03x}-{:012x}",
            ts as u32,
            (r >> 48) as u16,
            (r >> 36) & 0xfff,
            r & 0xffff_ffff_ffff
        )
    }

    /// `event_properties` of generated event `idx` of metric `m` at `ts`.
    pub(crate) fn event_properties(&self, m: usize, idx: u64, ts: i64) -> Value {
        let metric = &self.metrics[m];
        let r = h3(self.event_key, m as u64, idx, 3);
        match metric.kind {
            Kind::Order => {
                let n = 1 + (r % 3) as usize;
                let items: Vec<Value> = (0..n)
                    .map(|k| {
                        let (name, price) = PRODUCTS[((r >> (8 + 4 * k)) % 7) as usize];
                        json!({"ProductName": name, "Quantity": 1 + (r >> (20 + k)) % 2, "ItemPrice": price})
                    })
                    .collect();
                let value: f64 = items
                    .iter()
                    .map(|i| {
                        i["ItemPrice"].as_f64().unwrap_or(0.0)
                            * i["Quantity"].as_f64().unwrap_or(1.0)
                    })
                    .sum();
                json!({
                    "$value": (value * 100.0).round() / 100.0,
                    "$event_id": format!("{}", 1_000_000 + idx),
                    "OrderId": format!("{}-{}", metric.id, idx),
                    "ItemNames": items.iter().map(|i| i["ProductName"].clone()).collect::<Vec<_>>(),
                    "Items": items,
                    "$currency_code": "USD",
                })
            }
            Kind::Email => {
                let mut p = json!({
                    "Subject": SUBJECTS[(r % SUBJECTS.len() as u64) as usize],
                    "Email Domain": DOMAINS[((r >> 8) % DOMAINS.len() as u64) as usize],
                    "$ESP": (r >> 16) % 3,
                });
                if let Some(o) = p.as_object_mut() {
                    o.extend(self.email_origin(ts, r));
                }
                if metric.name.starts_with("Clicked") {
                    p["URL"] = json!(format!("https://shop.example.com/p/{}", (r >> 24) % 500));
                }
                p
            }
            Kind::Browse => json!({
                "ProductName": PRODUCTS[(r % 7) as usize].0,
                "URL": format!("https://shop.example.com/p/{}", (r >> 8) % 500),
                "$session_id": format!("{:016x}", mix64(r)),
            }),
        }
    }

    /// The metric resource's attributes.
    pub(crate) fn metric_attributes(&self, m: usize) -> Value {
        let metric = &self.metrics[m];
        let (id, key, name, category) = INTEGRATIONS[metric.integration];
        let created = self.start - PROFILE_HISTORY - 2 * DAY + (metric.key % 3600) as i64;
        json!({
            "name": metric.name,
            "created": fmt_time(created),
            "updated": fmt_time(created + 86_400),
            "integration": {"object": "integration", "id": id, "key": key, "name": name, "category": category},
        })
    }

    /// The integration's (name, category) of metric `m`.
    pub(crate) fn metric_integration(&self, m: usize) -> (&'static str, &'static str) {
        let (_, _, name, category) = INTEGRATIONS[self.metrics[m].integration];
        (name, category)
    }

    // ---- profiles ----

    /// Creation time of profile `i`, epoch seconds (strictly increasing in `i`).
    pub(crate) fn profile_created(&self, i: u64) -> i64 {
        let jitter = if self.pstep > 1 {
            (h3(self.profile_key, i, 1, 0) % (self.pstep as u64 / 2).max(1)) as i64
        } else {
            0
        };
        self.start - PROFILE_HISTORY + i as i64 * self.pstep + jitter
    }

    /// Generated last-update time of profile `i`, epoch seconds (non-decreasing in `i`).
    pub(crate) fn profile_updated(&self, i: u64) -> i64 {
        let jitter = if self.ustep > 1 {
            (h3(self.profile_key, i, 2, 0) % (self.ustep as u64 / 2)) as i64
        } else {
            0
        };
        self.start + i as i64 * self.ustep + jitter
    }

    /// `joined_group_at` of profile `i` in a group (increasing in `i`), epoch seconds.
    pub(crate) fn joined_at(&self, g: &GroupGen, i: u64) -> i64 {
        let lag = if self.pstep > 1 {
            (h3(g.key, i, 5, 0) % (self.pstep as u64 / 2).max(1)) as i64
        } else {
            0
        };
        self.profile_created(i) + lag
    }

    /// Whether profile `i` is a member of `g`.
    pub(crate) fn is_member(&self, g: &GroupGen, i: u64) -> bool {
        (h3(g.key, i, 6, 0) >> 32) < g.share
    }

    /// First index `i` with `f(i) >= t`, for a non-decreasing `f` over profiles.
    pub(crate) fn first_profile_at(&self, t: i64, f: impl Fn(&Self, u64) -> i64) -> u64 {
        let (mut lo, mut hi) = (0u64, self.spec.profiles);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if f(self, mid) < t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Profile id of `i`: a ULID (Crockford base 32: 48-bit creation milliseconds, then 80
    /// seeded bits), so ids sort like indexes.
    pub(crate) fn profile_id(&self, i: u64) -> String {
        let ms = (self.profile_created(i) as u64).wrapping_mul(1000);
        let r1 = h3(self.profile_key, i, 3, 0);
        let r2 = h3(self.profile_key, i, 4, 0);
        let value: u128 = (u128::from(ms & 0xFFFF_FFFF_FFFF) << 80)
            | (u128::from(r1) << 16)
            | u128::from(r2 & 0xFFFF);
        let mut out = [b'0'; 26];
        for (k, slot) in out.iter_mut().enumerate() {
            let shift = 125 - 5 * k as u32;
            *slot = CROCKFORD[((value >> shift) & 31) as usize];
        }
        String::from_utf8(out.to_vec()).unwrap_or_default()
    }

    /// Index of the profile with this id.
    pub(crate) fn profile_index(&self, id: &str) -> Option<u64> {
        if id.len() != 26 {
            return None;
        }
        let mut ms: u64 = 0;
        for b in id[..10].bytes() {
            ms = (ms << 5) | CROCKFORD.iter().position(|&c| c == b)? as u64;
        }
        let secs = (ms / 1000) as i64;
        let off = secs - (self.start - PROFILE_HISTORY);
        if off < 0 {
            return None;
        }
        let i = (off / self.pstep) as u64;
        (i < self.spec.profiles && self.profile_id(i) == id).then_some(i)
    }

    fn names(&self, i: u64) -> (&'static str, &'static str, u64) {
        let r = h3(self.profile_key, i, 7, 0);
        (
            FIRST[(r % FIRST.len() as u64) as usize],
            LAST[((r >> 8) % LAST.len() as u64) as usize],
            r,
        )
    }

    /// Email of profile `i`: `first.last.<i>@domain` (lower case, ASCII).
    pub(crate) fn profile_email(&self, i: u64) -> String {
        let (first, last, r) = self.names(i);
        let clean = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_alphabetic())
                .collect::<String>()
                .to_ascii_lowercase()
        };
        format!(
            "{}.{}.{i}@{}",
            clean(first),
            clean(last),
            DOMAINS[((r >> 16) % DOMAINS.len() as u64) as usize]
        )
    }

    /// Index of the profile with this email (case-insensitive).
    pub(crate) fn profile_by_email(&self, email: &str) -> Option<u64> {
        let email = email.to_ascii_lowercase();
        let local = email.split('@').next()?;
        let i: u64 = local.rsplit('.').next()?.parse().ok()?;
        (i < self.spec.profiles && self.profile_email(i) == email).then_some(i)
    }

    /// Phone number of profile `i` (E.164), for 80% of profiles.
    pub(crate) fn profile_phone(&self, i: u64) -> Option<String> {
        (!h3(self.profile_key, i, 8, 0).is_multiple_of(5))
            .then(|| format!("+1{}", 2_000_000_000 + i))
    }

    /// Index of the profile with this phone number.
    pub(crate) fn profile_by_phone(&self, phone: &str) -> Option<u64> {
        let n: u64 = phone.strip_prefix("+1")?.parse().ok()?;
        let i = n.checked_sub(2_000_000_000)?;
        (i < self.spec.profiles && self.profile_phone(i).as_deref() == Some(phone)).then_some(i)
    }

    /// External id of profile `i` (`ext-<i>`), for 70% of profiles.
    pub(crate) fn profile_external_id(&self, i: u64) -> Option<String> {
        (h3(self.profile_key, i, 9, 0) % 10 < 7).then(|| format!("ext-{i}"))
    }

    /// Index of the profile with this external id.
    pub(crate) fn profile_by_external_id(&self, ext: &str) -> Option<u64> {
        let i: u64 = ext.strip_prefix("ext-")?.parse().ok()?;
        (i < self.spec.profiles && self.profile_external_id(i).as_deref() == Some(ext)).then_some(i)
    }

    /// Attributes of profile `i` with last update `updated` (epoch seconds).
    pub(crate) fn profile_attributes(&self, i: u64, updated: i64) -> Map<String, Value> {
        let (first, last, r) = self.names(i);
        let created = self.profile_created(i);
        let place = PLACES[((r >> 24) % PLACES.len() as u64) as usize];
        let r2 = h3(self.profile_key, i, 10, 0);
        let last_event = updated.max(created) - (r2 % 86_400) as i64;
        let mut a = Map::new();
        a.insert("email".into(), json!(self.profile_email(i)));
        a.insert("phone_number".into(), json!(self.profile_phone(i)));
        a.insert("external_id".into(), json!(self.profile_external_id(i)));
        a.insert("anonymous_id".into(), Value::Null);
        a.insert("first_name".into(), json!(first));
        a.insert("last_name".into(), json!(last));
        a.insert(
            "organization".into(),
            if r2.is_multiple_of(3) {
                Value::Null
            } else {
                json!(ORGS[((r2 >> 8) % ORGS.len() as u64) as usize])
            },
        );
        a.insert(
            "locale".into(),
            json!(LOCALES[((r2 >> 12) % LOCALES.len() as u64) as usize]),
        );
        a.insert(
            "title".into(),
            json!(TITLES[((r2 >> 16) % TITLES.len() as u64) as usize]),
        );
        a.insert(
            "image".into(),
            json!(format!("https://images.example.com/avatars/{i}.jpg")),
        );
        a.insert("created".into(), json!(fmt_time(created)));
        a.insert("updated".into(), json!(fmt_time(updated)));
        a.insert("last_event_date".into(), json!(fmt_time(last_event)));
        let (city, region, country, zip, tz, lat, lon) = place;
        a.insert(
            "location".into(),
            json!({
                "address1": format!("{} Main St", 1 + (r2 >> 20) % 999),
                "address2": if (r2 >> 30).is_multiple_of(4) { json!("Apt 2") } else { Value::Null },
                "city": city,
                "country": country,
                "latitude": format!("{:.4}", lat),
                "longitude": format!("{:.4}", lon),
                "region": region,
                "zip": format!("{zip}{:02}", (r2 >> 34) % 100),
                "timezone": tz,
                "ip": format!("203.0.113.{}", (r2 >> 40) % 254 + 1),
            }),
        );
        a.insert(
            "properties".into(),
            json!({
                "loyalty_tier": (["bronze", "silver", "gold"][((r2 >> 44) % 3) as usize]),
                "lifetime_orders": (r2 >> 46) % 40,
                "vip": (r2 >> 52).is_multiple_of(7),
                "signup_source": (["checkout", "popup", "import"][((r2 >> 54) % 3) as usize]),
            }),
        );
        a
    }
}
