//! Destination kind `klaviyo`: records already mapped to Klaviyo objects (the tables of
//! `docs/klaviyo-sync.md`), written with Klaviyo's bulk endpoints.
//!
//! Settings (`SLUICE__DESTINATIONS__<NAME>__…`, see [`KlaviyoConfig`]): `kind = "klaviyo"`,
//! `account` (the Klaviyo connector account whose `api_key`, `base_url` and the section's
//! `revision` it uses: `SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__<ACCOUNT>__…`), the mapping
//! options the planner hands to the fetchers, and the polling of bulk jobs.
//!
//! What a write does, per table ([`sink`]):
//! - `klaviyo.profile`: profile bulk import jobs (an upsert: a re-run has no errors) of at
//!   most 10,000 profiles and 5 MB, a profile over 100 KB refused before sending; each job
//!   polled to `complete`/`cancelled`, its `import-errors` turned into rejects; a profile
//!   refused for its phone number is sent once more without it (the plugin's fallback);
//! - `klaviyo.event`: event bulk create jobs of at most 1,000 events and 5 MB, grouped by
//!   profile (202, nothing to poll), filled with the events of every write in flight when
//!   the endpoint's rate limit gives a place ([`event_jobs`]); `unique_id` makes a re-sent
//!   event a no-op;
//! - `klaviyo.catalog-category|catalog-item|catalog-variant`: the ids looked up
//!   (`any(ids,[…])`), then create, update and delete bulk jobs of at most 100, at most 500
//!   in progress for the account (shared among the loaders), each polled to a final state
//!   and its `errors[]` recorded; a create that failed because the object exists by then
//!   (another write got there first) is sent again as an update; with `replace_scope =
//!   ["item_id"]`, the variants of the part's items that it does not carry are deleted.
//!
//! A request refused as a whole (400/409/413/422) names the objects at fault by
//! `source.pointer`; those are rejected and the rest sent again (a refusal naming none
//! is split in halves until it does), so one bad object never holds back a part.
//!
//! Exactly once in effect (`sluice_store::ledger::apply_batches`): every write here can be
//! repeated after a crash before the ledger settles — profile import upserts, events carry
//! `unique_id`, catalog writes look the ids up first (and an update of the same attributes
//! is harmless).

mod event_jobs;
mod service;
mod sink;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use serde::Deserialize;
use sluice_connectors::klaviyo::limiter::Limiters;
use sluice_connectors::klaviyo::settings::{self as connector, KlaviyoSettings};
use sluice_contracts::Settings;
use sluice_store::StoreError;
use sluice_store::ledger::Write;
use tokio::sync::Semaphore;

use self::event_jobs::EventJobs;
pub use self::service::{ApiError, Call, Job, Service, ServiceConfig};
pub use self::sink::{
    CATEGORY_TABLE, EVENT_TABLE, ITEM_TABLE, MAX_CATALOG_PER_JOB, MAX_EVENTS_PER_JOB,
    MAX_JOB_BYTES, MAX_PROFILE_BYTES, MAX_PROFILES_PER_JOB, PROFILE_TABLE, TABLES, VARIANT_TABLE,
};
use crate::{Destination, TableCount, config_error};

/// Catalog bulk jobs an account may have in progress at once (Klaviyo's limit).
pub const MAX_CATALOG_JOBS_IN_PROGRESS: u32 = 500;

/// Settings of a `klaviyo` destination (`docs/klaviyo-sync.md`, "The destination's
/// settings").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlaviyoConfig {
    /// The Klaviyo connector account whose key and base URL are used, default `default`.
    #[serde(default = "default_account")]
    pub account: String,
    /// Mapping option for the fetchers: the locale of localized strings (`en-US`).
    pub preferred_locale: Option<String>,
    /// Mapping option: the currency of prices (`EUR`).
    pub preferred_currency: Option<String>,
    /// Mapping option: product URLs, `{{productSlug}}` replaced by the localized slug.
    pub product_url_template: Option<String>,
    /// The longest wait between two polls of a bulk job, in milliseconds (the first after
    /// an eighth of it, each next wait doubling); default 1000.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// A bulk job not final after this many seconds fails the part (transient: it is
    /// written again); default 900.
    #[serde(default = "default_poll_timeout_seconds")]
    pub poll_timeout_seconds: u64,
    /// Fraction (0, 1] of each write tier's steady (per-minute) limit the loaders aim at
    /// together; default 0.95.
    #[serde(default = "default_steady_utilisation")]
    pub steady_utilisation: f64,
    /// Refuse a commercetools sync into this destination while the commercetools–Klaviyo
    /// plugin's lock object for it exists (custom object
    /// `klaviyo-ct-plugin-lock/<kind>FullSync`), so the plugin and sluice never push the same
    /// thing at once during a migration; default true.
    #[serde(default = "default_true")]
    pub honour_legacy_lock: bool,
}

fn default_true() -> bool {
    true
}

/// The commercetools streams a Klaviyo destination takes (`docs/klaviyo-sync.md`).
const COMMERCETOOLS_STREAMS: [&str; 4] = ["customers", "orders", "categories", "products"];

/// The Klaviyo streams whose delete-all jobs a Klaviyo destination takes.
const DELETE_ALL_STREAMS: [&str; 2] = ["catalog_categories", "catalog_items"];

