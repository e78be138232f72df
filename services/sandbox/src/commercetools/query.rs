//! The subset of commercetools' query predicate language (`where`) and `sort` expressions
//! the sandbox understands. Anything else is an error naming the unsupported part (the
//! handler answers it with 400 `InvalidInput`), never silently ignored.
//!
//! Grammar (keywords case-insensitive):
//! ```text
//! expr  := term ("and" term)*
//! term  := "(" expr ")" | "masterData" "(" "published" "=" bool ")" | "published" "=" bool
//!        | field op value | field "in" "(" value ("," value)* ")"
//! field := "id" | "createdAt" | "lastModifiedAt"
//! op    := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//! value := "string" | :variable        (variables from `var.<name>=…` query parameters)
//! ```
//! `createdAt`/`lastModifiedAt` values are RFC 3339 times (compared at millisecond
//! precision); `id` values are strings compared as strings.

use std::collections::HashMap;

/// A filtered field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Id,
    CreatedAt,
    LastModifiedAt,
}

impl Field {
    fn parse(s: &str) -> Option<Field> {
        match s {
            "id" => Some(Field::Id),
            "createdAt" => Some(Field::CreatedAt),
            "lastModifiedAt" => Some(Field::LastModifiedAt),
            _ => None,
        }
    }
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds<T: Ord + ?Sized>(self, a: &T, b: &T) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
        }
    }
}

/// A literal: a string (for `id`) or a time in epoch milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lit {
    Str(String),
    Time(i64),
}

/// A parsed predicate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pred {
    Cmp(Field, Cmp, Lit),
    In(Field, Vec<Lit>),
    /// `masterData(published = b)` (products; `master_data`) or `published = b` (product
    /// projections).
    Published {
        value: bool,
        master_data: bool,
    },
    And(Vec<Pred>),
}

/// The fields of one resource a predicate is tested on.
pub(crate) struct Row<'a> {
    pub id: &'a str,
    pub created: i64,
    pub modified: i64,
    pub published: bool,
}

impl Pred {
    /// Whether `row` matches.
    pub fn matches(&self, row: &Row<'_>) -> bool {
        match self {
            Pred::And(ps) => ps.iter().all(|p| p.matches(row)),
            Pred::Published { value, .. } => row.published == *value,
            Pred::Cmp(f, c, lit) => cmp_field(row, *f, *c, lit),
            Pred::In(f, lits) => lits.iter().any(|l| cmp_field(row, *f, Cmp::Eq, l)),
        }
    }

    /// The first `published` test not of the allowed `form` (`Some(true)`:
    /// `masterData(published = …)`, `Some(false)`: `published = …`, `None`: none allowed):
    /// `Some(master_data)` of the offending test.
    pub fn published_mismatch(&self, form: Option<bool>) -> Option<bool> {
        match self {
            Pred::Published { master_data, .. } => {
                (form != Some(*master_data)).then_some(*master_data)
            }
            Pred::And(ps) => ps.iter().find_map(|p| p.published_mismatch(form)),
            _ => None,
        }
    }

    /// The conjuncts at the top (flattening nested `and`s).
    pub fn conjuncts(&self) -> Vec<&Pred> {
        match self {
            Pred::And(ps) => ps.iter().flat_map(Pred::conjuncts).collect(),
            p => vec![p],
        }
    }
}

