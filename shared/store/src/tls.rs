//! TLS to Postgres with rustls, configured the way libpq is: `sslmode` and `sslrootcert`
//! in the connection URL (`postgres://…/db?sslmode=verify-full&sslrootcert=/etc/ca.pem`)
//! or key/value string, so the managed databases that refuse plain connections (RDS,
//! Cloud SQL, Azure, Redshift) work with the URLs their consoles print.
//!
//! | `sslmode` | TLS | certificate checked |
//! |---|---|---|
//! | absent, `disable` | no | — (sluice's behaviour before TLS existed: plain local URLs are unchanged) |
//! | `prefer` | if the server offers it | no (libpq: "I don't care about security") |
//! | `require` | yes | no; with `sslrootcert`, its chain (libpq does the same) |
//! | `verify-ca` | yes | chain to a trusted root |
//! | `verify-full` | yes | chain, and the host name (or IP address) of the URL |
//!
//! Trusted roots: the PEM file `sslrootcert` names, or the operating system's store when it
//! is absent or `system` (libpq ≥ 16 spells it so). Client certificates (`sslcert`,
//! `sslkey`) are not supported: `tokio-postgres` refuses them as unknown options.
//!
//! `tokio-postgres` knows only `disable|prefer|require` and no `sslrootcert`, so both keys
//! are taken out of the string before it is parsed, and the mode handed to it is `require`
//! for the verifying modes: the checking is the rustls verifier's.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

/// libpq's `sslmode`, as far as sluice supports it (no `allow`: it only ever downgrades).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain connections only (also what an absent `sslmode` means here).
    Disable,
    /// TLS when the server offers it, its certificate unchecked.
    Prefer,
    /// TLS or no connection; the certificate is checked only against an `sslrootcert`.
    Require,
    /// TLS with a certificate that chains to a trusted root (any host name).
    VerifyCa,
    /// TLS with a certificate that chains to a trusted root and names the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(StoreError::Url(format!(
                    "sslmode {other:?} is not supported: use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        })
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// The operating system's store (`sslrootcert` absent or `system`).
    System,
    /// A PEM file of one or more CA certificates (`sslrootcert=/path`).
    File(PathBuf),
}

/// The TLS half of a Postgres connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    /// `sslmode`; [`SslMode::Disable`] when absent.
    pub mode: SslMode,
    /// `sslrootcert`; `None` when absent.
    pub root_cert: Option<RootCert>,
}

/// A parsed Postgres connection string: the driver's configuration and the TLS settings.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// What `tokio-postgres` connects with (its `sslmode` set from [`PgTls::mode`]).
    pub config: tokio_postgres::Config,
    /// How to secure the connection.
    pub tls: PgTls,
}

impl PgConfig {
    /// Parses a URL (`postgres://…?sslmode=…`) or key/value string (`host=… sslmode=…`).
    ///
    /// # Errors
    /// [`StoreError::Url`], naming the key at fault (never repeating the string: it may
    /// hold a password).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let (rest, sslmode, rootcert) = take_tls_keys(url)?;
        let mode = match sslmode.as_deref() {
            Some(m) => m.parse()?,
            None => SslMode::Disable,
        };
        let root_cert = rootcert.map(|r| {
            if r == "system" {
                RootCert::System
            } else {
                RootCert::File(PathBuf::from(r))
            }
        });
        let mut config =
            tokio_postgres::Config::from_str(&rest).map_err(|e| StoreError::Url(e.to_string()))?;
        config.ssl_mode(match mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        });
        Ok(Self {
            config,
            tls: PgTls { mode, root_cert },
        })
    }

    /// A deadpool manager connecting with this configuration and TLS.
    ///
    /// # Errors
    /// The root certificates cannot be read.
    pub fn manager(&self, manager: ManagerConfig) -> Result<Manager, StoreError> {
        Ok(match self.tls.connector()? {
            None => Manager::from_config(self.config.clone(), tokio_postgres::NoTls, manager),
            Some(tls) => Manager::from_config(self.config.clone(), tls, manager),
        })
    }

    /// Opens one connection (driven by a spawned task) with `config`, which may be this
    /// one's driver configuration changed (another database), and this one's TLS.
    ///
    /// # Errors
    /// The root certificates cannot be read; the connection fails (`what` says to what).
    pub async fn connect_one(
        &self,
        config: &tokio_postgres::Config,
        what: &str,
    ) -> Result<tokio_postgres::Client, StoreError> {
        let context = |source| StoreError::Postgres {
            context: format!("connecting to {what}"),
            source,
        };
        let client = match self.tls.connector()? {
            None => {
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(context)?;
                tokio::spawn(connection);
                client
            }
            Some(tls) => {
                let (client, connection) = config.connect(tls).await.map_err(context)?;
                tokio::spawn(connection);
                client
            }
        };
        Ok(client)
    }
}

