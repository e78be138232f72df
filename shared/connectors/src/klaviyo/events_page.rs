//! A page of `GET /api/events` decoded straight into `klaviyo.events` rows (issue 15).
//!
//! [`client::decode`](super::client) builds a `serde_json::Value` tree of every resource and
//! [`records::event_owned`] then takes it apart; for events — most of what a fetcher reads —
//! that tree was over half of a fetcher's instructions per event (`docs/benchmarks.md`,
//! "Issue 15"). Here a typed visitor reads each event in one pass over the body and keeps
//! only what the row needs: the id (borrowed from the body while read), the typed
//! attributes, the ids of `relationships.metric` and `relationships.profile`, as JSON
//! values only the attributes without a column and the data of other relationships (the
//! row's `extra`), and `event_properties` — most of an event — as the raw JSON text it
//! arrived as ([`Cell::Raw`]: written into the `RecordBatch` verbatim, never built into a
//! `Value` tree). `type` and every `links` are skipped unbuilt.
//!
//! `event_properties` is still read once, by a visitor over its text that reads strings
//! and numbers exactly as a `Value` would (so text the typed path passes on is text the
//! loader's parse accepts, and a page a `Value` cannot hold — a lone surrogate escape, a
//! number out of range — still fails the way it always did) and keeps only `$value`, the
//! row's `value` column ([`records::event_value`]'s rules).
//!
//! With `include=profile`, the profiles among `included` are read the same way into
//! `klaviyo.profiles` rows ([`records::profile_owned`]'s): the id, the typed attributes
//! (strings borrowed, times parsed once), `location` and `properties` as the raw JSON text
//! they arrived as, and as JSON values only the attributes without a column and the data of
//! relationships (`extra`). Resources of other types are read and left out, as the generic
//! path leaves them. [`decode_profiles`] reads a page of `GET /api/profiles` the same way.
//!
//! The typed reader takes exactly the well-formed events and profiles and gives up on
//! anything else (a wrong type anywhere, an unparsable time, a missing id): then the page is
//! read the generic way, whose [`records::event_owned`] and [`records::profile_owned`] name
//! the bad field and return the resource whole for its reject. Rows and rejects are
//! therefore the generic path's; the tests compare the two paths on every field's bad
//! variants.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::client::Page;
use super::records::{self, Converted, Field, PROFILE_FIELDS, PROFILE_UPDATED, TimedRow};
use super::windows;
use crate::{Cell, RawJson};

/// The `visit_*` methods of a visitor that reads the listed kinds of JSON as `$value`,
/// reading arrays and objects to their end unbuilt.
macro_rules! skipped {
    ($de:lifetime, $value:expr; $($kind:ident),*) => { $( skipped!(@ $de, $kind, $value); )* };
    (@ $de:lifetime, bool, $v:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> { Ok($v) }
    };
    (@ $de:lifetime, i64, $v:expr) => {
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> { Ok($v) }
    };
    (@ $de:lifetime, u64, $v:expr) => {
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> { Ok($v) }
    };
    (@ $de:lifetime, f64, $v:expr) => {
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> { Ok($v) }
    };
    (@ $de:lifetime, str, $v:expr) => {
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> { Ok($v) }
    };
    (@ $de:lifetime, unit, $v:expr) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> { Ok($v) }
    };
    (@ $de:lifetime, seq, $v:expr) => {
        fn visit_seq<A: SeqAccess<$de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($v)
        }
    };
    (@ $de:lifetime, map, $v:expr) => {
        fn visit_map<A: MapAccess<$de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($v)
        }
    };
}

/// The string methods of a visitor whose value is `Option<Cow<'de, str>>`: borrowed from the
/// body when the string has no escapes.
macro_rules! strings {
    ($de:lifetime) => {
        fn visit_borrowed_str<E>(self, v: &$de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
    };
}

/// Decodes a JSON:API document of events (`GET /api/events`: `data`, optional `included`,
/// `links.next`) into [`Converted`] events (a malformed event as its error and the event
/// without its `links`), in `data` order, with the profiles among the document's
/// `included` resources as [`Converted`] `klaviyo.profiles` rows (in `included` order;
/// resources of other types left out) and its next link. `partition` is the task's metric
/// id, the `metric_id` of events that name none.
///
/// One pass over the body reads every event and included profile typed; should any of them
/// not be well formed, the page is decoded again the generic way
/// ([`client::decode`](super::client), then [`records::event_owned`] per event and
/// [`records::profile_owned`] per profile), which names what is wrong with each.
///
/// # Errors
/// A body that is not JSON, or whose `data` is not an array, an object or null (the
/// generic decode's messages).
pub fn decode(body: &[u8], partition: Option<&str>) -> Result<EventsPage, String> {
    match typed(body, partition) {
        Some(page) => Ok(page),
        None => generic(body, partition),
    }
}

/// A page of events as rows, with the rows of the profiles among its `included`.
pub type EventsPage = Page<Converted, Converted>;

/// The typed read of a page; `None` when it is not JSON or any event or included profile is
/// not well formed.
fn typed(body: &[u8], partition: Option<&str>) -> Option<EventsPage> {
    // UTF-8 checked once for the whole body: read from a slice, serde_json checks each
    // string it borrows (and each raw `event_properties`) on its own, at several times
    // the cost per byte.
    let text = std::str::from_utf8(body).ok()?;
    let doc = serde_json::from_str::<Document<'_>>(text).ok()?;
    let data = doc
        .data
        .0
        .into_iter()
        .map(|event| event.into_row(partition).map(Ok))
        .collect::<Option<Vec<Converted>>>()?;
    let included = doc
        .included
        .0
        .into_iter()
        .map(|profile| profile.into_row().map(Ok))
        .collect::<Option<Vec<Converted>>>()?;
    Some(Page {
        data,
        included,
        next: doc.links.and_then(|l| l.next).map(Key::into_owned),
    })
}

/// Decodes a JSON:API document of profiles (`GET /api/profiles`: `data`, `links.next`) into
/// [`Converted`] `klaviyo.profiles` rows (a malformed profile as its error and the profile
/// without its `links`), in `data` order, and its next link; `included` is not read (profile
/// pages are requested without `include`) and comes back empty.
///
/// Read typed in one pass like [`decode`]'s included profiles; should any profile not be
/// well formed, the page is decoded again the generic way ([`client::decode`](super::client),
/// then [`records::profile_owned`] per profile).
///
/// # Errors
/// A body that is not JSON, or whose `data` is not an array, an object or null (the generic
/// decode's messages).
pub fn decode_profiles(body: &[u8]) -> Result<Page<Converted, Converted>, String> {
    match typed_profiles(body) {
        Some(page) => Ok(page),
        None => generic_profiles(body),
    }
}

/// The typed read of a profiles page; `None` when it is not JSON or any profile is not well
/// formed.
fn typed_profiles(body: &[u8]) -> Option<Page<Converted, Converted>> {
    let text = std::str::from_utf8(body).ok()?;
    let doc = serde_json::from_str::<ProfilesDocument<'_>>(text).ok()?;
    let data = doc
        .data
        .0
        .into_iter()
        .map(|profile| profile.into_row().map(Ok))
        .collect::<Option<Vec<Converted>>>()?;
    Some(Page {
        data,
        included: Vec::new(),
        next: doc.links.and_then(|l| l.next).map(Key::into_owned),
    })
}

/// The generic read of a profiles page: [`client::decode`](super::client), then
/// [`records::profile_owned`] per resource of `data`.
fn generic_profiles(body: &[u8]) -> Result<Page<Converted, Converted>, String> {
    let page = super::client::decode(body)?;
    Ok(Page {
        data: page.data.into_iter().map(records::profile_owned).collect(),
        included: Vec::new(),
        next: page.next,
    })
}

/// The members of a profiles document a page needs.
#[derive(serde::Deserialize)]
struct ProfilesDocument<'a> {
    #[serde(borrow, default)]
    data: Profiles<'a>,
    #[serde(borrow, default)]
    links: Option<Links<'a>>,
}

