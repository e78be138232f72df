//! Sailthru timestamps and dates.
//!
//! The export carries three shapes:
//! - zone-less local timestamps of variable precision (`2016-03-20T02:42`,
//!   `2014-06-09T11:57:26`, `2016-03-31T08:00:03.016`), loaded into `timestamp` columns and
//!   written as `YYYY-MM-DDTHH:MM:SS.ffffff` ([`local_timestamp`]);
//! - Mongo extended-JSON dates `{"$date": <epoch milliseconds>}` on opens and clicks, loaded
//!   into `timestamptz` columns and written as RFC 3339 UTC with milliseconds,
//!   `2016-03-31T13:41:48.000Z` ([`mongo_date`]);
//! - plain dates `YYYY-MM-DD` (`blast.day`, the member name's export date) ([`date`]).

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use serde_json::Value;

/// Parses a zone-less local timestamp and returns it normalised to
/// `YYYY-MM-DDTHH:MM:SS.ffffff` (microseconds, always six digits).
///
/// Accepts `YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS` and `YYYY-MM-DDTHH:MM:SS.f…` with 1 to 9
/// fraction digits (a space may replace the `T`). Missing seconds are `00`; the fraction is
/// kept exactly (no rounding), so digits finer than a microsecond must be zeros.
///
/// # Errors
/// A message describing what is wrong (shape, out-of-range part, zone suffix).
pub fn local_timestamp(text: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!("'{text}' is not a local timestamp (YYYY-MM-DDTHH:MM[:SS[.fff]]): {why}")
    };
    let bytes = text.as_bytes();
    if bytes.len() < 16 {
        return Err(bad("too short"));
    }
    let date = parse_date_prefix(&text[..10]).map_err(|e| bad(&e))?;
    if bytes[10] != b'T' && bytes[10] != b' ' {
        return Err(bad("expected 'T' between date and time"));
    }
    let hour = digits(&bytes[11..13]).ok_or_else(|| bad("hour is not two digits"))?;
    if bytes[13] != b':' {
        return Err(bad("expected ':' after the hour"));
    }
    let minute = digits(&bytes[14..16]).ok_or_else(|| bad("minute is not two digits"))?;
    let mut rest = &bytes[16..];
    let mut second = 0;
    let mut micros = 0;
    if !rest.is_empty() {
        if rest[0] != b':' || rest.len() < 3 {
            return Err(bad("expected ':SS' after the minute"));
        }
        second = digits(&rest[1..3]).ok_or_else(|| bad("second is not two digits"))?;
        rest = &rest[3..];
        if !rest.is_empty() {
            if rest[0] != b'.' {
                return Err(bad(
                    "unexpected text after the seconds (a zone is not expected)",
                ));
            }
            let fraction = &rest[1..];
            if fraction.is_empty() || fraction.len() > 9 || !fraction.iter().all(u8::is_ascii_digit)
            {
                return Err(bad("fraction must be 1 to 9 digits"));
            }
            let (micro_digits, finer) = fraction.split_at(fraction.len().min(6));
            if finer.iter().any(|d| *d != b'0') {
                return Err(bad("precision finer than a microsecond cannot be kept"));
            }
            let mut value = 0u32;
            for (i, d) in micro_digits.iter().enumerate() {
                value += u32::from(d - b'0') * 10u32.pow(5 - i as u32);
            }
            micros = value;
        }
    }
    let time = NaiveTime::from_hms_micro_opt(hour, minute, second, micros)
        .ok_or_else(|| bad("time of day out of range"))?;
    Ok(date
        .and_time(time)
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string())
}

/// Parses `YYYY-MM-DD` and returns it unchanged after validation.
///
/// # Errors
/// A message naming the problem (shape or impossible calendar date).
pub fn date(text: &str) -> Result<String, String> {
    if text.len() != 10 {
        return Err(format!("'{text}' is not a date (YYYY-MM-DD)"));
    }
    parse_date_prefix(text)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|e| format!("'{text}' is not a date (YYYY-MM-DD): {e}"))
}

/// Parses the compact `YYYYMMDD` of a member name (`blast.20160401.json`) into a date.
pub fn compact_date(text: &str) -> Option<NaiveDate> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year = text[..4].parse().ok()?;
    let month = text[4..6].parse().ok()?;
    let day = text[6..8].parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// Converts epoch milliseconds (UTC) to RFC 3339 with millisecond precision and `Z`
/// (`1459431708000` → `2016-03-31T13:41:48.000Z`). Exact integer arithmetic.
///
/// # Errors
/// When the instant is outside chrono's range.
pub fn epoch_millis(ms: i64) -> Result<String, String> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .ok_or_else(|| format!("epoch milliseconds {ms} out of range"))
}

