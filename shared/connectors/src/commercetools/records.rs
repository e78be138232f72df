//! commercetools resources → rows of schema `commercetools` (`migrations/V6__commercetools.sql`).
//!
//! Each converter takes one resource as the API returns it and gives its row and its child
//! rows, or an error naming the resource and the bad field (the caller turns it into a
//! rejected record). The whole resource is kept in `resource` (the customer's `password`
//! hash excepted), so nothing the API sent is lost; typed columns hold what analysts query.
//! Times are RFC 3339 UTC strings as the API sends them; localized strings take the
//! configured locale, else the resource's first locale in name order.

use serde_json::{Map, Value, json};

use crate::TableSpec;

/// `commercetools.customers`.
pub static CUSTOMERS: TableSpec = TableSpec {
    name: "commercetools.customers",
    columns: &[
        "id",
        "version",
        "key",
        "customer_number",
        "external_id",
        "email",
        "first_name",
        "last_name",
        "company_name",
        "is_email_verified",
        "customer_group_id",
        "default_billing_address_id",
        "default_shipping_address_id",
        "created_at",
        "last_modified_at",
        "resource",
    ],
    key: &["id"],
    version: Some("version"),
    replace_scope: None,
};

/// `commercetools.customer_addresses`, replaced with their customer.
pub static CUSTOMER_ADDRESSES: TableSpec = TableSpec {
    name: "commercetools.customer_addresses",
    columns: &[
        "customer_id",
        "address_id",
        "version",
        "key",
        "first_name",
        "last_name",
        "company",
        "street_name",
        "street_number",
        "postal_code",
        "city",
        "region",
        "state",
        "country",
        "email",
        "phone",
        "mobile",
        "is_default_billing",
        "is_default_shipping",
        "is_billing",
        "is_shipping",
        "address",
    ],
    key: &["customer_id", "address_id"],
    version: Some("version"),
    replace_scope: Some(&["customer_id"]),
};

/// `commercetools.orders`.
pub static ORDERS: TableSpec = TableSpec {
    name: "commercetools.orders",
    columns: &[
        "id",
        "version",
        "order_number",
        "customer_id",
        "customer_email",
        "anonymous_id",
        "order_state",
        "payment_state",
        "shipment_state",
        "store_key",
        "country",
        "total_cent_amount",
        "total_fraction_digits",
        "total_currency",
        "created_at",
        "last_modified_at",
        "completed_at",
        "resource",
    ],
    key: &["id"],
    version: Some("version"),
    replace_scope: None,
};

/// `commercetools.order_line_items` (line items and custom line items), replaced with
/// their order.
pub static ORDER_LINE_ITEMS: TableSpec = TableSpec {
    name: "commercetools.order_line_items",
    columns: &[
        "order_id",
        "line_item_id",
        "version",
        "kind",
        "product_id",
        "sku",
        "name",
        "quantity",
        "price_cent_amount",
        "total_cent_amount",
        "fraction_digits",
        "currency",
        "line_item",
    ],
    key: &["order_id", "line_item_id"],
    version: Some("version"),
    replace_scope: Some(&["order_id"]),
};

/// `commercetools.categories`.
pub static CATEGORIES: TableSpec = TableSpec {
    name: "commercetools.categories",
    columns: &[
        "id",
        "version",
        "key",
        "name",
        "slug",
        "parent_id",
        "order_hint",
        "ancestor_ids",
        "created_at",
        "last_modified_at",
        "resource",
    ],
    key: &["id"],
    version: Some("version"),
    replace_scope: None,
};

/// `commercetools.products` (product projections).
pub static PRODUCTS: TableSpec = TableSpec {
    name: "commercetools.products",
    columns: &[
        "id",
        "version",
        "key",
        "product_type_id",
        "name",
        "slug",
        "published",
        "category_ids",
        "created_at",
        "last_modified_at",
        "resource",
    ],
    key: &["id"],
    version: Some("version"),
    replace_scope: None,
};

/// `commercetools.product_variants` (master variant and variants), replaced with their
/// product.
pub static PRODUCT_VARIANTS: TableSpec = TableSpec {
    name: "commercetools.product_variants",
    columns: &[
        "product_id",
        "variant_id",
        "version",
        "is_master",
        "sku",
        "key",
        "prices",
        "images",
        "attributes",
        "variant",
    ],
    key: &["product_id", "variant_id"],
    version: Some("version"),
    replace_scope: Some(&["product_id"]),
};