fn cmp_field(row: &Row<'_>, f: Field, c: Cmp, lit: &Lit) -> bool {
    match (f, lit) {
        (Field::Id, Lit::Str(s)) => c.holds(row.id, s.as_str()),
        (Field::CreatedAt, Lit::Time(t)) => c.holds(&row.created, t),
        (Field::LastModifiedAt, Lit::Time(t)) => c.holds(&row.modified, t),
        _ => false,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Var(String),
    Num(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) | Tok::Num(s) => s.clone(),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::Var(s) => format!(":{s}"),
        Tok::Op(o) => (*o).to_owned(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
        Tok::Comma => ",".into(),
    }
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let cs: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match cs.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('"') => break,
                        Some('\\') => {
                            match cs.get(i + 1) {
                                Some(e) => v.push(*e),
                                None => return Err("unterminated string literal".into()),
                            }
                            i += 2;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
                out.push(Tok::Str(v));
            }
            ':' => {
                let start = i + 1;
                i += 1;
                while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                    i += 1;
                }
                if i == start {
                    return Err("`:` must start a variable name".into());
                }
                out.push(Tok::Var(cs[start..i].iter().collect()));
            }
            '=' => {
                out.push(Tok::Op("="));
                i += 1;
            }
            '!' | '<' | '>' => {
                let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
                let op = match two.as_str() {
                    "!=" => "!=",
                    "<>" => "<>",
                    "<=" => "<=",
                    ">=" => ">=",
                    _ if c == '<' => "<",
                    _ if c == '>' => ">",
                    _ => return Err(format!("unexpected character '{c}'")),
                };
                i += op.len();
                out.push(Tok::Op(op));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                while i < cs.len() && (cs[i].is_ascii_alphanumeric() || ".-+:".contains(cs[i])) {
                    i += 1;
                }
                out.push(Tok::Num(cs[start..i].iter().collect()));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_' || cs[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Ident(cs[start..i].iter().collect()));
            }
            c => return Err(format!("unexpected character '{c}'")),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    vars: &'a HashMap<String, String>,
}

/// Parses one `where` expression, resolving `:name` from `vars` (`var.name` parameters).
pub(crate) fn parse_where(s: &str, vars: &HashMap<String, String>) -> Result<Pred, String> {
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
        vars,
    };
    if p.toks.is_empty() {
        return Err("empty predicate".into());
    }
    let e = p.expr()?;
    if let Some(t) = p.toks.get(p.pos) {
        return Err(format!(
            "unsupported or malformed predicate near '{}' (the sluice sandbox understands \
             `and` of id/createdAt/lastModifiedAt comparisons, `in`, and published tests)",
            describe(t)
        ));
    }
    Ok(e)
}

