//! Plumbing every sluice service shares:
//! - [`init_tracing`]: `tracing` subscriber, text or JSON, filter from settings or `RUST_LOG`,
//!   and OpenTelemetry traces when configured ([`telemetry`]);
//! - [`AdminServer`]: the admin HTTP port — `/livez` (the process answers; never checks
//!   dependencies), `/readyz` (the service's own readiness check: broker and database
//!   reachable), `/metrics` (Prometheus text format);
//! - [`shutdown_signal`]: a token cancelled on Ctrl-C or SIGTERM;
//! - [`Backoff`]: capped exponential backoff for reconnect loops.

pub mod health;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sluice_contracts::Settings;
use sluice_contracts::telemetry::{Kind, METRICS};
use tokio_util::sync::CancellationToken;

pub use metrics;
pub use telemetry::{TelemetryGuard, job_root_span};

/// Installs the global tracing subscriber once (later calls are no-ops, so tests that start
/// several services in one process are fine): logs as `settings.log` says (`RUST_LOG` wins),
/// and OpenTelemetry traces when an OTLP endpoint is configured ([`telemetry`]).
/// `service` (`sluice-planner`, …) is the traces' `service.name` unless `OTEL_SERVICE_NAME`
/// names one. Keep the guard until the process ends: dropping it exports the last spans.
pub fn init_tracing(settings: &Settings, service: &'static str) -> TelemetryGuard {
    install(settings, service, &settings.log.level, Output::Stdout)
}

/// [`init_tracing`] for a command-line tool: logs go to stderr (stdout is the tool's
/// output), `warn` and above unless `RUST_LOG` says otherwise.
pub fn init_cli_tracing(settings: &Settings, service: &'static str) -> TelemetryGuard {
    install(settings, service, "warn", Output::Stderr)
}

enum Output {
    Stdout,
    Stderr,
}

fn install(
    settings: &Settings,
    service: &'static str,
    level: &str,
    output: Output,
) -> TelemetryGuard {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, filter::Targets};
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = settings.log.format == "json";
    let fmt: Boxed = match (output, json) {
        (Output::Stdout, false) => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        (Output::Stdout, true) => tracing_subscriber::fmt::layer().json().boxed(),
        (Output::Stderr, false) => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        (Output::Stderr, true) => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // Each layer filters for itself: the log level never thins out the traces.
    let mut layers = vec![fmt.with_filter(filter).boxed()];
    let traces = match telemetry::layer(&settings.telemetry, service) {
        Ok(Some(layer)) => {
            let ours = Targets::new().with_target("sluice", tracing::Level::INFO);
            layers.push(layer.with_filter(ours).boxed());
            true
        }
        Ok(None) => false,
        Err(e) => {
            eprintln!("sluice: traces are off: {e:#}");
            false
        }
    };
    let installed = tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok();
    if installed && traces {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    }
    TelemetryGuard::new(installed && traces)
}

fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // The exporter's default naming: names as the catalog spells them, units
            // (`_seconds`) and `_total` included; it appends nothing.
            let builder = with_buckets(PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Several services in one test process share the recorder.
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
            }
            handle
        })
        .clone()
}

/// Gives each histogram of the catalog its explicit buckets (without them the exporter
/// would render summaries, which cannot be aggregated across replicas).
fn with_buckets(mut builder: PrometheusBuilder) -> PrometheusBuilder {
    use metrics_exporter_prometheus::Matcher;
    for m in METRICS.iter().filter(|m| m.kind == Kind::Histogram) {
        // Refused only for an empty bucket list, which the catalog's own test rules out.
        builder = builder
            .set_buckets_for_metric(Matcher::Full(m.name.to_string()), m.buckets)
            .expect("every histogram of the catalog has buckets");
    }
    builder
}

/// Describes every metric of the catalog to the installed recorder (`# HELP` lines).
fn describe() {
    for m in METRICS {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// A readiness check: `Ok(())` when ready, else what is missing.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    ready: ReadyCheck,
    metrics: PrometheusHandle,
}

/// The admin HTTP server of a service.
pub struct AdminServer {
    /// The address it listens on (useful when bound to port 0).
    pub addr: SocketAddr,
}

impl AdminServer {
    /// Binds `bind` and serves until `shutdown` is cancelled; `service` (`planner`,
    /// `fetcher`, `loader`) labels `sluice_build_info`.
    ///
    /// # Errors
    /// The address cannot be bound (the error names it).
    pub async fn start(
        service: &'static str,
        bind: &str,
        ready: ReadyCheck,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind the admin port {bind}: {e}"))?;
        let addr = listener.local_addr()?;
        let state = AdminState {
            ready,
            metrics: prometheus(),
        };
        let app = Router::new()
            .route("/livez", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        metrics::gauge!("sluice_build_info", "service" => service, "version" => env!("CARGO_PKG_VERSION"))
            .set(1.0);
        tracing::info!(%addr, "admin server listening");
        Ok(Self { addr })
    }
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    match (state.ready)() {
        Ok(()) => (StatusCode::OK, "ready".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics_text(State(state): State<AdminState>) -> String {
    state.metrics.render()
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        child.cancel();
    });
    token
}

/// Runs a service's `session` (connect, consume, return on failure) again and again until
/// `shutdown` is cancelled, waiting with backoff between attempts. The backoff starts over
/// after a session that had connected to the broker. `name` labels the log lines.
pub async fn supervise<F, Fut>(
    name: &str,
    health: &std::sync::Arc<health::Health>,
    shutdown: &CancellationToken,
    mut session: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut backoff = Backoff::default();
    while !shutdown.is_cancelled() {
        match session().await {
            Ok(()) => break,
            Err(e) => {
                if health.broker_up() {
                    backoff.reset();
                }
                health.set_broker(false);
                tracing::warn!(error = %format!("{e:#}"), "{name} session ended; reconnecting");
                if !backoff.wait(shutdown).await {
                    break;
                }
            }
        }
    }
    tracing::info!("{name} stopped");
}

/// Retries `op` with backoff until it succeeds; `None` when `shutdown` comes first.
/// Each failure is logged with `what`.
pub async fn retry<T, E, F, Fut>(what: &str, shutdown: &CancellationToken, mut op: F) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::default();
    loop {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                if !backoff.wait(shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Capped exponential backoff: 0.5 s doubling to 30 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    /// The next delay, doubling up to 30 s.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        d
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Sleeps for the next delay unless `shutdown` comes first; false on shutdown.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = shutdown.cancelled() => false,
        }
    }
}
