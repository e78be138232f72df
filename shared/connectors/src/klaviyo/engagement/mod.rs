//! The engagement streams: `campaigns`, `flows`, `templates`, `tags`, `suppressions` and
//! `metric_aggregates` (`migrations/V11__klaviyo_engagement.sql`, `docs/klaviyo.md`,
//! "Engagement streams").
//!
//! Task shapes:
//! - `campaigns`: one `Page` task per channel (task stream `campaigns/<channel>`), paging
//!   `GET /api/campaigns?filter=equals(messages.channel,'<channel>')…&include=campaign-messages`
//!   (Klaviyo lists one channel at a time); incremental on `updated_at` per channel.
//! - `flows`, `templates`, `tags`, `suppressions`: one `Page` task paging its endpoint,
//!   handing the next page to a child after `dense_pages` pages.
//! - `metric_aggregates`: per metric, `TimeRange {partition: metric id}` tasks of task stream
//!   `metric_aggregates/<metric id>`, the job's day-aligned range cut into windows of at most
//!   [`MAX_DAYS_BY_DAY`] (`interval=day`) or [`MAX_DAYS_BY_HOUR`] (`hour`) days, one
//!   `POST /api/metric-aggregates` each. Incremental: from the bookmark's day minus
//!   `lookback_days` (aggregates of the last days still change as late events arrive).
//!
//! Rate tiers (`x-klaviyo-ratelimit` of each operation): campaigns M; flows, flow
//! messages, tags, tag groups, tag links and metric aggregates S; templates and profiles L —
//! the account's buckets the other streams use.

mod aggregates;
mod campaigns;
mod flows;
mod rows;
mod tags;

use rows::{suppression_rows, template_rows};
use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sluice_contracts::{FetchTask, Mode, PageRef, RejectedRecord, TaskKind};

use super::client::{Client, Page};
use super::limiter::Tier;
use super::{KlaviyoConnector, permanent, records, windows};
use crate::framework::Collector;
use crate::{
    ConnectorError, Emit, FetchOutput, JobSpec, ParamKind, ParamSpec, Plan, PlannedTask,
    StreamSpec, TableSpec,
};

/// Longest window (days) of one metric-aggregates request with `interval=day`.
pub const MAX_DAYS_BY_DAY: i64 = 366;
/// Longest window (days) of one metric-aggregates request with `interval=hour`.
pub const MAX_DAYS_BY_HOUR: i64 = 31;
/// Most `by` dimensions of one metric-aggregates request.
pub const MAX_BY: usize = 3;
/// The campaign channels Klaviyo lists (`messages.channel`).
pub const CHANNELS: &[&str] = &["email", "sms", "mobile_push"];
/// The measurements of metric aggregates.
pub const MEASUREMENTS: &[&str] = &["count", "sum_value", "unique"];

macro_rules! table {
    ($name:ident, $table:literal, [$($col:literal),*], [$($key:literal),*], $version:expr, $scope:expr) => {
        #[doc = concat!("`", $table, "` (`migrations/V11__klaviyo_engagement.sql`).")]
        pub static $name: TableSpec = TableSpec {
            name: $table,
            columns: &[$($col),*],
            key: &[$($key),*],
            version: $version,
            replace_scope: $scope,
        };
    };
}

