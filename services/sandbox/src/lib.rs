//! sluice-sandbox: emulated outside systems for tests, demos and benchmarks.
//!
//! # Layout
//! - `server` (private): the sandbox's own routes, always served:
//!   - `GET|HEAD /sailthru/exports/{seed}/{messages}/sailthru_export.{YYYYMMDD}.zip`: the
//!     archive for [`sailthru::ExportSpec`] `{seed, messages, date}`, generated once into
//!     [`Config::cache_dir`] and then served as a file (`Range`, `HEAD`,
//!     `Content-Length`, `Last-Modified`).
//!   - `GET /sailthru/exports/{seed}/{messages}/manifest.{YYYYMMDD}.json`:
//!     `{"spec": {"seed", "messages", "date"}, "expected": {table: rows}}`.
//!   - `GET /livez`, `GET /readyz`: 200.
//!
//!   Bad parameters give 400 with `{"error": "...", "parameter": "seed"|"messages"|"date"}`.
//! - [`sailthru`]: the generator of Sailthru data-exporter archives of any size,
//!   deterministic from a seed ([`sailthru::write_export`], [`sailthru::expected_counts`]).
//! - The emulated APIs, one module each, listed in [`EMULATORS`]:
//!   - [`klaviyo`]: Klaviyo's JSON:API (`/api/…`, admin routes under `/klaviyo/_admin/`) over
//!     a generated account, with Klaviyo's rate limits; plus ground-truth functions
//!     ([`klaviyo::event_ids`], [`klaviyo::segment_member_ids`], …).
//!   - [`commercetools`]: the commercetools HTTP API (`POST /oauth/token`,
//!     `/{projectKey}/…`, admin routes under `/commercetools/_admin/`) over a generated
//!     project, with OAuth2 client credentials; plus the ground truth
//!     ([`commercetools::Project`], [`commercetools::ids`]).
//!   - [`wdn`]: the What Drops Now catalogue API (`/wdn/api/v1/…`, admin routes under
//!     `/wdn/_admin/`) over a generated catalogue (or one given verbatim), throttling like
//!     the real API above five concurrent requests and counting the peak concurrency it
//!     saw; plus the ground truth ([`wdn::Catalogue`], [`wdn::Catalogue::expected`]).
//! - Layers shared by the emulators, each parameterised by the API's own rules:
//!   [`auth`] (who is calling: the API's credential check), [`ratelimit`] (windows per
//!   budget: the API's classification of a request into a budget, and its 429 body) and
//!   [`faults`] (injected latency, errors, drops and truncations, in the API's error shape).
//! - `main.rs`: the `sluice-sandbox` binary (`serve`, `config`, `sailthru-export`).
//!
//! # Configuration
//! One [`Config`]: the cache folder and one section per emulator, named by
//! [`EmulatorConfig::NAME`], each deserialised into that emulator's own config type (unknown
//! keys are refused, naming them; a missing section takes the emulator's defaults). The
//! binary reads it from `--config sandbox.toml`, then `SLUICE_SANDBOX__<EMULATOR>__<KEY>…`
//! variables, then `--set emulator.key=value` ([`Config::load`]):
//!
//! ```toml
//! cache_dir = "/var/cache/sluice-sandbox"
//! [klaviyo]
//! rate_limit_scale = 0.1
//! [commercetools.data]
//! orders = 20000
//! ```
//!
//! # Adding an emulator
//! 1. A module with its config type (serde `Serialize`/`Deserialize` + `Default`,
//!    `#[serde(default, deny_unknown_fields)]`) implementing [`EmulatorConfig`]: its `NAME`
//!    and its `router`. Put its routes under `/{NAME}/…` unless its clients cannot be given
//!    a base path, its admin routes under `/{NAME}/_admin/`, and wrap its API routes in the
//!    shared layers it needs (see [`klaviyo`] and [`commercetools`] for the order).
//! 2. One line in [`EMULATORS`].
//!
//! [`router`] and [`run`] then serve it, the binary configures it, and commercetools no
//! longer accepts its name as a project key.

