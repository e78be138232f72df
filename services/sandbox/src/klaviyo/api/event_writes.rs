//! Event writes: `POST /api/events` and `POST /api/event-bulk-create-jobs`, both 202 with no
//! body. An event creates or updates its profile (as `POST /api/profile-import` would) and
//! its metric (by name: a generated metric of the `API` integration with that name, else one
//! created on first use, integration `API`). A repeat of an event is dropped: the same
//! profile, metric and `unique_id`, or without `unique_id` the same profile, metric and time
//! to the second. The event reads back through `GET /api/events` with `event_properties` =
//! `properties` plus `$value` (`value`), `$value_currency` and `$event_id` (`unique_id`) when
//! given. Bulk create jobs are written at once (Klaviyo gives no job to poll).
//!
//! Refused (400, `source.pointer`): a `time` before 1990 or more than a year ahead, more than
//! 400 properties, a bulk job of more than 1,000 events, and what the profile writes refuse.

use super::super::written::{EventRef, WrittenMetric};
use super::profile_writes::{check_profile, write_profile};
use super::writes::{Reply, WriteCx, invalid_at};
use super::*;

/// Events per bulk create job at most.
const MAX_BULK_EVENTS: usize = 1_000;
/// Properties per event at most.
const MAX_PROPERTIES: usize = 400;
/// 1990-01-01T00:00:00Z.
const EARLIEST: i64 = 631_152_000;

/// The metric named `name` (created when new) for events written at `now`.
fn metric_for(d: &Dataset, ov: &mut Overlay, name: &str, now: i64) -> usize {
    if let Some(&m) = ov.written.metric_names.get(name) {
        return m;
    }
    let generated = (0..d.metrics.len())
        .find(|&m| d.metrics[m].name == name && d.metric_integration(m).0 == "API");
    let m = generated.unwrap_or_else(|| {
        let k = ov.written.metrics.len();
        // Six base-62 characters like Klaviyo's metric ids, distinct from the generated ones
        // (whose last two characters are their index, < the generated count).
        let h = h3(d.spec.seed, 0x3E7, k as u64, 0);
        const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut id: String = (0..4)
            .map(|i| BASE62[((h >> (6 * i)) % 62) as usize] as char)
            .collect();
        let idx = 3000 + k;
        id.push(BASE62[(idx / 62) % 62] as char);
        id.push(BASE62[idx % 62] as char);
        ov.written.metrics.push(WrittenMetric {
            id,
            name: name.to_owned(),
            created: now,
        });
        d.metrics.len() + k
    });
    if ov.events.len() <= m {
        ov.events.resize_with(m + 1, BTreeMap::new);
    }
    ov.written.metric_names.insert(name.to_owned(), m);
    m
}

/// Writes one event: `attrs` are the event's attributes (`properties`, `time`, `value`,
/// `value_currency`, `unique_id`, `metric`), `profile` its profile resource object;
/// `pointer` is where the event is in the request (`/data` or
/// `/data/attributes/events-bulk-create/data/0/attributes/events/data/1`). `dry` only
/// checks it.
fn write_event(
    d: &Dataset,
    ov: &mut Overlay,
    attrs: &Value,
    profile: &Value,
    (profile_pointer, pointer): (&str, &str),
    now_ms: i64,
    dry: bool,
) -> Result<(), Box<Response>> {
    let now = now_ms.div_euclid(1000);
    let ts = match attrs["time"].as_str() {
        None => now,
        Some(t) => match filter::parse_datetime(t) {
            Some(x) => x.floor() as i64,
            None => {
                return Err(invalid_at(
                    format!("{pointer}/attributes/time"),
                    format!("'{t}' is not a valid datetime."),
                )
                .response()
                .into());
            }
        },
    };
    if !(EARLIEST..=now + 365 * 86_400).contains(&ts) {
        return Err(invalid_at(
            format!("{pointer}/attributes/time"),
            "An event's time must be after 1990-01-01 and at most a year from now.",
        )
        .response()
        .into());
    }
    let mut props = attrs["properties"].as_object().cloned().unwrap_or_default();
    if props.len() > MAX_PROPERTIES {
        return Err(invalid_at(
            format!("{pointer}/attributes/properties"),
            format!(
                "An event has at most {MAX_PROPERTIES} properties, this one {}.",
                props.len()
            ),
        )
        .response()
        .into());
    }
    let name = attrs["metric"]["data"]["attributes"]["name"]
        .as_str()
        .unwrap_or_default();
    if name.trim().is_empty() {
        return Err(invalid_at(
            format!("{pointer}/attributes/metric/data/attributes/name"),
            "A metric name is required.",
        )
        .response()
        .into());
    }
    if dry {
        return check_profile(d, ov, profile).map_err(|e| Box::new(e.response(profile_pointer)));
    }
    let (p, _) = write_profile(d, ov, profile, false, now_ms)
        .map_err(|e| Box::new(e.response(profile_pointer)))?;
    let m = metric_for(d, ov, name, now);
    let unique = attrs["unique_id"].as_str().filter(|u| !u.is_empty());
    let key = (p, m, unique.map_or_else(|| format!("@{ts}"), str::to_owned));
    if !ov.written.event_keys.insert(key) {
        ov.written.events_deduplicated += 1;
        return Ok(());
    }
    for (k, name) in [
        ("value", "$value"),
        ("value_currency", "$value_currency"),
        ("unique_id", "$event_id"),
    ] {
        if let Some(v) = attrs.get(k).filter(|v| !v.is_null()) {
            props.insert(name.to_owned(), v.clone());
        }
    }
    let seq = ov.next_seq;
    ov.next_seq += 1;
    let id = d.appended_event_id(m, seq);
    let uuid = d.event_uuid(m, (1 << 39) | seq, ts);
    ov.events[m].insert((ts, seq), Appended::new(id, uuid, p, &Value::Object(props)));
    let r: EventRef = (m, ts, seq);
    ov.written.events.push(r);
    if let Some(k) = p.checked_sub(d.spec.profiles) {
        let wp = &mut ov.written.profiles[k as usize];
        wp.last_event = Some(wp.last_event.map_or(ts, |l| l.max(ts)));
    }
    Ok(())
}

