//! The rows of a `RecordBatch` kept as the JSON text they arrived in ([`RawRows`]), for
//! readers that convert each cell once (the loader) and have no use for a
//! `serde_json::Value` tree per cell.
//!
//! The wire is the same as `RecordBatch::rows`: a JSON array of rows, each a JSON array of
//! cells. Only the decoding differs: every cell is checked to be JSON (as a `Value` parse
//! would) and its text copied, untouched, into one buffer per batch.

use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// Rows of JSON cells as their JSON text: one buffer holding every cell's text one after
/// the other, and where each cell and each row ends. Rows may have different lengths (a
/// reader refuses a row that does not fit its columns, as with `Vec<Vec<Value>>`).
///
/// A cell's text is exactly the JSON of the wire (whitespace inside objects and arrays
/// included), checked while decoding: valid JSON in UTF-8, and no `\u` escape that is a
/// lone UTF-16 surrogate — what a decode into `serde_json::Value` refuses too. Numbers are
/// kept as written, of any size (a `Value` parse refuses those beyond `f64`'s range).
///
/// Deserialises only from borrowed JSON input (`serde_json::from_slice`/`from_str`, which
/// [`Message::decode`](crate::Message::decode) uses), not from a reader or a `Value`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawRows {
    /// Every cell's JSON text, one after the other.
    text: String,
    /// Per cell, the byte offset in `text` where it ends (it starts where the previous ends).
    cell_ends: Vec<u32>,
    /// Per row, the index in `cell_ends` after its last cell.
    row_ends: Vec<u32>,
}

/// One row of [`RawRows`]: its cells' JSON text.
#[derive(Clone, Copy)]
pub struct RawRow<'a> {
    rows: &'a RawRows,
    /// Index in `rows.cell_ends` of the first cell.
    first: usize,
    /// Index in `rows.cell_ends` after the last cell.
    end: usize,
}

impl RawRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.row_ends.len()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.row_ends.is_empty()
    }

    /// Row `i` (0-based).
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn row(&self, i: usize) -> RawRow<'_> {
        let first = if i == 0 {
            0
        } else {
            self.row_ends[i - 1] as usize
        };
        RawRow {
            rows: self,
            first,
            end: self.row_ends[i] as usize,
        }
    }

    /// The rows in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RawRow<'_>> + '_ {
        (0..self.len()).map(|i| self.row(i))
    }

    /// Bytes of JSON text the cells take (without the arrays' brackets and commas).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The rows as `serde_json::Value`s, for readers that need trees (not the loader's
    /// Postgres path). A cell holding a number beyond `f64`'s range, which a `Value` cannot
    /// hold, becomes its text as a JSON string.
    pub fn to_values(&self) -> Vec<Vec<Value>> {
        self.iter().map(|row| row.to_values()).collect()
    }

    /// Rows of `Value`s as raw rows: each cell serialised as compact JSON.
    ///
    /// # Panics
    /// When the cells' text outgrows 4 GiB, which no message can hold.
    pub fn from_values(rows: &[Vec<Value>]) -> Self {
        let mut out = Self::default();
        for row in rows {
            for cell in row {
                out.text.push_str(&cell.to_string());
                out.cell_ends.push(offset(out.text.len()));
            }
            out.row_ends.push(offset(out.cell_ends.len()));
        }
        out
    }

    fn cell(&self, i: usize) -> &str {
        let start = if i == 0 {
            0
        } else {
            self.cell_ends[i - 1] as usize
        };
        &self.text[start..self.cell_ends[i] as usize]
    }
}

fn offset(n: usize) -> u32 {
    u32::try_from(n).expect("a RecordBatch's rows take less than 4 GiB")
}

impl fmt::Debug for RawRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> RawRow<'a> {
    /// Number of cells.
    pub fn len(&self) -> usize {
        self.end - self.first
    }

    /// Whether the row has no cell.
    pub fn is_empty(&self) -> bool {
        self.end == self.first
    }

    /// Cell `i`'s JSON text (`"abc"`, `12.5`, `null`, `{"k":[1]}`).
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn get(&self, i: usize) -> &'a str {
        assert!(i < self.len(), "cell {i} of a row of {}", self.len());
        self.rows.cell(self.first + i)
    }

    /// The cells' JSON text in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a str> + 'a {
        let rows = self.rows;
        (self.first..self.end).map(move |i| rows.cell(i))
    }

    /// The cells as `Value`s (see [`RawRows::to_values`]).
    pub fn to_values(&self) -> Vec<Value> {
        self.iter().map(raw_to_value).collect()
    }
}

impl fmt::Debug for RawRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A raw cell as a `Value`; a number beyond `f64`'s range (the only valid JSON a `Value`
/// refuses) as its text in a JSON string.
pub fn raw_to_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

impl Serialize for RawRows {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Row<'a>(RawRow<'a>);
        impl Serialize for Row<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
                for cell in self.0.iter() {
                    // Checked JSON when decoded or built from `Value`s: this parse only
                    // borrows it back as a raw value.
                    let raw: &RawValue =
                        serde_json::from_str(cell).map_err(serde::ser::Error::custom)?;
                    seq.serialize_element(raw)?;
                }
                seq.end()
            }
        }
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for row in self.iter() {
            seq.serialize_element(&Row(row))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for RawRows {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(RowsVisitor)
    }
}

