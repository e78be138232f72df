//! W3C trace context in AMQP headers, so one job is one trace across the services.
//!
//! A publish carries `traceparent` (and `tracestate` when there is one) of the span it is
//! published in ([`crate::Headers::traced`]); a consumer makes its span a child of what the
//! delivery carries ([`follow`]) and gives it the messaging attributes of OpenTelemetry's
//! semantic conventions for RabbitMQ. The trace id of a job is its job id: a publish made
//! outside the job's spans (the outbox loop re-publishing after a crash, `sluicectl dlq
//! replay`, or any publish while traces are off) still names the job's trace, with a span
//! id of its own.

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// W3C `tracestate` header: vendor entries that travel with `traceparent`.
pub const TRACESTATE_HEADER: &str = "tracestate";

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(
            ShortString::from(key.to_string()),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
}

struct HeaderExtractor<'a>(Option<&'a FieldTable>);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0?.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .map(|h| h.inner().keys().map(|k| k.as_str()).collect())
            .unwrap_or_default()
    }
}

/// Puts the trace context of the current span into `headers` when that span belongs to
/// the trace of `job_id`; otherwise a `traceparent` naming the job's trace with a new
/// span id, sampled.
pub(crate) fn inject(headers: &mut FieldTable, job_id: uuid::Uuid) {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let current = span.span_context();
    if current.is_valid() && current.trace_id() == TraceId::from_bytes(*job_id.as_bytes()) {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
        return;
    }
    let span_id: u64 = rand::random::<u64>() | 1;
    HeaderInjector(headers).set(
        crate::TRACEPARENT_HEADER,
        format!("00-{}-{span_id:016x}-01", job_id.simple()),
    );
}

/// The trace context a message carries (an empty context when it carries none).
pub fn extract(properties: &BasicProperties) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(properties.headers().as_ref()))
}

/// Makes `span` (a consumer's span, opened with `otel.kind = "consumer"`) a child of the
/// span that published `delivery`, and records the messaging attributes:
/// `messaging.system` `rabbitmq`, `messaging.destination.name` (the exchange),
/// `messaging.rabbitmq.destination.routing_key`, and the operation (`process`; as
/// `messaging.operation.type`, and as `messaging.operation`, its name before semantic
/// conventions 1.26, which older backends still read). Call it before the span is first
/// entered. Without traces installed this does nothing.
pub fn follow(span: &tracing::Span, delivery: &Delivery) {
    let _ = span.set_parent(extract(&delivery.properties));
    span.set_attribute("messaging.system", "rabbitmq");
    span.set_attribute(
        "messaging.destination.name",
        delivery.exchange.as_str().to_string(),
    );
    span.set_attribute(
        "messaging.rabbitmq.destination.routing_key",
        delivery.routing_key.as_str().to_string(),
    );
    span.set_attribute("messaging.operation.type", "process");
    span.set_attribute("messaging.operation", "process");
    span.set_attribute("messaging.message.body.size", delivery.data.len() as i64);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn without_a_span_of_the_job_the_headers_name_the_job_trace() {
        let job = uuid::Uuid::new_v4();
        let mut headers = FieldTable::default();
        inject(&mut headers, job);
        let properties = BasicProperties::default().with_headers(headers);
        let cx = extract(&properties);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(sc.trace_id(), TraceId::from_bytes(*job.as_bytes()));
        // A message without headers has no parent.
        assert!(
            !extract(&BasicProperties::default())
                .span()
                .span_context()
                .is_valid()
        );
    }
}
