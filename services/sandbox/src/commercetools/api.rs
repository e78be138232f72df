//! The commercetools routes: the token endpoint, the project API behind the stats, fault
//! and auth layers, and the admin routes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::project::{CustomObjectError, PageQuery, Project, Seg, parse_expand};
use super::query::{parse_sort, parse_where};
use super::{CommercetoolsConfig, FaultConfig, InvalidConfig, Resource};
use crate::auth::{self, Auth, Principal};
use crate::faults::{self, Faults, h3};

const MAX_LIMIT: usize = 500;
const MAX_OFFSET: u64 = 10_000;

/// An issued access token.
struct Token {
    /// The client it was issued to.
    client_id: String,
    scopes: Vec<String>,
    expires: Instant,
}

struct Shared {
    config: CommercetoolsConfig,
    projects: HashMap<String, RwLock<Project>>,
    tokens: Mutex<HashMap<String, Token>>,
    faults: Arc<Faults>,
    token_seq: AtomicU64,
    tokens_issued: AtomicU64,
    tokens_rejected: AtomicU64,
    auth_failures: AtomicU64,
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
}

type St = State<Arc<Shared>>;

/// An error response on its way out (boxed: responses are large).
type Fail = Box<Response>;

/// Builds the commercetools routes (see the module docs) for `config`.
pub fn router(config: CommercetoolsConfig) -> Result<Router, InvalidConfig> {
    config.validate()?;
    let mut projects = HashMap::new();
    projects.insert(
        config.project_key.clone(),
        RwLock::new(Project::generate(&config.project_key, &config.data)?),
    );
    if let Some(dir) = &config.examples_dir {
        projects.insert(
            config.examples_project_key.clone(),
            RwLock::new(Project::examples(&config.examples_project_key, dir)?),
        );
    }
    if let Some(c) = config.clients.first() {
        tracing::info!(
            project = %config.project_key,
            client_id = %c.client_id,
            client_secret = %c.client_secret,
            "commercetools emulator: get tokens at POST /oauth/token"
        );
    }
    let shared = Arc::new(Shared {
        faults: Faults::new(config.faults.clone(), fault_body),
        config,
        projects,
        tokens: Mutex::new(HashMap::new()),
        token_seq: AtomicU64::new(0),
        tokens_issued: AtomicU64::new(0),
        tokens_rejected: AtomicU64::new(0),
        auth_failures: AtomicU64::new(0),
        requests: Mutex::new(BTreeMap::new()),
    });
    let api = Router::new()
        .route("/{project}", get(project_info))
        .route("/{project}/{resource}", get(query).post(create))
        .route("/{project}/{resource}/{id}", get(by_id))
        .route(
            "/{project}/custom-objects/{container}/{key}",
            get(custom_object_get).delete(custom_object_delete),
        )
        .layer(middleware::from_fn_with_state(
            bearer_auth(&shared),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(
            shared.faults.clone(),
            faults::inject,
        ))
        .layer(middleware::from_fn_with_state(shared.clone(), count));
    Ok(api
        .route("/oauth/token", post(token))
        .route("/commercetools/_admin/stats", get(admin_stats))
        .route("/commercetools/_admin/stats/reset", post(admin_stats_reset))
        .route(
            "/commercetools/_admin/faults",
            get(admin_faults).post(admin_set_faults),
        )
        .route("/commercetools/_admin/touch", post(admin_touch))
        .route("/commercetools/_admin/tokens/expire", post(admin_expire))
        .route("/commercetools/_admin/config", get(admin_config))
        .with_state(shared))
}

// ---- errors ----

fn json_response(status: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// commercetools' `ErrorResponse` with one error.
fn error(status: StatusCode, code: &str, message: impl Into<String>, extra: Value) -> Response {
    let message = message.into();
    let mut e = json!({"code": code, "message": message});
    if let (Some(e), Value::Object(x)) = (e.as_object_mut(), extra) {
        e.extend(x);
    }
    json_response(
        status,
        &json!({"statusCode": status.as_u16(), "message": message, "errors": [e]}),
    )
}

fn invalid_input(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "InvalidInput", message, json!({}))
}

fn not_found(message: impl Into<String>) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        message,
        json!({}),
    )
}

