//! `sluice-sandbox`: serves emulated outside systems (`serve`, the default) or writes one
//! generated Sailthru export archive (`sailthru-export`). See the library docs for routes.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use sluice_sandbox::commercetools::{
    ApiClient, CommercetoolsConfig, CommercetoolsDataSpec, DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET, DEFAULT_EXAMPLES_PROJECT_KEY, DEFAULT_PROJECT_KEY,
};
use sluice_sandbox::klaviyo::{KlaviyoConfig, KlaviyoDataSpec, RateLimitScope};
use sluice_sandbox::sailthru::{self, ExportSpec};
use sluice_sandbox::wdn::{WdnConfig, WdnDataSpec};
use sluice_sandbox::{SandboxConfig, run_with_all};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sluice-sandbox",
    version,
    about = "Emulated outside systems for sluice tests, demos and benchmarks"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// `serve` options, for when no subcommand is given.
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the sandbox over HTTP (the default).
    Serve(Box<ServeArgs>),
    /// Write one generated Sailthru export archive and print its expected row counts as JSON.
    SailthruExport(ExportArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SLUICE_SANDBOX_BIND", default_value = "127.0.0.1:9200")]
    bind: SocketAddr,
    /// Cache directory for generated archives [default: $TMPDIR/sluice-sandbox].
    #[arg(long, env = "SLUICE_SANDBOX_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    klaviyo: KlaviyoArgs,
    #[command(flatten)]
    commercetools: CommercetoolsArgs,
    #[command(flatten)]
    wdn: WdnArgs,
}

/// The WDN emulation's settings (see `sluice_sandbox::wdn`).
#[derive(Args)]
struct WdnArgs {
    /// Seed of the generated WDN catalogue.
    #[arg(long, default_value_t = 1)]
    wdn_seed: u64,
    /// Number of brands (Converse, Vans, Nike, Adidas, Jordan first).
    #[arg(long, default_value_t = 8)]
    wdn_brands: u32,
    /// Number of products.
    #[arg(long, default_value_t = 2_000)]
    wdn_products: u64,
    /// Number of retailer ids (4 % answer 404).
    #[arg(long, default_value_t = 320)]
    wdn_retailers: u32,
    /// Requests in flight above which responses slow down (the real API: about 5).
    #[arg(long, default_value_t = 5)]
    wdn_max_concurrency: u32,
    /// Requests in flight at which requests are refused with 429/503.
    #[arg(long, default_value_t = 8)]
    wdn_fail_concurrency: u32,
    /// Latency of every WDN response, milliseconds.
    #[arg(long, default_value_t = 0)]
    wdn_latency_ms: u64,
    /// The WDN fault config as JSON (see `sluice_sandbox::faults::FaultConfig`); its
    /// `latency_ms` wins over --wdn-latency-ms when set.
    #[arg(long)]
    wdn_faults: Option<String>,
}

