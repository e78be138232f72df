//! WDN resources → rows of schema `wdn` (`migrations/V7__wdn.sql`).
//!
//! Each converter takes one resource as the API sends it in `data` (`{id, type,
//! attributes}`) and gives its row, or an error naming the bad field (the caller turns it
//! into a rejected record). The whole resource is kept in `resource`. Ids are strings (a
//! number is taken as its decimal text). Prices go to `numeric` columns as the API sends
//! them — JSON numbers or numeric strings, which the loader keeps exact — and a price that
//! is neither is rejected with its offer.

use serde_json::{Value, json};

use crate::TableSpec;

/// `wdn.brands`.
pub static BRANDS: TableSpec = TableSpec {
    name: "wdn.brands",
    columns: &["id", "name", "description", "website", "resource"],
    key: &["id"],
    version: None,
    replace_scope: None,
};

/// `wdn.products`.
pub static PRODUCTS: TableSpec = TableSpec {
    name: "wdn.products",
    columns: &[
        "id",
        "name",
        "description",
        "release_at",
        "brand_names",
        "brand_names_array",
        "resource",
    ],
    key: &["id"],
    version: None,
    replace_scope: None,
};

/// `wdn.offers`, replaced per product: a product's offers task carries all of them, so an
/// offer gone from the list (or a list now empty or 404) is deleted.
pub static OFFERS: TableSpec = TableSpec {
    name: "wdn.offers",
    columns: &[
        "id",
        "product_id",
        "retailer_id",
        "original_currency",
        "price_usd",
        "price_gbp",
        "price_eur",
        "resource",
    ],
    key: &["id"],
    version: None,
    replace_scope: Some(&["product_id"]),
};

/// `wdn.retailers`.
pub static RETAILERS: TableSpec = TableSpec {
    name: "wdn.retailers",
    columns: &["id", "name", "website", "resource"],
    key: &["id"],
    version: None,
    replace_scope: None,
};

/// A resource's id as text: a string, or a whole number's decimal text.
pub fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

fn attributes(resource: &Value) -> &Value {
    &resource["attributes"]
}

/// A text attribute: a string or null.
fn text(resource: &Value, field: &str) -> Result<Value, String> {
    match &attributes(resource)[field] {
        Value::Null => Ok(Value::Null),
        Value::String(s) => Ok(json!(s)),
        other => Err(format!(
            "attributes.{field} must be a string or null, found {}",
            crate::short(other)
        )),
    }
}

fn required_id(resource: &Value) -> Result<String, String> {
    id_of(&resource["id"]).ok_or_else(|| {
        format!(
            "missing or unreadable id: {}",
            crate::short(&resource["id"])
        )
    })
}

/// A `wdn.brands` row.
///
/// # Errors
/// A missing id or a field of the wrong type, named.
pub fn brand(resource: &Value) -> Result<Vec<Value>, String> {
    Ok(vec![
        json!(required_id(resource)?),
        text(resource, "name")?,
        text(resource, "description")?,
        text(resource, "website")?,
        resource.clone(),
    ])
}

/// A `wdn.products` row: `brand_names` both as JSON text (`["Nike","Converse"]`, for
/// `LIKE` in SQL that Redshift also runs) and as an array (`jsonb`).
///
/// # Errors
/// A missing id, a `release_at` that is not RFC 3339, `brand_names` not an array of
/// strings.
pub fn product(resource: &Value) -> Result<Vec<Value>, String> {
    let release_at = match &attributes(resource)["release_at"] {
        Value::Null => Value::Null,
        Value::String(s) => {
            let t = chrono::DateTime::parse_from_rfc3339(s.trim())
                .map_err(|e| format!("attributes.release_at {s:?} is not RFC 3339: {e}"))?;
            json!(
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string()
            )
        }
        other => {
            return Err(format!(
                "attributes.release_at must be a timestamp string, found {}",
                crate::short(other)
            ));
        }
    };
    let names = match &attributes(resource)["brand_names"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|n| {
                n.as_str().map(str::to_string).ok_or_else(|| {
                    format!(
                        "attributes.brand_names must hold strings, found {}",
                        crate::short(n)
                    )
                })
            })
            .collect::<Result<Vec<String>, String>>()?,
        other => {
            return Err(format!(
                "attributes.brand_names must be an array, found {}",
                crate::short(other)
            ));
        }
    };
    Ok(vec![
        json!(required_id(resource)?),
        text(resource, "name")?,
        text(resource, "description")?,
        release_at,
        json!(serde_json::to_string(&names).unwrap_or_default()),
        json!(names),
        resource.clone(),
    ])
}