/// commercetools' `AuthErrorResponse`.
fn auth_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = json_response(
        status,
        &json!({
            "statusCode": status.as_u16(),
            "message": message,
            "errors": [{"code": code, "message": message}],
            "error": code,
            "error_description": message,
        }),
    );
    if status == StatusCode::UNAUTHORIZED && code == "invalid_token" {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    r
}

/// The bodies of injected faults.
fn fault_body(status: StatusCode, _retry_after: Option<u64>) -> Response {
    let (code, message) = match status.as_u16() {
        500 => (
            "General",
            "Internal Server Error (injected by the sluice sandbox).",
        ),
        502 => (
            "BadGateway",
            "Bad Gateway (injected by the sluice sandbox).",
        ),
        503 => (
            "OverCapacity",
            "The service is temporarily over capacity (injected by the sluice sandbox).",
        ),
        429 => (
            "TooManyRequests",
            "Too many requests (injected by the sluice sandbox).",
        ),
        _ => ("General", "Injected by the sluice sandbox."),
    };
    error(status, code, message, json!({}))
}

// ---- stats layer ----

/// Counts every project-route response by resource and status.
async fn count(State(sh): St, request: Request, next: Next) -> Response {
    let resource = request
        .uri()
        .path()
        .split('/')
        .nth(2)
        .filter(|s| !s.is_empty())
        .unwrap_or("project")
        .to_owned();
    let known = resource == "custom-objects"
        || resource == "project"
        || Resource::from_path(&resource).is_some();
    let resource = if known { resource } else { "other".to_owned() };
    let r = next.run(request).await;
    let mut m = sh.requests.lock().unwrap_or_else(|p| p.into_inner());
    *m.entry(resource)
        .or_default()
        .entry(r.status().as_u16())
        .or_default() += 1;
    r
}

// ---- auth ----

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64_decode(b64.trim())?;
    let s = String::from_utf8(raw).ok()?;
    let (id, secret) = s.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Standard base64 (padding optional).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        })
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (k, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * k);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

impl Shared {
    /// A client's scopes with `{projectKey}` expanded to every project.
    fn client_scopes(&self, scopes: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let mut keys: Vec<&String> = self.projects.keys().collect();
        keys.sort();
        for s in scopes {
            if s.contains("{projectKey}") {
                for k in &keys {
                    out.push(s.replace("{projectKey}", k));
                }
            } else {
                out.push(s.clone());
            }
        }
        out
    }
}

async fn token(State(sh): St, headers: HeaderMap, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let reject = |status, code, message: &str| {
        sh.tokens_rejected.fetch_add(1, Ordering::Relaxed);
        auth_error(status, code, message)
    };
    let client = basic_credentials(&headers).and_then(|(id, secret)| {
        sh.config
            .clients
            .iter()
            .find(|c| c.client_id == id && c.client_secret == secret)
    });
    let Some(client) = client else {
        return reject(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Please provide valid client credentials using HTTP Basic Authentication.",
        );
    };
    let mut params: HashMap<String, String> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (k, v) in url::form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        params.entry(k.into_owned()).or_insert(v.into_owned());
    }
    match params.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(other) => {
            return reject(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!(
                    "Unsupported grant type '{other}' (the sandbox issues client_credentials tokens)."
                ),
            );
        }
        None => {
            return reject(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing required parameter: grant_type.",
            );
        }
    }
    let allowed = sh.client_scopes(&client.scopes);
    let scopes: Vec<String> = match params.get("scope") {
        Some(s) if !s.trim().is_empty() => {
            let asked: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
            if let Some(bad) = asked.iter().find(|a| !scope_allowed(a, &allowed)) {
                return reject(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!("Invalid scope: {bad}."),
                );
            }
            asked
        }
        _ => allowed,
    };
    let n = sh.token_seq.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let access = format!(
        "{:016x}{:016x}",
        h3(nanos, n, 0x70, 1),
        h3(nanos ^ 0xA5A5, n, 0x70, 2)
    );
    let lifetime = sh.config.token_lifetime_seconds;
    sh.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(
        access.clone(),
        Token {
            client_id: client.client_id.clone(),
            scopes: scopes.clone(),
            expires: Instant::now() + Duration::from_secs(lifetime.min(10 * 365 * 86_400)),
        },
    );
    sh.tokens_issued.fetch_add(1, Ordering::Relaxed);
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": scopes.join(" "),
        }),
    )
}

