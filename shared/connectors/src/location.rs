//! Opening export locations through `object_store`.
//!
//! A location is what an operator passes as a job parameter (`"export": "<location>"`):
//! - a local path (`/data/export.zip`, `exports/x.zip`, resolved against the working
//!   directory) or a `file://` URL → [`LocalFileSystem`];
//! - `http://…` / `https://…` → [`HttpBuilder`] with the URL's origin, the object path being
//!   the rest of the URL (query strings, as in presigned URLs, are not supported);
//! - `s3://bucket/key` → [`AmazonS3Builder::from_env`], overridden by the job account's
//!   [`S3Account`] (region, access keys, endpoint for S3-compatible stores).
//!
//! Errors name the location with passwords and query strings redacted
//! ([`sluice_contracts::redact::redact_url`]).
//!
//! `object_store`'s own request retries are off ([`no_retries`]): the services retry a
//! read (the planner a few times, the fetcher through its retry tiers), and one retry
//! policy per layer keeps an unreachable location from being tried tens of times with
//! messages of retries inside retries.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, RetryConfig};
use secrecy::ExposeSecret;
use secrecy::SecretString;
use sluice_contracts::redact::redact_url;
use url::Url;

use crate::ConnectorError;

/// Credentials for reading `s3://` export locations.
#[derive(Debug, serde::Deserialize, Clone, Default)]
pub struct S3Account {
    /// AWS region, for example `us-east-1`.
    pub region: Option<String>,
    /// Access key id; when absent the usual AWS environment variables are used.
    pub access_key_id: Option<SecretString>,
    /// Secret access key.
    pub secret_access_key: Option<SecretString>,
    /// S3-compatible endpoint (MinIO, LocalStack), `http(s)://host:port`.
    pub endpoint: Option<String>,
}

/// The kinds of location, as parsed from the operator's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationKind {
    /// A file on this machine (absolute path).
    Local(PathBuf),
    /// `http(s)://`: the origin (`https://host:port`) and the percent-decoded path.
    Http {
        /// `scheme://host[:port]`.
        origin: String,
        /// The path after the origin, without the leading `/`.
        path: String,
    },
    /// `s3://bucket/key`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },
}

/// Parses a location without touching the network or the disk.
///
/// # Errors
/// [`ConnectorError::InvalidParams`] for an empty location, an unsupported scheme, an
/// unparseable URL, an `s3://` URL without bucket or key, an http URL with a query string.
pub fn parse_location(location: &str) -> Result<LocationKind, ConnectorError> {
    let shown = redact_url(location);
    let invalid =
        |why: &str| ConnectorError::InvalidParams(format!("export location '{shown}': {why}"));
    let trimmed = location.trim();
    if trimmed.is_empty() {
        return Err(ConnectorError::InvalidParams(
            "export location is empty".into(),
        ));
    }
    let Some((scheme, _)) = trimmed.split_once("://") else {
        let path = std::path::absolute(trimmed)
            .map_err(|e| invalid(&format!("not a usable path: {e}")))?;
        return Ok(LocationKind::Local(normalise(path)));
    };
    let url = Url::parse(trimmed).map_err(|e| invalid(&format!("not a valid URL: {e}")))?;
    match scheme.to_ascii_lowercase().as_str() {
        "file" => url
            .to_file_path()
            .map(|p| LocationKind::Local(normalise(p)))
            .map_err(|()| invalid("not a local file URL")),
        "http" | "https" => {
            if url.query().is_some() {
                return Err(invalid(
                    "query strings (presigned URLs) are not supported; use s3:// with account credentials",
                ));
            }
            let host = url.host_str().ok_or_else(|| invalid("URL has no host"))?;
            let origin = match url.port() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            };
            let path = url.path().trim_start_matches('/').to_string();
            if path.is_empty() {
                return Err(invalid("URL names no file"));
            }
            Ok(LocationKind::Http { origin, path })
        }
        "s3" => {
            let bucket = url.host_str().unwrap_or_default().to_string();
            let key = url.path().trim_start_matches('/').to_string();
            if bucket.is_empty() || key.is_empty() {
                return Err(invalid("expected s3://bucket/key"));
            }
            Ok(LocationKind::S3 { bucket, key })
        }
        other => Err(invalid(&format!(
            "unsupported scheme '{other}' (use a path, file://, http(s):// or s3://)"
        ))),
    }
}

