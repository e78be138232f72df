//! An emulation of the What Drops Now (WDN) catalogue API (`../shared/REFERENCE.md`, "What
//! Drops Now") over a catalogue generated from a seed, or one given verbatim.
//!
//! # Routes (base `/wdn/api/v1`, the real API's `…/api/v1`; no authentication)
//!
//! - `GET /wdn/api/v1/searches/brand_search?q=NAME`: brands whose name contains `q`
//!   (case-insensitive, so `nike` also finds `Nike SB`: clients keep the exact match);
//! - `GET /wdn/api/v1/brands/{id}/products`: the products whose `brand_names` hold the
//!   brand's name (a collaboration is listed under each of its brands), by id; 404 for an
//!   unknown brand;
//! - `GET /wdn/api/v1/products/{id}/offers`: the product's offers, often none (`data: []`);
//!   404 for an unknown product and for the products of [`Catalogue::missing_offers`];
//! - `GET /wdn/api/v1/retailers/{id}`: `{"data": {id, type, attributes}}`; 404 for an id
//!   that is not in [`Catalogue::retailers`] (offers do name such retailers).
//!
//! Lists take `page` (from 1, default 1) and `page_size` (1..=[`WdnConfig::max_page_size`],
//! default [`WdnConfig::default_page_size`]; else 400) and answer
//! `{"data": [{id, type, attributes}], "meta": {"page": {"current_page", "total_count"}}}`
//! (`total_count`: every match; a page past the end has `data: []`). Ids are strings.
//! Errors are `{"errors": [{"status", "title", "detail"}]}`.
//!
//! # Throttling
//! Like the real API, which slows down and then fails above about five concurrent requests:
//! a request arriving while `n` requests are in flight (itself included) is held back
//! `overload_delay_ms × (n − max_concurrency)` when `n > max_concurrency`, and answered 429
//! (odd-numbered) or 503 (even-numbered rejections) at once when `n ≥ fail_concurrency`.
//! [`WdnStats::peak_concurrency`] is the most requests in flight at once (including those
//! rejected); [`WdnStats::mean_in_flight`] the time-average of requests in flight between
//! the first request's arrival and the last one's end since the last reset.
//!
//! The shared fault layer ([`crate::faults`]) sits inside the throttle: its `latency_ms`
//! is the API's latency (it counts as in flight) and its errors, drops and truncations
//! apply to every API route.
//!
//! # Admin routes
//! - `GET /wdn/_admin/stats` ([`WdnStats`]), `POST /wdn/_admin/stats/reset`;
//! - `GET|POST /wdn/_admin/faults`: the [`FaultConfig`] (POST replaces it);
//! - `GET /wdn/_admin/config`: the [`WdnConfig`] (without a given catalogue's contents).
//!
//! # Data
//! [`Catalogue::generate`] is a pure function of [`WdnDataSpec`]: the ground truth a test
//! compares a load with. The brands [`NAMED_BRANDS`] come first; about 80 % of the products
//! belong to them, 4 % are collaborations of two brands; 35 % of the products have no offer
//! and 5 % answer 404 on offers; retailers have a price level (most offers of a retailer lie
//! near it, so their averages fall into different segments) and 4 % of the retailer ids
//! that offers name answer 404. Prices come as JSON numbers or (30 %) numeric strings with
//! two decimals, and `price_eur` is sometimes null.

mod api;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::faults::FaultConfig;
use crate::faults::h3;
pub use api::router;

/// The brands the connector syncs by default, first in every generated catalogue.
pub const NAMED_BRANDS: [&str; 5] = ["Converse", "Vans", "Nike", "Adidas", "Jordan"];

/// More brand names, some containing a named one (`Nike SB`), so that a search finds more
/// than the exact match.
const MORE_BRANDS: [&str; 11] = [
    "Nike SB",
    "Vans Vault",
    "Air Jordan Retro",
    "New Balance",
    "Asics",
    "Puma",
    "Reebok",
    "Salomon",
    "Converse Cons",
    "Saucony",
    "Hoka",
];

