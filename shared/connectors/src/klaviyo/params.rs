//! Job streams and parameters: validation of what an operator sent, and the resolved form
//! that `Plan.params` (and so every task's `params`) carries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_contracts::config::KlaviyoSettings;

use super::records::short;
use crate::ConnectorError;

/// The streams a Klaviyo job may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `GET /api/metrics` → `klaviyo.metrics`.
    Metrics,
    /// `GET /api/events` per metric and time window → `klaviyo.events` (+ profiles).
    Events,
    /// `GET /api/profiles` per `updated` window → `klaviyo.profiles`.
    Profiles,
    /// `GET /api/lists` → `klaviyo.lists`.
    Lists,
    /// `GET /api/segments` → `klaviyo.segments`.
    Segments,
    /// `GET /api/lists/{id}/relationships/profiles` → `klaviyo.list_members` + profiles.
    ListMembers,
    /// `GET /api/segments/{id}/relationships/profiles` → `klaviyo.segment_members` + profiles.
    SegmentMembers,
}

/// Every stream name, for messages.
pub const STREAMS: &str =
    "metrics, events, profiles, lists, segments, list_members, segment_members";

impl Stream {
    /// The stream of a job name (`events`, …).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "metrics" => Stream::Metrics,
            "events" => Stream::Events,
            "profiles" => Stream::Profiles,
            "lists" => Stream::Lists,
            "segments" => Stream::Segments,
            "list_members" => Stream::ListMembers,
            "segment_members" => Stream::SegmentMembers,
            _ => return None,
        })
    }

    /// The stream's name in jobs.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Metrics => "metrics",
            Stream::Events => "events",
            Stream::Profiles => "profiles",
            Stream::Lists => "lists",
            Stream::Segments => "segments",
            Stream::ListMembers => "list_members",
            Stream::SegmentMembers => "segment_members",
        }
    }

    /// The parameters the stream accepts.
    pub fn accepted(self) -> &'static [&'static str] {
        match self {
            Stream::Events => &["since", "until", "metrics", "include_profile", "page_size"],
            Stream::Profiles => &["since", "until", "page_size"],
            Stream::Metrics => &[],
            Stream::Lists | Stream::Segments => &["page_size"],
            Stream::ListMembers => &["list", "page_size"],
            Stream::SegmentMembers => &["segment", "page_size"],
        }
    }

    /// The largest `page[size]` of the stream's endpoint (the spec's maximum); `None` when
    /// the endpoint has no page size (`/api/metrics`).
    pub fn max_page_size(self) -> Option<u32> {
        match self {
            Stream::Events => Some(1000),
            Stream::Profiles | Stream::ListMembers | Stream::SegmentMembers => Some(100),
            Stream::Lists | Stream::Segments => Some(10),
            Stream::Metrics => None,
        }
    }

    /// The settings' default page size for the stream.
    pub fn default_page_size(self, settings: &KlaviyoSettings) -> u32 {
        let configured = match self {
            Stream::Events => settings.page_sizes.events,
            Stream::Profiles => settings.page_sizes.profiles,
            Stream::Lists | Stream::Segments => settings.page_sizes.lists,
            Stream::ListMembers | Stream::SegmentMembers => settings.page_sizes.members,
            Stream::Metrics => 0,
        };
        let max = self.max_page_size().unwrap_or(0);
        configured.clamp(1.min(max), max)
    }
}

/// A job's parameters after validation (metric names resolved to ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Params {
    /// Start of the range, RFC 3339 UTC (`%Y-%m-%dT%H:%M:%S%.6fZ`); absent: all time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// End of the range (exclusive), RFC 3339 UTC; absent: now − lag at plan time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Metric ids (events only); all metrics of the account when the job named none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// Metric id → name, for operators reading the job.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metric_names: Map<String, Value>,
    /// Events only: request `include=profile` and load the included profiles too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_profile: bool,
    /// The list id (`list_members`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// The segment id (`segment_members`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// `page[size]` of the stream's endpoint (0 for `metrics`, which has none).
    #[serde(default)]
    pub page_size: u32,
}

/// Parameters as sent, checked for shape but not yet resolved against the account.
#[derive(Debug, Clone, Default)]
pub struct RawParams {
    /// `since`, parsed.
    pub since: Option<DateTime<Utc>>,
    /// `until`, parsed.
    pub until: Option<DateTime<Utc>>,
    /// `metrics`: ids or names, as given.
    pub metrics: Vec<String>,
    /// `include_profile`.
    pub include_profile: bool,
    /// `list`.
    pub list: Option<String>,
    /// `segment`.
    pub segment: Option<String>,
    /// `page_size`, or the settings' default.
    pub page_size: u32,
}

