//! Klaviyo extraction through the JSON:API (revision-dated, default `2026-07-15`).
//!
//! Connector `klaviyo`; job streams `metrics`, `events`, `profiles`, `lists`, `segments`,
//! `list_members`, `segment_members` (parameters in [`params`], details in `docs/klaviyo.md`).
//!
//! Task shapes:
//! - `events`: per metric, `TimeRange {start, end, partition: Some(metric_id)}` of stream
//!   `events/<metric_id>`, the job's range split evenly into `split_into` windows. A window
//!   pages `GET /api/events` sorted by `datetime` (each page read typed, straight into rows:
//!   [`events_page`]); after `dense_pages` pages with more to
//!   come it stops and hands `[T, end)` (T = the last fetched event's `datetime`) to
//!   `split_into` child windows ([`windows::split_rest`]); its own events at exactly T are
//!   left to the first child, so every event is loaded by exactly one task.
//! - `profiles`: the same on `GET /api/profiles` and `updated` (partition `None`, stream
//!   `profiles`), rows versioned by `updated`.
//! - `metrics`, `lists`, `segments`: one `Page {cursor: None}` task paging up to `dense_pages`
//!   pages, then a child `Page {cursor: <next link>}` for the rest.
//! - `list_members` / `segment_members`: `Page` tasks over
//!   `GET /api/{lists|segments}/{id}/relationships/profiles` (up to `dense_pages` pages per
//!   task, then a child `Page` for the next); each page gives member rows and one child
//!   `Ids {ids}` task (≤ 100 ids) of stream `profiles` that fetches those profiles with
//!   `filter=any(id,[…])`.
//!
//! `cursor_max` of time-window and collection tasks is the greatest `datetime`/`updated` of
//! the task's records, clamped to now − `lag_seconds`, formatted `%Y-%m-%dT%H:%M:%S%.6fZ`.

use std::collections::HashMap;

/// The keys of the records at the latest instant of a window (one insert per event).
type KeySet = foldhash::HashSet<Value>;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::settings::KlaviyoSettings;
use crate::framework::Collector;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sluice_contracts::{FetchTask, Mode, PageRef, RejectedRecord, TaskKind};

use crate::{
    Cell, Connector, ConnectorContext, ConnectorError, Emit, FetchOutput, JobSpec, Plan,
    PlannedTask, StreamSpec, TableRows, cells,
};

pub mod catalog;
pub mod client;
pub mod engagement;
pub mod events_page;
pub mod limiter;
pub mod params;
pub mod records;
pub mod settings;
pub mod windows;

#[cfg(test)]
mod tests;

use client::{Client, ClientConfig, Page};
use limiter::{Limiters, Tier};
use params::{Params, RawParams, Stream};

/// Largest number of ids in one `filter=any(id,[…])` request (the spec's limit).
pub const MAX_IDS_PER_REQUEST: usize = 100;

/// The Klaviyo connector.
pub struct KlaviyoConnector {
    settings: KlaviyoSettings,
    limiters: Arc<Limiters>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

/// Builds the connector from its settings; `ctx.fetcher_replicas` divides the rate limits.
pub fn build(settings: &KlaviyoSettings, ctx: &ConnectorContext) -> KlaviyoConnector {
    KlaviyoConnector {
        settings: settings.clone(),
        limiters: Arc::new(Limiters::new(
            &settings.rate_limits,
            settings.steady_utilisation,
            ctx.fetcher_replicas.clone(),
        )),
        clients: Mutex::new(HashMap::new()),
    }
}

/// The registry's builder: the `[connectors.klaviyo]` section over [`settings::DEFAULTS`].
///
/// # Errors
/// A setting that does not fit, naming the key.
pub fn connector(
    settings: &sluice_contracts::Settings,
    ctx: &ConnectorContext,
) -> Result<Arc<dyn Connector>, crate::SettingsError> {
    let section: KlaviyoSettings =
        crate::framework::settings_section(settings, "klaviyo", settings::DEFAULTS)?;
    Ok(Arc::new(build(&section, ctx)))
}

/// The environment variable holding an account's API key.
pub fn api_key_variable(account: &str) -> String {
    format!(
        "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__{}__API_KEY",
        account.to_uppercase()
    )
}

/// What a task produced besides rows.
struct Outcome {
    /// Every Klaviyo table; a later copy of a key in the same task replaces the earlier one.
    rows: Collector,
    rejected: Vec<RejectedRecord>,
    children: Vec<PlannedTask>,
    max_time: Option<DateTime<Utc>>,
}

impl Outcome {
    fn new() -> Self {
        Self {
            rows: Collector::new(&records::TABLES),
            rejected: Vec::new(),
            children: Vec::new(),
            max_time: None,
        }
    }