/// Whether a client with `allowed` scopes may ask for `asked`: one of them, or implied by
/// `manage_project:{p}` (any scope of project `p`) or `manage_x:{p}` (`view_x:{p}`).
fn scope_allowed(asked: &str, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a == asked) {
        return true;
    }
    let Some((name, project)) = asked.split_once(':') else {
        return false;
    };
    let manage = name
        .strip_prefix("view_")
        .map(|rest| format!("manage_{rest}:{project}"));
    allowed
        .iter()
        .any(|a| *a == format!("manage_project:{project}") || manage.as_deref() == Some(a.as_str()))
}

/// The scope names (without `:project`) that allow `method` on `resource`.
fn needed_scopes(resource: &str, method: &Method) -> Vec<String> {
    let write = *method != Method::GET && *method != Method::HEAD;
    let base = match resource {
        "" => "project_settings",
        "custom-objects" => "key_value_documents",
        "product-projections" => {
            return if write {
                vec!["manage_products".into()]
            } else {
                vec![
                    "view_products".into(),
                    "manage_products".into(),
                    "view_published_products".into(),
                ]
            };
        }
        r => r,
    };
    if write {
        vec![format!("manage_{base}")]
    } else {
        vec![format!("view_{base}"), format!("manage_{base}")]
    }
}

/// The bearer-token check of the project routes: a live token from `/oauth/token` (its
/// client is the principal) whose scopes allow the project and resource, else 401
/// `invalid_token` or 403 `insufficient_scope` (counted as auth failures).
fn bearer_auth(shared: &Arc<Shared>) -> Auth {
    let sh = shared.clone();
    Auth::new(move |request| {
        check_bearer(&sh, request).map_err(|(status, code, message)| {
            sh.auth_failures.fetch_add(1, Ordering::Relaxed);
            Box::new(auth_error(status, code, &message))
        })
    })
}

fn check_bearer(
    sh: &Shared,
    request: &Request,
) -> Result<Principal, (StatusCode, &'static str, String)> {
    let Some(token) = auth::credentials(request, "bearer") else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "Missing bearer token: send `Authorization: Bearer <access_token>`.".into(),
        ));
    };
    let (client, scopes) = {
        let tokens = sh.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(token) {
            Some(t) if t.expires > Instant::now() => (t.client_id.clone(), t.scopes.clone()),
            Some(_) => {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "The access token has expired.".into(),
                ));
            }
            None => {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "invalid_token".into(),
                ));
            }
        }
    };
    let mut segs = request.uri().path().split('/').skip(1);
    let project = segs.next().unwrap_or("");
    let resource = segs.next().unwrap_or("");
    let for_project: Vec<&str> = scopes
        .iter()
        .filter_map(|s| {
            let (name, rest) = s.split_once(':')?;
            let p = rest.split(':').next()?;
            (p == project).then_some(name)
        })
        .collect();
    if for_project.is_empty() {
        return Err((
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("The token's scopes do not include the project '{project}'."),
        ));
    }
    let needed = needed_scopes(resource, request.method());
    if !for_project
        .iter()
        .any(|s| *s == "manage_project" || needed.iter().any(|n| n == s))
    {
        return Err((
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!(
                "Insufficient scope. One of the following scopes is missing: {}",
                needed.join(", ")
            ),
        ));
    }
    Ok(Principal(client))
}