const MODELS: [&str; 12] = [
    "Chuck 70",
    "Old Skool",
    "Air Max 1",
    "Samba",
    "Retro 4",
    "Dunk Low",
    "Gazelle",
    "Sk8-Hi",
    "Air Force 1",
    "Forum",
    "Blazer",
    "Campus",
];

/// What catalogue to generate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WdnDataSpec {
    /// Seed of all randomness.
    pub seed: u64,
    /// Number of brands, 5..=1000: [`NAMED_BRANDS`], then `Nike SB`, `Vans Vault`, …, then
    /// `Brand 17`, ….
    pub brands: u32,
    /// Number of products, ≤ 500,000.
    pub products: u64,
    /// Number of retailers, 1..=100,000 (ids that answer 404 included).
    pub retailers: u32,
    /// Most offers of one product (1..=50); a product with offers has 1..=this many.
    pub max_offers: u32,
    /// Share of products with an empty offer list.
    pub empty_offers_share: f64,
    /// Share of products whose offers answer 404.
    pub missing_offers_share: f64,
    /// Share of retailer ids that answer 404.
    pub missing_retailers_share: f64,
}

impl Default for WdnDataSpec {
    fn default() -> Self {
        Self {
            seed: 1,
            brands: 8,
            products: 2_000,
            retailers: 320,
            max_offers: 8,
            empty_offers_share: 0.35,
            missing_offers_share: 0.05,
            missing_retailers_share: 0.04,
        }
    }
}

impl WdnDataSpec {
    /// Checks sizes and shares.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |m: String| Err(InvalidConfig(m));
        if !(5..=1000).contains(&self.brands) {
            return bad(format!("brands {} not in 5..=1000", self.brands));
        }
        if self.products > 500_000 {
            return bad(format!("products {} > 500000", self.products));
        }
        if !(1..=100_000).contains(&self.retailers) {
            return bad(format!("retailers {} not in 1..=100000", self.retailers));
        }
        if !(1..=50).contains(&self.max_offers) {
            return bad(format!("max_offers {} not in 1..=50", self.max_offers));
        }
        for (name, share) in [
            ("empty_offers_share", self.empty_offers_share),
            ("missing_offers_share", self.missing_offers_share),
            ("missing_retailers_share", self.missing_retailers_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return bad(format!("{name} {share} not in 0..=1"));
            }
        }
        if self.empty_offers_share + self.missing_offers_share > 1.0 {
            return bad("empty_offers_share + missing_offers_share > 1".into());
        }
        Ok(())
    }
}

/// The WDN emulation's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WdnConfig {
    /// The generated catalogue (ignored when [`catalogue`](Self::catalogue) is given).
    pub data: WdnDataSpec,
    /// A catalogue served verbatim instead of a generated one (hand-made test data).
    pub catalogue: Option<Catalogue>,
    /// Requests in flight above which responses slow down. Default 5, as the real API.
    pub max_concurrency: u32,
    /// Requests in flight at which requests are refused with 429/503. Default 8.
    pub fail_concurrency: u32,
    /// Milliseconds a request is held back per request in flight above
    /// [`max_concurrency`](Self::max_concurrency). Default 250.
    pub overload_delay_ms: u64,
    /// `page_size` when a list request names none. Default 20, as the real API.
    pub default_page_size: u32,
    /// Largest `page_size` accepted. Default 2000 (what the original client asked for).
    pub max_page_size: u32,
    /// Injected faults and latency of the API routes.
    pub faults: FaultConfig,
}

impl Default for WdnConfig {
    fn default() -> Self {
        Self {
            data: WdnDataSpec::default(),
            catalogue: None,
            max_concurrency: 5,
            fail_concurrency: 8,
            overload_delay_ms: 250,
            default_page_size: 20,
            max_page_size: 2000,
            faults: FaultConfig::default(),
        }
    }
}