pub mod auth;
pub mod commercetools;
pub mod faults;
pub mod klaviyo;
pub mod ratelimit;
pub mod sailthru;
mod server;
pub mod wdn;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Every emulated API, in the order their routes are merged. Adding an emulator adds one
/// line here (see the crate docs).
pub const EMULATORS: &[Emulator] = &[
    Emulator::of::<klaviyo::KlaviyoConfig>(),
    Emulator::of::<commercetools::CommercetoolsConfig>(),
    Emulator::of::<wdn::WdnConfig>(),
];

/// An emulated API's configuration: its section of [`Config`] and how it is served.
pub trait EmulatorConfig:
    Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static
{
    /// The emulator's name: its section of [`Config`] (`[klaviyo]`,
    /// `SLUICE_SANDBOX__KLAVIYO__…`, `--set klaviyo.…`). Lowercase ASCII letters and digits.
    const NAME: &'static str;

    /// The emulator's routes (API and admin), merged at the sandbox's root.
    ///
    /// # Errors
    /// A configuration that cannot be served, saying what was wrong.
    fn router(self) -> anyhow::Result<axum::Router>;
}

/// One entry of [`EMULATORS`]: an emulator's name and how to build it from its section.
#[derive(Clone, Copy)]
pub struct Emulator {
    /// [`EmulatorConfig::NAME`].
    pub name: &'static str,
    /// Builds the emulator's routes from its section of [`Config`] (`None`: its defaults).
    pub build: fn(Option<&Value>) -> anyhow::Result<axum::Router>,
    /// The emulator's default section.
    pub defaults: fn() -> Value,
}

impl Emulator {
    /// The entry of the emulator configured by `C`.
    pub const fn of<C: EmulatorConfig>() -> Emulator {
        Emulator {
            name: C::NAME,
            build: build::<C>,
            defaults: defaults::<C>,
        }
    }

    /// Reads this emulator's section into its config type `C` (`None`: `C::default()`).
    ///
    /// # Errors
    /// A section of another shape, naming the key (`klaviyo.data.profiles: invalid type…`).
    pub fn parse<C: EmulatorConfig>(section: Option<&Value>) -> anyhow::Result<C> {
        let Some(v) = section else {
            return Ok(C::default());
        };
        serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                C::NAME.to_owned()
            } else {
                format!("{}.{path}", C::NAME)
            };
            anyhow::anyhow!("sandbox config {at}: {}", e.inner())
        })
    }
}

fn build<C: EmulatorConfig>(section: Option<&Value>) -> anyhow::Result<axum::Router> {
    Emulator::parse::<C>(section)?
        .router()
        .with_context(|| format!("configuring the {} emulator", C::NAME))
}

fn defaults<C: EmulatorConfig>() -> Value {
    serde_json::to_value(C::default()).unwrap_or(Value::Null)
}

