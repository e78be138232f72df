//! Writing Mongo-export style JSON lines (`{ "k" : v, "k2" : v2 }`) and Sailthru's
//! zone-less timestamps straight into a byte buffer, without intermediate values.

/// Milliseconds in a day.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// How many digits a zone-less local timestamp carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Precision {
    /// `2016-03-20T02:42`
    Minutes,
    /// `2014-06-09T11:57:26`
    #[default]
    Seconds,
    /// `2016-03-31T08:00:03.016`, or seconds precision when the milliseconds are zero
    /// (that is what the exporter does).
    Millis,
}

/// An object being written: `{ "a" : 1, "b" : 2 }`, or `{}` when empty.
pub(crate) struct Obj<'a> {
    buf: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Obj<'a> {
    /// Opens an object at the end of `buf`.
    #[inline]
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        buf.push(b'{');
        Obj { buf, empty: true }
    }

    /// Writes `"key" : ` (with the separator) and returns the buffer for the value.
    #[inline]
    pub(crate) fn key(&mut self, key: &str) -> &mut Vec<u8> {
        self.buf
            .extend_from_slice(if self.empty { b" " } else { b", " });
        self.empty = false;
        put_str(self.buf, key);
        self.buf.extend_from_slice(b" : ");
        self.buf
    }

    /// Closes the object.
    #[inline]
    pub(crate) fn end(self) {
        self.buf
            .extend_from_slice(if self.empty { b"}" } else { b" }" });
    }
}

/// Writes a JSON string (escaping quotes, backslashes and control characters).
#[inline]
pub(crate) fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.extend_from_slice(s.as_bytes());
    } else {
        for b in s.bytes() {
            match b {
                b'"' => buf.extend_from_slice(b"\\\""),
                b'\\' => buf.extend_from_slice(b"\\\\"),
                b'\n' => buf.extend_from_slice(b"\\n"),
                b'\t' => buf.extend_from_slice(b"\\t"),
                0..0x20 => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    buf.extend_from_slice(b"\\u00");
                    buf.push(HEX[usize::from(b >> 4)]);
                    buf.push(HEX[usize::from(b & 15)]);
                }
                _ => buf.push(b),
            }
        }
    }
    buf.push(b'"');
}

/// Writes an unsigned integer.
#[inline]
pub(crate) fn put_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Writes a signed integer.
#[inline]
pub(crate) fn put_i64(buf: &mut Vec<u8>, n: i64) {
    if n < 0 {
        buf.push(b'-');
    }
    put_u64(buf, n.unsigned_abs());
}

/// Writes `null`.
#[inline]
pub(crate) fn put_null(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"null");
}

/// Writes `{ "$date" : <epoch_ms> }`, the exporter's form of an action time.
#[inline]
pub(crate) fn put_date(buf: &mut Vec<u8>, epoch_ms: i64) {
    buf.extend_from_slice(b"{ \"$date\" : ");
    put_i64(buf, epoch_ms);
    buf.extend_from_slice(b" }");
}

/// Writes a quoted zone-less timestamp; `local_ms` counts milliseconds since
/// 1970-01-01T00:00 of the local wall clock.
pub(crate) fn put_ts(buf: &mut Vec<u8>, local_ms: i64, precision: Precision) {
    let days = local_ms.div_euclid(DAY_MS);
    let in_day = local_ms.rem_euclid(DAY_MS);
    let (year, month, day) = civil_from_days(days);
    let secs = in_day / 1000;
    let ms = in_day % 1000;
    buf.push(b'"');
    put_padded(buf, year, 4);
    buf.push(b'-');
    put_padded(buf, month, 2);
    buf.push(b'-');
    put_padded(buf, day, 2);
    buf.push(b'T');
    put_padded(buf, secs / 3600, 2);
    buf.push(b':');
    put_padded(buf, secs / 60 % 60, 2);
    if precision != Precision::Minutes {
        buf.push(b':');
        put_padded(buf, secs % 60, 2);
        if precision == Precision::Millis && ms != 0 {
            buf.push(b'.');
            put_padded(buf, ms, 3);
        }
    }
    buf.push(b'"');
}

/// Writes `n` (non-negative) with leading zeros to `width` digits.
#[inline]
fn put_padded(buf: &mut Vec<u8>, n: i64, width: u32) {
    let mut div = 10i64.pow(width - 1);
    let n = n.max(0);
    if n >= div * 10 {
        put_i64(buf, n);
        return;
    }
    while div > 0 {
        buf.push(b'0' + (n / div % 10) as u8);
        div /= 10;
    }
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) const fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(ms: i64, p: Precision) -> String {
        let mut buf = Vec::new();
        put_ts(&mut buf, ms, p);
        String::from_utf8(buf).expect("utf-8")
    }

    #[test]
    fn timestamps() {
        // 2016-03-31T08:00:03.016
        let ms = 1_459_411_203_016;
        assert_eq!(ts(ms, Precision::Millis), "\"2016-03-31T08:00:03.016\"");
        assert_eq!(ts(ms, Precision::Seconds), "\"2016-03-31T08:00:03\"");
        assert_eq!(ts(ms, Precision::Minutes), "\"2016-03-31T08:00\"");
        assert_eq!(ts(ms - 16, Precision::Millis), "\"2016-03-31T08:00:03\"");
        assert_eq!(ts(60, Precision::Millis), "\"1970-01-01T00:00:00.060\"");
        assert_eq!(
            ts(951_782_400_000, Precision::Seconds),
            "\"2000-02-29T00:00:00\""
        );
    }

    #[test]
    fn objects() {
        let mut buf = Vec::new();
        let mut o = Obj::new(&mut buf);
        put_u64(o.key("a"), 0);
        put_str(o.key("b\"q"), "x\\y\n");
        let inner = Obj::new(o.key("c"));
        inner.end();
        put_i64(o.key("d"), -12);
        o.end();
        assert_eq!(
            String::from_utf8(buf).expect("utf-8"),
            r#"{ "a" : 0, "b\"q" : "x\\y\n", "c" : {}, "d" : -12 }"#
        );
    }
}
