//! JSON:API resources → rows of schema `klaviyo` (`migrations/V4__klaviyo.sql`).
//!
//! Each converter takes one resource object (`{"type", "id", "attributes", "relationships"}`)
//! and returns its row, or an error naming the resource and the bad field; the caller turns
//! such errors into rejected records. Attributes without a typed column go into the row's
//! `extra` object (and relationships with data other than the typed ones into
//! `extra.relationships`), so nothing is dropped.

use super::windows;
use crate::{Cell, TableSpec, cells};
use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

/// `klaviyo.metrics`: one row per metric.
pub const METRICS: &str = "klaviyo.metrics";
/// `klaviyo.events`: one row per event.
pub const EVENTS: &str = "klaviyo.events";
/// `klaviyo.profiles`: one row per profile; version column `updated`.
pub const PROFILES: &str = "klaviyo.profiles";
/// `klaviyo.lists`: one row per list.
pub const LISTS: &str = "klaviyo.lists";
/// `klaviyo.segments`: one row per segment.
pub const SEGMENTS: &str = "klaviyo.segments";
/// `klaviyo.list_members`: (list_id, profile_id).
pub const LIST_MEMBERS: &str = "klaviyo.list_members";
/// `klaviyo.segment_members`: (segment_id, profile_id).
pub const SEGMENT_MEMBERS: &str = "klaviyo.segment_members";

/// `klaviyo.metrics`.
pub static METRICS_TABLE: TableSpec = TableSpec {
    name: METRICS,
    columns: &["id", "name", "created", "updated", "integration", "extra"],
    key: &["id"],
    version: None,
    replace_scope: None,
};

/// `klaviyo.events`.
pub static EVENTS_TABLE: TableSpec = TableSpec {
    name: EVENTS,
    columns: &[
        "id",
        "metric_id",
        "profile_id",
        "datetime",
        "timestamp",
        "uuid",
        "value",
        "event_properties",
        "extra",
    ],
    key: &["id"],
    version: None,
    replace_scope: None,
};

/// `klaviyo.profiles`, versioned by `updated`.
pub static PROFILES_TABLE: TableSpec = TableSpec {
    name: PROFILES,
    columns: &[
        "id",
        "email",
        "phone_number",
        "external_id",
        "first_name",
        "last_name",
        "organization",
        "locale",
        "title",
        "image",
        "created",
        "updated",
        "last_event_date",
        "location",
        "properties",
        "extra",
    ],
    key: &["id"],
    version: Some("updated"),
    replace_scope: None,
};

/// `klaviyo.lists`.
pub static LISTS_TABLE: TableSpec = TableSpec {
    name: LISTS,
    columns: &[
        "id",
        "name",
        "created",
        "updated",
        "opt_in_process",
        "extra",
    ],
    key: &["id"],
    version: None,
    replace_scope: None,
};

/// `klaviyo.segments`.
pub static SEGMENTS_TABLE: TableSpec = TableSpec {
    name: SEGMENTS,
    columns: &[
        "id",
        "name",
        "created",
        "updated",
        "is_active",
        "is_processing",
        "is_starred",
        "definition",
        "extra",
    ],
    key: &["id"],
    version: None,
    replace_scope: None,
};

/// `klaviyo.list_members`.
pub static LIST_MEMBERS_TABLE: TableSpec = TableSpec {
    name: LIST_MEMBERS,
    columns: &["list_id", "profile_id", "seen_at"],
    key: &["list_id", "profile_id"],
    // The version of a membership is the start of the job that last saw it; a full
    // members job ends by removing the members its own version did not touch (see
    // `docs/klaviyo.md`, "Members that left").
    version: Some("seen_at"),
    replace_scope: None,
};