// ---- project API ----

/// Decoded query parameters.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<&str>) -> Params {
        Params(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool, Fail> {
        match self.get(name) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(fail(invalid_input(format!(
                "Malformed parameter: {name}: '{v}' is not a boolean."
            )))),
        }
    }

    fn expand(&self) -> Result<Vec<Vec<Seg>>, Fail> {
        self.all("expand")
            .map(|e| {
                parse_expand(e).ok_or_else(|| {
                    fail(invalid_input(format!(
                        "Malformed parameter: expand: invalid path '{e}'."
                    )))
                })
            })
            .collect()
    }

    /// The paged query of the parameters. `published`: the allowed form of published tests
    /// (`Some(true)`: `masterData(published = …)` of products, `Some(false)`:
    /// `published = …` of product projections, `None`: neither).
    fn page_query(&self, published: Option<bool>) -> Result<PageQuery, Fail> {
        let num = |name: &str, default: u64| -> Result<u64, Fail> {
            match self.get(name) {
                None => Ok(default),
                Some(v) => v.trim().parse::<u64>().map_err(|_| {
                    fail(invalid_input(format!(
                        "Malformed parameter: {name}: '{v}' is not a non-negative integer."
                    )))
                }),
            }
        };
        let limit = num("limit", 20)?;
        if limit > MAX_LIMIT as u64 {
            return Err(fail(invalid_input(format!(
                "The maximum for limit is {MAX_LIMIT}, but {limit} was given."
            ))));
        }
        let offset = num("offset", 0)?;
        if offset > MAX_OFFSET {
            return Err(fail(invalid_input(format!(
                "The maximum for offset is {MAX_OFFSET}, but {offset} was given. Use a \
                 `where` on a sorted field (e.g. `id > \"<last id>\"` with `sort=id asc`) \
                 to page further."
            ))));
        }
        let with_total = self.flag("withTotal", true)?;
        let vars: HashMap<String, String> = self
            .0
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("var.").map(|n| (n.to_owned(), v.clone())))
            .collect();
        let mut preds = Vec::new();
        for w in self.all("where") {
            let p = parse_where(w, &vars).map_err(|e| {
                fail(invalid_input(format!(
                    "Malformed parameter: where: {e}. Predicate: {w}"
                )))
            })?;
            if let Some(master_data) = p.published_mismatch(published) {
                let (used, hint) = if master_data {
                    ("masterData(published = …)", "use it on products")
                } else {
                    ("published = …", "use it on product projections")
                };
                return Err(fail(invalid_input(format!(
                    "Malformed parameter: where: the field {used} does not exist on this \
                     resource ({hint}). Predicate: {w}"
                ))));
            }
            preds.push(p);
        }
        let pred = match preds.len() {
            0 => None,
            1 => preds.pop(),
            _ => Some(super::query::Pred::And(preds)),
        };
        let sort = self
            .all("sort")
            .map(|s| {
                parse_sort(s)
                    .map_err(|e| fail(invalid_input(format!("Malformed parameter: sort: {e}"))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PageQuery {
            pred,
            sort,
            limit: limit as usize,
            offset,
            with_total,
        })
    }
}

fn fail(r: Response) -> Fail {
    Box::new(r)
}

fn paged(limit: usize, offset: u64, results: Vec<Value>, total: Option<u64>) -> Response {
    let mut v = json!({
        "limit": limit,
        "offset": offset,
        "count": results.len(),
        "results": results,
    });
    if let Some(t) = total {
        v["total"] = json!(t);
    }
    json_response(StatusCode::OK, &v)
}

fn project_of<'a>(sh: &'a Shared, key: &str) -> Result<&'a RwLock<Project>, Fail> {
    sh.projects
        .get(key)
        .ok_or_else(|| fail(not_found(format!("The project '{key}' does not exist."))))
}

