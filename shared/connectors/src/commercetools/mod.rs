//! commercetools: customers, orders, categories and products (product projections) of a
//! project, through its HTTP API (`../shared/specs/commercetools/openapi.yaml`).
//!
//! Work split: commercetools ids are random UUIDs, so the id space is cut into
//! `split_into` even ranges at plan time, one task each. A range task pages by keyset —
//! `sort=id asc`, `withTotal=false`, `where=id > "<last>"` (never by offset, so the API's
//! 10,000-offset wall does not apply) — and after `dense_pages` pages hands the rest of its
//! range to `split_into` child tasks, like Klaviyo's dense windows. Incremental jobs add
//! `lastModifiedAt >= :since and lastModifiedAt < :until` from the stream's bookmark minus
//! a lookback, ending `lag_seconds` before now. The OAuth token of an account is shared by
//! every task of the process ([`client`]).
//!
//! Tables (`migrations/V6__commercetools.sql`, [`records`]): `customers` +
//! `customer_addresses`, `orders` + `order_line_items`, `categories`, `products` +
//! `product_variants`; child tables are replaced with their parent (`replace_scope`), every
//! table is versioned by the resource's `version`.
//!
//! Partial jobs: `ids` (customers, orders) plans tasks of at most [`IDS_PER_TASK`] ids
//! (`where=id in (…)`); `start_id` (orders) reads only ids after it (`id > "<start_id>"`,
//! the same order the ranges page in, unlike the plugin's `startId`).
//!
//! With `params.klaviyo` (set by the planner for a destination of kind `klaviyo`, see
//! `docs/klaviyo-sync.md`) a task maps what it reads ([`klaviyo`]) and emits the
//! `klaviyo.*` tables instead: categories are read with `expand=ancestors[*]`, products
//! (published, current projections) with `expand=categories[*]`, and the products of each
//! page of orders are looked up once for the page's `Categories` breadcrumbs
//! (`GET /products?where=id in (…)`, then their categories with `expand=ancestors[*]`, each
//! remembered for the rest of the task). [`legacy_lock`] reads the plugin's lock object.

pub mod client;
pub mod klaviyo;
pub mod records;
pub mod settings;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_contracts::{FetchTask, Mode, RejectedRecord, TaskKind};
use uuid::Uuid;

use self::client::Client;
use self::settings::CommercetoolsSettings;
use crate::framework::{Collector, parse_params, payload_kind, task_payload};
use crate::{
    Connector, ConnectorContext, ConnectorError, Emit, FetchOutput, JobSpec, ParamKind, ParamSpec,
    Plan, PlannedTask, SettingsError, StreamSpec, TableRows, TableSpec,
};

/// The streams: (name, endpoint, help, tables).
const STREAMS: [(&str, &str, &str, &[&TableSpec]); 4] = [
    (
        "customers",
        "customers",
        "Customers and their addresses (GET /{projectKey}/customers)",
        &[&records::CUSTOMERS, &records::CUSTOMER_ADDRESSES],
    ),
    (
        "orders",
        "orders",
        "Orders with line items and custom line items (GET /{projectKey}/orders)",
        &[&records::ORDERS, &records::ORDER_LINE_ITEMS],
    ),
    (
        "categories",
        "categories",
        "The category tree (GET /{projectKey}/categories)",
        &[&records::CATEGORIES],
    ),
    (
        "products",
        "product-projections",
        "Published products (current; --staged for the drafts) and their variants (GET /{projectKey}/product-projections)",
        &[&records::PRODUCTS, &records::PRODUCT_VARIANTS],
    ),
];

/// The streams the connector declares.
pub fn streams() -> Vec<StreamSpec> {
    STREAMS
        .iter()
        .map(|(name, _, help, tables)| {
            let mut params = vec![
                ParamSpec::optional(
                    "since",
                    ParamKind::Instant,
                    "only resources modified at or after this time (lastModifiedAt), RFC 3339",
                ),
                ParamSpec::optional(
                    "until",
                    ParamKind::Instant,
                    "only resources modified before this time (lastModifiedAt), RFC 3339",
                ),
            ];
            if *name == "products" {
                params.push(ParamSpec::optional(
                    "staged",
                    ParamKind::Flag,
                    "the staged (draft) projections instead of the published current ones",
                ));
            }
            if matches!(*name, "customers" | "orders") {
                params.push(ParamSpec::optional(
                    "ids",
                    ParamKind::List,
                    "only the resources with these ids; repeat for several",
                ));
            }
            if *name == "orders" {
                params.push(ParamSpec::optional(
                    "start_id",
                    ParamKind::Text,
                    "only orders whose id sorts after this one (exclusive), in id order",
                ));
            }
            params.push(ParamSpec::optional(
                "klaviyo",
                ParamKind::Object,
                "set by the planner for a Klaviyo destination: {preferred_locale, preferred_currency, product_url_template}; maps to the klaviyo.* tables",
            ));
            StreamSpec {
                name,
                help,
                params,
                incremental: true,
                tables: tables.to_vec(),
            }
        })
        .collect()
}

/// A job's parameters as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Lower bound of `lastModifiedAt`, RFC 3339.
    pub since: Option<String>,
    /// Upper bound (exclusive) of `lastModifiedAt`, RFC 3339.
    pub until: Option<String>,
    /// Products: the staged projections.
    pub staged: Option<bool>,
    /// Customers, orders: only these ids.
    pub ids: Option<Vec<String>>,
    /// Orders: only ids after this one.
    pub start_id: Option<String>,
    /// The Klaviyo mapping options (set by the planner).
    pub klaviyo: Option<klaviyo::Options>,
}

/// A job's parameters as resolved (every task carries them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Lower bound of `lastModifiedAt` (inclusive), RFC 3339 UTC with milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Upper bound of `lastModifiedAt` (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Products: staged projections.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub staged: bool,
    /// Only ids after this one (`id > "<start_id>"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_id: Option<String>,
    /// Map to the `klaviyo.*` tables with these options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub klaviyo: Option<klaviyo::Options>,
}

