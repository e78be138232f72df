//! `sluice-sandbox`: serves emulated outside systems (`serve`, the default) or writes one
//! generated Sailthru export archive (`sailthru-export`). See the library docs for routes.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use sluice_sandbox::sailthru::{self, ExportSpec};
use sluice_sandbox::{Config, EMULATORS};
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
    /// Print the configuration `serve` would use (every emulator's section, defaults
    /// filled in) as JSON.
    Config(Box<ConfigArgs>),
    /// Write one generated Sailthru export archive and print its expected row counts as JSON.
    SailthruExport(ExportArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SLUICE_SANDBOX_BIND", default_value = "127.0.0.1:9200")]
    bind: SocketAddr,
    #[command(flatten)]
    config: ConfigArgs,
}

/// Where the configuration comes from (see `sluice_sandbox::Config::load`).
#[derive(Args)]
struct ConfigArgs {
    /// Cache directory for generated archives [default: `cache_dir` of the config, else
    /// $TMPDIR/sluice-sandbox].
    #[arg(long, env = "SLUICE_SANDBOX_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// TOML file with `cache_dir` and one section per emulator (`[klaviyo]`,
    /// `[commercetools]`, …), read before `SLUICE_SANDBOX__<EMULATOR>__<KEY>` variables and
    /// `--set`.
    #[arg(long, env = "SLUICE_SANDBOX_CONFIG")]
    config: Option<PathBuf>,
    /// One setting, `emulator.key=value` (repeatable; the value is JSON when it parses as
    /// JSON, else text), e.g. `--set klaviyo.rate_limit_scale=0.1`,
    /// `--set commercetools.data.orders=20000`, `--set klaviyo.faults='{"error_503_share":0.05}'`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl ConfigArgs {
    /// The configuration.
    fn load(self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref(), std::env::vars(), &self.sets)?;
        if let Some(dir) = self.cache_dir {
            config.cache_dir = dir;
        }
        Ok(config)
    }

    /// The configuration with every emulator's defaults filled in.
    fn load_filled(self) -> anyhow::Result<Config> {
        let mut config = self.load()?;
        for e in EMULATORS {
            let filled = match config.emulators.remove(e.name) {
                Some(section) => merge((e.defaults)(), section),
                None => (e.defaults)(),
            };
            config.emulators.insert(e.name.to_owned(), filled);
        }
        Ok(config)
    }
}

/// `over` laid over `base`, objects key by key.
fn merge(base: serde_json::Value, over: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (base, over) {
        (Value::Object(mut b), Value::Object(o)) => {
            for (k, v) in o {
                let merged = match b.remove(&k) {
                    Some(old) => merge(old, v),
                    None => v,
                };
                b.insert(k, merged);
            }
            Value::Object(b)
        }
        (_, over) => over,
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
        Command::Config(args) => {
            let config = args.load_filled()?;
            // Builds (and so checks) every emulator, as `serve` would.
            let _checked = sluice_sandbox::router(config.clone())?;
            println!("{}", serde_json::to_string_pretty(&config)?);
            Ok(())
        }
        Command::SailthruExport(args) => export(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding --bind {}", args.bind))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!("listening on http://{addr}");
    let names: Vec<&str> = EMULATORS.iter().map(|e| e.name).collect();
    println!(
        "emulating {} (`sluice-sandbox config` prints their settings)",
        names.join(", ")
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    sluice_sandbox::run(config, listener, shutdown).await
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
