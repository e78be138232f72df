//! One value of a row ([`crate::TableRows`]): a JSON value built in memory, or JSON text
//! passed through as it arrived.
//!
//! Why a cell type and not `serde_json::Value` everywhere: a Klaviyo event's
//! `event_properties` (most of an events page) used to be parsed into a `Value` tree,
//! serialised again into the `RecordBatch` and dropped — two thirds of a fetcher's
//! instructions per event (`docs/benchmarks.md`, "Issue 15") — only to reach the loader as
//! the same JSON text. A [`Cell::Raw`] keeps that text and is written into the batch
//! verbatim. The wire does not change: a raw cell serialises to JSON that parses to the
//! very value its `Value` cell would have been (loaders read both the same), so the
//! message keeps `"v": 1`.
//!
//! Connectors that build their rows as `Value`s keep doing so: [`cells`] (and
//! `From<Value>`) turn such a row into cells in place (a [`Cell`] is as large as a
//! `Value`, so the conversion reuses the row's allocation).

use std::borrow::Cow;

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// A row's value.
#[derive(Debug, Clone)]
pub enum Cell {
    /// A JSON value built in memory (null, number, boolean, string, array, object).
    Json(Value),
    /// JSON text passed through unparsed.
    Raw(RawJson),
}

/// JSON text that `serde_json` reads as a `Value` (checked when made), kept as it arrived.
#[derive(Debug, Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// `text` as a raw cell's content, after checking that it reads as one JSON value.
    ///
    /// # Errors
    /// `serde_json`'s, when `text` is not one JSON value it can read (syntax, a lone
    /// surrogate escape, a number out of range, nesting deeper than its limit).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        // Read as a `Value` reads it: `RawValue` alone skips strings and numbers unchecked.
        serde_json::from_str::<Value>(text)?;
        Ok(Self(RawValue::from_string(text.to_string())?))
    }

    /// Text that the caller has read as JSON the way a `Value` reads it (strings decoded,
    /// numbers parsed, nesting within serde_json's limit) — the cheap path of a reader that
    /// already walks the text (`klaviyo::events_page`).
    pub(crate) fn checked(raw: &RawValue) -> Self {
        Self(raw.to_owned())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The text parsed into a `Value`.
    fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get())
            .expect("a RawJson reads as a Value: checked when it was made")
    }
}

// A cell is no larger than a `Value`, so `cells` converts a row in place.
const _: () = assert!(std::mem::size_of::<Cell>() == std::mem::size_of::<Value>());

/// A row of `Value`s as cells (in place: no new allocation).
pub fn cells(row: Vec<Value>) -> Vec<Cell> {
    row.into_iter().map(Cell::Json).collect()
}

/// Rows of cells as JSON values (raw cells parsed): what the loader reads them as, for
/// tests and tools — not for a fetcher's hot path.
pub fn values(rows: Vec<Vec<Cell>>) -> Vec<Vec<Value>> {
    rows.into_iter()
        .map(|row| row.into_iter().map(Cell::into_value).collect())
        .collect()
}

impl Cell {
    /// The cell as a JSON value: borrowed for [`Cell::Json`], parsed for [`Cell::Raw`]
    /// (costly: for comparisons and tests, not for a page's hot path).
    pub fn value(&self) -> Cow<'_, Value> {
        match self {
            Cell::Json(v) => Cow::Borrowed(v),
            Cell::Raw(raw) => Cow::Owned(raw.to_value()),
        }
    }

    /// [`Cell::value`], owned.
    pub fn into_value(self) -> Value {
        match self {
            Cell::Json(v) => v,
            Cell::Raw(raw) => raw.to_value(),
        }
    }

    /// Whether the cell is JSON null (a raw cell holds an object, array or scalar text:
    /// only `null` is null).
    pub fn is_null(&self) -> bool {
        match self {
            Cell::Json(v) => v.is_null(),
            Cell::Raw(raw) => raw.get() == "null",
        }
    }

    /// The string of a [`Cell::Json`] string; `None` for anything else (a raw cell's text
    /// is JSON, not a decoded string).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Cell::Json(v) => v.as_str(),
            Cell::Raw(_) => None,
        }
    }
}

impl Default for Cell {
    fn default() -> Self {
        Cell::Json(Value::Null)
    }
}

impl From<Value> for Cell {
    fn from(value: Value) -> Self {
        Cell::Json(value)
    }
}

impl From<RawJson> for Cell {
    fn from(raw: RawJson) -> Self {
        Cell::Raw(raw)
    }
}

impl Serialize for Cell {
    /// A `Value` as `serde_json` writes it; raw text verbatim.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Json(v) => v.serialize(s),
            Cell::Raw(raw) => raw.0.serialize(s),
        }
    }
}

/// Cells are equal when their JSON values are: a raw cell equals the `Value` its text
/// parses to (whatever its spacing or member order).
impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Json(a), Cell::Json(b)) => a == b,
            (Cell::Raw(a), Cell::Raw(b)) if a.get() == b.get() => true,
            _ => self.value() == other.value(),
        }
    }
}

impl PartialEq<Value> for Cell {
    fn eq(&self, other: &Value) -> bool {
        *self.value() == *other
    }
}

impl PartialEq<Cell> for Value {
    fn eq(&self, other: &Cell) -> bool {
        *self == *other.value()
    }
}

/// A cell equals what its JSON value equals: strings, numbers, booleans (as
/// `serde_json::Value` compares with them).
macro_rules! equal_as_value {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for Cell {
            fn eq(&self, other: &$t) -> bool {
                *self.value() == *other
            }
        }
    )*};
}

equal_as_value!(
    str, &str, String, bool, i8, i16, i32, i64, isize, u8, u16, u32, u64, usize, f32, f64
);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_raw_cell_writes_its_text_and_equals_the_value_it_parses_to() {
        let text = r#"{"b": [1, 2.50, "x\u00e9"], "a": {"$value": "3"}}"#;
        let raw = Cell::from(RawJson::parse(text).unwrap());
        let json = Cell::from(json!({"a": {"$value": "3"}, "b": [1, 2.5, "xé"]}));
        assert_eq!(serde_json::to_string(&raw).unwrap(), text);
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"{"a":{"$value":"3"},"b":[1,2.5,"xé"]}"#
        );
        assert_eq!(raw, json);
        assert_eq!(json, raw);
        assert_eq!(raw, json!({"a": {"$value": "3"}, "b": [1, 2.5, "xé"]}));
        assert_ne!(raw, Cell::from(json!({"a": 1})));
        assert_eq!(Cell::from(json!("s")), "s");
        assert_eq!(Cell::from(json!(7)), 7);
        assert!(!raw.is_null() && raw.as_str().is_none());
        assert!(Cell::from(RawJson::parse("null").unwrap()).is_null());
        assert_eq!(raw.into_value(), json.into_value());
    }

    #[test]
    fn raw_json_refuses_what_a_value_cannot_read() {
        for bad in [
            "",
            "{",
            r#"{"a": 1} x"#,
            r#""\ud800""#,
            "1e400",
            &format!("{}{}", "[".repeat(200), "]".repeat(200)),
        ] {
            assert!(RawJson::parse(bad).is_err(), "{bad:?}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_row_of_values_becomes_cells_in_place() {
        let row = vec![json!(1), json!("a"), json!(null)];
        let at = row.as_ptr() as usize;
        let cells = cells(row);
        assert_eq!(cells.as_ptr() as usize, at);
        assert_eq!(cells, vec![json!(1), json!("a"), json!(null)]);
    }
}