impl WdnArgs {
    fn config(self) -> anyhow::Result<WdnConfig> {
        let mut faults: sluice_sandbox::faults::FaultConfig = match self.wdn_faults {
            Some(j) => serde_json::from_str(&j).context("parsing --wdn-faults")?,
            None => Default::default(),
        };
        if faults.latency_ms == 0 {
            faults.latency_ms = self.wdn_latency_ms;
        }
        let config = WdnConfig {
            data: WdnDataSpec {
                seed: self.wdn_seed,
                brands: self.wdn_brands,
                products: self.wdn_products,
                retailers: self.wdn_retailers,
                ..WdnDataSpec::default()
            },
            max_concurrency: self.wdn_max_concurrency,
            fail_concurrency: self.wdn_fail_concurrency,
            faults,
            ..WdnConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// The commercetools emulation's settings (see `sluice_sandbox::commercetools`).
#[derive(Args)]
struct CommercetoolsArgs {
    /// Key of the generated commercetools project.
    #[arg(long, default_value = DEFAULT_PROJECT_KEY)]
    commercetools_project_key: String,
    /// Seed of the generated commercetools project.
    #[arg(long, default_value_t = 1)]
    commercetools_seed: u64,
    /// Number of generated customers.
    #[arg(long, default_value_t = 1_000)]
    commercetools_customers: u64,
    /// Number of generated orders.
    #[arg(long, default_value_t = 5_000)]
    commercetools_orders: u64,
    /// Number of generated categories.
    #[arg(long, default_value_t = 60)]
    commercetools_categories: u32,
    /// Number of generated products.
    #[arg(long, default_value_t = 500)]
    commercetools_products: u64,
    /// API client id (HTTP Basic user of `POST /oauth/token`).
    #[arg(long, default_value = DEFAULT_CLIENT_ID)]
    commercetools_client_id: String,
    /// API client secret.
    #[arg(long, default_value = DEFAULT_CLIENT_SECRET)]
    commercetools_client_secret: String,
    /// Lifetime of issued tokens, seconds.
    #[arg(long, default_value_t = 172_800)]
    commercetools_token_lifetime: u64,
    /// Folder of `*.example.json` files to serve as an extra project.
    #[arg(long)]
    commercetools_examples_dir: Option<PathBuf>,
    /// Key of the example project.
    #[arg(long, default_value = DEFAULT_EXAMPLES_PROJECT_KEY)]
    commercetools_examples_project_key: String,
    /// Fault knobs as JSON (`FaultConfig`), e.g. `{"error_503_share": 0.05}`.
    #[arg(long)]
    commercetools_faults: Option<String>,
}

impl CommercetoolsArgs {
    fn config(self) -> anyhow::Result<CommercetoolsConfig> {
        let faults = match self.commercetools_faults {
            Some(j) => serde_json::from_str(&j).context("parsing --commercetools-faults")?,
            None => Default::default(),
        };
        let config = CommercetoolsConfig {
            project_key: self.commercetools_project_key,
            data: CommercetoolsDataSpec {
                seed: self.commercetools_seed,
                customers: self.commercetools_customers,
                orders: self.commercetools_orders,
                categories: self.commercetools_categories,
                products: self.commercetools_products,
                ..CommercetoolsDataSpec::default()
            },
            clients: vec![ApiClient {
                client_id: self.commercetools_client_id,
                client_secret: self.commercetools_client_secret,
                scopes: vec!["manage_project:{projectKey}".to_owned()],
            }],
            token_lifetime_seconds: self.commercetools_token_lifetime,
            faults,
            examples_dir: self.commercetools_examples_dir,
            examples_project_key: self.commercetools_examples_project_key,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The Klaviyo emulation's settings (see `sluice_sandbox::klaviyo`).
#[derive(Args)]
struct KlaviyoArgs {
    /// Seed of the generated Klaviyo account.
    #[arg(long, default_value_t = 1)]
    klaviyo_seed: u64,
    /// Number of generated profiles.
    #[arg(long, default_value_t = 10_000)]
    klaviyo_profiles: u64,
    /// Number of metrics (Placed Order, Received Email, Opened Email, Clicked Email, ...).
    #[arg(long, default_value_t = 6)]
    klaviyo_metrics: u32,
    /// Number of lists.
    #[arg(long, default_value_t = 3)]
    klaviyo_lists: u32,
    /// Number of segments.
    #[arg(long, default_value_t = 3)]
    klaviyo_segments: u32,
    /// Events generated per metric.
    #[arg(long, default_value_t = 100_000)]
    klaviyo_events_per_metric: u64,
    /// Start of the events' range (RFC 3339, UTC).
    #[arg(long, default_value = "2024-01-01T00:00:00Z")]
    klaviyo_start: chrono::DateTime<chrono::Utc>,
    /// End of the events' range (RFC 3339, UTC, exclusive).
    #[arg(long, default_value = "2024-04-01T00:00:00Z")]
    klaviyo_end: chrono::DateTime<chrono::Utc>,
    /// Share (0..=1) of events dated in the year after the end.
    #[arg(long, default_value_t = 0.0)]
    klaviyo_future_share: f64,
    /// Accepted private API keys (comma-separated), each its own rate-limit account.
    #[arg(long, value_delimiter = ',', default_value = "pk_sandbox")]
    klaviyo_api_key: Vec<String>,
    /// Multiplies Klaviyo's rate limits (1.0 = real), or `unlimited`.
    #[arg(long, default_value = "1.0")]
    klaviyo_rate_limit_scale: String,
    /// Share one rate-limit budget per `endpoint` (Klaviyo) or per `tier`.
    #[arg(long, default_value = "endpoint")]
    klaviyo_rate_limit_scope: String,
    /// Base of absolute links (default: http://<Host header>).
    #[arg(long)]
    klaviyo_public_url: Option<String>,
    /// Fault knobs as JSON (`FaultConfig`), e.g. `{"error_503_share": 0.05}`.
    #[arg(long)]
    klaviyo_faults: Option<String>,
}

impl KlaviyoArgs {
    fn config(self) -> anyhow::Result<KlaviyoConfig> {
        let rate_limit_scale = match self.klaviyo_rate_limit_scale.as_str() {
            "unlimited" | "none" => None,
            s => Some(
                s.parse::<f64>()
                    .ok()
                    .filter(|x| *x > 0.0 && x.is_finite())
                    .context(
                        "--klaviyo-rate-limit-scale must be a positive number or `unlimited`",
                    )?,
            ),
        };
        let rate_limit_scope = match self.klaviyo_rate_limit_scope.as_str() {
            "endpoint" => RateLimitScope::Endpoint,
            "tier" => RateLimitScope::Tier,
            other => {
                anyhow::bail!("--klaviyo-rate-limit-scope must be endpoint or tier, not {other:?}")
            }
        };
        let faults = match self.klaviyo_faults {
            Some(j) => serde_json::from_str(&j).context("parsing --klaviyo-faults")?,
            None => Default::default(),
        };
        let config = KlaviyoConfig {
            data: KlaviyoDataSpec {
                seed: self.klaviyo_seed,
                profiles: self.klaviyo_profiles,
                metrics: self.klaviyo_metrics,
                lists: self.klaviyo_lists,
                segments: self.klaviyo_segments,
                start: self.klaviyo_start,
                end: self.klaviyo_end,
                events_per_metric: self.klaviyo_events_per_metric,
                future_share: self.klaviyo_future_share,
            },
            api_keys: self.klaviyo_api_key,
            rate_limit_scale,
            rate_limit_scope,
            faults,
            public_url: self.klaviyo_public_url,
        };
        config.data.validate()?;
        Ok(config)
    }
}

#[derive(Args)]
struct ExportArgs {
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of message_blast records (other members scale from it).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Export date, YYYY-MM-DD.
    #[arg(long, default_value = "2016-04-01")]
    date: chrono::NaiveDate,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Serve(args) => serve(*args).await,
        Command::SailthruExport(args) => export(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let klaviyo = args.klaviyo.config()?;
    let commercetools = args.commercetools.config()?;
    let wdn = args.wdn.config()?;
    let cache_dir = args
        .cache_dir
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-sandbox"));
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding --bind {}", args.bind))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!("listening on http://{addr}");
    println!(
        "commercetools: project {:?}, client {:?} / secret {:?} (POST http://{addr}/oauth/token)",
        commercetools.project_key,
        commercetools
            .clients
            .first()
            .map(|c| c.client_id.as_str())
            .unwrap_or(""),
        commercetools
            .clients
            .first()
            .map(|c| c.client_secret.as_str())
            .unwrap_or(""),
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    println!("wdn: http://{addr}/wdn/api/v1 (stats: http://{addr}/wdn/_admin/stats)");
    run_with_all(
        SandboxConfig { cache_dir },
        klaviyo,
        commercetools,
        wdn,
        listener,
        shutdown,
    )
    .await
}

/// Cancels `token` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let spec = ExportSpec {
        seed: args.seed,
        messages: args.messages,
        date: args.date,
    };
    spec.validate()?;
    let out = args.out;
    let counts = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let started = std::time::Instant::now();
        let file = std::fs::File::create(&out)
            .with_context(|| format!("creating --out {}", out.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let counts = sailthru::write_export_with_counts(&spec, &mut w)
            .with_context(|| format!("writing {}", out.display()))?;
        let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        tracing::info!(
            path = %out.display(),
            bytes,
            seconds = started.elapsed().as_secs_f64(),
            "wrote sailthru export"
        );
        Ok(counts)
    })
    .await
    .context("export generation panicked")??;
    println!("{}", serde_json::to_string_pretty(&counts)?);
    Ok(())
}
