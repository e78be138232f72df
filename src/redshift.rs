//! Destinations in tests: a second Postgres database standing in for Redshift, and the S3
//! emulator `moto` for staged loads.
//!
//! No Redshift is reachable from here. The stand-in runs the SQL the Redshift destination
//! generates (PostgreSQL 15 speaks that subset, `MERGE` included) and cannot run
//! `COPY … FROM 's3://…'`, so staged loads put their objects on moto and the stand-in
//! loads those same objects through the `INSERT` path.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_contracts::config::Section;
use sluice_destinations::Destinations;
use sluice_store::Pool;
use sluice_store::load::Catalog;

use crate::{TestEnv, base_database_url};

/// The S3 emulator's address: `SLUICE_TEST_S3_ENDPOINT`, else `http://127.0.0.1:5555`,
/// where this starts `moto_server` (PyPI `moto[server]`) when nothing answers yet. It is
/// left running for later tests, like the machine's RabbitMQ and Postgres.
///
/// # Errors
/// moto is not installed or does not come up.
pub async fn s3_emulator() -> anyhow::Result<String> {
    let endpoint = std::env::var("SLUICE_TEST_S3_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:5555".to_string());
    let client = reqwest::Client::new();
    let answers = |client: reqwest::Client, url: String| async move {
        client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok()
    };
    if answers(client.clone(), endpoint.clone()).await {
        return Ok(endpoint);
    }
    let port = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .context("SLUICE_TEST_S3_ENDPOINT has no port")?;
    let log = std::fs::File::create(std::env::temp_dir().join("sluice-e2e-moto.log"))?;
    std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting moto_server (install it with `pip install 'moto[server]'`)")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if answers(client.clone(), endpoint.clone()).await {
            return Ok(endpoint);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("moto_server did not answer at {endpoint} within 30 s");
}

/// Creates `bucket` on the S3 emulator at `endpoint` (moto takes unsigned requests).
///
/// # Errors
/// The emulator refuses.
pub async fn create_bucket(endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("creating bucket {bucket}: HTTP {}", response.status());
    }
    Ok(())
}

/// The keys under `prefix` in `bucket` (moto's `ListObjectsV2`, unsigned).
///
/// # Errors
/// The emulator refuses.
pub async fn list_objects(
    endpoint: &str,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let body = reqwest::Client::new()
        .get(format!("{endpoint}/{bucket}?list-type=2&prefix={prefix}"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(body
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect())
}

/// The bytes of `key` in `bucket`, read with the test credentials (`testing`/`testing`)
/// the way the destination wrote it (moto refuses anonymous reads of private objects).
///
/// # Errors
/// The emulator refuses or the key is missing.
pub async fn get_object(endpoint: &str, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
    use object_store::ObjectStoreExt;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .build()?;
    Ok(store
        .get(&object_store::path::Path::from(key))
        .await?
        .bytes()
        .await?
        .to_vec())
}

impl TestEnv {
    /// Adds the destination `name` of kind `redshift` on a new stand-in database
    /// (`sluice_test_<id>_<name>`, dropped at teardown), with further settings of the
    /// destination in `extra` (`("stage_rows", "1")`, …), and migrates it as
    /// `sluicectl migrate --destination NAME` does. Call before starting services.
    /// Returns a pool on the stand-in database.
    ///
    /// # Errors
    /// Database errors, or settings the destination refuses.
    pub async fn add_redshift_stand_in(
        &mut self,
        name: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Pool> {
        let database = format!("sluice_test_{}_{name}", self.id);
        let base = base_database_url();
        let (head, _) = base
            .rsplit_once('/')
            .context("database URL without a database")?;
        let url = format!("{head}/{database}");
        let mut section = serde_json::Map::new();
        section.insert("kind".into(), "redshift".into());
        section.insert("url".into(), url.clone().into());
        let upper = name.to_uppercase();
        self.extra_env.push((
            format!("SLUICE__DESTINATIONS__{upper}__KIND"),
            "redshift".into(),
        ));
        self.extra_env
            .push((format!("SLUICE__DESTINATIONS__{upper}__URL"), url.clone()));
        for (key, value) in extra {
            // As the environment would give it: numbers and booleans parsed.
            let parsed: serde_json::Value =
                serde_json::from_str(value).unwrap_or_else(|_| (*value).into());
            section.insert((*key).to_string(), parsed);
            self.extra_env.push((
                format!("SLUICE__DESTINATIONS__{upper}__{}", key.to_uppercase()),
                (*value).to_string(),
            ));
        }
        self.settings
            .destinations
            .insert(name.to_string(), Section(section));
        self.extra_databases.push(database.clone());

        let destinations = Destinations::build(&self.settings, &self.pool, &Catalog::default())?;
        destinations.get(name)?.migrate().await?;
        let pool = sluice_store::db::pool(&sluice_contracts::config::DatabaseSettings {
            url: url.into(),
            pool_size: 2,
        })?;
        Ok(pool)
    }

    /// Requests a Sailthru export ingestion into `destination`.
    ///
    /// # Errors
    /// See [`TestEnv::request_job`].
    pub async fn sync_sailthru_into(
        &self,
        export: &str,
        page_size: Option<u64>,
        destination: &str,
    ) -> anyhow::Result<uuid::Uuid> {
        let mut params = serde_json::json!({ "export": export });
        if let Some(n) = page_size {
            params["page_size"] = n.into();
        }
        self.request_job_into(
            "sailthru",
            "export",
            "default",
            params,
            sluice_contracts::Mode::Full,
            destination,
        )
        .await
    }
}

/// `SELECT count(*)` of `table` in the database of `pool`.
///
/// # Errors
/// Unknown table or database errors.
pub async fn count_in(pool: &Pool, table: &str) -> anyhow::Result<i64> {
    let client = pool.get().await?;
    Ok(client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .with_context(|| format!("counting {table}"))?
        .get(0))
}