    /// Adds a row of `table` (one of the `records` table names).
    fn add(&mut self, table: &str, row: Vec<Cell>) {
        let spec = records::spec(table);
        debug_assert!(spec.is_some(), "{table} is not a Klaviyo table");
        if let Some(spec) = spec {
            self.rows.add_cells(spec, row);
        }
    }

    /// Takes out the rows of `table` whose key (first value) is one of `keys`, returning
    /// them.
    fn remove(&mut self, table: &str, keys: &KeySet) -> Vec<Vec<Cell>> {
        match records::spec(table) {
            Some(spec) if !keys.is_empty() => self.rows.remove(spec, |row| {
                row.first().is_some_and(|k| keys.contains(&*k.value()))
            }),
            _ => Vec::new(),
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

    fn see_time(&mut self, t: Option<DateTime<Utc>>) {
        if let Some(t) = t
            && self.max_time.is_none_or(|m| t > m)
        {
            self.max_time = Some(t);
        }
    }

    fn into_output(self, lag: chrono::Duration) -> FetchOutput {
        let limit = Utc::now() - lag;
        FetchOutput {
            tables: self.rows.finish(),
            rejected: self.rejected,
            children: self.children,
            cursor_max: self.max_time.map(|t| windows::cursor(t.min(limit))),
        }
    }

    /// Adds one page of a time window — events with their `include=profile` profiles
    /// (`table` [`records::EVENTS`], `page` from [`events_page::decode`]), or profiles
    /// ([`records::PROFILES`]) — as rows and rejects, and returns the time of the page's last
    /// timed record. `at_latest` holds the keys of the records at the latest time seen (a
    /// split re-reads that instant, see `fetch_window`).
    fn add_window_page(
        &mut self,
        task: &FetchTask,
        page_no: u32,
        table: &'static str,
        page: Page<records::Converted, records::Converted>,
        include_profile: bool,
        at_latest: &mut (Option<DateTime<Utc>>, KeySet),
    ) -> Option<DateTime<Utc>> {
        let mut last: Option<DateTime<Utc>> = None;
        let Page { data, included, .. } = page;
        for converted in data {
            match converted {
                Ok((row, t)) => {
                    if t.is_some() {
                        if at_latest.0 != t {
                            at_latest.0 = t;
                            at_latest.1.clear();
                        }
                        at_latest.1.insert(row[0].value().into_owned());
                        last = t;
                    }
                    self.add(table, row);
                    self.see_time(t);
                }
                Err((e, item)) => self.reject(task, page_no, table, e, &item),
            }
        }
        if include_profile {
            for converted in included {
                match converted {
                    Ok((row, _)) => self.add(records::PROFILES, row),
                    Err((e, inc)) => self.reject(task, page_no, records::PROFILES, e, &inc),
                }
            }
        }
        last
    }

    /// The rows collected so far, to emit, except the records of `table` keyed by `held`
    /// (those at the latest instant), which stay: a split re-reads that instant and drops
    /// them.
    fn hand_over(&mut self, table: &str, held: &KeySet) -> Vec<TableRows> {
        let held = self.remove(table, held);
        let rows = self.rows.take();
        for row in held {
            self.add(table, row);
        }
        rows
    }
}

/// One middle page of an events task as the fetcher handles it — decode the body,
/// convert its records (and `included` profiles), hand the rows over — for
/// `benches/fetch_cpu.rs`, which measures the CPU per event of exactly this path.
///
/// # Errors
/// An undecodable body.
#[doc(hidden)]
pub fn bench_events_page(
    task: &FetchTask,
    body: &[u8],
    partition: Option<&str>,
    include_profile: bool,
) -> Result<Vec<TableRows>, String> {
    let page = events_page::decode(body, partition)?;
    let mut out = Outcome::new();
    let mut at_latest = (None, KeySet::default());
    out.add_window_page(
        task,
        1,
        records::EVENTS,
        page,
        include_profile,
        &mut at_latest,
    );
    Ok(out.hand_over(records::EVENTS, &at_latest.1))
}

fn permanent(message: String) -> ConnectorError {
    ConnectorError::Permanent(anyhow::anyhow!(message))
}

impl KlaviyoConnector {
    fn lag(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.settings.lag_seconds).unwrap_or(i64::MAX / 2))
    }

