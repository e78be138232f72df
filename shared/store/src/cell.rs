//! Converting the JSON values of a [`RecordBatch`](sluice_contracts::RecordBatch) into typed
//! Postgres values for binary COPY.
//!
//! Strict by design: a value of the wrong JSON type for its column is an error naming the
//! column, never a silent coercion. Accepted shapes per column type:
//! - `bool`: JSON boolean; `int2/int4/int8`: JSON integers within range;
//! - `float4/float8`: JSON numbers; `text/varchar`: JSON strings without NUL characters;
//! - `json/jsonb`: any JSON without NUL characters (Postgres rejects `\u0000` in jsonb);
//! - `timestamp`: `YYYY-MM-DDTHH:MM:SS[.f]` without offset (local, zone-less);
//! - `timestamptz`: RFC 3339 with offset, stored as UTC; `date`: `YYYY-MM-DD`;
//! - `uuid`: the canonical text form;
//! - `numeric`: a JSON number or a decimal string (`"123.45"`, `"-0.5"`, `"1e3"`; APIs send
//!   money as either), kept exact — the number's own digits, never through a float.
//!
//! JSON null is SQL NULL, except in json/jsonb columns, where it stays the JSON value `null`.
//!
//! Cells come as `serde_json::Value`s ([`to_cell`]) or as the JSON text they arrived in
//! ([`raw_to_cell`], the loader's path: rows of a
//! [`RawRecordBatch`](sluice_contracts::RawRecordBatch)); both apply the rules above alike.
//! From text, a jsonb value is passed on as it was written (Postgres parses it as it would
//! the re-serialised `Value`), strings are unescaped only when they hold an escape, and a
//! number keeps its own digits.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use postgres_types::{IsNull, ToSql, Type, to_sql_checked};
use serde_json::Value;

/// One typed value ready for binary COPY, borrowing text from the cell it came from (`'a`):
/// converting a `Value` row allocates only for JSON columns, a raw row only for strings with
/// escapes (and numerics).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// SQL NULL.
    Null,
    /// `bool`.
    Bool(bool),
    /// `int2`.
    I16(i16),
    /// `int4`.
    I32(i32),
    /// `int8`.
    I64(i64),
    /// `float4`.
    F32(f32),
    /// `float8`.
    F64(f64),
    /// `text`, `varchar`, `bpchar`, `name`: borrowed unless unescaping made a new string.
    Text(Cow<'a, str>),
    /// `json`, `jsonb`: the value as JSON text (what both types take on the wire); borrowed
    /// when the cell arrived as JSON text.
    Json(Cow<'a, str>),
    /// `timestamp` (no zone).
    Timestamp(NaiveDateTime),
    /// `timestamptz`, UTC.
    TimestampTz(DateTime<Utc>),
    /// `date`.
    Date(NaiveDate),
    /// `uuid`.
    Uuid(uuid::Uuid),
    /// `numeric`: a finite decimal in plain notation (`-123.4500`), as [`decimal`] writes it.
    Numeric(String),
}

impl Cell<'_> {
    /// The bytes the value takes uncompressed in a table or index row (the varlena header
    /// left out): the text's UTF-8 length for `Text` and `Json`, the fixed width otherwise,
    /// 0 for NULL. Postgres may compress long values in an index entry; this does not.
    pub fn stored_len(&self) -> usize {
        match self {
            Self::Null => 0,
            Self::Bool(_) => 1,
            Self::I16(_) => 2,
            Self::I32(_) | Self::F32(_) | Self::Date(_) => 4,
            Self::I64(_) | Self::F64(_) | Self::Timestamp(_) | Self::TimestampTz(_) => 8,
            Self::Uuid(_) => 16,
            Self::Text(t) => t.len(),
            Self::Json(j) => j.len(),
            // Postgres' numeric: a 4-byte header (digit count, weight, sign, scale) and
            // 2 bytes per group of four decimal digits.
            Self::Numeric(n) => 4 + 2 * n.chars().filter(char::is_ascii_digit).count().div_ceil(4),
        }
    }
}

/// The column types the loader writes.
pub const SUPPORTED: [Type; 17] = [
    Type::BOOL,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::TEXT,
    Type::VARCHAR,
    Type::BPCHAR,
    Type::NAME,
    Type::JSON,
    Type::JSONB,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
    Type::DATE,
    Type::UUID,
    Type::NUMERIC,
];

