//! sluice-sandbox: emulated outside systems for tests, demos and benchmarks.
//!
//! Layout:
//! - [`sailthru`]: the generator of Sailthru data-exporter archives of any size,
//!   deterministic from a seed ([`sailthru::write_export`], [`sailthru::expected_counts`]).
//! - `server` (private): the HTTP routes, built by [`router`] and served by [`run`]:
//!   - `GET|HEAD /sailthru/exports/{seed}/{messages}/sailthru_export.{YYYYMMDD}.zip`: the
//!     archive for [`sailthru::ExportSpec`] `{seed, messages, date}`, generated once into
//!     [`SandboxConfig::cache_dir`] and then served as a file (`Range`, `HEAD`,
//!     `Content-Length`, `Last-Modified`).
//!   - `GET /sailthru/exports/{seed}/{messages}/manifest.{YYYYMMDD}.json`:
//!     `{"spec": {"seed", "messages", "date"}, "expected": {table: rows}}`.
//!   - `GET /livez`, `GET /readyz`: 200.
//!
//!   Bad parameters give 400 with `{"error": "...", "parameter": "seed"|"messages"|"date"}`.
//! - [`klaviyo`]: an emulation of Klaviyo's JSON:API (`/api/…`, admin routes under
//!   `/klaviyo/_admin/`) over a generated account, with rate limits and fault knobs; plus
//!   ground-truth functions ([`klaviyo::event_ids`], [`klaviyo::segment_member_ids`], …).
//!   [`router`] and [`run`] serve it with [`klaviyo::KlaviyoConfig::default`];
//!   [`router_with`] and [`run_with`] take a [`klaviyo::KlaviyoConfig`].
//! - [`commercetools`]: an emulation of the commercetools HTTP API (`POST /oauth/token`,
//!   `/{projectKey}/customers|orders|categories|products|product-projections|custom-objects`,
//!   admin routes under `/commercetools/_admin/`) over a generated project (and optionally
//!   the example project from `specs/commercetools/examples`), with OAuth2 client
//!   credentials, paging limits, query predicates, expansion and fault knobs; plus the
//!   ground truth ([`commercetools::Project`], [`commercetools::ids`]). [`router`],
//!   [`router_with`], [`run`] and [`run_with`] serve it with
//!   [`commercetools::CommercetoolsConfig::default`] (client `sluice-sandbox` /
//!   `sluice-sandbox-secret`, project `sluice-sandbox`); [`router_with_commercetools`] and
//!   [`run_with_commercetools`] take a [`commercetools::CommercetoolsConfig`].
//! - [`wdn`]: an emulation of the What Drops Now catalogue API (`/wdn/api/v1/…`, admin
//!   routes under `/wdn/_admin/`) over a generated catalogue or one given verbatim, with the
//!   real API's throttling above five concurrent requests, a peak-concurrency counter and
//!   fault knobs; plus the ground truth ([`wdn::Catalogue`], [`wdn::Catalogue::expected`]).
//!   Every router below serves it with [`wdn::WdnConfig::default`];
//!   [`router_with_all`] and [`run_with_all`] take a [`wdn::WdnConfig`].
//! - [`faults`]: the fault-injection middleware shared by the emulators (one
//!   runtime-updatable [`faults::FaultConfig`] per API, counters of what was injected).
//! - `main.rs`: the `sluice-sandbox` binary (`serve`, `sailthru-export`).

pub mod commercetools;
pub mod faults;
pub mod klaviyo;
pub mod sailthru;
mod server;
pub mod wdn;

use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// Builds every route: the Sailthru archives and probes of `config`, and the Klaviyo
/// emulation with [`klaviyo::KlaviyoConfig::default`].
pub fn router(config: SandboxConfig) -> axum::Router {
    match router_with(config.clone(), klaviyo::KlaviyoConfig::default()) {
        Ok(r) => r,
        Err(e) => {
            // The default spec is valid; this only guards against a future change.
            tracing::error!(error = %e, "klaviyo emulation disabled");
            server::router(config)
        }
    }
}