impl crate::EmulatorConfig for WdnConfig {
    const NAME: &'static str = "wdn";

    fn router(self) -> anyhow::Result<axum::Router> {
        Ok(api::router(self)?)
    }
}

impl WdnConfig {
    /// Checks the data spec and the limits.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.data.validate()?;
        if self.max_concurrency == 0 || self.fail_concurrency <= self.max_concurrency {
            return Err(InvalidConfig(format!(
                "need 0 < max_concurrency ({}) < fail_concurrency ({})",
                self.max_concurrency, self.fail_concurrency
            )));
        }
        if self.default_page_size == 0 || self.default_page_size > self.max_page_size {
            return Err(InvalidConfig(format!(
                "need 0 < default_page_size ({}) <= max_page_size ({})",
                self.default_page_size, self.max_page_size
            )));
        }
        Ok(())
    }

    /// The catalogue served: the given one, or the generated one.
    pub fn served(&self) -> Catalogue {
        match &self.catalogue {
            Some(c) => c.clone(),
            None => Catalogue::generate(&self.data),
        }
    }
}

/// A configuration that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig(pub String);

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid wdn config: {}", self.0)
    }
}

impl std::error::Error for InvalidConfig {}

/// A brand (`type: brands`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Brand {
    /// Id, a string of digits.
    pub id: String,
    /// Name (`Nike`).
    pub name: String,
    /// Free text, may be null.
    pub description: Option<String>,
    /// The brand's site, may be null.
    pub website: Option<String>,
}

/// A product (`type: products`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Id, a string of digits.
    pub id: String,
    /// Name.
    pub name: String,
    /// Free text, may be null.
    pub description: Option<String>,
    /// Release time, RFC 3339 UTC with milliseconds, may be null.
    pub release_at: Option<String>,
    /// The names of the product's brands (a collaboration has two).
    pub brand_names: Vec<String>,
}

/// An offer of a product at a retailer (`type: offers`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// Id, a string key (16 hex digits when generated).
    pub id: String,
    /// The product's id.
    pub product_id: String,
    /// The retailer's id (may answer 404).
    pub retailer_id: String,
    /// ISO 4217 code of the retailer's own price (`USD`, `GBP`, `EUR`).
    pub original_currency: String,
    /// Price in US dollars: a JSON number, a numeric string or null.
    pub price_usd: Value,
    /// Price in pounds, as `price_usd`.
    pub price_gbp: Value,
    /// Price in euros, as `price_usd`.
    pub price_eur: Value,
}

/// A retailer (`type: retailers`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retailer {
    /// Id, a string of digits.
    pub id: String,
    /// Name.
    pub name: String,
    /// The retailer's site, may be null.
    pub website: Option<String>,
}

/// Everything the emulation serves: the ground truth of a load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Catalogue {
    /// Every brand.
    pub brands: Vec<Brand>,
    /// Every product.
    pub products: Vec<Product>,
    /// Every offer (of products not in `missing_offers`).
    pub offers: Vec<Offer>,
    /// The retailers that exist; other retailer ids answer 404.
    pub retailers: Vec<Retailer>,
    /// Ids of products whose offers answer 404.
    pub missing_offers: Vec<String>,
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn money(cents: u64) -> f64 {
    cents as f64 / 100.0
}

/// A price as the API sends it: mostly a number, sometimes a numeric string.
fn price(cents: u64, as_string: bool) -> Value {
    if as_string {
        Value::String(format!("{}.{:02}", cents / 100, cents % 100))
    } else {
        json!(money(cents))
    }
}