/// True when the loader can write columns of this type ([`SUPPORTED`]).
pub fn supported(ty: &Type) -> bool {
    SUPPORTED.contains(ty)
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(60).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether serialised JSON `text` holds a NUL character: serde_json writes one as the
/// escape `\u0000`, which is an escape (not an escaped backslash followed by `u0000`) when
/// an odd number of backslashes precede the `u`.
fn has_nul(text: &str) -> bool {
    let bytes = text.as_bytes();
    // Most JSON has no escape at all: one memchr instead of a substring search.
    if !bytes.contains(&b'\\') {
        return false;
    }
    let mut from = 0;
    while let Some(found) = text[from..].find("\\u0000") {
        let u = from + found + 1;
        let backslashes = bytes[..u].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 1 {
            return true;
        }
        from = u;
    }
    false
}

const NUL_IN_TEXT: &str = "text contains a NUL character, which Postgres cannot store";
const NUL_IN_JSON: &str = "JSON contains a NUL character (\\u0000), which jsonb cannot store";

/// Converts `value` for a column of type `ty`.
///
/// # Errors
/// A message naming the expected and the found shape (the caller adds the column name).
pub fn to_cell<'a>(value: &'a Value, ty: &Type) -> Result<Cell<'a>, String> {
    if value.is_null() {
        // A JSON null in a json/jsonb column is kept as the JSON value `null` (its original
        // type); in every other column it is SQL NULL.
        return Ok(if matches!(*ty, Type::JSON | Type::JSONB) {
            Cell::Json("null".into())
        } else {
            Cell::Null
        });
    }
    let wrong = || {
        format!(
            "expected {} but found {} {}",
            ty.name(),
            kind(value),
            describe(value)
        )
    };
    let int = || -> Result<i64, String> {
        value.as_i64().ok_or_else(|| {
            if value.is_number() {
                format!(
                    "{} is not an integer in the range of {}",
                    describe(value),
                    ty.name()
                )
            } else {
                wrong()
            }
        })
    };
    let out_of_range = || format!("{} is out of range for {}", describe(value), ty.name());
    let text = || -> Result<&'a str, String> {
        let s = value.as_str().ok_or_else(wrong)?;
        if s.contains('\0') {
            return Err(NUL_IN_TEXT.into());
        }
        Ok(s)
    };
    Ok(match *ty {
        Type::BOOL => Cell::Bool(value.as_bool().ok_or_else(wrong)?),
        Type::INT2 => Cell::I16(i16::try_from(int()?).map_err(|_| out_of_range())?),
        Type::INT4 => Cell::I32(i32::try_from(int()?).map_err(|_| out_of_range())?),
        Type::INT8 => Cell::I64(int()?),
        Type::FLOAT4 => Cell::F32(value.as_f64().ok_or_else(wrong)? as f32),
        Type::FLOAT8 => Cell::F64(value.as_f64().ok_or_else(wrong)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Cell::Text(text()?.into()),
        Type::JSON | Type::JSONB => {
            let json = value.to_string();
            if has_nul(&json) {
                return Err(NUL_IN_JSON.into());
            }
            Cell::Json(json.into())
        }
        Type::TIMESTAMP => {
            let s = text()?;
            let parsed = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                .map_err(|e| format!("invalid timestamp {}: {e}", describe(value)))?;
            Cell::Timestamp(parsed)
        }
        Type::TIMESTAMPTZ => {
            let s = text()?;
            let parsed = DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("invalid RFC 3339 timestamp {}: {e}", describe(value)))?;
            Cell::TimestampTz(parsed.with_timezone(&Utc))
        }
        Type::DATE => {
            let s = text()?;
            Cell::Date(
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map_err(|e| format!("invalid date {}: {e}", describe(value)))?,
            )
        }
        Type::UUID => {
            let s = text()?;
            Cell::Uuid(
                uuid::Uuid::parse_str(s)
                    .map_err(|e| format!("invalid uuid {}: {e}", describe(value)))?,
            )
        }
        Type::NUMERIC => {
            let literal = match value {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_string(),
                _ => return Err(wrong()),
            };
            Cell::Numeric(
                decimal(&literal)
                    .ok_or_else(|| format!("{} is not a decimal number", describe(value)))?,
            )
        }
        _ => return Err(format!("columns of type {} are not supported", ty.name())),
    })
}