/// The most ids one task of a job with `ids` asks for (`where=id in (…)`, which must fit
/// in a request URL).
pub const IDS_PER_TASK: usize = 100;

/// The most resources one lookup by ids asks for (an orders page's products, their
/// categories).
const IDS_PER_LOOKUP: usize = 100;

/// Whether `id` can stand in a `where` string literal as it is (no quote, no backslash,
/// no control character) and is not empty.
fn literal_safe(id: &str) -> bool {
    !id.is_empty() && !id.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

/// The `resource`s (`products`, `categories`) of `ids` that exist, [`IDS_PER_LOOKUP`] per
/// `GET /{resource}?where=id in (…)`, with `expand` when given.
///
/// # Errors
/// As [`Client::query`].
async fn by_ids(
    client: &Client,
    resource: &str,
    ids: &[impl AsRef<str>],
    expand: Option<&str>,
) -> Result<Vec<Value>, ConnectorError> {
    let mut found = Vec::new();
    for chunk in ids.chunks(IDS_PER_LOOKUP) {
        let mut query = vec![
            ("where".to_string(), id_in(chunk)),
            ("limit".to_string(), chunk.len().to_string()),
            ("withTotal".to_string(), "false".to_string()),
        ];
        query.extend(expand.map(|e| ("expand".to_string(), e.to_string())));
        found.extend(client.query(resource, &query).await?.results);
    }
    Ok(found)
}

/// `id in ("a", "b")`.
fn id_in(ids: &[impl AsRef<str>]) -> String {
    let list: Vec<String> = ids.iter().map(|i| format!("\"{}\"", i.as_ref())).collect();
    format!("id in ({})", list.join(", "))
}

/// One range task's payload: the ids `(after | from) ..< to` (absent bounds: the ends of
/// the id space), resumed after `after` when set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// Inclusive lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Exclusive lower bound (the last id a parent task read); wins over `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Exclusive upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Only these ids (a job with `ids`), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

/// The canonical UUIDs cutting `[low, high)` of the 128-bit id space into `n` even parts
/// (`n − 1` inner boundaries). Canonical lowercase UUID strings sort as their numbers do,
/// so the boundaries work as string bounds in `where`.
pub fn boundaries(low: u128, high: u128, n: u32) -> Vec<String> {
    let n = u128::from(n.max(1));
    let width = (high - low) / n;
    (1..n)
        .map(|i| Uuid::from_u128(low + width * i).to_string())
        .collect()
}

/// `n` ranges covering the whole id space.
pub fn whole_space(n: u32) -> Vec<IdRange> {
    let cuts = boundaries(0, u128::MAX, n);
    ranges(None, None, &cuts, None)
}

fn ranges(
    from: Option<String>,
    after: Option<String>,
    cuts: &[String],
    to: Option<String>,
) -> Vec<IdRange> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut lower = (from, after);
    for cut in cuts {
        out.push(IdRange {
            from: lower.0.take(),
            after: lower.1.take(),
            to: Some(cut.clone()),
            ids: Vec::new(),
        });
        lower = (Some(cut.clone()), None);
    }
    out.push(IdRange {
        from: lower.0,
        after: lower.1,
        to,
        ids: Vec::new(),
    });
    out
}

fn id_number(id: &str) -> Option<u128> {
    Uuid::parse_str(id).ok().map(|u| u.as_u128())
}

/// The container of the commercetools–Klaviyo plugin's lock objects.
pub const LEGACY_LOCK_CONTAINER: &str = "klaviyo-ct-plugin-lock";

/// The key of the plugin's lock object for a sync of `stream` (`customerFullSync`,
/// `orderFullSync`, `categoryFullSync`, `productFullSync`); `None` for another stream.
pub fn legacy_lock_key(stream: &str) -> Option<&'static str> {
    match stream {
        "customers" => Some("customerFullSync"),
        "orders" => Some("orderFullSync"),
        "categories" => Some("categoryFullSync"),
        "products" => Some("productFullSync"),
        _ => None,
    }
}

/// The plugin's lock object as commercetools serves it (`CustomObject`).
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyLock {
    /// `klaviyo-ct-plugin-lock`.
    pub container: String,
    /// `customerFullSync`, ….
    pub key: String,
    /// The object's `version`.
    pub version: Option<i64>,
    /// `createdAt` (RFC 3339 UTC), when the plugin took the lock.
    pub created_at: Option<String>,
    /// `lastModifiedAt` (RFC 3339 UTC).
    pub last_modified_at: Option<String>,
    /// The object's `value` as stored.
    pub value: Value,
}

/// Reads the commercetools–Klaviyo plugin's lock object `key` of `account`:
/// `GET /{projectKey}/custom-objects/klaviyo-ct-plugin-lock/{key}`, `None` when it does not
/// exist (404). While it exists the plugin is (or was, before a crash) running that sync,
/// so the planner refuses the same sync (migration safety, `docs/klaviyo-sync.md`). Reads
/// the `[connectors.commercetools]` settings; one token request and one GET.
///
/// # Errors
/// [`ConnectorError::InvalidParams`] for an unknown account or a key that is not a valid
/// custom-object key; the client's errors otherwise (transient after retries, permanent
/// for a refusal such as a missing `view_key_value_documents` scope).
pub async fn legacy_lock(
    settings: &sluice_contracts::Settings,
    account: &str,
    key: &str,
) -> Result<Option<LegacyLock>, ConnectorError> {
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_~.".contains(c));
    if !valid {
        return Err(ConnectorError::InvalidParams(format!(
            "custom-object key {key:?} does not match ^[-_~.a-zA-Z0-9]+$"
        )));
    }
    let section: CommercetoolsSettings =
        crate::framework::settings_section(settings, "commercetools", settings::DEFAULTS)
            .map_err(|e| ConnectorError::InvalidParams(e.to_string()))?;
    let client = build(&section).client(account)?;
    let found = client
        .resource(&format!("custom-objects/{LEGACY_LOCK_CONTAINER}/{key}"))
        .await?;
    Ok(found.map(|o| LegacyLock {
        container: o["container"]
            .as_str()
            .unwrap_or(LEGACY_LOCK_CONTAINER)
            .to_string(),
        key: o["key"].as_str().unwrap_or(key).to_string(),
        version: o["version"].as_i64(),
        created_at: o["createdAt"].as_str().map(str::to_string),
        last_modified_at: o["lastModifiedAt"].as_str().map(str::to_string),
        value: o["value"].clone(),
    }))
}

