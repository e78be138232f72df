//! Klaviyo's `filter` query syntax: `equals(metric_id,"X")`, `any(id,["a","b"])`,
//! `greater-or-equal(datetime,2024-01-01T00:00:00Z)`, `has(profile)`, `contains(title,"x")`, combined with
//! `and(…)` or top-level commas (both mean AND). `or`/`not` are rejected.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// A filter operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Equals,
    Any,
    Has,
    GreaterThan,
    GreaterOrEqual,
    LessThan,
    LessOrEqual,
    /// `contains(field,"text")`: a substring (the catalog endpoints' `title`, `name`).
    Contains,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "equals" => Op::Equals,
            "any" => Op::Any,
            "has" => Op::Has,
            "greater-than" => Op::GreaterThan,
            "greater-or-equal" => Op::GreaterOrEqual,
            "less-than" => Op::LessThan,
            "less-or-equal" => Op::LessOrEqual,
            "contains" => Op::Contains,
            _ => return None,
        })
    }

    /// The operator's name in the syntax.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Equals => "equals",
            Op::Any => "any",
            Op::Has => "has",
            Op::GreaterThan => "greater-than",
            Op::GreaterOrEqual => "greater-or-equal",
            Op::LessThan => "less-than",
            Op::LessOrEqual => "less-or-equal",
            Op::Contains => "contains",
        }
    }
}

/// A literal.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lit {
    /// Quoted string.
    Str(String),
    /// Unquoted token (number, boolean, null or date-time).
    Bare(String),
    /// `[…]`.
    List(Vec<Lit>),
}

impl Lit {
    /// The literal as text (quoted or bare); `None` for lists.
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Lit::Str(s) | Lit::Bare(s) => Some(s),
            Lit::List(_) => None,
        }
    }

    /// The literal's texts: a list's items, or the literal itself.
    pub(crate) fn texts(&self) -> Vec<&str> {
        match self {
            Lit::List(items) => items.iter().filter_map(Lit::text).collect(),
            other => other.text().into_iter().collect(),
        }
    }
}

/// One condition `op(field, value)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cond {
    pub field: String,
    pub op: Op,
    pub value: Option<Lit>,
}

/// What an endpoint allows: `(field, operators)`.
pub(crate) type Allowed = &'static [(&'static str, &'static [Op])];

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!(
                "expected `{}` at position {} of the filter",
                c as char, self.i
            ))
        }
    }

    /// A bare token: up to `,`, `)`, `]` or `(`.
    fn token(&mut self) -> String {
        self.ws();
        let start = self.i;
        while self.i < self.s.len() && !matches!(self.s[self.i], b',' | b')' | b']' | b'(') {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i])
            .trim()
            .to_owned()
    }

    fn literal(&mut self) -> Result<Lit, String> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => {
                self.i += 1;
                let mut out = Vec::new();
                loop {
                    match self.s.get(self.i) {
                        None => return Err("unterminated string in the filter".into()),
                        Some(b'\\') => {
                            if let Some(&c) = self.s.get(self.i + 1) {
                                out.push(c);
                            }
                            self.i += 2;
                        }
                        Some(&c) if c == q => {
                            self.i += 1;
                            break;
                        }
                        Some(&c) => {
                            out.push(c);
                            self.i += 1;
                        }
                    }
                }
                Ok(Lit::Str(String::from_utf8_lossy(&out).into_owned()))
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Lit::List(items));
                }
                loop {
                    items.push(self.literal()?);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            break;
                        }
                        _ => return Err("expected `,` or `]` in a filter list".into()),
                    }
                }
                Ok(Lit::List(items))
            }
            _ => {
                let t = self.token();
                if t.is_empty() {
                    Err(format!("expected a value at position {}", self.i))
                } else {
                    Ok(Lit::Bare(t))
                }
            }
        }
    }

    /// `op(...)`, appending its conditions to `out`.
    fn expr(&mut self, out: &mut Vec<Cond>) -> Result<(), String> {
        let name = self.token();
        self.eat(b'(')?;
        if name == "and" {
            loop {
                self.expr(out)?;
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b')') => {
                        self.i += 1;
                        return Ok(());
                    }
                    _ => return Err("expected `,` or `)` in `and(…)`".into()),
                }
            }
        }
        if name == "or" || name == "not" {
            return Err(format!("the operator '{name}' is not supported here"));
        }
        let op = Op::parse(&name).ok_or_else(|| format!("'{name}' is not a valid operator"))?;
        let field = self.token();
        if field.is_empty() {
            return Err(format!("'{name}' needs a field"));
        }
        let value = if op == Op::Has {
            None
        } else {
            self.eat(b',')?;
            Some(self.literal()?)
        };
        self.eat(b')')?;
        out.push(Cond { field, op, value });
        Ok(())
    }
}

