//! Catalog streams `catalog_categories` and `catalog_items`: reading Klaviyo's catalogue
//! so that a Klaviyo destination deletes it (the plugin's `deleteAll`, see
//! `docs/klaviyo-sync.md` "Delete-all").
//!
//! With `params.delete_all = true` (the only mode so far) one task pages
//! `GET /api/catalog-categories` or `GET /api/catalog-items` (`page[size]=100`, following
//! `links.next`), and for each item `GET /api/catalog-items/{id}/variants`, and emits
//! `op = "delete"` rows of `klaviyo.catalog-category`, or of `klaviyo.catalog-variant`
//! (with `item_id`) and `klaviyo.catalog-item`, with null attributes. The whole catalogue
//! is read before any row is handed over: deleting while paging could move a cursor past
//! objects not yet read.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_contracts::{FetchTask, PageRef, RejectedRecord, TaskKind};
use url::Url;

use super::client::Client;
use super::limiter::Tier;
use crate::commercetools::klaviyo::{CATALOG_CATEGORY, CATALOG_ITEM, CATALOG_VARIANT, DELETE};
use crate::framework::parse_params;
use crate::{
    ConnectorError, FetchOutput, JobSpec, ParamKind, ParamSpec, Plan, PlannedTask, StreamSpec,
};

/// The categories stream.
pub const CATEGORIES: &str = "catalog_categories";
/// The items (and variants) stream.
pub const ITEMS: &str = "catalog_items";

/// `page[size]` of the catalog endpoints (their maximum).
const PAGE_SIZE: u32 = 100;

/// More pages than this in one listing means the next links loop.
const MAX_PAGES: u32 = 100_000;

/// Whether `stream` is one of this module's.
pub fn is_catalog(stream: &str) -> bool {
    stream == CATEGORIES || stream == ITEMS
}

/// The streams' declarations.
pub fn streams() -> Vec<StreamSpec> {
    let delete_all = ParamSpec::optional(
        "delete_all",
        ParamKind::Flag,
        "read the whole catalogue as delete rows (required: the only mode so far)",
    );
    vec![
        StreamSpec {
            name: CATEGORIES,
            help: "Catalog categories, as deletes (GET /api/catalog-categories)",
            params: vec![delete_all.clone()],
            incremental: false,
            tables: vec![&CATALOG_CATEGORY],
        },
        StreamSpec {
            name: ITEMS,
            help: "Catalog items and their variants, as deletes (GET /api/catalog-items, /api/catalog-items/{id}/variants)",
            params: vec![delete_all],
            incremental: false,
            tables: vec![&CATALOG_VARIANT, &CATALOG_ITEM],
        },
    ]
}

/// A job's parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Emit every object as a delete.
    #[serde(default)]
    pub delete_all: bool,
}

/// Checks a job of a catalog stream: known parameters, and `delete_all` set.
///
/// # Errors
/// [`ConnectorError::InvalidParams`] naming what is wrong.
pub fn check(job: &JobSpec) -> Result<Params, ConnectorError> {
    let spec = streams()
        .into_iter()
        .find(|s| s.name == job.stream)
        .ok_or_else(|| ConnectorError::InvalidParams(format!("unknown stream {}", job.stream)))?;
    let params: Params = parse_params("klaviyo", &spec, &job.params)?;
    if !params.delete_all {
        return Err(ConnectorError::InvalidParams(format!(
            "klaviyo stream {} only reads the catalogue to delete it: set delete_all (sluicectl klaviyo delete-all)",
            job.stream
        )));
    }
    Ok(params)
}

/// One task reading the whole catalogue of the job's stream.
///
/// # Errors
/// As [`check`].
pub fn plan(job: &JobSpec) -> Result<Plan, ConnectorError> {
    let params = check(job)?;
    Ok(Plan {
        tasks: vec![PlannedTask::new(
            job.stream.clone(),
            TaskKind::Page(PageRef::default()),
        )],
        params: serde_json::to_value(&params)
            .map_err(|e| ConnectorError::Permanent(anyhow::anyhow!("serialising params: {e}")))?,
        warnings: Vec::new(),
        rejected: Vec::new(),
    })
}

