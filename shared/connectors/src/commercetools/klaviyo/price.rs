//! Money and the choice of a price (`Price`: `{value: Money, country?, customerGroup?,
//! channel?, validFrom?, validUntil?}`).

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A `Money`/`TypedMoney` as a number: `centAmount / 10^fractionDigits` (2 when absent),
/// no currency conversion. `None` without an integer `centAmount`.
pub fn amount(money: &Value) -> Option<f64> {
    let cents = money["centAmount"].as_i64()?;
    let digits = money["fractionDigits"].as_i64().unwrap_or(2).clamp(0, 18);
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let value = cents as f64 / 10f64.powi(digits as i32);
    Some(value)
}

/// A price valid at "now": its `validFrom` (now when absent), `validUntil` (none: open).
type Ranged<'a> = (DateTime<Utc>, Option<DateTime<Utc>>, &'a Value);

fn instant(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The price the plugin shows (REFERENCE "Price"): among `prices` (only those in
/// `currency` when given), the one with `validFrom`/`validUntil` valid at `now` with the
/// earliest `validFrom` (an absent one counts as `now`), then the earliest `validUntil`
/// (an absent one last); else the first price without dates and without customer group;
/// else none. Prices whose dates do not parse count as not valid.
pub fn choose<'a>(
    prices: &'a Value,
    currency: Option<&str>,
    now: DateTime<Utc>,
) -> Option<&'a Value> {
    let prices: Vec<&Value> = prices
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| currency.is_none_or(|c| p["value"]["currencyCode"].as_str() == Some(c)))
        .collect();
    let dated = |p: &Value| !p["validFrom"].is_null() || !p["validUntil"].is_null();
    let mut ranged: Vec<Ranged<'_>> = prices
        .iter()
        .filter(|p| dated(p))
        .filter_map(|p| {
            let from = match &p["validFrom"] {
                Value::Null => now,
                v => instant(v)?,
            };
            let until = match &p["validUntil"] {
                Value::Null => None,
                v => Some(instant(v)?),
            };
            (from <= now && until.is_none_or(|u| u >= now)).then_some((from, until, *p))
        })
        .collect();
    // Stable: equal dates keep the API's order. `None` (no end) sorts after any end.
    ranged.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| match (a.1, b.1) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        })
    });
    ranged.first().map(|r| r.2).or_else(|| {
        prices
            .iter()
            .find(|p| !dated(p) && p["customerGroup"].is_null())
            .copied()
    })
}

/// The amount of the chosen price ([`choose`]); `None` when no price qualifies.
pub fn chosen_amount(prices: &Value, currency: Option<&str>, now: DateTime<Utc>) -> Option<f64> {
    choose(prices, currency, now).and_then(|p| amount(&p["value"]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn price(currency: &str, cents: i64) -> Value {
        json!({"value": {"type": "centPrecision", "currencyCode": currency, "centAmount": cents, "fractionDigits": 2}})
    }

    #[test]
    fn money_is_cents_over_ten_to_the_fraction_digits() {
        assert_eq!(
            amount(&json!({"centAmount": 1999, "fractionDigits": 2})),
            Some(19.99)
        );
        assert_eq!(
            amount(&json!({"centAmount": 1999, "fractionDigits": 0})),
            Some(1999.0)
        );
        assert_eq!(
            amount(&json!({"centAmount": 12345, "fractionDigits": 3})),
            Some(12.345)
        );
        assert_eq!(amount(&json!({"centAmount": 700})), Some(7.0));
        assert_eq!(amount(&json!({})), None);
    }

    #[test]
    fn a_price_valid_now_wins_then_the_first_undated_price_without_customer_group() {
        let now = at("2024-06-01T00:00:00Z");
        let mut expired = price("EUR", 100);
        expired["validFrom"] = json!("2023-01-01T00:00:00Z");
        expired["validUntil"] = json!("2024-01-01T00:00:00Z");
        let mut future = price("EUR", 200);
        future["validFrom"] = json!("2025-01-01T00:00:00Z");
        let mut late = price("EUR", 300);
        late["validFrom"] = json!("2024-05-01T00:00:00Z");
        let mut early = price("EUR", 400);
        early["validFrom"] = json!("2024-02-01T00:00:00Z");
        early["validUntil"] = json!("2024-12-31T00:00:00Z");
        let mut group = price("EUR", 500);
        group["customerGroup"] = json!({"typeId": "customer-group", "id": "g"});
        let regular = price("EUR", 600);
        let prices = json!([expired, future, late, group, regular, early]);
        // Earliest validFrom among the valid ones.
        assert_eq!(chosen_amount(&prices, Some("EUR"), now), Some(4.0));
        // Without dated prices valid now: the first undated one without customer group.
        let prices = json!([prices[0], prices[1], prices[3], prices[4]]);
        assert_eq!(chosen_amount(&prices, None, now), Some(6.0));
        // Only expired and group prices: none.
        let prices = json!([prices[0], prices[2]]);
        assert_eq!(chosen_amount(&prices, None, now), None);
    }

    #[test]
    fn equal_valid_from_is_decided_by_the_earliest_valid_until_an_open_end_last() {
        let now = at("2024-06-01T00:00:00Z");
        let mut open = price("EUR", 100);
        open["validFrom"] = json!("2024-01-01T00:00:00Z");
        let mut ends_late = price("EUR", 200);
        ends_late["validFrom"] = json!("2024-01-01T00:00:00Z");
        ends_late["validUntil"] = json!("2025-01-01T00:00:00Z");
        let mut ends_soon = price("EUR", 300);
        ends_soon["validFrom"] = json!("2024-01-01T00:00:00Z");
        ends_soon["validUntil"] = json!("2024-07-01T00:00:00Z");
        let prices = json!([open, ends_late, ends_soon]);
        assert_eq!(chosen_amount(&prices, None, now), Some(3.0));
        // Only validUntil: validFrom counts as now, so it is valid and ranks as "now".
        let mut until_only = price("EUR", 900);
        until_only["validUntil"] = json!("2024-07-01T00:00:00Z");
        assert_eq!(chosen_amount(&json!([until_only]), None, now), Some(9.0));
    }

    #[test]
    fn the_currency_filters_first_and_the_first_price_wins_without_one() {
        let now = at("2024-06-01T00:00:00Z");
        let prices = json!([price("USD", 1100), price("EUR", 1000)]);
        assert_eq!(chosen_amount(&prices, Some("EUR"), now), Some(10.0));
        assert_eq!(chosen_amount(&prices, None, now), Some(11.0));
        assert_eq!(chosen_amount(&prices, Some("GBP"), now), None);
        assert_eq!(chosen_amount(&Value::Null, None, now), None);
    }

    #[test]
    fn the_real_example_products_price() {
        let product = super::super::fixtures::example("product");
        let prices = &product["masterData"]["current"]["masterVariant"]["prices"];
        assert_eq!(chosen_amount(prices, Some("EUR"), Utc::now()), Some(100.0));
    }
}
