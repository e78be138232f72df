//! Category → catalog category; published product → catalog item and variants
//! (REFERENCE "Category → catalog category", "Published product → catalog item").

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{Options, UPSERT, catalog_id, localize, price, resource_id};

/// The `url` of a product when no `PRODUCT_URL_TEMPLATE` is set: the plugin's literal
/// placeholder (Klaviyo requires a `url` on create).
pub const NO_URL: &str = "None";

/// One `klaviyo.catalog-category` row to create or update.
#[derive(Debug, Clone, PartialEq)]
pub struct Category {
    /// `$custom:::$default:::<category id>`.
    pub id: String,
    /// `external_id`, `name`, `integration_type`, `catalog_type`.
    pub attributes: Value,
}

impl Category {
    /// The row in [`super::CATALOG_CATEGORY`]'s column order.
    pub fn row(self) -> Vec<Value> {
        vec![json!(self.id), json!(UPSERT), self.attributes]
    }
}

/// A category as a catalog category: `external_id` = its id, `name` = its ancestors'
/// localized names and its own, root first, joined by " > " (needs
/// `expand=ancestors[*]`).
///
/// # Errors
/// No id, no name, or an ancestor that was not expanded (the name would be wrong).
pub fn category(category: &Value, options: &Options) -> Result<Category, String> {
    let id = resource_id(category)?;
    let locale = options.locale();
    let mut names = Vec::new();
    for (i, ancestor) in category["ancestors"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .enumerate()
    {
        let name = localize::text(&ancestor["obj"]["name"], locale).ok_or_else(|| {
            format!(
                "ancestor {} ({}) is not expanded with a name (expand=ancestors[*]): the catalog name would be wrong",
                i + 1,
                ancestor["id"].as_str().unwrap_or("without id")
            )
        })?;
        names.push(name);
    }
    names.push(localize::text(&category["name"], locale).ok_or("no name")?);
    Ok(Category {
        id: catalog_id(id),
        attributes: json!({
            "external_id": id,
            "name": names.join(" > "),
            "integration_type": "$custom",
            "catalog_type": "$default",
        }),
    })
}

/// One `klaviyo.catalog-item` row to create or update.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// `$custom:::$default:::<product id>`.
    pub id: String,
    /// Create attributes of a catalog item.
    pub attributes: Value,
    /// `{categories: {data: [{type: "catalog-category", id}]}}`, null without categories.
    pub relationships: Value,
}

impl Item {
    /// The row in [`super::CATALOG_ITEM`]'s column order.
    pub fn row(self) -> Vec<Value> {
        vec![
            json!(self.id),
            json!(UPSERT),
            self.attributes,
            self.relationships,
        ]
    }
}

/// One `klaviyo.catalog-variant` row to create or update.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// `$custom:::$default:::<sku>`.
    pub id: String,
    /// The item's catalog id.
    pub item_id: String,
    /// Create attributes of a catalog variant.
    pub attributes: Value,
    /// `{item: {data: {type: "catalog-item", id}}}`.
    pub relationships: Value,
}

impl Variant {
    /// The row in [`super::CATALOG_VARIANT`]'s column order.
    pub fn row(self) -> Vec<Value> {
        vec![
            json!(self.id),
            json!(UPSERT),
            json!(self.item_id),
            self.attributes,
            self.relationships,
        ]
    }
}

/// A variant that cannot be sent, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedVariant {
    /// The variant's `id` within its product (null when it has none).
    pub variant_id: Value,
    /// The reason.
    pub reason: String,
    /// The variant as served.
    pub variant: Value,
}

/// A product's catalog objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    /// The item.
    pub item: Item,
    /// Its variants that can be sent (master first).
    pub variants: Vec<Variant>,
    /// Its variants that cannot.
    pub rejected: Vec<RejectedVariant>,
}

/// The product data to map: `masterData.current` of a product, or the product projection
/// itself.
fn data(product: &Value) -> &Value {
    let current = &product["masterData"]["current"];
    if current.is_object() {
        current
    } else {
        product
    }
}