fn read(p: &RwLock<Project>) -> std::sync::RwLockReadGuard<'_, Project> {
    p.read().unwrap_or_else(|e| e.into_inner())
}

fn write(p: &RwLock<Project>) -> std::sync::RwLockWriteGuard<'_, Project> {
    p.write().unwrap_or_else(|e| e.into_inner())
}

fn unknown_endpoint(resource: &str) -> Response {
    not_found(format!(
        "The endpoint '{resource}' is not emulated by the sluice sandbox (served: customers, \
         orders, categories, products, product-projections, custom-objects)."
    ))
}

async fn project_info(State(sh): St, Path(project): Path<String>) -> Response {
    if let Err(r) = project_of(&sh, &project) {
        return *r;
    }
    json_response(
        StatusCode::OK,
        &json!({
            "key": project,
            "name": format!("sluice sandbox {project}"),
            "version": 1,
            "countries": ["DE", "AT", "US", "GB", "FR"],
            "currencies": ["EUR", "USD", "GBP"],
            "languages": ["en", "de", "de-AT", "en-GB", "fr"],
            "createdAt": "2023-01-01T00:00:00.000Z",
            "trialUntil": null,
            "messages": {"enabled": false, "deleteDaysAfterCreation": 15},
            "carts": {"countryTaxRateFallbackEnabled": false, "deleteDaysAfterLastModification": 90},
            "shoppingLists": {"deleteDaysAfterLastModification": 360},
            "searchIndexing": {},
        }),
    )
}

async fn query(
    State(sh): St,
    Path((project, resource)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = match project_of(&sh, &project) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let params = Params::parse(q.as_deref());
    if resource == "custom-objects" {
        return custom_objects_list(&read(p), None, &params);
    }
    let Some(r) = Resource::from_path(&resource) else {
        return unknown_endpoint(&resource);
    };
    let published = match r {
        Resource::Products => Some(true),
        Resource::ProductProjections => Some(false),
        _ => None,
    };
    let pq = match params.page_query(published) {
        Ok(q) => q,
        Err(e) => return *e,
    };
    let (staged, expand) = match (params.flag("staged", false), params.expand()) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return *e,
    };
    let (results, total) = read(p).page(r, &pq, staged, &expand);
    paged(pq.limit, pq.offset, results, total)
}

fn custom_objects_list(p: &Project, container: Option<&str>, params: &Params) -> Response {
    let pq = match params.page_query(None) {
        Ok(q) => q,
        Err(e) => return *e,
    };
    let col = match super::project::Collection::stored(p.custom_objects(container)) {
        Ok(c) => c,
        Err(e) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "General", e, json!({}));
        }
    };
    let (idx, total) = col.run(&pq, false);
    let objects = p.custom_objects(container);
    let results = idx
        .into_iter()
        .map(|i| objects[i as usize].clone())
        .collect();
    paged(pq.limit, pq.offset, results, total)
}