fn kw(t: Option<&Tok>, word: &str) -> bool {
    matches!(t, Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(word))
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: &Tok) -> Result<(), String> {
        match self.next() {
            Some(t) if &t == want => Ok(()),
            Some(t) => Err(format!(
                "expected '{}' but found '{}'",
                describe(want),
                describe(&t)
            )),
            None => Err(format!("expected '{}' at the end", describe(want))),
        }
    }

    fn expr(&mut self) -> Result<Pred, String> {
        let mut terms = vec![self.term()?];
        loop {
            if kw(self.peek(), "and") {
                self.pos += 1;
                terms.push(self.term()?);
            } else if kw(self.peek(), "or") {
                return Err(
                    "the sluice sandbox does not support `or` in predicates (use `in` or \
                     several queries)"
                        .into(),
                );
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Pred::And(terms)
        })
    }

    fn bool_value(&mut self) -> Result<bool, String> {
        match self.next() {
            Some(Tok::Ident(s)) if s == "true" => Ok(true),
            Some(Tok::Ident(s)) if s == "false" => Ok(false),
            Some(t) => Err(format!("expected true or false, found '{}'", describe(&t))),
            None => Err("expected true or false at the end".into()),
        }
    }

    fn term(&mut self) -> Result<Pred, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.expr()?;
                self.expect(&Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Ident(name)) if name == "masterData" => {
                self.expect(&Tok::LParen)?;
                match self.next() {
                    Some(Tok::Ident(f)) if f == "published" => {}
                    Some(t) => {
                        return Err(format!(
                            "unsupported predicate on masterData.{} (the sluice sandbox \
                             supports masterData(published = true|false))",
                            describe(&t)
                        ));
                    }
                    None => return Err("unexpected end in masterData(…)".into()),
                }
                self.expect(&Tok::Op("="))?;
                let b = self.bool_value()?;
                self.expect(&Tok::RParen)?;
                Ok(Pred::Published {
                    value: b,
                    master_data: true,
                })
            }
            Some(Tok::Ident(name)) if name == "published" => {
                self.expect(&Tok::Op("="))?;
                Ok(Pred::Published {
                    value: self.bool_value()?,
                    master_data: false,
                })
            }
            Some(Tok::Ident(name)) if kw(Some(&Tok::Ident(name.clone())), "not") => {
                Err("the sluice sandbox does not support `not(…)` in predicates".into())
            }
            Some(Tok::Ident(name)) => {
                let Some(field) = Field::parse(&name) else {
                    return Err(format!(
                        "the sluice sandbox does not support predicates on the field '{name}' \
                         (supported: id, createdAt, lastModifiedAt, masterData(published = …))"
                    ));
                };
                match self.next() {
                    Some(Tok::Op(op)) => {
                        let cmp = match op {
                            "=" => Cmp::Eq,
                            "!=" | "<>" => Cmp::Ne,
                            "<" => Cmp::Lt,
                            "<=" => Cmp::Le,
                            ">" => Cmp::Gt,
                            _ => Cmp::Ge,
                        };
                        let v = self.value(field)?;
                        Ok(Pred::Cmp(field, cmp, v))
                    }
                    Some(t) if kw(Some(&t), "in") => {
                        self.expect(&Tok::LParen)?;
                        let mut vs = vec![self.value(field)?];
                        loop {
                            match self.next() {
                                Some(Tok::Comma) => vs.push(self.value(field)?),
                                Some(Tok::RParen) => break,
                                Some(t) => {
                                    return Err(format!(
                                        "expected ',' or ')' in the list, found '{}'",
                                        describe(&t)
                                    ));
                                }
                                None => return Err("unterminated `in (…)` list".into()),
                            }
                        }
                        Ok(Pred::In(field, vs))
                    }
                    Some(t) => Err(format!(
                        "the sluice sandbox does not support the operator '{}' after '{name}' \
                         (supported: = != < <= > >= in)",
                        describe(&t)
                    )),
                    None => Err(format!("expected an operator after '{name}'")),
                }
            }
            Some(t) => Err(format!("unexpected '{}' in the predicate", describe(&t))),
            None => Err("unexpected end of the predicate".into()),
        }
    }

    fn value(&mut self, field: Field) -> Result<Lit, String> {
        let raw = match self.next() {
            Some(Tok::Str(s)) => s,
            Some(Tok::Var(v)) => match self.vars.get(&v) {
                Some(s) => s.clone(),
                None => {
                    return Err(format!(
                        "the variable :{v} is not bound (add the query parameter var.{v})"
                    ));
                }
            },
            Some(t) => {
                return Err(format!(
                    "expected a string literal or :variable, found '{}'",
                    describe(&t)
                ));
            }
            None => return Err("expected a value at the end".into()),
        };
        match field {
            Field::Id => Ok(Lit::Str(raw)),
            Field::CreatedAt | Field::LastModifiedAt => parse_time(&raw)
                .map(Lit::Time)
                .ok_or_else(|| format!("'{raw}' is not a valid datetime (RFC 3339)")),
        }
    }
}

/// An RFC 3339 time (or a date `YYYY-MM-DD`, midnight UTC) in epoch milliseconds.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// A sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Asc,
    Desc,
}

