//! What Drops Now (WDN): the sneaker catalogue API (`../shared/REFERENCE.md`, "What Drops
//! Now"; the original ETL: `../shared/seeds/wdn-etl.md`) — brands, their products, the
//! products' offers and the offers' retailers.
//!
//! One stream, `catalogue`, fanned out as child tasks:
//! 1. the planner makes one **brand search** task per brand name (`--brand`, default
//!    [`settings::DEFAULTS`]' five); it pages `GET /searches/brand_search?q=` until a brand
//!    is named exactly so (case-insensitive; the search also finds `Nike SB` for `nike`) —
//!    an unknown name fails the job naming it — and loads the brand;
//! 2. the brand's **products page** 1 (`GET /brands/{id}/products`) loads its products,
//!    hands pages 2..⌈total ÷ page_size⌉ to child tasks, and each product to an offers task;
//! 3. a product's **offers** (`GET /products/{id}/offers`, one product per request: the
//!    API offers nothing better; a 404 is "none") replace the product's stored offers and
//!    hand each retailer id to a retailer task;
//! 4. a **retailer** (`GET /retailers/{id}`; a 404 is "none") is loaded.
//!
//! Every child is once-per-resource (`sluice_contracts::Once`): keyed
//! `brands/{id}/products?page=P&page_size=N`, `products/{id}/offers`, `retailers/{id}`, so a
//! retailer named by many offers is fetched once per job whichever fetcher meets it, and a
//! resource fetched less than `fresh_seconds` ago (default a day) is not fetched again
//! unless the job is `--full` — its remembered children stand in for it, so a re-run after
//! a crash continues where the last one stopped, and an empty offer list is remembered
//! like any other.
//!
//! Every request holds one of `max_concurrency` permits shared by all fetcher replicas
//! ([`crate::ConnectorContext::acquire`], RabbitMQ tokens in the fetcher) and is retried on
//! 429/5xx with a backoff doubling from 1 s to 60 s ([`client`]). See `docs/wdn.md`.
//!
//! Tables (`migrations/V7__wdn.sql`, [`records`]): `wdn.brands`, `wdn.products`,
//! `wdn.offers` (replaced per product), `wdn.retailers`; the analysis view
//! `wdn.retailer_price_segments`.

pub mod client;
pub mod records;
pub mod settings;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_contracts::{FetchTask, MergeSpec, RejectedRecord};

use self::client::{Client, total_count};
use self::settings::WdnSettings;
use crate::framework::{Collector, parse_params, payload_kind, task_payload};
use crate::{
    Connector, ConnectorContext, ConnectorError, FetchOutput, JobSpec, ParamKind, ParamSpec, Plan,
    PlannedTask, SettingsError, StreamSpec,
};

/// The connector's one stream.
pub const STREAM: &str = "catalogue";

/// The streams the connector declares.
pub fn streams() -> Vec<StreamSpec> {
    vec![StreamSpec {
        name: STREAM,
        help: "Brands, their products, the products' offers and the offers' retailers (GET /searches/brand_search, /brands/{id}/products, /products/{id}/offers, /retailers/{id})",
        params: vec![
            ParamSpec::optional(
                "brands",
                ParamKind::List,
                "a brand to sync, named exactly (case-insensitive); repeatable; default: connectors.wdn.brands (Converse, Vans, Nike, Adidas, Jordan)",
            )
            .flag("brand"),
            ParamSpec::optional(
                "full",
                ParamKind::Flag,
                "fetch every resource again, also those fetched less than connectors.wdn.fresh_seconds ago",
            ),
        ],
        incremental: false,
        tables: vec![
            &records::BRANDS,
            &records::PRODUCTS,
            &records::OFFERS,
            &records::RETAILERS,
        ],
    }]
}

/// A job's parameters as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Brand names; absent or empty: the settings' brands.
    pub brands: Option<Vec<String>>,
    /// Fetch fresh resources too.
    pub full: Option<bool>,
}

/// A job's parameters as resolved (every task carries them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// The brands, trimmed, each once.
    pub brands: Vec<String>,
    /// How long a fetched resource stays fresh, seconds; `None` (`--full`): fetch all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_seconds: Option<u64>,
}

/// What one task fetches (its `TaskKind::Connector` payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Find the brand called `name` and load it.
    BrandSearch {
        /// The brand's name as the job gave it.
        name: String,
    },
    /// One page of a brand's products (page 1 also fans out the other pages).
    Products {
        /// The brand's id.
        brand_id: String,
        /// Page number, from 1.
        page: u64,
    },
    /// Every offer of one product.
    Offers {
        /// The product's id.
        product_id: String,
    },
    /// One retailer.
    Retailer {
        /// The retailer's id.
        retailer_id: String,
    },
}

