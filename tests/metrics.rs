//! The services' `/metrics` after a small real job through the real services (planner,
//! fetcher and loader as separate processes, each with its own admin port and recorder):
//! `promtool check metrics` finds nothing to say about any of them, every series is one of
//! the catalog's (`sluice_contracts::telemetry`, documented in `docs/operations.md`) with
//! exactly its labels and no id, URL or prefix in a label value, and the counters agree with
//! what landed.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use sluice_contracts::telemetry::{Kind, find};
use sluice_e2e::{TestEnv, init_logging, sailthru_sample};
use sluice_sandbox::commercetools::{CommercetoolsConfig, CommercetoolsDataSpec};

const WAIT: Duration = Duration::from_secs(180);

/// One sample of the exposition format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (enough of it for what the exporter writes: no
/// timestamps, label values without escaped quotes).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels end with }");
                    let labels = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}

/// The catalog name of a series (histogram series carry `_bucket`, `_sum`, `_count`).
fn family(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && find(base).is_some_and(|m| m.kind == Kind::Histogram)
        {
            return base;
        }
    }
    name
}

/// The sum of the samples named `name` whose labels include every pair of `want`.
fn total(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Fails with a clear message when promtool is missing, instead of passing unchecked.
fn promtool_version() -> String {
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => panic!(
            "promtool is not installed, so the metrics cannot be checked: install the Debian \
             package `prometheus` (`apt-get install prometheus`; .ci/run does it when missing)"
        ),
    }
}