impl Catalogue {
    /// The catalogue of `spec` (see the module docs). Deterministic.
    pub fn generate(spec: &WdnDataSpec) -> Catalogue {
        let seed = spec.seed;
        let n_brands = spec.brands as usize;
        let brand_name = |b: usize| -> String {
            if b < NAMED_BRANDS.len() {
                NAMED_BRANDS[b].to_string()
            } else if b - NAMED_BRANDS.len() < MORE_BRANDS.len() {
                MORE_BRANDS[b - NAMED_BRANDS.len()].to_string()
            } else {
                format!("Brand {b}")
            }
        };
        let brands: Vec<Brand> = (0..n_brands)
            .map(|b| {
                let name = brand_name(b);
                let slug = name.to_lowercase().replace(' ', "-");
                Brand {
                    id: (1000 + 7 * b).to_string(),
                    description: (!h3(seed, b as u64, 1, 0).is_multiple_of(5))
                        .then(|| format!("{name}: sneakers and apparel.")),
                    website: Some(format!("https://{slug}.example.com")),
                    name,
                }
            })
            .collect();
        let retailers_total = spec.retailers as u64;
        let retailer_id = |r: u64| (50_000 + 3 * r).to_string();
        let retailer_missing = |r: u64| unit(h3(seed, r, 2, 0)) < spec.missing_retailers_share;
        let retailers: Vec<Retailer> = (0..retailers_total)
            .filter(|&r| !retailer_missing(r))
            .map(|r| Retailer {
                id: retailer_id(r),
                name: format!("Retailer {r}"),
                website: (!h3(seed, r, 3, 0).is_multiple_of(7))
                    .then(|| format!("https://shop{r}.example.com")),
            })
            .collect();
        let mut products = Vec::with_capacity(spec.products as usize);
        let mut offers = Vec::new();
        let mut missing_offers = Vec::new();
        for i in 0..spec.products {
            let h = h3(seed, i, 10, 0);
            let primary = if h % 10 < 8 || n_brands == NAMED_BRANDS.len() {
                ((h >> 8) % NAMED_BRANDS.len() as u64) as usize
            } else {
                NAMED_BRANDS.len() + ((h >> 16) % (n_brands - NAMED_BRANDS.len()) as u64) as usize
            };
            let mut brand_names = vec![brand_name(primary)];
            let h2 = h3(seed, i, 11, 0);
            if h2.is_multiple_of(25) {
                let other = (primary + 1 + ((h2 >> 8) % (n_brands as u64 - 1)) as usize) % n_brands;
                brand_names.push(brand_name(other));
            }
            let id = (500_000 + i).to_string();
            let release = h3(seed, i, 12, 0);
            let release_at = (!release.is_multiple_of(10)).then(|| {
                let day = (release >> 8) % 1500;
                let t = chrono::DateTime::from_timestamp(1_600_000_000 + day as i64 * 86_400, 0)
                    .unwrap_or_default();
                t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            });
            let model = MODELS[((h >> 24) % MODELS.len() as u64) as usize];
            products.push(Product {
                name: format!("{} {model} #{i}", brand_names.join(" x ")),
                description: (!h3(seed, i, 13, 0).is_multiple_of(4))
                    .then(|| format!("{model} in colourway {}", h % 97)),
                release_at,
                brand_names,
                id: id.clone(),
            });
            let roll = unit(h3(seed, i, 14, 0));
            if roll < spec.missing_offers_share {
                missing_offers.push(id);
                continue;
            }
            if roll < spec.missing_offers_share + spec.empty_offers_share {
                continue;
            }
            let count = 1 + h3(seed, i, 15, 0) % u64::from(spec.max_offers);
            for k in 0..count {
                let o = h3(seed, i, 16, k);
                let r = (o >> 8) % retailers_total;
                // A retailer's price level: 40–110, 110–190 or 190–380 dollars.
                let level = match r % 3 {
                    0 => 4_000 + h3(seed, r, 4, 0) % 7_000,
                    1 => 11_000 + h3(seed, r, 4, 0) % 8_000,
                    _ => 19_000 + h3(seed, r, 4, 0) % 19_000,
                };
                // ±15 % around the level.
                let usd = level * (85 + (o >> 20) % 31) / 100;
                let strings = o % 10 < 3;
                offers.push(Offer {
                    id: format!("{:016x}", h3(seed, i, 17, k)),
                    product_id: id.clone(),
                    retailer_id: retailer_id(r),
                    original_currency: ["USD", "GBP", "EUR"][(o % 3) as usize].to_string(),
                    price_usd: price(usd, strings),
                    price_gbp: price(usd * 79 / 100, strings),
                    price_eur: if (o >> 40).is_multiple_of(20) {
                        Value::Null
                    } else {
                        price(usd * 92 / 100, strings)
                    },
                });
            }
        }
        Catalogue {
            brands,
            products,
            offers,
            retailers,
            missing_offers,
        }
    }

