//! Generated commercetools resources: pure functions of `(spec, kind, index)`.
//!
//! Every resource kind has its own hash stream; item `i` gets an id, a `createdAt` (strictly
//! increasing with `i` over [`CommercetoolsDataSpec::start`] + `span_days`), a
//! `lastModifiedAt` (≥ `createdAt`, at most 30 days later and not after the span's end) and
//! a `version` (1 when never modified). Bodies are built on demand from the index.

use chrono::{TimeZone as _, Utc};
use serde_json::{Value, json};

use super::CommercetoolsDataSpec;
use crate::faults::{h3, mix64};

/// Kinds of generated resources (hash streams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Customer = 1,
    Order = 2,
    Category = 3,
    Product = 4,
}

const DAY_MS: i64 = 86_400_000;
pub(crate) const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
pub(crate) const ORDER_STATES: [&str; 4] = ["Open", "Confirmed", "Complete", "Cancelled"];
const FIRST: [&str; 16] = [
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Klara",
    "Leon", "Mia", "Noah", "Olivia", "Paul",
];
const LAST: [&str; 12] = [
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Smith",
    "Johnson",
    "Brown",
    "Dupont",
];
const PLACES: [(&str, &str, &str); 6] = [
    ("DE", "Berlin", "10115"),
    ("DE", "München", "80331"),
    ("AT", "Wien", "1010"),
    ("US", "New York", "10001"),
    ("GB", "London", "SW1A 1AA"),
    ("FR", "Paris", "75001"),
];
const STREETS: [&str; 6] = [
    "Hauptstraße",
    "Bahnhofstraße",
    "Main Street",
    "High Street",
    "Rue de Rivoli",
    "Ringstraße",
];
/// `(en, de)` words of category and product names.
const WORDS: [(&str, &str); 16] = [
    ("Shoes", "Schuhe"),
    ("Shirts", "Hemden"),
    ("Hats", "Hüte"),
    ("Bags", "Taschen"),
    ("Jackets", "Jacken"),
    ("Socks", "Socken"),
    ("Watches", "Uhren"),
    ("Belts", "Gürtel"),
    ("Scarves", "Schals"),
    ("Gloves", "Handschuhe"),
    ("Trousers", "Hosen"),
    ("Dresses", "Kleider"),
    ("Sneakers", "Turnschuhe"),
    ("Boots", "Stiefel"),
    ("Sweaters", "Pullover"),
    ("Jewellery", "Schmuck"),
];
const ADJ: [(&str, &str); 8] = [
    ("Classic", "Klassische"),
    ("Modern", "Moderne"),
    ("Summer", "Sommer"),
    ("Winter", "Winter"),
    ("Premium", "Premium"),
    ("Casual", "Lässige"),
    ("Sport", "Sport"),
    ("Vintage", "Vintage"),
];
const COLORS: [(&str, &str, &str); 5] = [
    ("red", "Red", "Rot"),
    ("blue", "Blue", "Blau"),
    ("black", "Black", "Schwarz"),
    ("white", "White", "Weiß"),
    ("green", "Green", "Grün"),
];
const SIZES: [&str; 5] = ["XS", "S", "M", "L", "XL"];

/// The derived constants of one spec.
#[derive(Clone, Debug)]
pub(crate) struct Gen {
    pub spec: CommercetoolsDataSpec,
    start_ms: i64,
    span_ms: i64,
}

/// A small deterministic sequence of hashes.
struct Rng(u64, u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.1 += 1;
        mix64(self.0 ^ self.1.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// RFC 3339 UTC with milliseconds, as commercetools writes times
/// (`2017-01-04T19:54:49.797Z`).
pub(crate) fn fmt_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// A commercetools money value.
pub(crate) fn money(currency: &str, cents: i64) -> Value {
    json!({"type": "centPrecision", "currencyCode": currency, "centAmount": cents, "fractionDigits": 2})
}

fn reference(type_id: &str, id: &str) -> Value {
    json!({"typeId": type_id, "id": id})
}

/// A UUID (version 4 layout) from two hashes.
fn uuid(a: u64, b: u64) -> String {
    let b = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    let a = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        b & 0xFFFF_FFFF_FFFF
    )
}

/// An 8-character address id (commercetools' are short random strings).
fn short_id(h: u64) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|k| A[((h >> (k * 6)) % A.len() as u64) as usize] as char)
        .collect()
}

