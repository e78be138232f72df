//! Lists and segments: `GET /api/{lists,segments}[/{id}]` and their members.

use super::*;

impl Ctx<'_> {
    pub(super) fn group(&self, lists: bool, g: usize) -> &GroupGen {
        if lists {
            &self.d.lists[g]
        } else {
            &self.d.segments[g]
        }
    }

    pub(super) fn group_json(&self, lists: bool, g: usize) -> Value {
        let gr = self.group(lists, g);
        let kind = if lists { "lists" } else { "segments" };
        let mut attrs = Map::new();
        attrs.insert("name".into(), json!(gr.name));
        attrs.insert("created".into(), json!(fmt_time(gr.created)));
        attrs.insert("updated".into(), json!(fmt_time(gr.updated)));
        if lists {
            attrs.insert(
                "opt_in_process".into(),
                json!(if gr.double_opt_in {
                    "double_opt_in"
                } else {
                    "single_opt_in"
                }),
            );
        } else {
            attrs.insert("definition".into(), Value::Null);
            attrs.insert("is_active".into(), json!(true));
            attrs.insert("is_processing".into(), json!(false));
            attrs.insert("is_starred".into(), json!(gr.starred));
        }
        let (fields, additional) = if lists {
            ("fields[list]", "additional-fields[list]")
        } else {
            ("fields[segment]", "additional-fields[segment]")
        };
        if self.q.list(additional).iter().any(|a| a == "profile_count") {
            let count = (0..self.d.spec.profiles)
                .filter(|&i| self.d.is_member(gr, i))
                .count();
            attrs.insert("profile_count".into(), json!(count));
        }
        let mut rels = json!({
            "profiles": {"links": self.rel(kind, &gr.id, "profiles")},
            "tags": {"links": self.rel(kind, &gr.id, "tags")},
            "flow-triggers": {"links": self.rel(kind, &gr.id, "flow-triggers")},
        });
        let own = matches!(self.ep, Ep::Lists | Ep::List | Ep::Segments | Ep::Segment);
        for name in ["tags", "flow-triggers"] {
            if own && self.including(name) {
                // Tags and flows are not modelled: none.
                rels[name]["data"] = json!([]);
            }
        }
        json!({
            "type": if lists { "list" } else { "segment" },
            "id": gr.id,
            "attributes": sparse(attrs, &self.q.list(fields)),
            "relationships": rels,
            "links": {"self": format!("{}/api/{kind}/{}/", self.base, gr.id)},
        })
    }

    /// A page of `all` by offset (`links.prev` to the page before, when there is one); with
    /// an `include` (of resources the sandbox does not model) an empty `included`.
    pub(super) fn offset_page(
        &self,
        page: &Page,
        all: Vec<usize>,
        render: impl Fn(usize) -> Value,
    ) -> Result<Value, ApiErr> {
        let from = page
            .pos
            .as_ref()
            .and_then(|p| p.first())
            .copied()
            .unwrap_or(0)
            .max(0) as usize;
        let to = (from + page.size).min(all.len());
        let data = all
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .map(|&x| render(x))
            .collect();
        let links = PageLinks {
            next: (to < all.len()).then(|| vec![to as i64]),
            prev: (from > 0).then(|| (vec![from.saturating_sub(page.size) as i64], false)),
        };
        let included = (!self.includes().is_empty()).then(Vec::new);
        Ok(self.collection(page, data, included, links))
    }

    pub(super) fn groups(&self, lists: bool) -> Result<Value, ApiErr> {
        let page = self.page(10, 10)?;
        let conds = self.filter(
            &page,
            if lists {
                LISTS_ALLOWED
            } else {
                SEGMENTS_ALLOWED
            },
        )?;
        let sort = self.sort_of(
            &page,
            &[
                "created", "-created", "id", "-id", "name", "-name", "updated", "-updated",
            ],
        )?;
        let n = if lists {
            self.d.lists.len()
        } else {
            self.d.segments.len()
        };
        let mut all = Vec::new();
        for g in 0..n {
            let gr = self.group(lists, g);
            let mut keep = true;
            for c in &conds {
                let v = text_value(c);
                keep &= match c.field.as_str() {
                    "id" => v.contains(&gr.id.as_str()),
                    "name" => v.contains(&gr.name.as_str()),
                    "created" => (gr.created as f64) > datetime_value(c)?,
                    "updated" => (gr.updated as f64) > datetime_value(c)?,
                    "is_active" => v.contains(&"true"),
                    _ => v.contains(&if gr.starred { "true" } else { "false" }),
                };
            }
            if keep {
                all.push(g);
            }
        }
        if let Some(s) = sort {
            let field = s.trim_start_matches('-');
            all.sort_by(|&a, &b| {
                let (a, b) = (self.group(lists, a), self.group(lists, b));
                match field {
                    "created" => a.created.cmp(&b.created),
                    "id" => a.id.cmp(&b.id),
                    "name" => a.name.cmp(&b.name),
                    _ => a.updated.cmp(&b.updated),
                }
                .then(a.id.cmp(&b.id))
            });
            if s.starts_with('-') {
                all.reverse();
            }
        }
        self.offset_page(&page, all, |g| self.group_json(lists, g))
    }

    pub(super) fn members(&self, lists: bool, full: bool) -> Result<Value, ApiErr> {
        let d = self.d;
        let g = d.group_index(lists, &self.id).ok_or_else(|| {
            ApiErr::not_found(format!(
                "{} {} not found.",
                if lists { "List" } else { "Segment" },
                self.id
            ))
        })?;
        let gr = self.group(lists, g);
        let page = self.page(20, 100)?;
        let conds = self.filter(
            &page,
            if lists {
                LIST_MEMBERS_ALLOWED
            } else {
                SEGMENT_MEMBERS_ALLOWED
            },
        )?;
        let sort = self.sort_of(&page, &["joined_group_at", "-joined_group_at"])?;
        // A backward (`links.prev`) page is read in the other direction, then reversed.
        let desc = sort.is_some_and(|s| s.starts_with('-')) != page.back;
        let mut set = None;
        let mut jb = Bounds::default();
        for c in &conds {
            if self.identity(c, &mut set) {
                continue;
            }
            match c.field.as_str() {
                "joined_group_at" => jb.apply(c.op, datetime_value(c)?),
                other => return Err(not_emulated(other)),
            }
        }
        let cur = page.pos.as_ref().and_then(|p| p.first().copied());
        let mut items: Vec<(i64, u64)> = Vec::new();
        let mut horizons = Vec::new();
        match set {
            Some(set) => {
                for i in set {
                    if d.is_member(gr, i)
                        && jb.contains(d.joined_at(gr, i))
                        && after(&(i as i64), cur.as_ref(), desc)
                    {
                        items.push((i as i64, i));
                    }
                }
            }
            None => {
                let joined = |t: i64| d.first_profile_at(t, |d, i| d.joined_at(gr, i));
                let mut lo = joined(jb.lo);
                let mut hi = joined(jb.hi);
                if let Some(k) = cur {
                    if desc {
                        hi = hi.min(k.max(0) as u64);
                    } else {
                        lo = lo.max((k + 1).max(0) as u64);
                    }
                }
                let mut scanned = 0u64;
                let mut i = if desc { hi } else { lo };
                let mut last = None;
                while items.len() <= page.size
                    && scanned < MEMBER_SCAN
                    && if desc { i > lo } else { i < hi }
                {
                    let idx = if desc { i - 1 } else { i };
                    if d.is_member(gr, idx) {
                        items.push((idx as i64, idx));
                    }
                    last = Some(idx);
                    scanned += 1;
                    i = if desc { i - 1 } else { i + 1 };
                }
                if let Some(l) = last.filter(|_| if desc { i > lo } else { i < hi }) {
                    horizons.push(l as i64);
                }
            }
        }
        let (mut page_items, more) = paginate(items, &horizons, page.size, desc);
        if page.back {
            page_items.reverse();
        }
        let links = Self::keyset_links(
            &page,
            page_items.first().map(|x| vec![x.0]),
            page_items.last().map(|x| vec![x.0]),
            more.map(|k| vec![k]),
        );
        let data = page_items
            .into_iter()
            .map(|(_, i)| {
                if full {
                    self.profile_json(i, Some(d.joined_at(gr, i)))
                } else {
                    json!({"type": "profile", "id": d.profile_id(i)})
                }
            })
            .collect();
        Ok(self.collection(&page, data, None, links))
    }
}