/// Resolves `.` and `..` (object-store paths refuse them): through the file system when the
/// file exists (symbolic links included), lexically otherwise.
fn normalise(path: PathBuf) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(&path) {
        return real;
    }
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The local file a location names, if it is a path or a `file://` URL.
pub fn local_path(location: &str) -> Option<PathBuf> {
    match parse_location(location) {
        Ok(LocationKind::Local(path)) => Some(path),
        _ => None,
    }
}

/// Opens `location` as an object store and the object's path in it.
///
/// `account` supplies S3 credentials/region/endpoint for `s3://` locations (ignored for the
/// others); without it the usual `AWS_*` environment variables are used.
///
/// # Errors
/// [`ConnectorError::InvalidParams`] for locations that cannot be parsed or a store that
/// cannot be configured, naming the (redacted) location.
pub fn open_location(
    location: &str,
    account: Option<&S3Account>,
) -> Result<(Arc<dyn ObjectStore>, Path), ConnectorError> {
    let shown = redact_url(location);
    let invalid =
        |why: String| ConnectorError::InvalidParams(format!("export location '{shown}': {why}"));
    match parse_location(location)? {
        LocationKind::Local(file) => {
            let path = Path::from_absolute_path(&file).map_err(|e| invalid(e.to_string()))?;
            Ok((Arc::new(LocalFileSystem::new()), path))
        }
        LocationKind::Http { origin, path } => {
            let store = HttpBuilder::new()
                .with_url(origin)
                .with_retry(no_retries())
                .with_http_connector(TracedConnector::default())
                .with_client_options(ClientOptions::new().with_allow_http(true))
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            let path = Path::from_url_path(&path).map_err(|e| invalid(e.to_string()))?;
            Ok((Arc::new(store), path))
        }
        LocationKind::S3 { bucket, key } => {
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(no_retries())
                .with_http_connector(TracedConnector::default());
            if let Some(account) = account {
                if let Some(region) = &account.region {
                    builder = builder.with_region(region);
                }
                if let Some(id) = &account.access_key_id {
                    builder = builder.with_access_key_id(id.expose_secret());
                }
                if let Some(secret) = &account.secret_access_key {
                    builder = builder.with_secret_access_key(secret.expose_secret());
                }
                if let Some(endpoint) = &account.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
            }
            let store = builder.build().map_err(|e| invalid(e.to_string()))?;
            let path = Path::from_url_path(&key).map_err(|e| invalid(e.to_string()))?;
            Ok((Arc::new(store), path))
        }
    }
}

/// The `api` label of the requests that read export locations (`http(s)://`, `s3://`).
const EXPORT_API: &str = "export";

/// `object_store`'s reqwest connector, with a client span and the request metrics
/// (`crate::telemetry::Request`) for each request it sends: a location read is a `HEAD` and
/// ranged `GET`s, one request per attempt (its retries are off).
#[derive(Debug, Default)]
struct TracedConnector(object_store::client::ReqwestConnector);

impl object_store::client::HttpConnector for TracedConnector {
    fn connect(
        &self,
        options: &ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(TracedService(
            self.0.connect(options)?,
        )))
    }
}

#[derive(Debug)]
struct TracedService(object_store::client::HttpClient);

#[async_trait::async_trait]
impl object_store::client::HttpService for TracedService {
    async fn call(
        &self,
        request: object_store::client::HttpRequest,
    ) -> Result<object_store::client::HttpResponse, object_store::client::HttpError> {
        use tracing::Instrument;
        let method = match request.method().as_str() {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "PUT" => "PUT",
            "POST" => "POST",
            _ => "_OTHER",
        };
        // An object's path is the location itself, not a route: every read has the same
        // template. The span ends with the response's head; the body streams after it.
        let traced = crate::telemetry::Request::start(EXPORT_API, method, "/{object}", 0);
        let response = self.0.execute(request).instrument(traced.span()).await;
        traced.finish(response.as_ref().ok().map(|r| r.status().as_u16()));
        response
    }
}