/// `data` of a profiles document: an array of profiles, one profile, or null. Every
/// resource is read as a profile, whatever its `type` ([`records::profile_owned`] does not
/// look at it either); an element that is not an object gives up.
#[derive(Default)]
struct Profiles<'a>(Vec<TypedProfile<'a>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Profiles<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let any = ProfileResource {
            only_profiles: false,
        };
        let profiles = d.deserialize_any(DataOf(any))?;
        Ok(Profiles(profiles.into_iter().flatten().collect()))
    }
}

/// `data` of a document: an array of resources read by the seed `S`, one resource (read by
/// `S` as a visitor of its object), or null (none).
#[derive(Clone, Copy)]
struct DataOf<S>(S);

impl<'de, T, S> Visitor<'de> for DataOf<S>
where
    S: Copy + DeserializeSeed<'de, Value = T> + Visitor<'de, Value = T>,
{
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of resources, a resource or null")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut resources = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(resource) = seq.next_element_seed(self.0)? {
            resources.push(resource);
        }
        Ok(resources)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map).map(|resource| vec![resource])
    }
}

/// The generic read: [`client::decode`](super::client), then [`records::event_owned`] per
/// event and [`records::profile_owned`] per included resource of type `profile`.
fn generic(body: &[u8], partition: Option<&str>) -> Result<EventsPage, String> {
    let page = super::client::decode(body)?;
    Ok(Page {
        data: page
            .data
            .into_iter()
            .map(|event| records::event_owned(event, partition))
            .collect(),
        included: page
            .included
            .into_iter()
            .filter(|resource| resource.get("type").and_then(Value::as_str) == Some("profile"))
            .map(records::profile_owned)
            .collect(),
        next: page.next,
    })
}

/// The members of an events document a page needs; the typed read gives up (an error)
/// on the first event that is not well formed.
#[derive(serde::Deserialize)]
struct Document<'a> {
    #[serde(borrow, default)]
    data: Events<'a>,
    #[serde(borrow, default)]
    included: Included<'a>,
    #[serde(borrow, default)]
    links: Option<Links<'a>>,
}

/// `data`: an array of events, one event, or null.
#[derive(Default)]
struct Events<'a>(Vec<Event<'a>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Events<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DataOf(EventVisitor)).map(Events)
    }
}

/// `links` of a document: only `next` is read.
#[derive(serde::Deserialize)]
struct Links<'a> {
    #[serde(borrow, default)]
    next: Option<Key<'a>>,
}

/// The parts of a well-formed event a row needs.
#[derive(Default)]
struct Event<'a> {
    id: Option<Cow<'a, str>>,
    /// `attributes`: `None` when absent or null.
    attributes: Option<Attributes<'a>>,
    /// Ids of `relationships.metric.data` and `relationships.profile.data`, when strings.
    metric: Option<Cow<'a, str>>,
    profile: Option<Cow<'a, str>>,
    /// The data of other relationships, non-null only, for `extra.relationships`.
    other_relationships: Map<String, Value>,
}

/// An event's attributes.
#[derive(Default)]
struct Attributes<'a> {
    metric_id: Option<Cow<'a, str>>,
    profile_id: Option<Cow<'a, str>>,
    timestamp: Option<i64>,
    datetime: Option<DateTime<Utc>>,
    uuid: Option<String>,
    /// `event_properties` (an object) as it arrived, and the `value` column read from it.
    event_properties: Option<(&'a RawValue, Value)>,
    /// Attributes without a column, for `extra`.
    extra: Map<String, Value>,
}

impl Event<'_> {
    /// The row, as [`records::event_owned`] builds it; `None` for what it would refuse.
    fn into_row(self, partition: Option<&str>) -> Option<TimedRow> {
        let id = self.id?;
        let attrs = self.attributes.unwrap_or_default();
        let datetime = match (attrs.datetime, attrs.timestamp) {
            (Some(t), _) => Some(t),
            (None, Some(s)) => Some(DateTime::<Utc>::from_timestamp(s, 0)?),
            (None, None) => None,
        };
        let metric_id = self
            .metric
            .or(attrs.metric_id)
            .map(Cow::into_owned)
            .or_else(|| partition.map(str::to_string));
        let profile_id = self.profile.or(attrs.profile_id).map(Cow::into_owned);
        let (properties, value) = match attrs.event_properties {
            Some((raw, value)) => (Cell::Raw(RawJson::checked(raw)), value),
            None => (Cell::Json(Value::Null), Value::Null),
        };
        let mut extra = attrs.extra;
        if !self.other_relationships.is_empty() {
            extra.insert(
                "relationships".into(),
                Value::Object(self.other_relationships),
            );
        }
        let text = |s: Option<String>| Cell::Json(s.map_or(Value::Null, Value::String));
        let row = vec![
            Cell::Json(Value::String(id.into_owned())),
            text(metric_id),
            text(profile_id),
            Cell::Json(datetime.map_or(Value::Null, |t| Value::String(windows::cursor(t)))),
            Cell::Json(attrs.timestamp.map_or(Value::Null, Value::from)),
            text(attrs.uuid),
            Cell::Json(value),
            properties,
            Cell::Json(Value::Object(extra)),
        ];
        Some((row, datetime))
    }
}

/// Gives up on the typed path for this event (the generic path will say why).
fn give_up<E: de::Error>() -> E {
    E::custom("not a well-formed event")
}

/// Reads an event (an error when it is not of the shape the typed path takes: then the
/// generic path reads the page).
#[derive(Clone, Copy)]
struct EventVisitor;

impl<'de> DeserializeSeed<'de> for EventVisitor {
    type Value = Event<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event resource object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut event = Event::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key {
                "id" => match map.next_value::<Id<'de>>()?.0 {
                    Some(id) => event.id = Some(id),
                    None => return Err(give_up()),
                },
                "attributes" => event.attributes = map.next_value::<AttributesOf<'de>>()?.0,
                "relationships" => {
                    let rels = map.next_value::<Relationships<'de>>()?;
                    event.metric = rels.metric;
                    event.profile = rels.profile;
                    event.other_relationships = rels.other;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(event)
    }
}

/// `id`: a non-empty string, or a number as its decimal text (as `records` reads it);
/// `None` for anything else.
struct Id<'a>(Option<Cow<'a, str>>);

impl<'de> serde::Deserialize<'de> for Id<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(CowOrNumber)?;
        Ok(Id(v.filter(|s| !s.is_empty())))
    }
}