impl PgTls {
    /// The rustls connector of this mode, or `None` for plain connections.
    ///
    /// # Errors
    /// The `sslrootcert` file cannot be read or holds no certificate; no root certificate
    /// can be loaded from the system for a mode that needs one.
    pub fn connector(&self) -> Result<Option<MakeRustlsConnect>, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (self.mode, &self.root_cert) {
            (SslMode::Disable, _) => return Ok(None),
            (SslMode::Prefer | SslMode::Require, None) => Arc::new(Unverified(provider.clone())),
            (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, Some(_))
            | (SslMode::VerifyCa, None) => Arc::new(ChainOnly(self.webpki(&provider)?)),
            (SslMode::VerifyFull, _) => self.webpki(&provider)?,
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(MakeRustlsConnect::new(config)))
    }

    fn webpki(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
        let roots = Arc::new(self.roots()?);
        WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| tls_error(format!("TLS setup: {e}")))
    }

    fn roots(&self) -> Result<RootCertStore, StoreError> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(RootCert::File(path)) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        tls_error(format!(
                            "sslrootcert {}: cannot read it as PEM certificates: {e}",
                            path.display()
                        ))
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(tls_error(format!(
                        "sslrootcert {}: no usable CA certificate in it",
                        path.display()
                    )));
                }
            }
            None | Some(RootCert::System) => {
                let loaded = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(loaded.certs);
                if roots.is_empty() {
                    return Err(tls_error(format!(
                        "sslmode={}: no root certificate in the system's store ({}); name the server's CA with sslrootcert=/path/to/ca.pem",
                        self.mode,
                        loaded
                            .errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    )));
                }
            }
        }
        Ok(roots)
    }
}

fn tls_error(message: String) -> StoreError {
    StoreError::Destination {
        message,
        transient: false,
    }
}

/// Removes `sslmode` and `sslrootcert` from a connection string; returns the rest and the
/// two values (decoded).
fn take_tls_keys(url: &str) -> Result<(String, Option<String>, Option<String>), StoreError> {
    let (mut sslmode, mut rootcert) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            sslmode = Some(value);
            true
        }
        "sslrootcert" => {
            rootcert = Some(value);
            true
        }
        _ => false,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((head, query)) = url.split_once('?') else {
            return Ok((url.to_string(), None, None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .unwrap_or_default();
            if !take(&key, value) {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            head.to_string()
        } else {
            format!("{head}?{}", kept.join("&"))
        };
        return Ok((rest, sslmode, rootcert));
    }
    let mut kept = Vec::new();
    for (key, value) in key_values(url)? {
        if !take(&key, value.clone()) {
            kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), sslmode, rootcert))
}

