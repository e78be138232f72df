//! Localized strings (`LocalizedString`: `{"en": "…", "de": "…"}`).

use serde_json::Value;

/// The text of a `LocalizedString` for `preferred` (`en-US`): that locale if present and
/// not empty, else its language part (`en`, before the `-`), else the first locale's
/// value. JSON objects are read in key order (serde_json keeps them sorted), so "first"
/// is the first locale in name order, whatever order the API sent. A plain string is
/// taken as it is; anything else, or an empty object, has no text.
pub fn text<'a>(value: &'a Value, preferred: Option<&str>) -> Option<&'a str> {
    let map = match value {
        Value::String(s) => return Some(s),
        Value::Object(map) => map,
        _ => return None,
    };
    let nonempty = |locale: &str| {
        map.get(locale)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(locale) = preferred {
        if let Some(s) = nonempty(locale) {
            return Some(s);
        }
        if let Some((language, _)) = locale.split_once('-')
            && let Some(s) = nonempty(language)
        {
            return Some(s);
        }
    }
    map.values().find_map(Value::as_str)
}

/// The text of a `LocalizedString`, or `""` when it has none.
pub fn text_or_empty(value: &Value, preferred: Option<&str>) -> String {
    text(value, preferred).unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_preferred_locale_then_its_language_then_the_first_locale() {
        let v = json!({"de": "Hose", "en": "Trousers", "en-US": "Pants"});
        assert_eq!(text(&v, Some("en-US")), Some("Pants"));
        assert_eq!(text(&v, Some("en-GB")), Some("Trousers"));
        assert_eq!(text(&v, Some("fr-FR")), Some("Hose"));
        assert_eq!(text(&v, Some("fr")), Some("Hose"));
        assert_eq!(text(&v, None), Some("Hose"));
        // An empty translation is no translation.
        assert_eq!(
            text(&json!({"de": "Hose", "en": ""}), Some("en")),
            Some("Hose")
        );
        assert_eq!(text(&json!("plain"), Some("en")), Some("plain"));
        assert_eq!(text(&json!({}), Some("en")), None);
        assert_eq!(text_or_empty(&Value::Null, None), "");
    }
}