/// `{title_json, slug_json, price_json, currency_json}`: the plugin's custom metadata,
/// each a JSON text: `title_<locale>` and `slug_<locale>` for every locale;
/// `price_<currency>` = the chosen price ([`price::choose`]) in each currency of `prices`,
/// and for a chosen price with a `country`, `price_<country>` and `currency_<country>`.
/// Currencies without a choosable price are left out; so are the price entries without
/// prices.
fn custom_metadata(data: &Value, prices: &Value, now: DateTime<Utc>) -> Value {
    let per_locale = |field: &str, prefix: &str| {
        let m: BTreeMap<String, &Value> = data[field]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(l, v)| (format!("{prefix}_{l}"), v))
                    .collect()
            })
            .unwrap_or_default();
        json!(m).to_string()
    };
    let mut out = Map::new();
    out.insert("title_json".into(), json!(per_locale("name", "title")));
    out.insert("slug_json".into(), json!(per_locale("slug", "slug")));
    if let Some(list) = prices.as_array().filter(|l| !l.is_empty()) {
        let mut currencies: Vec<&str> = Vec::new();
        for p in list {
            if let Some(c) = p["value"]["currencyCode"].as_str()
                && !currencies.contains(&c)
            {
                currencies.push(c);
            }
        }
        let mut by_price = BTreeMap::new();
        let mut by_country = BTreeMap::new();
        for c in currencies {
            let Some(chosen) = price::choose(prices, Some(c), now) else {
                continue;
            };
            let Some(amount) = price::amount(&chosen["value"]) else {
                continue;
            };
            by_price.insert(format!("price_{c}"), json!(amount));
            if let Some(country) = chosen["country"].as_str() {
                by_price.insert(format!("price_{country}"), json!(amount));
                by_country.insert(format!("currency_{country}"), json!(c));
            }
        }
        out.insert("price_json".into(), json!(json!(by_price).to_string()));
        out.insert("currency_json".into(), json!(json!(by_country).to_string()));
    }
    Value::Object(out)
}

/// The price of a variant: the chosen one's amount, 0 when none qualifies and no
/// currency is preferred.
///
/// # Errors
/// A preferred currency in which no price qualifies.
fn variant_price(prices: &Value, options: &Options, now: DateTime<Utc>) -> Result<f64, String> {
    match (
        price::chosen_amount(prices, options.currency(), now),
        options.currency(),
    ) {
        (Some(a), _) => Ok(a),
        (None, None) => Ok(0.0),
        (None, Some(c)) => Err(format!(
            "no price in the preferred currency {c} valid at {} (nor one without dates and customer group)",
            now.format("%Y-%m-%dT%H:%M:%SZ")
        )),
    }
}

fn first_image(variant: &Value) -> Option<&str> {
    variant["images"][0]["url"]
        .as_str()
        .filter(|s| !s.is_empty())
}