fn default_account() -> String {
    "default".into()
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_poll_timeout_seconds() -> u64 {
    900
}
fn default_steady_utilisation() -> f64 {
    0.95
}

impl KlaviyoConfig {
    /// What a job into this destination must carry ([`crate::JobTerms`]): commercetools
    /// streams get the mapping options as `params.klaviyo` (so the fetchers emit Klaviyo
    /// objects), and products need categories pushed first (items link to their
    /// categories); the Klaviyo catalogue streams take delete-all jobs as they are.
    ///
    /// # Errors
    /// Any other connector or stream, naming what this destination takes.
    pub fn job_terms(&self, connector: &str, stream: &str) -> Result<crate::JobTerms, String> {
        match connector {
            "commercetools" if COMMERCETOOLS_STREAMS.contains(&stream) => {
                let mut terms = crate::JobTerms::default();
                terms.params.insert(
                    "klaviyo".into(),
                    serde_json::json!({
                        "preferred_locale": self.preferred_locale,
                        "preferred_currency": self.preferred_currency,
                        "product_url_template": self.product_url_template,
                        "legacy_lock": self.honour_legacy_lock,
                    }),
                );
                if stream == "products" {
                    terms.requires.push(("commercetools", "categories"));
                }
                Ok(terms)
            }
            "klaviyo" if DELETE_ALL_STREAMS.contains(&stream) => Ok(crate::JobTerms::default()),
            _ => Err(format!(
                "a Klaviyo destination takes commercetools {} jobs and klaviyo {} (delete-all) \
                 jobs, not {connector}/{stream}",
                COMMERCETOOLS_STREAMS.join("|"),
                DELETE_ALL_STREAMS.join("|"),
            )),
        }
    }

    /// Builds the destination called `name`: reads the Klaviyo connector's section for the
    /// account, revision, rate limits and request timeouts. `replicas` is the live loader
    /// count that divides the account's budget. Nothing is sent yet.
    ///
    /// # Errors
    /// The connector section cannot be read, the account is not configured or has no
    /// API key, its base URL is not http(s), or a setting is out of range — each naming
    /// the variable to set.
    pub fn build(
        self,
        name: &str,
        settings: &Settings,
        replicas: Arc<AtomicU32>,
    ) -> Result<Klaviyo, StoreError> {
        let env = format!("SLUICE__DESTINATIONS__{}", name.to_uppercase());
        let section: KlaviyoSettings = sluice_connectors::framework::settings_section(
            settings,
            "klaviyo",
            connector::DEFAULTS,
        )
        .map_err(|e| config_error(format!("destination {name}: {e}")))?;
        let key_variable = sluice_connectors::klaviyo::api_key_variable(&self.account);
        let account = section.accounts.get(&self.account).ok_or_else(|| {
            config_error(format!(
                "destination {name}: Klaviyo account {:?} ({env}__ACCOUNT) is not configured: set {key_variable}",
                self.account
            ))
        })?;
        let api_key = account.api_key.clone().ok_or_else(|| {
            config_error(format!(
                "destination {name}: Klaviyo account {:?} has no API key: set {key_variable}",
                self.account
            ))
        })?;
        if !(self.steady_utilisation > 0.0 && self.steady_utilisation <= 1.0) {
            return Err(config_error(format!(
                "destination {name}: {env}__STEADY_UTILISATION must be in (0, 1], not {}",
                self.steady_utilisation
            )));
        }
        if self.poll_interval_ms == 0 || self.poll_timeout_seconds == 0 {
            return Err(config_error(format!(
                "destination {name}: {env}__POLL_INTERVAL_MS and {env}__POLL_TIMEOUT_SECONDS must be above 0"
            )));
        }
        let limiters = Arc::new(Limiters::new(
            &section.rate_limits,
            self.steady_utilisation,
            replicas.clone(),
        ));
        let service = Service::new(
            ServiceConfig {
                destination: name.to_string(),
                account: self.account.clone(),
                base_url: account.base_url.clone(),
                api_key,
                revision: section.revision.clone(),
                timeout: Duration::from_secs(section.request_timeout_seconds.max(1)),
                max_throttle_waits: section.max_throttle_waits,
                max_retry_after: Duration::from_secs(section.max_retry_after_seconds),
            },
            limiters,
        )?;
        let service = Arc::new(service);
        Ok(Klaviyo {
            name: name.to_string(),
            event_jobs: Arc::new(EventJobs::new(service.clone())),
            service,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            poll_timeout: Duration::from_secs(self.poll_timeout_seconds),
            catalog_jobs: Arc::new(Semaphore::new(MAX_CATALOG_JOBS_IN_PROGRESS as usize)),
            replicas,
            config: self,
        })
    }
}

/// A built `klaviyo` destination.
pub struct Klaviyo {
    name: String,
    config: KlaviyoConfig,
    service: Arc<Service>,
    /// Event bulk jobs shared by the event writes in flight.
    event_jobs: Arc<EventJobs>,
    poll_interval: Duration,
    poll_timeout: Duration,
    /// Catalog jobs in progress: each takes as many permits as there are loaders, so the
    /// loaders together stay within [`MAX_CATALOG_JOBS_IN_PROGRESS`].
    catalog_jobs: Arc<Semaphore>,
    replicas: Arc<AtomicU32>,
}

impl Klaviyo {
    /// The settings it was built from.
    pub fn config(&self) -> &KlaviyoConfig {
        &self.config
    }
}

#[async_trait::async_trait]
impl Destination for Klaviyo {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "klaviyo"
    }

    fn write(&self) -> Write<'_> {
        Write::External(self)
    }

    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.service.check().await?;
        Ok(vec![format!(
            "destination {}: Klaviyo account {:?} accepts the key; nothing to create (Klaviyo creates metrics and catalog objects on write)",
            self.name, self.config.account
        )])
    }

    async fn table_counts(&self, _schema: &str) -> Result<Vec<TableCount>, StoreError> {
        // Klaviyo has no tables to count; `jobs show` has what each write changed.
        Ok(Vec::new())
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.service.check().await
    }
}