/// Converts a Mongo extended-JSON date to RFC 3339 UTC with milliseconds.
///
/// Accepts `{"$date": <integer epoch ms>}` (the Sailthru export's shape),
/// `{"$date": {"$numberLong": "<ms>"}}` and `{"$date": "<RFC 3339 with offset>"}`.
///
/// # Errors
/// A message describing the shape found.
pub fn mongo_date(value: &Value) -> Result<String, String> {
    let inner = value
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("$date"))
        .ok_or_else(|| {
            format!(
                "expected {{\"$date\": <epoch milliseconds>}}, found {}",
                short(value)
            )
        })?;
    match inner {
        Value::Number(n) => match n.as_i64() {
            Some(ms) => epoch_millis(ms),
            None => Err(format!(
                "$date {n} is not an integer number of milliseconds"
            )),
        },
        Value::Object(o) => match o.get("$numberLong").and_then(Value::as_str) {
            Some(s) if o.len() == 1 => s
                .parse::<i64>()
                .map_err(|_| format!("$date.$numberLong '{s}' is not an integer"))
                .and_then(epoch_millis),
            _ => Err(format!("unsupported $date value {}", short(inner))),
        },
        Value::String(s) => {
            let t = DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("$date '{s}' is not RFC 3339: {e}"))?
                .with_timezone(&Utc);
            if t.timestamp_subsec_nanos() % 1_000_000 == 0 {
                Ok(t.to_rfc3339_opts(SecondsFormat::Millis, true))
            } else if t.timestamp_subsec_nanos() % 1_000 == 0 {
                Ok(t.to_rfc3339_opts(SecondsFormat::Micros, true))
            } else {
                Err(format!("$date '{s}' is finer than a microsecond"))
            }
        }
        other => Err(format!("unsupported $date value {}", short(other))),
    }
}

/// A value shortened for error messages (never more than 80 characters).
pub(crate) fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn parse_date_prefix(text: &str) -> Result<NaiveDate, String> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err("expected YYYY-MM-DD".into());
    }
    let year = digits4(&b[..4]).ok_or("year is not four digits")?;
    let month = digits(&b[5..7]).ok_or("month is not two digits")?;
    let day = digits(&b[8..10]).ok_or("day is not two digits")?;
    NaiveDate::from_ymd_opt(year, month, day).ok_or_else(|| "no such calendar date".to_string())
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.len() == 2 && b.iter().all(u8::is_ascii_digit) {
        Some(u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0'))
    } else {
        None
    }
}

fn digits4(b: &[u8]) -> Option<i32> {
    if b.len() == 4 && b.iter().all(u8::is_ascii_digit) {
        Some(b.iter().fold(0i32, |acc, d| acc * 10 + i32::from(d - b'0')))
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_precision_is_normalised_to_microseconds() {
        assert_eq!(
            local_timestamp("2016-03-31T08:00:03.016").unwrap(),
            "2016-03-31T08:00:03.016000"
        );
        assert_eq!(
            local_timestamp("2014-06-09T11:57:26").unwrap(),
            "2014-06-09T11:57:26.000000"
        );
        assert_eq!(
            local_timestamp("2016-03-20T02:42").unwrap(),
            "2016-03-20T02:42:00.000000"
        );
        assert_eq!(
            local_timestamp("2014-06-09T11:57:26.06").unwrap(),
            "2014-06-09T11:57:26.060000"
        );
        assert_eq!(
            local_timestamp("2014-06-09T11:57:26.1").unwrap(),
            "2014-06-09T11:57:26.100000"
        );
        assert_eq!(
            local_timestamp("2014-06-09T11:57:26.123456").unwrap(),
            "2014-06-09T11:57:26.123456"
        );
        assert_eq!(
            local_timestamp("2014-06-09T11:57:26.123456000").unwrap(),
            "2014-06-09T11:57:26.123456"
        );
        assert_eq!(
            local_timestamp("2014-06-09 11:57:26.5").unwrap(),
            "2014-06-09T11:57:26.500000"
        );
    }

    #[test]
    fn invalid_timestamps_are_refused_with_a_reason() {
        for bad in [
            "",
            "2016-03-31",
            "2016-03-31T08",
            "2016-02-30T08:00:00",
            "2016-13-01T08:00:00",
            "2016-03-31T24:00:00",
            "2016-03-31T08:60:00",
            "2016-03-31T08:00:61",
            "2016-03-31T08:00:00Z",
            "2016-03-31T08:00:00+02:00",
            "2016-03-31T08:00:00.",
            "2016-03-31T08:00:00.1234567",
            "2016-03-31T8:00:00",
            "31/03/2016 08:00",
            "2016-03-31T08:00:0x",
        ] {
            let err = local_timestamp(bad).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
    }

    #[test]
    fn mongo_dates_convert_exactly() {
        assert_eq!(
            mongo_date(&json!({"$date": 1459431708000i64})).unwrap(),
            "2016-03-31T13:41:48.000Z"
        );
        // Milliseconds survive exactly (a float conversion would drift on some values).
        assert_eq!(
            mongo_date(&json!({"$date": 1459431708999i64})).unwrap(),
            "2016-03-31T13:41:48.999Z"
        );
        assert_eq!(
            mongo_date(&json!({"$date": 0})).unwrap(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            mongo_date(&json!({"$date": -1})).unwrap(),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            mongo_date(&json!({"$date": {"$numberLong": "1459431708001"}})).unwrap(),
            "2016-03-31T13:41:48.001Z"
        );
        assert_eq!(
            mongo_date(&json!({"$date": "2016-03-31T15:41:48.5+02:00"})).unwrap(),
            "2016-03-31T13:41:48.500Z"
        );
        assert!(mongo_date(&json!({"$date": 1.5})).is_err());
        assert!(mongo_date(&json!(1459431708000i64)).is_err());
        assert!(mongo_date(&json!({"$date": "yesterday"})).is_err());
        assert!(mongo_date(&json!({"$date": i64::MAX})).is_err());
    }

    #[test]
    fn dates_and_member_dates() {
        assert_eq!(date("2016-03-31").unwrap(), "2016-03-31");
        assert!(date("2016-02-30").is_err());
        assert!(date("2016-3-31").is_err());
        assert_eq!(
            compact_date("20160401"),
            NaiveDate::from_ymd_opt(2016, 4, 1)
        );
        assert_eq!(compact_date("20161301"), None);
        assert_eq!(compact_date("2016041"), None);
    }
}
