//! Every metric a sluice service exports, in one place: name, kind, labels, meaning and,
//! for histograms, buckets. `sluice-service` describes them to the Prometheus recorder (so
//! each has `# HELP` and `# TYPE` lines) and gives each histogram its explicit buckets;
//! `docs/operations.md` lists the same metrics (a test keeps the two equal), and the Grafana
//! dashboard in `k8s/grafana/` may use only these.
//!
//! Conventions (Prometheus'): one `sluice_` prefix; base units (seconds, not milliseconds;
//! records, not thousands); counters end in `_total`; durations are `_seconds` histograms.
//! Labels have small, fixed value sets — connector, stream (its base name, without a
//! Klaviyo metric id), table, destination, queue, API, status class, outcome — never a job
//! id, task id, account, URL or error text, which would make a new series per job.

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process restarts).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations counted into buckets.
    Histogram,
}

impl Kind {
    /// The Prometheus `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Full name, `sluice_…`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The service that exports it (`planner`, `fetcher`, `loader`).
    pub service: &'static str,
    /// Its label names (every series has exactly these).
    pub labels: &'static [&'static str],
    /// What it means, with its unit.
    pub help: &'static str,
    /// Upper bounds of a histogram's buckets, in the metric's unit (`+Inf` is implied).
    pub buckets: &'static [f64],
}