/// A resource's id, version and lastModifiedAt, checked.
pub struct Head {
    /// `id`.
    pub id: String,
    /// `version`.
    pub version: i64,
    /// `lastModifiedAt`, when present.
    pub last_modified_at: Option<String>,
}

/// Checks the fields every resource has.
///
/// # Errors
/// Names the field that is missing or of the wrong type.
pub fn head(resource: &Value) -> Result<Head, String> {
    let id = match &resource["id"] {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null => return Err("missing id".into()),
        other => return Err(format!("id is not a string: {}", crate::short(other))),
    };
    let version = resource["version"]
        .as_i64()
        .ok_or_else(|| format!("resource {id}: version is not an integer"))?;
    let last_modified_at = match &resource["lastModifiedAt"] {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => {
            return Err(format!(
                "resource {id}: lastModifiedAt is not a string: {}",
                crate::short(other)
            ));
        }
    };
    Ok(Head {
        id,
        version,
        last_modified_at,
    })
}

fn text(value: &Value) -> Value {
    match value {
        Value::String(s) => json!(s),
        _ => Value::Null,
    }
}

fn int(value: &Value) -> Value {
    value.as_i64().map_or(Value::Null, |n| json!(n))
}

fn boolean(value: &Value) -> Value {
    value.as_bool().map_or(Value::Null, |b| json!(b))
}

/// A `LocalizedString` in `locale`, else its first locale in name order.
pub fn localized(value: &Value, locale: &str) -> Value {
    match value.as_object() {
        Some(map) => map
            .get(locale)
            .or_else(|| {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                keys.first().and_then(|k| map.get(*k))
            })
            .map_or(Value::Null, text),
        None => text(value),
    }
}

fn reference_id(value: &Value) -> Value {
    text(&value["id"])
}