table!(
    CAMPAIGNS,
    "klaviyo.campaigns",
    [
        "id",
        "channel",
        "name",
        "status",
        "archived",
        "audiences",
        "send_options",
        "tracking_options",
        "send_strategy",
        "created_at",
        "scheduled_at",
        "updated_at",
        "send_time",
        "extra"
    ],
    ["id"],
    Some("updated_at"),
    None
);
table!(
    CAMPAIGN_MESSAGES,
    "klaviyo.campaign_messages",
    [
        "campaign_id",
        "id",
        "channel",
        "label",
        "subject",
        "template_id",
        "send_times",
        "definition",
        "created_at",
        "updated_at",
        "extra"
    ],
    ["campaign_id", "id"],
    None,
    Some(&["campaign_id"])
);
table!(
    FLOWS,
    "klaviyo.flows",
    [
        "id",
        "name",
        "status",
        "archived",
        "trigger_type",
        "created",
        "updated",
        "extra"
    ],
    ["id"],
    None,
    None
);
table!(
    FLOW_ACTIONS,
    "klaviyo.flow_actions",
    [
        "flow_id",
        "id",
        "action_type",
        "created",
        "updated",
        "definition",
        "extra"
    ],
    ["flow_id", "id"],
    None,
    Some(&["flow_id"])
);
table!(
    FLOW_MESSAGES,
    "klaviyo.flow_messages",
    [
        "id",
        "flow_id",
        "flow_action_id",
        "channel",
        "name",
        "subject_line",
        "template_id",
        "created",
        "updated",
        "definition",
        "extra"
    ],
    ["id"],
    None,
    None
);
table!(
    TEMPLATES,
    "klaviyo.templates",
    [
        "id",
        "name",
        "editor_type",
        "html",
        "text",
        "amp",
        "created",
        "updated",
        "extra"
    ],
    ["id"],
    None,
    None
);
table!(
    TAG_GROUPS,
    "klaviyo.tag_groups",
    ["id", "name", "exclusive", "default", "extra"],
    ["id"],
    None,
    None
);
table!(
    TAGS,
    "klaviyo.tags",
    ["id", "name", "tag_group_id", "extra"],
    ["id"],
    None,
    None
);
table!(
    TAG_CAMPAIGNS,
    "klaviyo.tag_campaigns",
    ["tag_id", "campaign_id"],
    ["tag_id", "campaign_id"],
    None,
    Some(&["tag_id"])
);
table!(
    TAG_FLOWS,
    "klaviyo.tag_flows",
    ["tag_id", "flow_id"],
    ["tag_id", "flow_id"],
    None,
    Some(&["tag_id"])
);
table!(
    TAG_LISTS,
    "klaviyo.tag_lists",
    ["tag_id", "list_id"],
    ["tag_id", "list_id"],
    None,
    Some(&["tag_id"])
);
table!(
    TAG_SEGMENTS,
    "klaviyo.tag_segments",
    ["tag_id", "segment_id"],
    ["tag_id", "segment_id"],
    None,
    Some(&["tag_id"])
);
table!(
    SUPPRESSIONS,
    "klaviyo.suppressions",
    ["profile_id", "reason", "timestamp", "email"],
    ["profile_id", "reason"],
    None,
    None
);
table!(
    METRIC_AGGREGATES,
    "klaviyo.metric_aggregates",
    [
        "metric_id",
        "interval",
        "date",
        "grouping",
        "dimensions",
        "measurement",
        "value"
    ],
    [
        "metric_id",
        "interval",
        "date",
        "grouping",
        "dimensions",
        "measurement"
    ],
    None,
    None
);

/// Every table of this module.
pub static TABLES: [&TableSpec; 14] = [
    &CAMPAIGNS,
    &CAMPAIGN_MESSAGES,
    &FLOWS,
    &FLOW_ACTIONS,
    &FLOW_MESSAGES,
    &TEMPLATES,
    &TAG_GROUPS,
    &TAGS,
    &TAG_CAMPAIGNS,
    &TAG_FLOWS,
    &TAG_LISTS,
    &TAG_SEGMENTS,
    &SUPPRESSIONS,
    &METRIC_AGGREGATES,
];

/// The engagement streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `GET /api/campaigns` per channel → campaigns + campaign_messages.
    Campaigns,
    /// `GET /api/flows` + flow messages → flows, flow_actions, flow_messages.
    Flows,
    /// `GET /api/templates` → templates.
    Templates,
    /// `GET /api/tag-groups`, `GET /api/tags` and each tag's links → tags, tag_groups,
    /// tag_{campaigns,flows,lists,segments}.
    Tags,
    /// `GET /api/profiles?additional-fields[profile]=subscriptions` → suppressions.
    Suppressions,
    /// `POST /api/metric-aggregates` per metric and window → metric_aggregates.
    MetricAggregates,
}

