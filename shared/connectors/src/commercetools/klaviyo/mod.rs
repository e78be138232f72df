//! commercetools → Klaviyo: the mapping of the Bulk Data Import, as pure functions.
//!
//! When a commercetools task carries `params.klaviyo` ([`Options`], set by the planner for
//! a destination of kind `klaviyo`), each resource is mapped here to the Klaviyo objects of
//! the contract in `docs/klaviyo-sync.md` instead of the `commercetools.*` rows. The rules
//! are `../shared/REFERENCE.md` "commercetools → Klaviyo" → "The mappings (exact)":
//!
//! - [`profiles`]: customer → profile (address choice, phone fallback order, custom fields);
//! - [`events`]: order → Placed Order, Ordered Product (createdAt + i s), Fulfilled /
//!   Cancelled Order, with `unique_id`, `value`, `ItemNames` and `Categories` breadcrumbs;
//! - [`catalog`]: category → catalog category named by its ancestors; published product
//!   → catalog item and variants;
//! - [`localize`]: localized strings; [`price`]: money and the price choice.
//!
//! Every value in `attributes` / `relationships` is the JSON:API object Klaviyo's write
//! endpoint takes (`../shared/specs/klaviyo/{profiles,events,catalogs}.json`), so the
//! destination adds no field of its own: catalog objects carry their *create* attributes
//! (`external_id`, `integration_type`, `catalog_type`, …); an update keeps the fields the
//! update schema accepts. A resource that cannot be mapped is an `Err` with the reason,
//! never a half-built object. Nothing here reads the clock: "now" (price validity) is an
//! argument.

pub mod catalog;
pub mod events;
pub mod localize;
pub mod price;
pub mod profiles;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::TableSpec;

/// The mapping options a Klaviyo destination sets (`params.klaviyo` of a commercetools
/// job; the plugin's `PREFERRED_LOCALE`, `PREFERRED_CURRENCY`, `PRODUCT_URL_TEMPLATE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The locale of localized strings (`en-US`); its language (`en`) is the fallback, then
    /// the first locale of the value.
    #[serde(default)]
    pub preferred_locale: Option<String>,
    /// ISO 4217 code: only prices in this currency are chosen; a product or variant
    /// without one is rejected.
    #[serde(default)]
    pub preferred_currency: Option<String>,
    /// The catalog `url` of a product, `{{productSlug}}` replaced by its localized slug.
    #[serde(default)]
    pub product_url_template: Option<String>,
    /// Refuse the job while the plugin's lock object of its stream exists in commercetools
    /// (`klaviyo-ct-plugin-lock/<kind>FullSync`; the destination's `HONOUR_LEGACY_LOCK`).
    #[serde(default)]
    pub legacy_lock: bool,
}

impl Options {
    /// The preferred locale, `None` when unset or blank.
    pub fn locale(&self) -> Option<&str> {
        self.preferred_locale
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
    }

    /// The preferred currency, `None` when unset or blank.
    pub fn currency(&self) -> Option<&str> {
        self.preferred_currency
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
    }
}

/// `klaviyo.profile`: one profile per customer, written by profile bulk import jobs
/// (upsert). `id` is the commercetools customer id (= `external_id`); `attributes` the
/// profile attributes of `POST /api/profile-bulk-import-jobs`.
pub static PROFILE: TableSpec = TableSpec {
    name: "klaviyo.profile",
    columns: &["id", "attributes"],
    key: &["id"],
    version: None,
    replace_scope: None,
};

/// `klaviyo.event`: `id` = `<metric name>:<unique_id>`, `attributes` = the attributes of
/// `POST /api/events` (`metric`, `profile`, `properties`, `time`, `value`, `unique_id`).
pub static EVENT: TableSpec = TableSpec {
    name: "klaviyo.event",
    columns: &["id", "attributes"],
    key: &["id"],
    version: None,
    replace_scope: None,
};

