//! OpenTelemetry traces: one trace per job, across every process that works on it.
//!
//! [`init_tracing`](crate::init_tracing) adds an OpenTelemetry layer to the `tracing`
//! subscriber when an OTLP endpoint is configured (`SLUICE__TELEMETRY__OTLP_ENDPOINT`, or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); spans are
//! batched and posted as OTLP/HTTP protobuf. Without an endpoint nothing is installed and
//! the spans the services open anyway (one per job request, task, part and outside HTTP
//! request — never one per record) cost what they cost for logging alone.
//!
//! - The trace id of a job is its job id (the UUID's 16 bytes), so a job is found in a
//!   tracing backend by the id `sluicectl` prints. [`job_root_span`] opens the root span of
//!   a job — the request: `sluicectl sync`, later the planner's HTTP API and schedules — with
//!   that trace id; everything else joins it through the W3C `traceparent`/`tracestate`
//!   AMQP headers (`sluice_broker::Headers::traced`, `sluice_broker::follow`).
//! - Only spans of sluice's own crates (targets `sluice*`) at `INFO` and above are exported,
//!   whatever the log level: the traces do not change with `RUST_LOG`.
//! - The resource's `service.name` is `OTEL_SERVICE_NAME` (or `service.name` in
//!   `OTEL_RESOURCE_ATTRIBUTES`) when set, else the service's own name (`sluice-planner`…).

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use sluice_contracts::config::TelemetrySettings;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The tracer provider of this process, once installed (flushed by [`flush`] and by
/// [`TelemetryGuard`]'s drop).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

thread_local! {
    /// The trace id the next root span opened on this thread takes ([`job_root_span`]).
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Random ids, except that a root span opened by [`job_root_span`] takes its job's id as
/// trace id (the SDK asks its id generator for a trace id only for a span without parent).
#[derive(Debug, Default)]
struct JobTraceIds(RandomIdGenerator);

impl IdGenerator for JobTraceIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// The trace id of a job: its id's 16 bytes (the same 32 hex digits without dashes).
pub fn trace_id_of(job_id: uuid::Uuid) -> TraceId {
    TraceId::from_bytes(*job_id.as_bytes())
}

/// Opens the root span of a job's trace, `job.request`, whose trace id is the job id. The
/// caller publishes the `JobRequest` inside it (`span.in_scope(|| Headers::default()
/// .traced(job_id))`), which puts the span's `traceparent` on the message; the planner's
/// `plan` span continues from there. `trigger` says who asked: `sluicectl`, `http`,
/// `schedule`.
///
/// Without traces installed this is an ordinary `tracing` span and the headers carry a
/// `traceparent` made up from the job id.
pub fn job_root_span(
    request: &sluice_contracts::JobRequest,
    trigger: &'static str,
) -> tracing::Span {
    let span = tracing::info_span!(
        "job.request",
        otel.kind = "producer",
        job_id = %request.job_id,
        connector = %request.connector,
        stream = %request.stream,
        account = %request.account,
        destination = %request.destination,
        mode = request.mode.as_str(),
        sluice.trigger = trigger,
    );
    // The span has no parent (a job is a new trace): detach it from whatever span the
    // caller is in, then start it now, on this thread, so that the id generator hands it
    // the job's trace id.
    let _ = span.set_parent(opentelemetry::Context::new());
    NEXT_TRACE_ID.with(|next| next.set(Some(trace_id_of(request.job_id))));
    let _ = span.context();
    // Spans disabled (or no OpenTelemetry layer): the id was not taken; no later root
    // span of this thread may take it.
    NEXT_TRACE_ID.with(Cell::take);
    span
}

/// Flushes the spans not yet exported (tests call it before reading their receiver). It
/// blocks until the export is done: from async code, call it in `spawn_blocking`.
pub fn flush() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.force_flush()
    {
        tracing::warn!(error = %e, "flushing the trace exporter failed");
    }
}

/// Keeps traces flowing while alive; dropping it exports the spans still buffered (a
/// short-lived process such as `sluicectl` must keep it until it exits).
#[must_use = "dropping the guard flushes and stops the trace exporter"]
pub struct TelemetryGuard {
    installed: bool,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if self.installed
            && let Some(provider) = PROVIDER.get()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("sluice: exporting the last spans failed: {e}");
        }
    }
}