impl Stream {
    /// Every stream, in the order `sluicectl streams` lists them.
    pub const ALL: [Stream; 6] = [
        Stream::Campaigns,
        Stream::Flows,
        Stream::Templates,
        Stream::Tags,
        Stream::Suppressions,
        Stream::MetricAggregates,
    ];

    /// The stream of a job (or task's base) stream name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The stream's name in jobs.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Campaigns => "campaigns",
            Stream::Flows => "flows",
            Stream::Templates => "templates",
            Stream::Tags => "tags",
            Stream::Suppressions => "suppressions",
            Stream::MetricAggregates => "metric_aggregates",
        }
    }

    /// The stream's declaration.
    pub fn spec(self) -> StreamSpec {
        let since = ParamSpec::optional(
            "since",
            ParamKind::Instant,
            "start of the range, RFC 3339 UTC (campaigns: updated_at; metric_aggregates: datetime)",
        );
        let (help, params, tables): (&'static str, Vec<ParamSpec>, Vec<&'static TableSpec>) =
            match self {
                Stream::Campaigns => (
                    "Campaigns and their messages, per channel (GET /api/campaigns)",
                    vec![
                        since,
                        ParamSpec::optional(
                            "channels",
                            ParamKind::List,
                            "campaign channels to read: email, sms, mobile_push (default: all)",
                        )
                        .flag("channel"),
                    ],
                    vec![&CAMPAIGNS, &CAMPAIGN_MESSAGES],
                ),
                Stream::Flows => (
                    "Flows, their actions and messages (GET /api/flows, /api/flow-actions/{id}/flow-messages)",
                    vec![],
                    vec![&FLOWS, &FLOW_ACTIONS, &FLOW_MESSAGES],
                ),
                Stream::Templates => ("Email templates (GET /api/templates)", vec![], vec![&TEMPLATES]),
                Stream::Tags => (
                    "Tags, tag groups and what each tag is on (GET /api/tags, /api/tag-groups)",
                    vec![],
                    vec![&TAGS, &TAG_GROUPS, &TAG_CAMPAIGNS, &TAG_FLOWS, &TAG_LISTS, &TAG_SEGMENTS],
                ),
                Stream::Suppressions => (
                    "Profiles whose email marketing is suppressed (GET /api/profiles, subscriptions)",
                    vec![],
                    vec![&SUPPRESSIONS],
                ),
                Stream::MetricAggregates => (
                    "Daily (or hourly) count, sum_value, unique per metric and dimensions (POST /api/metric-aggregates)",
                    vec![
                        since,
                        ParamSpec::optional(
                            "until",
                            ParamKind::Instant,
                            "end of the range (exclusive), RFC 3339 UTC; default now minus the lag",
                        ),
                        ParamSpec::optional(
                            "metrics",
                            ParamKind::List,
                            "aggregates of this metric only (name or id); repeat for several (default: all)",
                        )
                        .flag("metric"),
                        ParamSpec::optional(
                            "measurements",
                            ParamKind::List,
                            "count, sum_value, unique (default: all three)",
                        )
                        .flag("measurement"),
                        ParamSpec::optional(
                            "interval",
                            ParamKind::Choice(&["day", "hour"]),
                            "aggregation interval, UTC (default day)",
                        ),
                        ParamSpec::optional(
                            "by",
                            ParamKind::List,
                            "dimensions to group by, e.g. $message, $flow, Campaign Name (at most 3)",
                        ),
                        ParamSpec::optional(
                            "lookback_days",
                            ParamKind::Integer { min: 0, max: 365 },
                            "incremental runs re-read this many days before the bookmark (default 3)",
                        ),
                    ],
                    vec![&METRIC_AGGREGATES],
                ),
            };
        StreamSpec {
            name: self.name(),
            help,
            params,
            incremental: matches!(self, Stream::Campaigns | Stream::MetricAggregates),
            tables,
        }
    }
}