/// The WDN connector.
pub struct WdnConnector {
    settings: WdnSettings,
    client: Client,
}

/// Builds the connector from its settings; requests take their permits from `ctx`.
///
/// # Errors
/// The HTTP client cannot be built.
pub fn build(
    settings: &WdnSettings,
    ctx: ConnectorContext,
) -> Result<WdnConnector, ConnectorError> {
    Ok(WdnConnector {
        client: Client::new(settings, ctx)?,
        settings: settings.clone(),
    })
}

/// The registry's builder: the `[connectors.wdn]` section over [`settings::DEFAULTS`].
///
/// # Errors
/// A setting that does not fit, naming the key.
pub fn connector(
    settings: &sluice_contracts::Settings,
    ctx: &ConnectorContext,
) -> Result<Arc<dyn Connector>, SettingsError> {
    let section: WdnSettings =
        crate::framework::settings_section(settings, "wdn", settings::DEFAULTS)?;
    let bad = |message: String| SettingsError {
        connector: "wdn",
        message,
    };
    if !(1..=2000).contains(&section.page_size) {
        return Err(bad(format!(
            "page_size must be from 1 to 2000, found {}",
            section.page_size
        )));
    }
    if section.max_concurrency == 0 {
        return Err(bad("max_concurrency must be at least 1".into()));
    }
    if !section.base_url.starts_with("http://") && !section.base_url.starts_with("https://") {
        return Err(bad(format!(
            "base_url must be an http(s) URL, found {:?}",
            section.base_url
        )));
    }
    build(&section, ctx.clone())
        .map(|c| Arc::new(c) as Arc<dyn Connector>)
        .map_err(|e| bad(e.to_string()))
}

fn permanent(message: String) -> ConnectorError {
    ConnectorError::Permanent(anyhow::anyhow!(message))
}

/// The `data` array of a list answer.
fn data<'v>(body: &'v Value, what: &str) -> Result<&'v Vec<Value>, ConnectorError> {
    body["data"].as_array().ok_or_else(|| {
        permanent(format!(
            "{what}: the answer has no data array: {}",
            crate::short(body)
        ))
    })
}

fn rejected(source: String, table: &str, error: String, raw: &Value) -> RejectedRecord {
    RejectedRecord {
        source,
        table: Some(table.to_string()),
        error,
        raw: raw.clone(),
    }
}

impl WdnConnector {
    fn paging(&self, page: u64) -> Vec<(&'static str, String)> {
        vec![
            ("page", page.to_string()),
            ("page_size", self.settings.page_size.to_string()),
        ]
    }

    /// Whether `page` (of `page_size`) is the last of `total` (the client rule of the
    /// reference: stop when page_size × current_page ≥ total_count).
    fn last_page(&self, page: u64, total: u64) -> bool {
        u64::from(self.settings.page_size) * page >= total
    }

    fn products_task(&self, brand_id: &str, page: u64, fresh: Option<u64>) -> PlannedTask {
        PlannedTask::new(
            STREAM,
            payload_kind(&Step::Products {
                brand_id: brand_id.to_string(),
                page,
            }),
        )
        .once(
            format!(
                "brands/{brand_id}/products?page={page}&page_size={}",
                self.settings.page_size
            ),
            fresh,
        )
    }