/// `klaviyo.catalog-category`: `id` = `$custom:::$default:::<category id>`, `op`
/// (`upsert` | `delete`), `attributes` (null for a delete).
pub static CATALOG_CATEGORY: TableSpec = TableSpec {
    name: "klaviyo.catalog-category",
    columns: &["id", "op", "attributes"],
    key: &["id"],
    version: None,
    replace_scope: None,
};

/// `klaviyo.catalog-item`: `id` = `$custom:::$default:::<product id>`, `op`,
/// `attributes`, `relationships` (`{categories: {data: [{type: "catalog-category", id}]}}`
/// or null).
pub static CATALOG_ITEM: TableSpec = TableSpec {
    name: "klaviyo.catalog-item",
    columns: &["id", "op", "attributes", "relationships"],
    key: &["id"],
    version: None,
    replace_scope: None,
};

/// `klaviyo.catalog-variant`: `id` = `$custom:::$default:::<sku>`, `op`, `item_id` (the
/// item's catalog id), `attributes`, `relationships` (`{item: {data: {type:
/// "catalog-item", id}}}`). Replaced per item in a products job: variants of an item that
/// the part does not carry are deleted.
pub static CATALOG_VARIANT: TableSpec = TableSpec {
    name: "klaviyo.catalog-variant",
    columns: &["id", "op", "item_id", "attributes", "relationships"],
    key: &["id"],
    version: None,
    replace_scope: Some(&["item_id"]),
};

/// Every table of the contract.
pub static TABLES: [&TableSpec; 5] = [
    &PROFILE,
    &EVENT,
    &CATALOG_CATEGORY,
    &CATALOG_ITEM,
    &CATALOG_VARIANT,
];

/// `op` of a row that creates or updates.
pub const UPSERT: &str = "upsert";
/// `op` of a row that deletes.
pub const DELETE: &str = "delete";

/// The catalog id of an external id: `$custom:::$default:::<external id>` (the only
/// integration and catalog Klaviyo supports).
pub fn catalog_id(external_id: &str) -> String {
    format!("$custom:::$default:::{external_id}")
}

/// Whether a JSON value is falsy as JavaScript sees it (null, false, 0, ""): the plugin's
/// bulk field copies leave those out.
pub fn falsy(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// The fields of `object` whose values are not [`falsy`] (an object's bulk copy).
pub fn truthy_fields(object: &Value) -> Map<String, Value> {
    object
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !falsy(v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A resource's `id`, or the reason it has none.
pub(crate) fn resource_id(resource: &Value) -> Result<&str, String> {
    match &resource["id"] {
        Value::String(s) if !s.is_empty() => Ok(s),
        Value::Null => Err("missing id".into()),
        other => Err(format!("id is not a string: {}", crate::short(other))),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Real example responses of `../shared/specs/commercetools/examples/`.
    #![allow(clippy::unwrap_used)]

    use serde_json::Value;

    /// `<name>.example.json` from the shared specs.
    pub fn example(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/specs/commercetools/examples")
            .join(format!("{name}.example.json"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn falsy_values_are_those_javascript_drops() {
        let copy = truthy_fields(&json!({
            "a": 0, "b": false, "c": "", "d": null, "e": 1, "f": "x", "g": [], "h": {}, "i": 0.0
        }));
        assert_eq!(
            Value::Object(copy),
            json!({"e": 1, "f": "x", "g": [], "h": {}})
        );
    }

    #[test]
    fn options_read_the_planners_object_and_refuse_unknown_keys() {
        let o: Options = serde_json::from_value(json!({
            "preferred_locale": "en-US", "preferred_currency": " ", "product_url_template": null
        }))
        .unwrap_or_default();
        assert_eq!(o.locale(), Some("en-US"));
        assert_eq!(o.currency(), None);
        assert!(serde_json::from_value::<Options>(json!({"locale": "en"})).is_err());
    }

    #[test]
    fn catalog_ids_use_the_custom_default_catalog() {
        assert_eq!(catalog_id("abc"), "$custom:::$default:::abc");
    }
}
