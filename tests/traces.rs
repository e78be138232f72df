//! OpenTelemetry traces end to end: a Sailthru and a Klaviyo job requested with the real
//! `sluicectl` (a process of its own) and run by the planner, two fetchers and a loader in
//! this process, their spans exported over OTLP/HTTP (protobuf) to a receiver inside the
//! test on port 0.
//!
//! Per job it asserts: one trace whose id is the job id; one root, `sluicectl`'s
//! `job.request`; the planner's `plan` its child through the AMQP `traceparent`; every
//! task's `fetch` a child of `plan` or of the fetch that found it; every part's `load` a
//! child of the fetch that published it, as many as the task's parts in the ledger; one
//! `HTTP GET` span per request the Klaviyo emulation answered; one `job.complete`; and the
//! messaging attributes on the consumer spans. With `--nocapture` it prints the Sailthru
//! job's span tree (docs/operations.md shows one).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message as _;
use sluice_e2e::{TestEnv, klaviyo_stats, utc};
use sluice_sandbox::klaviyo::{KlaviyoConfig, KlaviyoDataSpec};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(180);

/// One span as the receiver got it.
#[derive(Clone, Debug)]
struct Captured {
    service: String,
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    name: String,
    start_ns: u64,
    end_ns: u64,
    attributes: BTreeMap<String, String>,
}

impl Captured {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The OTLP/HTTP receiver: every span posted to `/v1/traces` since the process started.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Captured>>>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(any_value::Value::DoubleValue(n)) => n.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

async fn receive(
    axum::extract::State(spans): axum::extract::State<Arc<Mutex<Vec<Captured>>>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut got = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                got.push(Captured {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
                    name: span.name,
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
    spans.lock().expect("spans").extend(got);
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the receiver (on a runtime of its own: it outlives every test of the process)
/// and installs this process's tracing, exporting to it, once.
fn receiver() -> &'static Receiver {
    static RECEIVER: OnceLock<Receiver> = OnceLock::new();
    static GUARD: OnceLock<sluice_service::TelemetryGuard> = OnceLock::new();
    let receiver = RECEIVER.get_or_init(|| {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let state = spans.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("receiver port");
                tx.send(listener.local_addr().expect("receiver address"))
                    .expect("test waits for the address");
                let app = axum::Router::new()
                    .route("/v1/traces", axum::routing::post(receive))
                    .with_state(state);
                axum::serve(listener, app).await.expect("receiver");
            });
        });
        let addr = rx.recv().expect("receiver address");
        Receiver { addr, spans }
    });
    GUARD.get_or_init(|| {
        let settings = sluice_contracts::Settings::load_from(
            None,
            [
                (
                    "SLUICE__TELEMETRY__OTLP_ENDPOINT".to_string(),
                    receiver.endpoint(),
                ),
                ("SLUICE__LOG__LEVEL".to_string(), "warn".to_string()),
            ],
        )
        .expect("settings");
        sluice_service::init_tracing(&settings, "sluice-e2e")
    });
    receiver
}

impl Receiver {
    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans of one trace received so far.
    fn trace(&self, job: Uuid) -> Vec<Captured> {
        let id = job.simple().to_string();
        self.spans
            .lock()
            .expect("spans")
            .iter()
            .filter(|s| s.trace_id == id)
            .cloned()
            .collect()
    }