impl TelemetryGuard {
    pub(crate) fn new(installed: bool) -> Self {
        Self { installed }
    }
}

/// Whether traces are configured: a `SLUICE__TELEMETRY__OTLP_ENDPOINT`, or an
/// `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`; `OTEL_SDK_DISABLED=true` turns them off.
pub fn enabled(settings: &TelemetrySettings) -> bool {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return false;
    }
    settings.endpoint().is_some()
        || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
}

/// Builds the tracer provider (installed once per process) and the layer that feeds it;
/// `None` when traces are not configured.
///
/// # Errors
/// The endpoint is not a valid URL, or another OTLP setting is invalid (the message names
/// it).
pub(crate) fn layer<S>(
    settings: &TelemetrySettings,
    service: &'static str,
) -> anyhow::Result<
    Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>,
>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if !enabled(settings) {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(BlockingHttp::default());
    if let Some(base) = settings.endpoint() {
        // The programmatic endpoint is taken as the full URL: add the signal's path as the
        // exporter does for OTEL_EXPORTER_OTLP_ENDPOINT.
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = exporter.build().map_err(|e| {
        anyhow::anyhow!(
            "invalid trace exporter settings (telemetry.otlp_endpoint or OTEL_EXPORTER_OTLP_*): {e}"
        )
    })?;
    let provider = PROVIDER.get_or_init(|| {
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(JobTraceIds::default())
            .with_resource(resource(service))
            .build()
    });
    let tracer = provider.tracer("sluice");
    Ok(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_level(false),
    ))
}

/// The process's resource: the SDK's detectors (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), with `service` as `service.name` when they name none.
fn resource(service: &'static str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if named {
        builder.build()
    } else {
        builder.with_service_name(service).build()
    }
}

/// The OTLP exporter's HTTP client: the workspace's reqwest, blocking. The SDK's batch
/// processor exports from a thread of its own, outside any async runtime, so a blocking
/// client fits it (an async one would need a runtime that outlives every test's).
#[derive(Debug, Default)]
struct BlockingHttp {
    /// Built on first use, on the exporter's thread: a blocking client must not be built
    /// or dropped inside an async runtime.
    client: OnceLock<reqwest::blocking::Client>,
}

/// How long one export may take (the OTLP default).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for BlockingHttp {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let client = match self.client.get() {
            Some(c) => c,
            None => {
                let built = reqwest::blocking::Client::builder()
                    .timeout(EXPORT_TIMEOUT)
                    .build()?;
                self.client.get_or_init(|| built)
            }
        };
        let (parts, body) = request.into_parts();
        let response = client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body.to_vec())
            .send()?;
        let mut out = opentelemetry_http::Response::builder().status(response.status());
        if let Some(headers) = out.headers_mut() {
            *headers = response.headers().clone();
        }
        Ok(out.body(response.bytes()?)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_job_trace_id_is_its_job_id() {
        let job = uuid::Uuid::parse_str("0b6b1f4e-9a53-4d7e-8c2e-3f1d2a4b5c6d").unwrap();
        assert_eq!(
            trace_id_of(job).to_string(),
            "0b6b1f4e9a534d7e8c2e3f1d2a4b5c6d"
        );
        let ids = JobTraceIds::default();
        NEXT_TRACE_ID.with(|n| n.set(Some(trace_id_of(job))));
        assert_eq!(ids.new_trace_id(), trace_id_of(job));
        // Taken once: the next root span gets a random id.
        assert_ne!(ids.new_trace_id(), trace_id_of(job));
    }
}