/// A string (borrowed when the body has no escapes in it) or a number's decimal text as
/// `serde_json` prints it; `None` for other JSON.
struct CowOrNumber;

impl<'de> Visitor<'de> for CowOrNumber {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a number")
    }
    strings!('de);
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(Value::from(v).to_string())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(Value::from(v).to_string())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(Value::from(v).to_string())))
    }
    skipped!('de, None; bool, unit, seq, map);
}

/// A nullable string attribute: `Err` (give up) for any other JSON.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor).map(Text)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or null")
    }
    strings!('de);
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// `attributes`: `None` when null; an object read field by field; else give up.
struct AttributesOf<'a>(Option<Attributes<'a>>);

impl<'de> serde::Deserialize<'de> for AttributesOf<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectOrNull(AttributesVisitor))
            .map(AttributesOf)
    }
}

/// An object read by the visitor `V`, or null (`None`); any other JSON gives up.
struct ObjectOrNull<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for ObjectOrNull<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object or null")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map).map(Some)
    }
}

struct AttributesVisitor;

impl<'de> Visitor<'de> for AttributesVisitor {
    type Value = Attributes<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event's attributes")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut a = Attributes::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key {
                "metric_id" => a.metric_id = map.next_value::<Text<'de>>()?.0,
                "profile_id" => a.profile_id = map.next_value::<Text<'de>>()?.0,
                "uuid" => a.uuid = map.next_value::<Text<'de>>()?.0.map(Cow::into_owned),
                "timestamp" => {
                    a.timestamp = match map.next_value::<Value>()? {
                        Value::Null => None,
                        Value::Number(n) => Some(
                            n.as_i64()
                                .or_else(|| {
                                    n.as_f64()
                                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                                        .map(|f| f as i64)
                                })
                                .ok_or_else(give_up)?,
                        ),
                        _ => return Err(give_up()),
                    }
                }
                "datetime" => {
                    a.datetime = match map.next_value::<Text<'de>>()?.0 {
                        None => None,
                        Some(s) => Some(records::parse_time(&s).ok_or_else(give_up)?),
                    }
                }
                "event_properties" => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    a.event_properties = properties(raw).ok_or_else(give_up)?;
                }
                _ => {
                    let value = map.next_value::<Value>()?;
                    a.extra.insert(key.into_owned(), value);
                }
            }
        }
        Ok(a)
    }
}

/// `event_properties` as its text `raw`: `Some(None)` for null; for an object, its
/// `value` column (`$value` by [`records::event_value`]'s rules) once the whole text has
/// been read as a `Value` reads it; `None` (give up on the typed path) for anything else,
/// or text a `Value` could not hold.
fn properties(raw: &RawValue) -> Option<Option<(&RawValue, Value)>> {
    match raw.get().as_bytes().first() {
        Some(b'n') => Some(None),
        Some(b'{') => {
            let mut text = serde_json::Deserializer::from_str(raw.get());
            let value = text.deserialize_map(PropertiesVisitor).ok()?;
            Some(Some((raw, value)))
        }
        _ => None,
    }
}

/// A string attribute as its text `raw`: `Some(None)` for null; a string without escapes
/// as its JSON text (the body's UTF-8 was checked, and serde_json refuses control
/// characters in strings, so the text is the string's JSON as written), one with escapes
/// decoded; `None` (give up on the typed path) for anything else, or an escape a `String`
/// cannot hold (a lone surrogate).
fn text(raw: &RawValue) -> Option<Option<Slot<'_>>> {
    let json = raw.get();
    match json.as_bytes().first() {
        Some(b'n') => Some(None),
        Some(b'"') if !json.contains('\\') => Some(Some(Slot::JsonText(raw))),
        Some(b'"') => serde_json::from_str::<String>(json)
            .ok()
            .map(|s| Some(Slot::Text(s))),
        _ => None,
    }
}

/// An object attribute kept as its text `raw` (a profile's `location`, `properties`):
/// `Some(None)` for null; `Some(Some(raw))` for an object a `Value` can hold, nested at most
/// [`MAX_PROPERTIES_DEPTH`] levels ([`holds_as_value`]); `None` (give up on the typed path)
/// for anything else.
fn object(raw: &RawValue) -> Option<Option<&RawValue>> {
    match raw.get().as_bytes().first() {
        Some(b'n') => Some(None),
        Some(b'{') => holds_as_value(raw.get(), MAX_PROPERTIES_DEPTH).then_some(Some(raw)),
        _ => None,
    }
}

/// Whether `text` — one JSON value serde_json has already read as a `RawValue`, so of valid
/// syntax, UTF-8, without control characters in strings — also reads as a `Value` nested at
/// most `max_depth` levels: what a `RawValue` read leaves unchecked is the meaning of escapes
/// (a lone surrogate) and of numbers (one out of range), and the depth.
///
/// The same answer as walking the text with [`Checked`], in a fraction of the instructions
/// (issue 15): strings without a backslash need no check and the others are checked by the
/// loader's own rule for raw cells
/// ([`check_escapes`](sluice_contracts::raw_rows::check_escapes)); numbers without an
/// exponent, up to 20 characters, need no check, and serde_json itself reads the others.
fn holds_as_value(text: &str, max_depth: u32) -> bool {
    let bytes = text.as_bytes();
    let (mut i, mut depth) = (0, 0u32);
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                let start = i;
                let mut escaped = false;
                i += 1;
                loop {
                    let Some(at) = memchr::memchr2(b'"', b'\\', &bytes[i..]) else {
                        return false;
                    };
                    i += at;
                    if bytes[i] == b'"' {
                        i += 1;
                        break;
                    }
                    // The escaped byte is skipped: `\"` does not end the string.
                    escaped = true;
                    i += 2;
                }
                if escaped && sluice_contracts::raw_rows::check_escapes(&text[start..i]).is_err() {
                    return false;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return false;
                }
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while bytes
                    .get(i)
                    .is_some_and(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    i += 1;
                }
                let number = &text[start..i];
                if (number.len() > 20 || number.contains(['e', 'E']))
                    && serde_json::from_str::<serde_json::Number>(number).is_err()
                {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
}

/// How deep `event_properties` may nest (the object itself is level 1) for the typed path.
/// A `Value` read of the page stops at serde_json's limit of 127 levels from the document's
/// root, which leaves `event_properties` 123; deeper text is left to the generic path,
/// which fails or reads it exactly as before.
const MAX_PROPERTIES_DEPTH: u32 = 100;

/// Reads an `event_properties` object, checking every member ([`Checked`]) and returning
/// its `value` column: the last `$value` member wins, as in a parsed object.
struct PropertiesVisitor;

impl<'de> Visitor<'de> for PropertiesVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event_properties object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut value = Value::Null;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if &*key == "$value" {
                value = map.next_value_seed(DollarValue)?;
            } else {
                map.next_value_seed(Checked(MAX_PROPERTIES_DEPTH - 1))?;
            }
        }
        Ok(value)
    }
}

/// `$value` → the `value` column: a finite number, or a string holding one, else null
/// ([`records::event_value`]).
struct DollarValue;