/// A job's parameters as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    since: Option<String>,
    until: Option<String>,
    channels: Option<Vec<String>>,
    metrics: Option<Vec<String>>,
    measurements: Option<Vec<String>>,
    interval: Option<String>,
    by: Option<Vec<String>>,
    lookback_days: Option<u32>,
}

/// The resolved parameters every task of an engagement job carries (`Plan.params`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Campaign channels read (`campaigns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Metric ids (`metric_aggregates`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// Metric id → name, for operators reading the job.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metric_names: Map<String, Value>,
    /// Measurements (`count`, `sum_value`, `unique`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<String>,
    /// `day` or `hour`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Dimensions to group by, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<String>,
    /// The range's start per task stream, RFC 3339 UTC (for operators).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub starts: Map<String, Value>,
}

fn invalid(message: String) -> ConnectorError {
    ConnectorError::InvalidParams(message)
}

/// Checks a job's parameters for `stream`.
///
/// # Errors
/// [`ConnectorError::InvalidParams`] naming the parameter.
pub fn check(stream: Stream, params: &Value) -> Result<(), ConnectorError> {
    parse(stream, params).map(|_| ())
}

fn parse(stream: Stream, params: &Value) -> Result<Request, ConnectorError> {
    let request: Request = crate::framework::parse_params("klaviyo", &stream.spec(), params)?;
    for (name, value) in [("since", &request.since), ("until", &request.until)] {
        if let Some(v) = value {
            super::params::parse_instant(name, &Value::String(v.clone()))?;
        }
    }
    if let Some(channels) = &request.channels
        && let Some(bad) = channels.iter().find(|c| !CHANNELS.contains(&c.as_str()))
    {
        return Err(invalid(format!(
            "parameter 'channels': {bad:?} is not a campaign channel ({})",
            CHANNELS.join(", ")
        )));
    }
    if let Some(ms) = &request.measurements
        && let Some(bad) = ms.iter().find(|m| !MEASUREMENTS.contains(&m.as_str()))
    {
        return Err(invalid(format!(
            "parameter 'measurements': {bad:?} is not a measurement ({})",
            MEASUREMENTS.join(", ")
        )));
    }
    if let Some(interval) = &request.interval
        && !["day", "hour"].contains(&interval.as_str())
    {
        return Err(invalid(format!(
            "parameter 'interval' must be day or hour, found {interval:?}"
        )));
    }
    if let Some(by) = &request.by {
        if by.len() > MAX_BY {
            return Err(invalid(format!(
                "parameter 'by' names {} dimensions; POST /api/metric-aggregates groups by at most {MAX_BY}",
                by.len()
            )));
        }
        if by.iter().any(|d| d.trim().is_empty()) {
            return Err(invalid("parameter 'by' names an empty dimension".into()));
        }
    }
    Ok(request)
}

fn time(s: &Option<String>, name: &str) -> Result<Option<DateTime<Utc>>, ConnectorError> {
    s.as_ref()
        .map(|v| super::params::parse_instant(name, &Value::String(v.clone())))
        .transpose()
}

/// Takes attribute `field` out of `attrs` as a string value (null when absent).
fn take_text(attrs: &mut Map<String, Value>, field: &str) -> Value {
    match attrs.remove(field) {
        Some(Value::String(s)) => Value::String(s),
        Some(Value::Null) | None => Value::Null,
        Some(other) => Value::String(other.to_string()),
    }
}

/// Takes attribute `field` out as an RFC 3339 UTC time string (null when absent).
fn take_time(attrs: &mut Map<String, Value>, field: &str, what: &str) -> Result<Value, String> {
    match attrs.remove(field) {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::String(s)) => records::parse_time(&s)
            .map(|t| Value::String(windows::cursor(t)))
            .ok_or_else(|| format!("{what}: `attributes.{field}` is not a date-time: {s:?}")),
        Some(other) => Err(format!(
            "{what}: `attributes.{field}` must be a date-time, found {}",
            records::short(&other)
        )),
    }
}

