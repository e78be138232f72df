//! An emulation of the commercetools HTTP API (after `specs/commercetools/openapi.yaml` and
//! the real responses in `specs/commercetools/examples/`) over a generated project, plus
//! optionally the example project served verbatim.
//!
//! # Routes (mounted at the sandbox root: the sandbox URL is both auth and API URL)
//!
//! - `POST /oauth/token`: OAuth2 client credentials. HTTP Basic `client_id:client_secret`
//!   (a client of [`CommercetoolsConfig::clients`]), form body (or query)
//!   `grant_type=client_credentials` and optional `scope` (space-separated, each one of the
//!   client's scopes) → `{access_token, token_type: "Bearer", expires_in, scope}` (the
//!   granted scopes; all of the client's without `scope`). Errors are commercetools'
//!   `AuthErrorResponse` `{statusCode, message, errors: [{code, message}], error,
//!   error_description}`: 401 `invalid_client` (no/bad Basic credentials), 400
//!   `unsupported_grant_type`, 400 `invalid_scope`.
//! - `GET /{projectKey}`: the project (`{key, name, countries, currencies, languages, …}`).
//! - `GET /{projectKey}/customers|orders|categories|products|product-projections`: a
//!   `PagedQueryResponse {limit, offset, count, total?, results}`:
//!   - `limit` 0..=500 (default 20), `offset` 0..=10 000 (default 0); beyond: 400
//!     `InvalidInput`;
//!   - `withTotal` (default `true`; `total` left out when `false`; with a `where`, `total`
//!     is capped at 10 000 like commercetools' approximate totals);
//!   - `sort` (repeatable): `id`, `createdAt`, `lastModifiedAt`, each `asc`/`desc`; without
//!     one, `createdAt asc` (ties by id);
//!   - `where` (repeatable, ANDed): `id`/`createdAt`/`lastModifiedAt` with
//!     `= != <> < <= > >=` or `in (…)`, values `"…"` (times RFC 3339) or `:name` bound by
//!     `var.name=…`, `and`, parentheses, `masterData(published = true|false)` (products
//!     only) and `published = true|false` (product projections only). Anything else (other
//!     fields, `or`, `not`, other operators) is a 400 `InvalidInput` naming it.
//!   - `expand` (repeatable): reference paths such as `ancestors[*]`, `parent` (categories),
//!     `categories[*]`, `categories[*].ancestors[*]` (product projections),
//!     `masterData.current.categories[*]` (products): each reached category reference
//!     `{typeId, id}` gains `obj` (the category). Paths that reach nothing expandable are
//!     left as they are, as commercetools does.
//!   - `product-projections`: the published `current` data (unpublished products are left
//!     out); `staged=true`: the staged data of every product.
//! - `GET /{projectKey}/<resource>/{id}` (same `expand`, `staged`): the resource, or 404
//!   `ResourceNotFound` (also for an unpublished product's current projection).
//! - Custom objects: `POST /{projectKey}/custom-objects` `{container, key, value,
//!   version?}` creates (201) or replaces (200, `version` + 1); a `version` that is not the
//!   current one (or not 0 for a missing object) → 409 `ConcurrentModification` with
//!   `currentVersion`. `GET|DELETE /{projectKey}/custom-objects/{container}/{key}`
//!   (`?version=` on delete; 404 `ResourceNotFound` when absent).
//!   `GET /{projectKey}/custom-objects[/{container}]`: a paged query as above. Container and
//!   key must match `^[-_~.a-zA-Z0-9]+$` (else 400 `InvalidInput`).
//!
//! Every project route needs `Authorization: Bearer <token>` from `/oauth/token` (missing,
//! unknown or expired → 401 `invalid_token`) whose scopes name the project
//! (`<scope>:{projectKey}`) and allow the resource (`manage_project`, or `view_<resource>` /
//! `manage_<resource>`: `customers`, `orders`, `categories`, `products` (also
//! `view_published_products` for projections), `key_value_documents` for custom objects,
//! `project_settings` for the project; else 403 `insufficient_scope`).
//!
//! Errors are `{statusCode, message, errors: [{code, message, …}]}`.
//!
//! # Data
//! The generated project ([`CommercetoolsDataSpec`], key [`CommercetoolsConfig::project_key`])
//! is a pure function of the spec: [`Project::generate`] gives the same ids and bodies a
//! test can compare with ([`Project::ids`], [`Project::get`], [`Project::touch`]). Ids are
//! UUIDs, times RFC 3339 UTC with milliseconds. Bodies are built per request from
//! `(seed, index)`; the server keeps only sorted id/time indexes.
//!
//! With [`CommercetoolsConfig::examples_dir`], the `results` of
//! `{customers,orders,categories,products,product-projections,custom-objects}.example.json`
//! form a second project ([`CommercetoolsConfig::examples_project_key`]); `GET …/{id}` of an
//! id that has a single-resource example (`customer.example.json`, …) answers that file.
//! Paging numbers (`limit`, `total`, …) are the sandbox's own.
//!
//! # Admin routes (no auth)
//! - `GET /commercetools/_admin/stats`: `{requests: {total, by_resource: {resource:
//!   {status: n}}}, tokens: {issued, rejected}, auth_failures, peak_concurrency, in_flight,
//!   faults: FaultStats}` (`peak_concurrency`: most project requests in flight at once);
//!   `POST /commercetools/_admin/stats/reset`.
//! - `GET|POST /commercetools/_admin/faults`: the [`FaultConfig`] (POST replaces it) of the
//!   shared fault layer ([`crate::faults`]), applied to every project route (not to
//!   `/oauth/token`) before authentication, like a gateway's: 500 (`General`), 502
//!   (`BadGateway`), 503 (`OverCapacity`), 429 (`throttle_seconds`), latency, slow, dropped
//!   and truncated responses. The request counts of the stats include them (a dropped or
//!   truncated response counts as its status, 200).
//! - `POST /commercetools/_admin/touch` `{resource, count, at?, project?}`: bumps
//!   `version` and `lastModifiedAt` (to `at`, default now, and at least 1 ms later than
//!   before) of `count` resources chosen as [`Project::touch`] does → `{ids, resources}`.
//! - `POST /commercetools/_admin/tokens/expire`: every issued token expires now →
//!   `{expired}`.
//! - `GET /commercetools/_admin/config`: the [`CommercetoolsConfig`].