/// Parses `filter` and checks every condition against `allowed` (the endpoint's
/// `Allowed field(s)/operator(s)` from the OpenAPI file). Errors name the field or operator.
pub(crate) fn parse(filter: &str, allowed: Allowed) -> Result<Vec<Cond>, String> {
    let mut p = Parser {
        s: filter.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.expr(&mut out)?;
        match p.peek() {
            None => break,
            Some(b',') => p.i += 1,
            Some(c) => {
                return Err(format!(
                    "unexpected `{}` at position {} of the filter",
                    c as char, p.i
                ));
            }
        }
    }
    for c in &out {
        let Some((_, ops)) = allowed.iter().find(|(f, _)| *f == c.field) else {
            let names: Vec<&str> = allowed.iter().map(|(f, _)| *f).collect();
            return Err(format!(
                "'{}' is not a valid field for the filter on this endpoint. Allowed fields: {}",
                c.field,
                names.join(", ")
            ));
        };
        if !ops.contains(&c.op) {
            let names: Vec<&str> = ops.iter().map(|o| o.name()).collect();
            return Err(format!(
                "'{}' is not a valid operator for the field '{}'. Allowed operators: {}",
                c.op.name(),
                c.field,
                names.join(", ")
            ));
        }
        if c.op == Op::Any && !matches!(c.value, Some(Lit::List(_))) {
            return Err(format!("'any' on '{}' needs a list value", c.field));
        }
    }
    Ok(out)
}

/// A date-time literal as fractional epoch seconds, in every form Klaviyo's filters take:
/// `2024-01-01T00:00:00Z`, with an offset `+00:00`, `+0000` or `+00`, fractional seconds
/// (`…00.123456+0000`), minutes only (`…T00:00Z`), `t`/`z` in lower case, a space instead of
/// the `T`, no zone (UTC), or a date alone (its midnight UTC). Quotes are the filter
/// parser's ([`Lit::Str`]). A `+` of an offset decoded as a space (an unencoded `+` in a
/// query) is put back.
pub(crate) fn parse_datetime(text: &str) -> Option<f64> {
    let mut t = text.trim().to_owned();
    if t.len() > 10 && t.is_char_boundary(10) && t.is_char_boundary(11) {
        let (date, rest) = t.split_at(10);
        let rest = rest
            .strip_prefix([' ', 't', 'T'])
            .map(|r| r.replace(' ', "+"))?;
        t = format!("{date}T{rest}");
        if t.ends_with('z') {
            t.pop();
            t.push('Z');
        }
    }
    let secs = |t: DateTime<chrono::FixedOffset>| {
        t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9
    };
    if let Ok(x) = DateTime::parse_from_rfc3339(&t) {
        return Some(secs(x));
    }
    let zoned = t
        .strip_suffix('Z')
        .map_or_else(|| t.clone(), |x| format!("{x}+00:00"));
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z"] {
        if let Ok(x) = DateTime::parse_from_str(&zoned, fmt) {
            return Some(secs(x));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(x) = NaiveDateTime::parse_from_str(&t, fmt) {
            let x = x.and_utc();
            return Some(x.timestamp() as f64 + f64::from(x.timestamp_subsec_nanos()) / 1e9);
        }
    }
    NaiveDate::parse_from_str(&t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|x| x.and_utc().timestamp() as f64)
}