/// The commercetools connector.
pub struct CommercetoolsConnector {
    settings: CommercetoolsSettings,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

/// Builds the connector from its settings.
pub fn build(settings: &CommercetoolsSettings) -> CommercetoolsConnector {
    CommercetoolsConnector {
        settings: settings.clone(),
        clients: Mutex::new(HashMap::new()),
    }
}

/// The registry's builder: the `[connectors.commercetools]` section over
/// [`settings::DEFAULTS`].
///
/// # Errors
/// A setting that does not fit, naming the key.
pub fn connector(
    settings: &sluice_contracts::Settings,
    _ctx: &ConnectorContext,
) -> Result<Arc<dyn Connector>, SettingsError> {
    let section: CommercetoolsSettings =
        crate::framework::settings_section(settings, "commercetools", settings::DEFAULTS)?;
    if !(1..=500).contains(&section.page_size) {
        return Err(SettingsError {
            connector: "commercetools",
            message: format!(
                "page_size must be from 1 to 500 (the API's limit), found {}",
                section.page_size
            ),
        });
    }
    Ok(Arc::new(build(&section)))
}

fn cursor(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn instant(name: &str, value: &str) -> Result<DateTime<Utc>, ConnectorError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ConnectorError::InvalidParams(format!(
                "parameter '{name}' must be an RFC 3339 time like 2024-01-01T00:00:00Z, found {value:?}: {e}"
            ))
        })
}