impl Gen {
    pub fn new(spec: &CommercetoolsDataSpec) -> Gen {
        Gen {
            spec: spec.clone(),
            start_ms: spec.start.timestamp_millis(),
            span_ms: i64::from(spec.span_days.max(1)) * DAY_MS,
        }
    }

    fn rng(&self, kind: Kind, i: u64, salt: u64) -> Rng {
        Rng(h3(self.spec.seed, kind as u64, i, salt), 0)
    }

    pub fn count(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Customer => self.spec.customers,
            Kind::Order => self.spec.orders,
            Kind::Category => u64::from(self.spec.categories),
            Kind::Product => self.spec.products,
        }
    }

    /// The id of item `i`.
    pub fn id(&self, kind: Kind, i: u64) -> String {
        let mut r = self.rng(kind, i, 0x1D);
        uuid(r.next(), r.next())
    }

    /// `createdAt` of item `i`, epoch milliseconds (strictly increasing in `i`).
    pub fn created(&self, kind: Kind, i: u64) -> i64 {
        let n = self.count(kind).max(1) as i64;
        let step = (self.span_ms / n).max(1);
        let jitter = if step > 1 {
            (self.rng(kind, i, 0xC7).next() % step as u64) as i64
        } else {
            0
        };
        self.start_ms + i as i64 * step + jitter
    }

    /// `(lastModifiedAt, version)` of item `i` as generated.
    pub fn modified(&self, kind: Kind, i: u64) -> (i64, u64) {
        let created = self.created(kind, i);
        let mut r = self.rng(kind, i, 0x3D);
        if r.chance(0.4) {
            return (created, 1);
        }
        let room = (self.start_ms + self.span_ms - created).clamp(1, 30 * DAY_MS);
        (created + 1 + r.below(room as u64) as i64, 2 + r.below(8))
    }

    fn common(
        &self,
        kind: Kind,
        i: u64,
        version: u64,
        modified: i64,
    ) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), json!(self.id(kind, i)));
        m.insert("version".into(), json!(version));
        m.insert("createdAt".into(), json!(fmt_ms(self.created(kind, i))));
        m.insert("lastModifiedAt".into(), json!(fmt_ms(modified)));
        m
    }

    fn client_ref(&self) -> Value {
        json!({"clientId": "sluice-sandbox-generator", "isPlatformClient": false})
    }

    /// The id of customer group `g` (0..3).
    pub fn customer_group_id(&self, g: u64) -> String {
        let mut r = Rng(h3(self.spec.seed, 0xC6, g, 0), 0);
        uuid(r.next(), r.next())
    }

    fn aux_id(&self, what: u64, i: u64, k: u64) -> String {
        let mut r = Rng(h3(self.spec.seed, what, i, k), 0);
        uuid(r.next(), r.next())
    }

    fn person(&self, r: &mut Rng) -> (&'static str, &'static str) {
        (*r.pick(&FIRST), *r.pick(&LAST))
    }

    fn address(&self, r: &mut Rng, first: &str, last: &str, id: Option<String>) -> Value {
        let (country, city, zip) = *r.pick(&PLACES);
        let mut a = json!({
            "country": country,
            "firstName": first,
            "lastName": last,
            "streetName": r.pick(&STREETS),
            "streetNumber": (1 + r.below(200)).to_string(),
            "postalCode": zip,
            "city": city,
        });
        if let Some(id) = id {
            a["id"] = json!(id);
        }
        if r.chance(0.5) {
            a["phone"] = json!(format!("+49 30 {:07}", r.below(10_000_000)));
        }
        if r.chance(0.5) {
            a["mobile"] = json!(format!("+49 170 {:07}", r.below(10_000_000)));
        }
        if r.chance(0.2) {
            a["company"] = json!(format!("{last} GmbH"));
        }
        a
    }

    /// Customer `i`.
    pub fn customer(&self, i: u64, version: u64, modified: i64) -> Value {
        let mut r = self.rng(Kind::Customer, i, 0xB0);
        let (first, last) = self.person(&mut r);
        let mut m = self.common(Kind::Customer, i, version, modified);
        if r.chance(0.3) {
            m.insert("key".into(), json!(format!("customer-{i}")));
        }
        m.insert("customerNumber".into(), json!(format!("C{:07}", i + 1)));
        m.insert("lastModifiedBy".into(), self.client_ref());
        m.insert("createdBy".into(), self.client_ref());
        m.insert("email".into(), json!(email(first, last, i)));
        m.insert("firstName".into(), json!(first));
        m.insert("lastName".into(), json!(last));
        if r.chance(0.3) {
            m.insert(
                "dateOfBirth".into(),
                json!(format!(
                    "19{:02}-{:02}-{:02}",
                    50 + r.below(50),
                    1 + r.below(12),
                    1 + r.below(28)
                )),
            );
        }
        m.insert(
            "password".into(),
            json!(format!("****{}=", &short_id(r.next())[..3])),
        );
        let n_addr = r.below(4);
        let addresses: Vec<Value> = (0..n_addr)
            .map(|k| {
                let id = short_id(h3(self.spec.seed, 0xAD, i, k));
                self.address(&mut r, first, last, Some(id))
            })
            .collect();
        let ids: Vec<String> = addresses
            .iter()
            .filter_map(|a| a["id"].as_str().map(str::to_owned))
            .collect();
        let mut billing = Vec::new();
        let mut shipping = Vec::new();
        for id in &ids {
            if r.chance(0.6) {
                billing.push(id.clone());
            }
            if r.chance(0.7) {
                shipping.push(id.clone());
            }
        }
        if let Some(b) = billing.first().filter(|_| r.chance(0.7)) {
            m.insert("defaultBillingAddressId".into(), json!(b));
        }
        if let Some(s) = shipping.first().filter(|_| r.chance(0.7)) {
            m.insert("defaultShippingAddressId".into(), json!(s));
        }
        m.insert("addresses".into(), json!(addresses));
        m.insert("shippingAddressIds".into(), json!(shipping));
        m.insert("billingAddressIds".into(), json!(billing));
        m.insert("isEmailVerified".into(), json!(r.chance(0.6)));
        if r.chance(0.3) {
            let g = r.below(3);
            m.insert(
                "customerGroup".into(),
                reference("customer-group", &self.customer_group_id(g)),
            );
        }
        m.insert(
            "locale".into(),
            json!(*r.pick(&["en", "de", "de-AT", "en-GB", "fr"])),
        );
        m.insert("stores".into(), json!([]));
        m.insert("authenticationMode".into(), json!("Password"));
        m.insert("customerGroupAssignments".into(), json!([]));
        Value::Object(m)
    }

    /// The parent of category `i` (categories `0..roots` are roots; others hang under an
    /// earlier one at most 4 levels down). `depth` holds the depths of `0..i`.
    pub fn category_parent(&self, i: u64, depth: &[u8]) -> Option<u64> {
        let roots = (u64::from(self.spec.categories) / 10).clamp(1, 12);
        if i < roots {
            return None;
        }
        let mut j = self.rng(Kind::Category, i, 0x9A).next() % i;
        while depth.get(j as usize).copied().unwrap_or(0) >= 4 {
            j = self.rng(Kind::Category, j, 0x9A).next() % j.max(1);
        }
        Some(j)
    }

    fn category_name(&self, i: u64) -> (String, String) {
        let (en, de) = WORDS[(i % WORDS.len() as u64) as usize];
        let (aen, ade) = ADJ[((i / WORDS.len() as u64) % ADJ.len() as u64) as usize];
        if i < WORDS.len() as u64 {
            (en.to_owned(), de.to_owned())
        } else {
            (format!("{aen} {en} {i}"), format!("{ade} {de} {i}"))
        }
    }

    /// Category `i` with `ancestors` (root first) as category indices.
    pub fn category(&self, i: u64, version: u64, modified: i64, ancestors: &[u64]) -> Value {
        let mut r = self.rng(Kind::Category, i, 0xB0);
        let (en, de) = self.category_name(i);
        let mut m = self.common(Kind::Category, i, version, modified);
        if r.chance(0.5) {
            m.insert("key".into(), json!(format!("category-{i}")));
        }
        m.insert("name".into(), json!({"en": en, "de": de}));
        m.insert(
            "slug".into(),
            json!({"en": slug(&en, i), "de": slug(&de, i)}),
        );
        if r.chance(0.5) {
            m.insert(
                "description".into(),
                json!({"en": format!("All {en}"), "de": format!("Alle {de}")}),
            );
        }
        m.insert(
            "ancestors".into(),
            json!(
                ancestors
                    .iter()
                    .map(|a| reference("category", &self.id(Kind::Category, *a)))
                    .collect::<Vec<_>>()
            ),
        );
        if let Some(p) = ancestors.last() {
            m.insert(
                "parent".into(),
                reference("category", &self.id(Kind::Category, *p)),
            );
        }
        m.insert("orderHint".into(), json!(format!("0.{}", 1 + r.below(999))));
        m.insert("assets".into(), json!([]));
        m.insert("lastModifiedBy".into(), self.client_ref());
        m.insert("createdBy".into(), self.client_ref());
        Value::Object(m)
    }

    /// `(published, hasStagedChanges)` of product `i`.
    pub fn product_flags(&self, i: u64) -> (bool, bool) {
        let mut r = self.rng(Kind::Product, i, 0xF1);
        let published = !r.chance(0.1);
        (published, r.chance(0.2))
    }

    /// The base unit price of product `i`'s variant `v` in `currency`, cents.
    pub fn unit_price(&self, i: u64, v: u64, currency: &str) -> i64 {
        let base = 500 + (h3(self.spec.seed, 0x9E, i, v) % 20_000) as i64;
        match currency {
            "USD" => base * 11 / 10,
            "GBP" => base * 86 / 100,
            _ => base,
        }
    }

    fn variant(&self, i: u64, v: u64, staged: bool) -> Value {
        let mut r = self.rng(Kind::Product, i, 0x7A00 + v);
        let currencies = 1 + r.below(3) as usize;
        let mut prices = Vec::new();
        for (k, c) in CURRENCIES.iter().take(currencies).enumerate() {
            let cents = self.unit_price(i, v, c) + if staged { 100 } else { 0 };
            let mut p = json!({
                "id": self.aux_id(0x9F, i, v * 16 + k as u64),
                "value": money(c, cents),
            });
            if *c == "EUR" && r.chance(0.3) {
                p["country"] = json!("DE");
            }
            if r.chance(0.3) {
                p["validFrom"] = json!(fmt_ms(self.start_ms));
                p["validUntil"] = json!(fmt_ms(self.start_ms + self.span_ms));
            }
            prices.push(p);
            if r.chance(0.25) {
                prices.push(json!({
                    "id": self.aux_id(0x9F, i, v * 16 + 8 + k as u64),
                    "value": money(c, cents * 9 / 10),
                    "customerGroup": reference("customer-group", &self.customer_group_id(r.below(3))),
                }));
            }
        }
        let images: Vec<Value> = (0..r.below(3))
            .map(|k| {
                json!({
                    "url": format!("https://images.example.com/products/{i}/{v}/{k}.jpg"),
                    "dimensions": {"w": 1400, "h": 1400},
                })
            })
            .collect();
        let (ckey, cen, cde) = *r.pick(&COLORS);
        let mut out = json!({
            "id": v + 1,
            "sku": format!("SKU-{i:06}-{}", v + 1),
            "prices": prices,
            "images": images,
            "attributes": [
                {"name": "color", "value": {"key": ckey, "label": {"en": cen, "de": cde}}},
                {"name": "size", "value": *r.pick(&SIZES)},
            ],
            "assets": [],
        });
        if r.chance(0.5) {
            out["key"] = json!(format!("variant-{i}-{}", v + 1));
        }
        out
    }

    /// The category indices of product `i`.
    pub fn product_categories(&self, i: u64) -> Vec<u64> {
        let n = u64::from(self.spec.categories);
        if n == 0 {
            return Vec::new();
        }
        let mut r = self.rng(Kind::Product, i, 0xCA);
        let mut out: Vec<u64> = (0..1 + r.below(3)).map(|_| r.below(n)).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn product_name(&self, i: u64) -> (String, String) {
        let (en, de) = WORDS[(h3(self.spec.seed, 0x4E, i, 0) % WORDS.len() as u64) as usize];
        let (aen, ade) = ADJ[(h3(self.spec.seed, 0x4E, i, 1) % ADJ.len() as u64) as usize];
        (
            format!("{aen} {en} {}", i + 1),
            format!("{ade} {de} {}", i + 1),
        )
    }

    /// Number of variants besides the master variant.
    fn variants(&self, i: u64) -> u64 {
        self.rng(Kind::Product, i, 0x7B).below(4)
    }

    /// The `ProductData` of product `i` (`staged`: the draft, which differs from the
    /// current data when the product has staged changes).
    pub fn product_data(&self, i: u64, staged: bool) -> Value {
        let (_, changes) = self.product_flags(i);
        let staged = staged && changes;
        let (mut en, mut de) = self.product_name(i);
        if staged {
            en.push_str(" (new)");
            de.push_str(" (neu)");
        }
        let mut r = self.rng(Kind::Product, i, 0xB0);
        let categories: Vec<Value> = self
            .product_categories(i)
            .into_iter()
            .map(|c| reference("category", &self.id(Kind::Category, c)))
            .collect();
        let mut d = json!({
            "name": {"en": en, "de": de},
            "categories": categories,
            "categoryOrderHints": {},
            "slug": {"en": slug(&self.product_name(i).0, i), "de": slug(&self.product_name(i).1, i)},
            "masterVariant": self.variant(i, 0, staged),
            "variants": (1..=self.variants(i)).map(|v| self.variant(i, v, staged)).collect::<Vec<_>>(),
            "searchKeywords": {},
            "attributes": [],
        });
        if r.chance(0.7) {
            d["description"] = json!({
                "en": format!("<p>{en}, made to last.</p>"),
                "de": format!("<p>{de}, für lange Zeit.</p>"),
                "fr": format!("<p>{en}, fait pour durer.</p>"),
            });
        }
        if r.chance(0.3) {
            d["metaTitle"] = json!({"en": en});
        }
        d
    }

    fn product_type_id(&self, i: u64) -> String {
        self.aux_id(0x77, 0, i % 3)
    }

    /// Product `i`.
    pub fn product(&self, i: u64, version: u64, modified: i64) -> Value {
        let (published, changes) = self.product_flags(i);
        let mut m = self.common(Kind::Product, i, version, modified);
        if self.rng(Kind::Product, i, 0xE1).chance(0.5) {
            m.insert("key".into(), json!(format!("product-{i}")));
        }
        m.insert(
            "productType".into(),
            reference("product-type", &self.product_type_id(i)),
        );
        m.insert(
            "taxCategory".into(),
            reference("tax-category", &self.aux_id(0x7C, 0, 0)),
        );
        m.insert(
            "masterData".into(),
            json!({
                "current": self.product_data(i, false),
                "staged": self.product_data(i, true),
                "published": published,
                "hasStagedChanges": changes,
            }),
        );
        m.insert("lastModifiedBy".into(), self.client_ref());
        m.insert("createdBy".into(), self.client_ref());
        Value::Object(m)
    }

    /// The product projection of product `i` (`staged`: of the draft).
    pub fn product_projection(&self, i: u64, version: u64, modified: i64, staged: bool) -> Value {
        let (published, changes) = self.product_flags(i);
        let mut m = self.common(Kind::Product, i, version, modified);
        let p = self.product(i, version, modified);
        for k in ["key", "productType", "taxCategory"] {
            if let Some(v) = p.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        if let Value::Object(d) = self.product_data(i, staged) {
            m.extend(d);
        }
        m.insert("hasStagedChanges".into(), json!(changes));
        m.insert("published".into(), json!(published));
        Value::Object(m)
    }

    /// Order `i`.
    pub fn order(&self, i: u64, version: u64, modified: i64) -> Value {
        let mut r = self.rng(Kind::Order, i, 0xB0);
        let mut m = self.common(Kind::Order, i, version, modified);
        m.insert("type".into(), json!("Order"));
        let currency = *r.pick(&CURRENCIES);
        let state = ORDER_STATES[(i % 4) as usize];
        if r.chance(0.8) {
            m.insert("orderNumber".into(), json!(format!("ORD-{:08}", i + 1)));
        }
        let (first, last) = self.person(&mut r);
        if self.spec.customers > 0 && r.chance(0.85) {
            let c = r.below(self.spec.customers);
            let mut cr = self.rng(Kind::Customer, c, 0xB0);
            let (cf, cl) = self.person(&mut cr);
            m.insert("customerId".into(), json!(self.id(Kind::Customer, c)));
            m.insert("customerEmail".into(), json!(email(cf, cl, c)));
        } else {
            m.insert(
                "customerEmail".into(),
                json!(format!("guest.{i}@example.com")),
            );
            m.insert("anonymousId".into(), json!(self.aux_id(0xA0, i, 0)));
        }
        let mut total = 0i64;
        let mut line_items = Vec::new();
        if self.spec.products > 0 {
            for k in 0..1 + r.below(4) {
                let p = r.below(self.spec.products);
                let v = r.below(1 + self.variants(p));
                let qty = 1 + r.below(3) as i64;
                let unit = self.unit_price(p, v, currency);
                let (en, de) = self.product_name(p);
                let line = unit * qty;
                total += line;
                let net = line * 100 / 119;
                line_items.push(json!({
                    "id": self.aux_id(0x11, i, k),
                    "productId": self.id(Kind::Product, p),
                    "productKey": format!("product-{p}"),
                    "name": {"en": en, "de": de},
                    "productType": {"typeId": "product-type", "id": self.product_type_id(p), "version": 1},
                    "productSlug": {"en": slug(&en, p), "de": slug(&de, p)},
                    "variant": {
                        "id": v + 1,
                        "sku": format!("SKU-{p:06}-{}", v + 1),
                        "prices": [],
                        "images": [],
                        "attributes": [],
                        "assets": [],
                    },
                    "price": {"id": self.aux_id(0x9F, p, v * 16), "value": money(currency, unit)},
                    "quantity": qty,
                    "discountedPricePerQuantity": [],
                    "taxRate": {"name": "Standard", "amount": 0.19, "includedInPrice": true, "country": "DE", "subRates": []},
                    "state": [{"quantity": qty, "state": {"typeId": "state", "id": self.aux_id(0x57, 0, 0)}}],
                    "priceMode": "Platform",
                    "lineItemMode": "Standard",
                    "totalPrice": money(currency, line),
                    "taxedPrice": {
                        "totalNet": money(currency, net),
                        "totalGross": money(currency, line),
                        "totalTax": money(currency, line - net),
                    },
                    "perMethodTaxRate": [],
                    "taxedPricePortions": [],
                }));
            }
        }
        let mut custom = Vec::new();
        if line_items.is_empty() || r.chance(0.4) {
            for k in 0..1 + r.below(2) {
                let cents = 100 + r.below(900) as i64;
                total += cents;
                let (en, de, s) = if k == 0 {
                    ("Gift wrapping", "Geschenkverpackung", "gift-wrapping")
                } else {
                    ("Express handling", "Expressbearbeitung", "express-handling")
                };
                custom.push(json!({
                    "id": self.aux_id(0x12, i, k),
                    "name": {"en": en, "de": de},
                    "money": money(currency, cents),
                    "totalPrice": money(currency, cents),
                    "slug": s,
                    "quantity": 1,
                    "discountedPricePerQuantity": [],
                    "state": [{"quantity": 1, "state": {"typeId": "state", "id": self.aux_id(0x57, 0, 0)}}],
                    "taxedPricePortions": [],
                    "perMethodTaxRate": [],
                    "priceMode": "Standard",
                }));
            }
        }
        let net = total * 100 / 119;
        m.insert("totalPrice".into(), money(currency, total));
        m.insert(
            "taxedPrice".into(),
            json!({
                "totalNet": money(currency, net),
                "totalGross": money(currency, total),
                "taxPortions": [{"rate": 0.19, "amount": money(currency, total - net), "name": "Standard"}],
                "totalTax": money(currency, total - net),
            }),
        );
        m.insert("orderState".into(), json!(state));
        if state == "Complete" {
            m.insert("completedAt".into(), json!(fmt_ms(modified)));
            m.insert("shipmentState".into(), json!("Shipped"));
            m.insert("paymentState".into(), json!("Paid"));
        } else if state == "Confirmed" {
            m.insert("paymentState".into(), json!("Pending"));
        }
        let address = self.address(&mut r, first, last, None);
        m.insert("shippingAddress".into(), address.clone());
        m.insert("billingAddress".into(), address.clone());
        m.insert("country".into(), address["country"].clone());
        m.insert("locale".into(), json!(*r.pick(&["en", "de"])));
        m.insert("syncInfo".into(), json!([]));
        m.insert("returnInfo".into(), json!([]));
        m.insert("refusedGifts".into(), json!([]));
        m.insert("taxMode".into(), json!("Platform"));
        m.insert("inventoryMode".into(), json!("None"));
        m.insert("taxRoundingMode".into(), json!("HalfEven"));
        m.insert("taxCalculationMode".into(), json!("LineItemLevel"));
        m.insert("lineItems".into(), json!(line_items));
        m.insert("customLineItems".into(), json!(custom));
        m.insert("discountCodes".into(), json!([]));
        m.insert("origin".into(), json!("Customer"));
        m.insert("shipping".into(), json!([]));
        m.insert("shippingMode".into(), json!("Single"));
        m.insert("lastModifiedBy".into(), self.client_ref());
        m.insert("createdBy".into(), self.client_ref());
        Value::Object(m)
    }
}

/// A URL slug of `name`, unique by `i`.
fn slug(name: &str, i: u64) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '-' })
        .collect();
    format!("{}-{i}", s.trim_matches('-'))
}

/// The email of a customer `first last` number `i`.
fn email(first: &str, last: &str, i: u64) -> String {
    format!(
        "{}.{}.{i}@example.com",
        first.to_lowercase(),
        last.to_lowercase().replace('ü', "ue")
    )
}
