//! Postgres over TLS (`sslmode`, `sslrootcert`; `sluice_store::tls`) against a throwaway
//! PostgreSQL that refuses plain connections, as managed databases that force TLS do: its
//! `pg_hba.conf` has `hostssl` lines only, and its certificate, for the name `db.internal`,
//! is issued by a CA generated here.
//!
//! The server is the distribution's own (`/usr/lib/postgresql/<version>/bin`), initialised
//! in a temporary directory and started on a free port; when the test runs as root it runs
//! as the `postgres` user (`initdb` refuses root).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use secrecy::SecretString;
use sluice_contracts::Settings;
use sluice_contracts::config::DatabaseSettings;
use sluice_destinations::Destinations;
use sluice_store::load::Catalog;

/// The newest PostgreSQL server binaries of the distribution.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install the postgresql package")?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
}

/// The uid and gid of the `postgres` user when this process is root (servers refuse to run
/// as root), else `None`: run as ourselves.
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let is_root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        == Some("0");
    if !is_root {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let fields: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .context("running as root and there is no postgres user to run the server as")?
        .split(':')
        .collect();
    Ok(Some((fields[2].parse()?, fields[3].parse()?)))
}

struct TlsPostgres {
    dir: tempfile::TempDir,
    server: Child,
    port: u16,
}

impl TlsPostgres {
    /// Writes the CA (`ca.pem`), an unrelated CA (`other-ca.pem`) and the server's key and
    /// certificate for `db.internal`, then initialises and starts the server.
    fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let user = server_user()?;
        let dir = tempfile::Builder::new().prefix("sluice-tls-").tempdir()?;
        let path = dir.path();

        let ca = new_ca("sluice test CA")?;
        let other = new_ca("another CA")?;
        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["db.internal".to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "db.internal");
        let server_cert = params.signed_by(&server_key, &*ca)?;
        std::fs::write(path.join("ca.pem"), ca.pem())?;
        std::fs::write(path.join("other-ca.pem"), other.pem())?;
        std::fs::write(path.join("server.crt"), server_cert.pem())?;
        std::fs::write(path.join("server.key"), server_key.serialize_pem())?;
        std::fs::set_permissions(
            path.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )?;
        if let Some((uid, gid)) = user {
            for f in ["", "server.crt", "server.key"] {
                std::os::unix::fs::chown(path.join(f), Some(uid), Some(gid))?;
            }
        }

        let data = path.join("data");
        let status = as_user(Command::new(bin.join("initdb")), user)
            .args([
                "-D",
                data.to_str().context("UTF-8 path")?,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-N",
            ])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("initdb failed: {status}");
        }
        // TCP only with TLS: a plain connection finds no pg_hba.conf line.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(path.join("server.log"))?;
        let server = as_user(Command::new(bin.join("postgres")), user)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(path)
            .args(["-c", "ssl=on", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                path.join("server.crt").display()
            ))
            .arg("-c")
            .arg(format!(
                "ssl_key_file={}",
                path.join("server.key").display()
            ))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let started = Self { dir, server, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the TLS server did not start: {}", started.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(started)
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A URL of database `sluice_tls` on this server with `query`.
    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/sluice_tls?{query}",
            self.port
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        // SIGKILL: its backends notice the postmaster's death and exit; nothing to keep.
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn new_ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn as_user(mut command: Command, user: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = user {
        command.gid(gid).uid(uid);
    }
    command
}

fn database(url: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: SecretString::from(url.to_string()),
        pool_size: 2,
    }
}

/// Connects (creating the database when missing) and reads whether the session is
/// encrypted.
async fn connect(url: &str) -> anyhow::Result<bool> {
    let pool = sluice_store::connect(&database(url)).await?;
    let client = pool.get().await?;
    Ok(client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?
        .get(0))
}

async fn refused(url: &str) -> String {
    match connect(url).await {
        Ok(_) => panic!("connected with {url}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_and_destinations_connect_to_a_postgres_that_forces_tls() {
    let pg = tokio::task::spawn_blocking(TlsPostgres::start)
        .await
        .expect("start task")
        .expect("a TLS PostgreSQL");
    let ca = pg.file("ca.pem");

    // A plain URL stays plain, and this server refuses it.
    let plain = refused(&pg.url("127.0.0.1", "application_name=sluice")).await;
    assert!(plain.contains("no encryption"), "{plain}");

    // require: encrypted, certificate unchecked; the ledger is created and migrated.
    let require = pg.url("127.0.0.1", "sslmode=require");
    assert!(
        connect(&require).await.expect("sslmode=require"),
        "{}",
        pg.log()
    );
    let pool = sluice_store::connect(&database(&require))
        .await
        .expect("pool");
    sluice_store::migrate(&pool)
        .await
        .expect("migrations over TLS");

    // verify-full: the chain and the name (db.internal, reached at 127.0.0.1).
    let full = pg.url(
        "db.internal",
        &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"),
    );
    assert!(connect(&full).await.expect("sslmode=verify-full"));
    let wrong_name = refused(&pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(wrong_name.contains("not valid for name"), "{wrong_name}");

    // verify-ca: the chain only, so the IP address's URL connects; another CA does not.
    let chain = pg.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    assert!(connect(&chain).await.expect("sslmode=verify-ca"));
    let other = pg.file("other-ca.pem");
    for mode in ["verify-ca", "verify-full", "require"] {
        let e = refused(&pg.url(
            "db.internal",
            &format!("hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={other}"),
        ))
        .await;
        assert!(e.contains("UnknownIssuer"), "{mode}: {e}");
    }

    // The destinations of kind postgres and redshift (its stand-in) connect the same way.
    let settings = Settings::load_from(
        None,
        [
            ("SLUICE__DATABASE__URL", require.as_str()),
            ("SLUICE__DESTINATIONS__PGTLS__KIND", "postgres"),
            ("SLUICE__DESTINATIONS__PGTLS__URL", full.as_str()),
            ("SLUICE__DESTINATIONS__RSTLS__KIND", "redshift"),
            ("SLUICE__DESTINATIONS__RSTLS__URL", chain.as_str()),
            ("SLUICE__DESTINATIONS__RSTLS__STAND_IN", "true"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("settings");
    let destinations =
        Destinations::build(&settings, &pool, &Catalog::default()).expect("destinations");
    for name in ["pgtls", "rstls"] {
        destinations
            .get(name)
            .expect("configured")
            .check()
            .await
            .unwrap_or_else(|e| panic!("destination {name} over TLS: {e}"));
    }
    let bad = Settings::load_from(
        None,
        [
            ("SLUICE__DATABASE__URL", require.as_str()),
            ("SLUICE__DESTINATIONS__RSTLS__KIND", "redshift"),
            (
                "SLUICE__DESTINATIONS__RSTLS__URL",
                &pg.url(
                    "db.internal",
                    &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={other}"),
                ),
            ),
            ("SLUICE__DESTINATIONS__RSTLS__STAND_IN", "true"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("settings");
    let e = Destinations::build(&bad, &pool, &Catalog::default())
        .expect("destinations")
        .get("rstls")
        .expect("configured")
        .check()
        .await
        .expect_err("an untrusted certificate");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    pool.close();
    drop(pg);
}
