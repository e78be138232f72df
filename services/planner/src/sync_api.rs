//! The commercetools–Klaviyo plugin's bulk import API, drop-in, served by the planner
//! (`docs/klaviyo-sync.md`):
//!
//! - `POST /sync/customers|orders|categories|products` → 202 with an empty body once the job
//!   is planned (or queued behind a busy planner); bodies `{"ids": […]}` (customers,
//!   orders), `{"startId": "…"}` (orders), `{"deleteAll": true, "confirmDeletion":
//!   "categories"|"products"}`, and sluice's own `{"incremental": true}`;
//! - the same sync already running → 423 `{"message": "<X> sync is already running."}`; the
//!   plugin's own lock still in commercetools → 423 naming it; a request the plugin refused
//!   → 400 `{"message": …}`;
//! - `POST /sync/<x>/stop` → 200, or 400 `{"message": "<X> sync is not currently running."}`;
//! - `GET /sync/status` → what runs and the last summary of each kind (the plugin answered
//!   202 and nothing).
//!
//! Each request becomes an ordinary `JobRequest` on the `jobs` queue, so a sync is planned,
//! fetched, loaded, retried and resumed like every other job, with as many fetchers and
//! loaders as run. The API only answers what the plugin's callers expect: it waits (a few
//! seconds at most) for the planner to take the job's stream lock, so that a concurrent
//! start gets its 423 rather than a 202 for a job that is then refused.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sluice_broker::{Broker, Headers, Route};
use sluice_contracts::{
    ControlMessage, JobRequest, MESSAGE_VERSION, Mode, Settings, config::SyncApiSettings,
};
use sluice_store::Pool;
use sluice_store::ledger::{self, CancelResult, JobState};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};
use uuid::Uuid;

/// The broker connection of the planner's current session, when it has one: the API
/// outlives reconnects and answers 503 while there is none.
pub type BrokerSlot = Arc<RwLock<Option<Arc<Broker>>>>;

/// How long a start waits for the planner to take (or be refused) the job's stream lock
/// before answering 202 anyway (the job is queued and will run).
const PLANNING_WAIT: Duration = Duration::from_secs(10);

/// One kind of sync the plugin offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// `/sync/customers`: customers → Klaviyo profiles.
    Customers,
    /// `/sync/orders`: orders → Placed/Ordered Product/Fulfilled/Cancelled Order events.
    Orders,
    /// `/sync/categories`: categories → catalog categories.
    Categories,
    /// `/sync/products`: published products → catalog items and variants.
    Products,
}

impl SyncKind {
    /// The kind named by the URL's path segment.
    pub fn parse(segment: &str) -> Option<Self> {
        Some(match segment {
            "customers" => Self::Customers,
            "orders" => Self::Orders,
            "categories" => Self::Categories,
            "products" => Self::Products,
            _ => return None,
        })
    }

    /// The commercetools stream that pushes this kind.
    pub fn stream(self) -> &'static str {
        match self {
            Self::Customers => "customers",
            Self::Orders => "orders",
            Self::Categories => "categories",
            Self::Products => "products",
        }
    }

    /// The Klaviyo stream whose `delete_all` job empties this kind's catalogue.
    pub fn delete_stream(self) -> Option<&'static str> {
        match self {
            Self::Categories => Some("catalog_categories"),
            Self::Products => Some("catalog_items"),
            _ => None,
        }
    }

    /// The word the plugin's messages start with.
    pub fn title(self) -> &'static str {
        match self {
            Self::Customers => "Customers",
            Self::Orders => "Orders",
            Self::Categories => "Categories",
            Self::Products => "Products",
        }
    }

    const ALL: [Self; 4] = [
        Self::Customers,
        Self::Orders,
        Self::Categories,
        Self::Products,
    ];
}

#[derive(Clone)]
struct Api {
    pool: Pool,
    broker: BrokerSlot,
    settings: Arc<SyncApiSettings>,
    /// The Klaviyo connector account whose catalogue a delete-all reads.
    klaviyo_account: Arc<str>,
}