/// The pairs of a libpq key/value string: `key = value` separated by whitespace, a value
/// single-quoted when it holds spaces, with `\'` and `\\` escapes.
fn key_values(s: &str) -> Result<Vec<(String, String)>, StoreError> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(StoreError::Url(format!(
                "{key:?} has no value (expected key=value)"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(StoreError::Url(format!(
                            "the value of {key:?} has no closing quote"
                        )));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// `prefer` and `require` without `sslrootcert`: encryption without authentication, as
/// libpq does; the handshake's signatures are still checked, so the peer holds the key of
/// the certificate it shows.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must reach a trusted root; the name in the certificate is not
/// compared with the host (a load balancer's or an IP address's URL still connects).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_stay_plain() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/sluice",
            "postgres://u:p@db/sluice?application_name=x",
            "host=127.0.0.1 user=postgres dbname=sluice",
        ] {
            let pg = PgConfig::parse(url).unwrap();
            assert_eq!(pg.tls.mode, SslMode::Disable, "{url}");
            assert_eq!(pg.config.get_ssl_mode(), DriverSslMode::Disable);
            assert!(pg.tls.connector().unwrap().is_none());
        }
        let pg =
            PgConfig::parse("postgres://u@db/sluice?application_name=x&connect_timeout=5").unwrap();
        assert_eq!(pg.config.get_application_name(), Some("x"));
        assert_eq!(
            pg.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(5))
        );
    }

    #[test]
    fn sslmode_and_sslrootcert_are_read_from_urls_and_key_values() {
        let pg = PgConfig::parse(
            "postgres://u:p@db.example.com:6543/ledger?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20dir%2Frds.pem&application_name=sluice",
        )
        .unwrap();
        assert_eq!(pg.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            pg.tls.root_cert,
            Some(RootCert::File("/etc/ca dir/rds.pem".into()))
        );
        assert_eq!(pg.config.get_ssl_mode(), DriverSslMode::Require);
        assert_eq!(pg.config.get_dbname(), Some("ledger"));
        assert_eq!(pg.config.get_application_name(), Some("sluice"));
        assert_eq!(pg.config.get_ports(), &[6543]);

        let pg = PgConfig::parse(
            "host=db user=u password='a b\\'c' sslmode = verify-ca sslrootcert='/etc/my ca.pem' dbname=x",
        )
        .unwrap();
        assert_eq!(pg.tls.mode, SslMode::VerifyCa);
        assert_eq!(
            pg.tls.root_cert,
            Some(RootCert::File("/etc/my ca.pem".into()))
        );
        assert_eq!(pg.config.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(pg.config.get_dbname(), Some("x"));

        for (mode, driver) in [
            ("disable", DriverSslMode::Disable),
            ("prefer", DriverSslMode::Prefer),
            ("require", DriverSslMode::Require),
            ("verify-ca", DriverSslMode::Require),
        ] {
            let pg = PgConfig::parse(&format!(
                "postgres://db/x?sslmode={mode}&sslrootcert=system"
            ))
            .unwrap();
            assert_eq!(pg.tls.mode.to_string(), mode);
            assert_eq!(pg.tls.root_cert, Some(RootCert::System));
            assert_eq!(pg.config.get_ssl_mode(), driver);
        }
    }

    #[test]
    fn bad_modes_and_root_files_are_named_without_the_password() {
        let e = PgConfig::parse("postgres://u:secret@db/x?sslmode=allow")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode \"allow\" is not supported"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        let e = PgConfig::parse("host=db password='secret")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no closing quote") && !e.contains("secret"),
            "{e}"
        );

        let dir = std::env::temp_dir().join(format!("sluice-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for mode in ["require", "verify-ca", "verify-full"] {
            let pg = PgConfig::parse(&format!(
                "postgres://u:secret@db/x?sslmode={mode}&sslrootcert={}",
                empty.display()
            ))
            .unwrap();
            let e = pg.tls.connector().err().unwrap().to_string();
            assert!(
                e.contains(&format!("sslrootcert {}", empty.display())),
                "{e}"
            );
        }
        let missing = dir.join("missing.pem");
        let pg = PgConfig::parse(&format!(
            "postgres://db/x?sslmode=verify-full&sslrootcert={}",
            missing.display()
        ))
        .unwrap();
        let e = pg.tls.connector().err().unwrap().to_string();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // Encryption without a root to check against needs no file.
        let pg = PgConfig::parse("postgres://db/x?sslmode=require").unwrap();
        assert!(pg.tls.connector().unwrap().is_some());
    }
}