/// `klaviyo.segment_members`.
pub static SEGMENT_MEMBERS_TABLE: TableSpec = TableSpec {
    name: SEGMENT_MEMBERS,
    columns: &["segment_id", "profile_id", "seen_at"],
    key: &["segment_id", "profile_id"],
    // The version of a membership is the start of the job that last saw it; a full
    // members job ends by removing the members its own version did not touch (see
    // `docs/klaviyo.md`, "Members that left").
    version: Some("seen_at"),
    replace_scope: None,
};

/// Every table of schema `klaviyo`.
pub static TABLES: [&TableSpec; 7] = [
    &METRICS_TABLE,
    &EVENTS_TABLE,
    &PROFILES_TABLE,
    &LISTS_TABLE,
    &SEGMENTS_TABLE,
    &LIST_MEMBERS_TABLE,
    &SEGMENT_MEMBERS_TABLE,
];

/// The spec of `table` (a name of [`TABLES`]).
pub fn spec(table: &str) -> Option<&'static TableSpec> {
    TABLES.iter().copied().find(|t| t.name == table)
}

/// The columns of a table, in row order.
pub fn columns(table: &str) -> &'static [&'static str] {
    spec(table).map_or(&[], |t| t.columns)
}

/// One JSON:API resource, checked for a string `id` and an object `attributes`.
pub struct Resource<'a> {
    /// `id`.
    pub id: String,
    /// `attributes` (empty when absent or null).
    pub attrs: Map<String, Value>,
    /// `relationships`, when present.
    pub rels: Option<&'a Map<String, Value>>,
    kind: &'static str,
}

impl<'a> Resource<'a> {
    /// Reads the resource's envelope.
    ///
    /// # Errors
    /// A message naming the field when `id` is missing or not a string, or `attributes`
    /// is not an object.
    pub fn parse(kind: &'static str, value: &'a Value) -> Result<Self, String> {
        let id = envelope_id(kind, value)?.into_owned();
        let attrs = attributes_of(kind, &id, value)?
            .cloned()
            .unwrap_or_default();
        let rels = value.get("relationships").and_then(Value::as_object);
        Ok(Self {
            id,
            attrs,
            rels,
            kind,
        })
    }

    fn bad(&self, field: &str, want: &str, found: &Value) -> String {
        attribute_error(self.kind, &self.id, field, want, found)
    }

    /// Removes and returns a string attribute (null when absent or null).
    fn text(&mut self, field: &str) -> Result<Value, String> {
        match self.attrs.remove(field) {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(Value::String(s)) => Ok(Value::String(s)),
            Some(other) => Err(self.bad(field, "a string", &other)),
        }
    }

    /// Removes and returns a time attribute as an RFC 3339 UTC string (null when absent).
    fn time(&mut self, field: &str) -> Result<Value, String> {
        Ok(match self.time_value(field)? {
            Some(t) => Value::String(windows::cursor(t)),
            None => Value::Null,
        })
    }

    fn time_value(&mut self, field: &str) -> Result<Option<DateTime<Utc>>, String> {
        match self.attrs.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => match parse_time(&s) {
                Some(t) => Ok(Some(t)),
                None => Err(self.bad(field, "an ISO 8601 date-time", &Value::String(s.clone()))),
            },
            Some(other) => Err(self.bad(field, "an ISO 8601 date-time", &other)),
        }
    }

    /// Removes and returns a boolean attribute (null when absent).
    fn boolean(&mut self, field: &str) -> Result<Value, String> {
        match self.attrs.remove(field) {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(Value::Bool(b)) => Ok(Value::Bool(b)),
            Some(other) => Err(self.bad(field, "a boolean", &other)),
        }
    }

    /// Removes and returns an object attribute, kept as JSON (null when absent).
    fn object(&mut self, field: &str) -> Result<Value, String> {
        match self.attrs.remove(field) {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(v @ Value::Object(_)) => Ok(v),
            Some(other) => Err(self.bad(field, "an object", &other)),
        }
    }

    /// The remaining attributes, plus relationship data not in `typed`, as the `extra` object.
    fn extra(self, typed: &[&str]) -> Value {
        extra_of(self.attrs, self.rels, typed)
    }
}

