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
//! - `main.rs`: the `sluice-sandbox` binary (`serve`, `sailthru-export`).

pub mod sailthru;
mod server;

use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

pub use server::router;

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
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    tokio::fs::create_dir_all(&config.cache_dir)
        .await
        .with_context(|| format!("creating cache dir {}", config.cache_dir.display()))?;
    tracing::info!(%addr, cache_dir = %config.cache_dir.display(), "sandbox serving");
    axum::serve(listener, router(config))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving HTTP")?;
    tracing::info!("sandbox stopped");
    Ok(())
}