fn take_bool(attrs: &mut Map<String, Value>, field: &str) -> Value {
    match attrs.remove(field) {
        Some(b @ Value::Bool(_)) => b,
        _ => Value::Null,
    }
}

fn take_json(attrs: &mut Map<String, Value>, field: &str) -> Value {
    attrs.remove(field).unwrap_or(Value::Null)
}

/// `(id, attributes)` of a resource.
fn envelope(item: &Value, kind: &str) -> Result<(String, Map<String, Value>), String> {
    let id = item["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{kind} without a string `id`"))?
        .to_string();
    let attrs = item["attributes"].as_object().cloned().unwrap_or_default();
    Ok((id, attrs))
}

/// The id of a to-one relationship.
fn related(item: &Value, name: &str) -> Value {
    item["relationships"][name]["data"]["id"]
        .as_str()
        .map_or(Value::Null, |s| Value::String(s.to_string()))
}

/// The ids of a to-many relationship.
fn related_ids(item: &Value, name: &str) -> Vec<String> {
    item["relationships"][name]["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A task's rows, rejects and children.
struct Out {
    rejected: Vec<RejectedRecord>,
    children: Vec<PlannedTask>,
    max_time: Option<DateTime<Utc>>,
}

impl Out {
    fn new() -> Self {
        Self {
            rejected: Vec::new(),
            children: Vec::new(),
            max_time: None,
        }
    }

    fn reject(&mut self, task: &FetchTask, page: u32, table: &str, error: String, raw: &Value) {
        self.rejected.push(RejectedRecord {
            source: format!("klaviyo task {} page {page}", task.task_id),
            table: Some(table.to_string()),
            error,
            raw: raw.clone(),
        });
    }

    fn see(&mut self, t: Option<DateTime<Utc>>) {
        if let Some(t) = t
            && self.max_time.is_none_or(|m| t > m)
        {
            self.max_time = Some(t);
        }
    }

    fn finish(self, tables: Vec<crate::TableRows>, lag: Duration) -> FetchOutput {
        let limit = Utc::now() - lag;
        FetchOutput {
            tables,
            rejected: self.rejected,
            children: self.children,
            cursor_max: self.max_time.map(|t| windows::cursor(t.min(limit))),
        }
    }
}

/// The start of UTC day of `t`.
fn day_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::days(1)).unwrap_or(t)
}

impl KlaviyoConnector {
    /// The bookmark of `task_stream` when the job is incremental.
    fn engagement_bookmark(job: &JobSpec, task_stream: &str) -> Option<DateTime<Utc>> {
        if job.mode != Mode::Incremental {
            return None;
        }
        job.bookmark
            .as_ref()
            .and_then(|b| b.get("streams"))
            .and_then(|s| s.get(task_stream))
            .and_then(Value::as_str)
            .and_then(records::parse_time)
    }