    fn lookback(&self) -> chrono::Duration {
        chrono::Duration::seconds(
            i64::try_from(self.settings.lookback_seconds).unwrap_or(i64::MAX / 2),
        )
    }

    fn dense_pages(&self) -> u32 {
        self.settings.dense_pages.max(1)
    }

    fn split_into(&self) -> u32 {
        self.settings.split_into.max(1)
    }

    /// The account's client; `Err` carries a message naming the missing setting.
    fn client(&self, account: &str) -> Result<Arc<Client>, Result<String, ConnectorError>> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(account) {
            return Ok(c.clone());
        }
        let key_var = api_key_variable(account);
        let Some(acc) = self.settings.accounts.get(account) else {
            return Err(Ok(format!(
                "klaviyo account '{account}' is not configured: set {key_var} (and optionally …__BASE_URL)"
            )));
        };
        let Some(api_key) = acc.api_key.clone() else {
            return Err(Ok(format!(
                "klaviyo account '{account}' has no API key: set {key_var}"
            )));
        };
        let client = Arc::new(
            Client::new(
                ClientConfig {
                    account: account.to_string(),
                    base_url: acc.base_url.clone(),
                    api_key,
                    revision: self.settings.revision.clone(),
                    timeout: Duration::from_secs(self.settings.request_timeout_seconds.max(1)),
                    max_throttle_waits: self.settings.max_throttle_waits,
                    max_retry_after: Duration::from_secs(self.settings.max_retry_after_seconds),
                },
                self.limiters.clone(),
            )
            .map_err(Err)?,
        );
        clients.insert(account.to_string(), client.clone());
        Ok(client)
    }

    fn plan_client(&self, account: &str) -> Result<Arc<Client>, ConnectorError> {
        self.client(account).map_err(|e| match e {
            Ok(message) => ConnectorError::InvalidParams(message),
            Err(e) => e,
        })
    }

    fn fetch_client(&self, account: &str) -> Result<Arc<Client>, ConnectorError> {
        self.client(account).map_err(|e| match e {
            Ok(message) => permanent(message),
            Err(e) => e,
        })
    }