    /// The brand called exactly `name` (case-insensitive).
    pub fn brand(&self, name: &str) -> Option<&Brand> {
        self.brands
            .iter()
            .find(|b| b.name.eq_ignore_ascii_case(name))
    }

    /// The products listed under `brand` (by name), in id order as served.
    pub fn products_of(&self, brand: &str) -> Vec<&Product> {
        let mut list: Vec<&Product> = self
            .products
            .iter()
            .filter(|p| p.brand_names.iter().any(|n| n == brand))
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// What a sync of the brands named `names` loads: the brands, their products (a
    /// product of two of them once), the offers of those products and the retailers those
    /// offers name that exist. `None` for an unknown name.
    pub fn expected(&self, names: &[&str]) -> Option<Expected> {
        let mut expected = Expected::default();
        let mut product_ids = BTreeSet::new();
        for name in names {
            let brand = self.brand(name)?;
            expected.brands.push(brand.clone());
            for p in self.products_of(&brand.name) {
                if product_ids.insert(p.id.clone()) {
                    expected.products.push(p.clone());
                }
            }
        }
        let missing: BTreeSet<&String> = self.missing_offers.iter().collect();
        let mut retailer_ids = BTreeSet::new();
        for o in &self.offers {
            // Offers of a product whose offers answer 404 are never seen.
            if product_ids.contains(&o.product_id) && !missing.contains(&o.product_id) {
                retailer_ids.insert(o.retailer_id.clone());
                expected.offers.push(o.clone());
            }
        }
        expected.retailers = self
            .retailers
            .iter()
            .filter(|r| retailer_ids.contains(&r.id))
            .cloned()
            .collect();
        expected.missing_retailers = retailer_ids
            .iter()
            .filter(|id| !self.retailers.iter().any(|r| &r.id == *id))
            .cloned()
            .collect();
        expected.product_requests = product_ids.len() as u64;
        Some(expected)
    }
}

/// What a sync of some brands loads ([`Catalogue::expected`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expected {
    /// The brands, in the order named.
    pub brands: Vec<Brand>,
    /// Their products, each once.
    pub products: Vec<Product>,
    /// The offers of those products.
    pub offers: Vec<Offer>,
    /// The retailers those offers name that exist.
    pub retailers: Vec<Retailer>,
    /// The retailer ids those offers name that answer 404.
    pub missing_retailers: Vec<String>,
    /// The offers requests one sync makes: one per product.
    pub product_requests: u64,
}

/// A resource as the API serves it in `data`: `{id, type, attributes}`.
pub fn resource(kind: &str, id: &str, attributes: Value) -> Value {
    json!({"id": id, "type": kind, "attributes": attributes})
}

impl Brand {
    /// The served JSON.
    pub fn to_json(&self) -> Value {
        resource(
            "brands",
            &self.id,
            json!({"name": self.name, "description": self.description, "website": self.website}),
        )
    }
}

impl Product {
    /// The served JSON.
    pub fn to_json(&self) -> Value {
        resource(
            "products",
            &self.id,
            json!({"name": self.name, "description": self.description,
                   "release_at": self.release_at, "brand_names": self.brand_names}),
        )
    }
}