    /// Plans a job of an engagement stream.
    pub(super) async fn plan_engagement(
        &self,
        stream: Stream,
        job: &JobSpec,
    ) -> Result<Plan, ConnectorError> {
        let request = parse(stream, &job.params)?;
        let client = self.plan_client(&job.account)?;
        let page_task = |name: String| PlannedTask::new(name, TaskKind::Page(PageRef::default()));
        let mut params = Params::default();
        let mut warnings = Vec::new();
        let tasks = match stream {
            Stream::Campaigns => {
                params.channels = request
                    .channels
                    .clone()
                    .unwrap_or_else(|| CHANNELS.iter().map(|c| (*c).to_string()).collect());
                let since = time(&request.since, "since")?;
                let mut tasks = Vec::new();
                for channel in &params.channels {
                    let name = format!("campaigns/{channel}");
                    let start = Self::engagement_bookmark(job, &name)
                        .map(|b| b - self.lookback())
                        .or(since);
                    if let Some(s) = start {
                        params
                            .starts
                            .insert(name.clone(), json!(windows::cursor(s)));
                    }
                    tasks.push(page_task(name));
                }
                tasks
            }
            Stream::Flows | Stream::Templates | Stream::Tags | Stream::Suppressions => {
                vec![page_task(stream.name().to_string())]
            }
            Stream::MetricAggregates => {
                let all = self.all_metrics(&client).await?;
                let chosen: Vec<(String, String)> = match &request.metrics {
                    None => all.clone(),
                    Some(wanted) => {
                        let mut chosen: Vec<(String, String)> = Vec::new();
                        for w in wanted {
                            let found: Vec<&(String, String)> = all
                                .iter()
                                .filter(|(id, name)| id == w || name == w)
                                .collect();
                            if found.is_empty() {
                                return Err(invalid(format!(
                                    "parameter 'metrics': no metric has the id or name {w:?} in klaviyo account '{}'",
                                    job.account
                                )));
                            }
                            for m in found {
                                if !chosen.contains(m) {
                                    chosen.push(m.clone());
                                }
                            }
                        }
                        chosen
                    }
                };
                params.metrics = chosen.iter().map(|(id, _)| id.clone()).collect();
                params.metric_names = chosen
                    .iter()
                    .map(|(id, name)| (id.clone(), Value::String(name.clone())))
                    .collect();
                params.measurements = request
                    .measurements
                    .clone()
                    .unwrap_or_else(|| MEASUREMENTS.iter().map(|m| (*m).to_string()).collect());
                let interval = request.interval.clone().unwrap_or_else(|| "day".into());
                params.by = request.by.clone().unwrap_or_default();
                let lookback = Duration::days(i64::from(request.lookback_days.unwrap_or(3)));
                let horizon = Utc::now() - self.lag();
                let until = time(&request.until, "until")?.unwrap_or(horizon);
                let end = if job.mode == Mode::Incremental {
                    until.min(horizon)
                } else {
                    until
                };
                let since = match time(&request.since, "since")? {
                    Some(s) => s,
                    None => self.start_of_time()?,
                };
                let step = Duration::days(if interval == "hour" {
                    MAX_DAYS_BY_HOUR
                } else {
                    MAX_DAYS_BY_DAY
                });
                params.interval = Some(interval);
                let mut tasks = Vec::new();
                for (id, name) in &chosen {
                    let task_stream = format!("metric_aggregates/{id}");
                    let start = day_floor(
                        Self::engagement_bookmark(job, &task_stream)
                            .map(|b| day_floor(b) - lookback)
                            .unwrap_or(since),
                    );
                    params
                        .starts
                        .insert(task_stream.clone(), json!(windows::cursor(start)));
                    if start >= end {
                        warnings.push(format!(
                            "metric {id} ({name}): nothing to aggregate, the range starts at {} and ends at {}",
                            windows::cursor(start),
                            windows::cursor(end)
                        ));
                    }
                    let mut s = start;
                    while s < end {
                        let e = (s + step).min(end);
                        tasks.push(PlannedTask::new(
                            task_stream.clone(),
                            TaskKind::TimeRange {
                                start: s,
                                end: e,
                                partition: Some(id.clone()),
                            },
                        ));
                        s = e;
                    }
                }
                tasks
            }
        };
        Ok(Plan {
            tasks,
            params: serde_json::to_value(&params)
                .map_err(|e| permanent(format!("serialising params: {e}")))?,
            warnings,
            rejected: Vec::new(),
        })
    }

    fn engagement_params(task: &FetchTask) -> Result<Params, ConnectorError> {
        match &task.params {
            Value::Null => Ok(Params::default()),
            v => serde_json::from_value(v.clone()).map_err(|e| {
                permanent(format!(
                    "klaviyo task {} carries unreadable params: {e}",
                    task.task_id
                ))
            }),
        }
    }