/// `/api/catalog-items/{id}/variants?page[size]=100`, the id percent-encoded as a path
/// segment.
fn variants_path(item_id: &str) -> String {
    let mut url = Url::parse("http://base.invalid").unwrap_or_else(|_| unreachable!());
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.extend(["api", "catalog-items", item_id, "variants"]);
    }
    Client::relative(url.path(), &[("page[size]", PAGE_SIZE.to_string())])
}

/// Every resource of a listing starting at `first`: `(id, resource)`; resources without
/// a string id are rejected into `rejected`.
async fn list(
    client: &Client,
    first: String,
    table: &str,
    task: &FetchTask,
    rejected: &mut Vec<RejectedRecord>,
) -> Result<Vec<String>, ConnectorError> {
    let mut ids = Vec::new();
    let mut rel = Some(first);
    let mut pages = 0u32;
    while let Some(r) = rel.take() {
        let page = client.get(Tier::Xl, &r).await?;
        pages += 1;
        for resource in &page.data {
            match resource["id"].as_str().filter(|id| !id.is_empty()) {
                Some(id) => ids.push(id.to_string()),
                None => rejected.push(RejectedRecord {
                    source: format!("klaviyo task {} page {pages}", task.task_id),
                    table: Some(table.to_string()),
                    error: "a catalog object without a string id cannot be deleted".into(),
                    raw: resource.clone(),
                }),
            }
        }
        rel = page.next.as_deref().and_then(|n| client.relative_next(n));
        if pages >= MAX_PAGES && rel.is_some() {
            return Err(ConnectorError::Permanent(anyhow::anyhow!(
                "{}: more than {MAX_PAGES} pages; the next links loop",
                r.split('?').next().unwrap_or(&r)
            )));
        }
    }
    Ok(ids)
}