/// Builds every route, the Klaviyo emulation configured by `klaviyo` (and the
/// commercetools one with [`commercetools::CommercetoolsConfig::default`]).
pub fn router_with(
    config: SandboxConfig,
    klaviyo: klaviyo::KlaviyoConfig,
) -> Result<axum::Router, klaviyo::InvalidSpec> {
    let mut base = server::router(config).merge(klaviyo::router(klaviyo)?);
    base = match commercetools::router(commercetools::CommercetoolsConfig::default()) {
        Ok(ct) => base.merge(ct),
        Err(e) => {
            // The default config is valid; this only guards against a future change.
            tracing::error!(error = %e, "commercetools emulation disabled");
            base
        }
    };
    Ok(match wdn::router(wdn::WdnConfig::default()) {
        Ok(w) => base.merge(w),
        Err(e) => {
            // The default config is valid; this only guards against a future change.
            tracing::error!(error = %e, "wdn emulation disabled");
            base
        }
    })
}

/// Builds every route, the Klaviyo emulation configured by `klaviyo` and the commercetools
/// one by `commercetools` (WDN with its defaults).
pub fn router_with_commercetools(
    config: SandboxConfig,
    klaviyo: klaviyo::KlaviyoConfig,
    commercetools: commercetools::CommercetoolsConfig,
) -> anyhow::Result<axum::Router> {
    router_with_all(config, klaviyo, commercetools, wdn::WdnConfig::default())
}

/// Builds every route, each emulation configured by its own config.
pub fn router_with_all(
    config: SandboxConfig,
    klaviyo: klaviyo::KlaviyoConfig,
    commercetools: commercetools::CommercetoolsConfig,
    wdn: wdn::WdnConfig,
) -> anyhow::Result<axum::Router> {
    Ok(server::router(config)
        .merge(klaviyo::router(klaviyo).context("configuring the Klaviyo emulation")?)
        .merge(
            commercetools::router(commercetools)
                .context("configuring the commercetools emulation")?,
        )
        .merge(wdn::router(wdn).context("configuring the WDN emulation")?))
}

/// Sandbox settings.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Where generated archives (and their manifests) are cached, as
    /// `<cache_dir>/sailthru/<seed>/<messages>/sailthru_export.<YYYYMMDD>.zip`.
    /// Created when missing.
    pub cache_dir: PathBuf,
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled (then finishes the
/// requests in flight and returns).
pub async fn run(
    config: SandboxConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(
        config,
        klaviyo::KlaviyoConfig::default(),
        listener,
        shutdown,
    )
    .await
}

/// Like [`run`], with the Klaviyo emulation configured by `klaviyo`.
pub async fn run_with(
    config: SandboxConfig,
    klaviyo: klaviyo::KlaviyoConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_commercetools(
        config,
        klaviyo,
        commercetools::CommercetoolsConfig::default(),
        listener,
        shutdown,
    )
    .await
}

/// Like [`run_with`], with the commercetools emulation configured by `commercetools`.
pub async fn run_with_commercetools(
    config: SandboxConfig,
    klaviyo: klaviyo::KlaviyoConfig,
    commercetools: commercetools::CommercetoolsConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_all(
        config,
        klaviyo,
        commercetools,
        wdn::WdnConfig::default(),
        listener,
        shutdown,
    )
    .await
}

/// Like [`run`], each emulation configured by its own config.
pub async fn run_with_all(
    config: SandboxConfig,
    klaviyo: klaviyo::KlaviyoConfig,
    commercetools: commercetools::CommercetoolsConfig,
    wdn: wdn::WdnConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    tokio::fs::create_dir_all(&config.cache_dir)
        .await
        .with_context(|| format!("creating cache dir {}", config.cache_dir.display()))?;
    tracing::info!(%addr, cache_dir = %config.cache_dir.display(), "sandbox serving");
    let app = router_with_all(config, klaviyo, commercetools, wdn)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving HTTP")?;
    tracing::info!("sandbox stopped");
    Ok(())
}
