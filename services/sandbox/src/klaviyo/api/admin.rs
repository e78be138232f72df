//! The admin routes under `/klaviyo/_admin/`.

use super::*;

fn admin_json(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn admin_error(msg: impl Into<String>) -> Response {
    admin_json(StatusCode::BAD_REQUEST, json!({"error": msg.into()}))
}

pub(super) async fn admin_stats(State(sh): St) -> Response {
    let live = sh.live();
    let mut v = sh.stats.json();
    v["rate_limit_scale"] = json!(live.config.rate_limit_scale);
    v["slow"] = json!(sh.faults.stats().slow);
    admin_json(StatusCode::OK, v)
}

pub(super) async fn admin_stats_reset(State(sh): St) -> Response {
    sh.stats.reset();
    admin_json(StatusCode::OK, sh.stats.json())
}

pub(super) async fn admin_faults(State(sh): St) -> Response {
    admin_json(StatusCode::OK, json!(sh.live().config.faults))
}

/// Swaps in a new configuration (keeping the overlay when `keep_overlay`).
fn install(sh: &Shared, config: KlaviyoConfig) -> Result<(), InvalidSpec> {
    let old = sh.live();
    let data = Dataset::new(&config.data)?;
    let overlay = if old.config.data == config.data {
        old.overlay.clone()
    } else {
        Arc::new(RwLock::new(Overlay {
            events: (0..data.metrics.len()).map(|_| BTreeMap::new()).collect(),
            ..Overlay::default()
        }))
    };
    sh.faults.set(config.faults.clone());
    *sh.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Live {
        config,
        data,
        overlay,
    });
    Ok(())
}

pub(super) async fn admin_set_faults(State(sh): St, body: Bytes) -> Response {
    let faults: FaultConfig = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return admin_error(format!("bad fault config: {e}")),
    };
    let mut config = sh.live().config.clone();
    config.faults = faults;
    // The data do not change, so the dataset is rebuilt cheaply and the overlay kept.
    match install(&sh, config) {
        Ok(()) => admin_json(StatusCode::OK, json!(sh.live().config.faults)),
        Err(e) => admin_error(e.to_string()),
    }
}

pub(super) async fn admin_config(State(sh): St) -> Response {
    admin_json(StatusCode::OK, json!(sh.live().config))
}

pub(super) async fn admin_set_config(State(sh): St, body: Bytes) -> Response {
    let config: KlaviyoConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return admin_error(format!("bad config: {e}")),
    };
    match install(&sh, config) {
        Ok(()) => {
            sh.limiter.reset();
            admin_json(StatusCode::OK, json!(sh.live().config))
        }
        Err(e) => admin_error(e.to_string()),
    }
}

fn parse_time(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64().map(|x| x.floor() as i64)),
        Value::String(s) => filter::parse_datetime(s)
            .map(|x| Some(x.floor() as i64))
            .ok_or_else(|| format!("'{s}' is not a datetime")),
        other => Err(format!("{other} is not a datetime")),
    }
}

pub(super) async fn admin_events(State(sh): St, body: Bytes) -> Response {
    let live = sh.live();
    let d = &live.data;
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return admin_error(format!("bad JSON: {e}")),
    };
    let metric = match req["metric_id"].as_str() {
        Some(id) => match d.metric_index(id) {
            Some(m) => Some(m),
            None => return admin_error(format!("unknown metric_id {id}")),
        },
        None => None,
    };
    let when = match parse_time(&req["datetime"]) {
        Ok(t) => t.unwrap_or_else(|| chrono::Utc::now().timestamp()),
        Err(e) => return admin_error(e),
    };
    if d.metrics.is_empty() {
        return admin_error("the account has no metrics");
    }
    let mut ov = live.overlay.write().unwrap_or_else(|p| p.into_inner());
    let mut ids = Vec::new();
    if let Some(count) = req["count"].as_u64() {
        for _ in 0..count.min(1_000_000) {
            let seq = ov.next_seq;
            ov.next_seq += 1;
            let m = metric.unwrap_or((seq % d.metrics.len() as u64) as usize);
            let profile = h3(d.spec.seed ^ 0xADD, seq, 1, 0) % d.spec.profiles;
            let props = d.event_properties(m, (1 << 39) | seq, when);
            ids.push(push_event(d, &mut ov, m, seq, when, profile, props));
        }
    } else {
        let Some(m) = metric else {
            return admin_error("`metric_id` (or `count`) is required");
        };
        let profile = match req["profile_id"].as_str().map(|p| d.profile_index(p)) {
            Some(Some(p)) => p,
            _ => return admin_error("`profile_id` must be a generated profile's id"),
        };
        let props = match &req["properties"] {
            Value::Null => json!({}),
            v => v.clone(),
        };
        let seq = ov.next_seq;
        ov.next_seq += 1;
        ids.push(push_event(d, &mut ov, m, seq, when, profile, props));
    }
    admin_json(StatusCode::OK, json!({"ids": ids}))
}

fn push_event(
    d: &Dataset,
    ov: &mut Overlay,
    m: usize,
    seq: u64,
    ts: i64,
    profile: u64,
    properties: Value,
) -> String {
    let id = d.appended_event_id(m, seq);
    if ov.events.len() < d.metrics.len() {
        ov.events.resize_with(d.metrics.len(), BTreeMap::new);
    }
    ov.events[m].insert(
        (ts, seq),
        Appended::new(
            id.clone(),
            d.event_uuid(m, (1 << 39) | seq, ts),
            profile,
            &properties,
        ),
    );
    id
}

pub(super) async fn admin_touch(State(sh): St, Path(id): Path<String>, body: Bytes) -> Response {
    let live = sh.live();
    let d = &live.data;
    let Some(i) = d.profile_index(&id) else {
        return admin_json(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no profile {id}")}),
        );
    };
    let req: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return admin_error(format!("bad JSON: {e}")),
        }
    };
    let updated = match parse_time(&req["updated"]) {
        Ok(t) => t.unwrap_or_else(|| chrono::Utc::now().timestamp()),
        Err(e) => return admin_error(e),
    };
    live.overlay
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .touched
        .insert(i, updated);
    let ov = live.overlay.read().unwrap_or_else(|p| p.into_inner());
    let cx = Ctx {
        base_json: String::new(),
        d,
        ov: &ov,
        q: Query::parse(""),
        base: String::new(),
        ep: Ep::Profile,
        id,
        revision: String::new(),
    };
    admin_json(StatusCode::OK, json!({"data": cx.profile_json(i, None)}))
}