    /// Every metric of the account: (id, name), following `links.next`.
    async fn all_metrics(&self, client: &Client) -> Result<Vec<(String, String)>, ConnectorError> {
        let mut out = Vec::new();
        let mut rel = Some(Client::relative("/api/metrics", &[]));
        let mut pages = 0u32;
        while let Some(r) = rel {
            let page = client.get(Tier::M, &r).await?;
            pages += 1;
            for m in &page.data {
                if let Some(id) = m.get("id").and_then(Value::as_str) {
                    let name = m
                        .get("attributes")
                        .and_then(|a| a.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    out.push((id.to_string(), name));
                }
            }
            rel = page.next.as_deref().and_then(|n| client.relative_next(n));
            if pages > 10_000 {
                return Err(permanent(
                    "GET /api/metrics: more than 10000 pages; the next links loop".into(),
                ));
            }
        }
        Ok(out)
    }

    /// The start of "all time" from the settings.
    fn start_of_time(&self) -> Result<DateTime<Utc>, ConnectorError> {
        DateTime::parse_from_rfc3339(&self.settings.start_of_time)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ConnectorError::InvalidParams(format!(
                    "setting connectors.klaviyo.start_of_time '{}' is not an RFC 3339 time: {e}",
                    self.settings.start_of_time
                ))
            })
    }

    /// The range `[start, end)` of one time-window stream (`task_stream`: `events/<id>` or
    /// `profiles`), from the parameters and, for incremental jobs, the bookmark.
    fn range(
        &self,
        job: &JobSpec,
        raw: &RawParams,
        task_stream: &str,
        now: DateTime<Utc>,
        warnings: &mut Vec<String>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), ConnectorError> {
        let horizon = now - self.lag();
        let mut end = raw.until.unwrap_or(horizon);
        let mut start = match raw.since {
            Some(s) => s,
            None => self.start_of_time()?,
        };
        if job.mode == Mode::Incremental {
            end = end.min(horizon);
            let bookmark = job.bookmark.as_ref();
            let stored = bookmark
                .and_then(|b| b.get("streams"))
                .and_then(|s| s.get(task_stream))
                .and_then(Value::as_str)
                .map(|c| (c, format!("streams.{task_stream}")))
                .or_else(|| {
                    bookmark
                        .and_then(|b| b.get("cursor"))
                        .and_then(Value::as_str)
                        .map(|c| (c, "cursor".to_string()))
                });
            if let Some((cursor, which)) = stored {
                match records::parse_time(cursor) {
                    Some(t) => start = t - self.lookback(),
                    None => warnings.push(format!(
                        "bookmark {which} {cursor:?} is not a time; {task_stream} starts at 'since' instead"
                    )),
                }
            }
        }
        Ok((start, end))
    }

    async fn plan_events(
        &self,
        job: &JobSpec,
        raw: RawParams,
        client: &Client,
    ) -> Result<Plan, ConnectorError> {
        let all = self.all_metrics(client).await?;
        let mut warnings = Vec::new();
        let mut chosen: Vec<(String, String)> = Vec::new();
        if raw.metrics.is_empty() {
            chosen = all.clone();
        } else {
            for wanted in &raw.metrics {
                let by_id: Vec<&(String, String)> =
                    all.iter().filter(|(id, _)| id == wanted).collect();
                let matches = if by_id.is_empty() {
                    all.iter().filter(|(_, name)| name == wanted).collect()
                } else {
                    by_id
                };
                if matches.is_empty() {
                    return Err(ConnectorError::InvalidParams(format!(
                        "parameter 'metrics': no metric has the id or name {wanted:?} in klaviyo account '{}' ({} metrics known)",
                        job.account,
                        all.len()
                    )));
                }
                if matches.len() > 1 {
                    warnings.push(format!(
                        "metric name {wanted:?} matches {} metrics ({}); all are synced",
                        matches.len(),
                        matches
                            .iter()
                            .map(|(id, _)| id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                for m in matches {
                    if !chosen.iter().any(|(id, _)| id == &m.0) {
                        chosen.push(m.clone());
                    }
                }
            }
        }
        if chosen.is_empty() {
            warnings.push(format!(
                "klaviyo account '{}' has no metrics: nothing to sync",
                job.account
            ));
        }
        let now = Utc::now();
        let mut tasks = Vec::new();
        for (id, name) in &chosen {
            let stream = format!("events/{id}");
            let (start, end) = self.range(job, &raw, &stream, now, &mut warnings)?;
            let ws = windows::split(start, end, self.split_into());
            if ws.is_empty() {
                warnings.push(format!(
                    "metric {id} ({name}): nothing to fetch, the range starts at {} and ends at {}",
                    windows::cursor(start),
                    windows::cursor(end)
                ));
            }
            for (s, e) in ws {
                tasks.push(PlannedTask {
                    stream: stream.clone(),
                    kind: TaskKind::TimeRange {
                        start: s,
                        end: e,
                        partition: Some(id.clone()),
                    },
                    once: None,
                });
            }
        }
        let params = Params {
            since: raw.since.map(windows::cursor),
            until: raw.until.map(windows::cursor),
            metrics: chosen.iter().map(|(id, _)| id.clone()).collect(),
            metric_names: chosen
                .iter()
                .map(|(id, name)| (id.clone(), Value::String(name.clone())))
                .collect(),
            include_profile: raw.include_profile,
            page_size: raw.page_size,
            ..Params::default()
        };
        tracing::info!(
            account = %job.account,
            metrics = chosen.len(),
            tasks = tasks.len(),
            "planned klaviyo events"
        );
        Ok(Plan {
            tasks,
            params: to_value(&params)?,
            warnings,
            rejected: Vec::new(),
        })
    }

    fn task_params(&self, task: &FetchTask, stream: Stream) -> Result<Params, ConnectorError> {
        let mut p: Params = match &task.params {
            Value::Null => Params::default(),
            v => serde_json::from_value(v.clone()).map_err(|e| {
                permanent(format!(
                    "klaviyo task {} carries unreadable params: {e}",
                    task.task_id
                ))
            })?,
        };
        if p.page_size == 0 {
            p.page_size = stream.default_page_size(&self.settings);
        }
        if let Some(max) = stream.max_page_size() {
            p.page_size = p.page_size.clamp(1, max);
        }
        Ok(p)
    }

    /// Pages a time window of events or profiles; splits the rest when it is dense.
    async fn fetch_window(
        &self,
        task: &FetchTask,
        client: &Client,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        partition: Option<&str>,
        emit: &mut dyn Emit,
    ) -> Result<FetchOutput, ConnectorError> {
        let events = partition.is_some() || task.stream.starts_with("events/");
        let stream = if events {
            Stream::Events
        } else {
            Stream::Profiles
        };
        let p = self.task_params(task, stream)?;
        let (path, tier, query) = if events {
            let metric = partition
                .map(str::to_string)
                .or_else(|| task.stream.strip_prefix("events/").map(str::to_string))
                .ok_or_else(|| {
                    permanent(format!("events task {} names no metric", task.task_id))
                })?;
            let filter = format!(
                "and(equals(metric_id,\"{metric}\"),greater-or-equal(datetime,{}),less-than(datetime,{}))",
                windows::filter_time(start),
                windows::filter_time(end)
            );
            let mut q = vec![
                ("filter", filter),
                ("sort", "datetime".to_string()),
                ("page[size]", p.page_size.to_string()),
            ];
            if p.include_profile {
                q.push(("include", "profile".to_string()));
            }
            ("/api/events", Tier::Xl, q)
        } else {
            // `updated` only offers greater-than / less-than: start one second early (a
            // harmless overlap) so nothing at exactly `start` is missed.
            let filter = format!(
                "and(greater-than(updated,{}),less-than(updated,{}))",
                windows::filter_time(start - chrono::Duration::seconds(1)),
                windows::filter_time(end)
            );
            (
                "/api/profiles",
                Tier::L,
                vec![
                    ("filter", filter),
                    ("sort", "updated".to_string()),
                    ("page[size]", p.page_size.to_string()),
                ],
            )
        };
        let table = if events {
            records::EVENTS
        } else {
            records::PROFILES
        };
        let mut out = Outcome::new();
        let mut rel = Some(Client::relative(path, &query));
        let mut pages = 0u32;
        let mut may_split = true;
        // The keys of the records at the latest time seen: a split re-reads that instant in
        // its first child, so these leave this task's rows and every record loads once.
        let mut at_latest: (Option<DateTime<Utc>>, KeySet) = (None, KeySet::default());
        while let Some(r) = rel.take() {
            // Events and profiles are read typed, straight into rows (issue 15).
            let page = if events {
                client
                    .get_with(tier, &r, &|body| events_page::decode(body, partition))
                    .await?
            } else {
                client
                    .get_with(tier, &r, &events_page::decode_profiles)
                    .await?
            };
            pages += 1;
            let next = page.next.as_deref().and_then(|n| client.relative_next(n));
            let last = out.add_window_page(
                task,
                pages,
                table,
                page,
                events && p.include_profile,
                &mut at_latest,
            );
            if next.is_some()
                && may_split
                && pages >= self.dense_pages()
                && let Some(t) = last.or(out.max_time)
            {
                match windows::split_rest(start, end, t, self.split_into()) {
                    Some(children) => {
                        tracing::info!(
                            task = %task.task_id,
                            stream = %task.stream,
                            pages,
                            from = %windows::cursor(t),
                            children = children.len(),
                            "dense klaviyo window; splitting the rest"
                        );
                        if at_latest.0 == Some(t) {
                            out.remove(table, &at_latest.1);
                        }
                        out.children = children
                            .into_iter()
                            .map(|(s, e)| PlannedTask {
                                stream: task.stream.clone(),
                                kind: TaskKind::TimeRange {
                                    start: s,
                                    end: e,
                                    partition: partition.map(str::to_string),
                                },
                                once: None,
                            })
                            .collect();
                        break;
                    }
                    None => may_split = false,
                }
            }
            if next.is_some() {
                // Hand this page's rows over now, so a task holds one page. The records at
                // the latest instant stay: a split re-reads that instant and drops them.
                emit.emit(out.hand_over(table, &at_latest.1)).await?;
            }
            rel = next;
        }
        Ok(out.into_output(self.lag()))
    }

    /// Fetches profiles by id, in requests of at most 100.
    async fn fetch_ids(
        &self,
        task: &FetchTask,
        client: &Client,
        ids: &[String],
    ) -> Result<FetchOutput, ConnectorError> {
        let mut out = Outcome::new();
        let mut pages = 0u32;
        for chunk in ids.chunks(MAX_IDS_PER_REQUEST) {
            let list: Vec<String> = chunk
                .iter()
                .map(|id| Value::String(id.clone()).to_string())
                .collect();
            let mut rel = Some(Client::relative(
                "/api/profiles",
                &[
                    ("filter", format!("any(id,[{}])", list.join(","))),
                    ("page[size]", MAX_IDS_PER_REQUEST.to_string()),
                ],
            ));
            while let Some(r) = rel.take() {
                let page = client
                    .get_with(Tier::L, &r, &events_page::decode_profiles)
                    .await?;
                pages += 1;
                rel = page.next.as_deref().and_then(|n| client.relative_next(n));
                for converted in page.data {
                    match converted {
                        Ok((row, _)) => out.add(records::PROFILES, row),
                        Err((e, item)) => out.reject(task, pages, records::PROFILES, e, &item),
                    }
                }
            }
        }
        // Profiles fetched by id carry no cursor: their job's stream is a membership.
        out.max_time = None;
        Ok(out.into_output(self.lag()))
    }

    /// Pages a collection (metrics, lists, segments) or a membership, up to `dense_pages`
    /// pages, handing the next page to a child task.
    async fn fetch_pages(
        &self,
        task: &FetchTask,
        client: &Client,
        stream: Stream,
        cursor: Option<&str>,
    ) -> Result<FetchOutput, ConnectorError> {
        let p = self.task_params(task, stream)?;
        let (tier, table, first) = match stream {
            Stream::Metrics => (
                Tier::M,
                records::METRICS,
                Client::relative("/api/metrics", &[]),
            ),
            Stream::Lists => (
                Tier::L,
                records::LISTS,
                Client::relative("/api/lists", &[("page[size]", p.page_size.to_string())]),
            ),
            Stream::Segments => (
                Tier::L,
                records::SEGMENTS,
                Client::relative("/api/segments", &[("page[size]", p.page_size.to_string())]),
            ),
            Stream::ListMembers | Stream::SegmentMembers => {
                let (kind, id, table) = if stream == Stream::ListMembers {
                    ("lists", p.list.as_deref(), records::LIST_MEMBERS)
                } else {
                    ("segments", p.segment.as_deref(), records::SEGMENT_MEMBERS)
                };
                let id = id.ok_or_else(|| {
                    permanent(format!(
                        "klaviyo task {} of stream {} carries no {} id in its params",
                        task.task_id,
                        stream.name(),
                        &kind[..kind.len() - 1]
                    ))
                })?;
                (
                    Tier::L,
                    table,
                    Client::relative(
                        &format!("/api/{kind}/{id}/relationships/profiles"),
                        &[("page[size]", p.page_size.to_string())],
                    ),
                )
            }
            Stream::Events | Stream::Profiles => {
                return Err(permanent(format!(
                    "klaviyo task {} of stream {} is a page task; expected a time range",
                    task.task_id,
                    stream.name()
                )));
            }
        };
        let group = match stream {
            Stream::ListMembers => p.list.clone(),
            Stream::SegmentMembers => p.segment.clone(),
            _ => None,
        };
        // A task planned before members had versions carries none: its rows get the time
        // they are read, and it removes nothing.
        let seen_at = p
            .members_version
            .clone()
            .unwrap_or_else(|| members_version(Utc::now()));
        let mut handed_over = false;
        let mut out = Outcome::new();
        let mut rel = Some(cursor.map_or(first, str::to_string));
        let mut pages = 0u32;
        while let Some(r) = rel.take() {
            let page = client.get(tier, &r).await?;
            pages += 1;
            let mut ids = Vec::new();
            for item in &page.data {
                let converted = match stream {
                    Stream::Metrics => records::metric(item),
                    Stream::Lists => records::list(item),
                    Stream::Segments => records::segment(item),
                    _ => match item.get("id").and_then(Value::as_str) {
                        Some(pid) if !pid.is_empty() => {
                            ids.push(pid.to_string());
                            Ok(records::member(
                                group.as_deref().unwrap_or(""),
                                pid,
                                &seen_at,
                            ))
                        }
                        _ => Err(format!(
                            "member without a string `id` (found {})",
                            records::short(item.get("id").unwrap_or(&Value::Null))
                        )),
                    },
                };
                match converted {
                    Ok(row) => {
                        if matches!(stream, Stream::Metrics | Stream::Lists | Stream::Segments) {
                            out.see_time(records::updated_of(&row));
                        }
                        out.add(table, cells(row));
                    }
                    Err(e) => out.reject(task, pages, table, e, item),
                }
            }
            for chunk in ids.chunks(MAX_IDS_PER_REQUEST) {
                out.children.push(PlannedTask {
                    stream: "profiles".into(),
                    kind: TaskKind::Ids {
                        ids: chunk.to_vec(),
                    },
                    once: None,
                });
            }
            let next = page.next.as_deref().and_then(|n| client.relative_next(n));
            if next.is_some() && pages >= self.dense_pages() {
                out.children.push(PlannedTask {
                    stream: task.stream.clone(),
                    kind: TaskKind::Page(PageRef {
                        cursor: next,
                        ..PageRef::default()
                    }),
                    once: None,
                });
                handed_over = true;
                break;
            }
            rel = next;
        }
        let mut output = out.into_output(self.lag());
        // The last page of a full members job: every member of the group now carries this
        // job's version, or will once the parts of earlier pages load — in any order, so
        // the sweep removes only members with an older version (left the group).
        if !handed_over && let (Some(group), Some(version)) = (group, p.members_version.as_deref())
        {
            output.tables.push(members_sweep(stream, &group, version)?);
        }
        Ok(output)
    }
}

/// The members version of a job planned at `t`: RFC 3339 UTC with microseconds, the
/// precision of `timestamptz`.
fn members_version(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A part with no rows that removes the members of `group` whose `seen_at` is older than
/// `version`: the loader's replace scope deletes the scope's rows not in the part whose
/// version is at most `scope_version`, so `scope_version` is one microsecond before the
/// job's — members this job saw (`seen_at` = `version`) stay, whichever part loads first.
fn members_sweep(
    stream: Stream,
    group: &str,
    version: &str,
) -> Result<crate::TableRows, ConnectorError> {
    let spec = if stream == Stream::ListMembers {
        &records::LIST_MEMBERS_TABLE
    } else {
        &records::SEGMENT_MEMBERS_TABLE
    };
    let before = DateTime::parse_from_rfc3339(version)
        .map_err(|e| permanent(format!("members version {version:?} is not RFC 3339: {e}")))?
        .with_timezone(&Utc)
        - chrono::Duration::microseconds(1);
    let mut sweep = spec.table_rows(Vec::new());
    sweep.merge.replace_scope = Some(vec![spec.columns[0].to_string()]);
    sweep.merge.scope_keys = vec![vec![Value::String(group.to_string())]];
    sweep.merge.scope_version = Some(Value::String(members_version(before)));
    Ok(sweep)
}

fn to_value(params: &Params) -> Result<Value, ConnectorError> {
    serde_json::to_value(params).map_err(|e| permanent(format!("serialising params: {e}")))
}

/// The stream a job names.
fn job_stream(name: &str) -> Result<Stream, ConnectorError> {
    Stream::parse(name).ok_or_else(|| {
        ConnectorError::InvalidParams(format!(
            "unknown klaviyo stream '{name}' (known: {})",
            params::STREAMS
        ))
    })
}

#[async_trait]
impl Connector for KlaviyoConnector {
    fn name(&self) -> &'static str {
        "klaviyo"
    }

    fn streams(&self) -> Vec<StreamSpec> {
        let mut streams: Vec<StreamSpec> = Stream::ALL.iter().map(|s| s.spec()).collect();
        streams.extend(catalog::streams());
        streams.extend(engagement::Stream::ALL.iter().map(|s| s.spec()));
        streams
    }

    async fn check(&self, account: &str) -> Result<String, ConnectorError> {
        let client = self.plan_client(account)?;
        // One page of metrics: authenticated, small, and in the tier with room to spare.
        let page = client
            .get(Tier::M, &Client::relative("/api/metrics", &[]))
            .await?;
        Ok(format!(
            "account {account}: GET /api/metrics answered ({} metric(s) on the first page)",
            page.data.len()
        ))
    }

    fn stream_label(&self, stream: &str, params: &Value) -> Option<String> {
        // The planner resolved every metric of the job to its name (`Params.metric_names`).
        let metric = stream
            .strip_prefix("events/")
            .or_else(|| stream.strip_prefix("metric_aggregates/"))?;
        params["metric_names"][metric].as_str().map(str::to_string)
    }

    fn validate(&self, job: &JobSpec) -> Result<(), ConnectorError> {
        if catalog::is_catalog(&job.stream) {
            return catalog::check(job).map(|_| ());
        }
        if let Some(stream) = engagement::Stream::parse(&job.stream) {
            return engagement::check(stream, &job.params);
        }
        let stream = job_stream(&job.stream)?;
        params::check(stream, &job.params, &self.settings).map(|_| ())
    }

    async fn plan(&self, job: &JobSpec) -> Result<Plan, ConnectorError> {
        if catalog::is_catalog(&job.stream) {
            catalog::check(job)?;
            self.plan_client(&job.account)?;
            return catalog::plan(job);
        }
        if let Some(stream) = engagement::Stream::parse(&job.stream) {
            return self.plan_engagement(stream, job).await;
        }
        let stream = job_stream(&job.stream)?;
        let raw = params::check(stream, &job.params, &self.settings)?;
        let client = self.plan_client(&job.account)?;
        let page = |cursor: Option<String>| PlannedTask {
            stream: stream.name().to_string(),
            kind: TaskKind::Page(PageRef {
                cursor,
                ..PageRef::default()
            }),
            once: None,
        };
        match stream {
            Stream::Events => self.plan_events(job, raw, &client).await,
            Stream::Profiles => {
                let mut warnings = Vec::new();
                let (start, end) = self.range(job, &raw, "profiles", Utc::now(), &mut warnings)?;
                let tasks: Vec<PlannedTask> = windows::split(start, end, self.split_into())
                    .into_iter()
                    .map(|(s, e)| PlannedTask {
                        stream: "profiles".into(),
                        kind: TaskKind::TimeRange {
                            start: s,
                            end: e,
                            partition: None,
                        },
                        once: None,
                    })
                    .collect();
                if tasks.is_empty() {
                    warnings.push(format!(
                        "profiles: nothing to fetch, the range starts at {} and ends at {}",
                        windows::cursor(start),
                        windows::cursor(end)
                    ));
                }
                let params = Params {
                    since: raw.since.map(windows::cursor),
                    until: raw.until.map(windows::cursor),
                    page_size: raw.page_size,
                    ..Params::default()
                };
                Ok(Plan {
                    tasks,
                    params: to_value(&params)?,
                    warnings,
                    rejected: Vec::new(),
                })
            }
            Stream::Metrics | Stream::Lists | Stream::Segments => Ok(Plan {
                tasks: vec![page(None)],
                params: to_value(&Params {
                    page_size: raw.page_size,
                    ..Params::default()
                })?,
                warnings: Vec::new(),
                rejected: Vec::new(),
            }),
            Stream::ListMembers | Stream::SegmentMembers => Ok(Plan {
                tasks: vec![page(None)],
                params: to_value(&Params {
                    list: raw.list,
                    segment: raw.segment,
                    page_size: raw.page_size,
                    members_version: Some(members_version(Utc::now())),
                    ..Params::default()
                })?,
                warnings: Vec::new(),
                rejected: Vec::new(),
            }),
        }
    }

    async fn fetch(&self, task: &FetchTask) -> Result<FetchOutput, ConnectorError> {
        crate::fetch_all(self, task).await
    }

    async fn fetch_paged(
        &self,
        task: &FetchTask,
        emit: &mut dyn Emit,
    ) -> Result<FetchOutput, ConnectorError> {
        let client = self.fetch_client(&task.account)?;
        if catalog::is_catalog(&task.stream) {
            return catalog::fetch(&client, task).await;
        }
        let base_stream = task.stream.split('/').next().unwrap_or("");
        if let Some(stream) = engagement::Stream::parse(base_stream) {
            return self.fetch_engagement(stream, task, &client, emit).await;
        }
        match (&task.kind, Stream::parse(base_stream)) {
            (
                TaskKind::TimeRange {
                    start,
                    end,
                    partition,
                },
                Some(Stream::Events | Stream::Profiles),
            ) => {
                if end <= start {
                    return Ok(Outcome::new().into_output(self.lag()));
                }
                self.fetch_window(task, &client, *start, *end, partition.as_deref(), emit)
                    .await
            }
            (TaskKind::Ids { ids }, Some(Stream::Profiles)) => {
                self.fetch_ids(task, &client, ids).await
            }
            (TaskKind::Page(PageRef { cursor, file, .. }), Some(stream)) if file.is_none() => {
                self.fetch_pages(task, &client, stream, cursor.as_deref())
                    .await
            }
            (kind, _) => Err(permanent(format!(
                "klaviyo task {} of stream '{}' has a kind this connector does not fetch: {}",
                task.task_id,
                task.stream,
                json!(kind)
            ))),
        }
    }
}