/// Durations of HTTP requests and loader transactions: 5 ms to 30 s.
const FAST: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// A fetch task: 50 ms to 10 min (a Klaviyo events task at the rate limit takes minutes).
const TASK: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// A wait for the rate limiter: 1 ms to 2 min (Retry-After pauses reach a minute).
const WAIT: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 30.0, 60.0, 120.0,
];
/// A whole job: 1 s to a day.
const JOB: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
    86400.0,
];
/// Time a message spent in its queue: 10 ms to an hour (retried messages include their
/// tier's delay of 5 s to 5 min).
const QUEUE: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Every metric, grouped by the service that exports it.
pub const METRICS: &[Metric] = &[
    // --- every service ---------------------------------------------------------------
    Metric {
        name: "sluice_build_info",
        kind: Kind::Gauge,
        service: "all",
        labels: &["service", "version"],
        help: "Always 1; the labels name the service and its version.",
        buckets: &[],
    },
    Metric {
        name: "sluice_messages_consumed_total",
        kind: Kind::Counter,
        service: "all",
        labels: &["queue", "outcome"],
        help: "Messages taken from a queue, by how they were settled: acked (their effect is durable: done, retried or parked) or requeued (handed back to RabbitMQ, e.g. while Postgres is away).",
        buckets: &[],
    },
    Metric {
        name: "sluice_queue_wait_seconds",
        kind: Kind::Histogram,
        service: "all",
        labels: &["queue"],
        help: "Seconds from a message's publish (or its last retry's) to its delivery to a consumer.",
        buckets: QUEUE,
    },
    Metric {
        name: "sluice_messages_retried_total",
        kind: Kind::Counter,
        service: "fetcher",
        labels: &["queue", "tier"],
        help: "Messages sent through a retry tier (5s, 30s, 5m) back to their queue.",
        buckets: &[],
    },
    Metric {
        name: "sluice_messages_parked_total",
        kind: Kind::Counter,
        service: "all",
        labels: &["queue"],
        help: "Messages put into the parking lot (permanent errors, exhausted retries, undecodable messages) by the queue they came from.",
        buckets: &[],
    },
    Metric {
        name: "sluice_job_duration_seconds",
        kind: Kind::Histogram,
        service: "planner, loader",
        labels: &["connector", "stream", "outcome"],
        help: "Seconds from a job's request to its end (succeeded or failed), observed by the service that ended it.",
        buckets: JOB,
    },
    // --- planner -------------------------------------------------------------------------
    Metric {
        name: "sluice_planner_jobs_total",
        kind: Kind::Counter,
        service: "planner",
        labels: &["connector", "outcome"],
        help: "Job requests handled by the planner: planned, refused (unknown connector or destination, stream locked) or failed (the source could not be planned).",
        buckets: &[],
    },
    Metric {
        name: "sluice_schedule_slots_total",
        kind: Kind::Counter,
        service: "planner",
        labels: &["connector", "outcome"],
        help: "Slots of schedules handled by the planners: fired (a job was requested), skipped (the stream's previous job was still active) or missed (no planner ran at their time; one per run of missed slots).",
        buckets: &[],
    },
    Metric {
        name: "sluice_queue_messages",
        kind: Kind::Gauge,
        service: "planner",
        labels: &["queue"],
        help: "Messages ready for delivery in a queue (not counting those delivered and not yet acked), sampled every 5 seconds.",
        buckets: &[],
    },
    Metric {
        name: "sluice_queue_consumers",
        kind: Kind::Gauge,
        service: "planner",
        labels: &["queue"],
        help: "Consumers of a queue (fetch: live fetchers; load: loaders), sampled every 5 seconds.",
        buckets: &[],
    },
    // --- fetcher -------------------------------------------------------------------------
    Metric {
        name: "sluice_fetcher_tasks_total",
        kind: Kind::Counter,
        service: "fetcher",
        labels: &["connector", "outcome"],
        help: "Fetch tasks ended by a fetcher: done, retried (transient error, sent to a retry tier), parked (permanent error or retries exhausted) or cancelled (job cancelled).",
        buckets: &[],
    },
    Metric {
        name: "sluice_fetcher_task_duration_seconds",
        kind: Kind::Histogram,
        service: "fetcher",
        labels: &["connector"],
        help: "Seconds a fetch task ran in its connector, publishing included.",
        buckets: TASK,
    },
    Metric {
        name: "sluice_fetcher_records_total",
        kind: Kind::Counter,
        service: "fetcher",
        labels: &["connector", "stream", "table"],
        help: "Rows fetched and published for loading, by destination table.",
        buckets: &[],
    },
    Metric {
        name: "sluice_fetcher_records_rejected_total",
        kind: Kind::Counter,
        service: "fetcher",
        labels: &["connector", "stream"],
        help: "Source records the connector could not read (stored in sluice.rejected_rows by the loader).",
        buckets: &[],
    },
    Metric {
        name: "sluice_http_requests_total",
        kind: Kind::Counter,
        service: "fetcher, planner",
        labels: &["api", "status_class"],
        help: "Requests to an outside API, by status class (2xx, 3xx, 4xx, 5xx, or error when no response came: connection, timeout, body).",
        buckets: &[],
    },
    Metric {
        name: "sluice_http_request_duration_seconds",
        kind: Kind::Histogram,
        service: "fetcher, planner",
        labels: &["api"],
        help: "Seconds from sending a request to an outside API until its response body was read (or the request failed).",
        buckets: FAST,
    },
    Metric {
        name: "sluice_http_throttled_total",
        kind: Kind::Counter,
        service: "fetcher, planner",
        labels: &["api"],
        help: "429 (Too Many Requests) answers from an outside API.",
        buckets: &[],
    },
    Metric {
        name: "sluice_http_rate_limit_wait_seconds",
        kind: Kind::Histogram,
        service: "fetcher, planner",
        labels: &["api"],
        help: "Seconds a request waited for the rate limiter (its budget, or a Retry-After pause after a 429) before being sent; waits under 1 ms are not observed. The _sum is the total time spent waiting.",
        buckets: WAIT,
    },
    Metric {
        name: "sluice_http_retries_total",
        kind: Kind::Counter,
        service: "fetcher, planner",
        labels: &["api"],
        help: "Requests repeated in process after a transient failure (5xx, timeout, dropped connection), before the task itself is retried.",
        buckets: &[],
    },
    // --- loader --------------------------------------------------------------------------
    Metric {
        name: "sluice_loader_records_total",
        kind: Kind::Counter,
        service: "loader",
        labels: &["connector", "stream", "table", "destination"],
        help: "Rows of loaded parts written (or found identical) in a destination table.",
        buckets: &[],
    },
    Metric {
        name: "sluice_loader_records_rejected_total",
        kind: Kind::Counter,
        service: "loader",
        labels: &["connector", "stream", "destination"],
        help: "Records stored in sluice.rejected_rows: those the connector could not read and rows that do not fit their table.",
        buckets: &[],
    },
    Metric {
        name: "sluice_loader_parts_total",
        kind: Kind::Counter,
        service: "loader",
        labels: &["outcome"],
        help: "RecordBatch parts handled by the loader: loaded, skipped (loaded before, or its job ended) or refused (parked: it does not fit, or its destination is unknown).",
        buckets: &[],
    },
    Metric {
        name: "sluice_loader_transaction_duration_seconds",
        kind: Kind::Histogram,
        service: "loader",
        labels: &["destination"],
        help: "Seconds of one load transaction (a group of parts, or one part), retries included.",
        buckets: FAST,
    },
];