/// Everything the sandbox serves: the archive cache and each emulator's section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where generated archives (and their manifests) are cached, as
    /// `<cache_dir>/sailthru/<seed>/<messages>/sailthru_export.<YYYYMMDD>.zip`. Created when
    /// missing. Default `$TMPDIR/sluice-sandbox`.
    pub cache_dir: PathBuf,
    /// Each emulator's section by [`Emulator::name`], as read (see [`Config::set`] for a
    /// typed one). A missing section means the emulator's defaults; a name that is no
    /// emulator's is refused by [`router`].
    #[serde(flatten)]
    pub emulators: BTreeMap<String, Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_dir: std::env::temp_dir().join("sluice-sandbox"),
            emulators: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Replaces the section of `C`'s emulator by `config`.
    pub fn set<C: EmulatorConfig>(&mut self, config: &C) -> &mut Self {
        self.emulators.insert(
            C::NAME.to_owned(),
            serde_json::to_value(config).unwrap_or(Value::Null),
        );
        self
    }

    /// `self` with the section of `C`'s emulator replaced by `config`.
    #[must_use]
    pub fn with<C: EmulatorConfig>(mut self, config: &C) -> Self {
        self.set(config);
        self
    }

    /// The section of `C`'s emulator, read into `C` (its defaults when absent).
    ///
    /// # Errors
    /// See [`Emulator::parse`].
    pub fn get<C: EmulatorConfig>(&self) -> anyhow::Result<C> {
        Emulator::parse(self.emulators.get(C::NAME))
    }

    /// Reads the configuration: the defaults, then the TOML `file` (if any), then the
    /// `SLUICE_SANDBOX__…` variables of `env` (`__` separates keys:
    /// `SLUICE_SANDBOX__COMMERCETOOLS__DATA__ORDERS=20000`), then the `sets`
    /// (`klaviyo.rate_limit_scale=0.1`). Values of variables and sets are read as JSON when
    /// they parse as JSON (numbers, booleans, `null`, `["a","b"]`, `{"seed":3}`), else as
    /// text.
    ///
    /// # Errors
    /// An unreadable file, a malformed set, or a value of the wrong shape, naming it.
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> anyhow::Result<Config> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let mut overrides: Vec<(String, Value)> = Vec::new();
        for (k, v) in env {
            if let Some(rest) = k.strip_prefix("SLUICE_SANDBOX__") {
                overrides.push((rest.to_lowercase().replace("__", "."), literal(&v)));
            }
        }
        for s in sets {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("--set {s:?}: expected KEY=VALUE"))?;
            overrides.push((k.trim().to_owned(), literal(v)));
        }
        for (k, v) in overrides {
            builder = builder
                .set_override(k.as_str(), config_value(v))
                .with_context(|| format!("setting {k}"))?;
        }
        let raw = builder.build().context("reading the sandbox config")?;
        let tree: Value = raw
            .try_deserialize()
            .context("reading the sandbox config")?;
        serde_path_to_error::deserialize(tree)
            .map_err(|e| anyhow::anyhow!("sandbox config {}: {}", e.path(), e.inner()))
    }
}

