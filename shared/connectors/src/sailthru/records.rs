//! Turning one Sailthru export record (one JSON line) into destination rows.
//!
//! Every member (`blast`, `message_blast`, `message_transactional`, `profile`) maps to a parent
//! table in schema `sailthru` plus child tables for its nested collections:
//!
//! | member | tables |
//! |---|---|
//! | `blast` | `blast` |
//! | `message_blast` | `message_blast`, `message_blast_action` (`opens[].ts`, `clicks[].{url,ts}`) |
//! | `message_transactional` | `message_transactional`, `message_transactional_action` |
//! | `profile` | `profile`, `profile_geo`, `profile_browser`, `profile_lists_signup`, `profile_vars` |
//!
//! Row values follow [`crate::TableRows`]: `timestamp` columns as `YYYY-MM-DDTHH:MM:SS.ffffff`
//! (the export's local time, no zone), `timestamptz` columns as RFC 3339 UTC with
//! milliseconds, `date` as `YYYY-MM-DD`, integers as JSON integers, `jsonb` as any JSON.
//! Every row ends with `export_date` (the member name's date), the loader's version column.
//! Fields without a typed column go to the parent's `extra` object, never dropped.

use super::settings::EmailPolicy;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::timestamps::{self, short};

pub use crate::framework::TableSpec;

/// Every table of schema `sailthru`, in member order (what `sluicectl streams` lists and
/// tests derive their table lists from).
pub static TABLES: [&TableSpec; 10] = [
    &BLAST,
    &MESSAGE_BLAST,
    &MESSAGE_BLAST_ACTION,
    &MESSAGE_TRANSACTIONAL,
    &MESSAGE_TRANSACTIONAL_ACTION,
    &PROFILE,
    &PROFILE_GEO,
    &PROFILE_BROWSER,
    &PROFILE_LISTS_SIGNUP,
    &PROFILE_VARS,
];

/// `sailthru.blast`: one row per blast.
pub static BLAST: TableSpec = TableSpec {
    name: "sailthru.blast",
    columns: &["id", "name", "day", "extra", "export_date"],
    key: &["id"],
    version: Some("export_date"),
    replace_scope: None,
};

/// `sailthru.message_blast`: one row per (blast, profile) message.
pub static MESSAGE_BLAST: TableSpec = TableSpec {
    name: "sailthru.message_blast",
    columns: &[
        "blast_id",
        "profile_id",
        "message_id",
        "send_time",
        "device",
        "message_revenue",
        "delivery_status",
        "extra",
        "export_date",
    ],
    key: &["blast_id", "profile_id"],
    version: Some("export_date"),
    replace_scope: None,
};

/// `sailthru.message_blast_action`: one row per open or click of a blast message
/// (`url` is `''` for opens).
pub static MESSAGE_BLAST_ACTION: TableSpec = TableSpec {
    name: "sailthru.message_blast_action",
    columns: &[
        "blast_id",
        "profile_id",
        "action",
        "ts",
        "url",
        "export_date",
    ],
    key: &["blast_id", "profile_id", "action", "ts", "url"],
    version: Some("export_date"),
    replace_scope: None,
};

/// `sailthru.message_transactional`: one row per transactional message.
pub static MESSAGE_TRANSACTIONAL: TableSpec = TableSpec {
    name: "sailthru.message_transactional",
    columns: &[
        "id",
        "profile_id",
        "template",
        "send_time",
        "device",
        "message_revenue",
        "delivery_status",
        "extra",
        "export_date",
    ],
    key: &["id"],
    version: Some("export_date"),
    replace_scope: None,
};

/// `sailthru.message_transactional_action`: one row per open or click of a transactional
/// message (`url` is `''` for opens).
pub static MESSAGE_TRANSACTIONAL_ACTION: TableSpec = TableSpec {
    name: "sailthru.message_transactional_action",
    columns: &[
        "message_id",
        "profile_id",
        "action",
        "ts",
        "url",
        "export_date",
    ],
    key: &["message_id", "action", "ts", "url"],
    version: Some("export_date"),
    replace_scope: None,
};