struct RowsVisitor;

impl<'de> Visitor<'de> for RowsVisitor {
    type Value = RawRows;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows (arrays of JSON values)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRows, A::Error> {
        let mut rows = RawRows::default();
        if let Some(n) = seq.size_hint() {
            rows.row_ends.reserve(n);
        }
        while seq.next_element_seed(RowSeed(&mut rows))?.is_some() {}
        Ok(rows)
    }
}

/// Appends one row's cells to the rows being decoded.
struct RowSeed<'r>(&'r mut RawRows);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row (an array of JSON values)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let rows = self.0;
        while let Some(cell) = seq.next_element::<&'de RawValue>()? {
            let text = cell.get();
            check_escapes(text).map_err(de::Error::custom)?;
            rows.text.push_str(text);
            let end = u32::try_from(rows.text.len())
                .map_err(|_| de::Error::custom("a RecordBatch's rows take 4 GiB or more"))?;
            rows.cell_ends.push(end);
        }
        let end = u32::try_from(rows.cell_ends.len())
            .map_err(|_| de::Error::custom("a RecordBatch has 2^32 cells or more"))?;
        rows.row_ends.push(end);
        Ok(())
    }
}

/// Refuses a `\u` escape that is a lone UTF-16 surrogate, which serde_json's raw capture
/// lets through but a decode into `Value` (the rows' decoding before raw rows) refuses: a
/// message with one stays undecodable as it was. `text` is JSON serde_json has read as a
/// `RawValue` (so every escape is complete); within such text a lone surrogate is the only
/// escape a `Value` refuses (connectors passing text through check it with this too).
///
/// # Errors
/// The lone surrogate, as `\uXXXX`.
pub fn check_escapes(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    if !bytes.contains(&b'\\') {
        return Ok(());
    }
    let hex = |at: usize| -> Option<u16> {
        let digits = text.get(at..at + 4)?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        // The raw text is valid JSON: a backslash always starts a complete escape.
        if bytes.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let unit = hex(i + 2).unwrap_or(0);
        i += 6;
        match unit {
            0xD800..=0xDBFF => {
                let low = (bytes.get(i) == Some(&b'\\') && bytes.get(i + 1) == Some(&b'u'))
                    .then(|| hex(i + 2))
                    .flatten();
                if !matches!(low, Some(0xDC00..=0xDFFF)) {
                    return Err(format!(
                        "lone leading surrogate \\u{unit:04x} in a JSON string of a row"
                    ));
                }
                i += 6;
            }
            0xDC00..=0xDFFF => {
                return Err(format!(
                    "lone trailing surrogate \\u{unit:04x} in a JSON string of a row"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_each_cells_text_and_reads_back_the_same_values() {
        let wire = r#"[["a",1,-2.5e3,null,true,{"k":[1,{"x":"\u00e9"}]}],[],[ [ 1 , 2 ] ]]"#;
        let rows: RawRows = serde_json::from_str(wire).unwrap();
        assert_eq!(rows.len(), 3);
        let first: Vec<&str> = rows.row(0).iter().collect();
        assert_eq!(
            first,
            [
                r#""a""#,
                "1",
                "-2.5e3",
                "null",
                "true",
                r#"{"k":[1,{"x":"\u00e9"}]}"#
            ]
        );
        assert!(rows.row(1).is_empty());
        assert_eq!(rows.row(2).get(0), "[ 1 , 2 ]");
        let values: Vec<Vec<Value>> = serde_json::from_str(wire).unwrap();
        assert_eq!(rows.to_values(), values);
        // Serialising gives the same rows back, and `from_values` the same cells.
        let again: Vec<Vec<Value>> =
            serde_json::from_slice(&serde_json::to_vec(&rows).unwrap()).unwrap();
        assert_eq!(again, values);
        assert_eq!(RawRows::from_values(&values).to_values(), values);
    }

    #[test]
    fn refuses_what_a_value_decode_refuses() {
        for bad in [
            r#"[["\ud800"]]"#,
            r#"[[{"k":"a\udc00"}]]"#,
            r#"[["\ud800\u0041"]]"#,
            r#"[[1,]]"#,
            r#"[["a"]"#,
            r#"[1]"#,
            r#"{"a":1}"#,
        ] {
            assert!(
                serde_json::from_str::<RawRows>(bad).is_err(),
                "accepted {bad}"
            );
            assert!(
                serde_json::from_str::<Vec<Vec<Value>>>(bad).is_err(),
                "{bad}"
            );
        }
        // A surrogate pair and an escaped backslash before `ud800` are fine.
        let ok: RawRows = serde_json::from_str(r#"[["\ud83d\ude00","\\ud800"]]"#).unwrap();
        assert_eq!(ok.row(0).to_values(), vec![json!("😀"), json!("\\ud800")]);
    }

    #[test]
    fn numbers_beyond_f64_are_kept_as_written() {
        let rows: RawRows =
            serde_json::from_str("[[1e400, 123456789012345678901234567890]]").unwrap();
        assert_eq!(rows.row(0).get(0), "1e400");
        assert_eq!(rows.row(0).get(1), "123456789012345678901234567890");
        assert_eq!(rows.row(0).to_values()[0], json!("1e400"));
    }
}