    async fn brand_search(
        &self,
        name: &str,
        fresh: Option<u64>,
    ) -> Result<FetchOutput, ConnectorError> {
        let wanted = name.trim();
        let mut seen: Vec<String> = Vec::new();
        let mut page = 1;
        let brand = loop {
            let mut query = vec![("q", wanted.to_string())];
            query.extend(self.paging(page));
            let body = self
                .client
                .get("/searches/brand_search", &query)
                .await?
                .ok_or_else(|| permanent(format!("brand search for {wanted:?}: HTTP 404")))?;
            let found = data(&body, &format!("brand search for {wanted:?}"))?;
            if let Some(b) = found.iter().find(|b| {
                b["attributes"]["name"]
                    .as_str()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(wanted))
            }) {
                break b.clone();
            }
            seen.extend(
                found
                    .iter()
                    .filter_map(|b| b["attributes"]["name"].as_str().map(str::to_string)),
            );
            if found.is_empty() || self.last_page(page, total_count(&body).unwrap_or(0)) {
                return Err(permanent(format!(
                    "unknown brand {wanted:?}: the brand search found no brand of exactly that name{}",
                    if seen.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (found: {})",
                            seen.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
                        )
                    }
                )));
            }
            page += 1;
        };
        let row =
            records::brand(&brand).map_err(|e| permanent(format!("brand {wanted:?}: {e}")))?;
        let brand_id = records::id_of(&brand["id"]).unwrap_or_default();
        let mut rows = Collector::new(&[&records::BRANDS]);
        rows.add_row(&records::BRANDS, row);
        Ok(FetchOutput {
            tables: rows.finish(),
            children: vec![self.products_task(&brand_id, 1, fresh)],
            ..FetchOutput::default()
        })
    }

    async fn products(
        &self,
        brand_id: &str,
        page: u64,
        fresh: Option<u64>,
    ) -> Result<FetchOutput, ConnectorError> {
        let body = self
            .client
            .get(&format!("/brands/{brand_id}/products"), &self.paging(page))
            .await?
            .ok_or_else(|| permanent(format!("brand {brand_id}: its products answer 404")))?;
        let list = data(&body, &format!("products of brand {brand_id} page {page}"))?;
        let mut output = FetchOutput::default();
        if page == 1 {
            let total = total_count(&body).unwrap_or(list.len() as u64);
            let mut next = 2;
            while !self.last_page(next - 1, total) {
                output
                    .children
                    .push(self.products_task(brand_id, next, fresh));
                next += 1;
            }
        }
        let mut rows = Collector::new(&[&records::PRODUCTS]);
        for product in list {
            match records::product(product) {
                Ok(row) => {
                    let id = row[0].as_str().unwrap_or_default().to_string();
                    rows.add_row(&records::PRODUCTS, row);
                    output.children.push(
                        PlannedTask::new(
                            STREAM,
                            payload_kind(&Step::Offers {
                                product_id: id.clone(),
                            }),
                        )
                        .once(format!("products/{id}/offers"), fresh),
                    );
                }
                Err(error) => output.rejected.push(rejected(
                    format!(
                        "wdn product {} (brand {brand_id} page {page})",
                        crate::short(&product["id"])
                    ),
                    records::PRODUCTS.name,
                    error,
                    product,
                )),
            }
        }
        output.tables = rows.finish();
        Ok(output)
    }

    async fn offers(
        &self,
        product_id: &str,
        fresh: Option<u64>,
    ) -> Result<FetchOutput, ConnectorError> {
        let mut output = FetchOutput::default();
        let mut rows: Vec<Vec<Value>> = Vec::new();
        let mut retailers = BTreeSet::new();
        let mut page = 1;
        loop {
            // 404: the product has no offers (recorded as such: its stored offers go).
            let Some(body) = self
                .client
                .get(
                    &format!("/products/{product_id}/offers"),
                    &self.paging(page),
                )
                .await?
            else {
                break;
            };
            let list = data(&body, &format!("offers of product {product_id}"))?;
            for offer in list {
                match records::offer(offer, product_id) {
                    Ok(row) => {
                        if let Some(r) = row[2].as_str() {
                            retailers.insert(r.to_string());
                        }
                        rows.push(row);
                    }
                    Err(error) => output.rejected.push(rejected(
                        format!(
                            "wdn offer {} of product {product_id}",
                            crate::short(&offer["id"])
                        ),
                        records::OFFERS.name,
                        error,
                        offer,
                    )),
                }
            }
            if list.is_empty() || self.last_page(page, total_count(&body).unwrap_or(0)) {
                break;
            }
            page += 1;
        }
        let mut table = records::OFFERS.table_rows(rows);
        // This task speaks for every offer of the product, even when it has none now.
        table.merge = MergeSpec {
            scope_keys: vec![vec![json!(product_id)]],
            ..table.merge
        };
        output.tables.push(table);
        output.children = retailers
            .into_iter()
            .map(|id| {
                PlannedTask::new(
                    STREAM,
                    payload_kind(&Step::Retailer {
                        retailer_id: id.clone(),
                    }),
                )
                .once(format!("retailers/{id}"), fresh)
            })
            .collect();
        Ok(output)
    }

    async fn retailer(&self, retailer_id: &str) -> Result<FetchOutput, ConnectorError> {
        // 404: no such retailer (recorded as fetched, with nothing to load).
        let Some(body) = self
            .client
            .get(&format!("/retailers/{retailer_id}"), &[])
            .await?
        else {
            return Ok(FetchOutput::default());
        };
        let resource = &body["data"];
        let mut output = FetchOutput::default();
        let mut rows = Collector::new(&[&records::RETAILERS]);
        match records::retailer(resource) {
            Ok(row) => rows.add_row(&records::RETAILERS, row),
            Err(error) => output.rejected.push(rejected(
                format!("wdn retailer {retailer_id}"),
                records::RETAILERS.name,
                error,
                &body,
            )),
        }
        output.tables = rows.finish();
        Ok(output)
    }
}