/// Serves the API when `settings.sync_api` asks for it (see [`SyncApiSettings::enabled`])
/// until `shutdown`. Returns the address it listens on, or `None` when off.
///
/// # Errors
/// The address cannot be bound or parsed (naming it).
pub async fn start(
    settings: &Settings,
    pool: Pool,
    broker: BrokerSlot,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let api = &settings.sync_api;
    let enabled = api
        .enabled
        .unwrap_or_else(|| settings.destinations.contains_key(&api.destination));
    if !enabled {
        return Ok(None);
    }
    let mut bind: SocketAddr = api.bind.parse().map_err(|e| {
        anyhow::anyhow!(
            "SLUICE__SYNC_API__BIND {:?} is not an address like 127.0.0.1:6779: {e}",
            api.bind
        )
    })?;
    if api.token().is_none() && !bind.ip().is_loopback() {
        warn!(
            requested = %bind,
            "the sync API has no token (SLUICE__SYNC_API__TOKEN), so it listens on loopback only"
        );
        bind.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the sync API port {bind}: {e}"))?;
    let addr = listener.local_addr()?;
    let klaviyo_account: Arc<str> = settings
        .destinations
        .get(&api.destination)
        .and_then(|d| d.0.get("account"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .into();
    let state = Api {
        pool,
        broker,
        settings: Arc::new(api.clone()),
        klaviyo_account,
    };
    let app = router(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    info!(%addr, destination = %api.destination, "sync API listening");
    Ok(Some(addr))
}

fn router(state: Api) -> Router {
    Router::new()
        .route("/sync/status", get(status))
        .route("/sync/{kind}", post(start_sync))
        .route("/sync/{kind}/stop", post(stop_sync))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "message": text.into() }))).into_response()
}

/// Refuses a request without the configured bearer token (compared in constant time).
async fn authorize(State(api): State<Api>, request: Request, next: Next) -> Response {
    if let Some(token) = api.settings.token()
        && !bearer_matches(request.headers(), token)
    {
        return message(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <SLUICE__SYNC_API__TOKEN>)",
        );
    }
    next.run(request).await
}

fn bearer_matches(headers: &HeaderMap, token: &SecretString) -> bool {
    use subtle::ConstantTimeEq;
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given
        .as_bytes()
        .ct_eq(token.expose_secret().as_bytes())
        .into()
}

/// A start request's body, as the plugin read it (unknown fields are ignored, as the plugin
/// did).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    start_id: Option<String>,
    #[serde(default)]
    delete_all: Option<bool>,
    /// The plugin's README spells it `confirmDeletetion`; both are read.
    #[serde(default, alias = "confirmDeletetion")]
    confirm_deletion: Option<String>,
    /// sluice's own: push only what changed since the last successful push.
    #[serde(default)]
    incremental: Option<bool>,
}

/// What a start request asks for, validated: the job to publish and the streams whose
/// running job makes it a 423.
#[derive(Debug, PartialEq)]
struct Planned {
    connector: &'static str,
    stream: &'static str,
    params: Value,
    mode: Mode,
}

fn plan_request(kind: SyncKind, body: &[u8]) -> Result<Planned, String> {
    let body: StartBody = if body.iter().all(u8::is_ascii_whitespace) {
        StartBody::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| format!("the body is not the JSON expected: {e}"))?
    };
    if body.delete_all == Some(true) {
        let Some(stream) = kind.delete_stream() else {
            return Err(format!(
                "deleteAll is only available for categories and products, not {}.",
                kind.stream()
            ));
        };
        if body.confirm_deletion.as_deref() != Some(kind.stream()) {
            return Err(format!(
                "Deleting all {k} from the Klaviyo catalogue cannot be undone and removes {k} \
                 of every origin: add \"confirmDeletion\": \"{k}\" to the body to confirm.",
                k = kind.stream()
            ));
        }
        return Ok(Planned {
            connector: "klaviyo",
            stream,
            params: json!({ "delete_all": true }),
            mode: Mode::Full,
        });
    }
    let mut params = serde_json::Map::new();
    match (&body.ids, kind) {
        (Some(ids), SyncKind::Customers | SyncKind::Orders) if !ids.is_empty() => {
            params.insert("ids".into(), json!(ids));
        }
        (Some(ids), _) if !ids.is_empty() => {
            return Err(format!(
                "ids is only available for customers and orders, not {}.",
                kind.stream()
            ));
        }
        _ => {}
    }
    match (&body.start_id, kind) {
        // The plugin let `ids` win over `startId`.
        (Some(start), SyncKind::Orders) if !params.contains_key("ids") => {
            params.insert("start_id".into(), json!(start));
        }
        (Some(_), SyncKind::Orders) => {}
        (Some(_), _) => {
            return Err(format!(
                "startId is only available for orders, not {}.",
                kind.stream()
            ));
        }
        (None, _) => {}
    }
    Ok(Planned {
        connector: "commercetools",
        stream: kind.stream(),
        params: Value::Object(params),
        mode: if body.incremental == Some(true) {
            Mode::Incremental
        } else {
            Mode::Full
        },
    })
}