mod api;
mod data;
mod project;
mod query;

use std::path::PathBuf;

use chrono::{DateTime, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::faults::FaultConfig;
pub use api::router;
pub use project::Project;

/// The default API client's id.
pub const DEFAULT_CLIENT_ID: &str = "sluice-sandbox";
/// The default API client's secret.
pub const DEFAULT_CLIENT_SECRET: &str = "sluice-sandbox-secret";
/// The default generated project's key.
pub const DEFAULT_PROJECT_KEY: &str = "sluice-sandbox";
/// The default key of the example project.
pub const DEFAULT_EXAMPLES_PROJECT_KEY: &str = "sluice-examples";

/// What project to generate. All times are UTC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommercetoolsDataSpec {
    /// Seed of all randomness.
    pub seed: u64,
    /// Number of customers, ≤ 5 000 000. Each has 0–3 addresses (with or without
    /// `phone`/`mobile`), some a default billing/shipping address, a `customerGroup`, a `key`.
    pub customers: u64,
    /// Number of orders, ≤ 5 000 000: `orderState` cycles `Open`, `Confirmed`, `Complete`,
    /// `Cancelled` by index; 1–4 line items of generated products (none without products)
    /// and 0–2 custom line items; `totalPrice` is their sum in the order's currency (EUR,
    /// USD or GBP); most belong to a generated customer (`customerId`).
    pub orders: u64,
    /// Number of categories, ≤ 100 000: a forest (about a tenth roots, at most 12) at most
    /// 5 levels deep, with `{en, de}` names and slugs, `parent` and `ancestors`.
    pub categories: u32,
    /// Number of products, ≤ 1 000 000: about 10 % unpublished, 20 % with staged changes
    /// (the staged name gains ` (new)`, prices + 1.00); master variant plus 0–3 variants
    /// with SKUs `SKU-<index>-<variant id>`, 0–2 images, prices in 1–3 currencies, some
    /// with validity ranges, country or customer group.
    pub products: u64,
    /// Start of the creation times.
    pub start: DateTime<Utc>,
    /// Length of the creation-time range, days (1..=36 500): item `i` of `n` is created at
    /// about `start + i/n · span`.
    pub span_days: u32,
}

impl Default for CommercetoolsDataSpec {
    fn default() -> Self {
        CommercetoolsDataSpec {
            seed: 1,
            customers: 1_000,
            orders: 5_000,
            categories: 60,
            products: 500,
            start: Utc
                .with_ymd_and_hms(2023, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            span_days: 365,
        }
    }
}

impl CommercetoolsDataSpec {
    /// Checks the sizes and the range.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |m: String| Err(InvalidConfig(m));
        if self.customers > 5_000_000 {
            return bad(format!("customers {} > 5000000", self.customers));
        }
        if self.orders > 5_000_000 {
            return bad(format!("orders {} > 5000000", self.orders));
        }
        if self.categories > 100_000 {
            return bad(format!("categories {} > 100000", self.categories));
        }
        if self.products > 1_000_000 {
            return bad(format!("products {} > 1000000", self.products));
        }
        if !(1..=36_500).contains(&self.span_days) {
            return bad(format!("span_days {} not in 1..=36500", self.span_days));
        }
        Ok(())
    }
}

/// An API client: credentials and the scopes it may ask for. A scope may contain the
/// placeholder `{projectKey}`, which stands for every served project (e.g.
/// `manage_project:{projectKey}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiClient {
    /// The client id (HTTP Basic user).
    pub client_id: String,
    /// The client secret (HTTP Basic password).
    pub client_secret: String,
    /// Scopes such as `view_orders:my-project` or `manage_project:{projectKey}`.
    pub scopes: Vec<String>,
}