impl<'de> DeserializeSeed<'de> for DollarValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DollarValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON")
    }
    // Numbers become `f64`s as `serde_json::Number::as_f64` makes them.
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(records::event_value_of_number(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(records::event_value_of_number(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(records::event_value_of_number(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(records::event_value_of_text(v))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        Checked(MAX_PROPERTIES_DEPTH - 1).visit_seq(seq)?;
        Ok(Value::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        Checked(MAX_PROPERTIES_DEPTH - 1).visit_map(map)?;
        Ok(Value::Null)
    }
}

/// Reads any JSON as a `Value` would — strings decoded (a lone surrogate escape is an
/// error), numbers parsed (one out of range is an error) — building nothing; `.0` is how
/// many more levels of arrays and objects it may open before giving up.
#[derive(Clone, Copy)]
struct Checked(u32);

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON")
    }
    skipped!('de, (); bool, i64, u64, f64, str, unit);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.0.checked_sub(1).ok_or_else(give_up)?;
        while seq.next_element_seed(Checked(inner))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.0.checked_sub(1).ok_or_else(give_up)?;
        while map.next_key_seed(Checked(inner))?.is_some() {
            map.next_value_seed(Checked(inner))?;
        }
        Ok(())
    }
}

/// `relationships`, as `records::event_owned` reads them: the string ids of
/// `metric.data.id` and `profile.data.id`, and the non-null `data` of every other
/// relationship (each relationship's `links` skipped). Anything that is not an object
/// reads as no relationships.
#[derive(Default)]
struct Relationships<'a> {
    metric: Option<Cow<'a, str>>,
    profile: Option<Cow<'a, str>>,
    other: Map<String, Value>,
}

impl<'de> serde::Deserialize<'de> for Relationships<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RelationshipsVisitor { typed: true })
    }
}

/// Reads `relationships`; with `typed`, `metric` and `profile` are read as ids (an event's),
/// else every relationship goes to `other` (a profile's, which has no typed relationship).
#[derive(Clone, Copy)]
struct RelationshipsVisitor {
    typed: bool,
}

impl<'de> DeserializeSeed<'de> for RelationshipsVisitor {
    type Value = Relationships<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RelationshipsVisitor {
    type Value = Relationships<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a relationships object")
    }
    skipped!('de, Relationships::default(); bool, i64, u64, f64, str, unit, seq);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut rels = Relationships::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key {
                "metric" if self.typed => rels.metric = map.next_value_seed(RelationshipId)?,
                "profile" if self.typed => rels.profile = map.next_value_seed(RelationshipId)?,
                _ => {
                    if let Some(data) = map.next_value_seed(RelationshipData)?
                        && !data.is_null()
                    {
                        rels.other.insert(key.into_owned(), data);
                    } else {
                        // A later copy of the key that has no data removes an earlier one,
                        // as the last member wins in a parsed object.
                        rels.other.remove(&*key);
                    }
                }
            }
        }
        Ok(rels)
    }
}

/// A relationship object → `data.id` when `data` is an object with a string `id`.
struct RelationshipId;

impl<'de> DeserializeSeed<'de> for RelationshipId {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(MemberOf {
            member: "data",
            then: DataId,
        })
        .map(Option::flatten)
    }
}

/// A relationship object → its `data` member as JSON (links skipped).
struct RelationshipData;

impl<'de> DeserializeSeed<'de> for RelationshipData {
    type Value = Option<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(MemberOf {
            member: "data",
            then: PhantomValue,
        })
    }
}

/// Reads a `Value` (a seed for [`MemberOf`]).
#[derive(Clone, Copy)]
struct PhantomValue;

impl<'de> DeserializeSeed<'de> for PhantomValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// `data` of a relationship → its `id` when an object with a string `id`.
#[derive(Clone, Copy)]
struct DataId;

impl<'de> DeserializeSeed<'de> for DataId {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(MemberOf {
            member: "id",
            then: TextSeed,
        })
        .map(Option::flatten)
    }
}

/// A string member (`None` for other JSON: `records` reads such ids as absent).
#[derive(Clone, Copy)]
struct TextSeed;

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(StrOnly)
    }
}

/// A string, or `None` for any other JSON (read and skipped).
struct StrOnly;

impl<'de> Visitor<'de> for StrOnly {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON")
    }
    strings!('de);
    skipped!('de, None; bool, i64, u64, f64, unit, seq, map);
}

/// Reads one member of an object with the seed `then` (the last copy of a repeated
/// member wins, as in a parsed object); `None` when the JSON is not an object or has no
/// such member.
struct MemberOf<S> {
    member: &'static str,
    then: S,
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for MemberOf<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON")
    }
    skipped!('de, None; bool, i64, u64, f64, str, unit, seq);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if *key == *self.member {
                found = Some(map.next_value_seed(self.then)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// `included`: the profiles among an array of resources (resources of other types, and
/// elements that are not objects, are read and left out); any other JSON holds none, as
/// [`client::decode`](super::client) reads `included`.
#[derive(Default)]
struct Included<'a>(Vec<TypedProfile<'a>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Included<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IncludedVisitor).map(Included)
    }
}

struct IncludedVisitor;

impl<'de> Visitor<'de> for IncludedVisitor {
    type Value = Vec<TypedProfile<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of included resources")
    }
    skipped!('de, Vec::new(); bool, i64, u64, f64, str, unit, map);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut profiles = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        let only = ProfileResource {
            only_profiles: true,
        };
        while let Some(resource) = seq.next_element_seed(only)? {
            profiles.extend(resource);
        }
        Ok(profiles)
    }
}

/// A resource read as a profile. With `only_profiles` (an element of `included`): `None`
/// when it is not an object of `type` `profile`. Without (an element of a profiles page's
/// `data`): every object, whatever its `type`, and anything else gives up.
#[derive(Clone, Copy)]
struct ProfileResource {
    only_profiles: bool,
}

impl<'de> DeserializeSeed<'de> for ProfileResource {
    type Value = Option<TypedProfile<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.only_profiles {
            d.deserialize_any(self)
        } else {
            d.deserialize_map(self)
        }
    }
}

impl<'de> Visitor<'de> for ProfileResource {
    type Value = Option<TypedProfile<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an included resource")
    }
    skipped!('de, None; bool, i64, u64, f64, str, unit, seq);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut is_profile = false;
        let mut profile = TypedProfile::default();
        // The last copy of a repeated member wins, as in a parsed object.
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key {
                "type" => {
                    is_profile = map.next_value_seed(TextSeed)?.as_deref() == Some("profile");
                }
                "id" => profile.id = map.next_value::<Id<'de>>()?.0,
                "attributes" => {
                    profile.attributes = map.next_value::<ProfileAttributesOf<'de>>()?.0
                }
                "relationships" => {
                    profile.relationships = map
                        .next_value_seed(RelationshipsVisitor { typed: false })?
                        .other;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((is_profile || !self.only_profiles).then_some(profile))
    }
}

/// The parts of a profile (included, or of a profiles page) its row needs.
#[derive(Default)]
struct TypedProfile<'a> {
    /// `id` as [`Id`] reads it: `None` when absent or unusable (the generic path rejects it).
    id: Option<Cow<'a, str>>,
    /// `attributes`: `None` when absent or null.
    attributes: Option<ProfileAttributes<'a>>,
    /// The non-null data of every relationship, for `extra.relationships`.
    relationships: Map<String, Value>,
}