/// Whole-second bounds `[lo, hi)` of values satisfying the comparisons on one field.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// Inclusive lower bound, epoch seconds.
    pub lo: i64,
    /// Exclusive upper bound, epoch seconds.
    pub hi: i64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            lo: i64::MIN / 4,
            hi: i64::MAX / 4,
        }
    }
}

impl Bounds {
    /// Narrows by `op value` (value in fractional seconds) for whole-second values.
    pub(crate) fn apply(&mut self, op: Op, x: f64) {
        let x = x.clamp(-1e15, 1e15);
        match op {
            Op::GreaterOrEqual => self.lo = self.lo.max(x.ceil() as i64),
            Op::GreaterThan => self.lo = self.lo.max(x.floor() as i64 + 1),
            Op::LessThan => self.hi = self.hi.min(x.ceil() as i64),
            Op::LessOrEqual => self.hi = self.hi.min(x.floor() as i64 + 1),
            _ => {}
        }
    }

    /// Whether `t` is inside.
    pub(crate) fn contains(&self, t: i64) -> bool {
        self.lo <= t && t < self.hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: Allowed = &[
        ("metric_id", &[Op::Equals]),
        ("datetime", &[Op::GreaterOrEqual, Op::LessThan]),
        ("profile", &[Op::Has]),
    ];

    #[test]
    fn parses_and_validates() {
        let c = parse(
            "and(equals(metric_id,\"X\"),greater-or-equal(datetime,2024-01-01T00:00:00+00:00)),has(profile)",
            EVENTS,
        )
        .unwrap_or_default();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].value, Some(Lit::Str("X".into())));
        assert_eq!(
            c[1].value,
            Some(Lit::Bare("2024-01-01T00:00:00+00:00".into()))
        );
        let e = parse("equals(foo,'x')", EVENTS).err().unwrap_or_default();
        assert!(e.contains("'foo'"), "{e}");
        let e = parse("less-or-equal(datetime,1)", EVENTS)
            .err()
            .unwrap_or_default();
        assert!(e.contains("less-or-equal") && e.contains("datetime"), "{e}");
        assert!(parse("equals(metric_id", EVENTS).is_err());
        assert_eq!(
            parse_datetime("2024-01-01T00:00:00 00:00"),
            Some(1_704_067_200.0)
        );
        assert_eq!(parse_datetime("2024-01-01"), Some(1_704_067_200.0));
    }

    #[test]
    fn datetimes_in_every_form_klaviyo_takes() {
        let midnight = Some(1_704_067_200.0);
        for text in [
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00z",
            "2024-01-01t00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00+00:00",
            "2024-01-01T00:00:00+0000",
            "2024-01-01T00:00:00-0000",
            "2024-01-01T00:00:00+00",
            "2024-01-01T00:00:00 0000",
            "2024-01-01T00:00:00.000Z",
            "2024-01-01T00:00:00.000000+0000",
            "2024-01-01T00:00Z",
            "2024-01-01T00:00+0000",
            "2024-01-01T01:30:00+0130",
            "2023-12-31T19:00:00-0500",
            "2023-12-31T19:00:00-05:00",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00",
            "2024-01-01",
        ] {
            assert_eq!(parse_datetime(text), midnight, "{text}");
        }
        assert_eq!(
            parse_datetime("2024-01-01T00:00:00.25+0000"),
            Some(1_704_067_200.25)
        );
        for bad in [
            "2024-01-01T25:00:00Z",
            "2024-01-01X00:00:00Z",
            "yesterday",
            "2024-01-01T00:00:00+0000Z",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }
}