/// `object_store` retry settings that try a request once (see the module's header).
pub fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    }
}

/// Classifies an `object_store` error for `location`: not found →
/// [`ConnectorError::InvalidParams`]; refused credentials, invalid paths and unsupported
/// operations → [`ConnectorError::Permanent`]; everything else (network, 5xx, timeouts) →
/// [`ConnectorError::Transient`]. The message names the redacted location.
pub fn classify_error(location: &str, error: object_store::Error) -> ConnectorError {
    let shown = redact_url(location);
    let causes = crate::error_chain(&error);
    // With no key configured, object_store's last resort is the EC2 instance metadata
    // service; off EC2 that fails with an error about 169.254.169.254, which tells the
    // operator nothing about what to set.
    if matches!(parse_location(location), Ok(LocationKind::S3 { .. }))
        && (causes.contains("169.254.169.254") || causes.contains("instance metadata"))
    {
        return ConnectorError::Permanent(anyhow::anyhow!(
            "no AWS credentials for {shown}: set SLUICE__CONNECTORS__SAILTHRU__ACCOUNTS__<ACCOUNT>__ACCESS_KEY_ID and …__SECRET_ACCESS_KEY (and …__REGION), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an instance role or web identity provides them"
        ));
    }
    // A name that does not resolve is a typo far more often than a DNS outage: say so
    // at once instead of retrying it.
    if let Some(host) = dns_failure(location, &causes) {
        return ConnectorError::Permanent(anyhow::anyhow!(
            "export location '{shown}': host {host} could not be resolved (DNS), tried once"
        ));
    }
    match error {
        object_store::Error::NotFound { .. } => {
            ConnectorError::InvalidParams(format!("export location '{shown}' not found"))
        }
        object_store::Error::Precondition { .. } => ConnectorError::Permanent(anyhow::anyhow!(
            "export location '{shown}' changed since the job was planned (its ETag differs); start a new job for the new archive"
        )),
        e @ (object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::InvalidPath { .. }
        | object_store::Error::NotSupported { .. }
        | object_store::Error::NotImplemented { .. }) => {
            ConnectorError::Permanent(anyhow::anyhow!("reading export location '{shown}': {e}"))
        }
        e => ConnectorError::Transient(anyhow::anyhow!("reading export location '{shown}': {e}")),
    }
}