/// Refuses a range that ends before it starts.
fn since_before_until(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<(), ConnectorError> {
    match (since, until) {
        (Some(s), Some(u)) if s >= u => Err(ConnectorError::InvalidParams(format!(
            "parameter 'since' ({}) must be before 'until' ({})",
            cursor(s),
            cursor(u)
        ))),
        _ => Ok(()),
    }
}

/// A job's stream, parameters and range as given.
type Checked = (
    &'static str,
    Request,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

impl CommercetoolsConnector {
    /// The job's stream, its parameters read into [`Request`] and its `since`/`until`,
    /// checked without the account.
    fn request(job: &JobSpec) -> Result<Checked, ConnectorError> {
        let (stream, _) = Self::stream(&job.stream)?;
        let spec = streams()
            .into_iter()
            .find(|s| s.name == stream)
            .ok_or_else(|| ConnectorError::InvalidParams(format!("unknown stream {stream}")))?;
        let request: Request = parse_params("commercetools", &spec, &job.params)?;
        let since = request
            .since
            .as_deref()
            .map(|s| instant("since", s))
            .transpose()?;
        let until = request
            .until
            .as_deref()
            .map(|s| instant("until", s))
            .transpose()?;
        for id in request.ids.iter().flatten().chain(&request.start_id) {
            if !literal_safe(id) {
                return Err(ConnectorError::InvalidParams(format!(
                    "{stream}: id {id:?} is empty or holds a quote, backslash or control character; commercetools ids do not"
                )));
            }
        }
        if request.klaviyo.is_some() && request.staged == Some(true) {
            return Err(ConnectorError::InvalidParams(
                "products: 'staged' cannot go to Klaviyo, which gets the published (current) products".into(),
            ));
        }
        Ok((stream, request, since, until))
    }

    fn client(&self, account: &str) -> Result<Arc<Client>, ConnectorError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(account) {
            return Ok(c.clone());
        }
        let settings = self.settings.accounts.get(account).cloned().ok_or_else(|| {
            ConnectorError::InvalidParams(format!(
                "no commercetools account {account:?}: set SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__{}__{{API_URL,AUTH_URL,PROJECT_KEY,CLIENT_ID,CLIENT_SECRET}}",
                account.to_uppercase()
            ))
        })?;
        let client = Arc::new(Client::new(
            account,
            settings,
            Duration::from_secs(self.settings.request_timeout_seconds),
        )?);
        clients.insert(account.to_string(), client.clone());
        Ok(client)
    }

    fn stream(name: &str) -> Result<(&'static str, &'static str), ConnectorError> {
        STREAMS
            .iter()
            .find(|s| s.0 == name)
            .map(|s| (s.0, s.1))
            .ok_or_else(|| {
                ConnectorError::InvalidParams(format!(
                    "unknown commercetools stream '{name}' (known: customers, orders, categories, products)"
                ))
            })
    }

    /// The `where` predicates and variables of one page of `range` under `params`.
    fn predicates(range: &IdRange, params: &Params) -> (Vec<String>, Vec<(String, String)>) {
        let mut wheres = Vec::new();
        let mut vars = Vec::new();
        match (&range.after, &range.from) {
            (Some(after), _) => wheres.push(format!("id > \"{after}\"")),
            (None, Some(from)) => wheres.push(format!("id >= \"{from}\"")),
            (None, None) => {}
        }
        if let Some(to) = &range.to {
            wheres.push(format!("id < \"{to}\""));
        }
        if !range.ids.is_empty() {
            wheres.push(id_in(&range.ids));
        }
        if let Some(start) = &params.start_id {
            wheres.push(format!("id > \"{start}\""));
        }
        if let Some(since) = &params.since {
            wheres.push("lastModifiedAt >= :since".into());
            vars.push(("var.since".to_string(), since.clone()));
        }
        if let Some(until) = &params.until {
            wheres.push("lastModifiedAt < :until".into());
            vars.push(("var.until".to_string(), until.clone()));
        }
        (wheres, vars)
    }

    /// Reads up to `dense_pages` pages of the range, emitting each page's rows as soon as
    /// it is read (a task holds one page, not all of them).
    async fn fetch_range(
        &self,
        task: &FetchTask,
        range: IdRange,
        emit: &mut dyn Emit,
    ) -> Result<FetchOutput, ConnectorError> {
        let (stream, endpoint) = Self::stream(&task.stream)?;
        let params: Params = serde_json::from_value(task.params.clone()).map_err(|e| {
            ConnectorError::Permanent(anyhow::anyhow!(
                "task {}: unreadable params: {e}",
                task.task_id
            ))
        })?;
        let client = self.client(&task.account)?;
        let mut output = FetchOutput::default();
        let mut collected = Collected::new(
            stream,
            params.klaviyo.clone(),
            &self.settings.locale,
            Utc::now(),
        );
        let mapped = params.klaviyo.is_some();
        let mut range = range;
        let limit = self.settings.page_size;
        for page in 0..self.settings.dense_pages.max(1) {
            let (wheres, vars) = Self::predicates(&range, &params);
            let mut query: Vec<(String, String)> = vec![
                ("sort".into(), "id asc".into()),
                ("limit".into(), limit.to_string()),
                ("withTotal".into(), "false".into()),
            ];
            query.extend(wheres.into_iter().map(|w| ("where".to_string(), w)));
            query.extend(vars);
            if stream == "products" && params.staged && !mapped {
                query.push(("staged".into(), "true".into()));
            }
            if mapped {
                // What the mapping names: a category's ancestors, a product's categories
                // (and so their ancestors' ids).
                match stream {
                    "categories" => query.push(("expand".into(), "ancestors[*]".into())),
                    "products" => query.push(("expand".into(), "categories[*]".into())),
                    _ => {}
                }
            }
            let result = client.query(endpoint, &query).await?;
            let full = result.count >= u64::from(limit) && !result.results.is_empty();
            // The next page starts after the last resource with an id. One served without
            // an id (the API never does; a proxy or a bug might) is rejected where it
            // stands — unless it ends a full page: then it is left for the next page, which
            // reads it again, so it is rejected once and nothing after it is skipped.
            let with_id = result
                .results
                .iter()
                .rposition(|r| r["id"].as_str().is_some_and(|id| !id.is_empty()));
            let read = if full {
                with_id.map_or(0, |i| i + 1)
            } else {
                result.results.len()
            };
            if mapped && stream == "orders" {
                Self::order_categories(&client, &result.results[..read], &mut collected).await?;
            }
            let mut before = range.after.clone();
            for resource in &result.results[..read] {
                collected.add(resource, before.as_deref(), &mut output.rejected);
                if let Some(id) = resource["id"].as_str() {
                    before = Some(id.to_string());
                }
            }
            let last = with_id.and_then(|i| result.results[i]["id"].as_str().map(str::to_string));
            // The parsed page is several times its rows' size: freed before they are
            // encoded and published, it is not held beside them (peak RSS, docs/benchmarks.md).
            drop(result);
            emit.emit(collected.take()).await?;
            if !full {
                break;
            }
            let Some(last) = last else {
                return Err(ConnectorError::Permanent(anyhow::anyhow!(
                    "a full page of {limit} {stream} after {} has no resource with an id: \
                     cannot page further in this range",
                    range
                        .after
                        .as_deref()
                        .or(range.from.as_deref())
                        .unwrap_or("the start")
                )));
            };
            range.after = Some(last);
            if page + 1 == self.settings.dense_pages.max(1) {
                // Dense: hand the rest of the range to child tasks.
                output.children = self.split_rest(stream, &range);
            }
        }
        output.cursor_max = collected.cursor_max.clone();
        output.tables = collected.take();
        Ok(output)
    }

    /// Looks up the products of `orders` that the task has not seen yet, once for the
    /// page (at most [`IDS_PER_LOOKUP`] per request), and remembers each one's
    /// `Categories` breadcrumbs in `collected` (none for a product that no longer exists).
    ///
    /// The products are read without expansion and their categories looked up on their own
    /// (`expand=ancestors[*]`), each once per task: expanding
    /// `masterData.current.categories[*].ancestors[*]` copied every category and ancestor
    /// into every product — twice the bytes of the products themselves, most of what an
    /// orders page read (`docs/benchmarks.md`, issue 12). Each category reference then gets
    /// the looked-up category as its `obj`, the very shape the expansion gave, so
    /// [`klaviyo::events::breadcrumbs`] names exactly the same crumbs; a category that no
    /// longer exists stays unexpanded and is left out, as the expansion left it.
    async fn order_categories(
        client: &Client,
        orders: &[Value],
        collected: &mut Collected,
    ) -> Result<(), ConnectorError> {
        let Target::Klaviyo {
            options,
            categories,
            category_objects,
            ..
        } = &mut collected.target
        else {
            return Ok(());
        };
        let missing: BTreeSet<&str> = orders
            .iter()
            .flat_map(klaviyo::events::product_ids)
            .filter(|id| literal_safe(id) && !categories.contains_key(*id))
            .collect();
        let missing: Vec<&str> = missing.into_iter().collect();
        let products = by_ids(client, "products", &missing, None).await?;
        let unknown: BTreeSet<String> = products
            .iter()
            .flat_map(klaviyo::events::category_ids)
            .filter(|id| literal_safe(id) && !category_objects.contains_key(*id))
            .map(str::to_string)
            .collect();
        let unknown: Vec<String> = unknown.into_iter().collect();
        for category in by_ids(client, "categories", &unknown, Some("ancestors[*]")).await? {
            if let Some(id) = category["id"].as_str() {
                category_objects.insert(id.to_string(), category);
            }
        }
        for mut product in products {
            klaviyo::events::expand_categories(&mut product, category_objects);
            if let Some(id) = product["id"].as_str() {
                categories.insert(
                    id.to_string(),
                    klaviyo::events::breadcrumbs(&product, options.locale()),
                );
            }
        }
        for id in missing {
            categories.entry(id.to_string()).or_default();
        }
        Ok(())
    }

    /// The rest of a dense range (after its last id) as child ranges.
    fn split_rest(&self, stream: &str, range: &IdRange) -> Vec<PlannedTask> {
        if !range.ids.is_empty() {
            // A list of ids: the rest of the list after the last id, as one child.
            return vec![PlannedTask {
                stream: stream.to_string(),
                kind: payload_kind(range),
                once: None,
            }];
        }
        let low = range.after.as_deref().and_then(id_number);
        let high = match range.to.as_deref() {
            Some(to) => id_number(to),
            None => Some(u128::MAX),
        };
        let children = match (low, high) {
            (Some(low), Some(high)) if high > low + u128::from(self.settings.split_into) => {
                let cuts = boundaries(low, high, self.settings.split_into);
                ranges(None, range.after.clone(), &cuts, range.to.clone())
            }
            // Ids that are not UUIDs (or a tiny rest): continue as one child.
            _ => vec![range.clone()],
        };
        children
            .into_iter()
            .map(|r| PlannedTask {
                stream: stream.to_string(),
                kind: payload_kind(&r),
                once: None,
            })
            .collect()
    }
}

/// Where a task's resources go.
enum Target {
    /// The `commercetools.*` tables: the stream's table and its child table.
    Tables {
        parent: &'static TableSpec,
        child: Option<&'static TableSpec>,
        /// The locale of the typed columns.
        locale: String,
    },
    /// The `klaviyo.*` tables, mapped with these options.
    Klaviyo {
        options: klaviyo::Options,
        /// "Now" of price validity: when the task started, UTC.
        now: DateTime<Utc>,
        /// Orders: product id → its `Categories` breadcrumbs ([`klaviyo::events::breadcrumbs`]).
        categories: HashMap<String, Vec<String>>,
        /// Orders: the categories of the products looked up so far, by id, with their
        /// ancestors expanded (`expand=ancestors[*]`).
        category_objects: HashMap<String, Value>,
    },
}

/// The rows of one task: the stream's resources and their child rows, or what they map
/// to in Klaviyo.
struct Collected {
    stream: &'static str,
    target: Target,
    rows: Collector,
    cursor_max: Option<String>,
}

impl Collected {
    fn new(
        stream: &'static str,
        klaviyo: Option<klaviyo::Options>,
        locale: &str,
        now: DateTime<Utc>,
    ) -> Self {
        let (target, rows) = match klaviyo {
            Some(options) => {
                let tables: &[&'static TableSpec] = match stream {
                    "customers" => &[&klaviyo::PROFILE],
                    "orders" => &[&klaviyo::EVENT],
                    "products" => &[&klaviyo::CATALOG_ITEM, &klaviyo::CATALOG_VARIANT],
                    _ => &[&klaviyo::CATALOG_CATEGORY],
                };
                (
                    Target::Klaviyo {
                        options,
                        now,
                        categories: HashMap::new(),
                        category_objects: HashMap::new(),
                    },
                    Collector::new(tables),
                )
            }
            None => {
                let (parent, child) = match stream {
                    "customers" => (&records::CUSTOMERS, Some(&records::CUSTOMER_ADDRESSES)),
                    "orders" => (&records::ORDERS, Some(&records::ORDER_LINE_ITEMS)),
                    "products" => (&records::PRODUCTS, Some(&records::PRODUCT_VARIANTS)),
                    _ => (&records::CATEGORIES, None),
                };
                // No `scope_parent`: the child's scope column (`order_id`) is not the
                // parent's key column (`id`), so the stored child rows' own version guards
                // against an older copy of the collection.
                let rows = match child {
                    Some(child) => Collector::new(&[parent, child]),
                    None => Collector::new(&[parent]),
                };
                (
                    Target::Tables {
                        parent,
                        child,
                        locale: locale.to_string(),
                    },
                    rows,
                )
            }
        };
        Self {
            stream,
            target,
            rows,
            cursor_max: None,
        }
    }

    /// The table a rejected resource of this task is counted against.
    fn table(&self) -> &'static str {
        match (&self.target, self.stream) {
            (Target::Tables { parent, .. }, _) => parent.name,
            (Target::Klaviyo { .. }, "customers") => klaviyo::PROFILE.name,
            (Target::Klaviyo { .. }, "orders") => klaviyo::EVENT.name,
            (Target::Klaviyo { .. }, "products") => klaviyo::CATALOG_ITEM.name,
            (Target::Klaviyo { .. }, _) => klaviyo::CATALOG_CATEGORY.name,
        }
    }

    /// Adds one resource, or rejects it naming the stream and its id — or, for a resource
    /// without an id, the id of the resource before it (`before`).
    fn add(&mut self, resource: &Value, before: Option<&str>, rejected: &mut Vec<RejectedRecord>) {
        let added = match &self.target {
            Target::Tables {
                parent,
                child,
                locale,
            } => {
                let converted = match self.stream {
                    "customers" => records::customer(resource),
                    "orders" => records::order(resource, locale),
                    "products" => records::product(resource, locale),
                    _ => records::category(resource, locale).map(|row| (row, Vec::new())),
                };
                converted.map(|(row, children)| {
                    let brought = match child {
                        Some(child) => children.into_iter().map(|r| (*child, r)).collect(),
                        None => Vec::new(),
                    };
                    self.rows.add(parent, row, brought);
                })
            }
            Target::Klaviyo {
                options,
                now,
                categories,
                ..
            } => Self::map(
                self.stream,
                resource,
                options,
                *now,
                categories,
                &mut self.rows,
                rejected,
            ),
        };
        match added {
            Ok(()) => {
                if let Some(t) = resource["lastModifiedAt"].as_str()
                    && self.cursor_max.as_deref().is_none_or(|c| t > c)
                {
                    self.cursor_max = Some(t.to_string());
                }
            }
            Err(error) => {
                let source = match resource["id"].as_str() {
                    Some(id) => format!("commercetools {} {id}", self.stream),
                    None => format!(
                        "commercetools {} without an id, after {}",
                        self.stream,
                        before.unwrap_or("the start of its range")
                    ),
                };
                rejected.push(RejectedRecord {
                    source,
                    table: Some(self.table().to_string()),
                    error,
                    raw: records::raw(resource),
                });
            }
        }
    }

    /// Maps one resource to its Klaviyo rows (an order: Placed Order as the record, its
    /// other events brought with it; a product: the item, its variants brought); a
    /// product's variants that cannot be sent are rejected here, naming product and
    /// variant.
    fn map(
        stream: &str,
        resource: &Value,
        options: &klaviyo::Options,
        now: DateTime<Utc>,
        categories: &HashMap<String, Vec<String>>,
        rows: &mut Collector,
        rejected: &mut Vec<RejectedRecord>,
    ) -> Result<(), String> {
        match stream {
            "customers" => {
                let profile = klaviyo::profiles::profile(resource)?;
                rows.add_row(&klaviyo::PROFILE, profile.row());
            }
            "orders" => {
                let mut events =
                    klaviyo::events::events(resource, categories, options)?.into_iter();
                if let Some(placed) = events.next() {
                    let brought = events.map(|e| (&klaviyo::EVENT, e.row())).collect();
                    rows.add(&klaviyo::EVENT, placed.row(), brought);
                }
            }
            "products" => {
                let product = klaviyo::catalog::product(resource, options, now)?;
                let product_id = resource["id"].as_str().unwrap_or_default();
                for r in product.rejected {
                    rejected.push(RejectedRecord {
                        source: format!(
                            "commercetools products {product_id} variant {}",
                            r.variant_id
                        ),
                        table: Some(klaviyo::CATALOG_VARIANT.name.to_string()),
                        error: r.reason,
                        raw: records::raw(&r.variant),
                    });
                }
                let variants = product
                    .variants
                    .into_iter()
                    .map(|v| (&klaviyo::CATALOG_VARIANT, v.row()))
                    .collect();
                rows.add(&klaviyo::CATALOG_ITEM, product.item.row(), variants);
            }
            _ => {
                let category = klaviyo::catalog::category(resource, options)?;
                rows.add_row(&klaviyo::CATALOG_CATEGORY, category.row());
            }
        }
        Ok(())
    }

    /// The rows collected so far (a child table naming every parent, so a collection
    /// that became empty is emptied too), leaving the collector empty.
    fn take(&mut self) -> Vec<TableRows> {
        self.rows.take()
    }
}

