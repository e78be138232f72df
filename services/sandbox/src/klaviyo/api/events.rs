//! `GET /api/events`: generated and appended events, filtered by metric, profile and time.

use super::*;

/// Event sort key: `(timestamp, metric, 0 generated | 1 appended, index | seq)`.
pub(super) type EKey = (i64, i64, i64, i64);

/// One event to write.
pub(super) struct Written<'a> {
    pub id: &'a str,
    /// Metric index.
    pub m: usize,
    /// Epoch seconds.
    pub ts: i64,
    pub uuid: &'a str,
    /// Profile index.
    pub profile: u64,
    /// `event_properties` as JSON text.
    pub props: &'a str,
    /// Its attribution's id, if it has one (and they were asked for).
    pub attribution: Option<&'a str>,
    /// Whether `include=attributions` was asked for.
    pub attributions: bool,
}

pub(super) enum EItem {
    Gen { m: usize, idx: u64 },
    App { m: usize, ts: i64, seq: u64 },
}

impl Ctx<'_> {
    /// An attribution resource (`include=attributions`): `id`, attributing event `event`.
    pub(super) fn attribution_json(&self, id: &str, event: &str) -> Value {
        json!({
            "type": "attribution",
            "id": id,
            "relationships": {
                "event": {
                    "data": {"type": "event", "id": event},
                    "links": self.rel("attributions", id, "event"),
                },
            },
        })
    }

    /// Appends one event resource to `out` (written directly: this is the hot path).
    pub(super) fn write_event(&self, out: &mut String, e: &Written<'_>, fields: &[String]) {
        use std::fmt::Write as _;
        let b = &self.base_json;
        let (id, ts) = (e.id, e.ts);
        let want = |f: &str| fields.is_empty() || fields.iter().any(|x| x == f);
        let _ = write!(out, r#"{{"type":"event","id":"{id}","attributes":{{"#);
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !first {
                out.push(',');
            }
            first = false;
        };
        if want("timestamp") {
            sep(out);
            let _ = write!(out, r#""timestamp":{ts}"#);
        }
        if want("event_properties") {
            sep(out);
            out.push_str(r#""event_properties":"#);
            out.push_str(e.props);
        }
        if want("datetime") {
            sep(out);
            let _ = write!(out, r#""datetime":"{}""#, fmt_time(ts));
        }
        if want("uuid") {
            sep(out);
            let _ = write!(out, r#""uuid":"{}""#, e.uuid);
        }
        let pid = self.pid(e.profile);
        let mid = self.mid(e.m);
        // With `include=attributions` the relationship lists them (none: `[]`).
        let attribution_data = if e.attributions {
            match e.attribution {
                Some(a) => format!(r#""data":[{{"type":"attribution","id":"{a}"}}],"#),
                None => r#""data":[],"#.to_owned(),
            }
        } else {
            String::new()
        };
        let _ = write!(
            out,
            concat!(
                r#"}},"relationships":{{"#,
                r#""profile":{{"data":{{"type":"profile","id":"{pid}"}},"links":{{"self":"{b}/api/events/{id}/relationships/profile/","related":"{b}/api/events/{id}/profile/"}}}},"#,
                r#""metric":{{"data":{{"type":"metric","id":"{mid}"}},"links":{{"self":"{b}/api/events/{id}/relationships/metric/","related":"{b}/api/events/{id}/metric/"}}}},"#,
                r#""attributions":{{{ad}"links":{{"self":"{b}/api/events/{id}/relationships/attributions/","related":"{b}/api/events/{id}/attributions/"}}}}"#,
                r#"}},"links":{{"self":"{b}/api/events/{id}/"}}}}"#
            ),
            pid = pid,
            mid = mid,
            b = b,
            id = id,
            ad = attribution_data,
        );
    }

    pub(super) fn events(&self) -> Result<Doc, ApiErr> {
        let d = self.d;
        let page = self.page(200, 1000)?;
        let conds = self.filter(&page, EVENTS_ALLOWED)?;
        let sort = self.sort_of(&page, &["datetime", "-datetime", "timestamp", "-timestamp"])?;
        // A backward (`links.prev`) page is read in the other direction, then reversed.
        let desc = sort.is_some_and(|s| s.starts_with('-')) != page.back;
        let mut metrics: Vec<usize> = (0..self.metric_count()).collect();
        let mut profile: Option<u64> = None;
        let mut nothing = false;
        let mut b = Bounds::default();
        for c in &conds {
            let text = c.value.as_ref().and_then(Lit::text).unwrap_or("");
            match c.field.as_str() {
                "metric_id" => match self.metric_idx(text) {
                    Some(m) => metrics.retain(|&x| x == m),
                    None => nothing = true,
                },
                "profile_id" => match self.profile_idx(text) {
                    Some(p) if profile.is_none_or(|q| q == p) => profile = Some(p),
                    _ => nothing = true,
                },
                "datetime" => b.apply(c.op, datetime_value(c)?),
                "timestamp" => {
                    let x: f64 = text.parse().map_err(|_| {
                        ApiErr::param(
                            "filter",
                            format!("'{text}' is not a valid number for the field 'timestamp'."),
                        )
                    })?;
                    b.apply(c.op, x);
                }
                _ => {}
            }
        }
        if nothing {
            metrics.clear();
        }
        let cur: Option<EKey> = page.pos.as_ref().map(|p| {
            let g = |i: usize| p.get(i).copied().unwrap_or(0);
            (g(0), g(1), g(2), g(3))
        });
        let need = page.size as u64 + 1;
        let mut items: Vec<(EKey, EItem)> = Vec::new();
        let mut horizons: Vec<EKey> = Vec::new();
        for &m in &metrics {
            let mi = m as i64;
            // Metrics created by events, and profiles created by writes, have no generated
            // events.
            let generated = m < d.metrics.len() && profile.is_none_or(|p| p < d.spec.profiles);
            let (mut ga, mut gb) = if generated {
                (d.count_before(m, b.lo), d.count_before(m, b.hi))
            } else {
                (0, 0)
            };
            if let Some((kt, km, ks, ki)) = cur.filter(|_| generated) {
                if !desc {
                    let lo = if mi < km || (mi == km && ks == 1) {
                        d.count_before(m, kt.saturating_add(1))
                    } else if mi == km {
                        (ki + 1).max(0) as u64
                    } else {
                        d.count_before(m, kt)
                    };
                    ga = ga.max(lo);
                } else {
                    let hi = if mi > km {
                        d.count_before(m, kt)
                    } else if mi == km && ks == 0 {
                        ki.max(0) as u64
                    } else {
                        d.count_before(m, kt.saturating_add(1))
                    };
                    gb = gb.min(hi);
                }
            }
            if ga < gb {
                // A profile's events are scattered: scan chunk after chunk until the page
                // can be filled (or the range ends), so pages are full like Klaviyo's.
                let (chunk, wanted) = match profile {
                    Some(_) => (PROFILE_SCAN, need),
                    None => (need, 0),
                };
                let mut found = 0u64;
                let (mut a, mut z) = if desc {
                    (ga.max(gb.saturating_sub(chunk)), gb)
                } else {
                    (ga, gb.min(ga + chunk))
                };
                loop {
                    let times = d.times(m, a, z);
                    let key = |k: usize| (times[k], mi, 0, (a + k as u64) as i64);
                    for k in 0..times.len() {
                        let idx = a + k as u64;
                        if profile.is_none_or(|p| d.event_profile(m, idx) == p) {
                            items.push((key(k), EItem::Gen { m, idx }));
                            found += 1;
                        }
                    }
                    let more = if desc { a > ga } else { z < gb };
                    if !more {
                        break;
                    }
                    if found >= wanted {
                        if !times.is_empty() {
                            horizons.push(key(if desc { 0 } else { times.len() - 1 }));
                        }
                        break;
                    }
                    (a, z) = if desc {
                        (ga.max(a.saturating_sub(chunk)), a)
                    } else {
                        (z, gb.min(z + chunk))
                    };
                }
            }
            if let Some(events) = self.ov.events.get(m) {
                for (&(ts, seq), e) in events.range((b.lo, 0)..(b.hi, 0)) {
                    let k = (ts, mi, 1, seq as i64);
                    if after(&k, cur.as_ref(), desc) && profile.is_none_or(|p| e.profile == p) {
                        items.push((k, EItem::App { m, ts, seq }));
                    }
                }
            }
        }
        let (mut page_items, more) = paginate(items, &horizons, page.size, desc);
        if page.back {
            page_items.reverse();
        }
        let key = |k: &EKey| vec![k.0, k.1, k.2, k.3];
        let links = Self::keyset_links(
            &page,
            page_items.first().map(|x| key(&x.0)),
            page_items.last().map(|x| key(&x.0)),
            more.as_ref().map(key),
        );
        let fields = self.q.list("fields[event]");
        let attributions = self.including("attributions");
        let mut out = String::with_capacity(page_items.len() * 1_200 + 1_024);
        out.push_str(r#"{"data":["#);
        let mut inc_profiles = BTreeSet::new();
        let mut inc_metrics = BTreeSet::new();
        let mut inc_attributions = Vec::new();
        for ((ts, _, _, _), item) in page_items {
            if !out.ends_with('[') {
                out.push(',');
            }
            let (m, p) = match item {
                EItem::Gen { m, idx } => {
                    let id = d.event_id(m, idx);
                    let p = d.event_profile(m, idx);
                    let props = d.event_properties(m, idx, ts).to_string();
                    let uuid = d.event_uuid(m, idx, ts);
                    let attribution = attributions.then(|| d.event_attribution(m, idx)).flatten();
                    let e = Written {
                        id: &id,
                        m,
                        ts,
                        uuid: &uuid,
                        profile: p,
                        props: &props,
                        attribution: attribution.as_deref(),
                        attributions,
                    };
                    self.write_event(&mut out, &e, &fields);
                    if let Some(a) = attribution {
                        inc_attributions.push(self.attribution_json(&a, &id));
                    }
                    (m, p)
                }
                EItem::App { m, ts, seq } => {
                    let Some(e) = self.ov.events[m].get(&(ts, seq)) else {
                        continue;
                    };
                    let w = Written {
                        id: &e.id,
                        m,
                        ts,
                        uuid: &e.uuid,
                        profile: e.profile,
                        props: &e.properties,
                        attribution: None,
                        attributions,
                    };
                    self.write_event(&mut out, &w, &fields);
                    (m, e.profile)
                }
            };
            inc_profiles.insert(p);
            inc_metrics.insert(m);
        }
        let include = self.includes();
        let included = (!include.is_empty()).then(|| {
            let mut inc = Vec::new();
            if include.iter().any(|i| i == "metric") {
                inc.extend(inc_metrics.iter().map(|&m| self.metric_json(m)));
            }
            if include.iter().any(|i| i == "profile") {
                inc.extend(inc_profiles.iter().map(|&p| self.profile_json(p, None)));
            }
            inc.extend(inc_attributions);
            inc
        });
        let doc = self.collection(&page, Vec::new(), included, links);
        out.push_str(r#"],"links":"#);
        out.push_str(&doc["links"].to_string());
        if let Some(inc) = doc.get("included") {
            out.push_str(r#","included":"#);
            out.push_str(&inc.to_string());
        }
        out.push('}');
        Ok(Doc::Raw(out))
    }
}