/// Runs a catalog task: the whole catalogue of its stream as delete rows.
///
/// # Errors
/// A task without `delete_all`, or the client's errors.
pub async fn fetch(client: &Client, task: &FetchTask) -> Result<FetchOutput, ConnectorError> {
    let params: Params = serde_json::from_value(task.params.clone()).map_err(|e| {
        ConnectorError::Permanent(anyhow::anyhow!(
            "klaviyo task {} carries unreadable params: {e}",
            task.task_id
        ))
    })?;
    if !params.delete_all {
        return Err(ConnectorError::Permanent(anyhow::anyhow!(
            "klaviyo task {} of stream {} has no delete_all: nothing else is supported",
            task.task_id,
            task.stream
        )));
    }
    let mut output = FetchOutput::default();
    let first = |path: &str| Client::relative(path, &[("page[size]", PAGE_SIZE.to_string())]);
    if task.stream == CATEGORIES {
        let ids = list(
            client,
            first("/api/catalog-categories"),
            CATALOG_CATEGORY.name,
            task,
            &mut output.rejected,
        )
        .await?;
        let rows = ids
            .into_iter()
            .map(|id| vec![json!(id), json!(DELETE), Value::Null])
            .collect();
        output.tables.push(CATALOG_CATEGORY.table_rows(rows));
        return Ok(output);
    }
    let items = list(
        client,
        first("/api/catalog-items"),
        CATALOG_ITEM.name,
        task,
        &mut output.rejected,
    )
    .await?;
    let mut variant_rows = Vec::new();
    for item in &items {
        let variants = list(
            client,
            variants_path(item),
            CATALOG_VARIANT.name,
            task,
            &mut output.rejected,
        )
        .await?;
        variant_rows.extend(variants.into_iter().map(|id| {
            vec![
                json!(id),
                json!(DELETE),
                json!(item),
                Value::Null,
                Value::Null,
            ]
        }));
    }
    // Explicit deletes: no collection replacement of the items' variants.
    let mut variants = CATALOG_VARIANT.table_rows(variant_rows);
    variants.merge.replace_scope = None;
    let item_rows = items
        .into_iter()
        .map(|id| vec![json!(id), json!(DELETE), Value::Null, Value::Null])
        .collect();
    // Variants first: a destination applying parts in order removes children before
    // their item.
    output.tables.push(variants);
    output.tables.push(CATALOG_ITEM.table_rows(item_rows));
    Ok(output)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use secrecy::SecretString;
    use sluice_contracts::{Mode, Settings};
    use uuid::Uuid;
    use wiremock::matchers::{method, path, query_param, query_param_is_missing};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::super::settings::{KlaviyoAccount, KlaviyoSettings};
    use super::*;
    use crate::{Connector, ConnectorContext};

    fn connector(base: &str) -> super::super::KlaviyoConnector {
        let mut s: KlaviyoSettings = crate::framework::settings_section(
            &Settings::defaults(),
            "klaviyo",
            super::super::settings::DEFAULTS,
        )
        .unwrap();
        s.accounts = BTreeMap::from([(
            "default".to_string(),
            KlaviyoAccount {
                api_key: Some(SecretString::from("pk_test_catalog")),
                base_url: base.to_string(),
            },
        )]);
        s.request_timeout_seconds = 5;
        super::super::build(&s, &ConnectorContext::default())
    }

    fn job(stream: &str, params: Value) -> JobSpec {
        JobSpec {
            job_id: Uuid::nil(),
            stream: stream.into(),
            account: "default".into(),
            params,
            mode: Mode::Full,
            bookmark: None,
        }
    }

    fn task(stream: &str, params: Value) -> FetchTask {
        FetchTask {
            v: 1,
            task_id: "t1".into(),
            job_id: Uuid::nil(),
            connector: "klaviyo".into(),
            stream: stream.into(),
            account: "default".into(),
            kind: TaskKind::Page(PageRef::default()),
            attempt: 1,
            params,
            once: None,
        }
    }

    fn page(kind: &str, ids: &[&str], next: Option<String>) -> ResponseTemplate {
        let data: Vec<Value> = ids
            .iter()
            .map(|id| json!({"type": kind, "id": id, "attributes": {"external_id": id}}))
            .collect();
        let mut links = json!({"self": "x"});
        if let Some(n) = next {
            links["next"] = json!(n);
        }
        ResponseTemplate::new(200).set_body_json(json!({"data": data, "links": links}))
    }

    #[tokio::test]
    async fn delete_all_categories_pages_every_category_into_delete_rows() {
        let server = MockServer::start().await;
        let base = server.uri();
        Mock::given(method("GET"))
            .and(path("/api/catalog-categories"))
            .and(query_param("page[size]", "100"))
            .and(query_param_is_missing("page[cursor]"))
            .respond_with(page(
                "catalog-category",
                &["$custom:::$default:::c1", "$custom:::$default:::c2"],
                Some(format!(
                    "{base}/api/catalog-categories?page%5Bsize%5D=100&page%5Bcursor%5D=abc"
                )),
            ))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/catalog-categories"))
            .and(query_param("page[cursor]", "abc"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "data": [{"type": "catalog-category", "id": "$custom:::$default:::c3"},
                         {"type": "catalog-category", "attributes": {}}],
                "links": {"self": "x"}
            })))
            .expect(1)
            .mount(&server)
            .await;
        let c = connector(&base);
        let plan = c
            .plan(&job(CATEGORIES, json!({"delete_all": true})))
            .await
            .unwrap();
        assert_eq!(plan.tasks.len(), 1);
        let out = c.fetch(&task(CATEGORIES, plan.params)).await.unwrap();
        assert_eq!(out.tables.len(), 1);
        let t = &out.tables[0];
        assert_eq!(t.table, "klaviyo.catalog-category");
        assert_eq!(t.columns, vec!["id", "op", "attributes"]);
        assert_eq!(
            t.rows,
            vec![
                vec![
                    json!("$custom:::$default:::c1"),
                    json!("delete"),
                    Value::Null
                ],
                vec![
                    json!("$custom:::$default:::c2"),
                    json!("delete"),
                    Value::Null
                ],
                vec![
                    json!("$custom:::$default:::c3"),
                    json!("delete"),
                    Value::Null
                ],
            ]
        );
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(
            out.rejected[0].table.as_deref(),
            Some("klaviyo.catalog-category")
        );
    }

    #[tokio::test]
    async fn delete_all_items_deletes_each_items_variants_and_the_items() {
        let server = MockServer::start().await;
        let base = server.uri();
        Mock::given(method("GET"))
            .and(path("/api/catalog-items"))
            .and(query_param("page[size]", "100"))
            .respond_with(page(
                "catalog-item",
                &["$custom:::$default:::p1", "$custom:::$default:::p 2"],
                None,
            ))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/catalog-items/$custom:::$default:::p1/variants"))
            .and(query_param_is_missing("page[cursor]"))
            .respond_with(page(
                "catalog-variant",
                &["$custom:::$default:::A"],
                Some(
                    "/api/catalog-items/$custom:::$default:::p1/variants?page%5Bcursor%5D=n2"
                        .into(),
                ),
            ))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/catalog-items/$custom:::$default:::p1/variants"))
            .and(query_param("page[cursor]", "n2"))
            .respond_with(page("catalog-variant", &["$custom:::$default:::B"], None))
            .expect(1)
            .mount(&server)
            .await;
        // The space of an id is percent-encoded in its path segment.
        Mock::given(method("GET"))
            .and(path(
                "/api/catalog-items/$custom:::$default:::p%202/variants",
            ))
            .respond_with(page("catalog-variant", &[], None))
            .expect(1)
            .mount(&server)
            .await;
        let c = connector(&base);
        let out = c
            .fetch(&task(ITEMS, json!({"delete_all": true})))
            .await
            .unwrap();
        let names: Vec<&str> = out.tables.iter().map(|t| t.table.as_str()).collect();
        assert_eq!(
            names,
            vec!["klaviyo.catalog-variant", "klaviyo.catalog-item"]
        );
        let variants = &out.tables[0];
        assert_eq!(
            variants.columns,
            vec!["id", "op", "item_id", "attributes", "relationships"]
        );
        assert_eq!(
            variants.rows,
            vec![
                vec![
                    json!("$custom:::$default:::A"),
                    json!("delete"),
                    json!("$custom:::$default:::p1"),
                    Value::Null,
                    Value::Null
                ],
                vec![
                    json!("$custom:::$default:::B"),
                    json!("delete"),
                    json!("$custom:::$default:::p1"),
                    Value::Null,
                    Value::Null
                ],
            ]
        );
        assert_eq!(variants.merge.replace_scope, None);
        assert_eq!(
            out.tables[1].rows,
            vec![
                vec![
                    json!("$custom:::$default:::p1"),
                    json!("delete"),
                    Value::Null,
                    Value::Null
                ],
                vec![
                    json!("$custom:::$default:::p 2"),
                    json!("delete"),
                    Value::Null,
                    Value::Null
                ],
            ]
        );
        assert!(out.rejected.is_empty());
    }

    #[tokio::test]
    async fn a_catalog_job_without_delete_all_is_refused() {
        let c = connector("http://127.0.0.1:9");
        for params in [json!({}), json!({"delete_all": false})] {
            match c.validate(&job(ITEMS, params)) {
                Err(ConnectorError::InvalidParams(m)) => assert!(m.contains("delete_all"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            c.validate(&job(
                CATEGORIES,
                json!({"delete_all": true, "since": "2024-01-01"})
            )),
            Err(ConnectorError::InvalidParams(_))
        ));
        assert!(c.streams().iter().any(|s| s.name == ITEMS));
    }
}
