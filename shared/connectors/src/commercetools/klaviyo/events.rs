//! Order → Klaviyo events (REFERENCE "Order → events").

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use super::{Options, localize, price, resource_id, truthy_fields};

/// The metric of every order.
pub const PLACED_ORDER: &str = "Placed Order";
/// The metric of each line item.
pub const ORDERED_PRODUCT: &str = "Ordered Product";
/// The metric of an order whose `orderState` is `Confirmed` or `Complete`.
pub const FULFILLED_ORDER: &str = "Fulfilled Order";
/// The metric of an order whose `orderState` is `Cancelled`.
pub const CANCELLED_ORDER: &str = "Cancelled Order";

/// One `klaviyo.event` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `<metric name>:<unique_id>`.
    pub id: String,
    /// The attributes of `POST /api/events`: `metric`, `profile`, `properties`, `time`
    /// (RFC 3339 UTC, milliseconds), `value`, `unique_id`.
    pub attributes: Value,
}

impl Event {
    /// The row in [`super::EVENT`]'s column order.
    pub fn row(self) -> Vec<Value> {
        vec![Value::String(self.id), self.attributes]
    }

    /// The event's metric name.
    pub fn metric(&self) -> &str {
        self.attributes["metric"]["data"]["attributes"]["name"]
            .as_str()
            .unwrap_or_default()
    }
}

/// The category references of a product: `masterData.current.categories` of a product,
/// `categories` of a product projection.
fn category_refs(product: &Value) -> &[Value] {
    let current = &product["masterData"]["current"]["categories"];
    let refs = if current.is_array() {
        current
    } else {
        &product["categories"]
    };
    refs.as_array().map_or(&[], Vec::as_slice)
}

/// The ids of a product's category references (`masterData.current.categories`, or
/// `categories` of a projection), in order.
pub fn category_ids(product: &Value) -> impl Iterator<Item = &str> {
    category_refs(product)
        .iter()
        .filter_map(|reference| reference["id"].as_str())
}

/// Gives each of a product's category references its category from `categories` (by id)
/// as `obj`, the shape `expand=masterData.current.categories[*]…` gives: a category with
/// its ancestors expanded makes the same [`breadcrumbs`] as the product expanded with
/// `…categories[*].ancestors[*]`. A reference whose category is not there is left as it is.
pub fn expand_categories(product: &mut Value, categories: &HashMap<String, Value>) {
    let current = "/masterData/current/categories";
    let refs = if product.pointer(current).is_some_and(Value::is_array) {
        product.pointer_mut(current)
    } else {
        product.get_mut("categories")
    };
    for reference in refs.and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(category) = reference["id"].as_str().and_then(|id| categories.get(id)) {
            reference["obj"] = category.clone();
        }
    }
}