impl Api {
    /// The (connector, account, stream) pairs a kind's jobs lock.
    fn streams(&self, kind: SyncKind) -> Vec<(&'static str, String, &'static str)> {
        let mut streams = vec![(
            "commercetools",
            self.settings.account.clone(),
            kind.stream(),
        )];
        if let Some(delete) = kind.delete_stream() {
            streams.push(("klaviyo", self.klaviyo_account.to_string(), delete));
        }
        streams
    }

    async fn running(&self, kind: SyncKind) -> anyhow::Result<Option<Uuid>> {
        let client = self.pool.get().await?;
        for (connector, account, stream) in self.streams(kind) {
            if let Some(job) = ledger::active_job(
                &**client,
                connector,
                &account,
                stream,
                &self.settings.destination,
            )
            .await?
            {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    fn broker(&self) -> Option<Arc<Broker>> {
        self.broker
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn internal(e: &anyhow::Error) -> Response {
    warn!(error = %format!("{e:#}"), "sync API request failed");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("sluice cannot take the request now: {e:#}"),
    )
}

async fn start_sync(State(api): State<Api>, Path(segment): Path<String>, body: Bytes) -> Response {
    let Some(kind) = SyncKind::parse(&segment) else {
        return message(StatusCode::NOT_FOUND, format!("no sync called {segment:?}"));
    };
    let planned = match plan_request(kind, &body) {
        Ok(p) => p,
        Err(why) => return message(StatusCode::BAD_REQUEST, why),
    };
    let already = || {
        message(
            StatusCode::LOCKED,
            format!("{} sync is already running.", kind.title()),
        )
    };
    match api.running(kind).await {
        Ok(Some(_)) => return already(),
        Ok(None) => {}
        Err(e) => return internal(&e),
    }
    let Some(broker) = api.broker() else {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "sluice is reconnecting to RabbitMQ; try again in a few seconds",
        );
    };
    let account = if planned.connector == "klaviyo" {
        api.klaviyo_account.to_string()
    } else {
        api.settings.account.clone()
    };
    let request = JobRequest {
        v: MESSAGE_VERSION,
        job_id: Uuid::new_v4(),
        connector: planned.connector.to_string(),
        stream: planned.stream.to_string(),
        account,
        params: planned.params,
        mode: planned.mode,
        requested_at: chrono::Utc::now(),
        destination: api.settings.destination.clone(),
    };
    // Recorded before it is published (as `sluicectl sync` does), so `GET /sync/status`
    // and `sluicectl jobs list` show it at once.
    match api.pool.get().await {
        Ok(client) => {
            if let Err(e) = ledger::insert_job(&**client, &request).await {
                return internal(&e.into());
            }
        }
        Err(e) => return internal(&e.into()),
    }
    // The root of the job's trace: the planner's `plan` span continues from its
    // `traceparent` (docs/operations.md, "Traces").
    let root = sluice_service::job_root_span(&request, "http");
    let headers = root.in_scope(|| Headers::default().traced(request.job_id));
    if let Err(e) = broker
        .publish(Route::Jobs, &request, headers)
        .instrument(root)
        .await
    {
        return internal(&e.into());
    }
    info!(job_id = %request.job_id, kind = kind.stream(), "sync requested through the API");
    // Wait for the planner's verdict on the lock (and on what it refuses), so a concurrent
    // start is answered 423 here rather than refused later where nobody looks.
    let deadline = tokio::time::Instant::now() + PLANNING_WAIT;
    loop {
        let report = match api.pool.get().await {
            Ok(client) => ledger::job_summary(&**client, request.job_id).await,
            Err(e) => return internal(&e.into()),
        };
        match report {
            Ok(Some(job)) if job.state == JobState::Failed => {
                let error = job.error.unwrap_or_default();
                if error.contains("already has a running job") {
                    return already();
                }
                if error.contains("klaviyo-ct-plugin-lock") {
                    return message(StatusCode::LOCKED, error);
                }
                return message(StatusCode::BAD_REQUEST, error);
            }
            Ok(Some(job)) if job.state != JobState::Queued => break,
            Ok(_) => {}
            Err(e) => return internal(&e.into()),
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (
        StatusCode::ACCEPTED,
        [("x-sluice-job-id", request.job_id.to_string())],
    )
        .into_response()
}

async fn stop_sync(State(api): State<Api>, Path(segment): Path<String>) -> Response {
    let Some(kind) = SyncKind::parse(&segment) else {
        return message(StatusCode::NOT_FOUND, format!("no sync called {segment:?}"));
    };
    let not_running = || {
        message(
            StatusCode::BAD_REQUEST,
            format!("{} sync is not currently running.", kind.title()),
        )
    };
    let job = match api.running(kind).await {
        Ok(Some(job)) => job,
        Ok(None) => return not_running(),
        Err(e) => return internal(&e),
    };
    match ledger::cancel_job(&api.pool, job).await {
        Ok(CancelResult::Cancelled) => {}
        Ok(_) => return not_running(),
        Err(e) => return internal(&e.into()),
    }
    // Fetchers drop the job's tasks at once on the control broadcast; the ledger's cancel
    // alone already keeps anything more from being settled.
    if let Some(broker) = api.broker()
        && let Err(e) = broker.broadcast(&ControlMessage::cancel(job)).await
    {
        warn!(%job, error = %e, "the cancel broadcast failed; fetchers learn of it from the ledger");
    }
    info!(job_id = %job, kind = kind.stream(), "sync stopped through the API");
    message(
        StatusCode::OK,
        format!(
            "{} sync stopped. Klaviyo jobs already submitted still complete.",
            kind.title()
        ),
    )
}

async fn status(State(api): State<Api>) -> Response {
    match status_body(&api).await {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(e) => internal(&e),
    }
}

async fn status_body(api: &Api) -> anyhow::Result<Value> {
    let client = api.pool.get().await?;
    let mut out = serde_json::Map::new();
    for kind in SyncKind::ALL {
        let running = match api.running(kind).await? {
            Some(job) => ledger::job_summary(&**client, job)
                .await?
                .map(serde_json::to_value)
                .transpose()?,
            None => None,
        };
        let mut last: Option<ledger::JobSummary> = None;
        for (connector, account, stream) in api.streams(kind) {
            if let Some(job) = ledger::last_ended_job(
                &**client,
                connector,
                &account,
                stream,
                &api.settings.destination,
            )
            .await?
                && last
                    .as_ref()
                    .is_none_or(|l| l.finished_at < job.finished_at)
            {
                last = Some(job);
            }
        }
        let last = match last {
            Some(job) => Some(ledger::sync_summary(&**client, &job).await?),
            None => None,
        };
        out.insert(
            kind.stream().to_string(),
            json!({ "running": running, "last": last }),
        );
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_the_plugins_jobs() {
        let p = plan_request(SyncKind::Customers, b"").unwrap();
        assert_eq!(
            (p.connector, p.stream, &p.params, p.mode),
            ("commercetools", "customers", &json!({}), Mode::Full)
        );
        let p = plan_request(SyncKind::Orders, br#"{"ids": ["a", "b"], "startId": "x"}"#).unwrap();
        assert_eq!(p.params, json!({"ids": ["a", "b"]}), "ids win over startId");
        let p = plan_request(
            SyncKind::Orders,
            br#"{"startId": "x", "incremental": true}"#,
        )
        .unwrap();
        assert_eq!(
            (&p.params, p.mode),
            (&json!({"start_id": "x"}), Mode::Incremental)
        );
        let p = plan_request(
            SyncKind::Products,
            br#"{"deleteAll": true, "confirmDeletetion": "products"}"#,
        )
        .unwrap();
        assert_eq!(
            (p.connector, p.stream, &p.params),
            ("klaviyo", "catalog_items", &json!({"delete_all": true}))
        );
    }

    #[test]
    fn what_the_plugin_refused_is_refused_with_what_to_add() {
        let e = plan_request(SyncKind::Categories, br#"{"deleteAll": true}"#).unwrap_err();
        assert!(e.contains("\"confirmDeletion\": \"categories\""), "{e}");
        let e = plan_request(
            SyncKind::Categories,
            br#"{"deleteAll": true, "confirmDeletion": "products"}"#,
        )
        .unwrap_err();
        assert!(e.contains("\"confirmDeletion\": \"categories\""), "{e}");
        let e = plan_request(SyncKind::Orders, br#"{"deleteAll": true}"#).unwrap_err();
        assert!(
            e.contains("only available for categories and products"),
            "{e}"
        );
        let e = plan_request(SyncKind::Products, br#"{"ids": ["p"]}"#).unwrap_err();
        assert!(e.contains("only available for customers and orders"), "{e}");
        let e = plan_request(SyncKind::Customers, br#"{"startId": "c"}"#).unwrap_err();
        assert!(e.contains("only available for orders"), "{e}");
        let e = plan_request(SyncKind::Customers, b"{ids").unwrap_err();
        assert!(e.contains("not the JSON expected"), "{e}");
    }

    #[test]
    fn only_the_configured_bearer_token_passes() {
        let token = SecretString::from("s3cret");
        let mut headers = HeaderMap::new();
        assert!(!bearer_matches(&headers, &token));
        headers.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(!bearer_matches(&headers, &token));
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(bearer_matches(&headers, &token));
    }
}