/// `sailthru.profile`: one row per profile.
pub static PROFILE: TableSpec = TableSpec {
    name: "sailthru.profile",
    columns: &[
        "id",
        "email",
        "signup_time",
        "create_date",
        "optout_reason",
        "optout_time",
        "total_opens",
        "total_clicks",
        "total_unique_opens",
        "total_unique_clicks",
        "total_pageviews",
        "total_messages",
        "last_open",
        "last_click",
        "last_pageview",
        "geo_count",
        "extra",
        "export_date",
    ],
    key: &["id"],
    version: Some("export_date"),
    replace_scope: None,
};

/// `sailthru.profile_geo`: `geo.{city,country,state,zip}` label → count.
pub static PROFILE_GEO: TableSpec = TableSpec {
    name: "sailthru.profile_geo",
    columns: &["id", "scope", "label", "count", "export_date"],
    key: &["id", "scope", "label"],
    version: Some("export_date"),
    replace_scope: Some(&["id"]),
};

/// `sailthru.profile_browser`: `browser` name → count.
pub static PROFILE_BROWSER: TableSpec = TableSpec {
    name: "sailthru.profile_browser",
    columns: &["id", "browser", "count", "export_date"],
    key: &["id", "browser"],
    version: Some("export_date"),
    replace_scope: Some(&["id"]),
};

/// `sailthru.profile_lists_signup`: `lists_signup` list → signup time.
pub static PROFILE_LISTS_SIGNUP: TableSpec = TableSpec {
    name: "sailthru.profile_lists_signup",
    columns: &["id", "list", "signup_time", "export_date"],
    key: &["id", "list"],
    version: Some("export_date"),
    replace_scope: Some(&["id"]),
};

/// `sailthru.profile_vars`: `vars` name → value (any JSON).
pub static PROFILE_VARS: TableSpec = TableSpec {
    name: "sailthru.profile_vars",
    columns: &["id", "name", "value", "export_date"],
    key: &["id", "name"],
    version: Some("export_date"),
    replace_scope: Some(&["id"]),
};

/// The export members this connector knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Member {
    /// `blast.<date>.json`
    Blast,
    /// `message_blast.<date>.json`
    MessageBlast,
    /// `message_transactional.<date>.json`
    MessageTransactional,
    /// `profile.<date>.json`
    Profile,
}

impl Member {
    /// The known member table names, for messages.
    pub const NAMES: [&'static str; 4] =
        ["blast", "message_blast", "message_transactional", "profile"];

    /// The member for a table name (`message_blast`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "blast" => Some(Self::Blast),
            "message_blast" => Some(Self::MessageBlast),
            "message_transactional" => Some(Self::MessageTransactional),
            "profile" => Some(Self::Profile),
            _ => None,
        }
    }

    /// The table name, which is also the task's stream (`message_blast`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Blast => "blast",
            Self::MessageBlast => "message_blast",
            Self::MessageTransactional => "message_transactional",
            Self::Profile => "profile",
        }
    }

    /// The destination tables, parent first.
    pub fn tables(self) -> &'static [&'static TableSpec] {
        match self {
            Self::Blast => &BLAST_TABLES,
            Self::MessageBlast => &MESSAGE_BLAST_TABLES,
            Self::MessageTransactional => &MESSAGE_TRANSACTIONAL_TABLES,
            Self::Profile => &PROFILE_TABLES,
        }
    }
}

static BLAST_TABLES: [&TableSpec; 1] = [&BLAST];
static MESSAGE_BLAST_TABLES: [&TableSpec; 2] = [&MESSAGE_BLAST, &MESSAGE_BLAST_ACTION];
static MESSAGE_TRANSACTIONAL_TABLES: [&TableSpec; 2] =
    [&MESSAGE_TRANSACTIONAL, &MESSAGE_TRANSACTIONAL_ACTION];
static PROFILE_TABLES: [&TableSpec; 5] = [
    &PROFILE,
    &PROFILE_GEO,
    &PROFILE_BROWSER,
    &PROFILE_LISTS_SIGNUP,
    &PROFILE_VARS,
];