/// `attrs` (the attributes without a column), plus the data of relationships not in
/// `typed` under `relationships`, as a row's `extra` object.
fn extra_of(
    mut extra: Map<String, Value>,
    rels: Option<&Map<String, Value>>,
    typed: &[&str],
) -> Value {
    if let Some(rels) = rels {
        let other: Map<String, Value> = rels
            .iter()
            .filter(|(k, _)| !typed.contains(&k.as_str()))
            .filter_map(|(k, v)| match v.get("data") {
                None | Some(Value::Null) => None,
                Some(data) => Some((k.clone(), data.clone())),
            })
            .collect();
        if !other.is_empty() {
            extra.insert("relationships".into(), Value::Object(other));
        }
    }
    Value::Object(extra)
}

/// A resource's `id`: a non-empty string, or a number as its decimal text.
fn envelope_id<'a>(kind: &str, value: &'a Value) -> Result<Cow<'a, str>, String> {
    match value.get("id") {
        Some(Value::String(s)) if !s.is_empty() => Ok(Cow::Borrowed(s)),
        Some(Value::Number(n)) => Ok(Cow::Owned(n.to_string())),
        other => Err(format!(
            "{kind} without a usable `id` (found {})",
            other.map_or("nothing".into(), short)
        )),
    }
}

/// A resource's `attributes`: `None` when absent or null.
///
/// # Errors
/// Naming the resource (`kind id`) when `attributes` is not an object.
fn attributes_of<'a>(
    kind: &str,
    id: &str,
    value: &'a Value,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match value.get("attributes") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(format!(
            "{kind} {id}: `attributes` must be an object, found {}",
            short(other)
        )),
    }
}

/// The message for an attribute of the wrong type: `kind id: `attributes.field` must be
/// want, found …`.
fn attribute_error(kind: &str, id: &str, field: &str, want: &str, found: &Value) -> String {
    format!(
        "{kind} {id}: `attributes.{field}` must be {want}, found {}",
        short(found)
    )
}

/// Parses Klaviyo's date-times: RFC 3339 (`2022-11-08T00:00:00+00:00`), or zone-less ISO 8601
/// (`2022-11-08T00:00:00.123456`, `2022-11-08 00:00:00`) read as UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
}

/// A JSON value for an error message, cut at 80 characters.
pub use crate::short;

/// A metric → its `klaviyo.metrics` row.
///
/// # Errors
/// The field that is malformed, naming the metric.
pub fn metric(value: &Value) -> Result<Vec<Value>, String> {
    let mut r = Resource::parse("metric", value)?;
    let row = vec![
        Value::String(r.id.clone()),
        r.text("name")?,
        r.time("created")?,
        r.time("updated")?,
        r.object("integration")?,
    ];
    Ok(push(row, r.extra(&[])))
}

/// An event, with its time, → its `klaviyo.events` row. `metric_id` comes from
/// `relationships.metric` (else `attributes.metric_id`, else `partition`, the task's metric);
/// `datetime` from `attributes.datetime` (else `attributes.timestamp`, epoch seconds);
/// `value` from `event_properties.$value` when it is a number (or a numeric string).
///
/// # Errors
/// The field that is malformed, naming the event.
pub fn event(value: &Value, partition: Option<&str>) -> Result<TimedRow, String> {
    event_owned(value.clone(), partition).map_err(|(error, _)| error)
}

/// [`event`] of a resource the caller gives up: its `event_properties` and other attributes
/// move into the row instead of being copied (a page's events are most of a fetcher's
/// work). Every field is checked before anything moves, so a malformed event comes back
/// whole with the error, as the raw record of its reject.
///
/// # Errors
/// The field that is malformed, naming the event, and the event unchanged.
pub fn event_owned(value: Value, partition: Option<&str>) -> Converted {
    match EventFields::check(&value, partition) {
        Ok(fields) => Ok(fields.into_row(value)),
        Err(error) => Err((error, value)),
    }
}