/// A profile's attributes: those of [`PROFILE_FIELDS`] by position (`None` when absent or
/// null), the others for `extra`.
#[derive(Default)]
struct ProfileAttributes<'a> {
    fields: [Option<Slot<'a>>; PROFILE_FIELDS.len()],
    extra: Map<String, Value>,
}

/// A typed attribute of a profile as read.
enum Slot<'a> {
    /// [`Field::Text`] that had escapes, decoded.
    Text(String),
    /// [`Field::Text`] without escapes, as its JSON text (quotes included): written into
    /// the `RecordBatch` as it is, where a decoded string would be escaped again.
    JsonText(&'a RawValue),
    /// [`Field::Time`], parsed.
    Time(DateTime<Utc>),
    /// [`Field::Object`], as its checked text.
    Object(&'a RawValue),
}

impl TypedProfile<'_> {
    /// The row, as [`records::profile_owned`] builds it; `None` for what it would refuse.
    fn into_row(self) -> Option<TimedRow> {
        let id = self.id?;
        let attrs = self.attributes.unwrap_or_default();
        let mut row = Vec::with_capacity(PROFILE_FIELDS.len() + 2);
        row.push(Cell::Json(Value::String(id.into_owned())));
        let mut updated = None;
        for (i, slot) in attrs.fields.into_iter().enumerate() {
            row.push(match slot {
                None => Cell::Json(Value::Null),
                Some(Slot::Text(s)) => Cell::Json(Value::String(s)),
                Some(Slot::JsonText(raw)) => Cell::Raw(RawJson::checked(raw)),
                Some(Slot::Time(t)) => {
                    if i == PROFILE_UPDATED {
                        updated = Some(t);
                    }
                    Cell::Json(Value::String(windows::cursor(t)))
                }
                Some(Slot::Object(raw)) => Cell::Raw(RawJson::checked(raw)),
            });
        }
        let mut extra = attrs.extra;
        if !self.relationships.is_empty() {
            extra.insert("relationships".into(), Value::Object(self.relationships));
        }
        row.push(Cell::Json(Value::Object(extra)));
        Some((row, updated))
    }
}

/// A profile's `attributes`: `None` when null; an object read field by field; else give up.
struct ProfileAttributesOf<'a>(Option<ProfileAttributes<'a>>);

impl<'de> serde::Deserialize<'de> for ProfileAttributesOf<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectOrNull(ProfileAttributesVisitor))
            .map(ProfileAttributesOf)
    }
}

struct ProfileAttributesVisitor;

impl<'de> Visitor<'de> for ProfileAttributesVisitor {
    type Value = ProfileAttributes<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a profile's attributes")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut a = ProfileAttributes::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let Some(i) = PROFILE_FIELDS.iter().position(|(name, _)| *name == &*key) else {
                let value = map.next_value::<Value>()?;
                a.extra.insert(key.into_owned(), value);
                continue;
            };
            a.fields[i] = match PROFILE_FIELDS[i].1 {
                Field::Text => text(map.next_value::<&'de RawValue>()?).ok_or_else(give_up)?,
                Field::Time => match map.next_value::<Text<'de>>()?.0 {
                    None => None,
                    Some(s) => Some(Slot::Time(records::parse_time(&s).ok_or_else(give_up)?)),
                },
                Field::Object => object(map.next_value::<&'de RawValue>()?)
                    .ok_or_else(give_up)?
                    .map(Slot::Object),
            };
        }
        Ok(a)
    }
}

/// An object member's name or a link, borrowed from the body unless it has escapes (serde's
/// own `Cow<str>` always allocates).
struct Key<'a>(Cow<'a, str>);

impl Key<'_> {
    fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

