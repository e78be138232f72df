//! Time windows: even splits of a range, the split of a dense window's rest, and the text
//! forms of instants (filters, cursors).

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

/// One half-open UTC window `[start, end)`.
pub type Window = (DateTime<Utc>, DateTime<Utc>);

/// The cursor form of an instant: `%Y-%m-%dT%H:%M:%S%.6fZ`, UTC, always six fraction digits,
/// so cursors compare correctly as strings.
pub fn cursor(t: DateTime<Utc>) -> String {
    // Written digit by digit: chrono's `format` interprets its pattern on every call, and
    // every event's `datetime` comes through here (issue 15). Years outside 0..=9999 and
    // leap seconds keep chrono's rendering.
    // The fields of the naive UTC time: `DateTime`'s own accessors add the (zero) offset
    // again on every call.
    let n = t.naive_utc();
    let (year, nanos) = (n.year(), n.nanosecond());
    let Ok(year @ 0..=9999) = u32::try_from(year) else {
        return t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    };
    if nanos >= 1_000_000_000 {
        return t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    }
    // Filled in a stack buffer: pushing char by char checked capacity and encoded UTF-8 at
    // every digit (issue 15: a profile has three times, an event one).
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], n.month());
    put_digits(&mut text[8..10], n.day());
    put_digits(&mut text[11..13], n.hour());
    put_digits(&mut text[14..16], n.minute());
    put_digits(&mut text[17..19], n.second());
    put_digits(&mut text[20..26], nanos / 1000);
    String::from(std::str::from_utf8(&text).expect("ASCII digits and separators"))
}

/// Writes the last `digits.len()` decimal digits of `n` into `digits`, zero-padded.
fn put_digits(digits: &mut [u8], mut n: u32) {
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The form of an instant in a Klaviyo filter: `2024-01-01T00:00:00Z` for whole seconds,
/// six fraction digits otherwise.
pub fn filter_time(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_nanos() == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

/// Splits `[start, end)` into at most `n` contiguous windows of whole seconds (the last one
/// ends exactly at `end`). A range of at most one second, or `n ≤ 1`, stays whole; a range
/// of fewer than `n` seconds gives one window per whole second. Empty when `end ≤ start`.
pub fn split(start: DateTime<Utc>, end: DateTime<Utc>, n: u32) -> Vec<Window> {
    if end <= start {
        return Vec::new();
    }
    let secs = (end - start).num_seconds();
    if n <= 1 || secs <= 1 || end - start <= Duration::seconds(1) {
        return vec![(start, end)];
    }
    let pieces = i64::from(n).min(secs);
    let mut bounds: Vec<DateTime<Utc>> = (0..pieces)
        .map(|i| start + Duration::seconds(secs * i / pieces))
        .collect();
    bounds.push(end);
    bounds.windows(2).map(|w| (w[0], w[1])).collect()
}

/// The child windows of a task over `[start, end)` that fetched its pages up to the record
/// at `t` and still had more: `[t, end)` split into `n`, so nothing after `t` is lost; the
/// records at exactly `t` are read again by the first child (the task leaves them out of
/// its own rows, so each record is loaded once). `None` when the rest must be paged to the
/// end instead: less than one second remains, or no progress was made within a window of at
/// most one second. When the task made no progress (`t ≤ start`) the first second becomes
/// its own child (paged to the end, however dense) and the rest is split.
pub fn split_rest(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    t: DateTime<Utc>,
    n: u32,
) -> Option<Vec<Window>> {
    let one = Duration::seconds(1);
    if t <= start {
        if end - start <= one {
            return None;
        }
        let mut out = vec![(start, start + one)];
        out.extend(split(start + one, end, n));
        return Some(out);
    }
    if end - t < one {
        return None;
    }
    Some(split(t, end, n))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cursors_are_written_as_chrono_formats_them() {
        use chrono::NaiveDate;
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        for t in [
            ts("2024-01-01T00:00:00Z"),
            ts("2024-02-29T23:59:59.999999999Z"),
            ts("0001-03-04T05:06:07.000001Z"),
            ts("9999-12-31T23:59:59.123456Z"),
            DateTime::<Utc>::from_timestamp(253_402_300_800, 7_000).unwrap(),
            DateTime::<Utc>::from_timestamp(-62_198_755_200, 0).unwrap(),
            leap,
        ] {
            assert_eq!(
                cursor(t),
                t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                "{t:?}"
            );
        }
        assert_eq!(
            cursor(ts("2024-05-06T07:08:09.010203Z")),
            "2024-05-06T07:08:09.010203Z"
        );
    }

    fn contiguous(ws: &[Window], start: DateTime<Utc>, end: DateTime<Utc>) {
        assert_eq!(ws.first().unwrap().0, start);
        assert_eq!(ws.last().unwrap().1, end);
        for w in ws.windows(2) {
            assert_eq!(w[0].1, w[1].0, "gap or overlap in {ws:?}");
        }
        for w in ws {
            assert!(w.0 < w.1, "empty window in {ws:?}");
        }
    }

    #[test]
    fn even_split_covers_the_range_including_its_last_second() {
        let (s, e) = (ts("2024-01-01T00:00:00Z"), ts("2024-01-02T00:00:00Z"));
        let ws = split(s, e, 8);
        assert_eq!(ws.len(), 8);
        contiguous(&ws, s, e);
        assert_eq!(ws[1].0, ts("2024-01-01T03:00:00Z"));

        let e = ts("2024-01-01T00:00:03.5Z");
        let ws = split(s, e, 8);
        assert_eq!(ws.len(), 3);
        contiguous(&ws, s, e);

        assert_eq!(split(s, ts("2024-01-01T00:00:00.5Z"), 8).len(), 1);
        assert!(split(e, s, 8).is_empty());
        assert_eq!(cursor(e), "2024-01-01T00:00:03.500000Z");
        assert_eq!(filter_time(s), "2024-01-01T00:00:00Z");
        assert_eq!(filter_time(e), "2024-01-01T00:00:03.500000Z");
    }

    #[test]
    fn dense_rest_is_covered_exactly() {
        let (s, e) = (ts("2024-01-01T00:00:00Z"), ts("2024-01-01T01:00:00Z"));
        let t = ts("2024-01-01T00:10:00Z");
        let ws = split_rest(s, e, t, 4).unwrap();
        assert_eq!(ws.len(), 4);
        contiguous(&ws, t, e);
        // No progress: the first second alone, then the rest.
        let ws = split_rest(s, e, s, 4).unwrap();
        contiguous(&ws, s, e);
        assert_eq!(ws[0], (s, s + Duration::seconds(1)));
        // Less than a second left, or a one-second window without progress: page on.
        assert!(split_rest(s, e, e - Duration::milliseconds(300), 4).is_none());
        assert!(split_rest(s, s + Duration::seconds(1), s, 4).is_none());
    }
}