/// Parses one `sort` expression: `field asc|desc` with `field` one of `id`, `createdAt`,
/// `lastModifiedAt`.
pub(crate) fn parse_sort(s: &str) -> Result<(Field, Dir), String> {
    let mut parts = s.split_whitespace();
    let (Some(f), Some(d), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "malformed sort expression '{s}': expected '<field> asc|desc'"
        ));
    };
    let field = Field::parse(f).ok_or_else(|| {
        format!(
            "the sluice sandbox does not support sorting on '{f}' (supported: id, createdAt, \
             lastModifiedAt)"
        )
    })?;
    let dir = match d.to_ascii_lowercase().as_str() {
        "asc" => Dir::Asc,
        "desc" => Dir::Desc,
        _ => {
            return Err(format!(
                "malformed sort direction '{d}': expected asc or desc"
            ));
        }
    };
    Ok((field, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn p(s: &str) -> Pred {
        parse_where(s, &vars(&[("d", "2024-01-02T03:04:05.678Z")]))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn row(id: &str, created: i64, modified: i64) -> Row<'_> {
        Row {
            id,
            created,
            modified,
            published: true,
        }
    }

    #[test]
    fn comparisons_on_id() {
        assert_eq!(
            p(r#"id > "abc""#),
            Pred::Cmp(Field::Id, Cmp::Gt, Lit::Str("abc".into()))
        );
        assert_eq!(
            p(r#"id>="a\"b""#),
            Pred::Cmp(Field::Id, Cmp::Ge, Lit::Str("a\"b".into()))
        );
        assert_eq!(
            p(r#"id <> "x""#),
            Pred::Cmp(Field::Id, Cmp::Ne, Lit::Str("x".into()))
        );
        let q = p(r#"id in ("a", "b","c")"#);
        assert!(q.matches(&row("b", 0, 0)));
        assert!(!q.matches(&row("d", 0, 0)));
        assert!(p(r#"id < "m""#).matches(&row("a", 0, 0)));
        assert!(!p(r#"id < "m""#).matches(&row("m", 0, 0)));
        assert!(p(r#"id <= "m""#).matches(&row("m", 0, 0)));
    }

    #[test]
    fn times_and_variables() {
        let t = parse_time("2024-01-02T03:04:05.678Z").expect("a valid time");
        assert_eq!(
            p("lastModifiedAt >= :d"),
            Pred::Cmp(Field::LastModifiedAt, Cmp::Ge, Lit::Time(t))
        );
        assert_eq!(
            p(r#"createdAt < "2024-01-02T04:04:05.678+01:00""#),
            Pred::Cmp(Field::CreatedAt, Cmp::Lt, Lit::Time(t))
        );
        let q = p(r#"lastModifiedAt > :d and (createdAt < :d and id != "z")"#);
        assert_eq!(q.conjuncts().len(), 3);
        assert!(q.matches(&row("a", t - 1, t + 1)));
        assert!(!q.matches(&row("a", t - 1, t)));
        assert!(!q.matches(&row("z", t - 1, t + 1)));
        let e = parse_where("lastModifiedAt > :nope", &HashMap::new()).expect_err("unbound");
        assert!(e.contains("var.nope"), "{e}");
        let e = parse_where(r#"createdAt > "yesterday""#, &HashMap::new()).expect_err("bad time");
        assert!(e.contains("yesterday"), "{e}");
    }

    #[test]
    fn published() {
        assert_eq!(
            p("masterData(published = true)"),
            Pred::Published {
                value: true,
                master_data: true
            }
        );
        assert_eq!(
            p("published=false"),
            Pred::Published {
                value: false,
                master_data: false
            }
        );
        let q = p(r#"id > "a" and (masterData(published = true))"#);
        assert_eq!(q.published_mismatch(Some(true)), None);
        assert_eq!(q.published_mismatch(Some(false)), Some(true));
        assert_eq!(q.published_mismatch(None), Some(true));
        assert_eq!(p(r#"id = "a""#).published_mismatch(None), None);
    }

    #[test]
    fn unsupported_is_an_error_naming_it() {
        for (q, needle) in [
            (r#"email = "a@b.c""#, "email"),
            (r#"id = "a" or id = "b""#, "or"),
            (r#"not(id = "a")"#, "not"),
            (r#"id contains "a""#, "contains"),
            (r#"masterData(current(name(en = "x")))"#, "current"),
            (r#"id = "a" id = "b""#, "id"),
            (r#"id = "unterminated"#, "unterminated"),
            ("id = 5", "5"),
            ("", "empty"),
        ] {
            let e = parse_where(q, &HashMap::new()).expect_err(q);
            assert!(e.contains(needle), "{q}: {e}");
        }
    }

    #[test]
    fn sorts() {
        assert_eq!(parse_sort("id asc"), Ok((Field::Id, Dir::Asc)));
        assert_eq!(
            parse_sort(" lastModifiedAt  DESC "),
            Ok((Field::LastModifiedAt, Dir::Desc))
        );
        assert!(parse_sort("createdAt").is_err());
        assert!(
            parse_sort("name.en asc")
                .expect_err("unsupported")
                .contains("name.en")
        );
        assert!(parse_sort("id up").is_err());
    }
}