/// Applies the e-mail policy to an address: keep it, hash it (lowercase hex SHA-256 of the
/// trimmed, lower-cased address) or drop it (`None`).
pub fn apply_email_policy(policy: EmailPolicy, email: &str) -> Option<String> {
    match policy {
        EmailPolicy::Keep => Some(email.to_string()),
        EmailPolicy::Hash => {
            let normalised = email.trim().to_lowercase();
            Some(hex::encode(Sha256::digest(normalised.as_bytes())))
        }
        EmailPolicy::Drop => None,
    }
}

/// What a record is converted with.
#[derive(Debug, Clone)]
pub struct Context {
    /// The member's export date, `YYYY-MM-DD`.
    pub export_date: String,
    /// What to do with `profile.email`.
    pub email_policy: EmailPolicy,
}

/// The rows of one record: `(table, row)` pairs, the parent row first.
pub type RecordRows = Vec<(&'static TableSpec, Vec<Value>)>;

/// Why a record cannot be loaded, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, `opens[1].ts`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field '{}': {}", self.field, self.problem)
    }
}

type Res<T> = Result<T, FieldError>;

fn err(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Converts one parsed line of `member` into rows.
///
/// # Errors
/// A [`FieldError`] naming the first bad field: a record that is not an object, a missing or
/// empty primary key, a value of the wrong type, an unparseable timestamp.
pub fn convert(member: Member, record: &Value, ctx: &Context) -> Res<RecordRows> {
    let obj = record.as_object().ok_or_else(|| {
        err(
            "(record)",
            format!("expected a JSON object, found {}", short(record)),
        )
    })?;
    let mut fields = Fields::new(obj);
    let rows = match member {
        Member::Blast => blast(&mut fields, ctx)?,
        Member::MessageBlast => message_blast(&mut fields, ctx)?,
        Member::MessageTransactional => message_transactional(&mut fields, ctx)?,
        Member::Profile => profile(&mut fields, ctx)?,
    };
    Ok(rows)
}

/// The record's fields, remembering which ones were given a column.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    used: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn new(obj: &'a Map<String, Value>) -> Self {
        Self {
            obj,
            used: Vec::new(),
        }
    }

    fn take(&mut self, name: &'static str) -> Option<&'a Value> {
        self.used.push(name);
        self.obj.get(name).filter(|v| !v.is_null())
    }

    fn int(&mut self, name: &'static str) -> Res<Value> {
        self.take(name)
            .map_or(Ok(Value::Null), |v| int_value(name, v))
    }

    fn text(&mut self, name: &'static str) -> Res<Value> {
        match self.take(name) {
            None => Ok(Value::Null),
            Some(Value::String(s)) => Ok(Value::String(s.clone())),
            Some(other) => Err(err(
                name,
                format!("expected a string, found {}", short(other)),
            )),
        }
    }

    fn local_ts(&mut self, name: &'static str) -> Res<Value> {
        self.take(name)
            .map_or(Ok(Value::Null), |v| local_ts_value(name, v))
    }

    fn key_int(&mut self, name: &'static str) -> Res<Value> {
        match self.int(name)? {
            Value::Null => Err(err(name, "missing primary key")),
            v => Ok(v),
        }
    }

    fn key_text(&mut self, name: &'static str) -> Res<Value> {
        match self.text(name)? {
            Value::Null => Err(err(name, "missing primary key")),
            Value::String(s) if s.trim().is_empty() => Err(err(name, "empty primary key")),
            v => Ok(v),
        }
    }

    /// The fields that were not given a column, as a JSON object (`{}` when none).
    fn extra(&self) -> Value {
        Value::Object(
            self.obj
                .iter()
                .filter(|(k, _)| !self.used.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

fn int_value(field: &str, v: &Value) -> Res<Value> {
    match v {
        Value::Number(n) if n.is_i64() => Ok(v.clone()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(json!(f as i64)),
            _ => Err(err(field, format!("expected an integer, found {n}"))),
        },
        Value::Object(o) if o.len() == 1 => {
            match o.get("$numberLong").or_else(|| o.get("$numberInt")) {
                Some(Value::String(s)) => s
                    .parse::<i64>()
                    .map(|i| json!(i))
                    .map_err(|_| err(field, format!("expected an integer, found {}", short(v)))),
                _ => Err(err(
                    field,
                    format!("expected an integer, found {}", short(v)),
                )),
            }
        }
        Value::Null => Ok(Value::Null),
        other => Err(err(
            field,
            format!("expected an integer, found {}", short(other)),
        )),
    }
}

fn local_ts_value(field: &str, v: &Value) -> Res<Value> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::String(s) => timestamps::local_timestamp(s)
            .map(Value::String)
            .map_err(|e| err(field, e)),
        Value::Object(_) => {
            // A Mongo `$date` in a local-time column: the instant, as UTC wall time.
            let utc = timestamps::mongo_date(v).map_err(|e| err(field, e))?;
            let trimmed = utc.trim_end_matches('Z');
            timestamps::local_timestamp(trimmed)
                .map(Value::String)
                .map_err(|e| err(field, e))
        }
        other => Err(err(
            field,
            format!("expected a timestamp string, found {}", short(other)),
        )),
    }
}

fn object_field<'a>(
    fields: &mut Fields<'a>,
    name: &'static str,
) -> Res<Option<&'a Map<String, Value>>> {
    match fields.take(name) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(err(
            name,
            format!("expected an object, found {}", short(other)),
        )),
    }
}