/// `promtool check metrics` on `text`: its complaints (empty when there are none).
fn promtool_check(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        String::new()
    } else {
        format!("exit {:?}: {said}", out.status.code())
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn scrape(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match reqwest::get(&url).await {
            Ok(r) if r.status().is_success() => return r.text().await.expect("body"),
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{url} did not answer: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_exports_prometheus_conventional_metrics_that_match_the_load() {
    init_logging();
    let promtool = promtool_version();
    let mut env = TestEnv::new().await.expect("test environment");
    let orders = 300;
    env.start_commercetools_sandbox(CommercetoolsConfig {
        data: CommercetoolsDataSpec {
            seed: 3,
            customers: 50,
            orders,
            categories: 5,
            products: 20,
            ..CommercetoolsDataSpec::default()
        },
        ..CommercetoolsConfig::default()
    })
    .await
    .expect("sandbox");

    let ports: Vec<(&str, u16)> = ["planner", "fetcher", "loader"]
        .into_iter()
        .map(|s| (s, free_port()))
        .collect();
    for (service, port) in &ports {
        let bind = format!("127.0.0.1:{port}");
        let key = format!("SLUICE__{}__ADMIN_BIND", service.to_uppercase());
        env.spawn(service, &[(key.as_str(), bind.as_str())])
            .expect("spawn service");
    }

    let sailthru = env
        .sync_sailthru(sailthru_sample().to_str().expect("utf-8"), None)
        .await
        .expect("sailthru job");
    let commercetools = env
        .request_job("commercetools", "orders", json!({}))
        .await
        .expect("commercetools job");
    for job in [sailthru, commercetools] {
        let report = env.wait_job(job, WAIT).await.expect("job ends");
        assert_eq!(report.summary.state, "succeeded", "{report:#?}");
    }
    let loaded_orders = env.count("commercetools.orders").await.expect("count");
    assert_eq!(loaded_orders, orders as i64);
    let blasts = env.count("sailthru.blast").await.expect("count");
    assert!(blasts > 0);
    // The planner samples the queues every 5 seconds; give it one round after the jobs.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let mut scraped = BTreeMap::new();
    for (service, port) in &ports {
        let text = scrape(*port).await;
        let complaints = promtool_check(&text);
        assert!(
            complaints.is_empty(),
            "{promtool}: `promtool check metrics` on the {service}'s /metrics: {complaints}\n{text}"
        );
        let samples = parse(&text);
        for s in &samples {
            let base = family(&s.name);
            let metric = find(base).unwrap_or_else(|| {
                panic!(
                    "{service} exports {} which the catalog (docs/operations.md) does not list",
                    s.name
                )
            });
            let mut want: Vec<&str> = metric.labels.to_vec();
            if s.name.ends_with("_bucket") {
                want.push("le");
            }
            want.sort_unstable();
            let got: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            assert_eq!(got, want, "{service}: labels of {}", s.name);
            for value in s.labels.values() {
                assert!(
                    !value.contains("://")
                        && !value.contains(&env.id)
                        && uuid::Uuid::parse_str(value).is_err()
                        && value.len() <= 64,
                    "{service}: {} has a label value that is an id, URL or prefix: {value:?}",
                    s.name
                );
            }
        }
        assert_eq!(
            total(&samples, "sluice_build_info", &[("service", service)]),
            1.0,
            "{service}"
        );
        scraped.insert(*service, samples);
    }

    let planner = &scraped["planner"];
    for connector in ["sailthru", "commercetools"] {
        assert_eq!(
            total(
                planner,
                "sluice_planner_jobs_total",
                &[("connector", connector), ("outcome", "planned")]
            ),
            1.0,
            "{connector}"
        );
    }
    // After both jobs every queue is empty, and the fetch queue has its one fetcher.
    assert_eq!(
        total(planner, "sluice_queue_messages", &[("queue", "fetch")]),
        0.0
    );
    assert_eq!(
        total(planner, "sluice_queue_consumers", &[("queue", "fetch")]),
        1.0
    );
    assert!(
        total(
            planner,
            "sluice_messages_consumed_total",
            &[("queue", "jobs"), ("outcome", "acked")]
        ) >= 2.0
    );

    let fetcher = &scraped["fetcher"];
    let fetched_orders = total(
        fetcher,
        "sluice_fetcher_records_total",
        &[
            ("connector", "commercetools"),
            ("stream", "orders"),
            ("table", "commercetools.orders"),
        ],
    );
    assert_eq!(fetched_orders, orders as f64, "orders fetched");
    assert!(
        total(
            fetcher,
            "sluice_fetcher_records_total",
            &[("connector", "sailthru"), ("table", "sailthru.blast")]
        ) >= blasts as f64
    );
    assert!(
        total(
            fetcher,
            "sluice_http_requests_total",
            &[("api", "commercetools"), ("status_class", "2xx")]
        ) >= 1.0
    );
    assert!(
        total(
            fetcher,
            "sluice_http_requests_total",
            &[("api", "commercetools_auth"), ("status_class", "2xx")]
        ) >= 1.0
    );
    assert_eq!(
        total(
            fetcher,
            "sluice_http_request_duration_seconds_count",
            &[("api", "commercetools")]
        ),
        total(
            fetcher,
            "sluice_http_requests_total",
            &[("api", "commercetools")]
        ),
        "every request is timed once"
    );
    let done = total(
        fetcher,
        "sluice_fetcher_tasks_total",
        &[("connector", "commercetools"), ("outcome", "done")],
    );
    assert!(done >= 1.0);
    assert_eq!(
        total(fetcher, "sluice_fetcher_task_duration_seconds_count", &[]),
        total(fetcher, "sluice_fetcher_tasks_total", &[])
    );
    assert_eq!(
        total(
            fetcher,
            "sluice_queue_wait_seconds_count",
            &[("queue", "fetch")]
        ),
        total(
            fetcher,
            "sluice_messages_consumed_total",
            &[("queue", "fetch")]
        ),
        "every fetch task delivered is measured and settled once"
    );

    let loader = &scraped["loader"];
    let loaded = total(
        loader,
        "sluice_loader_records_total",
        &[
            ("connector", "commercetools"),
            ("stream", "orders"),
            ("table", "commercetools.orders"),
            ("destination", "postgres"),
        ],
    );
    assert_eq!(loaded, loaded_orders as f64, "orders loaded");
    assert_eq!(
        total(
            loader,
            "sluice_loader_records_total",
            &[("table", "sailthru.blast")]
        ),
        blasts as f64
    );
    for (connector, stream) in [("sailthru", "export"), ("commercetools", "orders")] {
        assert_eq!(
            total(
                loader,
                "sluice_job_duration_seconds_count",
                &[
                    ("connector", connector),
                    ("stream", stream),
                    ("outcome", "succeeded")
                ]
            ),
            1.0,
            "{connector} {stream}"
        );
    }
    assert!(
        total(
            loader,
            "sluice_loader_transaction_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert!(
        total(
            loader,
            "sluice_messages_consumed_total",
            &[("queue", "load"), ("outcome", "acked")]
        ) >= total(
            loader,
            "sluice_loader_parts_total",
            &[("outcome", "loaded")]
        )
    );

    env.teardown().await.expect("teardown");
}