/// An event's `value` column: `event_properties.$value` when it is a finite number or a
/// string holding one (Klaviyo's integrations send both), else null.
pub(crate) fn event_value(props: Option<&Map<String, Value>>) -> Value {
    match props.and_then(|p| p.get("$value")) {
        Some(Value::Number(n)) => n.as_f64().map_or(Value::Null, event_value_of_number),
        Some(Value::String(s)) => event_value_of_text(s),
        _ => Value::Null,
    }
}

/// [`event_value`] of a `$value` that is a number (as `serde_json` reads it into an `f64`).
pub(crate) fn event_value_of_number(n: f64) -> Value {
    Some(n)
        .filter(|f| f.is_finite())
        .map_or(Value::Null, Value::from)
}

/// [`event_value`] of a `$value` that is a string.
pub(crate) fn event_value_of_text(s: &str) -> Value {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map_or(Value::Null, Value::from)
}

/// A record's row (cells in its table's column order) and its time (UTC): an event's
/// `datetime`, a profile's `updated`.
pub type TimedRow = (Vec<Cell>, Option<DateTime<Utc>>);

/// A record turned into its row, or why not and the record as it came (for its reject).
pub type Converted = Result<TimedRow, (String, Value)>;

/// What [`event_owned`] reads of an event before taking it apart.
struct EventFields {
    id: String,
    metric_id: Value,
    profile_id: Value,
    timestamp: Option<i64>,
    datetime: Option<DateTime<Utc>>,
    value: Value,
}

/// Attributes of an event that have their own column (or fill one).
const EVENT_TYPED_ATTRIBUTES: [&str; 6] = [
    "metric_id",
    "profile_id",
    "timestamp",
    "datetime",
    "uuid",
    "event_properties",
];

impl EventFields {
    /// Checks every field in the order [`Resource`] reads them (so errors name the same
    /// field first) without copying anything large.
    fn check(value: &Value, partition: Option<&str>) -> Result<Self, String> {
        let id = envelope_id("event", value)?;
        let attrs = attributes_of("event", &id, value)?;
        let attr = |field: &str| attrs.and_then(|a| a.get(field));
        let bad = |field: &str, want: &str, found: &Value| {
            attribute_error("event", &id, field, want, found)
        };
        let text = |field: &str| match attr(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(bad(field, "a string", other)),
        };
        let related = |name: &str| {
            value
                .get("relationships")?
                .as_object()?
                .get(name)?
                .get("data")?
                .get("id")?
                .as_str()
        };
        let attr_metric = text("metric_id")?;
        let attr_profile = text("profile_id")?;
        let metric_id = related("metric").or(attr_metric).or(partition);
        let profile_id = related("profile").or(attr_profile);
        let timestamp = match attr("timestamp") {
            None | Some(Value::Null) => None,
            Some(found @ Value::Number(n)) => match n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            }) {
                Some(i) => Some(i),
                None => return Err(bad("timestamp", "an integer (epoch seconds)", found)),
            },
            Some(other) => return Err(bad("timestamp", "an integer (epoch seconds)", other)),
        };
        let datetime = match attr("datetime") {
            None | Some(Value::Null) => None,
            Some(found @ Value::String(s)) => match parse_time(s) {
                Some(t) => Some(t),
                None => return Err(bad("datetime", "an ISO 8601 date-time", found)),
            },
            Some(other) => return Err(bad("datetime", "an ISO 8601 date-time", other)),
        };
        let datetime = match (datetime, timestamp) {
            (Some(t), _) => Some(t),
            (None, Some(s)) => {
                Some(DateTime::<Utc>::from_timestamp(s, 0).ok_or_else(|| {
                    bad("timestamp", "epoch seconds within range", &Value::from(s))
                })?)
            }
            (None, None) => None,
        };
        text("uuid")?;
        let props = match attr("event_properties") {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(other) => return Err(bad("event_properties", "an object", other)),
        };
        let value_num = event_value(props);
        let owned = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_string()));
        Ok(Self {
            id: id.into_owned(),
            metric_id: owned(metric_id),
            profile_id: owned(profile_id),
            timestamp,
            datetime,
            value: value_num,
        })
    }

    /// The row, moving the checked event's attributes and relationships into it.
    fn into_row(self, value: Value) -> TimedRow {
        let mut resource = match value {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        let mut attrs = match resource.remove("attributes") {
            Some(Value::Object(o)) => o,
            _ => Map::new(),
        };
        let uuid = attrs.remove("uuid").unwrap_or(Value::Null);
        let props = attrs.remove("event_properties").unwrap_or(Value::Null);
        for field in EVENT_TYPED_ATTRIBUTES {
            attrs.remove(field);
        }
        if let Some(Value::Object(rels)) = resource.remove("relationships") {
            let other: Map<String, Value> = rels
                .into_iter()
                .filter(|(k, _)| k != "metric" && k != "profile")
                .filter_map(|(k, mut v)| match v.get_mut("data").map(Value::take) {
                    None | Some(Value::Null) => None,
                    Some(data) => Some((k, data)),
                })
                .collect();
            if !other.is_empty() {
                attrs.insert("relationships".into(), Value::Object(other));
            }
        }
        let row = vec![
            Value::String(self.id),
            self.metric_id,
            self.profile_id,
            self.datetime
                .map_or(Value::Null, |t| Value::String(windows::cursor(t))),
            self.timestamp.map_or(Value::Null, Value::from),
            uuid,
            self.value,
            props,
            Value::Object(attrs),
        ];
        (cells(row), self.datetime)
    }
}

