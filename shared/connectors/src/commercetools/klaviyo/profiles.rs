//! Customer → Klaviyo profile (REFERENCE "Customer → profile").

use serde_json::{Map, Value, json};

use super::{resource_id, truthy_fields};

/// One `klaviyo.profile` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The commercetools customer id (also the profile's `external_id`).
    pub id: String,
    /// The profile attributes of a profile bulk import job: `email`, `external_id`,
    /// `first_name`, `last_name`, `title`, `organization`, `phone_number`, `location`,
    /// `properties`; absent values are left out.
    pub attributes: Value,
}

impl Profile {
    /// The row in [`super::PROFILE`]'s column order.
    pub fn row(self) -> Vec<Value> {
        vec![Value::String(self.id), self.attributes]
    }
}

/// The address Klaviyo gets: the one whose id is `defaultBillingAddressId`, else the one
/// whose id is the first of `billingAddressIds`, else `addresses[0]`; `None` without
/// addresses.
pub fn chosen_address(customer: &Value) -> Option<&Value> {
    let addresses = customer["addresses"].as_array()?;
    let by_id = |id: Option<&str>| {
        id.and_then(|id| addresses.iter().find(|a| a["id"].as_str() == Some(id)))
    };
    by_id(customer["defaultBillingAddressId"].as_str())
        .or_else(|| by_id(customer["billingAddressIds"][0].as_str()))
        .or_else(|| addresses.first())
}

