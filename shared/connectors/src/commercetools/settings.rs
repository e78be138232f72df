//! The `[connectors.commercetools]` settings section (`SLUICE__CONNECTORS__COMMERCETOOLS__…`)
//! and its defaults.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

/// The section's defaults (TOML), layered under what the operator sets.
pub const DEFAULTS: &str = r#"
page_size = 500
split_into = 8
dense_pages = 20
lookback_seconds = 300
lag_seconds = 60
locale = "en"
request_timeout_seconds = 60
start_of_time = "1970-01-01T00:00:00Z"
"#;

/// commercetools connector settings.
#[derive(Debug, Deserialize, Clone)]
pub struct CommercetoolsSettings {
    /// `limit` of every query, 1–500 (the API's maximum and the default).
    pub page_size: u32,
    /// Into how many id ranges a job is split at plan time, and a dense range's rest at
    /// fetch time. Default 8.
    pub split_into: u32,
    /// Pages a range task reads before splitting the rest of its range into child tasks.
    /// Default 20 (10,000 resources).
    pub dense_pages: u32,
    /// Seconds subtracted from the bookmark when an incremental job starts. Default 300.
    pub lookback_seconds: u64,
    /// Seconds behind now that incremental jobs end (`lastModifiedAt < now − lag`), so
    /// resources still being written are read by the next job. Default 60.
    pub lag_seconds: u64,
    /// The locale of the typed `name`/`slug` columns (the first locale a resource has when
    /// it lacks this one). Default `en`.
    pub locale: String,
    /// Whole-request timeout in seconds. Default 60.
    pub request_timeout_seconds: u64,
    /// Start of "all time" for jobs without `since`. Default 1970-01-01T00:00:00Z.
    pub start_of_time: String,
    /// Named accounts (`default` unless a job names another).
    #[serde(default)]
    pub accounts: BTreeMap<String, CommercetoolsAccount>,
}

/// One commercetools API client (project and credentials).
#[derive(Debug, Deserialize, Clone)]
pub struct CommercetoolsAccount {
    /// API origin, e.g. `https://api.europe-west1.gcp.commercetools.com`.
    pub api_url: String,
    /// Auth origin, e.g. `https://auth.europe-west1.gcp.commercetools.com`.
    pub auth_url: String,
    /// The project key.
    pub project_key: String,
    /// The API client's id.
    pub client_id: String,
    /// The API client's secret (never logged).
    pub client_secret: SecretString,
    /// Scopes to ask for (space-separated, e.g. `view_orders:my-project
    /// view_customers:my-project`); absent: the client's own scopes.
    pub scopes: Option<String>,
}
