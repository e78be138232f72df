//! Staging large Redshift loads as S3 objects for `COPY`.
//!
//! One gzip-compressed object of JSON lines per part, laid out by table and date as the
//! original Sailthru ingestion laid out its files:
//! `<prefix>/<schema>.<table>/<YYYY-MM-DD>/<job>/<task>-<part>.json.gz` (the date is the
//! load's, UTC), and one manifest per write listing exactly its objects
//! (`…/<task>-<part>.manifest`, named after the write's first part), so a `COPY` never
//! picks up another write's objects under the same prefix.
//!
//! Why JSON lines rather than CSV or Parquet: `SUPER` columns take a record's nested JSON
//! as it is (CSV would need it quoted and escaped, and every embedded newline handled),
//! `FORMAT AS JSON 'auto'` matches keys to column names so a column added later cannot
//! shift values, and writing a line costs about what the message's own JSON did (Parquet
//! would need a columnar encoder for a one-shot file). Gzip keeps the upload near the
//! size of the loader's messages.

use std::io::{Read, Write};
use std::sync::Arc;

use chrono::NaiveDate;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use secrecy::ExposeSecret;
use sluice_store::StoreError;
use uuid::Uuid;

use super::RedshiftConfig;

/// Where and how staged objects are written.
pub struct S3Staging {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    destination: String,
}

impl std::fmt::Debug for S3Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Staging")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Staging {
    /// The staging area of destination `destination`, or `None` when `s3_bucket` is not
    /// set (every load then goes through multi-row `INSERT`s). Credentials: the
    /// `s3_access_key_id`/`s3_secret_access_key` settings, else the usual AWS environment.
    ///
    /// # Errors
    /// A store that cannot be configured (permanent), naming the destination.
    pub fn new(destination: &str, config: &RedshiftConfig) -> Result<Option<Self>, StoreError> {
        let Some(bucket) = &config.s3_bucket else {
            return Ok(None);
        };
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(region) = &config.s3_region {
            builder = builder.with_region(region);
        }
        if let Some(id) = &config.s3_access_key_id {
            builder = builder.with_access_key_id(id.expose_secret());
        }
        if let Some(secret) = &config.s3_secret_access_key {
            builder = builder.with_secret_access_key(secret.expose_secret());
        }
        if let Some(endpoint) = &config.s3_endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(|e| StoreError::Destination {
            message: format!("destination {destination}: S3 staging in bucket {bucket}: {e}"),
            transient: false,
        })?;
        Ok(Some(Self {
            store: Arc::new(store),
            bucket: bucket.clone(),
            prefix: config.s3_prefix.trim_matches('/').to_string(),
            destination: destination.to_string(),
        }))
    }

    /// The object of one part: `<prefix>/<schema>.<table>/<date>/<job>/<task>-<part>.json.gz`.
    pub fn part_path(
        &self,
        table: &str,
        date: NaiveDate,
        job: Uuid,
        task: &str,
        part: u32,
    ) -> Path {
        Path::from(format!(
            "{}/{table}/{}/{job}/{task}-{part}.json.gz",
            self.prefix,
            date.format("%Y-%m-%d")
        ))
    }

    /// The manifest beside a part's object (same name, `.manifest`).
    pub fn manifest_path(part: &Path) -> Path {
        let text = part.as_ref();
        Path::from(format!(
            "{}.manifest",
            text.strip_suffix(".json.gz").unwrap_or(text)
        ))
    }

    /// `s3://<bucket>/<path>`.
    pub fn url(&self, path: &Path) -> String {
        format!("s3://{}/{path}", self.bucket)
    }

    fn error(&self, what: &str, path: &Path, e: object_store::Error) -> StoreError {
        // Credentials and refusals will not pass on retry; the rest (network, 5xx) may.
        let transient = !matches!(
            e,
            object_store::Error::NotFound { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::PermissionDenied { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::InvalidPath { .. }
        );
        StoreError::Destination {
            message: format!(
                "destination {}: {what} {}: {e}",
                self.destination,
                self.url(path)
            ),
            transient,
        }
    }

    /// Writes `lines` (JSON lines) gzip-compressed at `path`.
    ///
    /// # Errors
    /// Object-store errors, naming the object.
    pub async fn put_part(&self, path: &Path, lines: &[u8]) -> Result<(), StoreError> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(lines)
            .and_then(|()| gz.flush())
            .map_err(|e| self.io_error(path, e))?;
        let body = gz.finish().map_err(|e| self.io_error(path, e))?;
        self.store
            .put(path, PutPayload::from(body))
            .await
            .map_err(|e| self.error("writing staged object", path, e))?;
        Ok(())
    }

    fn io_error(&self, path: &Path, e: std::io::Error) -> StoreError {
        StoreError::Destination {
            message: format!(
                "destination {}: compressing {}: {e}",
                self.destination,
                self.url(path)
            ),
            transient: false,
        }
    }

    /// Writes the manifest at `path` listing `objects` (all mandatory), returning its URL.
    ///
    /// # Errors
    /// Object-store errors, naming the manifest.
    pub async fn put_manifest(&self, path: &Path, objects: &[Path]) -> Result<String, StoreError> {
        let entries: Vec<serde_json::Value> = objects
            .iter()
            .map(|o| serde_json::json!({ "url": self.url(o), "mandatory": true }))
            .collect();
        let body =
            serde_json::to_vec(&serde_json::json!({ "entries": entries })).unwrap_or_default();
        self.store
            .put(path, PutPayload::from(body))
            .await
            .map_err(|e| self.error("writing manifest", path, e))?;
        Ok(self.url(path))
    }

    /// The JSON lines of a staged object (decompressed).
    ///
    /// # Errors
    /// Object-store errors or a corrupt object, naming it.
    pub async fn read_part(&self, path: &Path) -> Result<Vec<u8>, StoreError> {
        let bytes = self
            .store
            .get(path)
            .await
            .map_err(|e| self.error("reading staged object", path, e))?
            .bytes()
            .await
            .map_err(|e| self.error("reading staged object", path, e))?;
        let mut lines = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut lines)
            .map_err(|e| self.io_error(path, e))?;
        Ok(lines)
    }

    /// Removes staged objects after their load committed. A failure is logged, not
    /// returned: the rows are loaded, and a leftover object is only storage (an S3
    /// lifecycle rule on the prefix collects what a crash leaves).
    pub async fn remove(&self, paths: &[Path]) {
        for path in paths {
            if let Err(e) = self.store.delete(path).await {
                tracing::warn!(object = %self.url(path), error = %e, "could not remove a staged object");
            }
        }
    }
}
