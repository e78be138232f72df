//! Job streams and parameters: validation of what an operator sent, and the resolved form
//! that `Plan.params` (and so every task's `params`) carries.

use super::settings::KlaviyoSettings;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::records::short;
use crate::{ConnectorError, ParamKind, ParamSpec, StreamSpec, TableSpec};

/// A job's parameters as sent, typed; which of them a stream accepts is its
/// [`Stream::spec`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Start of the range, RFC 3339.
    pub since: Option<String>,
    /// End of the range (exclusive), RFC 3339.
    pub until: Option<String>,
    /// Metric ids or names: one, or a list.
    pub metrics: Option<OneOrMany>,
    /// Events: load the included profiles too.
    pub include_profile: Option<bool>,
    /// The list of `list_members`.
    pub list: Option<String>,
    /// The segment of `segment_members`.
    pub segment: Option<String>,
    /// `page[size]`.
    pub page_size: Option<u64>,
}

/// One string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several.
    Many(Vec<String>),
}

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
pub const STREAMS: &str = "metrics, events, profiles, lists, segments, list_members, segment_members, campaigns, flows, templates, tags, suppressions, metric_aggregates";

impl Stream {
    /// Every stream, in the order `sluicectl streams` lists them.
    pub const ALL: [Stream; 7] = [
        Stream::Events,
        Stream::Profiles,
        Stream::Metrics,
        Stream::Lists,
        Stream::Segments,
        Stream::ListMembers,
        Stream::SegmentMembers,
    ];

    /// The stream's declaration: parameters (those of [`Stream::accepted`]) and tables.
    pub fn spec(self) -> StreamSpec {
        use super::records as r;
        let since = ParamSpec::optional(
            "since",
            ParamKind::Instant,
            "start of the range, RFC 3339 UTC (events: datetime; profiles: updated)",
        );
        let until = ParamSpec::optional(
            "until",
            ParamKind::Instant,
            "end of the range (exclusive), RFC 3339 UTC; default now minus the lag",
        );
        let page_size = |max: u32| {
            ParamSpec::optional(
                "page_size",
                ParamKind::Integer {
                    min: 1,
                    max: u64::from(max),
                },
                "page[size] of the endpoint (default: connectors.klaviyo.page_sizes)",
            )
        };
        let (help, params, tables): (&'static str, Vec<ParamSpec>, Vec<&'static TableSpec>) =
            match self {
                Stream::Events => (
                    "Events per metric and time window (GET /api/events)",
                    vec![
                        since,
                        until,
                        ParamSpec::optional(
                            "metrics",
                            ParamKind::List,
                            "events of this metric only (name or id); repeat for several",
                        )
                        .flag("metric"),
                        ParamSpec::optional(
                            "include_profile",
                            ParamKind::Flag,
                            "also load each event's profile",
                        ),
                        page_size(1000),
                    ],
                    vec![&r::EVENTS_TABLE, &r::PROFILES_TABLE],
                ),
                Stream::Profiles => (
                    "Profiles by updated window (GET /api/profiles)",
                    vec![since, until, page_size(100)],
                    vec![&r::PROFILES_TABLE],
                ),
                Stream::Metrics => (
                    "Metrics (GET /api/metrics)",
                    vec![],
                    vec![&r::METRICS_TABLE],
                ),
                Stream::Lists => (
                    "Lists (GET /api/lists)",
                    vec![page_size(10)],
                    vec![&r::LISTS_TABLE],
                ),
                Stream::Segments => (
                    "Segments (GET /api/segments)",
                    vec![page_size(10)],
                    vec![&r::SEGMENTS_TABLE],
                ),
                Stream::ListMembers => (
                    "Members of a list (GET /api/lists/{id}/relationships/profiles)",
                    vec![
                        ParamSpec::required(
                            "list",
                            ParamKind::Text,
                            "the id of the list whose members to sync",
                        ),
                        page_size(100),
                    ],
                    vec![&r::LIST_MEMBERS_TABLE, &r::PROFILES_TABLE],
                ),
                Stream::SegmentMembers => (
                    "Members of a segment (GET /api/segments/{id}/relationships/profiles)",
                    vec![
                        ParamSpec::required(
                            "segment",
                            ParamKind::Text,
                            "the id of the segment whose members to sync",
                        ),
                        page_size(100),
                    ],
                    vec![&r::SEGMENT_MEMBERS_TABLE, &r::PROFILES_TABLE],
                ),
            };
        StreamSpec {
            name: self.name(),
            help,
            params,
            incremental: matches!(self, Stream::Events | Stream::Profiles),
            tables,
        }
    }

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
    /// Members streams: the job's version of the memberships it sees, the planning time
    /// (RFC 3339 UTC, microseconds). Every member row of the job carries it as `seen_at`;
    /// the task that reads the last page removes the group's members with an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_version: Option<String>,
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
    let request: Request = crate::framework::parse_params("klaviyo", &stream.spec(), params)?;
    let since = request
        .since
        .as_ref()
        .map(|v| parse_instant("since", &Value::String(v.clone())))
        .transpose()?;
    let until = request
        .until
        .as_ref()
        .map(|v| parse_instant("until", &Value::String(v.clone())))
        .transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(invalid(format!(
            "parameter 'since' ({s}) must be before 'until' ({u})"
        )));
    }
    let metrics = match request.metrics {
        None => Vec::new(),
        Some(OneOrMany::One(s)) if !s.trim().is_empty() => vec![s.trim().to_string()],
        Some(OneOrMany::One(_)) => {
            return Err(invalid(
                "parameter 'metrics' is empty: name metric ids or names, or leave it out for all metrics".into(),
            ));
        }
        Some(OneOrMany::Many(items)) => {
            let mut out = Vec::new();
            for item in items {
                if item.trim().is_empty() {
                    return Err(invalid(
                        "parameter 'metrics' lists an empty metric id or name".into(),
                    ));
                }
                out.push(item.trim().to_string());
            }
            if out.is_empty() {
                return Err(invalid(
                    "parameter 'metrics' is an empty list: name metric ids or names, or leave it out for all metrics".into(),
                ));
            }
            out
        }
    };
    let list = id_param("list", request.list.map(Value::String).as_ref())?;
    let segment = id_param("segment", request.segment.map(Value::String).as_ref())?;
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
    let page_size = match (request.page_size, stream.max_page_size()) {
        (None, _) | (Some(_), None) => stream.default_page_size(settings),
        (Some(n), Some(max)) if n >= 1 && n <= u64::from(max) => n as u32,
        (Some(n), Some(max)) => {
            return Err(invalid(format!(
                "parameter 'page_size' must be an integer from 1 to {max} for klaviyo stream {}, found {n}",
                stream.name(),
            )));
        }
    };
    Ok(RawParams {
        since,
        until,
        metrics,
        include_profile: request.include_profile.unwrap_or(false),
        list,
        segment,
        page_size,
    })
}