/// A `wdn.offers` row; `product_id` is the product whose offers were asked for when the
/// offer names none.
///
/// # Errors
/// A missing id or retailer id, a price that is neither a number, a numeric string nor
/// null.
pub fn offer(resource: &Value, product_id: &str) -> Result<Vec<Value>, String> {
    let a = attributes(resource);
    let product = match &a["product_id"] {
        Value::Null => product_id.to_string(),
        v => id_of(v)
            .ok_or_else(|| format!("attributes.product_id is not an id: {}", crate::short(v)))?,
    };
    if product != product_id {
        return Err(format!(
            "attributes.product_id {product} is not the product {product_id} whose offers these are"
        ));
    }
    let retailer = id_of(&a["retailer_id"]).ok_or_else(|| {
        format!(
            "attributes.retailer_id is missing or not an id: {}",
            crate::short(&a["retailer_id"])
        )
    })?;
    let price = |field: &str| -> Result<Value, String> {
        match &a[field] {
            Value::Null => Ok(Value::Null),
            Value::Number(n) => Ok(Value::Number(n.clone())),
            Value::String(s) if s.trim().is_empty() => Ok(Value::Null),
            Value::String(s) => {
                if s.trim().parse::<f64>().is_ok_and(f64::is_finite) {
                    Ok(json!(s.trim()))
                } else {
                    Err(format!("attributes.{field} {s:?} is not a number"))
                }
            }
            other => Err(format!(
                "attributes.{field} must be a number or a numeric string, found {}",
                crate::short(other)
            )),
        }
    };
    Ok(vec![
        json!(required_id(resource)?),
        json!(product),
        json!(retailer),
        text(resource, "original_currency")?,
        price("price_usd")?,
        price("price_gbp")?,
        price("price_eur")?,
        resource.clone(),
    ])
}

/// A `wdn.retailers` row.
///
/// # Errors
/// A missing id or a field of the wrong type, named.
pub fn retailer(resource: &Value) -> Result<Vec<Value>, String> {
    Ok(vec![
        json!(required_id(resource)?),
        text(resource, "name")?,
        text(resource, "website")?,
        resource.clone(),
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn offers_keep_prices_as_sent_and_refuse_what_is_no_number() {
        let o = json!({"id": "f1", "type": "offers", "attributes": {
            "product_id": 500001, "retailer_id": "50003", "original_currency": "GBP",
            "price_usd": 120.5, "price_gbp": "95.20", "price_eur": null}});
        let row = offer(&o, "500001").unwrap();
        assert_eq!(row[1], json!("500001"));
        assert_eq!(row[4], json!(120.5));
        assert_eq!(row[5], json!("95.20"));
        assert_eq!(row[6], Value::Null);
        let mut bad = o.clone();
        bad["attributes"]["price_usd"] = json!("12,50");
        let err = offer(&bad, "500001").unwrap_err();
        assert!(err.contains("price_usd") && err.contains("12,50"), "{err}");
        let err = offer(&o, "500002").unwrap_err();
        assert!(err.contains("not the product 500002"), "{err}");
        let mut no_retailer = o;
        no_retailer["attributes"]["retailer_id"] = Value::Null;
        assert!(
            offer(&no_retailer, "500001")
                .unwrap_err()
                .contains("retailer_id")
        );
    }

    #[test]
    fn products_keep_brand_names_as_text_and_array() {
        let p = json!({"id": "7", "attributes": {"name": "Dunk", "release_at": "2024-03-01T10:00:00.000+01:00",
            "brand_names": ["Nike", "Converse"]}});
        let row = product(&p).unwrap();
        assert_eq!(row[3], json!("2024-03-01T09:00:00.000000Z"));
        assert_eq!(row[4], json!(r#"["Nike","Converse"]"#));
        assert_eq!(row[5], json!(["Nike", "Converse"]));
        let bad = json!({"id": "7", "attributes": {"brand_names": "Nike"}});
        assert!(product(&bad).unwrap_err().contains("brand_names"));
        let bad = json!({"attributes": {}});
        assert!(product(&bad).unwrap_err().contains("id"));
    }
}