/// One cell of a row as a reader holds it: a `Value`, or the JSON text it arrived in.
#[derive(Debug, Clone, Copy)]
pub enum CellRef<'a> {
    /// A decoded value ([`sluice_contracts::RecordBatch`] rows).
    Value(&'a Value),
    /// The cell's JSON text, valid JSON ([`sluice_contracts::RawRecordBatch`] rows).
    Raw(&'a str),
}

impl<'a> CellRef<'a> {
    /// Converts the cell for a column of type `ty`: [`to_cell`] or [`raw_to_cell`].
    ///
    /// # Errors
    /// As [`to_cell`].
    pub fn to_cell(self, ty: &Type) -> Result<Cell<'a>, String> {
        match self {
            Self::Value(value) => to_cell(value, ty),
            Self::Raw(raw) => raw_to_cell(raw, ty),
        }
    }

    /// The cell as a `Value` (a raw number beyond `f64`'s range as its text in a string).
    pub fn to_value(self) -> Value {
        match self {
            Self::Value(value) => value.clone(),
            Self::Raw(raw) => sluice_contracts::raw_rows::raw_to_value(raw),
        }
    }
}

/// [`describe`] of a raw cell: the same text as for its `Value`.
fn describe_raw(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(value) => describe(&value),
        Err(_) => describe(&Value::String(raw.to_string()))
            .trim_matches('"')
            .to_string(),
    }
}

/// [`kind`] of a raw cell, from its first character.
fn kind_raw(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "boolean",
        Some(b'"') => "string",
        Some(b'[') => "array",
        Some(b'{') => "object",
        _ => "number",
    }
}

/// Converts the JSON text `raw` of one cell (valid JSON, as a
/// [`RawRows`](sluice_contracts::RawRows) cell is) for a column of type `ty`, by the same
/// rules and with the same messages as [`to_cell`] of its `Value`, without building one:
/// a json/jsonb cell is passed on as written; a string is borrowed unless it holds an
/// escape; a number is parsed as the column needs it — as serde_json would for float
/// columns, exactly for integers, and with its own digits for numeric (where a `Value`
/// would have gone through an `f64` first for numbers with a fraction or beyond 64 bits).
/// A number beyond `f64`'s range, which a `Value` cannot hold, is refused by integer and
/// float columns and taken by numeric and jsonb ones.
///
/// # Errors
/// As [`to_cell`].
pub fn raw_to_cell<'a>(raw: &'a str, ty: &Type) -> Result<Cell<'a>, String> {
    let first = raw.as_bytes().first().copied().unwrap_or(b'n');
    if first == b'n' {
        return Ok(if matches!(*ty, Type::JSON | Type::JSONB) {
            Cell::Json(Cow::Borrowed("null"))
        } else {
            Cell::Null
        });
    }
    let is_number = first == b'-' || first.is_ascii_digit();
    let wrong = || {
        format!(
            "expected {} but found {} {}",
            ty.name(),
            kind_raw(raw),
            describe_raw(raw)
        )
    };
    let int = || -> Result<i64, String> {
        if !is_number {
            return Err(wrong());
        }
        // serde_json reads `-0` as the float -0.0, which `as_i64` refuses: so does this.
        match raw.parse::<i64>() {
            Ok(n) if n != 0 || first != b'-' => Ok(n),
            _ => Err(format!(
                "{} is not an integer in the range of {}",
                describe_raw(raw),
                ty.name()
            )),
        }
    };
    let float = || -> Result<f64, String> {
        if !is_number {
            return Err(wrong());
        }
        // serde_json's own parse: the very `f64` a `Value` would hold.
        serde_json::from_str::<f64>(raw)
            .map_err(|_| format!("{} is out of range for {}", describe_raw(raw), ty.name()))
    };
    let out_of_range = || format!("{} is out of range for {}", describe_raw(raw), ty.name());
    let text = || -> Result<Cow<'a, str>, String> {
        if first != b'"' {
            return Err(wrong());
        }
        let s = unquote(raw)?;
        if s.contains('\0') {
            return Err(NUL_IN_TEXT.into());
        }
        Ok(s)
    };
    Ok(match *ty {
        Type::BOOL => match raw {
            "true" => Cell::Bool(true),
            "false" => Cell::Bool(false),
            _ => return Err(wrong()),
        },
        Type::INT2 => Cell::I16(i16::try_from(int()?).map_err(|_| out_of_range())?),
        Type::INT4 => Cell::I32(i32::try_from(int()?).map_err(|_| out_of_range())?),
        Type::INT8 => Cell::I64(int()?),
        Type::FLOAT4 => Cell::F32(float()? as f32),
        Type::FLOAT8 => Cell::F64(float()?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Cell::Text(text()?),
        // Plain json keeps its text as Postgres receives it: the `Value`'s serialisation
        // (sorted keys, compact), as before; jsonb is parsed by Postgres whatever the
        // spelling, so its text goes as written.
        Type::JSON => {
            let value: Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
            let json = value.to_string();
            if has_nul(&json) {
                return Err(NUL_IN_JSON.into());
            }
            Cell::Json(Cow::Owned(json))
        }
        Type::JSONB => {
            if has_nul(raw) {
                return Err(NUL_IN_JSON.into());
            }
            Cell::Json(Cow::Borrowed(raw))
        }
        Type::TIMESTAMP => {
            let s = text()?;
            let parsed = NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f"))
                .map_err(|e| format!("invalid timestamp {}: {e}", describe_raw(raw)))?;
            Cell::Timestamp(parsed)
        }
        Type::TIMESTAMPTZ => {
            let s = text()?;
            let parsed = DateTime::parse_from_rfc3339(&s)
                .map_err(|e| format!("invalid RFC 3339 timestamp {}: {e}", describe_raw(raw)))?;
            Cell::TimestampTz(parsed.with_timezone(&Utc))
        }
        Type::DATE => {
            let s = text()?;
            Cell::Date(
                NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                    .map_err(|e| format!("invalid date {}: {e}", describe_raw(raw)))?,
            )
        }
        Type::UUID => {
            let s = text()?;
            Cell::Uuid(
                uuid::Uuid::parse_str(&s)
                    .map_err(|e| format!("invalid uuid {}: {e}", describe_raw(raw)))?,
            )
        }
        Type::NUMERIC => {
            let digits = if is_number {
                decimal(raw)
            } else if first == b'"' {
                decimal(unquote(raw)?.trim())
            } else {
                return Err(wrong());
            };
            Cell::Numeric(
                digits.ok_or_else(|| format!("{} is not a decimal number", describe_raw(raw)))?,
            )
        }
        _ => return Err(format!("columns of type {} are not supported", ty.name())),
    })
}

