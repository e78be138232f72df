//! The `[connectors.klaviyo]` settings section (`SLUICE__CONNECTORS__KLAVIYO__…`; see
//! `docs/klaviyo.md`) and its defaults.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

/// The section's defaults (TOML), layered under what the operator sets.
pub const DEFAULTS: &str = r#"
revision = "2026-07-15"
lookback_seconds = 3600
lag_seconds = 300
dense_pages = 10
split_into = 8
request_timeout_seconds = 60
max_throttle_waits = 3
max_retry_after_seconds = 60
steady_utilisation = 0.95
start_of_time = "1970-01-01T00:00:00Z"

[page_sizes]
events = 1000
profiles = 100
lists = 10
members = 100

[rate_limits.xs]
burst_per_second = 1
steady_per_minute = 15

[rate_limits.s]
burst_per_second = 3
steady_per_minute = 60

[rate_limits.m]
burst_per_second = 10
steady_per_minute = 150

[rate_limits.l]
burst_per_second = 75
steady_per_minute = 750

[rate_limits.xl]
burst_per_second = 350
steady_per_minute = 3500
"#;

/// Klaviyo connector settings (`SLUICE__CONNECTORS__KLAVIYO__…`; see `docs/klaviyo.md`).
#[derive(Debug, Deserialize, Clone)]
pub struct KlaviyoSettings {
    /// The `revision` header sent with every request (`YYYY-MM-DD`), default `2026-07-15`.
    pub revision: String,
    /// Seconds subtracted from a stored bookmark when an incremental job starts, so late
    /// records just before the bookmark are read again (upserts make that harmless).
    /// Default 3600.
    pub lookback_seconds: u64,
    /// Seconds behind now that jobs end by default (`until` = now − lag) and that cursors are
    /// clamped to, so future-dated events never push a bookmark ahead. Default 300.
    pub lag_seconds: u64,
    /// Pages a time-window task fetches before splitting the rest of its window into child
    /// tasks (and a collection task before handing the next page to a child). Default 10.
    pub dense_pages: u32,
    /// Into how many equal windows a job's range (per metric) and a dense task's remaining
    /// window are split. Default 8.
    pub split_into: u32,
    /// Whole-request timeout in seconds (connect, send, read the body). Default 60.
    pub request_timeout_seconds: u64,
    /// How many 429 responses one request waits out in process (`Retry-After`) before the
    /// task fails with a transient error. Default 3.
    pub max_throttle_waits: u32,
    /// Longest `Retry-After` (seconds) waited in process; a longer one fails the task with a
    /// transient error at once. Default 60.
    pub max_retry_after_seconds: u64,
    /// Fraction of a tier's steady (per-minute) limit the fetchers aim at together, in
    /// (0, 1]. Default 0.95.
    pub steady_utilisation: f64,
    /// Start of "all time" (RFC 3339) for jobs without `since`. Default 1970-01-01T00:00:00Z.
    pub start_of_time: String,
    /// Default page sizes per endpoint (`page[size]`); jobs may lower them with `page_size`.
    pub page_sizes: KlaviyoPageSizes,
    /// Rate limits per Klaviyo tier (`xs`, `s`, `m`, `l`, `xl`), per account.
    pub rate_limits: BTreeMap<String, KlaviyoTierLimit>,
    /// Named accounts (`default` unless a job names another).
    #[serde(default)]
    pub accounts: BTreeMap<String, KlaviyoAccount>,
}

/// Default `page[size]` per endpoint (the spec's maxima are the defaults).
#[derive(Debug, Deserialize, Clone)]
pub struct KlaviyoPageSizes {
    /// `GET /api/events`, 1–1000, default 1000.
    pub events: u32,
    /// `GET /api/profiles`, 1–100, default 100.
    pub profiles: u32,
    /// `GET /api/lists` and `/api/segments`, 1–10, default 10.
    pub lists: u32,
    /// `GET /api/{lists,segments}/{id}/relationships/profiles`, 1–100, default 100.
    pub members: u32,
}

/// One Klaviyo rate-limit tier: both windows hold at once, per account.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
pub struct KlaviyoTierLimit {
    /// Requests allowed in the 1-second burst window.
    pub burst_per_second: f64,
    /// Requests allowed in the 1-minute steady window.
    pub steady_per_minute: f64,
}

/// One Klaviyo account's credentials.
#[derive(Debug, Deserialize, Clone)]
pub struct KlaviyoAccount {
    /// Private API key (`SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__<ACCOUNT>__API_KEY`); never
    /// logged. A job of an account without one fails at plan time.
    pub api_key: Option<SecretString>,
    /// API origin, default `https://a.klaviyo.com` (the sandbox's address in tests).
    #[serde(default = "default_klaviyo_base_url")]
    pub base_url: String,
}

/// The default Klaviyo API origin.
pub const DEFAULT_KLAVIYO_BASE_URL: &str = "https://a.klaviyo.com";

fn default_klaviyo_base_url() -> String {
    DEFAULT_KLAVIYO_BASE_URL.to_string()
}
