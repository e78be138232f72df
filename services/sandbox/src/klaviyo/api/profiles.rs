//! `GET /api/profiles` and `GET /api/profiles/{id}`.

use super::*;

impl Ctx<'_> {
    pub(super) fn updated_of(&self, i: u64) -> i64 {
        if let Some(k) = i.checked_sub(self.d.spec.profiles) {
            return self.ov.written.profiles[k as usize].updated;
        }
        self.ov
            .touched
            .get(&i)
            .copied()
            .unwrap_or_else(|| self.d.profile_updated(i))
    }

    pub(super) fn profile_json(&self, i: u64, joined: Option<i64>) -> Value {
        let d = self.d;
        let id = self.pid(i);
        let mut attrs = self.profile_attrs(i);
        if let Some(j) = joined {
            attrs.insert("joined_group_at".into(), json!(fmt_time(j)));
        }
        let extra = self.q.list("additional-fields[profile]");
        let r = h3(d.spec.seed, i, 77, 0);
        if extra.iter().any(|x| x == "subscriptions") {
            let suppression: Vec<Value> = d
                .suppression(i)
                .map(|(reason, t)| json!({"reason": reason, "timestamp": fmt_time(t)}))
                .into_iter()
                .collect();
            let subscribed = !r.is_multiple_of(5) && suppression.is_empty();
            attrs.insert(
                "subscriptions".into(),
                json!({"email": {"marketing": {
                    "can_receive_email_marketing": subscribed,
                    "consent": if subscribed { "SUBSCRIBED" } else { "UNSUBSCRIBED" },
                    "consent_timestamp": fmt_time(d.profile_created(i)),
                    "method": "FORM",
                    "suppression": suppression,
                    "list_suppressions": [],
                }}}),
            );
        }
        if extra.iter().any(|x| x == "predictive_analytics") {
            attrs.insert(
                "predictive_analytics".into(),
                json!({
                    "historic_clv": (r % 100_000) as f64 / 100.0,
                    "predicted_clv": ((r >> 20) % 50_000) as f64 / 100.0,
                    "total_clv": ((r % 100_000) + ((r >> 20) % 50_000)) as f64 / 100.0,
                    "historic_number_of_orders": (r >> 40) % 20,
                    "predicted_number_of_orders": (r >> 45) % 5,
                    "average_days_between_orders": (r >> 50) % 90,
                    "average_order_value": ((r >> 30) % 20_000) as f64 / 100.0,
                    "churn_probability": ((r >> 8) % 100) as f64 / 100.0,
                    "expected_date_of_next_order": fmt_time(d.profile_updated(i) + 30 * 86_400),
                }),
            );
        }
        let mut rels = json!({
            "lists": {"links": self.rel("profiles", &id, "lists")},
            "segments": {"links": self.rel("profiles", &id, "segments")},
        });
        // Included relationships list their resources (`include` is checked against the
        // endpoint's enum, so only the profile endpoints get here with one).
        for (name, lists) in [("lists", true), ("segments", false)] {
            if self.including(name) {
                let kind = if lists { "list" } else { "segment" };
                rels[name]["data"] = self
                    .memberships(lists, i)
                    .into_iter()
                    .map(|g| json!({"type": kind, "id": self.group(lists, g).id}))
                    .collect();
            }
        }
        // Not modelled: a profile has no push tokens or conversations.
        for name in ["push-tokens", "conversations"] {
            if self.including(name) {
                rels[name] = json!({"data": [], "links": self.rel("profiles", &id, name)});
            }
        }
        json!({
            "type": "profile",
            "id": id,
            "attributes": sparse(attrs, &self.q.list("fields[profile]")),
            "relationships": rels,
            "links": {"self": format!("{}/api/profiles/{id}/", self.base)},
        })
    }

    /// Indexes of the lists (`lists`) or segments profile `i` belongs to.
    pub(super) fn memberships(&self, lists: bool, i: u64) -> Vec<usize> {
        if i >= self.d.spec.profiles {
            // Written profiles join no list or segment.
            return Vec::new();
        }
        let n = if lists {
            self.d.lists.len()
        } else {
            self.d.segments.len()
        };
        (0..n)
            .filter(|&g| self.d.is_member(self.group(lists, g), i))
            .collect()
    }

    /// `GET /api/profiles/{id}`: the profile and, with `include=lists`/`segments`, its lists
    /// and segments.
    pub(super) fn profile(&self) -> Result<Value, ApiErr> {
        let i = self
            .profile_idx(&self.id)
            .ok_or_else(|| ApiErr::not_found(format!("Profile {} not found.", self.id)))?;
        let mut doc =
            json!({"data": self.profile_json(i, None), "links": {"self": self.self_link()}});
        if !self.includes().is_empty() {
            let mut inc = Vec::new();
            for (name, lists) in [("lists", true), ("segments", false)] {
                if self.including(name) {
                    inc.extend(
                        self.memberships(lists, i)
                            .into_iter()
                            .map(|g| self.group_json(lists, g)),
                    );
                }
            }
            doc["included"] = Value::Array(inc);
        }
        Ok(doc)
    }

    /// Resolves identity conditions (`id`/`profile_id`, `email`, `phone_number`,
    /// `external_id`) into candidate profile indexes.
    pub(super) fn identity(&self, c: &Cond, set: &mut Option<BTreeSet<u64>>) -> bool {
        let vals = text_value(c);
        let field = c.field.as_str();
        let f: &dyn Fn(&str) -> Option<u64> = match field {
            "id" | "profile_id" => &|v| self.profile_idx(v),
            "email" | "phone_number" | "external_id" => &|v| self.identified(field, v),
            _ => return false,
        };
        intersect(set, vals.into_iter().filter_map(f));
        true
    }

    pub(super) fn profiles(&self) -> Result<Value, ApiErr> {
        let d = self.d;
        let page = self.page(20, 100)?;
        let conds = self.filter(&page, PROFILES_ALLOWED)?;
        let sort = match page.sort.as_deref() {
            Some(
                s @ ("email"
                | "-email"
                | "subscriptions.email.marketing.list_suppressions.timestamp"
                | "-subscriptions.email.marketing.list_suppressions.timestamp"
                | "subscriptions.email.marketing.suppression.timestamp"
                | "-subscriptions.email.marketing.suppression.timestamp"),
            ) => {
                return Err(ApiErr::param(
                    "sort",
                    format!(
                        "The sort '{s}' is allowed by Klaviyo but not emulated by the sluice sandbox."
                    ),
                ));
            }
            _ => self.sort_of(
                &page,
                &["created", "-created", "id", "-id", "updated", "-updated"],
            )?,
        };
        // A backward (`links.prev`) page is read in the other direction, then reversed.
        let desc = sort.is_some_and(|s| s.starts_with('-')) != page.back;
        let by_updated = sort.is_some_and(|s| s.ends_with("updated"));
        let mut set: Option<BTreeSet<u64>> = None;
        let (mut cb, mut ub) = (Bounds::default(), Bounds::default());
        for c in &conds {
            if self.identity(c, &mut set) {
                continue;
            }
            match c.field.as_str() {
                "created" => cb.apply(c.op, datetime_value(c)?),
                "updated" => ub.apply(c.op, datetime_value(c)?),
                other => return Err(not_emulated(other)),
            }
        }
        let prim = |i: u64| {
            if by_updated {
                self.updated_of(i)
            } else {
                i as i64
            }
        };
        let cur: Option<(i64, i64)> = page.pos.as_ref().map(|p| {
            (
                p.first().copied().unwrap_or(0),
                p.get(1).copied().unwrap_or(0),
            )
        });
        let ok = |i: u64| cb.contains(self.created_of(i)) && ub.contains(self.updated_of(i));
        let mut items: Vec<((i64, i64), u64)> = Vec::new();
        let mut horizons = Vec::new();
        match set {
            Some(set) => {
                for i in set {
                    let k = (prim(i), i as i64);
                    if ok(i) && after(&k, cur.as_ref(), desc) {
                        items.push((k, i));
                    }
                }
            }
            None => {
                let n = d.spec.profiles;
                let created_at = |t: i64| d.first_profile_at(t, |d, i| d.profile_created(i));
                let updated_at = |t: i64| d.first_profile_at(t, |d, i| d.profile_updated(i));
                let mut lo = created_at(cb.lo).max(updated_at(ub.lo));
                let mut hi = created_at(cb.hi).min(updated_at(ub.hi));
                // The generated key is monotone in the index: the cursor is an index bound.
                let gprim_at = |t: i64| -> u64 {
                    if by_updated {
                        updated_at(t)
                    } else {
                        t.clamp(0, n as i64) as u64
                    }
                };
                if let Some((kt, ki)) = cur {
                    let (p, q) = (gprim_at(kt), gprim_at(kt.saturating_add(1)));
                    if desc {
                        hi = hi.min((ki.max(0) as u64).clamp(p, q));
                    } else {
                        lo = lo.max(((ki + 1).max(0) as u64).clamp(p, q));
                    }
                }
                let need = page.size + 1;
                let mut taken = Vec::new();
                let mut last = None;
                let mut i = if desc { hi } else { lo };
                while taken.len() < need && lo < hi && if desc { i > lo } else { i < hi } {
                    let idx = if desc { i - 1 } else { i };
                    if !self.ov.touched.contains_key(&idx) {
                        taken.push(idx);
                    }
                    last = Some(idx);
                    i = if desc { i - 1 } else { i + 1 };
                }
                let more = if desc { i > lo } else { i < hi };
                if let Some(l) = last.filter(|_| more) {
                    let gprim = if by_updated {
                        d.profile_updated(l)
                    } else {
                        l as i64
                    };
                    horizons.push((gprim, l as i64));
                }
                for idx in taken {
                    items.push(((prim(idx), idx as i64), idx));
                }
                let written = (0..self.ov.written.profiles.len() as u64).map(|k| n + k);
                for idx in self.ov.touched.keys().copied().chain(written) {
                    let k = (prim(idx), idx as i64);
                    if ok(idx) && after(&k, cur.as_ref(), desc) {
                        items.push((k, idx));
                    }
                }
            }
        }
        let (mut page_items, more) = paginate(items, &horizons, page.size, desc);
        if page.back {
            page_items.reverse();
        }
        let key = |k: &(i64, i64)| vec![k.0, k.1];
        let links = Self::keyset_links(
            &page,
            page_items.first().map(|x| key(&x.0)),
            page_items.last().map(|x| key(&x.0)),
            more.as_ref().map(key),
        );
        let data = page_items
            .into_iter()
            .map(|(_, i)| self.profile_json(i, None))
            .collect();
        // `include=push-tokens`/`conversations`: none to include.
        let included = (!self.includes().is_empty()).then(Vec::new);
        Ok(self.collection(&page, data, included, links))
    }
}