fn blast(f: &mut Fields<'_>, ctx: &Context) -> Res<RecordRows> {
    let id = f.key_int("id")?;
    let name = f.text("name")?;
    let day = match f.take("day") {
        None => Value::Null,
        Some(Value::String(s)) => Value::String(timestamps::date(s).map_err(|e| err("day", e))?),
        Some(other) => {
            return Err(err(
                "day",
                format!("expected a date string, found {}", short(other)),
            ));
        }
    };
    let extra = f.extra();
    Ok(vec![(
        &BLAST,
        vec![id, name, day, extra, json!(ctx.export_date)],
    )])
}

/// The `opens` and `clicks` of a message as `(action, ts, url)` triples.
fn actions(f: &mut Fields<'_>) -> Res<Vec<(&'static str, String, String)>> {
    let mut out = Vec::new();
    for (field, action) in [("opens", "open"), ("clicks", "click")] {
        let items = match f.take(field) {
            None => continue,
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(err(
                    field,
                    format!("expected an array, found {}", short(other)),
                ));
            }
        };
        for (i, item) in items.iter().enumerate() {
            let path = format!("{field}[{i}]");
            let obj = item
                .as_object()
                .ok_or_else(|| err(&path, format!("expected an object, found {}", short(item))))?;
            let ts = match obj.get("ts") {
                None | Some(Value::Null) => return Err(err(format!("{path}.ts"), "missing")),
                Some(ts) => timestamps::mongo_date(ts).map_err(|e| err(format!("{path}.ts"), e))?,
            };
            let url = match obj.get("url") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(err(
                        format!("{path}.url"),
                        format!("expected a string, found {}", short(other)),
                    ));
                }
            };
            out.push((action, ts, url));
        }
    }
    Ok(out)
}

fn message_blast(f: &mut Fields<'_>, ctx: &Context) -> Res<RecordRows> {
    let blast_id = f.key_int("blast_id")?;
    let profile_id = f.key_text("profile_id")?;
    let message_id = f.int("message_id")?;
    let send_time = f.local_ts("send_time")?;
    let device = f.text("device")?;
    let revenue = f.int("message_revenue")?;
    let status = f.text("delivery_status")?;
    let acts = actions(f)?;
    let date = json!(ctx.export_date);
    let mut rows: RecordRows = vec![(
        &MESSAGE_BLAST,
        vec![
            blast_id.clone(),
            profile_id.clone(),
            message_id,
            send_time,
            device,
            revenue,
            status,
            f.extra(),
            date.clone(),
        ],
    )];
    for (action, ts, url) in acts {
        rows.push((
            &MESSAGE_BLAST_ACTION,
            vec![
                blast_id.clone(),
                profile_id.clone(),
                json!(action),
                json!(ts),
                json!(url),
                date.clone(),
            ],
        ));
    }
    Ok(rows)
}