#[async_trait]
impl Connector for WdnConnector {
    fn name(&self) -> &'static str {
        "wdn"
    }

    fn streams(&self) -> Vec<StreamSpec> {
        streams()
    }

    async fn plan(&self, job: &JobSpec) -> Result<Plan, ConnectorError> {
        if job.stream != STREAM {
            return Err(ConnectorError::InvalidParams(format!(
                "unknown wdn stream '{}' (known: {STREAM})",
                job.stream
            )));
        }
        let spec = streams().remove(0);
        let request: Request = parse_params("wdn", &spec, &job.params)?;
        let given = request.brands.filter(|b| !b.is_empty());
        let names = given.unwrap_or_else(|| self.settings.brands.clone());
        let mut brands: Vec<String> = Vec::new();
        for name in names {
            let name = name.trim().to_string();
            if name.is_empty() {
                return Err(ConnectorError::InvalidParams(
                    "parameter 'brands': a brand name is empty".into(),
                ));
            }
            if !brands.iter().any(|b| b.eq_ignore_ascii_case(&name)) {
                brands.push(name);
            }
        }
        let fresh = (!request.full.unwrap_or(false) && self.settings.fresh_seconds > 0)
            .then_some(self.settings.fresh_seconds);
        let tasks = brands
            .iter()
            .map(|name| {
                PlannedTask::new(
                    STREAM,
                    payload_kind(&Step::BrandSearch { name: name.clone() }),
                )
            })
            .collect();
        let params = Params {
            brands,
            fresh_seconds: fresh,
        };
        Ok(Plan {
            tasks,
            params: serde_json::to_value(&params)
                .map_err(|e| ConnectorError::Permanent(e.into()))?,
            warnings: Vec::new(),
            rejected: Vec::new(),
        })
    }

    async fn fetch(&self, task: &FetchTask) -> Result<FetchOutput, ConnectorError> {
        let params: Params = serde_json::from_value(task.params.clone())
            .map_err(|e| permanent(format!("task {}: unreadable params: {e}", task.task_id)))?;
        let fresh = params.fresh_seconds;
        match task_payload::<Step>(&task.kind)? {
            Step::BrandSearch { name } => self.brand_search(&name, fresh).await,
            Step::Products { brand_id, page } => self.products(&brand_id, page, fresh).await,
            Step::Offers { product_id } => self.offers(&product_id, fresh).await,
            Step::Retailer { retailer_id } => self.retailer(&retailer_id).await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sluice_contracts::{Mode, TaskKind};
    use uuid::Uuid;

    use super::*;

    fn connector() -> WdnConnector {
        let settings: WdnSettings = crate::framework::settings_section(
            &sluice_contracts::Settings::defaults(),
            "wdn",
            settings::DEFAULTS,
        )
        .unwrap();
        build(&settings, ConnectorContext::default()).unwrap()
    }

    fn job(params: Value) -> JobSpec {
        JobSpec {
            job_id: Uuid::nil(),
            stream: STREAM.into(),
            account: "default".into(),
            params,
            mode: Mode::Full,
            bookmark: None,
        }
    }

    #[tokio::test]
    async fn a_job_plans_one_brand_search_per_brand_with_the_freshness_window() {
        let c = connector();
        let plan = c.plan(&job(Value::Null)).await.unwrap();
        let names: Vec<String> = plan
            .tasks
            .iter()
            .map(|t| match task_payload::<Step>(&t.kind).unwrap() {
                Step::BrandSearch { name } => name,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["Converse", "Vans", "Nike", "Adidas", "Jordan"]);
        assert_eq!(plan.params["fresh_seconds"], 86_400);
        let plan = c
            .plan(&job(
                json!({"brands": [" nike ", "NIKE", "Vans"], "full": true}),
            ))
            .await
            .unwrap();
        assert_eq!(plan.tasks.len(), 2);
        assert_eq!(plan.params, json!({"brands": ["nike", "Vans"]}));
        let err = c.plan(&job(json!({"brand": ["x"]}))).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("parameter 'brand' is not accepted"),
            "{err}"
        );
        let err = c.plan(&job(json!({"brands": ["  "]}))).await.unwrap_err();
        assert!(err.to_string().contains("brand name is empty"), "{err}");
    }

    #[test]
    fn children_are_keyed_by_resource_and_carry_the_window() {
        let c = connector();
        let t = c.products_task("1000", 3, Some(60));
        let once = t.once.unwrap();
        assert_eq!(once.key, "brands/1000/products?page=3&page_size=500");
        assert_eq!(once.fresh_for_seconds, Some(60));
        let wire = serde_json::to_value(&t.kind).unwrap();
        assert_eq!(
            wire,
            json!({"type": "connector", "step": "products", "brand_id": "1000", "page": 3})
        );
        let back: TaskKind = serde_json::from_value(wire).unwrap();
        assert_eq!(
            task_payload::<Step>(&back).unwrap(),
            Step::Products {
                brand_id: "1000".into(),
                page: 3
            }
        );
    }
}