/// Every breadcrumb prefix of each of a product's categories ("Women", "Women > Pants",
/// "Women > Pants > Jeans"), in order, without repeats. Needs the categories and their
/// ancestors expanded (`expand=masterData.current.categories[*].ancestors[*]`, or
/// `categories[*].ancestors[*]` of a projection); a category whose name or an ancestor's
/// name is not there is left out rather than named wrongly.
pub fn breadcrumbs(product: &Value, locale: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for reference in category_refs(product) {
        let category = &reference["obj"];
        let mut names: Vec<&str> = Vec::new();
        let ancestors = category["ancestors"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let named: Option<Vec<&str>> = ancestors
            .iter()
            .map(|a| localize::text(&a["obj"]["name"], locale))
            .chain(std::iter::once(localize::text(&category["name"], locale)))
            .collect();
        let Some(named) = named else { continue };
        for name in named {
            names.push(name);
            let crumb = names.join(" > ");
            if seen.insert(crumb.clone()) {
                out.push(crumb);
            }
        }
    }
    out
}

/// The distinct product ids of an order's line items, in order (what [`events`] needs
/// the breadcrumbs of).
pub fn product_ids(order: &Value) -> Vec<&str> {
    let mut seen = HashSet::new();
    order["lineItems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|li| li["productId"].as_str())
        .filter(|id| seen.insert(*id))
        .collect()
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn event(
    metric: &str,
    profile: &Value,
    properties: Value,
    at: DateTime<Utc>,
    value: Option<f64>,
    unique_id: &str,
) -> Event {
    let mut attributes = json!({
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
        "profile": {"data": {"type": "profile", "attributes": profile}},
        "properties": properties,
        "time": time(at),
        "unique_id": unique_id,
    });
    if let Some(v) = value {
        attributes["value"] = json!(v);
    }
    Event {
        id: format!("{metric}:{unique_id}"),
        attributes,
    }
}

/// An order's events:
/// - **Placed Order** at `createdAt`, `value` = totalPrice, `unique_id` = the order id,
///   properties = the order's fields and its custom fields (falsy values left out),
///   `ItemNames` (the distinct localized names of line items and custom line items) and
///   `Categories` (the [`breadcrumbs`] of each ordered product, from `categories`: product
///   id → breadcrumbs; a product not there contributes none);
/// - **Ordered Product** for line item i (1…n, not custom line items) at createdAt + i s,
///   `value` = its totalPrice, `unique_id` = its id, properties = the line item (falsy
///   values left out);
/// - **Fulfilled Order** (`orderState` Confirmed or Complete) or **Cancelled Order**
///   (Cancelled): Placed Order's properties and value at createdAt + (n + 1) s,
///   `unique_id` = the order id.
///
/// The profile of each is `{email: customerEmail, external_id: customerId}` (those
/// present). Placed Order comes first.
///
/// # Errors
/// No id, no `createdAt` time, no `totalPrice`, neither `customerEmail` nor `customerId`
/// (Klaviyo could not tell whose events they are), or a line item without an id.
pub fn events(
    order: &Value,
    categories: &HashMap<String, Vec<String>>,
    options: &Options,
) -> Result<Vec<Event>, String> {
    let id = resource_id(order)?;
    let locale = options.locale();
    let created = order["createdAt"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            format!(
                "createdAt is not an RFC 3339 time: {}",
                crate::short(&order["createdAt"])
            )
        })?;
    let total = price::amount(&order["totalPrice"])
        .ok_or_else(|| "no totalPrice with a centAmount".to_string())?;
    let mut profile = Map::new();
    if let Some(email) = order["customerEmail"].as_str().filter(|s| !s.is_empty()) {
        profile.insert("email".into(), json!(email));
    }
    if let Some(customer) = order["customerId"].as_str().filter(|s| !s.is_empty()) {
        profile.insert("external_id".into(), json!(customer));
    }
    if profile.is_empty() {
        return Err(
            "neither customerEmail nor customerId: no Klaviyo profile to attach the events to"
                .into(),
        );
    }
    let profile = Value::Object(profile);
    let line_items: &[Value] = order["lineItems"].as_array().map_or(&[], Vec::as_slice);
    let custom_items: &[Value] = order["customLineItems"]
        .as_array()
        .map_or(&[], Vec::as_slice);

    let mut names: Vec<&str> = Vec::new();
    for item in line_items.iter().chain(custom_items) {
        if let Some(name) = localize::text(&item["name"], locale)
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    let mut crumbs: Vec<&str> = Vec::new();
    for product in product_ids(order) {
        for crumb in categories.get(product).into_iter().flatten() {
            if !crumbs.contains(&crumb.as_str()) {
                crumbs.push(crumb);
            }
        }
    }
    let mut properties = truthy_fields(order);
    properties.extend(truthy_fields(&order["custom"]["fields"]));
    properties.insert("ItemNames".into(), json!(names));
    properties.insert("Categories".into(), json!(crumbs));
    let properties = Value::Object(properties);

    let mut out = vec![event(
        PLACED_ORDER,
        &profile,
        properties.clone(),
        created,
        Some(total),
        id,
    )];
    for (i, item) in line_items.iter().enumerate() {
        let item_id = item["id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                format!(
                    "line item {} has no id (the Ordered Product unique_id)",
                    i + 1
                )
            })?;
        let at = created + Duration::seconds(i as i64 + 1);
        out.push(event(
            ORDERED_PRODUCT,
            &profile,
            Value::Object(truthy_fields(item)),
            at,
            price::amount(&item["totalPrice"]),
            item_id,
        ));
    }
    let state_metric = match order["orderState"].as_str() {
        Some("Confirmed" | "Complete") => Some(FULFILLED_ORDER),
        Some("Cancelled") => Some(CANCELLED_ORDER),
        _ => None,
    };
    if let Some(metric) = state_metric {
        let at = created + Duration::seconds(line_items.len() as i64 + 1);
        out.push(event(metric, &profile, properties, at, Some(total), id));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn category(id: &str, name: &str, ancestors: Vec<Value>) -> Value {
        json!({"typeId": "category", "id": id,
               "obj": {"id": id, "name": {"en": name, "de": format!("{name}-de")}, "ancestors": ancestors}})
    }

    fn ancestor(id: &str, name: &str) -> Value {
        json!({"typeId": "category", "id": id, "obj": {"id": id, "name": {"en": name}, "ancestors": []}})
    }

    fn product() -> Value {
        json!({"id": "p1", "masterData": {"current": {"categories": [
            category("jeans", "Jeans", vec![ancestor("women", "Women"), ancestor("pants", "Pants")]),
            category("fall", "Fall", vec![ancestor("women", "Women"), ancestor("season", "Seasonal Fashion")]),
        ]}}})
    }

    fn money(cents: i64) -> Value {
        json!({"type": "centPrecision", "currencyCode": "EUR", "centAmount": cents, "fractionDigits": 2})
    }

    fn order(state: &str) -> Value {
        json!({
            "id": "o1", "version": 1, "createdAt": "2024-03-01T10:00:00.000Z",
            "customerEmail": "a@example.com", "customerId": "c1", "orderState": state,
            "orderNumber": "", "totalPrice": money(4550), "taxedPrice": null, "locale": "en",
            "custom": {"type": {"typeId": "type", "id": "t"}, "fields": {"gift": true, "note": ""}},
            "lineItems": [
                {"id": "li1", "productId": "p1", "name": {"en": "Jeans"}, "quantity": 1,
                 "totalPrice": money(3000), "discountedPricePerQuantity": []},
                {"id": "li2", "productId": "p2", "name": {"en": "Belt"}, "quantity": 2,
                 "totalPrice": money(1000)},
                {"id": "li3", "productId": "p1", "name": {"en": "Jeans"}, "quantity": 1,
                 "totalPrice": money(500)}
            ],
            "customLineItems": [{"id": "cli1", "name": {"en": "Gift wrapping"}, "totalPrice": money(50)}]
        })
    }

    fn lookup() -> HashMap<String, Vec<String>> {
        HashMap::from([
            ("p1".to_string(), breadcrumbs(&product(), Some("en"))),
            (
                "p2".to_string(),
                vec!["Accessories".to_string(), "Women".to_string()],
            ),
        ])
    }

    #[test]
    fn breadcrumbs_are_every_prefix_of_every_category_once() {
        assert_eq!(
            breadcrumbs(&product(), Some("en")),
            vec![
                "Women",
                "Women > Pants",
                "Women > Pants > Jeans",
                "Women > Seasonal Fashion",
                "Women > Seasonal Fashion > Fall"
            ]
        );
        assert_eq!(
            breadcrumbs(&product(), Some("de"))[2],
            "Women > Pants > Jeans-de"
        );
        // A projection's categories work the same; an unexpanded ancestor drops its category.
        let projection = json!({"categories": [
            category("a", "A", vec![json!({"typeId": "category", "id": "x"})]),
            category("b", "B", vec![]),
        ]});
        assert_eq!(breadcrumbs(&projection, Some("en")), vec!["B"]);
        // Without a preferred locale: the first locale in name order.
        assert_eq!(breadcrumbs(&projection, None), vec!["B-de"]);
    }

    /// A product read without expansion, given its categories looked up on their own
    /// (ancestors expanded), names the same crumbs as the product read expanded; a category
    /// not looked up stays unexpanded and is left out; the product keeps its shape.
    #[test]
    fn categories_looked_up_apart_make_the_same_breadcrumbs() {
        let expanded = product();
        let mut bare = expanded.clone();
        let mut looked_up = HashMap::new();
        for reference in bare["masterData"]["current"]["categories"]
            .as_array_mut()
            .unwrap()
        {
            let obj = reference.as_object_mut().unwrap().remove("obj").unwrap();
            looked_up.insert(obj["id"].as_str().unwrap().to_string(), obj);
        }
        assert_eq!(
            category_ids(&bare).collect::<Vec<_>>(),
            vec!["jeans", "fall"]
        );
        assert!(breadcrumbs(&bare, Some("en")).is_empty());
        let mut again = bare.clone();
        expand_categories(&mut again, &looked_up);
        assert_eq!(again, expanded);
        assert_eq!(
            breadcrumbs(&again, Some("en")),
            breadcrumbs(&expanded, Some("en"))
        );
        looked_up.remove("fall");
        let mut partly = bare.clone();
        expand_categories(&mut partly, &looked_up);
        assert_eq!(
            breadcrumbs(&partly, Some("en")),
            vec!["Women", "Women > Pants", "Women > Pants > Jeans"]
        );
        // A projection's `categories`, and nothing added to a product without any.
        let mut projection =
            json!({"categories": bare["masterData"]["current"]["categories"].clone()});
        expand_categories(&mut projection, &looked_up);
        assert_eq!(breadcrumbs(&projection, Some("en")).len(), 3);
        let mut none = json!({"id": "p9"});
        expand_categories(&mut none, &looked_up);
        assert_eq!(none, json!({"id": "p9"}));
    }

    #[test]
    fn a_completed_order_is_placed_then_each_product_then_fulfilled() {
        let events = events(&order("Complete"), &lookup(), &Options::default()).unwrap();
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "Placed Order:o1",
                "Ordered Product:li1",
                "Ordered Product:li2",
                "Ordered Product:li3",
                "Fulfilled Order:o1"
            ]
        );
        let times: Vec<&str> = events
            .iter()
            .map(|e| e.attributes["time"].as_str().unwrap())
            .collect();
        assert_eq!(
            times,
            vec![
                "2024-03-01T10:00:00.000Z",
                "2024-03-01T10:00:01.000Z",
                "2024-03-01T10:00:02.000Z",
                "2024-03-01T10:00:03.000Z",
                "2024-03-01T10:00:04.000Z"
            ]
        );
        let placed = &events[0].attributes;
        assert_eq!(placed["value"], json!(45.5));
        assert_eq!(placed["unique_id"], "o1");
        assert_eq!(
            placed["metric"],
            json!({"data": {"type": "metric", "attributes": {"name": "Placed Order"}}})
        );
        assert_eq!(
            placed["profile"],
            json!({"data": {"type": "profile", "attributes": {"email": "a@example.com", "external_id": "c1"}}})
        );
        let props = &placed["properties"];
        assert_eq!(
            props["ItemNames"],
            json!(["Jeans", "Belt", "Gift wrapping"])
        );
        assert_eq!(
            props["Categories"],
            json!([
                "Women",
                "Women > Pants",
                "Women > Pants > Jeans",
                "Women > Seasonal Fashion",
                "Women > Seasonal Fashion > Fall",
                "Accessories"
            ])
        );
        // The order's fields and custom fields, falsy ones left out.
        assert_eq!(props["gift"], json!(true));
        assert_eq!(props["orderState"], "Complete");
        assert_eq!(props["id"], "o1");
        for gone in ["note", "orderNumber", "taxedPrice"] {
            assert!(props.get(gone).is_none(), "{gone}");
        }
        let li2 = &events[2].attributes;
        assert_eq!(li2["value"], json!(10.0));
        assert_eq!(li2["unique_id"], "li2");
        assert_eq!(li2["properties"]["quantity"], 2);
        assert_eq!(li2["profile"], placed["profile"]);
        assert!(
            events[1].attributes["properties"]
                .get("discountedPricePerQuantity")
                .is_some()
        );
        let fulfilled = &events[4].attributes;
        assert_eq!(fulfilled["properties"], placed["properties"]);
        assert_eq!(fulfilled["value"], placed["value"]);
        assert_eq!(fulfilled["unique_id"], "o1");
        assert_eq!(events[4].metric(), FULFILLED_ORDER);
    }

    #[test]
    fn the_order_state_decides_fulfilled_cancelled_or_neither() {
        let metric_of_last = |state: &str| {
            let e = events(&order(state), &lookup(), &Options::default()).unwrap();
            (e.len(), e.last().unwrap().metric().to_string())
        };
        assert_eq!(
            metric_of_last("Confirmed"),
            (5, FULFILLED_ORDER.to_string())
        );
        assert_eq!(
            metric_of_last("Cancelled"),
            (5, CANCELLED_ORDER.to_string())
        );
        assert_eq!(metric_of_last("Open"), (4, ORDERED_PRODUCT.to_string()));
    }

    #[test]
    fn a_guest_order_has_only_its_email_and_an_order_without_either_is_refused() {
        let mut guest = order("Open");
        guest.as_object_mut().unwrap().remove("customerId");
        let e = events(&guest, &lookup(), &Options::default()).unwrap();
        assert_eq!(
            e[0].attributes["profile"]["data"]["attributes"],
            json!({"email": "a@example.com"})
        );
        guest.as_object_mut().unwrap().remove("customerEmail");
        assert!(
            events(&guest, &lookup(), &Options::default())
                .unwrap_err()
                .contains("customerEmail")
        );
        let mut bad = order("Open");
        bad["createdAt"] = json!("yesterday");
        assert!(
            events(&bad, &lookup(), &Options::default())
                .unwrap_err()
                .contains("createdAt")
        );
        let mut no_id = order("Open");
        no_id["lineItems"][1].as_object_mut().unwrap().remove("id");
        assert!(
            events(&no_id, &lookup(), &Options::default())
                .unwrap_err()
                .contains("line item 2")
        );
    }

    #[test]
    fn the_real_example_order() {
        let o = super::super::fixtures::example("order");
        let e = events(&o, &HashMap::new(), &Options::default()).unwrap();
        let n = o["lineItems"].as_array().map_or(0, Vec::len);
        assert_eq!(
            e[0].id,
            format!("Placed Order:{}", o["id"].as_str().unwrap())
        );
        assert_eq!(
            e[0].attributes["value"],
            json!(price::amount(&o["totalPrice"]).unwrap())
        );
        assert_eq!(
            e.iter().filter(|x| x.metric() == ORDERED_PRODUCT).count(),
            n
        );
        assert!(product_ids(&o).len() <= n);
    }
}