async fn by_id(
    State(sh): St,
    Path((project, resource, id)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = match project_of(&sh, &project) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let params = Params::parse(q.as_deref());
    if resource == "custom-objects" {
        // `GET /custom-objects/{container}`: the container's objects.
        if !valid_name(&id) {
            return invalid_input(format!(
                "The container '{id}' does not match ^[-_~.a-zA-Z0-9]+$."
            ));
        }
        return custom_objects_list(&read(p), Some(&id), &params);
    }
    let Some(r) = Resource::from_path(&resource) else {
        return unknown_endpoint(&resource);
    };
    let (staged, expand) = match (params.flag("staged", false), params.expand()) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return *e,
    };
    let p = read(p);
    match p.get_staged(r, &id, staged) {
        Some(mut v) => {
            p.expand(&mut v, &expand);
            json_response(StatusCode::OK, &v)
        }
        None => not_found(format!("The Resource with ID '{id}' was not found.")),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_~.".contains(c))
}

#[derive(Deserialize)]
struct CustomObjectDraft {
    container: Option<String>,
    key: Option<String>,
    value: Option<Value>,
    version: Option<u64>,
}

fn conflict(current: Option<u64>) -> Response {
    let extra = match current {
        Some(v) => json!({"currentVersion": v}),
        None => json!({}),
    };
    error(
        StatusCode::CONFLICT,
        "ConcurrentModification",
        "Version mismatch. Concurrent modification.",
        extra,
    )
}

async fn create(
    State(sh): St,
    Path((project, resource)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let p = match project_of(&sh, &project) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if resource != "custom-objects" {
        if Resource::from_path(&resource).is_some() {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "InvalidOperation",
                format!("The sluice sandbox serves {resource} read-only."),
                json!({}),
            );
        }
        return unknown_endpoint(&resource);
    }
    let draft: CustomObjectDraft = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidJsonInput",
                "Request body does not contain valid JSON.",
                json!({"detailedErrorMessage": e.to_string()}),
            );
        }
    };
    let (Some(container), Some(key), Some(value)) = (draft.container, draft.key, draft.value)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidJsonInput",
            "Request body does not contain valid JSON.",
            json!({"detailedErrorMessage": "container, key and value are required"}),
        );
    };
    for (what, v) in [("container", &container), ("key", &key)] {
        if !valid_name(v) {
            return invalid_input(format!(
                "The {what} '{v}' does not match ^[-_~.a-zA-Z0-9]+$."
            ));
        }
    }
    let result =
        write(p).put_custom_object(&container, &key, value, draft.version, chrono::Utc::now());
    match result {
        Ok((true, o)) => json_response(StatusCode::CREATED, &o),
        Ok((false, o)) => json_response(StatusCode::OK, &o),
        Err(CustomObjectError::Conflict(v)) => conflict(v),
        Err(CustomObjectError::NotFound) => not_found("The CustomObject was not found."),
    }
}

fn custom_object_missing(container: &str, key: &str) -> Response {
    not_found(format!(
        "The CustomObject with ID '({container},{key})' was not found."
    ))
}

async fn custom_object_get(
    State(sh): St,
    Path((project, container, key)): Path<(String, String, String)>,
) -> Response {
    let p = match project_of(&sh, &project) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match read(p).custom_object(&container, &key) {
        Some(o) => json_response(StatusCode::OK, &o),
        None => custom_object_missing(&container, &key),
    }
}

async fn custom_object_delete(
    State(sh): St,
    Path((project, container, key)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = match project_of(&sh, &project) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let params = Params::parse(q.as_deref());
    let version = match params.get("version").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return invalid_input("Malformed parameter: version: not a non-negative integer.");
        }
    };
    let result = write(p).delete_custom_object(&container, &key, version);
    match result {
        Ok(o) => json_response(StatusCode::OK, &o),
        Err(CustomObjectError::NotFound) => custom_object_missing(&container, &key),
        Err(CustomObjectError::Conflict(v)) => conflict(v),
    }
}

// ---- admin ----