/// A profile, with its `updated` time, → its `klaviyo.profiles` row.
///
/// # Errors
/// The field that is malformed, naming the profile.
pub fn profile(value: &Value) -> Result<TimedRow, String> {
    profile_owned(value.clone()).map_err(|(error, _)| error)
}

/// How a typed attribute of a profile is read (its column's type).
#[derive(Clone, Copy)]
pub(super) enum Field {
    /// A string, or null.
    Text,
    /// An ISO 8601 date-time string ([`parse_time`]) → RFC 3339 UTC text, or null.
    Time,
    /// A JSON object kept as it is, or null.
    Object,
}

/// The typed attributes of a profile, in the column order of [`PROFILES_TABLE`] (after
/// `id`; `extra` takes the rest).
pub(super) const PROFILE_FIELDS: [(&str, Field); 14] = [
    ("email", Field::Text),
    ("phone_number", Field::Text),
    ("external_id", Field::Text),
    ("first_name", Field::Text),
    ("last_name", Field::Text),
    ("organization", Field::Text),
    ("locale", Field::Text),
    ("title", Field::Text),
    ("image", Field::Text),
    ("created", Field::Time),
    ("updated", Field::Time),
    ("last_event_date", Field::Time),
    ("location", Field::Object),
    ("properties", Field::Object),
];