    /// Flushes this process's spans until the job's trace holds `job.complete` and as many
    /// `load` spans as the ledger has parts (a span reaches the exporter when it closes,
    /// which for the last part is just after its job's end is committed).
    async fn complete_trace(&self, job: Uuid, parts: usize) -> Vec<Captured> {
        for _ in 0..60 {
            tokio::task::spawn_blocking(sluice_service::telemetry::flush)
                .await
                .expect("flush");
            let spans = self.trace(job);
            let loads = spans.iter().filter(|s| s.name == "load").count();
            if loads >= parts && spans.iter().any(|s| s.name == "job.complete") {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.trace(job)
    }
}

/// The job's tasks and how many parts each had, from the ledger.
async fn parts_per_task(env: &TestEnv, job: Uuid) -> BTreeMap<String, usize> {
    let client = env.pool.get().await.expect("connection");
    let mut out: BTreeMap<String, usize> = client
        .query(
            "SELECT task_id FROM sluice.tasks WHERE job_id = $1",
            &[&job],
        )
        .await
        .expect("tasks")
        .into_iter()
        .map(|r| (r.get::<_, String>(0), 0))
        .collect();
    for row in client
        .query(
            "SELECT task_id, count(*) FROM sluice.batches WHERE job_id = $1 GROUP BY task_id",
            &[&job],
        )
        .await
        .expect("parts")
    {
        out.insert(row.get(0), row.get::<_, i64>(1) as usize);
    }
    out
}

/// Runs `sluicectl sync …` exporting to the receiver; returns the job id it printed.
async fn sluicectl_sync(env: &TestEnv, receiver: &Receiver, args: &[&str]) -> Uuid {
    let endpoint = receiver.endpoint();
    let output = env
        .sluicectl_in(
            &sluice_e2e::repo_root(),
            &[("SLUICE__TELEMETRY__OTLP_ENDPOINT", endpoint.as_str())],
            args,
        )
        .await
        .expect("sluicectl runs");
    assert!(
        output.status.success(),
        "sluicectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("sluicectl prints the job id")
}

/// What every job's trace has, whatever its connector. Returns the spans by id.
fn assert_job_trace(
    job: Uuid,
    spans: &[Captured],
    parts: &BTreeMap<String, usize>,
    prefix: &str,
) -> HashMap<String, Captured> {
    let by_id: HashMap<String, Captured> = spans
        .iter()
        .map(|s| (s.span_id.clone(), s.clone()))
        .collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    let named = |name: &'static str| spans.iter().filter(move |s| s.name == name);
    let parent_name = |s: &Captured| {
        s.parent
            .as_ref()
            .and_then(|p| by_id.get(p))
            .map(|p| p.name.as_str())
    };
    let job_id = job.to_string();

    // Every span that names a job names this one: one trace per job, and it is the job's.
    for s in spans {
        if let Some(j) = s.attr("job_id") {
            assert_eq!(j, job_id, "{s:?}");
        }
    }

    // The root: sluicectl's request, exported by the sluicectl process.
    let roots: Vec<&Captured> = spans.iter().filter(|s| s.parent.is_none()).collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    let root = roots[0];
    assert_eq!(root.name, "job.request");
    assert_eq!(root.service, "sluicectl");
    assert_eq!(root.attr("sluice.trigger"), Some("sluicectl"));

    // The planner continues the trace from the JobRequest's headers.
    let plans: Vec<&Captured> = named("plan").collect();
    assert_eq!(plans.len(), 1);
    let plan = plans[0];
    assert_eq!(plan.parent.as_deref(), Some(root.span_id.as_str()));
    assert_eq!(plan.attr("code.module.name"), Some("sluice_planner"));
    let planned = named("fetch")
        .filter(|f| f.parent.as_deref() == Some(plan.span_id.as_str()))
        .count();
    assert_eq!(
        plan.attr("tasks"),
        Some(planned.to_string().as_str()),
        "{plan:?}"
    );
    assert_messaging(plan, prefix, "jobs");

    // One fetch per task, each a child of the plan or of the fetch that found it.
    let fetches: Vec<&Captured> = named("fetch").collect();
    assert_eq!(fetches.len(), parts.len(), "one fetch span per task");
    for fetch in &fetches {
        assert!(
            matches!(parent_name(fetch), Some("plan" | "fetch")),
            "{fetch:?}"
        );
        assert_eq!(fetch.attr("code.module.name"), Some("sluice_fetcher"));
        assert_messaging(fetch, prefix, "fetch");
        // Each task: as many load spans under its fetch as it had parts, each a child.
        let task = fetch.attr("task_id").expect("task_id");
        let want = parts[task];
        let loads: Vec<&Captured> = named("load")
            .filter(|l| l.parent.as_deref() == Some(fetch.span_id.as_str()))
            .collect();
        assert_eq!(loads.len(), want, "load spans of task {task}");
        assert_eq!(
            fetch.attr("parts"),
            Some(want.to_string().as_str()),
            "{fetch:?}"
        );
        for load in loads {
            assert_eq!(load.attr("task_id"), Some(task));
            assert_eq!(load.attr("code.module.name"), Some("sluice_loader"));
            assert_messaging(load, prefix, "load");
        }
    }
    assert_eq!(
        named("load").count(),
        parts.values().sum::<usize>(),
        "one load span per part"
    );

    // The end: one completion, under the load that settled the last task.
    let completes: Vec<&Captured> = named("job.complete").collect();
    assert_eq!(completes.len(), 1);
    assert_eq!(completes[0].attr("state"), Some("succeeded"));
    assert_eq!(parent_name(completes[0]), Some("load"));
    by_id
}

fn assert_messaging(span: &Captured, prefix: &str, routing_key: &str) {
    assert_eq!(span.attr("messaging.system"), Some("rabbitmq"), "{span:?}");
    assert_eq!(
        span.attr("messaging.destination.name"),
        Some(prefix),
        "{span:?}"
    );
    assert_eq!(
        span.attr("messaging.rabbitmq.destination.routing_key"),
        Some(routing_key),
        "{span:?}"
    );
    assert_eq!(span.attr("messaging.operation.type"), Some("process"));
    assert_eq!(span.attr("messaging.operation"), Some("process"));
}

/// The span tree under `root` as text: name, service, the attributes that tell what it
/// was, and its duration.
fn render(spans: &[Captured], root: &Captured) -> String {
    fn walk(spans: &[Captured], span: &Captured, depth: usize, parent: &str, out: &mut String) {
        const SHOWN: [&str; 13] = [
            "connector",
            "stream",
            "tasks",
            "task_id",
            "parts",
            "part",
            "table",
            "rows",
            "state",
            "http.response.status_code",
            "http.request.resend_count",
            "messaging.rabbitmq.destination.routing_key",
            "sluice.trigger",
        ];
        // The services of this test share one process (one service.name): the crate that
        // opened a span says which service it was; a shared crate's span (an HTTP request)
        // is its parent's service's.
        let service = match span.attr("code.module.name") {
            Some(module) if span.service == "sluice-e2e" => {
                match module.split("::").next().unwrap_or(module) {
                    service @ ("sluice_planner" | "sluice_fetcher" | "sluice_loader") => {
                        service.replace('_', "-")
                    }
                    _ => parent.to_string(),
                }
            }
            _ => span.service.clone(),
        };
        let attrs: Vec<String> = SHOWN
            .iter()
            .filter_map(|k| {
                let shown = k
                    .strip_prefix("messaging.rabbitmq.destination.")
                    .unwrap_or(k);
                span.attr(k).map(|v| format!("{shown}={v}"))
            })
            .collect();
        let ms = span.end_ns.saturating_sub(span.start_ns) as f64 / 1e6;
        out.push_str(&format!(
            "{}{} [{service}] {ms:.1} ms  {}\n",
            "  ".repeat(depth),
            span.name,
            attrs.join(" ")
        ));
        let mut children: Vec<&Captured> = spans
            .iter()
            .filter(|s| s.parent.as_deref() == Some(span.span_id.as_str()))
            .collect();
        children.sort_by_key(|s| s.start_ns);
        for child in children {
            walk(spans, child, depth + 1, &service, out);
        }
    }
    let mut out = format!("trace {}\n", root.trace_id);
    walk(spans, root, 0, &root.service, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sailthru_and_a_klaviyo_job_are_each_one_trace_across_the_services() {
    let receiver = receiver();
    let mut env = TestEnv::new().await.expect("test environment");
    let spec = KlaviyoDataSpec {
        seed: 14,
        profiles: 200,
        start: utc(2024, 1, 1),
        end: utc(2024, 1, 8),
        events_per_metric: 600,
        ..KlaviyoDataSpec::default()
    };
    let sandbox = env
        .start_klaviyo_sandbox(KlaviyoConfig {
            data: spec.clone(),
            rate_limit_scale: None,
            ..KlaviyoConfig::default()
        })
        .await
        .expect("sandbox");
    env.start_pipeline(2);
    let prefix = env.settings.amqp.prefix.clone();

    // Sailthru: an export generated by the sandbox, read over HTTP in pages of 10 lines.
    let (export, _, _) = env
        .generated_sailthru_export(
            14,
            20,
            chrono::NaiveDate::from_ymd_opt(2024, 1, 2).expect("date"),
        )
        .await
        .expect("export");
    let sailthru = sluicectl_sync(
        &env,
        receiver,
        &["sync", "sailthru", "--export", &export, "--page-size", "10"],
    )
    .await;
    let report = env
        .wait_job(sailthru, WAIT)
        .await
        .expect("sailthru job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    let parts = parts_per_task(&env, sailthru).await;
    let spans = receiver
        .complete_trace(sailthru, parts.values().sum())
        .await;
    let by_id = assert_job_trace(sailthru, &spans, &parts, &prefix);
    // The export is read over HTTP: a client span per request of the planner (listing the
    // archive's members) and of every task (its member's bytes), each answered.
    for span in spans
        .iter()
        .filter(|s| matches!(s.name.as_str(), "plan" | "fetch"))
    {
        let reads: Vec<&Captured> = spans
            .iter()
            .filter(|r| r.parent.as_deref() == Some(span.span_id.as_str()))
            .filter(|r| r.attr("http.request.method").is_some())
            .collect();
        assert!(!reads.is_empty(), "{span:?} read the export");
        for read in reads {
            assert_eq!(read.attr("url.template"), Some("/{object}"), "{read:?}");
            let status = read.attr("http.response.status_code").unwrap_or_default();
            assert!(status.starts_with('2'), "{read:?}");
        }
    }
    let root = by_id.values().find(|s| s.parent.is_none()).expect("root");
    println!("{}", render(&spans, root));

    // Klaviyo: one metric's events over a week from the emulation, in pages of 100.
    let klaviyo = sluicectl_sync(
        &env,
        receiver,
        &[
            "sync",
            "klaviyo",
            "events",
            "--since",
            &spec.start.to_rfc3339(),
            "--until",
            &spec.end.to_rfc3339(),
            "--metric",
            "Placed Order",
            "--page-size",
            "100",
        ],
    )
    .await;
    let report = env.wait_job(klaviyo, WAIT).await.expect("klaviyo job ends");
    assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    let parts = parts_per_task(&env, klaviyo).await;
    let spans = receiver.complete_trace(klaviyo, parts.values().sum()).await;
    let by_id = assert_job_trace(klaviyo, &spans, &parts, &prefix);

    // One client span per request the emulation answered, each under the plan (the
    // metrics lookup) or a fetch, with its route template and status.
    let requests: Vec<&Captured> = spans
        .iter()
        .filter(|s| s.attr("http.request.method").is_some())
        .collect();
    let stats = klaviyo_stats(&sandbox).await.expect("stats");
    assert_eq!(
        requests.len() as u64,
        stats["total"]["total"].as_u64().expect("request count"),
        "one span per request: {stats}"
    );
    for request in &requests {
        let parent = request
            .parent
            .as_ref()
            .and_then(|p| by_id.get(p))
            .map(|p| p.name.as_str());
        let route = request.attr("url.template").expect("url.template");
        match parent {
            Some("plan") => assert_eq!(route, "/api/metrics"),
            Some("fetch") => assert_eq!(route, "/api/events"),
            other => panic!("request span under {other:?}: {request:?}"),
        }
        assert_eq!(request.name, format!("GET {route}"));
        assert_eq!(request.attr("http.request.method"), Some("GET"));
        assert_eq!(request.attr("http.response.status_code"), Some("200"));
    }
    let root = by_id.values().find(|s| s.parent.is_none()).expect("root");
    println!("{}", render(&spans, root));
    // Every task fetched at least one page.
    for fetch in spans.iter().filter(|s| s.name == "fetch") {
        assert!(
            requests
                .iter()
                .any(|r| r.parent.as_deref() == Some(fetch.span_id.as_str())),
            "{fetch:?}"
        );
    }
    env.teardown().await.expect("teardown");
}