    /// Runs a task of an engagement stream.
    pub(super) async fn fetch_engagement(
        &self,
        stream: Stream,
        task: &FetchTask,
        client: &Client,
        emit: &mut dyn Emit,
    ) -> Result<FetchOutput, ConnectorError> {
        let p = Self::engagement_params(task)?;
        match (stream, &task.kind) {
            (
                Stream::MetricAggregates,
                TaskKind::TimeRange {
                    start,
                    end,
                    partition,
                },
            ) => {
                let metric = partition.as_deref().ok_or_else(|| {
                    permanent(format!(
                        "metric_aggregates task {} names no metric",
                        task.task_id
                    ))
                })?;
                self.fetch_aggregates(task, client, &p, metric, *start, *end)
                    .await
            }
            (Stream::MetricAggregates, _) => Err(permanent(format!(
                "klaviyo task {} of stream {} is not a time range",
                task.task_id, task.stream
            ))),
            (_, TaskKind::Page(PageRef { cursor, .. })) => {
                self.fetch_engagement_pages(stream, task, client, &p, cursor.as_deref(), emit)
                    .await
            }
            (_, kind) => Err(permanent(format!(
                "klaviyo task {} of stream '{}' has a kind this stream does not fetch: {}",
                task.task_id,
                task.stream,
                json!(kind)
            ))),
        }
    }

    /// The first request, tier and the collector's tables of a paged engagement task.
    fn first_request(
        &self,
        stream: Stream,
        task: &FetchTask,
        p: &Params,
    ) -> Result<(Tier, String, Vec<&'static TableSpec>), ConnectorError> {
        Ok(match stream {
            Stream::Campaigns => {
                let channel = task.stream.strip_prefix("campaigns/").ok_or_else(|| {
                    permanent(format!("campaigns task {} names no channel", task.task_id))
                })?;
                let mut filter = format!("equals(messages.channel,'{channel}')");
                if let Some(start) = p.starts.get(&task.stream).and_then(Value::as_str) {
                    filter = format!("and({filter},greater-or-equal(updated_at,{start}))");
                }
                (
                    Tier::M,
                    Client::relative(
                        "/api/campaigns",
                        &[
                            ("filter", filter),
                            ("include", "campaign-messages".into()),
                            ("sort", "updated_at".into()),
                        ],
                    ),
                    vec![&CAMPAIGNS, &CAMPAIGN_MESSAGES],
                )
            }
            Stream::Flows => (
                Tier::S,
                Client::relative("/api/flows", &[("include", "flow-actions".into())]),
                vec![&FLOWS, &FLOW_ACTIONS, &FLOW_MESSAGES],
            ),
            Stream::Templates => (
                Tier::L,
                Client::relative("/api/templates", &[]),
                vec![&TEMPLATES],
            ),
            Stream::Tags => (
                Tier::S,
                Client::relative("/api/tags", &[("include", "tag-group".into())]),
                vec![
                    &TAGS,
                    &TAG_CAMPAIGNS,
                    &TAG_FLOWS,
                    &TAG_LISTS,
                    &TAG_SEGMENTS,
                    &TAG_GROUPS,
                ],
            ),
            Stream::Suppressions => (
                Tier::L,
                Client::relative(
                    "/api/profiles",
                    &[
                        ("additional-fields[profile]", "subscriptions".into()),
                        ("page[size]", "100".into()),
                    ],
                ),
                vec![&SUPPRESSIONS],
            ),
            Stream::MetricAggregates => {
                return Err(permanent(format!(
                    "klaviyo task {} of stream {} is a page task; expected a time range",
                    task.task_id, task.stream
                )));
            }
        })
    }