impl WriteCx<'_> {
    /// `POST /api/events`.
    pub(super) fn create_event(&self, ov: &mut Overlay, doc: &Value) -> Result<Reply, ApiErr> {
        let attrs = &doc["data"]["attributes"];
        for dry in [true, false] {
            if let Err(r) = write_event(
                &self.live.data,
                ov,
                attrs,
                &attrs["profile"]["data"],
                ("/data/attributes/profile/data", "/data"),
                self.now_ms,
                dry,
            ) {
                return Ok(Reply::Raw(*r));
            }
        }
        Ok(Reply::Empty(StatusCode::ACCEPTED))
    }

    /// `POST /api/event-bulk-create-jobs`: at most 1,000 events, written at once.
    pub(super) fn bulk_events(&self, ov: &mut Overlay, doc: &Value) -> Result<Reply, ApiErr> {
        let groups = doc["data"]["attributes"]["events-bulk-create"]["data"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let total: usize = groups
            .iter()
            .map(|g| {
                g["attributes"]["events"]["data"]
                    .as_array()
                    .map_or(0, Vec::len)
            })
            .sum();
        if total == 0 || total > MAX_BULK_EVENTS {
            return Err(invalid_at(
                "/data/attributes/events-bulk-create/data",
                format!("A bulk create job takes 1 to {MAX_BULK_EVENTS} events, not {total}."),
            ));
        }
        // Everything is checked before anything is written: a refused job writes nothing.
        for dry in [true, false] {
            for (g, group) in groups.iter().enumerate() {
                let base = format!("/data/attributes/events-bulk-create/data/{g}/attributes");
                let profile = &group["attributes"]["profile"]["data"];
                let events = group["attributes"]["events"]["data"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for (e, event) in events.iter().enumerate() {
                    if let Err(r) = write_event(
                        &self.live.data,
                        ov,
                        &event["attributes"],
                        profile,
                        (
                            &format!("{base}/profile/data"),
                            &format!("{base}/events/data/{e}"),
                        ),
                        self.now_ms,
                        dry,
                    ) {
                        return Ok(Reply::Raw(*r));
                    }
                }
            }
        }
        Ok(Reply::Empty(StatusCode::ACCEPTED))
    }
}

impl Ctx<'_> {
    /// The attributes of the `k`-th metric created by events.
    pub(super) fn created_metric_attributes(&self, k: usize) -> Map<String, Value> {
        let m = &self.ov.written.metrics[k];
        match json!({
            "name": m.name,
            "created": fmt_time(m.created),
            "updated": fmt_time(m.created),
            "integration": {"object": "integration", "id": "7FtS4J", "key": "api", "name": "API", "category": "API"},
        }) {
            Value::Object(o) => o,
            _ => Map::new(),
        }
    }

    /// The integration's (name, category) of metric `m`.
    pub(super) fn integration_of(&self, m: usize) -> (&'static str, &'static str) {
        if m < self.d.metrics.len() {
            self.d.metric_integration(m)
        } else {
            ("API", "API")
        }
    }
}