fn admin_json(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn admin_error(msg: impl Into<String>) -> Response {
    admin_json(StatusCode::BAD_REQUEST, json!({"error": msg.into()}))
}

async fn admin_stats(State(sh): St) -> Response {
    let requests = sh
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let total: u64 = requests.values().flat_map(|m| m.values()).sum();
    let faults = sh.faults.stats();
    let by_resource: serde_json::Map<String, Value> = requests
        .into_iter()
        .map(|(r, m)| {
            let m: serde_json::Map<String, Value> = m
                .into_iter()
                .map(|(s, n)| (s.to_string(), json!(n)))
                .collect();
            (r, Value::Object(m))
        })
        .collect();
    admin_json(
        StatusCode::OK,
        json!({
            "requests": {"total": total, "by_resource": by_resource},
            "tokens": {
                "issued": sh.tokens_issued.load(Ordering::Relaxed),
                "rejected": sh.tokens_rejected.load(Ordering::Relaxed),
            },
            "auth_failures": sh.auth_failures.load(Ordering::Relaxed),
            "peak_concurrency": faults.peak_concurrency,
            "in_flight": faults.in_flight,
            "faults": faults,
        }),
    )
}

async fn admin_stats_reset(State(sh): St) -> Response {
    sh.requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    for a in [&sh.tokens_issued, &sh.tokens_rejected, &sh.auth_failures] {
        a.store(0, Ordering::Relaxed);
    }
    sh.faults.reset_stats();
    admin_stats(State(sh)).await
}

async fn admin_faults(State(sh): St) -> Response {
    admin_json(StatusCode::OK, json!(sh.faults.config()))
}

async fn admin_set_faults(State(sh): St, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultConfig>(&body) {
        Ok(f) => {
            sh.faults.set(f);
            admin_json(StatusCode::OK, json!(sh.faults.config()))
        }
        Err(e) => admin_error(format!("bad fault config: {e}")),
    }
}

async fn admin_config(State(sh): St) -> Response {
    let mut c = sh.config.clone();
    c.faults = sh.faults.config();
    admin_json(StatusCode::OK, json!(c))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TouchRequest {
    resource: Resource,
    count: usize,
    at: Option<chrono::DateTime<chrono::Utc>>,
    project: Option<String>,
}

async fn admin_touch(State(sh): St, body: Bytes) -> Response {
    let req: TouchRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return admin_error(format!("bad touch request: {e}")),
    };
    let key = req.project.unwrap_or_else(|| sh.config.project_key.clone());
    let Some(p) = sh.projects.get(&key) else {
        return admin_error(format!("no project {key:?}"));
    };
    let mut p = write(p);
    let ids = p.touch(
        req.resource,
        req.count.min(1_000_000),
        req.at.unwrap_or_else(chrono::Utc::now),
    );
    let resources: Vec<Value> = ids
        .iter()
        .filter_map(|id| p.get_staged(req.resource, id, true))
        .collect();
    admin_json(StatusCode::OK, json!({"ids": ids, "resources": resources}))
}

async fn admin_expire(State(sh): St) -> Response {
    let mut tokens = sh.tokens.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let mut n = 0;
    for t in tokens.values_mut() {
        if t.expires > now {
            t.expires = now;
            n += 1;
        }
    }
    admin_json(StatusCode::OK, json!({"expired": n}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(
            base64_decode("c2x1aWNlLXNhbmRib3g6c2VjcmV0").as_deref(),
            Some(&b"sluice-sandbox:secret"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("Y"), None);
        assert_eq!(base64_decode("Y!=="), None);
    }

    #[test]
    fn implied_scopes() {
        let allowed = vec!["manage_project:a".to_owned(), "manage_orders:b".to_owned()];
        assert!(scope_allowed("view_orders:a", &allowed));
        assert!(scope_allowed("manage_project:a", &allowed));
        assert!(scope_allowed("view_orders:b", &allowed));
        assert!(!scope_allowed("view_customers:b", &allowed));
        assert!(!scope_allowed("manage_project:c", &allowed));
        assert!(!scope_allowed("manage_project", &allowed));
    }

    #[test]
    fn scopes_per_resource() {
        assert_eq!(
            needed_scopes("orders", &Method::GET),
            vec!["view_orders", "manage_orders"]
        );
        assert_eq!(
            needed_scopes("custom-objects", &Method::POST),
            vec!["manage_key_value_documents"]
        );
        assert!(
            needed_scopes("product-projections", &Method::GET)
                .contains(&"view_published_products".to_owned())
        );
    }
}