#[async_trait]
impl Connector for CommercetoolsConnector {
    fn name(&self) -> &'static str {
        "commercetools"
    }

    fn streams(&self) -> Vec<StreamSpec> {
        streams()
    }

    async fn check(&self, account: &str) -> Result<String, ConnectorError> {
        let client = self.client(account)?;
        let name = client.project().await?;
        Ok(format!(
            "account {account}: token granted, project {} ({name}) answered",
            client.project_key()
        ))
    }

    fn validate(&self, job: &JobSpec) -> Result<(), ConnectorError> {
        let (_, _, since, until) = Self::request(job)?;
        since_before_until(since, until)
    }

    async fn plan(&self, job: &JobSpec) -> Result<Plan, ConnectorError> {
        let (stream, request, mut since, mut until) = Self::request(job)?;
        // The account must exist before anything is planned.
        self.client(&job.account)?;
        let mut warnings = Vec::new();
        if job.mode == Mode::Incremental {
            let bookmark = job
                .bookmark
                .as_ref()
                .and_then(|b| b["cursor"].as_str())
                .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
                .map(|t| t.with_timezone(&Utc));
            match bookmark {
                Some(b) => {
                    let from = b - chrono::Duration::seconds(self.settings.lookback_seconds as i64);
                    since = Some(since.map_or(from, |s| s.max(from)));
                }
                None => warnings.push(format!(
                    "{stream}: no bookmark yet, so this incremental job reads everything"
                )),
            }
            let clamp = Utc::now() - chrono::Duration::seconds(self.settings.lag_seconds as i64);
            until = Some(until.map_or(clamp, |u| u.min(clamp)));
        }
        since_before_until(since, until)?;
        // Migration safety: while the plugin's lock object of this sync exists, the plugin
        // runs it (or crashed while running it); pushing the same thing at once would race.
        if let Some(options) = &request.klaviyo
            && options.legacy_lock
            && let Some(key) = legacy_lock_key(stream)
        {
            let path = format!("custom-objects/{LEGACY_LOCK_CONTAINER}/{key}");
            if let Some(lock) = self.client(&job.account)?.resource(&path).await? {
                return Err(ConnectorError::InvalidParams(format!(
                    "the commercetools–Klaviyo plugin's lock {LEGACY_LOCK_CONTAINER}/{key} exists \
                     (created {}): the plugin is running this sync, or crashed while running it; \
                     delete the custom object once the plugin is stopped, or set \
                     SLUICE__DESTINATIONS__<NAME>__HONOUR_LEGACY_LOCK=false",
                    lock["createdAt"].as_str().unwrap_or("at an unknown time")
                )));
            }
        }
        let ids: BTreeSet<String> = request.ids.iter().flatten().cloned().collect();
        if !ids.is_empty() && request.start_id.is_some() {
            warnings.push(format!(
                "{stream}: 'ids' given, so 'start_id' is ignored (as the plugin's ids win over startId)"
            ));
        }
        let params = Params {
            since: since.map(cursor),
            until: until.map(cursor),
            staged: request.staged.unwrap_or(false),
            // `ids` wins over `start_id`, as in the plugin.
            start_id: request.start_id.clone().filter(|_| ids.is_empty()),
            klaviyo: request.klaviyo.clone(),
        };
        let ranges = if !ids.is_empty() {
            let ids: Vec<String> = ids.into_iter().collect();
            ids.chunks(IDS_PER_TASK)
                .map(|chunk| IdRange {
                    from: None,
                    after: None,
                    to: None,
                    ids: chunk.to_vec(),
                })
                .collect()
        } else if let Some(low) = request.start_id.as_deref().and_then(id_number) {
            // Only the id space after `start_id` is split; the predicate holds either way.
            let cuts = boundaries(low, u128::MAX, self.settings.split_into);
            ranges(None, request.start_id.clone(), &cuts, None)
        } else {
            whole_space(self.settings.split_into)
        };
        let tasks = ranges
            .into_iter()
            .map(|range| PlannedTask {
                stream: stream.to_string(),
                kind: payload_kind(&range),
                once: None,
            })
            .collect();
        Ok(Plan {
            tasks,
            params: serde_json::to_value(&params)
                .map_err(|e| ConnectorError::Permanent(e.into()))?,
            warnings,
            rejected: Vec::new(),
        })
    }

    async fn fetch(&self, task: &FetchTask) -> Result<FetchOutput, ConnectorError> {
        crate::fetch_all(self, task).await
    }

    async fn fetch_paged(
        &self,
        task: &FetchTask,
        emit: &mut dyn Emit,
    ) -> Result<FetchOutput, ConnectorError> {
        match &task.kind {
            TaskKind::Connector(_) => {
                let range: IdRange = task_payload(&task.kind)?;
                self.fetch_range(task, range, emit).await
            }
            other => Err(ConnectorError::Permanent(anyhow::anyhow!(
                "commercetools tasks are id ranges, found {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_id_space_in_order_without_gaps() {
        let ranges = whole_space(4);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].from, None);
        assert_eq!(ranges[3].to, None);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].to, pair[1].from, "{pair:?}");
            assert!(pair[0].to < pair[1].to || pair[1].to.is_none());
        }
        // Boundaries are canonical UUIDs, so string order is numeric order.
        assert_eq!(
            ranges[1].from.as_deref(),
            Some("3fffffff-ffff-ffff-ffff-ffffffffffff")
        );
    }

    #[test]
    fn a_dense_range_hands_its_rest_to_children_after_its_last_id() {
        let c = build(
            &crate::framework::settings_section(
                &sluice_contracts::Settings::defaults(),
                "commercetools",
                settings::DEFAULTS,
            )
            .unwrap(),
        );
        let range = IdRange {
            from: None,
            after: Some("80000000-0000-0000-0000-000000000000".into()),
            to: Some("c0000000-0000-0000-0000-000000000000".into()),
            ids: Vec::new(),
        };
        let children: Vec<IdRange> = c
            .split_rest("orders", &range)
            .iter()
            .map(|t| task_payload(&t.kind).unwrap())
            .collect();
        assert_eq!(children.len(), 8);
        assert_eq!(children[0].after, range.after);
        assert_eq!(children[0].from, None);
        assert_eq!(children[7].to, range.to);
        for pair in children.windows(2) {
            assert_eq!(pair[0].to, pair[1].from);
        }
        let (wheres, _) = CommercetoolsConnector::predicates(&children[0], &Params::default());
        assert_eq!(
            wheres,
            vec![
                "id > \"80000000-0000-0000-0000-000000000000\"".to_string(),
                format!("id < \"{}\"", children[0].to.as_deref().unwrap())
            ]
        );
    }

    #[test]
    fn a_resource_that_cannot_be_mapped_is_rejected_naming_stream_and_id_and_the_rest_loads() {
        let mut collected = Collected::new("orders", None, "en", Utc::now());
        let mut rejected = Vec::new();
        let good = serde_json::json!({
            "id": "o-1", "version": 3, "lastModifiedAt": "2024-01-02T00:00:00.000Z",
            "lineItems": [{"id": "li-1", "quantity": 2, "variant": {"sku": "S"}}],
            "totalPrice": {"centAmount": 1250, "fractionDigits": 2, "currencyCode": "EUR"}
        });
        collected.add(&good, None, &mut rejected);
        collected.add(
            &serde_json::json!({"version": 1}),
            Some("o-1"),
            &mut rejected,
        );
        collected.add(
            &serde_json::json!({"id": "o-2", "version": "three"}),
            Some("o-1"),
            &mut rejected,
        );
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].error, "missing id");
        assert_eq!(
            rejected[0].source,
            "commercetools orders without an id, after o-1"
        );
        assert_eq!(rejected[1].source, "commercetools orders o-2");
        assert!(
            rejected[1].error.contains("version"),
            "{}",
            rejected[1].error
        );
        assert_eq!(
            collected.cursor_max.as_deref(),
            Some("2024-01-02T00:00:00.000Z")
        );
        let tables = collected.take();
        assert_eq!(tables[0].table, "commercetools.orders");
        assert_eq!(tables[0].rows.len(), 1);
        assert_eq!(tables[0].rows[0][11], serde_json::json!(1250));
        assert_eq!(tables[1].table, "commercetools.order_line_items");
        assert_eq!(tables[1].rows.len(), 1);
        assert_eq!(
            tables[1].merge.scope_keys,
            vec![vec![serde_json::json!("o-1")]]
        );
        assert_eq!(
            tables[1].merge.replace_scope,
            Some(vec!["order_id".to_string()])
        );
    }

    fn connector_with_account() -> CommercetoolsConnector {
        let mut section: CommercetoolsSettings = crate::framework::settings_section(
            &sluice_contracts::Settings::defaults(),
            "commercetools",
            settings::DEFAULTS,
        )
        .unwrap();
        section.accounts.insert(
            "default".into(),
            settings::CommercetoolsAccount {
                api_url: "http://127.0.0.1:9".into(),
                auth_url: "http://127.0.0.1:9".into(),
                project_key: "p".into(),
                client_id: "c".into(),
                client_secret: secrecy::SecretString::from("s"),
                scopes: None,
            },
        );
        build(&section)
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

    #[tokio::test]
    async fn ids_plan_sorted_chunks_read_with_id_in() {
        let c = connector_with_account();
        let ids: Vec<String> = (0..250).rev().map(|i| format!("id-{i:03}")).collect();
        let plan = c
            .plan(&job("orders", serde_json::json!({"ids": ids})))
            .await
            .unwrap();
        let ranges: Vec<IdRange> = plan
            .tasks
            .iter()
            .map(|t| task_payload(&t.kind).unwrap())
            .collect();
        assert_eq!(
            ranges.iter().map(|r| r.ids.len()).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        assert_eq!(ranges[0].ids[0], "id-000");
        // `ids` wins over `start_id`.
        let both = c
            .plan(&job(
                "orders",
                serde_json::json!({"ids": ["b", "a"], "start_id": "z"}),
            ))
            .await
            .unwrap();
        let params: Params = serde_json::from_value(both.params).unwrap();
        assert_eq!(params.start_id, None);
        assert_eq!(both.warnings.len(), 1, "{:?}", both.warnings);
        assert_eq!(
            task_payload::<IdRange>(&both.tasks[0].kind).unwrap().ids,
            vec!["a", "b"]
        );
        assert_eq!(ranges[2].ids[49], "id-249");
        let (wheres, _) = CommercetoolsConnector::predicates(
            &IdRange {
                ids: vec!["a".into(), "b".into()],
                after: Some("a".into()),
                ..ranges[0].clone()
            },
            &Params::default(),
        );
        assert_eq!(wheres, vec!["id > \"a\"", "id in (\"a\", \"b\")"]);
        // A dense list continues as one child with the same ids.
        let rest = IdRange {
            after: Some("id-050".into()),
            ..ranges[0].clone()
        };
        let children = c.split_rest("orders", &rest);
        assert_eq!(children.len(), 1);
        assert_eq!(task_payload::<IdRange>(&children[0].kind).unwrap(), rest);
    }

    #[tokio::test]
    async fn start_id_splits_only_the_space_after_it_and_filters_by_it() {
        let c = connector_with_account();
        let start = "c0000000-0000-0000-0000-000000000000";
        let plan = c
            .plan(&job("orders", serde_json::json!({"start_id": start})))
            .await
            .unwrap();
        let ranges: Vec<IdRange> = plan
            .tasks
            .iter()
            .map(|t| task_payload(&t.kind).unwrap())
            .collect();
        assert_eq!(ranges.len(), 8);
        assert_eq!(ranges[0].after.as_deref(), Some(start));
        assert!(
            ranges
                .iter()
                .skip(1)
                .all(|r| r.from.as_deref() > Some(start))
        );
        let params: Params = serde_json::from_value(plan.params).unwrap();
        assert_eq!(params.start_id.as_deref(), Some(start));
        let (wheres, _) = CommercetoolsConnector::predicates(&ranges[3], &params);
        assert!(wheres.contains(&format!("id > \"{start}\"")), "{wheres:?}");
    }

    #[test]
    fn partial_and_mapped_parameters_are_checked() {
        let c = connector_with_account();
        let refused = |stream: &str, params: Value| match c.validate(&job(stream, params)) {
            Err(ConnectorError::InvalidParams(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            refused("orders", serde_json::json!({"ids": ["a\" or id > \""]})).contains("quote")
        );
        assert!(refused("categories", serde_json::json!({"ids": ["a"]})).contains("ids"));
        assert!(refused("customers", serde_json::json!({"start_id": "a"})).contains("start_id"));
        assert!(
            refused(
                "products",
                serde_json::json!({"staged": true, "klaviyo": {}})
            )
            .contains("staged")
        );
        assert!(
            refused("products", serde_json::json!({"klaviyo": {"locale": "en"}}))
                .contains("klaviyo")
        );
        c.validate(&job(
            "products",
            serde_json::json!({"klaviyo": {"preferred_locale": "en", "preferred_currency": "EUR", "product_url_template": null}}),
        ))
        .unwrap();
    }

    #[test]
    fn mapped_products_reject_unsendable_variants_and_replace_each_items_variants() {
        let options = klaviyo::Options {
            preferred_currency: Some("EUR".into()),
            ..klaviyo::Options::default()
        };
        let mut collected = Collected::new("products", Some(options), "en", Utc::now());
        let mut rejected = Vec::new();
        let eur = serde_json::json!([{"value": {"currencyCode": "EUR", "centAmount": 500, "fractionDigits": 2}}]);
        let product = serde_json::json!({
            "id": "p1", "version": 1, "lastModifiedAt": "2024-01-02T00:00:00.000Z",
            "name": {"en": "Hat"}, "slug": {"en": "hat"}, "categories": [],
            "masterVariant": {"id": 1, "sku": "H-1", "prices": eur},
            "variants": [{"id": 2, "prices": eur}, {"id": 3, "sku": "H-3", "prices": []}]
        });
        collected.add(&product, None, &mut rejected);
        let unpriced = serde_json::json!({
            "id": "p2", "version": 1, "name": {"en": "Cap"},
            "masterVariant": {"id": 1, "sku": "C-1", "prices": []}
        });
        collected.add(&unpriced, Some("p1"), &mut rejected);
        let sources: Vec<(&str, Option<&str>)> = rejected
            .iter()
            .map(|r| (r.source.as_str(), r.table.as_deref()))
            .collect();
        assert_eq!(
            sources,
            vec![
                (
                    "commercetools products p1 variant 2",
                    Some("klaviyo.catalog-variant")
                ),
                (
                    "commercetools products p1 variant 3",
                    Some("klaviyo.catalog-variant")
                ),
                ("commercetools products p2", Some("klaviyo.catalog-item")),
            ]
        );
        assert!(rejected[2].error.contains("EUR"), "{}", rejected[2].error);
        let tables = collected.take();
        assert_eq!(tables[0].table, "klaviyo.catalog-item");
        assert_eq!(tables[0].rows.len(), 1);
        assert_eq!(tables[1].table, "klaviyo.catalog-variant");
        assert_eq!(tables[1].rows.len(), 1);
        assert_eq!(
            tables[1].rows[0][0],
            serde_json::json!("$custom:::$default:::H-1")
        );
        assert_eq!(
            tables[1].merge.replace_scope,
            Some(vec!["item_id".to_string()])
        );
        assert_eq!(
            tables[1].merge.scope_keys,
            vec![vec![serde_json::json!("$custom:::$default:::p1")]]
        );
        assert_eq!(
            collected.cursor_max.as_deref(),
            Some("2024-01-02T00:00:00.000Z")
        );
    }
}