/// The string a raw JSON string cell (`"…"`, quotes included) holds: borrowed from the
/// text when it has no escape, else unescaped by serde_json.
fn unquote(raw: &str) -> Result<Cow<'_, str>, String> {
    let inner = &raw[1..raw.len().saturating_sub(1).max(1)];
    if !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw)
        .map(Cow::Owned)
        .map_err(|e| format!("invalid JSON string {}: {e}", describe_raw(raw)))
}

/// `text` (digits with an optional sign, point and exponent: `-12.5`, `1e3`, `.5`) in plain
/// notation without exponent (`-12.5`, `1000`, `0.5`); `None` for anything else (`NaN`,
/// `Infinity`, `1,5`, empty) and for exponents beyond ±1000.
pub fn decimal(text: &str) -> Option<String> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    if exponent.abs() > 1000 {
        return None;
    }
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // All digits, and where the point goes among them.
    let digits: String = format!("{int}{frac}");
    let point = int.len() as i64 + exponent;
    let (int, frac) = if point <= 0 {
        (
            "0".to_string(),
            format!("{}{digits}", "0".repeat((-point) as usize)),
        )
    } else if point as usize >= digits.len() {
        (
            format!("{digits}{}", "0".repeat(point as usize - digits.len())),
            String::new(),
        )
    } else {
        (
            digits[..point as usize].to_string(),
            digits[point as usize..].to_string(),
        )
    };
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.bytes().all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// Postgres' binary `numeric` of a plain decimal ([`decimal`]'s output): digit count,
/// weight (of the first base-10000 digit), sign, display scale, then the base-10000 digits.
fn numeric_binary(text: &str, out: &mut BytesMut) {
    let (negative, text) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let int = int.trim_start_matches('0');
    // Pad the integer part on the left and the fraction on the right to whole groups.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let all = format!("{}{int}{frac}{}", "0".repeat(int_pad), "0".repeat(frac_pad));
    let mut groups: Vec<i16> = all
        .as_bytes()
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |n, d| n * 10 + i16::from(d - b'0')))
        .collect();
    let mut weight = ((int.len() + int_pad) / 4) as i16 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight);
    out.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_u16(frac.len() as u16);
    for g in groups {
        out.put_i16(g);
    }
}

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Bool(v) => v.to_sql(ty, out),
            Cell::I16(v) => v.to_sql(ty, out),
            Cell::I32(v) => v.to_sql(ty, out),
            Cell::I64(v) => v.to_sql(ty, out),
            Cell::F32(v) => v.to_sql(ty, out),
            Cell::F64(v) => v.to_sql(ty, out),
            Cell::Text(v) => v.to_sql(ty, out),
            Cell::Json(text) => {
                // The binary jsonb format is a version byte, then the JSON text; json takes
                // the text alone.
                if *ty == Type::JSONB {
                    out.put_u8(1);
                }
                out.put_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            Cell::Timestamp(v) => v.to_sql(ty, out),
            Cell::TimestampTz(v) => v.to_sql(ty, out),
            Cell::Date(v) => v.to_sql(ty, out),
            Cell::Uuid(v) => v.to_sql(ty, out),
            Cell::Numeric(text) => {
                numeric_binary(text, out);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(ty: &Type) -> bool {
        supported(ty) || *ty == Type::INT8
    }

    to_sql_checked!();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_are_range_checked() {
        assert_eq!(to_cell(&json!(7), &Type::INT4), Ok(Cell::I32(7)));
        let err = to_cell(&json!(3_000_000_000_i64), &Type::INT4).unwrap_err();
        assert!(err.contains("out of range for int4"), "{err}");
        let err = to_cell(&json!(1.5), &Type::INT8).unwrap_err();
        assert!(err.contains("not an integer"), "{err}");
        let err = to_cell(&json!("12"), &Type::INT8).unwrap_err();
        assert!(err.contains("expected int8 but found string"), "{err}");
    }

    #[test]
    fn timestamps_dates_and_nul() {
        let naive = json!("2016-03-31T08:00:03.016000");
        let ts = to_cell(&naive, &Type::TIMESTAMP).unwrap();
        assert_eq!(
            ts,
            Cell::Timestamp(
                NaiveDate::from_ymd_opt(2016, 3, 31)
                    .unwrap()
                    .and_hms_milli_opt(8, 0, 3, 16)
                    .unwrap()
            )
        );
        let zoned = json!("2016-03-31T13:41:48.000+02:00");
        let tz = to_cell(&zoned, &Type::TIMESTAMPTZ).unwrap();
        assert_eq!(
            tz,
            Cell::TimestampTz("2016-03-31T11:41:48Z".parse().unwrap())
        );
        assert!(to_cell(&json!("2016-02-30"), &Type::DATE).is_err());
        assert!(
            to_cell(&json!("yesterday"), &Type::TIMESTAMP)
                .unwrap_err()
                .contains("invalid timestamp")
        );
        assert!(
            to_cell(&json!("a\u{0}b"), &Type::TEXT)
                .unwrap_err()
                .contains("NUL")
        );
        assert!(
            to_cell(&json!({"k": "a\u{0}"}), &Type::JSONB)
                .unwrap_err()
                .contains("NUL")
        );
        assert_eq!(to_cell(&json!(null), &Type::INT4), Ok(Cell::Null));
        assert_eq!(
            to_cell(&json!(null), &Type::JSONB),
            Ok(Cell::Json("null".into()))
        );
        // A backslash followed by `u0000` is text, not a NUL; a backslash then a NUL is.
        assert_eq!(
            to_cell(&json!({"k": ["a\\u0000"]}), &Type::JSONB),
            Ok(Cell::Json(r#"{"k":["a\\u0000"]}"#.into())),
        );
        assert!(
            to_cell(&json!(["\\\u{0}"]), &Type::JSONB)
                .unwrap_err()
                .contains("NUL")
        );
        assert!(
            to_cell(&json!({"k\u{0}": 1}), &Type::JSON)
                .unwrap_err()
                .contains("NUL")
        );
        assert!(
            to_cell(&json!(1), &Type::INTERVAL)
                .unwrap_err()
                .contains("not supported")
        );
    }

    #[test]
    fn numerics_take_numbers_and_decimal_strings_exactly() {
        for (input, plain) in [
            (json!(123.45), "123.45"),
            (json!("123.45"), "123.45"),
            (json!(" 7 "), "7"),
            (json!(-0.05), "-0.05"),
            (json!("1e3"), "1000"),
            (json!("1.5E-3"), "0.0015"),
            (json!(".5"), "0.5"),
            (json!("-0.00"), "0.00"),
            (json!(10_000_000_000_u64), "10000000000"),
        ] {
            assert_eq!(
                to_cell(&input, &Type::NUMERIC),
                Ok(Cell::Numeric(plain.into())),
                "{input}"
            );
        }
        for bad in [
            json!("12,5"),
            json!("NaN"),
            json!(""),
            json!("1e9999"),
            json!(true),
        ] {
            assert!(to_cell(&bad, &Type::NUMERIC).is_err(), "{bad}");
        }
        // The binary form Postgres reads: 123.45 = [0123][4500] × 10000^0, scale 2.
        let mut out = BytesMut::new();
        numeric_binary("123.45", &mut out);
        assert_eq!(&out[..], &[0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]);
        // 0.05 = [0500] × 10000^-1; -10000 = [1] × 10000^1 negative; 0 has no digits.
        let mut out = BytesMut::new();
        numeric_binary("0.05", &mut out);
        assert_eq!(&out[..], &[0, 1, 0xff, 0xff, 0, 0, 0, 2, 0x01, 0xf4]);
        let mut out = BytesMut::new();
        numeric_binary("-10000", &mut out);
        assert_eq!(&out[..], &[0, 1, 0, 1, 0x40, 0, 0, 0, 0, 1]);
        let mut out = BytesMut::new();
        numeric_binary("0.00", &mut out);
        assert_eq!(&out[..], &[0, 0, 0, 0, 0, 0, 0, 2]);
    }

    /// Every column type the loader writes, and one it does not.
    fn types() -> impl Iterator<Item = Type> {
        SUPPORTED.into_iter().chain([Type::INTERVAL])
    }

    /// Cells of every shape, as `Value`s.
    fn shapes() -> Vec<Value> {
        vec![
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(7),
            json!(-7),
            json!(40_000),
            json!(3_000_000_000_i64),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1.5),
            json!(-0.05),
            json!(-0.0),
            json!(1000.0),
            json!(1e21),
            json!(1.5e-7),
            json!(123.45),
            json!(1e300),
            json!(0.1 + 0.2),
            json!(""),
            json!("abc"),
            json!("a\u{e9}\u{1F600}"),
            json!("tab\there \"quoted\" back\\slash /"),
            json!("a\u{0}b"),
            json!("\\u0000"),
            json!(" 7 "),
            json!("123.45"),
            json!("-0.00"),
            json!("1e3"),
            json!("12,5"),
            json!("NaN"),
            json!("2016-03-31T08:00:03.016000"),
            json!("2016-03-31 08:00:03"),
            json!("2016-03-31T13:41:48.000+02:00"),
            json!("2016-03-31T11:41:48Z"),
            json!("2016-02-30"),
            json!("2016-03-31"),
            json!("0b1f6b4e-3a0c-4c9b-9b43-3c1c2f1d2e5a"),
            json!("not-a-uuid"),
            json!([]),
            json!([1, "a", null, [true]]),
            json!({}),
            json!({"k": {"n": [1, 2.5, {"x": null}], "s": "é\u{0}"}}),
            json!({"k": ["a\\u0000"]}),
            json!(["\\\u{0}"]),
            json!({"k\u{0}": 1}),
            json!({"long": "x".repeat(100)}),
        ]
    }

    #[test]
    fn raw_cells_convert_as_their_values_do_for_every_type_and_shape() {
        // The wire as fetchers write it (each `Value` serialised by serde_json), and the
        // `Value` a loader decoding into `Value`s reads back from it.
        for written in shapes() {
            let raw = written.to_string();
            let value: Value = serde_json::from_str(&raw).unwrap();
            for ty in &types().collect::<Vec<_>>() {
                assert_eq!(
                    raw_to_cell(&raw, ty),
                    to_cell(&value, ty),
                    "{raw} as {}",
                    ty.name()
                );
                assert_eq!(
                    CellRef::Raw(&raw).to_cell(ty),
                    CellRef::Value(&value).to_cell(ty)
                );
            }
            assert_eq!(CellRef::Raw(&raw).to_value(), value);
        }
    }

    #[test]
    fn raw_cells_borrow_what_they_can() {
        let raw = r#"{"a": [1, 2]}"#;
        assert!(matches!(
            raw_to_cell(raw, &Type::JSONB),
            Ok(Cell::Json(Cow::Borrowed(r#"{"a": [1, 2]}"#)))
        ));
        assert!(matches!(
            raw_to_cell(r#""plain""#, &Type::TEXT),
            Ok(Cell::Text(Cow::Borrowed("plain")))
        ));
        assert_eq!(
            raw_to_cell(r#""a\"b\u00e9""#, &Type::TEXT),
            Ok(Cell::Text("a\"bé".into()))
        );
        // Plain json keeps the `Value`'s serialisation, as before: sorted keys, compact.
        assert_eq!(
            raw_to_cell(r#"{"b": 1, "a": [1, 2]}"#, &Type::JSON),
            Ok(Cell::Json(r#"{"a":[1,2],"b":1}"#.into()))
        );
    }

    #[test]
    fn raw_nul_checks_read_escapes_not_backslashes() {
        for (raw, nul) in [
            (r#""\u0000""#, true),
            (r#"{"k":"a\u0000"}"#, true),
            (r#"{"k\u0000":1}"#, true),
            (r#"["\\\u0000"]"#, true),
            (r#"["\\u0000"]"#, false),
            (r#"["\\\\u0000"]"#, false),
            (r#"{"k":"\u00001"}"#, true),
        ] {
            let jsonb = raw_to_cell(raw, &Type::JSONB);
            assert_eq!(
                jsonb.as_ref().is_err_and(|e| e.contains("NUL")),
                nul,
                "{raw}: {jsonb:?}"
            );
        }
        assert!(
            raw_to_cell(r#""a\u0000b""#, &Type::TEXT)
                .unwrap_err()
                .contains("NUL")
        );
        assert!(
            raw_to_cell(r#""2016-03-31\u0000""#, &Type::DATE)
                .unwrap_err()
                .contains("NUL")
        );
    }

    #[test]
    fn raw_numbers_keep_their_digits() {
        // Beyond what an f64 holds: numeric and jsonb keep every digit, integer and float
        // columns refuse what they cannot hold.
        let huge = "123456789012345678901234567890.000000000000000000001";
        assert_eq!(
            raw_to_cell(huge, &Type::NUMERIC),
            Ok(Cell::Numeric(huge.into()))
        );
        assert_eq!(
            raw_to_cell("-1e400", &Type::NUMERIC),
            Ok(Cell::Numeric(format!("-1{}", "0".repeat(400))))
        );
        assert_eq!(
            raw_to_cell("1e400", &Type::JSONB),
            Ok(Cell::Json("1e400".into()))
        );
        let err = raw_to_cell("1e400", &Type::FLOAT8).unwrap_err();
        assert!(err.contains("out of range for float8"), "{err}");
        let err = raw_to_cell("99999999999999999999", &Type::INT8).unwrap_err();
        assert!(err.contains("not an integer in the range of int8"), "{err}");
        let err = raw_to_cell("1e400", &Type::TEXT).unwrap_err();
        assert!(
            err.contains("expected text but found number 1e400"),
            "{err}"
        );
        // Written other than serde_json writes them: the number's own digits.
        assert_eq!(
            raw_to_cell("1.50", &Type::NUMERIC),
            Ok(Cell::Numeric("1.50".into()))
        );
        assert_eq!(
            raw_to_cell("1e3", &Type::NUMERIC),
            Ok(Cell::Numeric("1000".into()))
        );
        assert_eq!(raw_to_cell("1E2", &Type::FLOAT8), Ok(Cell::F64(100.0)));
        // `-0` is a float to serde_json, not an integer: refused by integer columns as before.
        assert_eq!(
            raw_to_cell("-0", &Type::INT8),
            to_cell(&serde_json::from_str("-0").unwrap(), &Type::INT8)
        );
        assert_eq!(raw_to_cell("-0", &Type::FLOAT8), Ok(Cell::F64(-0.0)));
        assert_eq!(
            raw_to_cell("-9223372036854775808", &Type::INT8),
            Ok(Cell::I64(i64::MIN))
        );
    }
}