/// [`profile`] of a resource the caller gives up: its attributes move into the row
/// instead of being copied (`include=profile` pages carry a profile per event). Every field
/// is checked before anything moves, so a malformed profile comes back whole with the
/// error, as the raw record of its reject.
///
/// # Errors
/// The field that is malformed, naming the profile, and the profile unchanged.
pub fn profile_owned(value: Value) -> Converted {
    let (id, times) = match check_profile(&value) {
        Ok(checked) => checked,
        Err(error) => return Err((error, value)),
    };
    let mut resource = match value {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    let attrs = match resource.remove("attributes") {
        Some(Value::Object(o)) => o,
        _ => Map::new(),
    };
    // One walk over the attributes (removing 14 names from the map one by one was a third
    // of a profile's conversion, issue 15); times were parsed by the check.
    let mut row = vec![Value::Null; PROFILE_FIELDS.len() + 2];
    row[0] = Value::String(id);
    let mut extra = Map::new();
    for (name, value) in attrs {
        match PROFILE_FIELDS.iter().position(|(n, _)| *n == name) {
            Some(i) => {
                row[i + 1] = match (PROFILE_FIELDS[i].1, times[i]) {
                    (Field::Time, Some(t)) => Value::String(windows::cursor(t)),
                    (Field::Time, None) => Value::Null,
                    _ => value,
                }
            }
            None => {
                extra.insert(name, value);
            }
        }
    }
    let rels = resource.get("relationships").and_then(Value::as_object);
    row[PROFILE_FIELDS.len() + 1] = extra_of(extra, rels, &[]);
    Ok((cells(row), times[PROFILE_UPDATED]))
}

/// The times of a profile's [`PROFILE_FIELDS`], by position (`None` for other fields).
type ProfileTimes = [Option<DateTime<Utc>>; PROFILE_FIELDS.len()];

/// The position of `updated` in [`PROFILE_FIELDS`].
pub(super) const PROFILE_UPDATED: usize = 10;

/// Checks a profile's envelope and typed attributes without copying them, in the order
/// [`PROFILE_FIELDS`] lists them (so the first malformed field is the one named): its id
/// and, by position in [`PROFILE_FIELDS`], its times.
fn check_profile(value: &Value) -> Result<(String, ProfileTimes), String> {
    const KIND: &str = "profile";
    let id = envelope_id(KIND, value)?.into_owned();
    let attrs = attributes_of(KIND, &id, value)?;
    let bad = |name: &str, want: &str, found: &Value| attribute_error(KIND, &id, name, want, found);
    let mut times = [None; PROFILE_FIELDS.len()];
    for (i, (name, field)) in PROFILE_FIELDS.into_iter().enumerate() {
        let Some(found) = attrs.and_then(|a| a.get(name)) else {
            continue;
        };
        match (field, found) {
            (_, Value::Null)
            | (Field::Text, Value::String(_))
            | (Field::Object, Value::Object(_)) => {}
            (Field::Time, Value::String(s)) => match parse_time(s) {
                Some(t) => times[i] = Some(t),
                None => return Err(bad(name, "an ISO 8601 date-time", found)),
            },
            (Field::Text, _) => return Err(bad(name, "a string", found)),
            (Field::Time, _) => return Err(bad(name, "an ISO 8601 date-time", found)),
            (Field::Object, _) => return Err(bad(name, "an object", found)),
        }
    }
    Ok((id, times))
}

/// A list → its `klaviyo.lists` row.
///
/// # Errors
/// The field that is malformed, naming the list.
pub fn list(value: &Value) -> Result<Vec<Value>, String> {
    let mut r = Resource::parse("list", value)?;
    let row = vec![
        Value::String(r.id.clone()),
        r.text("name")?,
        r.time("created")?,
        r.time("updated")?,
        r.text("opt_in_process")?,
    ];
    Ok(push(row, r.extra(&[])))
}

/// A segment → its `klaviyo.segments` row (`definition` kept as JSON).
///
/// # Errors
/// The field that is malformed, naming the segment.
pub fn segment(value: &Value) -> Result<Vec<Value>, String> {
    let mut r = Resource::parse("segment", value)?;
    let row = vec![
        Value::String(r.id.clone()),
        r.text("name")?,
        r.time("created")?,
        r.time("updated")?,
        r.boolean("is_active")?,
        r.boolean("is_processing")?,
        r.boolean("is_starred")?,
        r.object("definition")?,
    ];
    Ok(push(row, r.extra(&[])))
}

fn push(mut row: Vec<Value>, extra: Value) -> Vec<Value> {
    row.push(extra);
    row
}

/// The `updated` value of a converted row of `table` (its 4th column for metrics, lists and
/// segments), for cursors.
pub fn updated_of(row: &[Value]) -> Option<DateTime<Utc>> {
    row.get(3).and_then(Value::as_str).and_then(parse_time)
}

/// The member row `(group_id, profile_id, seen_at)`; `seen_at` is the job's members
/// version (RFC 3339 UTC).
pub fn member(group_id: &str, profile_id: &str, seen_at: &str) -> Vec<Value> {
    vec![json!(group_id), json!(profile_id), json!(seen_at)]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn event_row_and_bad_fields() {
        let ev = json!({"type": "event", "id": "E1", "attributes": {
            "timestamp": 1704067200, "datetime": "2024-01-01T00:00:00+00:00", "uuid": "u",
            "event_properties": {"$value": 12.5, "Items": ["a"]}, "new_field": 1},
            "relationships": {"metric": {"data": {"type": "metric", "id": "M1"}},
                              "profile": {"data": {"type": "profile", "id": "P1"}},
                              "attributions": {"data": []}}});
        let (row, t) = event(&ev, Some("M0")).unwrap();
        assert_eq!(row.len(), columns(EVENTS).len());
        assert_eq!(row[1], "M1");
        assert_eq!(row[2], "P1");
        assert_eq!(row[3], "2024-01-01T00:00:00.000000Z");
        assert_eq!(row[4], 1704067200);
        assert_eq!(row[6], 12.5);
        assert_eq!(
            row[8],
            json!({"new_field": 1, "relationships": {"attributions": []}})
        );
        assert!(t.is_some());

        let bad = json!({"type": "event", "id": "E2", "attributes": {"datetime": "yesterday"}});
        let err = event(&bad, None).unwrap_err();
        assert!(
            err.contains("E2") && err.contains("attributes.datetime"),
            "{err}"
        );
        let bad = json!({"type": "event", "id": "E3", "attributes": {"timestamp": "x"}});
        assert!(event(&bad, None).unwrap_err().contains("timestamp"));
    }

    #[test]
    fn profile_row_keeps_unknown_attributes() {
        let p = json!({"type": "profile", "id": "P1", "attributes": {
            "email": "a@b.c", "updated": "2024-01-01T00:00:00+00:00",
            "location": {"city": "X"}, "properties": {"k": 1}, "subscriptions": {"email": {}}}});
        let (row, updated) = profile(&p).unwrap();
        assert_eq!(row.len(), columns(PROFILES).len());
        assert_eq!(row[1], "a@b.c");
        assert_eq!(row[13], json!({"city": "X"}));
        assert_eq!(row[15], json!({"subscriptions": {"email": {}}}));
        assert!(updated.is_some());
        let bad = json!({"type": "profile", "id": "P2", "attributes": {"email": 5}});
        assert!(profile(&bad).unwrap_err().contains("attributes.email"));
    }

    #[test]
    fn an_owned_profile_fills_every_column_and_a_bad_one_comes_back_whole() {
        let p = json!({"type": "profile", "id": "P1",
            "attributes": {
                "email": "a@b.c", "phone_number": "+15005550006", "external_id": "x",
                "first_name": "A", "last_name": "B", "organization": "O", "locale": "en-US",
                "title": "T", "image": "i", "created": "2023-01-01 00:00:00",
                "updated": "2024-01-01T01:00:00+01:00", "last_event_date": null,
                "location": {"city": "X"}, "properties": {"k": 1}, "new": 2},
            "relationships": {"lists": {"data": [{"type": "list", "id": "L"}]}, "segments": {"data": null}}});
        let (row, updated) = profile_owned(p.clone()).unwrap();
        assert_eq!(
            row,
            vec![
                json!("P1"),
                json!("a@b.c"),
                json!("+15005550006"),
                json!("x"),
                json!("A"),
                json!("B"),
                json!("O"),
                json!("en-US"),
                json!("T"),
                json!("i"),
                json!("2023-01-01T00:00:00.000000Z"),
                json!("2024-01-01T00:00:00.000000Z"),
                json!(null),
                json!({"city": "X"}),
                json!({"k": 1}),
                json!({"new": 2, "relationships": {"lists": [{"type": "list", "id": "L"}]}}),
            ]
        );
        assert_eq!(
            updated.map(windows::cursor).as_deref(),
            Some("2024-01-01T00:00:00.000000Z")
        );
        assert_eq!(profile(&p).unwrap().0, row);
        // Each typed field with a value of the wrong type: the error names that field (the
        // first in column order when two are wrong) and the profile comes back unchanged.
        for (field, bad) in [
            ("email", json!(5)),
            ("image", json!({"u": 1})),
            ("created", json!("yesterday")),
            ("updated", json!(17)),
            ("location", json!("X")),
            ("properties", json!([1])),
        ] {
            let mut q = p.clone();
            q["attributes"][field] = bad.clone();
            q["attributes"]["properties"] = if field == "properties" {
                bad
            } else {
                json!(true)
            };
            let (error, raw) = profile_owned(q.clone()).unwrap_err();
            assert!(
                error.starts_with(&format!("profile P1: `attributes.{field}` must be")),
                "{error}"
            );
            assert_eq!(raw, q);
        }
        let (error, _) = profile_owned(json!({"id": "P3", "attributes": [1]})).unwrap_err();
        assert!(error.contains("`attributes` must be an object"), "{error}");
        let (error, _) = profile_owned(json!({"attributes": {}})).unwrap_err();
        assert!(error.contains("without a usable `id`"), "{error}");
    }

    #[test]
    fn an_owned_event_gives_the_same_row_and_a_bad_one_comes_back_whole() {
        let ev = json!({"type": "event", "id": "E1", "attributes": {
            "timestamp": 1704067200, "uuid": "u", "metric_id": "M9", "profile_id": "P9",
            "event_properties": {"$value": "7.5", "k": [1, 2]}, "new_field": {"a": null}},
            "relationships": {"profile": {"data": {"type": "profile", "id": "P1"}},
                              "attributions": {"data": [{"type": "x", "id": "1"}]},
                              "empty": {"data": null}}});
        let borrowed = event(&ev, Some("M0")).unwrap();
        let owned = event_owned(ev.clone(), Some("M0")).unwrap();
        assert_eq!(owned, borrowed);
        let (row, t) = owned;
        // No metric relationship: the attribute's, not the partition's; the relationship's
        // profile over the attribute's; the datetime from `timestamp`.
        assert_eq!(row[1], "M9");
        assert_eq!(row[2], "P1");
        assert_eq!(row[3], "2024-01-01T00:00:00.000000Z");
        assert_eq!(t.map(|t| t.timestamp()), Some(1704067200));
        assert_eq!(row[6], 7.5);
        assert_eq!(row[7], json!({"$value": "7.5", "k": [1, 2]}));
        assert_eq!(
            row[8],
            json!({"new_field": {"a": null},
                   "relationships": {"attributions": [{"type": "x", "id": "1"}]}})
        );

        let bad = json!({"type": "event", "id": 42, "attributes": {
            "uuid": "u", "event_properties": {"$value": 1}, "datetime": 5}});
        let (err, back) = event_owned(bad.clone(), None).unwrap_err();
        assert!(err.contains("event 42: `attributes.datetime`"), "{err}");
        assert_eq!(back, bad);
        let (err, _) = event_owned(
            json!({"id": "E", "attributes": {"event_properties": []}}),
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("`attributes.event_properties` must be an object"),
            "{err}"
        );
        let (err, _) = event_owned(json!({"attributes": {}}), None).unwrap_err();
        assert!(err.contains("without a usable `id`"), "{err}");
    }
}
