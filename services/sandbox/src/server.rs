//! HTTP routes: generated Sailthru archives (cached on disk, served as files) and probes.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{self, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tower_http::services::ServeFile;

use crate::SandboxConfig;
use crate::sailthru::{self, ExportSpec, InvalidParameter};

/// Builds the sandbox's routes (see the crate docs). Archives are generated on first request
/// into `config.cache_dir` (created when missing).
pub fn router(config: SandboxConfig) -> Router {
    let state = AppState(Arc::new(Inner {
        cache_dir: config.cache_dir,
        locks: Mutex::new(HashMap::new()),
    }));
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route(
            "/sailthru/exports/{seed}/{messages}/{file}",
            get(sailthru_export),
        )
        .with_state(state)
}

#[derive(Clone)]
struct AppState(Arc<Inner>);

struct Inner {
    cache_dir: PathBuf,
    /// One lock per cache file, so concurrent first requests generate it once.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

/// Errors of the routes, as JSON bodies.
enum ApiError {
    Invalid(InvalidParameter),
    NotFound(String),
    Internal(anyhow::Error),
}

impl From<InvalidParameter> for ApiError {
    fn from(e: InvalidParameter) -> Self {
        ApiError::Invalid(e)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Invalid(e) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string(), "parameter": e.parameter})),
            )
                .into_response(),
            ApiError::NotFound(msg) => {
                (StatusCode::NOT_FOUND, Json(json!({"error": msg}))).into_response()
            }
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "sandbox request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": format!("{e:#}")})),
                )
                    .into_response()
            }
        }
    }
}

/// Which file of an export was asked for.
enum ExportFile {
    Archive,
    Manifest,
}

/// Splits `sailthru_export.<YYYYMMDD>.zip` / `manifest.<YYYYMMDD>.json`.
fn parse_file(file: &str) -> Result<(ExportFile, &str), ApiError> {
    if let Some(stamp) = file
        .strip_prefix("sailthru_export.")
        .and_then(|f| f.strip_suffix(".zip"))
    {
        return Ok((ExportFile::Archive, stamp));
    }
    if let Some(stamp) = file
        .strip_prefix("manifest.")
        .and_then(|f| f.strip_suffix(".json"))
    {
        return Ok((ExportFile::Manifest, stamp));
    }
    Err(ApiError::NotFound(format!(
        "no file {file:?}: expected sailthru_export.<YYYYMMDD>.zip or manifest.<YYYYMMDD>.json"
    )))
}

fn parse_spec(seed: &str, messages: &str, stamp: &str) -> Result<ExportSpec, InvalidParameter> {
    let seed = seed.parse::<u64>().map_err(|_| InvalidParameter {
        parameter: "seed",
        message: format!("{seed:?} is not an unsigned 64-bit integer"),
    })?;
    let messages = messages.parse::<u64>().map_err(|_| InvalidParameter {
        parameter: "messages",
        message: format!("{messages:?} is not a non-negative integer"),
    })?;
    let spec = ExportSpec {
        seed,
        messages,
        date: sailthru::parse_date_stamp(stamp)?,
    };
    spec.validate()?;
    Ok(spec)
}

async fn sailthru_export(
    State(state): State<AppState>,
    extract::Path((seed, messages, file)): extract::Path<(String, String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let (kind, stamp) = parse_file(&file)?;
    let spec = parse_spec(&seed, &messages, stamp)?;
    match kind {
        ExportFile::Archive => {
            let path = state.ensure_archive(&spec).await?;
            let response = ServeFile::new(&path)
                .try_call(request)
                .await
                .with_context(|| format!("serving {}", path.display()))?;
            Ok(response.map(Body::new))
        }
        ExportFile::Manifest => Ok(Json(state.manifest(&spec).await?).into_response()),
    }
}

/// The manifest document of a spec.
fn manifest_json(spec: &ExportSpec, expected: &BTreeMap<String, u64>) -> Value {
    json!({"spec": spec, "expected": expected})
}

impl AppState {
    fn export_dir(&self, spec: &ExportSpec) -> PathBuf {
        self.0
            .cache_dir
            .join("sailthru")
            .join(spec.seed.to_string())
            .join(spec.messages.to_string())
    }

    fn manifest_path(&self, spec: &ExportSpec) -> PathBuf {
        self.export_dir(spec)
            .join(format!("manifest.{}.json", spec.date_stamp()))
    }

    fn lock_for(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .0
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(path.to_owned()).or_default().clone()
    }

    /// The cached archive of `spec`, generated first when missing.
    async fn ensure_archive(&self, spec: &ExportSpec) -> anyhow::Result<PathBuf> {
        let dir = self.export_dir(spec);
        let path = dir.join(spec.archive_name());
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let lock = self.lock_for(&path);
        let _guard = lock.lock().await;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        let (spec, archive, manifest) = (spec.clone(), path.clone(), self.manifest_path(spec));
        tokio::task::spawn_blocking(move || generate_archive(&spec, &archive, &manifest))
            .await
            .context("archive generation panicked")??;
        Ok(path)
    }

    /// The manifest of `spec`, from the cache or computed (and cached).
    async fn manifest(&self, spec: &ExportSpec) -> anyhow::Result<Value> {
        let path = self.manifest_path(spec);
        if let Some(cached) = read_manifest(&path).await {
            return Ok(cached);
        }
        let lock = self.lock_for(&path);
        let _guard = lock.lock().await;
        if let Some(cached) = read_manifest(&path).await {
            return Ok(cached);
        }
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
            let manifest = manifest_json(&spec, &sailthru::expected_counts(&spec));
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            write_atomically(&path, |w| {
                serde_json::to_writer_pretty(&mut *w, &manifest)?;
                Ok(())
            })?;
            Ok(manifest)
        })
        .await
        .context("manifest computation panicked")?
    }
}

async fn read_manifest(path: &Path) -> Option<Value> {
    let bytes = tokio::fs::read(path).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Generates the archive of `spec` into `archive` (and its manifest into `manifest`),
/// through temp files renamed into place, so readers never see a partial file.
fn generate_archive(spec: &ExportSpec, archive: &Path, manifest: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut counts = BTreeMap::new();
    write_atomically(archive, |w| {
        counts = sailthru::write_export_with_counts(spec, w)?;
        Ok(())
    })?;
    let bytes = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
    tracing::info!(
        seed = spec.seed,
        messages = spec.messages,
        date = %spec.date,
        bytes,
        seconds = started.elapsed().as_secs_f64(),
        "generated sailthru export"
    );
    write_atomically(manifest, |w| {
        serde_json::to_writer_pretty(&mut *w, &manifest_json(spec, &counts))?;
        Ok(())
    })
}

/// Writes `path` through a unique temp file in the same directory, then renames it into place.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> anyhow::Result<()> {
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.flush()
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