/// A variable's or set's text as JSON when it is JSON, else as a string.
fn literal(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn config_value(v: Value) -> config::Value {
    let kind = match v {
        Value::Null => config::ValueKind::Nil,
        Value::Bool(b) => config::ValueKind::Boolean(b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => config::ValueKind::I64(i),
            (None, Some(u)) => config::ValueKind::U64(u),
            _ => config::ValueKind::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => config::ValueKind::String(s),
        Value::Array(a) => config::ValueKind::Array(a.into_iter().map(config_value).collect()),
        Value::Object(o) => {
            config::ValueKind::Table(o.into_iter().map(|(k, v)| (k, config_value(v))).collect())
        }
    };
    config::Value::new(None, kind)
}

impl From<SandboxConfig> for Config {
    fn from(c: SandboxConfig) -> Self {
        Config {
            cache_dir: c.cache_dir,
            emulators: BTreeMap::new(),
        }
    }
}

/// The sandbox's own settings without emulator sections: `Config::from` it serves every
/// emulator at its defaults.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// See [`Config::cache_dir`].
    pub cache_dir: PathBuf,
}

/// Builds every route: the sandbox's own and each emulator's of [`EMULATORS`], configured by
/// its section of `config`.
///
/// # Errors
/// A section that names no emulator, or an emulator that cannot be configured, naming it.
pub fn router(config: impl Into<Config>) -> anyhow::Result<axum::Router> {
    let config = config.into();
    if let Some(unknown) = config
        .emulators
        .keys()
        .find(|k| !EMULATORS.iter().any(|e| e.name == k.as_str()))
    {
        let names: Vec<&str> = EMULATORS.iter().map(|e| e.name).collect();
        anyhow::bail!(
            "sandbox config: no emulator is called {unknown:?} (there are: {})",
            names.join(", ")
        );
    }
    let mut app = server::router(SandboxConfig {
        cache_dir: config.cache_dir.clone(),
    });
    for e in EMULATORS {
        app = app.merge((e.build)(config.emulators.get(e.name))?);
    }
    Ok(app)
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled (then finishes the
/// requests in flight and returns).
///
/// # Errors
/// A configuration [`router`] refuses, an uncreatable cache folder, or a serving error.
pub async fn run(
    config: impl Into<Config>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = config.into();
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    tokio::fs::create_dir_all(&config.cache_dir)
        .await
        .with_context(|| format!("creating cache dir {}", config.cache_dir.display()))?;
    tracing::info!(%addr, cache_dir = %config.cache_dir.display(), "sandbox serving");
    let app = router(config)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving HTTP")?;
    tracing::info!("sandbox stopped");
    Ok(())
}

/// [`run`] with the Klaviyo emulator configured by `klaviyo` (the sandbox's own tests use
/// it; new code builds a [`Config`]).
///
/// # Errors
/// See [`run`].
pub async fn run_with(
    config: SandboxConfig,
    klaviyo: klaviyo::KlaviyoConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run(Config::from(config).with(&klaviyo), listener, shutdown).await
}

/// [`run`] with the Klaviyo and commercetools emulators configured (the sandbox's own tests
/// use it; new code builds a [`Config`]).
///
/// # Errors
/// See [`run`].
pub async fn run_with_commercetools(
    config: SandboxConfig,
    klaviyo: klaviyo::KlaviyoConfig,
    commercetools: commercetools::CommercetoolsConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = Config::from(config).with(&klaviyo).with(&commercetools);
    run(config, listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layers_file_then_environment_then_sets() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = dir.path().join("sandbox.toml");
        std::fs::write(
            &file,
            "cache_dir = \"/tmp/c\"\n[klaviyo]\nrate_limit_scale = 0.5\napi_keys = [\"a\"]\n\
             [commercetools.data]\norders = 7\ncustomers = 3\n",
        )
        .expect("writing the file");
        let env = [
            ("SLUICE_SANDBOX__COMMERCETOOLS__DATA__ORDERS", "20000"),
            ("SLUICE_SANDBOX__KLAVIYO__API_KEYS", "[\"b\",\"c\"]"),
            ("SLUICE_SANDBOX_BIND", "not a section"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let sets = ["klaviyo.rate_limit_scale=0.1".to_owned()];
        let c = Config::load(Some(&file), env, &sets).expect("a valid config");
        assert_eq!(c.cache_dir, PathBuf::from("/tmp/c"));
        let k: klaviyo::KlaviyoConfig = c.get().expect("klaviyo");
        assert_eq!(k.rate_limit_scale, Some(0.1));
        assert_eq!(k.api_keys, ["b", "c"]);
        let ct: commercetools::CommercetoolsConfig = c.get().expect("commercetools");
        assert_eq!((ct.data.orders, ct.data.customers), (20_000, 3));
        assert_eq!(ct.data.products, 500, "left out: the default");
    }

    #[test]
    fn config_errors_name_the_key() {
        let sets = ["klaviyo.data.profiles=many".to_owned()];
        let c = Config::load(None, [], &sets).expect("any tree loads");
        let e = c.get::<klaviyo::KlaviyoConfig>().expect_err("not a number");
        assert!(e.to_string().contains("klaviyo.data.profiles"), "{e}");
        let sets = ["klaviyo.rate_limits=1".to_owned()];
        let c = Config::load(None, [], &sets).expect("any tree loads");
        let e = c.get::<klaviyo::KlaviyoConfig>().expect_err("unknown key");
        assert!(e.to_string().contains("rate_limits"), "{e}");
        let mut c = Config::default();
        c.emulators.insert("klavyio".into(), Value::Null);
        let Err(e) = router(c) else {
            panic!("an unknown section is refused");
        };
        assert!(e.to_string().contains("klavyio"), "{e}");
    }

    #[test]
    fn every_emulator_builds_from_its_defaults_and_names_are_unique() {
        let mut names: Vec<&str> = EMULATORS.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EMULATORS.len());
        for e in EMULATORS {
            let d = (e.defaults)();
            assert!(d.is_object(), "{}", e.name);
            assert!((e.build)(Some(&d)).is_ok(), "{}", e.name);
        }
    }
}