/// `commercetools.customers` and its addresses.
///
/// # Errors
/// Names the resource and the field.
pub fn customer(resource: &Value) -> Result<(Vec<Value>, Vec<Vec<Value>>), String> {
    let h = head(resource)?;
    let mut stored = resource.clone();
    if let Some(map) = stored.as_object_mut() {
        // The (masked) password hash is a credential: never stored.
        map.remove("password");
    }
    let default_billing = resource["defaultBillingAddressId"].as_str();
    let default_shipping = resource["defaultShippingAddressId"].as_str();
    let ids = |field: &str| -> Vec<&str> {
        resource[field]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let (billing, shipping) = (ids("billingAddressIds"), ids("shippingAddressIds"));
    let mut addresses = Vec::new();
    if let Some(list) = resource["addresses"].as_array() {
        for (i, a) in list.iter().enumerate() {
            let address_id = a["id"]
                .as_str()
                .map(str::to_string)
                .or_else(|| a["key"].as_str().map(|k| format!("key:{k}")))
                .unwrap_or_else(|| format!("#{i}"));
            let is = |set: &[&str]| a["id"].as_str().is_some_and(|id| set.contains(&id));
            addresses.push(vec![
                json!(h.id),
                json!(address_id),
                json!(h.version),
                text(&a["key"]),
                text(&a["firstName"]),
                text(&a["lastName"]),
                text(&a["company"]),
                text(&a["streetName"]),
                text(&a["streetNumber"]),
                text(&a["postalCode"]),
                text(&a["city"]),
                text(&a["region"]),
                text(&a["state"]),
                text(&a["country"]),
                text(&a["email"]),
                text(&a["phone"]),
                text(&a["mobile"]),
                json!(a["id"].as_str().is_some() && a["id"].as_str() == default_billing),
                json!(a["id"].as_str().is_some() && a["id"].as_str() == default_shipping),
                json!(is(&billing)),
                json!(is(&shipping)),
                a.clone(),
            ]);
        }
    }
    let row = vec![
        json!(h.id),
        json!(h.version),
        text(&resource["key"]),
        text(&resource["customerNumber"]),
        text(&resource["externalId"]),
        text(&resource["email"]),
        text(&resource["firstName"]),
        text(&resource["lastName"]),
        text(&resource["companyName"]),
        boolean(&resource["isEmailVerified"]),
        reference_id(&resource["customerGroup"]),
        text(&resource["defaultBillingAddressId"]),
        text(&resource["defaultShippingAddressId"]),
        text(&resource["createdAt"]),
        text(&resource["lastModifiedAt"]),
        stored,
    ];
    Ok((row, addresses))
}

/// `commercetools.orders` and its line items and custom line items.
///
/// # Errors
/// Names the resource and the field.
pub fn order(resource: &Value, locale: &str) -> Result<(Vec<Value>, Vec<Vec<Value>>), String> {
    let h = head(resource)?;
    let total = &resource["totalPrice"];
    let mut items = Vec::new();
    for (field, kind) in [
        ("lineItems", "line_item"),
        ("customLineItems", "custom_line_item"),
    ] {
        let Some(list) = resource[field].as_array() else {
            continue;
        };
        for (i, item) in list.iter().enumerate() {
            let item_id = item["id"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{kind}#{i}"));
            let (price, item_total) = if kind == "line_item" {
                (&item["price"]["value"], &item["totalPrice"])
            } else {
                (&item["money"], &item["totalPrice"])
            };
            items.push(vec![
                json!(h.id),
                json!(item_id),
                json!(h.version),
                json!(kind),
                text(&item["productId"]),
                if kind == "line_item" {
                    text(&item["variant"]["sku"])
                } else {
                    text(&item["slug"])
                },
                localized(&item["name"], locale),
                int(&item["quantity"]),
                int(&price["centAmount"]),
                int(&item_total["centAmount"]),
                int(&item_total["fractionDigits"]),
                text(&item_total["currencyCode"]),
                item.clone(),
            ]);
        }
    }
    let row = vec![
        json!(h.id),
        json!(h.version),
        text(&resource["orderNumber"]),
        text(&resource["customerId"]),
        text(&resource["customerEmail"]),
        text(&resource["anonymousId"]),
        text(&resource["orderState"]),
        text(&resource["paymentState"]),
        text(&resource["shipmentState"]),
        text(&resource["store"]["key"]),
        text(&resource["country"]),
        int(&total["centAmount"]),
        int(&total["fractionDigits"]),
        text(&total["currencyCode"]),
        text(&resource["createdAt"]),
        text(&resource["lastModifiedAt"]),
        text(&resource["completedAt"]),
        resource.clone(),
    ];
    Ok((row, items))
}

/// `commercetools.categories`.
///
/// # Errors
/// Names the resource and the field.
pub fn category(resource: &Value, locale: &str) -> Result<Vec<Value>, String> {
    let h = head(resource)?;
    let ancestors: Vec<Value> = resource["ancestors"]
        .as_array()
        .map(|a| a.iter().map(reference_id).collect())
        .unwrap_or_default();
    Ok(vec![
        json!(h.id),
        json!(h.version),
        text(&resource["key"]),
        localized(&resource["name"], locale),
        localized(&resource["slug"], locale),
        reference_id(&resource["parent"]),
        text(&resource["orderHint"]),
        Value::Array(ancestors),
        text(&resource["createdAt"]),
        text(&resource["lastModifiedAt"]),
        resource.clone(),
    ])
}

/// `commercetools.products` (one product projection) and its variants.
///
/// # Errors
/// Names the resource and the field.
pub fn product(resource: &Value, locale: &str) -> Result<(Vec<Value>, Vec<Vec<Value>>), String> {
    let h = head(resource)?;
    let mut variants = Vec::new();
    let master = std::iter::once((&resource["masterVariant"], true));
    let others = resource["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v, false));
    for (variant, is_master) in master.chain(others) {
        if variant.is_null() {
            continue;
        }
        let variant_id = variant["id"]
            .as_i64()
            .ok_or_else(|| format!("product {}: a variant without an integer id", h.id))?;
        variants.push(vec![
            json!(h.id),
            json!(variant_id),
            json!(h.version),
            json!(is_master),
            text(&variant["sku"]),
            text(&variant["key"]),
            variant["prices"].clone(),
            variant["images"].clone(),
            variant["attributes"].clone(),
            variant.clone(),
        ]);
    }
    let categories: Vec<Value> = resource["categories"]
        .as_array()
        .map(|a| a.iter().map(reference_id).collect())
        .unwrap_or_default();
    Ok((
        vec![
            json!(h.id),
            json!(h.version),
            text(&resource["key"]),
            reference_id(&resource["productType"]),
            localized(&resource["name"], locale),
            localized(&resource["slug"], locale),
            boolean(&resource["published"]),
            Value::Array(categories),
            text(&resource["createdAt"]),
            text(&resource["lastModifiedAt"]),
            resource.clone(),
        ],
        variants,
    ))
}

/// The object form of `value` for a rejected record's raw field.
pub fn raw(value: &Value) -> Value {
    match value {
        Value::Object(_) => value.clone(),
        other => Value::Object(Map::from_iter([("value".to_string(), other.clone())])),
    }
}