    async fn fetch_engagement_pages(
        &self,
        stream: Stream,
        task: &FetchTask,
        client: &Client,
        p: &Params,
        cursor: Option<&str>,
        emit: &mut dyn Emit,
    ) -> Result<FetchOutput, ConnectorError> {
        let (tier, first, tables) = self.first_request(stream, task, p)?;
        let mut rows = Collector::new(&tables);
        let mut out = Out::new();
        let mut rel = Some(cursor.map_or(first, str::to_string));
        let mut pages = 0u32;
        // Tag groups are few and read once, by the task that reads the first page of tags.
        if stream == Stream::Tags && cursor.is_none() {
            let mut rel = Some(Client::relative("/api/tag-groups", &[]));
            while let Some(r) = rel.take() {
                let page = client.get(Tier::S, &r).await?;
                for item in &page.data {
                    match envelope(item, "tag-group") {
                        Ok((id, mut a)) => {
                            let row = vec![
                                json!(id),
                                take_text(&mut a, "name"),
                                take_bool(&mut a, "exclusive"),
                                take_bool(&mut a, "default"),
                                Value::Object(a),
                            ];
                            rows.add_row(&TAG_GROUPS, row);
                        }
                        Err(e) => out.reject(task, 0, TAG_GROUPS.name, e, item),
                    }
                }
                rel = page.next.as_deref().and_then(|n| client.relative_next(n));
            }
        }
        while let Some(r) = rel.take() {
            let page = client.get(tier, &r).await?;
            pages += 1;
            match stream {
                Stream::Campaigns => self.campaign_rows(task, pages, &page, &mut rows, &mut out),
                Stream::Flows => {
                    self.flow_rows(task, client, pages, &page, &mut rows, &mut out)
                        .await?;
                }
                Stream::Templates => template_rows(task, pages, &page, &mut rows, &mut out),
                Stream::Tags => {
                    self.tag_rows(task, client, pages, &page, &mut rows, &mut out)
                        .await?;
                }
                Stream::Suppressions => suppression_rows(task, pages, &page, &mut rows, &mut out),
                Stream::MetricAggregates => {}
            }
            let next = page.next.as_deref().and_then(|n| client.relative_next(n));
            if next.is_some() && pages >= self.dense_pages() {
                out.children.push(PlannedTask::new(
                    task.stream.clone(),
                    TaskKind::Page(PageRef {
                        cursor: next,
                        ..PageRef::default()
                    }),
                ));
                break;
            }
            if next.is_some() {
                emit.emit(rows.take()).await?;
            }
            rel = next;
        }
        if stream != Stream::Campaigns {
            out.max_time = None;
        }
        Ok(out.finish(rows.finish(), self.lag()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every request the engagement streams send, with the tier they send it at: each is
    /// the operation's `x-klaviyo-ratelimit` in the shared spec files.
    #[test]
    fn every_request_goes_at_its_operations_tier() {
        let used: &[(&str, &str, &str, Tier)] = &[
            ("campaigns", "get", "/api/campaigns", Tier::M),
            ("flows", "get", "/api/flows", Tier::S),
            (
                "flows",
                "get",
                "/api/flow-actions/{id}/flow-messages",
                Tier::S,
            ),
            ("templates", "get", "/api/templates", Tier::L),
            ("tags", "get", "/api/tags", Tier::S),
            ("tags", "get", "/api/tag-groups", Tier::S),
            (
                "tags",
                "get",
                "/api/tags/{id}/relationships/campaigns",
                Tier::S,
            ),
            ("tags", "get", "/api/tags/{id}/relationships/flows", Tier::S),
            ("tags", "get", "/api/tags/{id}/relationships/lists", Tier::S),
            (
                "tags",
                "get",
                "/api/tags/{id}/relationships/segments",
                Tier::S,
            ),
            ("profiles", "get", "/api/profiles", Tier::L),
            ("metrics", "post", "/api/metric-aggregates", Tier::S),
        ];
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs/klaviyo");
        for (file, method, path, tier) in used {
            let text = std::fs::read_to_string(dir.join(format!("{file}.json"))).unwrap();
            let spec: Value = serde_json::from_str(&text).unwrap();
            let rl = &spec["paths"][*path][*method]["x-klaviyo-ratelimit"];
            let published = tier.published();
            assert_eq!(
                (rl["burst"].as_str(), rl["steady"].as_str()),
                (
                    Some(format!("{}/s", published.burst_per_second).as_str()),
                    Some(format!("{}/m", published.steady_per_minute).as_str())
                ),
                "{method} {path}"
            );
        }
    }
}
