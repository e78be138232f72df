//! A test connector whose one task crashes the fetcher process while a marker file exists:
//! the "poison task" of the reliability tests. Three page tasks (offsets 0, 1, 2) each load
//! one `sailthru.blast` row with `id` = offset; the task at offset 1 calls
//! `std::process::abort()` (no unwinding, no ack: a real crash) while the file named by the
//! job's `poison_file` parameter exists.

use async_trait::async_trait;
use serde_json::json;
use sluice_connectors::{
    Connector, ConnectorError, FetchOutput, JobSpec, ParamKind, ParamSpec, Plan, PlannedTask,
    StreamSpec, TableRows,
};
use sluice_contracts::{FetchTask, MergeSpec, PageRef, TaskKind};

/// The connector; name `poison`.
pub struct PoisonConnector;

#[async_trait]
impl Connector for PoisonConnector {
    fn name(&self) -> &'static str {
        "poison"
    }

    fn streams(&self) -> Vec<StreamSpec> {
        vec![StreamSpec {
            name: "poison",
            help: "three one-row page tasks; the second crashes its fetcher while poison_file exists",
            params: vec![ParamSpec::required(
                "poison_file",
                ParamKind::Text,
                "the marker file whose existence makes the second task crash",
            )],
            incremental: false,
            tables: Vec::new(),
        }]
    }

    async fn plan(&self, job: &JobSpec) -> Result<Plan, ConnectorError> {
        if job
            .params
            .get("poison_file")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(ConnectorError::InvalidParams(
                "poison_file is required".into(),
            ));
        }
        Ok(Plan {
            tasks: (0..3)
                .map(|offset| PlannedTask {
                    stream: "poison".into(),
                    kind: TaskKind::Page(PageRef {
                        offset: Some(offset),
                        ..PageRef::default()
                    }),
                    once: None,
                })
                .collect(),
            params: job.params.clone(),
            ..Plan::default()
        })
    }

    async fn fetch(&self, task: &FetchTask) -> Result<FetchOutput, ConnectorError> {
        let TaskKind::Page(PageRef {
            offset: Some(offset),
            ..
        }) = &task.kind
        else {
            return Err(ConnectorError::Permanent(anyhow::anyhow!(
                "not a poison task"
            )));
        };
        let marker = task.params["poison_file"].as_str().unwrap_or_default();
        if *offset == 1 && std::path::Path::new(marker).exists() {
            eprintln!("poison task {}: crashing the fetcher", task.task_id);
            std::process::abort();
        }
        Ok(FetchOutput {
            tables: vec![TableRows {
                table: "sailthru.blast".into(),
                columns: ["id", "name", "day", "export_date"]
                    .map(String::from)
                    .to_vec(),
                rows: vec![sluice_connectors::cells(vec![
                    json!(offset),
                    json!(format!("poison test {offset}")),
                    json!("2024-01-01"),
                    json!("2024-01-01"),
                ])],
                merge: MergeSpec::default(),
            }],
            ..FetchOutput::default()
        })
    }
}