/// The commercetools emulation's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommercetoolsConfig {
    /// Key of the generated project (lowercase letters, digits, `-` and `_`, 2–36
    /// characters; not `oauth`, `api`, `sailthru`, `livez`, `readyz` nor an emulator's
    /// name such as `klaviyo`). Default [`DEFAULT_PROJECT_KEY`].
    pub project_key: String,
    /// The generated project.
    pub data: CommercetoolsDataSpec,
    /// Accepted API clients. Default: [`DEFAULT_CLIENT_ID`] / [`DEFAULT_CLIENT_SECRET`] with
    /// `manage_project:{projectKey}`.
    pub clients: Vec<ApiClient>,
    /// `expires_in` of issued tokens, seconds (default 172 800, commercetools' 48 h).
    pub token_lifetime_seconds: u64,
    /// Injected faults of the project routes.
    pub faults: FaultConfig,
    /// A folder with the `*.example.json` files (e.g. `specs/commercetools/examples`) to
    /// serve as project [`examples_project_key`](Self::examples_project_key); `None`: no
    /// example project.
    pub examples_dir: Option<PathBuf>,
    /// Key of the example project. Default [`DEFAULT_EXAMPLES_PROJECT_KEY`].
    pub examples_project_key: String,
}

impl Default for CommercetoolsConfig {
    fn default() -> Self {
        CommercetoolsConfig {
            project_key: DEFAULT_PROJECT_KEY.to_owned(),
            data: CommercetoolsDataSpec::default(),
            clients: vec![ApiClient {
                client_id: DEFAULT_CLIENT_ID.to_owned(),
                client_secret: DEFAULT_CLIENT_SECRET.to_owned(),
                scopes: vec!["manage_project:{projectKey}".to_owned()],
            }],
            token_lifetime_seconds: 172_800,
            faults: FaultConfig::default(),
            examples_dir: None,
            examples_project_key: DEFAULT_EXAMPLES_PROJECT_KEY.to_owned(),
        }
    }
}

impl crate::EmulatorConfig for CommercetoolsConfig {
    const NAME: &'static str = "commercetools";

    fn router(self) -> anyhow::Result<axum::Router> {
        Ok(api::router(self)?)
    }
}

impl CommercetoolsConfig {
    /// Checks the project keys and the data spec (not the examples folder, which is read
    /// by [`router`]).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.data.validate()?;
        for key in [&self.project_key, &self.examples_project_key] {
            valid_project_key(key)?;
        }
        if self.examples_dir.is_some() && self.project_key == self.examples_project_key {
            return Err(InvalidConfig(
                "project_key and examples_project_key must differ".into(),
            ));
        }
        Ok(())
    }
}

fn valid_project_key(key: &str) -> Result<(), InvalidConfig> {
    // The sandbox's own first path segments, and every emulator's (its admin routes).
    const RESERVED: [&str; 5] = ["oauth", "api", "sailthru", "livez", "readyz"];
    let ok_chars = key
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let reserved = RESERVED.contains(&key) || crate::EMULATORS.iter().any(|e| e.name == key);
    if !(2..=36).contains(&key.len()) || !ok_chars || reserved {
        return Err(InvalidConfig(format!(
            "project key {key:?}: expected 2-36 of [a-z0-9_-], not a reserved path"
        )));
    }
    Ok(())
}

/// A served resource type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resource {
    /// `customers`.
    Customers,
    /// `orders`.
    Orders,
    /// `categories`.
    Categories,
    /// `products`.
    Products,
    /// `product-projections` (of the products; [`Project::touch`] of products changes them).
    ProductProjections,
}

impl Resource {
    /// Every resource type.
    pub const ALL: [Resource; 5] = [
        Resource::Customers,
        Resource::Orders,
        Resource::Categories,
        Resource::Products,
        Resource::ProductProjections,
    ];

    /// The path segment (`customers`, …, `product-projections`).
    pub fn path(self) -> &'static str {
        match self {
            Resource::Customers => "customers",
            Resource::Orders => "orders",
            Resource::Categories => "categories",
            Resource::Products => "products",
            Resource::ProductProjections => "product-projections",
        }
    }

    /// The resource of a path segment.
    pub fn from_path(s: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.path() == s)
    }
}

/// A configuration that cannot be served (sizes out of range, bad keys, unreadable
/// examples).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig(pub String);

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid commercetools config: {}", self.0)
    }
}

impl std::error::Error for InvalidConfig {}

fn generated(spec: &CommercetoolsDataSpec) -> Project {
    match Project::generate(DEFAULT_PROJECT_KEY, spec) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Ids of the generated `resource`s (product projections: the published products), sorted
/// as strings (the order of `sort=id asc`), before any touch.
///
/// # Panics
/// When `spec` is invalid ([`CommercetoolsDataSpec::validate`]).
pub fn ids(spec: &CommercetoolsDataSpec, resource: Resource) -> Vec<String> {
    generated(spec).ids(resource)
}

/// The generated resource `id` as served before any touch and without `expand`
/// (product projections: the current one). `None` for an unknown id.
///
/// # Panics
/// When `spec` is invalid.
pub fn resource(spec: &CommercetoolsDataSpec, resource: Resource, id: &str) -> Option<Value> {
    generated(spec).get(resource, id)
}
