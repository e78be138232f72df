//! The `[connectors.sailthru]` settings section (`SLUICE__CONNECTORS__SAILTHRU__…`) and its
//! defaults.

use std::collections::BTreeMap;

pub use crate::location::S3Account;
use serde::Deserialize;

/// The section's defaults (TOML), layered under what the operator sets.
pub const DEFAULTS: &str = r#"
page_size = 5000
email_policy = "hash"
"#;

/// What to do with personal e-mail addresses (Sailthru `profile.email`).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailPolicy {
    /// Store the address as exported.
    Keep,
    /// Store the lowercase hex SHA-256 of the trimmed, lower-cased address.
    #[default]
    Hash,
    /// Store NULL.
    Drop,
}

/// Sailthru connector settings.
#[derive(Debug, Deserialize, Clone)]
pub struct SailthruSettings {
    /// Maximum records per page task (N), default 5000.
    pub page_size: u64,
    /// E-mail policy, default `hash`.
    pub email_policy: EmailPolicy,
    /// Named accounts; only needed for `s3://` exports (credentials and region).
    #[serde(default)]
    pub accounts: BTreeMap<String, S3Account>,
}