impl Offer {
    /// The served JSON.
    pub fn to_json(&self) -> Value {
        resource(
            "offers",
            &self.id,
            json!({"product_id": self.product_id, "retailer_id": self.retailer_id,
                   "original_currency": self.original_currency, "price_usd": self.price_usd,
                   "price_gbp": self.price_gbp, "price_eur": self.price_eur}),
        )
    }
}

impl Retailer {
    /// The served JSON.
    pub fn to_json(&self) -> Value {
        resource(
            "retailers",
            &self.id,
            json!({"name": self.name, "website": self.website}),
        )
    }
}

/// Counters of the API routes since the last reset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WdnStats {
    /// Requests per endpoint (`brand_search`, `products`, `offers`, `retailers`) and status.
    pub requests: std::collections::BTreeMap<String, std::collections::BTreeMap<u16, u64>>,
    /// Every API request.
    pub total: u64,
    /// Requests held back because more than `max_concurrency` were in flight.
    pub slowed: u64,
    /// Requests refused (429/503) because `fail_concurrency` were in flight.
    pub refused: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Most requests in flight at once.
    pub peak_concurrency: u64,
    /// Sum of every request's time in flight, milliseconds.
    pub busy_ms: f64,
    /// From the first request's arrival to the last one's end, milliseconds.
    pub span_ms: f64,
    /// `busy_ms / span_ms`: the mean number of requests in flight over the span.
    pub mean_in_flight: f64,
    /// The fault layer's own counters.
    pub faults: crate::faults::FaultStats,
}

impl WdnStats {
    /// Requests of `endpoint` answered `status`.
    pub fn count(&self, endpoint: &str, status: u16) -> u64 {
        self.requests
            .get(endpoint)
            .and_then(|m| m.get(&status))
            .copied()
            .unwrap_or(0)
    }

    /// Requests of `endpoint`, whatever the status.
    pub fn endpoint(&self, endpoint: &str) -> u64 {
        self.requests
            .get(endpoint)
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_has_the_promised_shape() {
        let spec = WdnDataSpec {
            products: 4_000,
            ..WdnDataSpec::default()
        };
        let a = Catalogue::generate(&spec);
        assert_eq!(a, Catalogue::generate(&spec));
        assert_eq!(a.brands.len(), 8);
        for (b, name) in a.brands.iter().zip(NAMED_BRANDS) {
            assert_eq!(b.name, name);
        }
        let expected = a.expected(&NAMED_BRANDS).unwrap();
        // About 80 % of the products are the named brands' (plus collaborations).
        assert!(
            (3_000..=3_600).contains(&expected.products.len()),
            "{}",
            expected.products.len()
        );
        let empty = a
            .products
            .iter()
            .filter(|p| {
                !a.offers.iter().any(|o| o.product_id == p.id) && !a.missing_offers.contains(&p.id)
            })
            .count();
        assert!((1_200..=1_600).contains(&empty), "{empty}");
        assert!((120..=280).contains(&a.missing_offers.len()));
        assert!(a.products.iter().any(|p| p.brand_names.len() == 2));
        assert!(a.offers.iter().any(|o| o.price_usd.is_string()));
        assert!(a.offers.iter().any(|o| o.price_usd.is_number()));
        assert!(a.offers.iter().any(|o| o.price_eur.is_null()));
        assert!(!expected.missing_retailers.is_empty());
        // Offer ids are unique.
        let ids: BTreeSet<&str> = a.offers.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids.len(), a.offers.len());
        assert!(a.expected(&["Nope"]).is_none());
    }

    #[test]
    fn bad_configs_are_refused_naming_the_field() {
        let mut c = WdnConfig::default();
        c.data.brands = 3;
        assert!(c.validate().unwrap_err().to_string().contains("brands 3"));
        let c = WdnConfig {
            fail_concurrency: 5,
            ..WdnConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("fail_concurrency")
        );
    }
}