/// The non-blank strings of `fields` of `address`, joined by ", ".
fn joined(address: &Value, fields: &[&str]) -> Option<String> {
    let parts: Vec<&str> = fields
        .iter()
        .filter_map(|f| address[*f].as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A commercetools `Address` as a Klaviyo `location`: `address1` = apartment, building,
/// streetNumber, streetName; `address2` = additionalStreetInfo, additionalAddressInfo
/// (blanks dropped, joined ", "); `city`, `country`, `region`, `zip` = postalCode. Fields
/// without a value are left out.
pub fn location(address: &Value) -> Value {
    let mut out = Map::new();
    if let Some(a1) = joined(
        address,
        &["apartment", "building", "streetNumber", "streetName"],
    ) {
        out.insert("address1".into(), json!(a1));
    }
    if let Some(a2) = joined(address, &["additionalStreetInfo", "additionalAddressInfo"]) {
        out.insert("address2".into(), json!(a2));
    }
    for (from, to) in [
        ("city", "city"),
        ("country", "country"),
        ("region", "region"),
        ("postalCode", "zip"),
    ] {
        if let Some(v) = address[from].as_str().filter(|s| !s.is_empty()) {
            out.insert(to.into(), json!(v));
        }
    }
    Value::Object(out)
}

fn nonempty(value: &Value) -> Option<&str> {
    value.as_str().filter(|s| !s.is_empty())
}

/// A customer as a profile: `email`, `external_id` = customer id, `first_name`,
/// `last_name`, `title`, `organization` = companyName, `phone_number` = the chosen
/// address's mobile else phone, `location` from the chosen address ([`chosen_address`]),
/// `properties` = the custom fields without falsy values (left out when none).
///
/// # Errors
/// A customer without a string `id`.
pub fn profile(customer: &Value) -> Result<Profile, String> {
    let id = resource_id(customer)?.to_string();
    let mut attributes = Map::new();
    if let Some(email) = nonempty(&customer["email"]) {
        attributes.insert("email".into(), json!(email));
    }
    attributes.insert("external_id".into(), json!(id));
    for (from, to) in [
        ("firstName", "first_name"),
        ("lastName", "last_name"),
        ("title", "title"),
        ("companyName", "organization"),
    ] {
        if let Some(v) = nonempty(&customer[from]) {
            attributes.insert(to.into(), json!(v));
        }
    }
    if let Some(address) = chosen_address(customer) {
        if let Some(phone) = nonempty(&address["mobile"]).or_else(|| nonempty(&address["phone"])) {
            attributes.insert("phone_number".into(), json!(phone));
        }
        let location = location(address);
        if location.as_object().is_some_and(|l| !l.is_empty()) {
            attributes.insert("location".into(), location);
        }
    }
    let properties = truthy_fields(&customer["custom"]["fields"]);
    if !properties.is_empty() {
        attributes.insert("properties".into(), Value::Object(properties));
    }
    Ok(Profile {
        id,
        attributes: Value::Object(attributes),
    })
}

/// The same profile without `phone_number`: what is sent once more when Klaviyo rejects
/// a profile for its phone number (the plugin's fallback).
pub fn without_phone(attributes: &Value) -> Value {
    let mut out = attributes.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("phone_number");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn address(id: &str, city: &str) -> Value {
        json!({"id": id, "city": city, "country": "DE"})
    }

    #[test]
    fn the_default_billing_address_then_the_first_billing_address_then_the_first() {
        let mut c = json!({
            "id": "c1",
            "addresses": [address("a", "Berlin"), address("b", "Wien"), address("c", "Paris")],
            "billingAddressIds": ["c", "b"],
            "defaultBillingAddressId": "b",
        });
        assert_eq!(chosen_address(&c).unwrap()["city"], "Wien");
        c.as_object_mut().unwrap().remove("defaultBillingAddressId");
        assert_eq!(chosen_address(&c).unwrap()["city"], "Paris");
        c["billingAddressIds"] = json!([]);
        assert_eq!(chosen_address(&c).unwrap()["city"], "Berlin");
        // A default that names no address falls through to the billing list.
        c["defaultBillingAddressId"] = json!("gone");
        c["billingAddressIds"] = json!(["b"]);
        assert_eq!(chosen_address(&c).unwrap()["city"], "Wien");
        c["addresses"] = json!([]);
        assert!(chosen_address(&c).is_none());
        let p = profile(&c).unwrap();
        assert!(p.attributes.get("location").is_none());
        assert!(p.attributes.get("phone_number").is_none());
    }

    #[test]
    fn address_lines_join_their_parts_and_drop_blanks() {
        let a = json!({
            "apartment": "3a", "building": " ", "streetNumber": "12", "streetName": "Main St",
            "additionalStreetInfo": "", "additionalAddressInfo": "rear entrance",
            "city": "London", "country": "GB", "region": "", "postalCode": "SW1A 1AA"
        });
        assert_eq!(
            location(&a),
            json!({"address1": "3a, 12, Main St", "address2": "rear entrance",
                   "city": "London", "country": "GB", "zip": "SW1A 1AA"})
        );
    }

    #[test]
    fn mobile_before_phone_and_the_fallback_drops_only_the_phone() {
        let c = json!({
            "id": "c1", "email": "a@example.com", "firstName": "Ann", "lastName": "Lee",
            "title": "Dr", "companyName": "ACME",
            "addresses": [{"id": "a", "phone": "+4930123", "mobile": "+49170123", "city": "Berlin"}],
            "custom": {"type": {"typeId": "type", "id": "t"},
                       "fields": {"vip": true, "score": 0, "note": "", "tier": "gold"}}
        });
        let p = profile(&c).unwrap();
        assert_eq!(p.id, "c1");
        assert_eq!(
            p.attributes,
            json!({
                "email": "a@example.com", "external_id": "c1", "first_name": "Ann",
                "last_name": "Lee", "title": "Dr", "organization": "ACME",
                "phone_number": "+49170123", "location": {"city": "Berlin"},
                "properties": {"vip": true, "tier": "gold"}
            })
        );
        let mut only_phone = c.clone();
        only_phone["addresses"][0]["mobile"] = json!("");
        assert_eq!(
            profile(&only_phone).unwrap().attributes["phone_number"],
            "+4930123"
        );
        let fallback = without_phone(&p.attributes);
        assert!(fallback.get("phone_number").is_none());
        assert_eq!(fallback["email"], "a@example.com");
        assert_eq!(fallback["location"], json!({"city": "Berlin"}));
    }

    #[test]
    fn the_real_example_customer() {
        let c = super::super::fixtures::example("customer");
        let p = profile(&c).unwrap();
        assert_eq!(p.id, c["id"].as_str().unwrap());
        assert_eq!(p.attributes["external_id"], c["id"]);
        assert_eq!(p.attributes["email"], c["email"]);
        if let Some(first) = c["firstName"].as_str() {
            assert_eq!(p.attributes["first_name"], first);
        }
        match chosen_address(&c) {
            Some(a) => assert_eq!(p.attributes["location"], location(a)),
            None => assert!(p.attributes.get("location").is_none()),
        }
        assert!(
            profile(&json!({"email": "x@example.com"}))
                .unwrap_err()
                .contains("missing id")
        );
    }
}