impl std::ops::Deref for Key<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor)?
            .map(Key)
            .ok_or_else(|| de::Error::custom("expected a string"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A well-formed event in Klaviyo's shape (`GET /api/events`, `links` included).
    fn event() -> Value {
        json!({
            "type": "event",
            "id": "4vRpBT3F2cz",
            "attributes": {
                "timestamp": 1_704_067_200,
                "event_properties": {"$value": 12.5, "Items": [{"Sku": "A"}], "$extra": {"x": null}},
                "datetime": "2024-01-01T00:00:00+00:00",
                "uuid": "8b0f7c00-8bf6-11ee-8001-2b1a2a5f2e11",
                "something_new": [1, 2]
            },
            "relationships": {
                "profile": {"data": {"type": "profile", "id": "01HPROFILE"}, "links": {"self": "x"}},
                "metric": {"data": {"type": "metric", "id": "Y6Hmxn"}, "links": {"self": "y"}},
                "attributions": {"data": [{"type": "attribution", "id": "a1"}], "links": {"self": "z"}}
            },
            "links": {"self": "https://a.klaviyo.com/api/events/4vRpBT3F2cz/"}
        })
    }

    fn body(data: &Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "data": data,
            "links": {"self": "s", "next": "https://a.klaviyo.com/api/events/?page%5Bcursor%5D=bmV4dA", "prev": null}
        }))
        .unwrap()
    }

    fn same(a: &EventsPage, b: &EventsPage) {
        assert_eq!(a.data, b.data);
        assert_eq!(a.included, b.included);
        assert_eq!(a.next, b.next);
    }

    /// Variants of the event, each changed at one place: `(what, the event)`.
    fn variants() -> Vec<(String, Value)> {
        let mut out = vec![("as is".to_string(), event())];
        let mut set = |what: &str, path: &[&str], value: Value| {
            let mut e = event();
            let mut at = &mut e;
            for p in &path[..path.len() - 1] {
                at = at.get_mut(*p).unwrap();
            }
            let last = path[path.len() - 1];
            if value == json!("<remove>") {
                at.as_object_mut().unwrap().remove(last);
            } else {
                at[last] = value;
            }
            out.push((format!("{what} {}", path.join(".")), e));
        };
        let odd = [
            json!(null),
            json!(""),
            json!(7),
            json!(-3.5),
            json!(true),
            json!([1]),
            json!({"a": 1}),
            json!("not a time"),
            json!("2024-01-02 03:04:05.123"),
            json!("é\"quoted\"\u{1}"),
            json!(1.7e9),
            json!(1e300),
            json!("<remove>"),
        ];
        for v in &odd {
            for path in [
                &["id"][..],
                &["attributes"],
                &["attributes", "timestamp"],
                &["attributes", "datetime"],
                &["attributes", "uuid"],
                &["attributes", "metric_id"],
                &["attributes", "profile_id"],
                &["attributes", "event_properties"],
                &["attributes", "event_properties", "$value"],
                &["attributes", "something_new"],
                &["attributes", "relationships"],
                &["relationships"],
                &["relationships", "metric"],
                &["relationships", "metric", "data"],
                &["relationships", "metric", "data", "id"],
                &["relationships", "profile", "data", "id"],
                &["relationships", "attributions"],
                &["relationships", "attributions", "data"],
                &["type"],
                &["links"],
            ] {
                set(&format!("{v}"), path, v.clone());
            }
        }
        out
    }

    #[test]
    fn typed_rows_and_rejects_equal_the_generic_path_for_every_variant() {
        let mut typed_taken = 0;
        for (what, e) in variants() {
            for partition in [None, Some("PARTITION")] {
                let b = body(&json!([e.clone()]));
                let generic = generic(&b, partition).unwrap();
                let decoded = decode(&b, partition).unwrap();
                same(&decoded, &generic);
                // Whatever the generic path turns into a row, the typed path must read
                // without giving up: only malformed events take the slow path.
                match typed(&b, partition) {
                    Some(t) => {
                        same(&t, &generic);
                        typed_taken += 1;
                    }
                    None => assert!(
                        generic.data.iter().any(Result::is_err),
                        "{what}: a well-formed event fell back to the generic path"
                    ),
                }
                let single = decode(&serde_json::to_vec(&json!({"data": e})).unwrap(), partition);
                let single_generic = generic_single(&e, partition);
                assert_eq!(
                    single.unwrap().data,
                    single_generic,
                    "{what}: as lone `data`"
                );
            }
        }
        assert!(
            typed_taken > 100,
            "the typed path read only {typed_taken} variants"
        );
    }

    /// A well-formed profile as `include=profile` brings it (`links` included).
    fn profile() -> Value {
        json!({
            "type": "profile",
            "id": "01HPROFILE",
            "attributes": {
                "email": "ann@example.com", "phone_number": "+15005550006", "external_id": null,
                "anonymous_id": null, "first_name": "Ann", "last_name": "Lee",
                "organization": "Acme", "locale": "en-US", "title": "CTO",
                "image": "https://images.example.com/avatars/1.jpg",
                "created": "2023-01-01T00:00:00+00:00", "updated": "2024-01-01 01:02:03.5",
                "last_event_date": "2024-01-01T00:00:00+00:00",
                "location": {"city": "Boston", "latitude": "42.3601", "address2": null},
                "properties": {"loyalty_tier": "gold", "lifetime_orders": 12, "vip": false}
            },
            "relationships": {
                "lists": {"links": {"self": "l", "related": "r"}},
                "segments": {"data": [{"type": "segment", "id": "S1"}], "links": {"self": "s"}}
            },
            "links": {"self": "https://a.klaviyo.com/api/profiles/01HPROFILE/"}
        })
    }

    /// Variants of the profile, each changed at one place: `(what, the profile)`.
    fn profile_variants() -> Vec<(String, Value)> {
        let mut out = vec![("as is".to_string(), profile())];
        let odd = [
            json!(null),
            json!(""),
            json!(7),
            json!(-3.5),
            json!(true),
            json!([1]),
            json!({"a": 1}),
            json!("not a time"),
            json!("2024-01-02 03:04:05.123"),
            json!("é\"quoted\"\u{1}"),
            json!("<remove>"),
        ];
        for v in &odd {
            for path in [
                &["id"][..],
                &["type"],
                &["attributes"],
                &["attributes", "email"],
                &["attributes", "external_id"],
                &["attributes", "created"],
                &["attributes", "updated"],
                &["attributes", "location"],
                &["attributes", "location", "city"],
                &["attributes", "properties"],
                &["attributes", "properties", "vip"],
                &["attributes", "anonymous_id"],
                &["attributes", "relationships"],
                &["relationships"],
                &["relationships", "lists"],
                &["relationships", "segments", "data"],
                &["links"],
            ] {
                let mut p = profile();
                let mut at = &mut p;
                for step in &path[..path.len() - 1] {
                    at = at.get_mut(*step).unwrap();
                }
                let last = path[path.len() - 1];
                if *v == json!("<remove>") {
                    at.as_object_mut().unwrap().remove(last);
                } else {
                    at[last] = v.clone();
                }
                out.push((format!("{v} {}", path.join(".")), p));
            }
        }
        out
    }

    /// Checks that the page `decode` gave and the typed read's (when it took the page) equal
    /// the generic read's, and that the typed read gave up only on a page with a reject.
    /// Whether the typed read took the page.
    fn as_generic(
        what: &str,
        decoded: EventsPage,
        typed: Option<EventsPage>,
        generic: &EventsPage,
    ) -> bool {
        same(&decoded, generic);
        let Some(typed) = typed else {
            assert!(
                generic
                    .data
                    .iter()
                    .chain(&generic.included)
                    .any(Result::is_err),
                "{what}: a well-formed resource fell back to the generic path"
            );
            return false;
        };
        same(&typed, generic);
        true
    }

    #[test]
    fn typed_profile_rows_and_rejects_equal_the_generic_path_for_every_variant() {
        let mut typed_taken = 0;
        let mut second = profile();
        second["id"] = json!("02SECOND");
        for (what, p) in profile_variants() {
            let included = json!([p.clone(), {"type": "metric", "id": "M", "attributes": {"name": "x"}}, second]);
            let b = serde_json::to_vec(&json!({"data": [event()], "included": included})).unwrap();
            let generic = generic(&b, None).unwrap();
            let decoded = decode(&b, None).unwrap();
            typed_taken += usize::from(as_generic(&what, decoded, typed(&b, None), &generic));
        }
        assert!(
            typed_taken > 100,
            "the typed path read only {typed_taken} variants"
        );
    }

    #[test]
    fn profiles_pages_read_typed_equal_the_generic_path_for_every_variant() {
        let mut typed_taken = 0;
        let mut second = profile();
        second["id"] = json!("02SECOND");
        for (what, p) in profile_variants() {
            for data in [json!([p.clone(), second.clone()]), p.clone()] {
                let b = body(&data);
                let generic = generic_profiles(&b).unwrap();
                let decoded = decode_profiles(&b).unwrap();
                let typed = typed_profiles(&b);
                typed_taken += usize::from(as_generic(&what, decoded, typed, &generic));
            }
        }
        assert!(
            typed_taken > 200,
            "the typed path read only {typed_taken} pages"
        );
        // Elements that are not objects are rejected by the generic path; bodies that are
        // not documents are refused as the generic decode refuses them.
        let page = decode_profiles(br#"{"data": [5, {"id": "P"}]}"#).unwrap();
        assert!(page.data[0].is_err() && page.data[1].is_ok());
        for text in [&b"not json"[..], br#"{"data": 5}"#] {
            assert_eq!(
                decode_profiles(text).err(),
                super::super::client::decode(text).err()
            );
        }
        assert!(
            decode_profiles(br#"{"data": null}"#)
                .unwrap()
                .data
                .is_empty()
        );
    }

    /// What [`object`] answered before [`holds_as_value`]: a walk of the text with
    /// [`Checked`].
    fn checked_walk(text: &str) -> bool {
        let mut de = serde_json::Deserializer::from_str(text);
        de.deserialize_map(Checked(MAX_PROPERTIES_DEPTH)).is_ok()
    }

    #[test]
    fn the_object_scanner_answers_as_the_checking_walk_does() {
        let nest = |levels: usize, inner: &str| {
            format!(
                r#"{{"d": {}{inner}{}}}"#,
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        let mut cases: Vec<String> = [
            r#"{}"#,
            r#"{"a": 1, "b": [true, false, null, {"c": "x"}], "e": -0.5}"#,
            r#"{"s": "\ud800"}"#,
            r#"{"s": "\udc00"}"#,
            r#"{"s": "\ud800\u0041"}"#,
            r#"{"s": "\ud800\n"}"#,
            r#"{"s": "\ud800x"}"#,
            r#"{"s": "\ud83d\ude00", "t": "\u00e9\"\\"}"#,
            r#"{"\ud800": 1}"#,
            r#"{"a\"b": "c\\", "\\": "\"\ud800"}"#,
            r#"{"q": "\\\"", "r": "\/\b\f\n\r\t"}"#,
            r#"{"nul": "a\u0000b"}"#,
            r#"{"n": 1e400}"#,
            r#"{"n": -1e400}"#,
            r#"{"n": 1e308}"#,
            r#"{"n": 1.7976931348623157e308}"#,
            r#"{"n": 1.7976931348623159e308}"#,
            r#"{"n": 2e-400}"#,
            r#"{"n": 1E3, "m": 1e+3, "o": 1e-3}"#,
            r#"{"n": 18446744073709551616}"#,
            r#"{"n": -9223372036854775809}"#,
            r#"{"n": 123456789012345678901234567890.5}"#,
            r#"{"é": "ü", "k": "日本"}"#,
        ]
        .iter()
        .map(|c| c.to_string())
        .collect();
        cases.push(format!(r#"{{"n": 1{}}}"#, "0".repeat(308)));
        cases.push(format!(r#"{{"n": 1{}}}"#, "0".repeat(309)));
        cases.push(format!(r#"{{"n": 0.{}1}}"#, "0".repeat(400)));
        for levels in [1, 2, 98, 99, 100, 101, 102, 120] {
            for inner in ["1", "{}", r#""\ud800""#, "1e999"] {
                cases.push(nest(levels, inner));
            }
        }
        for (_, p) in profile_variants() {
            cases.push(p.to_string());
            cases.push(p["attributes"].to_string());
        }
        let mut accepted = 0;
        for text in &cases {
            // Only objects serde_json reads as a `RawValue` reach the scanner.
            if !text.starts_with('{') || serde_json::from_str::<&RawValue>(text).is_err() {
                continue;
            }
            let expected = checked_walk(text);
            assert_eq!(
                holds_as_value(text, MAX_PROPERTIES_DEPTH),
                expected,
                "{text}"
            );
            accepted += usize::from(expected);
        }
        assert!(
            accepted > 100 && accepted < cases.len(),
            "{accepted} of {}",
            cases.len()
        );
    }

    #[test]
    fn included_profiles_become_rows_with_location_and_properties_passed_through() {
        let location = r#"{"city" : "Boston", "zip": "02110"}"#;
        let properties = r#"{ "k": [1.50, "\u00e9"], "vip": true }"#;
        let text = format!(
            r#"{{"data": [], "included": [
                {{"type": "profile", "id": "P", "attributes": {{"email": "a@b.c",
                  "updated": "2024-01-01T01:00:00+01:00", "location": {location},
                  "properties": {properties}, "new": 2}},
                  "relationships": {{"lists": {{"data": [{{"type": "list", "id": "L"}}]}}}}}},
                {{"type": "list", "id": "L"}}, 5, null]}}"#
        );
        let page = typed(text.as_bytes(), None).unwrap();
        assert_eq!(page.included.len(), 1, "only the profile is kept");
        let (row, updated) = page.included[0].as_ref().unwrap();
        assert_eq!(row.len(), 16);
        assert_eq!(row[1], json!("a@b.c"));
        assert_eq!(row[11], json!("2024-01-01T00:00:00.000000Z"));
        assert_eq!(
            updated.map(windows::cursor).as_deref(),
            Some("2024-01-01T00:00:00.000000Z")
        );
        for (cell, text) in [(&row[13], location), (&row[14], properties)] {
            match cell {
                Cell::Raw(raw) => assert_eq!(raw.get(), text),
                other => panic!("built as {other:?}"),
            }
        }
        assert_eq!(
            row[15],
            json!({"new": 2, "relationships": {"lists": [{"type": "list", "id": "L"}]}})
        );
        same(&page, &generic(text.as_bytes(), None).unwrap());
        // `included` that is not an array holds nothing, on both paths.
        for included in ["null", "{}", r#"{"type": "profile", "id": "P"}"#, "5"] {
            let text = format!(r#"{{"data": [], "included": {included}}}"#);
            let page = typed(text.as_bytes(), None).unwrap();
            assert!(page.included.is_empty(), "{included}");
            same(&page, &generic(text.as_bytes(), None).unwrap());
        }
    }

    #[test]
    fn a_malformed_included_profile_is_rejected_whole_and_the_rest_load() {
        let mut bad = profile();
        bad["attributes"]["updated"] = json!("last week");
        let b =
            serde_json::to_vec(&json!({"data": [event()], "included": [bad, profile()]})).unwrap();
        assert!(typed(&b, None).is_none());
        let page = decode(&b, None).unwrap();
        assert!(page.data[0].is_ok() && page.included[1].is_ok());
        let (error, raw) = page.included[0].as_ref().unwrap_err();
        assert!(error.contains("attributes.updated"), "{error}");
        assert_eq!(raw["attributes"]["updated"], json!("last week"));
        // Objects a `Value` cannot hold, or nested past the typed bound, leave the typed path.
        for location in [r#"{"s": "\ud800"}"#, r#"{"n": 1e400}"#] {
            let text = format!(
                r#"{{"data": [], "included": [{{"type": "profile", "id": "P",
                    "attributes": {{"location": {location}}}}}]}}"#
            );
            assert!(typed(text.as_bytes(), None).is_none(), "{location}");
            assert_eq!(
                outcome(decode(text.as_bytes(), None)),
                outcome(generic(text.as_bytes(), None))
            );
        }
    }

    fn generic_single(e: &Value, partition: Option<&str>) -> Vec<Converted> {
        generic(&serde_json::to_vec(&json!({"data": e})).unwrap(), partition)
            .unwrap()
            .data
    }

    #[test]
    fn one_malformed_event_leaves_the_others_rows_and_is_rejected_whole() {
        let mut bad = event();
        bad["attributes"]["datetime"] = json!("yesterday");
        let mut second = event();
        second["id"] = json!("second");
        let b = body(&json!([event(), bad, second]));
        let page = decode(&b, None).unwrap();
        assert_eq!(page.data.len(), 3);
        assert!(page.data[0].is_ok() && page.data[2].is_ok());
        let (error, raw) = page.data[1].as_ref().unwrap_err();
        assert!(error.contains("attributes.datetime"), "{error}");
        assert_eq!(raw["attributes"]["datetime"], json!("yesterday"));
        assert!(raw.get("links").is_none(), "links are not kept in rejects");
        same(&page, &generic(&b, None).unwrap());
    }

    #[test]
    fn escaped_keys_duplicates_and_included_profiles_read_as_parsed_json_does() {
        // Escaped member names, a repeated member (the last wins), an `included` profile
        // and a document without `links`.
        let text = br#"{"data":[{"type":"event","i\u0064":"x1","id":"x2",
            "attributes":{"uuid":"u1","uuid":null,"datetime":"2024-01-01T00:00:00Z",
              "event_properties":{"$value":"  3.25 "},"\u0061":1},
            "relationships":{"other":{"data":{"id":"o"}},"other":{"data":null},
              "metric":{"data":{"id":"m1"}}}}],
            "included":[{"type":"profile","id":"p","attributes":{},"links":{"self":"l"}}]}"#;
        let typed_page = typed(text, None).unwrap();
        same(&typed_page, &generic(text, None).unwrap());
        let (row, _) = typed_page.data[0].as_ref().unwrap();
        assert_eq!(row[0], json!("x2"));
        assert_eq!(row[1], json!("m1"));
        assert_eq!(row[5], json!(null));
        assert_eq!(row[6], json!(3.25));
        assert_eq!(row[8], json!({"a": 1}));
        let (profile, updated) = typed_page.included[0].as_ref().unwrap();
        assert_eq!(typed_page.included.len(), 1);
        assert_eq!(profile[0], json!("p"));
        assert!(profile[1..15].iter().all(|c| *c == Value::Null));
        assert_eq!(profile[15], json!({}));
        assert_eq!(*updated, None);
        assert_eq!(typed_page.next, None);
    }

    /// An events body whose one event has `event_properties` given as raw text.
    fn body_with_properties(properties: &str) -> Vec<u8> {
        let text = body(&json!([event()])).into_iter().collect::<Vec<u8>>();
        let text = String::from_utf8(text).unwrap();
        let at = text.find(r#""event_properties":"#).unwrap() + r#""event_properties":"#.len();
        let end = at
            + serde_json::to_string(&event()["attributes"]["event_properties"])
                .unwrap()
                .len();
        format!("{}{properties}{}", &text[..at], &text[end..]).into_bytes()
    }

    /// A page's events, `included` and next link.
    type Parts = (Vec<Converted>, Vec<Converted>, Option<String>);

    /// `decode`'s outcome as comparable data.
    fn outcome(page: Result<EventsPage, String>) -> Result<Parts, String> {
        page.map(|p| (p.data, p.included, p.next))
    }

    #[test]
    fn event_properties_pass_through_as_the_text_they_arrived_as() {
        let properties =
            r#"{ "z": [1.50, 2e3, "\u00e9\"", null], "$value" : "  9.75", "a": {"b": {}} }"#;
        let b = body_with_properties(properties);
        let page = typed(&b, None).unwrap();
        let (row, _) = page.data[0].as_ref().unwrap();
        match &row[7] {
            Cell::Raw(raw) => assert_eq!(raw.get(), properties),
            other => panic!("event_properties built as {other:?}"),
        }
        assert_eq!(row[6], json!(9.75));
        assert_eq!(
            row[7],
            json!({"a": {"b": {}}, "$value": "  9.75", "z": [1.5, 2000.0, "é\"", null]})
        );
        same(&page, &generic(&b, None).unwrap());
    }

    #[test]
    fn the_value_column_reads_dollar_value_as_the_generic_path_does() {
        let values = [
            "12.5",
            "0",
            "-0",
            "-0.0",
            "7",
            "-3",
            "1e3",
            "1E-2",
            "1.7976931348623157e308",
            "18446744073709551615",
            "-9223372036854775808",
            "123456789012345678901234567890",
            r#""12.5""#,
            r#"" 7 ""#,
            r#""1e3""#,
            r#""+5""#,
            r#""-0""#,
            r#""inf""#,
            r#""-infinity""#,
            r#""NaN""#,
            r#""1e309""#,
            r#""0x10""#,
            r#""""#,
            r#""abc""#,
            r#""\u0031\u0032""#,
            r#""\t3\n""#,
            "true",
            "false",
            "null",
            "[1]",
            r#"{"$value": 1}"#,
        ];
        let mut shapes: Vec<String> = values
            .iter()
            .map(|v| format!(r#"{{"$value": {v}}}"#))
            .collect();
        shapes.extend([
            r#"{}"#.to_string(),
            r#"{"x": {"$value": 5}}"#.to_string(),
            r#"{"$value": 1, "$value": "2"}"#.to_string(),
            r#"{"$value": 1, "$value": [2]}"#.to_string(),
            r#"{"\u0024value": 3}"#.to_string(),
            r#"{"$value ": 3, "$Value": 4}"#.to_string(),
        ]);
        for properties in &shapes {
            for partition in [None, Some("P")] {
                let b = body_with_properties(properties);
                let typed_page = typed(&b, partition)
                    .unwrap_or_else(|| panic!("{properties}: fell back to the generic path"));
                let generic_page = generic(&b, partition).unwrap();
                same(&typed_page, &generic_page);
                let (row, _) = typed_page.data[0].as_ref().unwrap();
                let (generic_row, _) = generic_page.data[0].as_ref().unwrap();
                assert_eq!(row[6], generic_row[6], "{properties}");
                assert!(matches!(row[7], Cell::Raw(_)), "{properties}");
            }
        }
    }

    #[test]
    fn properties_a_value_cannot_hold_fail_or_read_as_they_did() {
        let deep = |levels: usize| {
            format!(
                r#"{{"d": {}1{}}}"#,
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        let mut cases = vec![
            r#"{"s": "\ud800"}"#.to_string(),
            r#"{"s": ["x\udc00y"]}"#.to_string(),
            r#"{"\ud800": 1}"#.to_string(),
            r#"{"$value": "\ud800"}"#.to_string(),
            r#"{"n": 1e400}"#.to_string(),
            r#"{"$value": -1e400}"#.to_string(),
            r#"{"ok": "\ud83d\ude00"}"#.to_string(),
            r#"{"nul": "a\u0000b"}"#.to_string(),
        ];
        for levels in [2, 99, 100, 101, 122, 123, 124, 125, 140] {
            cases.push(deep(levels));
        }
        for properties in &cases {
            let b = body_with_properties(properties);
            let generic_outcome = outcome(generic(&b, None));
            assert_eq!(outcome(decode(&b, None)), generic_outcome, "{properties}");
            if let Some(page) = typed(&b, None) {
                // What the typed path passes through must read as a `Value` reads it.
                assert!(generic_outcome.is_ok(), "{properties}");
                let (row, _) = page.data[0].as_ref().unwrap();
                let Cell::Raw(raw) = &row[7] else {
                    panic!("{properties}: not raw")
                };
                serde_json::from_str::<Value>(raw.get()).unwrap();
            }
        }
        // The typed path passes on only what a `Value` holds, within its own depth bound.
        for bad in &cases[..6] {
            assert!(typed(&body_with_properties(bad), None).is_none(), "{bad}");
            assert!(generic(&body_with_properties(bad), None).is_err(), "{bad}");
        }
        assert!(typed(&body_with_properties(&deep(100)), None).is_some());
        assert!(typed(&body_with_properties(&deep(101)), None).is_none());
        assert!(generic(&body_with_properties(&deep(101)), None).is_ok());
        // A NUL stays in the text as the escape it arrived as (the loader refuses it for
        // jsonb, as it refused the `Value`).
        let page = typed(&body_with_properties(&cases[7]), None).unwrap();
        let (row, _) = page.data[0].as_ref().unwrap();
        assert_eq!(row[7], json!({"nul": "a\u{0}b"}));
    }

    #[test]
    fn bodies_that_are_not_documents_are_refused_as_the_generic_decode_refuses_them() {
        for text in [&b"not json"[..], br#"{"data": 5}"#, br#"{"data": "x"}"#] {
            assert_eq!(
                decode(text, None).err(),
                super::super::client::decode(text).err()
            );
            assert!(decode(text, None).is_err());
        }
        assert!(decode(br#"{"data": null}"#, None).unwrap().data.is_empty());
    }
}