fn message_transactional(f: &mut Fields<'_>, ctx: &Context) -> Res<RecordRows> {
    let id = f.key_text("id")?;
    let profile_id = f.text("profile_id")?;
    let template = f.text("template")?;
    let send_time = f.local_ts("send_time")?;
    let device = f.text("device")?;
    let revenue = f.int("message_revenue")?;
    let status = f.text("delivery_status")?;
    let acts = actions(f)?;
    let date = json!(ctx.export_date);
    let mut rows: RecordRows = vec![(
        &MESSAGE_TRANSACTIONAL,
        vec![
            id.clone(),
            profile_id.clone(),
            template,
            send_time,
            device,
            revenue,
            status,
            f.extra(),
            date.clone(),
        ],
    )];
    for (action, ts, url) in acts {
        rows.push((
            &MESSAGE_TRANSACTIONAL_ACTION,
            vec![
                id.clone(),
                profile_id.clone(),
                json!(action),
                json!(ts),
                json!(url),
                date.clone(),
            ],
        ));
    }
    Ok(rows)
}

fn profile(f: &mut Fields<'_>, ctx: &Context) -> Res<RecordRows> {
    let id = f.key_text("id")?;
    let email = match f.take("email") {
        None => Value::Null,
        Some(Value::String(s)) => {
            apply_email_policy(ctx.email_policy, s).map_or(Value::Null, Value::String)
        }
        Some(other) => {
            // Do not echo the value: it may be personal data.
            return Err(err(
                "email",
                format!("expected a string, found a {}", kind(other)),
            ));
        }
    };
    let signup_time = f.local_ts("signup_time")?;
    let create_date = f.local_ts("create_date")?;
    let optout_reason = f.text("optout_reason")?;
    let optout_time = f.local_ts("optout_time")?;
    let counters = [
        f.int("total_opens")?,
        f.int("total_clicks")?,
        f.int("total_unique_opens")?,
        f.int("total_unique_clicks")?,
        f.int("total_pageviews")?,
        f.int("total_messages")?,
    ];
    let last_open = f.local_ts("last_open")?;
    let last_click = f.local_ts("last_click")?;
    let last_pageview = f.local_ts("last_pageview")?;
    let date = json!(ctx.export_date);

    let mut children: RecordRows = Vec::new();
    let mut geo_count = Value::Null;
    let mut geo_extra = Map::new();
    if let Some(geo) = object_field(f, "geo")? {
        for (key, value) in geo {
            match key.as_str() {
                "count" => geo_count = int_value("geo.count", value)?,
                "city" | "country" | "state" | "zip" => {
                    let path = format!("geo.{key}");
                    let labels = match value {
                        Value::Null => continue,
                        Value::Object(o) => o,
                        other => {
                            return Err(err(
                                path,
                                format!("expected an object, found {}", short(other)),
                            ));
                        }
                    };
                    for (label, count) in labels {
                        let count = int_value(&format!("{path}.{label}"), count)?;
                        children.push((
                            &PROFILE_GEO,
                            vec![id.clone(), json!(key), json!(label), count, date.clone()],
                        ));
                    }
                }
                _ => {
                    geo_extra.insert(key.clone(), value.clone());
                }
            }
        }
    }
    if let Some(browsers) = object_field(f, "browser")? {
        for (name, count) in browsers {
            let count = int_value(&format!("browser.{name}"), count)?;
            children.push((
                &PROFILE_BROWSER,
                vec![id.clone(), json!(name), count, date.clone()],
            ));
        }
    }
    if let Some(lists) = object_field(f, "lists_signup")? {
        for (list, ts) in lists {
            let ts = local_ts_value(&format!("lists_signup.{list}"), ts)?;
            children.push((
                &PROFILE_LISTS_SIGNUP,
                vec![id.clone(), json!(list), ts, date.clone()],
            ));
        }
    }
    if let Some(vars) = object_field(f, "vars")? {
        for (name, value) in vars {
            children.push((
                &PROFILE_VARS,
                vec![id.clone(), json!(name), value.clone(), date.clone()],
            ));
        }
    }
    let mut extra = f.extra();
    if !geo_extra.is_empty()
        && let Value::Object(map) = &mut extra
    {
        map.insert("geo".to_string(), Value::Object(geo_extra));
    }
    let [
        opens,
        clicks,
        unique_opens,
        unique_clicks,
        pageviews,
        messages,
    ] = counters;
    let mut rows: RecordRows = vec![(
        &PROFILE,
        vec![
            id,
            email,
            signup_time,
            create_date,
            optout_reason,
            optout_time,
            opens,
            clicks,
            unique_opens,
            unique_clicks,
            pageviews,
            messages,
            last_open,
            last_click,
            last_pageview,
            geo_count,
            extra,
            date,
        ],
    )];
    rows.extend(children);
    Ok(rows)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ctx(policy: EmailPolicy) -> Context {
        Context {
            export_date: "2016-04-01".into(),
            email_policy: policy,
        }
    }

    fn rows_of<'a>(rows: &'a RecordRows, table: &TableSpec) -> Vec<&'a Vec<Value>> {
        rows.iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, r)| r)
            .collect()
    }

    #[test]
    fn email_policies() {
        assert_eq!(
            apply_email_policy(EmailPolicy::Keep, " Person@Email.com "),
            Some(" Person@Email.com ".to_string())
        );
        // sha256("person@email.com")
        let expected = hex::encode(Sha256::digest(b"person@email.com"));
        assert_eq!(
            apply_email_policy(EmailPolicy::Hash, " Person@Email.COM\t"),
            Some(expected.clone())
        );
        assert_eq!(
            apply_email_policy(EmailPolicy::Hash, "person@email.com"),
            Some(expected.clone())
        );
        assert_eq!(expected.len(), 64);
        assert!(
            expected
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            apply_email_policy(EmailPolicy::Drop, "person@email.com"),
            None
        );
    }

    #[test]
    fn hash_matches_known_digest() {
        // echo -n 'test@example.com' | sha256sum
        assert_eq!(
            apply_email_policy(EmailPolicy::Hash, "  TEST@example.com ").unwrap(),
            "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
        );
    }

    #[test]
    fn message_blast_with_actions() {
        let line = r#"{ "profile_id" : "53c6e32d41b8f1a31200001e", "send_time" : "2016-03-31T08:00:03.018", "opens" : [{ "ts" : { "$date" : 1459431708000 } }, { "ts" : { "$date" : 1459431709000 } }], "clicks" : [{ "url" : "http://li.about.com/click", "ts" : { "$date" : 1459431709000 } }], "blast_id" : 6364286, "message_id" : 4, "device" : "Firefox", "message_revenue" : null, "delivery_status" : null, "surprise": 1 }"#;
        let v: Value = serde_json::from_str(line).unwrap();
        let rows = convert(Member::MessageBlast, &v, &ctx(EmailPolicy::Hash)).unwrap();
        let parent = rows_of(&rows, &MESSAGE_BLAST);
        assert_eq!(parent.len(), 1);
        assert_eq!(
            parent[0],
            &vec![
                json!(6364286),
                json!("53c6e32d41b8f1a31200001e"),
                json!(4),
                json!("2016-03-31T08:00:03.018000"),
                json!("Firefox"),
                Value::Null,
                Value::Null,
                json!({"surprise": 1}),
                json!("2016-04-01"),
            ]
        );
        let acts = rows_of(&rows, &MESSAGE_BLAST_ACTION);
        assert_eq!(acts.len(), 3);
        assert_eq!(acts[0][2], json!("open"));
        assert_eq!(acts[0][3], json!("2016-03-31T13:41:48.000Z"));
        assert_eq!(acts[0][4], json!(""));
        assert_eq!(acts[2][2], json!("click"));
        assert_eq!(acts[2][4], json!("http://li.about.com/click"));
        for (table, row) in &rows {
            assert_eq!(row.len(), table.columns.len(), "{}", table.name);
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let c = ctx(EmailPolicy::Hash);
        let cases = [
            (Member::Blast, r#"{"name": "x", "day": "2016-03-31"}"#, "id"),
            (Member::Blast, r#"{"id": "12", "day": "2016-03-31"}"#, "id"),
            (Member::Blast, r#"{"id": 12, "day": "2016-02-31"}"#, "day"),
            (
                Member::MessageBlast,
                r#"{"blast_id": 1, "profile_id": "p", "send_time": "yesterday"}"#,
                "send_time",
            ),
            (Member::MessageBlast, r#"{"blast_id": 1}"#, "profile_id"),
            (
                Member::MessageBlast,
                r#"{"blast_id": 1, "profile_id": "p", "opens": [{"ts": 5}]}"#,
                "opens[0].ts",
            ),
            (
                Member::MessageBlast,
                r#"{"blast_id": 1, "profile_id": "p", "clicks": {"url": "u"}}"#,
                "clicks",
            ),
            (
                Member::MessageTransactional,
                r#"{"id": "", "profile_id": "p"}"#,
                "id",
            ),
            (
                Member::Profile,
                r#"{"id": "p", "total_opens": "many"}"#,
                "total_opens",
            ),
            (
                Member::Profile,
                r#"{"id": "p", "lists_signup": {"A": "2014-13-01T00:00"}}"#,
                "lists_signup.A",
            ),
            (
                Member::Profile,
                r#"{"id": "p", "geo": {"city": {"X": "1"}}}"#,
                "geo.city.X",
            ),
            (Member::Profile, r#"[1, 2]"#, "(record)"),
        ];
        for (member, line, field) in cases {
            let v: Value = serde_json::from_str(line).unwrap();
            let e = convert(member, &v, &c).expect_err(line);
            assert_eq!(e.field, field, "{line}: {e}");
        }
    }

    #[test]
    fn profile_collections_and_email() {
        let line = r#"{ "browser" : { "Android" : 48, "Chrome" : 597 }, "email" : " Person@Email.com", "geo" : { "city" : { "A, CA US" : 1 }, "count" : 574, "country" : { "US" : 574 }, "zip": {}, "weird": true }, "lists_signup" : { "Group" : "2014-06-09T11:57:26", "group": "2016-03-20T02:42", "Master List" : "2014-06-09T11:57:26.060" }, "vars" : { "Group" : 3, "group": "x", "n": null, "o": {"a": [1]} }, "signup_time" : "2014-05-07T11:49:33.375", "create_date" : "2014-05-01T17:16:31", "total_opens" : 5, "total_clicks" : 1, "total_unique_opens" : 2, "total_unique_clicks" : 1, "total_pageviews" : 0, "total_messages" : 9, "last_open" : "2016-04-01T13:11:09", "last_click" : "2016-04-01T13:11:09", "last_pageview" : "2016-03-25T14:42:01", "id" : "536a655ef9c510f432fa65d6" }"#;
        let v: Value = serde_json::from_str(line).unwrap();
        let rows = convert(Member::Profile, &v, &ctx(EmailPolicy::Keep)).unwrap();
        let p = rows_of(&rows, &PROFILE);
        assert_eq!(p[0][1], json!(" Person@Email.com"));
        assert_eq!(p[0][15], json!(574));
        assert_eq!(p[0][16], json!({"geo": {"weird": true}}));
        assert_eq!(p[0][2], json!("2014-05-07T11:49:33.375000"));
        assert_eq!(rows_of(&rows, &PROFILE_GEO).len(), 2);
        assert_eq!(rows_of(&rows, &PROFILE_BROWSER).len(), 2);
        let lists = rows_of(&rows, &PROFILE_LISTS_SIGNUP);
        assert_eq!(lists.len(), 3);
        assert!(
            lists
                .iter()
                .any(|r| r[1] == json!("group") && r[2] == json!("2016-03-20T02:42:00.000000"))
        );
        let vars = rows_of(&rows, &PROFILE_VARS);
        assert_eq!(vars.len(), 4);
        assert!(
            vars.iter()
                .any(|r| r[1] == json!("Group") && r[2] == json!(3))
        );
        assert!(
            vars.iter()
                .any(|r| r[1] == json!("group") && r[2] == json!("x"))
        );
        assert!(vars.iter().any(|r| r[1] == json!("n") && r[2].is_null()));
        assert!(
            vars.iter()
                .any(|r| r[1] == json!("o") && r[2] == json!({"a": [1]}))
        );

        let dropped = convert(Member::Profile, &v, &ctx(EmailPolicy::Drop)).unwrap();
        assert!(rows_of(&dropped, &PROFILE)[0][1].is_null());
        let hashed = convert(Member::Profile, &v, &ctx(EmailPolicy::Hash)).unwrap();
        assert_eq!(
            rows_of(&hashed, &PROFILE)[0][1],
            json!(hex::encode(Sha256::digest(b"person@email.com")))
        );
    }
}