/// The catalog entry of `name`.
pub fn find(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name)
}

/// A stream's base name for labels: a Klaviyo events task's stream `events/<metric id>`
/// becomes `events`, so a label never carries an id.
pub fn stream_label(stream: &str) -> String {
    stream.split('/').next().unwrap_or(stream).to_string()
}

/// The status class label of an HTTP status: `2xx` … `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = BTreeSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("sluice_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{} is not snake_case",
                m.name
            );
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                Kind::Histogram => {
                    assert!(m.name.ends_with("_seconds"), "{}", m.name);
                    assert!(!m.buckets.is_empty(), "{} has no buckets", m.name);
                    assert!(
                        m.buckets.windows(2).all(|w| w[0] < w[1]),
                        "{} buckets not increasing",
                        m.name
                    );
                }
                Kind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
            for bad in ["_ms", "_milliseconds", "_bytes_kb", "_minutes"] {
                assert!(!m.name.contains(bad), "{}: not a base unit", m.name);
            }
            for label in m.labels {
                assert!(
                    ![
                        "job_id", "task_id", "job", "task", "account", "url", "error", "key"
                    ]
                    .contains(label),
                    "{}: high-cardinality label {label}",
                    m.name
                );
            }
        }
    }

    #[test]
    fn stream_labels_drop_ids() {
        assert_eq!(stream_label("events/UxyZ12"), "events");
        assert_eq!(stream_label("orders"), "orders");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
    }

    /// The metric names `docs/operations.md` lists in its metric table (rows starting with
    /// `` | `sluice_ ``).
    fn documented() -> BTreeSet<String> {
        let text = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("| `sluice_"))
            .map(|rest| format!("sluice_{}", rest.split('`').next().unwrap()))
            .collect()
    }

    #[test]
    fn docs_list_exactly_the_catalog() {
        let docs = documented();
        let catalog: BTreeSet<String> = METRICS.iter().map(|m| m.name.to_string()).collect();
        let missing: Vec<_> = catalog.difference(&docs).collect();
        let extra: Vec<_> = docs.difference(&catalog).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "docs/operations.md: undocumented {missing:?}, not exported {extra:?}"
        );
    }

    /// The `sluice_…` metric names a PromQL expression uses, with histogram series
    /// suffixes taken off.
    fn metrics_in(expr: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = expr;
        while let Some(at) = rest.find("sluice_") {
            // Part of a longer identifier (a label called `x_sluice_…`)? Not a metric.
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                let name = &tail[..end];
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| find(b).is_some()))
                    .unwrap_or(name);
                names.push(base.to_string());
            }
            rest = &tail[end..];
        }
        names
    }

    fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if k == "expr" {
                        out.push(v.as_str().unwrap_or_default().to_string());
                    } else {
                        exprs(v, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_dashboard_uses_only_documented_metrics() {
        let path = repo().join("k8s/grafana/sluice-dashboard.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
        let mut all = Vec::new();
        exprs(&dashboard, &mut all);
        assert!(all.len() >= 10, "only {} expressions", all.len());
        let documented = documented();
        let mut used = BTreeSet::new();
        for expr in &all {
            let names = metrics_in(expr);
            assert!(
                !names.is_empty(),
                "expression uses no sluice metric: {expr}"
            );
            for name in names {
                assert!(
                    documented.contains(&name) && find(&name).is_some(),
                    "dashboard expression uses {name}, which docs/operations.md does not list: {expr}"
                );
                if let Some(m) = find(&name)
                    && m.kind == Kind::Histogram
                {
                    assert!(
                        expr.contains(&format!("{name}_bucket"))
                            || expr.contains(&format!("{name}_sum"))
                            || expr.contains(&format!("{name}_count")),
                        "{name} is a histogram: use its _bucket, _sum or _count series: {expr}"
                    );
                }
                used.insert(name);
            }
        }
        // Every panel has a datasource-independent query and a title.
        for panel in dashboard["panels"].as_array().unwrap() {
            assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        }
        assert!(used.len() >= 12, "the dashboard shows only {used:?}");
    }

    #[test]
    fn expression_parsing_finds_names() {
        assert_eq!(
            metrics_in(
                "histogram_quantile(0.9, sum by (le) (rate(sluice_job_duration_seconds_bucket[5m])))"
            ),
            vec!["sluice_job_duration_seconds"]
        );
        assert_eq!(
            metrics_in("sum(rate(sluice_no_such_total[5m]))"),
            vec!["sluice_no_such_total"]
        );
    }
}