/// A published product (its `masterData.current`, or a current product projection) as a
/// catalog item and variants:
/// - item `$custom:::$default:::<product id>`: `title` (localized name), `description`
///   (localized, "" without one), `url` = `product_url_template` with `{{productSlug}}`
///   replaced by the localized slug ([`NO_URL`] without a template), `image_full_url` =
///   the master variant's first image, `price` (master variant), `published` true,
///   `custom_metadata`, and categories = the product's categories and all their
///   ancestors (needs `expand=categories[*]`), each once;
/// - each variant (master, then variants) with a SKU → `$custom:::$default:::<sku>`:
///   `sku`, the product's title/description/url, the variant's first image,
///   `inventory_quantity` = `availability.availableQuantity` or 0, `inventory_policy` 1,
///   `price`, `published` true, `custom_metadata`, and the item link.
///
/// Prices are chosen at `now` ([`price::choose`]), in the preferred currency when one is
/// set. A variant without a SKU, or without a price in the preferred currency, is
/// rejected with its reason and the rest is sent.
///
/// # Errors
/// No id, no name, no master variant, or a master variant without a price in the
/// preferred currency (the item's price): the whole product is rejected.
pub fn product(product: &Value, options: &Options, now: DateTime<Utc>) -> Result<Product, String> {
    let product_id = resource_id(product)?;
    let d = data(product);
    let locale = options.locale();
    let master = &d["masterVariant"];
    if !master.is_object() {
        return Err("no masterVariant".into());
    }
    let title = localize::text(&d["name"], locale).ok_or("no name")?;
    let description = localize::text_or_empty(&d["description"], locale);
    let url = match options.product_url_template.as_deref() {
        Some(template) if !template.trim().is_empty() => template.replace(
            "{{productSlug}}",
            localize::text(&d["slug"], locale).unwrap_or_default(),
        ),
        _ => NO_URL.to_string(),
    };
    let item_price = variant_price(&master["prices"], options, now)
        .map_err(|e| format!("the master variant (the item's price): {e}"))?;
    let item_id = catalog_id(product_id);

    let mut categories: Vec<String> = Vec::new();
    let refs = d["categories"].as_array().map_or(&[][..], Vec::as_slice);
    let ancestors = refs.iter().flat_map(|r| {
        r["obj"]["ancestors"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
    });
    for id in refs
        .iter()
        .chain(ancestors)
        .filter_map(|r| r["id"].as_str())
    {
        let id = catalog_id(id);
        if !categories.contains(&id) {
            categories.push(id);
        }
    }
    let relationships = if categories.is_empty() {
        Value::Null
    } else {
        json!({"categories": {"data": categories
            .iter()
            .map(|id| json!({"type": "catalog-category", "id": id}))
            .collect::<Vec<_>>()}})
    };
    let mut attributes = json!({
        "external_id": product_id,
        "integration_type": "$custom",
        "catalog_type": "$default",
        "title": title,
        "description": description,
        "url": url,
        "price": item_price,
        "published": true,
        "custom_metadata": custom_metadata(d, &master["prices"], now),
    });
    if let Some(image) = first_image(master) {
        attributes["image_full_url"] = json!(image);
    }
    let item = Item {
        id: item_id.clone(),
        attributes,
        relationships,
    };

    let mut variants = Vec::new();
    let mut rejected = Vec::new();
    let others = d["variants"].as_array().map_or(&[][..], Vec::as_slice);
    for variant in std::iter::once(master).chain(others) {
        let reject = |reason: String| RejectedVariant {
            variant_id: variant["id"].clone(),
            reason,
            variant: variant.clone(),
        };
        let Some(sku) = variant["sku"].as_str().filter(|s| !s.trim().is_empty()) else {
            rejected.push(reject(format!(
                "variant {} has no SKU, which is its Klaviyo catalog id",
                variant["id"]
            )));
            continue;
        };
        let price = match variant_price(&variant["prices"], options, now) {
            Ok(p) => p,
            Err(e) => {
                rejected.push(reject(format!(
                    "variant {} (SKU {sku}): {e}",
                    variant["id"]
                )));
                continue;
            }
        };
        let quantity = variant["availability"]["availableQuantity"]
            .as_f64()
            .filter(|q| q.is_finite())
            .unwrap_or(0.0);
        let mut attributes = json!({
            "external_id": sku,
            "integration_type": "$custom",
            "catalog_type": "$default",
            "title": title,
            "description": description,
            "sku": sku,
            "url": item.attributes["url"],
            "inventory_quantity": quantity,
            "inventory_policy": 1,
            "price": price,
            "published": true,
            "custom_metadata": custom_metadata(d, &variant["prices"], now),
        });
        if let Some(image) = first_image(variant) {
            attributes["image_full_url"] = json!(image);
        }
        variants.push(Variant {
            id: catalog_id(sku),
            item_id: item_id.clone(),
            attributes,
            relationships: json!({"item": {"data": {"type": "catalog-item", "id": item_id}}}),
        });
    }
    Ok(Product {
        item,
        variants,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn options(currency: Option<&str>) -> Options {
        Options {
            preferred_locale: Some("de-AT".into()),
            preferred_currency: currency.map(str::to_string),
            product_url_template: Some("https://shop.example/p/{{productSlug}}".into()),
            ..Options::default()
        }
    }

    fn price(currency: &str, cents: i64) -> Value {
        json!({"value": {"currencyCode": currency, "centAmount": cents, "fractionDigits": 2}})
    }

    fn projection() -> Value {
        json!({
            "id": "p1", "version": 3,
            "name": {"en": "Jeans", "de": "Hose"},
            "slug": {"en": "jeans", "de": "hose"},
            "categories": [
                {"typeId": "category", "id": "jeans", "obj": {"id": "jeans", "ancestors": [
                    {"typeId": "category", "id": "women"}, {"typeId": "category", "id": "pants"}]}},
                {"typeId": "category", "id": "pants", "obj": {"id": "pants", "ancestors": [
                    {"typeId": "category", "id": "women"}]}}
            ],
            "masterVariant": {"id": 1, "sku": "J-1",
                "prices": [price("USD", 2500), {"value": {"currencyCode": "EUR", "centAmount": 1999, "fractionDigits": 2}, "country": "AT"}],
                "images": [{"url": "https://img.example/1.jpg"}, {"url": "https://img.example/2.jpg"}],
                "availability": {"availableQuantity": 7}},
            "variants": [
                {"id": 2, "sku": "J-2", "prices": [price("EUR", 2099)], "images": []},
                {"id": 3, "prices": [price("EUR", 2199)]},
                {"id": 4, "sku": "J-4", "prices": [price("USD", 2199)]}
            ]
        })
    }

    #[test]
    fn a_category_is_named_by_its_ancestors() {
        let c = json!({"id": "jeans", "name": {"en": "Jeans", "de": "Jeans-de"}, "ancestors": [
            {"typeId": "category", "id": "women", "obj": {"name": {"en": "Women", "de": "Damen"}}},
            {"typeId": "category", "id": "pants", "obj": {"name": {"en": "Pants"}}}
        ]});
        let mapped = category(&c, &options(None)).unwrap();
        assert_eq!(mapped.id, "$custom:::$default:::jeans");
        assert_eq!(
            mapped.attributes,
            json!({"external_id": "jeans", "name": "Damen > Pants > Jeans-de",
                   "integration_type": "$custom", "catalog_type": "$default"})
        );
        assert_eq!(mapped.row()[1], json!("upsert"));
        let mut unexpanded = c.clone();
        unexpanded["ancestors"][1] = json!({"typeId": "category", "id": "pants"});
        assert!(
            category(&unexpanded, &options(None))
                .unwrap_err()
                .contains("pants")
        );
    }

    #[test]
    fn a_product_is_an_item_and_its_variants_with_a_sku_and_a_price() {
        let p = product(&projection(), &options(Some("EUR")), now()).unwrap();
        let item = &p.item;
        assert_eq!(item.id, "$custom:::$default:::p1");
        assert_eq!(item.attributes["external_id"], "p1");
        assert_eq!(item.attributes["title"], "Hose");
        assert_eq!(item.attributes["description"], "");
        assert_eq!(item.attributes["url"], "https://shop.example/p/hose");
        assert_eq!(
            item.attributes["image_full_url"],
            "https://img.example/1.jpg"
        );
        assert_eq!(item.attributes["price"], json!(19.99));
        assert_eq!(item.attributes["published"], true);
        assert_eq!(
            item.relationships,
            json!({"categories": {"data": [
                {"type": "catalog-category", "id": "$custom:::$default:::jeans"},
                {"type": "catalog-category", "id": "$custom:::$default:::pants"},
                {"type": "catalog-category", "id": "$custom:::$default:::women"}
            ]}})
        );
        let meta = &item.attributes["custom_metadata"];
        assert_eq!(
            meta["title_json"],
            json!(r#"{"title_de":"Hose","title_en":"Jeans"}"#)
        );
        assert_eq!(
            meta["slug_json"],
            json!(r#"{"slug_de":"hose","slug_en":"jeans"}"#)
        );
        assert_eq!(
            meta["price_json"],
            json!(r#"{"price_AT":19.99,"price_EUR":19.99,"price_USD":25.0}"#)
        );
        assert_eq!(meta["currency_json"], json!(r#"{"currency_AT":"EUR"}"#));

        let skus: Vec<&str> = p
            .variants
            .iter()
            .map(|v| v.attributes["sku"].as_str().unwrap())
            .collect();
        assert_eq!(skus, vec!["J-1", "J-2"]);
        let master = &p.variants[0];
        assert_eq!(master.id, "$custom:::$default:::J-1");
        assert_eq!(master.item_id, item.id);
        assert_eq!(master.attributes["external_id"], "J-1");
        assert_eq!(master.attributes["inventory_quantity"], json!(7.0));
        assert_eq!(master.attributes["inventory_policy"], 1);
        assert_eq!(master.attributes["title"], "Hose");
        assert_eq!(master.attributes["url"], item.attributes["url"]);
        assert_eq!(
            master.relationships,
            json!({"item": {"data": {"type": "catalog-item", "id": "$custom:::$default:::p1"}}})
        );
        let second = &p.variants[1];
        assert_eq!(second.attributes["price"], json!(20.99));
        assert_eq!(second.attributes["inventory_quantity"], json!(0.0));
        assert!(second.attributes.get("image_full_url").is_none());
        assert_eq!(second.clone().row()[2], json!("$custom:::$default:::p1"));

        assert_eq!(p.rejected.len(), 2);
        assert_eq!(p.rejected[0].variant_id, json!(3));
        assert!(
            p.rejected[0].reason.contains("no SKU"),
            "{}",
            p.rejected[0].reason
        );
        assert_eq!(p.rejected[1].variant_id, json!(4));
        assert!(
            p.rejected[1].reason.contains("EUR"),
            "{}",
            p.rejected[1].reason
        );
    }

    #[test]
    fn without_a_preferred_currency_the_first_price_or_zero() {
        let mut raw = projection();
        raw["masterVariant"]["prices"] = json!([]);
        let p = product(&raw, &options(None), now()).unwrap();
        assert_eq!(p.item.attributes["price"], json!(0.0));
        assert!(
            p.item.attributes["custom_metadata"]
                .get("price_json")
                .is_none()
        );
        // Variant 4 has only a USD price: fine without a preferred currency.
        assert_eq!(p.variants.len(), 3);
        assert_eq!(p.variants[2].attributes["price"], json!(21.99));
        // The master without a EUR price takes the whole product down.
        let err = product(&raw, &options(Some("EUR")), now()).unwrap_err();
        assert!(
            err.contains("master variant") && err.contains("EUR"),
            "{err}"
        );
    }

    #[test]
    fn no_template_gives_the_plugins_placeholder_url_and_a_product_without_categories_has_no_relationships()
     {
        let mut raw = projection();
        raw["categories"] = json!([]);
        raw["description"] = json!({"en": "Blue"});
        let o = Options {
            product_url_template: None,
            ..options(None)
        };
        let p = product(&raw, &o, now()).unwrap();
        assert_eq!(p.item.attributes["url"], NO_URL);
        assert_eq!(p.item.relationships, Value::Null);
        assert_eq!(p.item.attributes["description"], "Blue");
    }

    #[test]
    fn the_real_example_product_and_projection() {
        let o = Options::default();
        for name in ["product", "product-projection"] {
            let raw = super::super::fixtures::example(name);
            let p = product(&raw, &o, now()).unwrap();
            let d = data(&raw);
            assert_eq!(p.item.id, catalog_id(raw["id"].as_str().unwrap()), "{name}");
            assert_eq!(
                p.item.attributes["title"],
                json!(localize::text(&d["name"], None).unwrap())
            );
            // The example projection's master variant has no SKU: rejected, not sent.
            match d["masterVariant"]["sku"].as_str() {
                Some(sku) => assert_eq!(p.variants[0].attributes["sku"], sku, "{name}"),
                None => assert!(p.rejected[0].reason.contains("no SKU"), "{name}"),
            }
            assert_eq!(
                p.variants.len() + p.rejected.len(),
                1 + d["variants"].as_array().map_or(0, Vec::len)
            );
        }
        let c = super::super::fixtures::example("category");
        let mapped = category(&c, &o);
        if c["ancestors"].as_array().is_none_or(Vec::is_empty) {
            assert_eq!(
                mapped.unwrap().attributes["name"],
                json!(localize::text(&c["name"], None).unwrap())
            );
        } else {
            assert!(mapped.is_err(), "unexpanded ancestors must not be named");
        }
    }
}
