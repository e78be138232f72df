//! The `[connectors.wdn]` settings section (`SLUICE__CONNECTORS__WDN__…`) and its defaults.

use serde::Deserialize;

/// The section's defaults (TOML), layered under what the operator sets.
pub const DEFAULTS: &str = r#"
base_url = "https://api.whatdropsnow.com/api/v1"
max_concurrency = 5
fresh_seconds = 86400
brands = ["Converse", "Vans", "Nike", "Adidas", "Jordan"]
page_size = 500
request_timeout_seconds = 40
backoff_initial_ms = 1000
backoff_max_ms = 60000
max_attempts = 10
"#;

/// WDN connector settings. The API needs no credentials: a job's `account` only keeps
/// its locks and freshness apart.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WdnSettings {
    /// The API's base URL, ending in `/api/v1` (the sandbox: `http://127.0.0.1:9200/wdn/api/v1`).
    pub base_url: String,
    /// Requests in flight at once across every fetcher replica (the API throttles above
    /// about 5). Default 5.
    pub max_concurrency: u32,
    /// Seconds a fetched resource (a products page, a product's offers, a retailer) stays
    /// fresh: a job without `--full` does not fetch it again within this age. Default
    /// 86,400 (one day, as the original ETL).
    pub fresh_seconds: u64,
    /// Brands synced when a job names none. Default Converse, Vans, Nike, Adidas, Jordan.
    pub brands: Vec<String>,
    /// `page_size` of list requests (brand search, products, offers), 1–2000. Default 500.
    pub page_size: u32,
    /// Whole-request timeout in seconds (the original's 40).
    pub request_timeout_seconds: u64,
    /// First wait after a 429, 5xx or transport error, milliseconds; doubled per retry.
    /// Default 1000.
    pub backoff_initial_ms: u64,
    /// Longest wait between retries, milliseconds. Default 60,000.
    pub backoff_max_ms: u64,
    /// Tries of one request before the task goes to the retry tiers. Default 10 (the
    /// original's).
    pub max_attempts: u32,
}