fn invalid(message: String) -> ConnectorError {
    ConnectorError::InvalidParams(message)
}

/// Parses an RFC 3339 instant (any offset, converted to UTC).
pub fn parse_instant(name: &str, value: &Value) -> Result<DateTime<Utc>, ConnectorError> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                invalid(format!(
                    "parameter '{name}' must be an RFC 3339 time like 2024-01-01T00:00:00Z, found {}: {e}",
                    short(value)
                ))
            }),
        other => Err(invalid(format!(
            "parameter '{name}' must be an RFC 3339 time string, found {}",
            short(other)
        ))),
    }
}

fn id_param(name: &str, value: Option<&Value>) -> Result<Option<String>, ConnectorError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => {
            let s = s.trim();
            if s.contains(['/', '?', '#', '%']) || s.chars().any(char::is_whitespace) {
                return Err(invalid(format!(
                    "parameter '{name}' is not a Klaviyo id: {}",
                    short(&Value::String(s.into()))
                )));
            }
            Ok(Some(s.to_string()))
        }
        Some(other) => Err(invalid(format!(
            "parameter '{name}' must be a non-empty id string, found {}",
            short(other)
        ))),
    }
}

/// Checks a job's parameters for `stream`.
///
/// # Errors
/// [`ConnectorError::InvalidParams`] naming the parameter: unknown or not accepted by the
/// stream, malformed times, `since ≥ until`, a `page_size` outside the endpoint's range,
/// `metrics` that is not a list of strings, a missing `list`/`segment`.
pub fn check(
    stream: Stream,
    params: &Value,
    settings: &KlaviyoSettings,
) -> Result<RawParams, ConnectorError> {
    let empty = Map::new();
    let obj = match params {
        Value::Null => &empty,
        Value::Object(o) => o,
        other => {
            return Err(invalid(format!(
                "klaviyo params must be an object, found {}",
                short(other)
            )));
        }
    };
    let accepted = stream.accepted();
    if let Some(unknown) = obj.keys().find(|k| !accepted.contains(&k.as_str())) {
        return Err(invalid(format!(
            "parameter '{unknown}' is not accepted by klaviyo stream {} (accepted: {})",
            stream.name(),
            if accepted.is_empty() {
                "none".to_string()
            } else {
                accepted.join(", ")
            }
        )));
    }
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let since = present("since")
        .map(|v| parse_instant("since", v))
        .transpose()?;
    let until = present("until")
        .map(|v| parse_instant("until", v))
        .transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(invalid(format!(
            "parameter 'since' ({s}) must be before 'until' ({u})"
        )));
    }
    let metrics = match present("metrics") {
        None => Vec::new(),
        Some(Value::String(s)) if !s.trim().is_empty() => vec![s.trim().to_string()],
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::String(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
                    other => {
                        return Err(invalid(format!(
                            "parameter 'metrics' must list metric ids or names (strings), found {}",
                            short(other)
                        )));
                    }
                }
            }
            if out.is_empty() {
                return Err(invalid(
                    "parameter 'metrics' is an empty list: name metric ids or names, or leave it out for all metrics".into(),
                ));
            }
            out
        }
        Some(other) => {
            return Err(invalid(format!(
                "parameter 'metrics' must be a list of metric ids or names, found {}",
                short(other)
            )));
        }
    };
    let include_profile = match present("include_profile") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(invalid(format!(
                "parameter 'include_profile' must be true or false, found {}",
                short(other)
            )));
        }
    };
    let list = id_param("list", obj.get("list"))?;
    let segment = id_param("segment", obj.get("segment"))?;
    if stream == Stream::ListMembers && list.is_none() {
        return Err(invalid(
            "missing parameter 'list': the id of the list whose members to sync".into(),
        ));
    }
    if stream == Stream::SegmentMembers && segment.is_none() {
        return Err(invalid(
            "missing parameter 'segment': the id of the segment whose members to sync".into(),
        ));
    }
    let page_size = match (present("page_size"), stream.max_page_size()) {
        (None, _) => stream.default_page_size(settings),
        (Some(v), Some(max)) => match v.as_u64() {
            Some(n) if n >= 1 && n <= u64::from(max) => n as u32,
            _ => {
                return Err(invalid(format!(
                    "parameter 'page_size' must be an integer from 1 to {max} for klaviyo stream {}, found {}",
                    stream.name(),
                    short(v)
                )));
            }
        },
        (Some(_), None) => stream.default_page_size(settings),
    };
    Ok(RawParams {
        since,
        until,
        metrics,
        include_profile,
        list,
        segment,
        page_size,
    })
}