/// The host of `location` when `causes` say its name could not be resolved.
fn dns_failure(location: &str, causes: &str) -> Option<String> {
    if !crate::is_dns_failure(causes) {
        return None;
    }
    match parse_location(location).ok()? {
        LocationKind::Http { origin, .. } => Url::parse(&origin)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string)),
        LocationKind::S3 { bucket, .. } => Some(format!("of bucket {bucket}")),
        LocationKind::Local(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            parse_location("/data/x.zip").unwrap(),
            LocationKind::Local(PathBuf::from("/data/x.zip"))
        );
        assert_eq!(
            parse_location("file:///data/my%20x.zip").unwrap(),
            LocationKind::Local(PathBuf::from("/data/my x.zip"))
        );
        match parse_location("relative/x.zip").unwrap() {
            LocationKind::Local(p) => assert!(p.is_absolute() && p.ends_with("relative/x.zip")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_location("/data/./a/../x.zip").unwrap(),
            LocationKind::Local(PathBuf::from("/data/x.zip"))
        );
        assert_eq!(
            parse_location("http://127.0.0.1:8080/exports/a.zip").unwrap(),
            LocationKind::Http {
                origin: "http://127.0.0.1:8080".into(),
                path: "exports/a.zip".into()
            }
        );
        assert_eq!(
            parse_location("s3://bucket/dir/a.zip").unwrap(),
            LocationKind::S3 {
                bucket: "bucket".into(),
                key: "dir/a.zip".into()
            }
        );
    }

    #[test]
    fn bad_locations_are_invalid_params_and_redacted() {
        for bad in [
            "",
            "ftp://h/x.zip",
            "s3://bucket",
            "http://h/",
            "https://u:secret@h/x.zip?sig=abc",
        ] {
            let e = parse_location(bad).expect_err(bad);
            let msg = e.to_string();
            assert!(
                matches!(e, ConnectorError::InvalidParams(_)),
                "{bad}: {msg}"
            );
            assert!(!msg.contains("secret") && !msg.contains("sig=abc"), "{msg}");
        }
    }

    #[tokio::test]
    async fn local_files_open_and_missing_ones_are_not_found() {
        use object_store::ObjectStoreExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a b.zip");
        std::fs::write(&file, b"hello world").unwrap();
        let url = Url::from_file_path(&file).unwrap().to_string();
        for loc in [file.to_str().unwrap(), url.as_str()] {
            let (store, path) = open_location(loc, None).unwrap();
            let bytes = store.get_range(&path, 6..11).await.unwrap();
            assert_eq!(&bytes[..], b"world");
        }
        let missing = dir.path().join("missing.zip");
        let (store, path) = open_location(missing.to_str().unwrap(), None).unwrap();
        let e = classify_error(
            missing.to_str().unwrap(),
            store.head(&path).await.unwrap_err(),
        );
        assert!(
            matches!(e, ConnectorError::InvalidParams(ref m) if m.contains("missing.zip") && m.contains("not found")),
            "{e}"
        );
    }

    #[test]
    fn s3_and_http_stores_build() {
        let account = S3Account {
            region: Some("eu-west-1".into()),
            access_key_id: Some("AKIA".to_string().into()),
            secret_access_key: Some("shh".to_string().into()),
            endpoint: Some("http://127.0.0.1:9000".into()),
        };
        let (_, path) = open_location("s3://bucket/dir/a.zip", Some(&account)).unwrap();
        assert_eq!(path.as_ref(), "dir/a.zip");
        let (_, path) = open_location("https://example.com/dir/a%20b.zip", None).unwrap();
        assert_eq!(path.as_ref(), "dir/a%20b.zip".replace("%20", " "));
    }

    #[tokio::test]
    async fn an_unknown_host_is_tried_once_and_named() {
        use object_store::ObjectStoreExt;
        let location = "http://sluice-no-such-host.invalid/x.zip";
        let started = std::time::Instant::now();
        let (store, path) = open_location(location, None).unwrap();
        let e = classify_error(location, store.head(&path).await.unwrap_err());
        let msg = e.to_string();
        assert!(matches!(e, ConnectorError::Permanent(_)), "{msg}");
        assert!(
            msg.contains("host sluice-no-such-host.invalid could not be resolved")
                && msg.contains("tried once")
                && !msg.contains("retries"),
            "{msg}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[tokio::test]
    async fn s3_without_credentials_says_so_and_names_the_settings() {
        use object_store::ObjectStoreExt;
        if std::env::vars().any(|(k, _)| k.starts_with("AWS_")) {
            eprintln!("skipped: AWS_* variables are set");
            return;
        }
        // No key anywhere: object_store falls back to the instance metadata service.
        let account = S3Account {
            region: Some("us-east-1".into()),
            endpoint: Some("http://127.0.0.1:9".into()),
            ..S3Account::default()
        };
        let location = "s3://bucket/dir/a.zip";
        let (store, path) = open_location(location, Some(&account)).unwrap();
        let e = classify_error(location, store.head(&path).await.unwrap_err());
        let msg = e.to_string();
        assert!(matches!(e, ConnectorError::Permanent(_)), "{msg}");
        assert!(
            msg.contains("no AWS credentials for s3://bucket/dir/a.zip")
                && msg.contains("SLUICE__CONNECTORS__SAILTHRU__ACCOUNTS__<ACCOUNT>__ACCESS_KEY_ID")
                && !msg.contains("169.254"),
            "{msg}"
        );
    }
}
