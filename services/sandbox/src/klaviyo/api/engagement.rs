//! Campaigns, flows, templates and tags (`specs/klaviyo/{campaigns,flows,templates,tags}.json`):
//!
//! | route | operation | `page[size]` |
//! |---|---|---|
//! | `GET /api/campaigns` (filter `equals(messages.channel,…)` required; `id` any; `status` any/equals; `archived` equals; `created_at`, `scheduled_at`, `updated_at` comparisons; `include` `campaign-messages`, `tags`) | `get_campaigns` | 100 / 100 |
//! | `GET /api/campaigns/{id}/campaign-messages` | `get_messages_for_campaign` | all |
//! | `GET /api/flows` (filter `id` any; `name`, `status`, `archived`, `trigger_type` equals; `created`, `updated` comparisons; `include` `flow-actions`, `tags`) | `get_flows` | 50 / 50 |
//! | `GET /api/flows/{id}/flow-actions` | `get_actions_for_flow` | 50 / 50 |
//! | `GET /api/flow-actions/{id}/flow-messages` | `get_flow_action_messages` | 50 / 50 |
//! | `GET /api/templates` (filter `id`, `name` any/equals; `created`, `updated` comparisons) | `get_templates` | 10 / 10 |
//! | `GET /api/tags` (filter `name` equals; `include=tag-group`) | `get_tags` | 50 / 50 |
//! | `GET /api/tag-groups` (filter `name`, `exclusive`, `default` equals) | `get_tag_groups` | 25 / 25 |
//! | `GET /api/tags/{id}/relationships/{campaigns,flows,lists,segments}` | `get_…_ids_for_tag` | all |
//!
//! Sorts are the spec's (ties by id). Filters are applied to the resources' attributes as
//! served; operators the spec allows but the sandbox's filter syntax has not (`contains`,
//! `starts-with`, `ends-with`) are refused with a 400 naming them.

use super::*;
use crate::klaviyo::data::{Campaign, FLOW_ACTIONS, FLOWS, TAG_GROUPS, TAGS, TEMPLATES};

/// The new routes of this module (one [`Ep::Engagement`] each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Campaigns,
    CampaignMessages,
    Flows,
    FlowActions,
    FlowActionMessages,
    Templates,
    Tags,
    TagGroups,
    /// `GET /api/tags/{id}/relationships/<kind>s` (`campaign`, `flow`, `list`, `segment`).
    TagLinks(&'static str),
    /// `POST /api/metric-aggregates` (in `aggregates`).
    MetricAggregates,
}

impl Route {
    /// Klaviyo's operation id.
    pub(super) fn name(self) -> &'static str {
        match self {
            Route::Campaigns => "get_campaigns",
            Route::CampaignMessages => "get_messages_for_campaign",
            Route::Flows => "get_flows",
            Route::FlowActions => "get_actions_for_flow",
            Route::FlowActionMessages => "get_flow_action_messages",
            Route::Templates => "get_templates",
            Route::Tags => "get_tags",
            Route::TagGroups => "get_tag_groups",
            Route::TagLinks("campaign") => "get_campaign_ids_for_tag",
            Route::TagLinks("flow") => "get_flow_ids_for_tag",
            Route::TagLinks("list") => "get_list_ids_for_tag",
            Route::TagLinks(_) => "get_segment_ids_for_tag",
            Route::MetricAggregates => "query_metric_aggregates",
        }
    }

    /// The path after `/api/` (with the route's id).
    pub(super) fn path(self, id: &str) -> String {
        match self {
            Route::Campaigns => "campaigns/".into(),
            Route::CampaignMessages => format!("campaigns/{id}/campaign-messages/"),
            Route::Flows => "flows/".into(),
            Route::FlowActions => format!("flows/{id}/flow-actions/"),
            Route::FlowActionMessages => format!("flow-actions/{id}/flow-messages/"),
            Route::Templates => "templates/".into(),
            Route::Tags => "tags/".into(),
            Route::TagGroups => "tag-groups/".into(),
            Route::TagLinks(kind) => format!("tags/{id}/relationships/{kind}s/"),
            Route::MetricAggregates => "metric-aggregates/".into(),
        }
    }

    /// Every route's operation id, for the spec table test.
    #[cfg(test)]
    pub(super) const OPERATION_IDS: &'static [&'static str] = &[
        "get_campaigns",
        "get_messages_for_campaign",
        "get_flows",
        "get_actions_for_flow",
        "get_flow_action_messages",
        "get_templates",
        "get_tags",
        "get_tag_groups",
        "get_campaign_ids_for_tag",
        "get_flow_ids_for_tag",
        "get_list_ids_for_tag",
        "get_segment_ids_for_tag",
        "query_metric_aggregates",
    ];

    /// Adds this module's GET routes to `r` through `add(router, path, route, has_id)`.
    pub(super) fn mount(
        mut r: Router<Arc<Shared>>,
        add: impl Fn(Router<Arc<Shared>>, &str, Ep, bool) -> Router<Arc<Shared>>,
    ) -> Router<Arc<Shared>> {
        let routes = [
            ("/api/campaigns", Route::Campaigns),
            (
                "/api/campaigns/{id}/campaign-messages",
                Route::CampaignMessages,
            ),
            ("/api/flows", Route::Flows),
            ("/api/flows/{id}/flow-actions", Route::FlowActions),
            (
                "/api/flow-actions/{id}/flow-messages",
                Route::FlowActionMessages,
            ),
            ("/api/templates", Route::Templates),
            ("/api/tags", Route::Tags),
            ("/api/tag-groups", Route::TagGroups),
            (
                "/api/tags/{id}/relationships/campaigns",
                Route::TagLinks("campaign"),
            ),
            (
                "/api/tags/{id}/relationships/flows",
                Route::TagLinks("flow"),
            ),
            (
                "/api/tags/{id}/relationships/lists",
                Route::TagLinks("list"),
            ),
            (
                "/api/tags/{id}/relationships/segments",
                Route::TagLinks("segment"),
            ),
        ];
        for (path, route) in routes {
            r = add(r, path, Ep::Engagement(route), path.contains("{id}"));
        }
        r
    }
}

const CMP: &[Op] = &[
    Op::GreaterOrEqual,
    Op::GreaterThan,
    Op::LessOrEqual,
    Op::LessThan,
];
const CMP_EQ: &[Op] = &[
    Op::Equals,
    Op::GreaterOrEqual,
    Op::GreaterThan,
    Op::LessOrEqual,
    Op::LessThan,
];
const CAMPAIGNS_ALLOWED: Allowed = &[
    ("id", &[Op::Any]),
    ("messages.channel", &[Op::Equals]),
    ("status", &[Op::Any, Op::Equals]),
    ("archived", &[Op::Equals]),
    ("created_at", CMP),
    ("scheduled_at", CMP),
    ("updated_at", CMP),
];
const FLOWS_ALLOWED: Allowed = &[
    ("id", &[Op::Any]),
    ("name", &[Op::Equals]),
    ("status", &[Op::Equals]),
    ("archived", &[Op::Equals]),
    ("created", CMP_EQ),
    ("updated", CMP_EQ),
    ("trigger_type", &[Op::Equals]),
];
const FLOW_ACTIONS_ALLOWED: Allowed =
    &[("id", &[Op::Any]), ("created", CMP_EQ), ("updated", CMP_EQ)];
const FLOW_MESSAGES_ALLOWED: Allowed = &[
    ("id", &[Op::Any]),
    ("name", &[Op::Equals]),
    ("created", CMP_EQ),
    ("updated", CMP_EQ),
];
const TEMPLATES_ALLOWED: Allowed = &[
    ("id", &[Op::Any, Op::Equals]),
    ("name", &[Op::Any, Op::Equals]),
    ("created", CMP_EQ),
    ("updated", CMP_EQ),
];
const TAGS_ALLOWED: Allowed = &[("name", &[Op::Equals])];
const TAG_GROUPS_ALLOWED: Allowed = &[
    ("name", &[Op::Equals]),
    ("exclusive", &[Op::Equals]),
    ("default", &[Op::Equals]),
];

/// The text of an attribute value for `equals`/`any` (booleans as `true`/`false`).
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Ctx<'_> {
    /// The document of a GET `route`. The spec's `CollectionLinks` are not nullable:
    /// `links.next` and `links.prev` are left out where there is no such page.
    pub(super) fn engagement(&self, route: Route) -> Result<Value, ApiErr> {
        let mut doc = self.engagement_doc(route)?;
        if let Some(links) = doc["links"].as_object_mut() {
            links.retain(|_, v| !v.is_null());
        }
        Ok(doc)
    }

    fn engagement_doc(&self, route: Route) -> Result<Value, ApiErr> {
        match route {
            Route::Campaigns => self.campaigns(),
            Route::CampaignMessages => {
                let c = self.campaign_by_id(&self.id)?;
                let data = vec![self.campaign_message_json(&c)];
                let included = self
                    .including("campaign")
                    .then(|| vec![self.campaign_json(&c, None)]);
                let mut doc = json!({"data": data, "links": {"self": self.self_link(), "next": null, "prev": null}});
                if let Some(inc) = included {
                    doc["included"] = Value::Array(inc);
                }
                Ok(doc)
            }
            Route::Flows => {
                let all: Vec<Value> = (0..FLOWS.len()).map(|f| self.flow_json(f)).collect();
                let included = self.including("flow-actions").then(|| {
                    (0..FLOWS.len())
                        .flat_map(|f| (0..FLOW_ACTIONS).map(move |a| (f, a)))
                        .map(|(f, a)| self.flow_action_json(f, a))
                        .collect::<Vec<_>>()
                });
                self.resources(route, all, FLOWS_ALLOWED, included)
            }
            Route::FlowActions => {
                let f = (0..FLOWS.len())
                    .find(|&f| self.d.flow_id(f) == self.id)
                    .ok_or_else(|| ApiErr::not_found(format!("Flow {} not found.", self.id)))?;
                let all = (0..FLOW_ACTIONS)
                    .map(|a| self.flow_action_json(f, a))
                    .collect();
                self.resources(route, all, FLOW_ACTIONS_ALLOWED, None)
            }
            Route::FlowActionMessages => {
                let (f, a) = (0..FLOWS.len())
                    .flat_map(|f| (0..FLOW_ACTIONS).map(move |a| (f, a)))
                    .find(|&(f, a)| self.d.flow_action_id(f, a) == self.id)
                    .ok_or_else(|| {
                        ApiErr::not_found(format!("Flow action {} not found.", self.id))
                    })?;
                let all = self
                    .d
                    .flow_messages()
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.flow == f && m.action == a)
                    .map(|(k, _)| self.flow_message_json(k))
                    .collect();
                self.resources(route, all, FLOW_MESSAGES_ALLOWED, None)
            }
            Route::Templates => {
                let all = (0..TEMPLATES).map(|t| self.template_json(t)).collect();
                self.resources(route, all, TEMPLATES_ALLOWED, None)
            }
            Route::Tags => {
                let all = (0..TAGS.len()).map(|t| self.tag_json(t)).collect();
                let included = self.including("tag-group").then(|| {
                    (0..TAG_GROUPS.len())
                        .map(|g| self.tag_group_json(g))
                        .collect()
                });
                self.resources(route, all, TAGS_ALLOWED, included)
            }
            Route::TagGroups => {
                let all = (0..TAG_GROUPS.len())
                    .map(|g| self.tag_group_json(g))
                    .collect();
                self.resources(route, all, TAG_GROUPS_ALLOWED, None)
            }
            Route::TagLinks(kind) => {
                let t = (0..TAGS.len())
                    .find(|&t| self.d.tag_id(t) == self.id)
                    .ok_or_else(|| ApiErr::not_found(format!("Tag {} not found.", self.id)))?;
                let data: Vec<Value> = self
                    .tagged(t, kind)
                    .into_iter()
                    .map(|id| json!({"type": kind, "id": id}))
                    .collect();
                Ok(
                    json!({"data": data, "links": {"self": self.self_link(), "next": null, "prev": null}}),
                )
            }
            Route::MetricAggregates => Err(ApiErr::not_found("metric-aggregates is POST only")),
        }
    }

    /// The ids of the resources of `kind` tag `t` is on.
    fn tagged(&self, t: usize, kind: &str) -> Vec<String> {
        let d = self.d;
        let ids: Vec<String> = match kind {
            "campaign" => d.campaigns().into_iter().map(|c| c.id).collect(),
            "flow" => (0..FLOWS.len()).map(|f| d.flow_id(f)).collect(),
            "list" => d.lists.iter().map(|g| g.id.clone()).collect(),
            _ => d.segments.iter().map(|g| g.id.clone()).collect(),
        };
        ids.into_iter()
            .enumerate()
            .filter(|(i, _)| d.tagged(t, kind, *i))
            .map(|(_, id)| id)
            .collect()
    }

    /// Filters (on the served attributes and `id`), sorts and pages `all`; `included` is
    /// given whole (the page's related resources are few).
    fn resources(
        &self,
        route: Route,
        all: Vec<Value>,
        allowed: Allowed,
        included: Option<Vec<Value>>,
    ) -> Result<Value, ApiErr> {
        let op = spec::operation(route.name());
        let [default, max] = op.page_size.unwrap_or([100, 100]);
        let page = self.page(default, max)?;
        let conds = self.filter(&page, allowed)?;
        let sorts: Vec<&str> = op
            .params
            .get("sort")
            .and_then(Option::as_ref)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let sort = self.sort_of(&page, &sorts)?.map(str::to_owned);
        let mut kept = Vec::new();
        for r in all {
            if self.matches(&r, &conds)? {
                kept.push(r);
            }
        }
        if let Some(s) = &sort {
            let field = s.trim_start_matches('-');
            let key = |r: &Value| {
                if field == "id" {
                    r["id"].clone()
                } else {
                    r["attributes"][field].clone()
                }
            };
            kept.sort_by(|a, b| {
                let (x, y) = (key(a), key(b));
                let ord = match (x.as_str(), y.as_str()) {
                    (Some(x), Some(y)) => x.cmp(y),
                    _ => x.to_string().cmp(&y.to_string()),
                };
                ord.then_with(|| a["id"].to_string().cmp(&b["id"].to_string()))
            });
            if s.starts_with('-') {
                kept.reverse();
            }
        }
        let from = page
            .pos
            .as_ref()
            .and_then(|p| p.first())
            .copied()
            .unwrap_or(0)
            .max(0) as usize;
        let to = (from + page.size).min(kept.len());
        let data: Vec<Value> = kept
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .map(|r| self.sparse_resource(r.clone()))
            .collect();
        let links = PageLinks {
            next: (to < kept.len()).then(|| vec![to as i64]),
            prev: (from > 0).then(|| (vec![from.saturating_sub(page.size) as i64], false)),
        };
        let included = included.map(|inc| {
            let wanted: BTreeSet<String> = data
                .iter()
                .flat_map(|r| {
                    r["relationships"]
                        .as_object()
                        .into_iter()
                        .flat_map(|o| o.values())
                        .flat_map(|rel| match &rel["data"] {
                            Value::Array(a) => a.clone(),
                            Value::Object(_) => vec![rel["data"].clone()],
                            _ => Vec::new(),
                        })
                        .map(|d| format!("{}/{}", d["type"], d["id"]))
                        .collect::<Vec<_>>()
                })
                .collect();
            inc.into_iter()
                .filter(|r| wanted.contains(&format!("{}/{}", r["type"], r["id"])))
                .map(|r| self.sparse_resource(r))
                .collect()
        });
        Ok(self.collection(&page, data, included, links))
    }

    /// Applies `fields[<type>]` to a resource's attributes.
    fn sparse_resource(&self, mut r: Value) -> Value {
        let kind = r["type"].as_str().unwrap_or_default().to_owned();
        let fields = self.q.list(&format!("fields[{kind}]"));
        if let Some(Value::Object(attrs)) = r.get_mut("attributes") {
            *attrs = sparse(std::mem::take(attrs), &fields);
        }
        r
    }

    /// Whether a resource satisfies every condition.
    fn matches(&self, r: &Value, conds: &[Cond]) -> Result<bool, ApiErr> {
        for c in conds {
            let v = match c.field.as_str() {
                "id" => r["id"].clone(),
                // Campaigns carry their channel on their messages; the sandbox keeps it
                // beside them.
                "messages.channel" => r["meta_channel"].clone(),
                f => r["attributes"][f].clone(),
            };
            let ok = match c.op {
                Op::Equals | Op::Any => {
                    let wanted = text_value(c);
                    as_text(&v).is_some_and(|t| wanted.contains(&t.as_str()))
                }
                op => {
                    let bound = datetime_value(c)?;
                    let Some(t) = v.as_str().and_then(filter::parse_datetime) else {
                        return Ok(false);
                    };
                    match op {
                        Op::GreaterOrEqual => t >= bound,
                        Op::GreaterThan => t > bound,
                        Op::LessOrEqual => t <= bound,
                        _ => t < bound,
                    }
                }
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn campaign_by_id(&self, id: &str) -> Result<Campaign, ApiErr> {
        self.d
            .campaigns()
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| ApiErr::not_found(format!("Campaign {id} not found.")))
    }

    fn campaigns(&self) -> Result<Value, ApiErr> {
        // Klaviyo refuses to list campaigns of every channel at once.
        let page = self.page(100, 100)?;
        let conds = self.filter(&page, CAMPAIGNS_ALLOWED)?;
        let Some(channel) = conds
            .iter()
            .find(|c| c.field == "messages.channel")
            .and_then(|c| text_value(c).first().map(|s| (*s).to_owned()))
        else {
            return Err(ApiErr::param(
                "filter",
                "A channel filter is required to list campaigns. Please provide either \
                 `?filter=equals(messages.channel,'email')`, \
                 `?filter=equals(messages.channel,'sms')` or \
                 `?filter=equals(messages.channel,'mobile_push')`.",
            ));
        };
        if !["email", "sms", "mobile_push"].contains(&channel.as_str()) {
            return Err(ApiErr::param(
                "filter",
                format!(
                    "'{channel}' is not a valid value of messages.channel: email, sms or mobile_push."
                ),
            ));
        }
        let campaigns = self.d.campaigns();
        let all: Vec<Value> = campaigns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut r = self.campaign_json(c, Some(i));
                r["meta_channel"] = json!(c.channel);
                r
            })
            .collect();
        let mut included = Vec::new();
        if self.including("campaign-messages") {
            included.extend(campaigns.iter().map(|c| self.campaign_message_json(c)));
        }
        if self.including("tags") {
            included.extend((0..TAGS.len()).map(|t| self.tag_json(t)));
        }
        let mut doc = self.resources(
            Route::Campaigns,
            all,
            CAMPAIGNS_ALLOWED,
            (!self.includes().is_empty()).then_some(included),
        )?;
        if let Some(data) = doc["data"].as_array_mut() {
            for r in data {
                if let Some(o) = r.as_object_mut() {
                    o.remove("meta_channel");
                }
            }
        }
        Ok(doc)
    }

    /// A campaign resource; `index` is its position in [`Dataset::campaigns`] (found when
    /// not given) for its tags.
    pub(super) fn campaign_json(&self, c: &Campaign, index: Option<usize>) -> Value {
        let d = self.d;
        let email = c.channel == "email";
        let list_ids: Vec<&str> = d.lists.iter().take(1).map(|g| g.id.as_str()).collect();
        let tracking = if email {
            json!({"add_tracking_params": true, "custom_tracking_params": [
                    {"type": "dynamic", "value": "campaign_name", "name": "utm_campaign"},
                    {"type": "static", "value": "klaviyo", "name": "utm_source"}],
                   "is_tracking_clicks": true, "is_tracking_opens": true})
        } else {
            json!({"add_tracking_params": false, "custom_tracking_params": null})
        };
        let mut rels = json!({
            "campaign-messages": {"links": self.rel("campaigns", &c.id, "campaign-messages")},
            "tags": {"links": self.rel("campaigns", &c.id, "tags")},
        });
        if self.including("campaign-messages") {
            rels["campaign-messages"]["data"] =
                json!([{"type": "campaign-message", "id": c.message_id}]);
        }
        if self.including("tags") {
            let index = index
                .or_else(|| d.campaigns().iter().position(|x| x.id == c.id))
                .unwrap_or(0);
            rels["tags"]["data"] = (0..TAGS.len())
                .filter(|&t| d.tagged(t, "campaign", index))
                .map(|t| json!({"type": "tag", "id": d.tag_id(t)}))
                .collect();
        }
        json!({
            "type": "campaign",
            "id": c.id,
            "attributes": {
                "name": c.name,
                "status": "Sent",
                "archived": false,
                "audiences": {"included": list_ids, "excluded": []},
                "send_options": {"use_smart_sending": email},
                "tracking_options": tracking,
                "send_strategy": {"method": "static", "datetime": fmt_time(c.send_time),
                                  "options": {"is_local": false}},
                "created_at": fmt_time(c.created_at),
                "scheduled_at": fmt_time(c.send_time - 3600),
                "updated_at": fmt_time(c.updated_at),
                "send_time": fmt_time(c.send_time),
            },
            "relationships": rels,
            "links": {"self": format!("{}/api/campaigns/{}/", self.base, c.id)},
        })
    }

    pub(super) fn campaign_message_json(&self, c: &Campaign) -> Value {
        let template = self
            .d
            .template_id((c.day.rem_euclid(TEMPLATES as i64)) as usize);
        let definition = if c.channel == "email" {
            json!({"channel": "email", "label": c.name, "content": {
                "subject": crate::klaviyo::data::Dataset::template_subject(c.day.rem_euclid(TEMPLATES as i64) as usize),
                "preview_text": "This week at the shop",
                "from_email": "store@example.com",
                "from_label": "Example Store",
                "reply_to_email": null, "cc_email": null, "bcc_email": null}})
        } else {
            json!({"channel": "sms", "content": {"body": format!("{}: 10% off today", c.name), "media_url": null},
                   "render_options": {"shorten_links": true, "add_org_prefix": true,
                                      "add_info_link": true, "add_opt_out_language": false}})
        };
        json!({
            "type": "campaign-message",
            "id": c.message_id,
            "attributes": {
                "definition": definition,
                "send_times": [{"datetime": fmt_time(c.send_time), "is_local": false}],
                "created_at": fmt_time(c.created_at),
                "updated_at": fmt_time(c.updated_at),
            },
            "relationships": {
                "campaign": {"data": {"type": "campaign", "id": c.id},
                             "links": self.rel("campaign-messages", &c.message_id, "campaign")},
                "template": {"data": {"type": "template", "id": template},
                             "links": self.rel("campaign-messages", &c.message_id, "template")},
                "image": {"links": self.rel("campaign-messages", &c.message_id, "image")},
            },
            "links": {"self": format!("{}/api/campaign-messages/{}/", self.base, c.message_id)},
        })
    }

    fn flow_json(&self, f: usize) -> Value {
        let d = self.d;
        let (name, trigger, status) = FLOWS[f];
        let id = d.flow_id(f);
        let created = d.flow_created(f);
        let mut rels = json!({
            "flow-actions": {"links": self.rel("flows", &id, "flow-actions")},
            "tags": {"links": self.rel("flows", &id, "tags")},
        });
        if self.including("flow-actions") {
            rels["flow-actions"]["data"] = (0..FLOW_ACTIONS)
                .map(|a| json!({"type": "flow-action", "id": d.flow_action_id(f, a)}))
                .collect();
        }
        if self.including("tags") {
            rels["tags"]["data"] = (0..TAGS.len())
                .filter(|&t| d.tagged(t, "flow", f))
                .map(|t| json!({"type": "tag", "id": d.tag_id(t)}))
                .collect();
        }
        json!({
            "type": "flow",
            "id": id,
            "attributes": {
                "name": name,
                "status": status,
                "archived": false,
                "created": fmt_time(created),
                "updated": fmt_time(created + 7 * 86_400),
                "trigger_type": trigger,
            },
            "relationships": rels,
            "links": {"self": format!("{}/api/flows/{id}/", self.base)},
        })
    }

    fn flow_action_json(&self, f: usize, a: usize) -> Value {
        let d = self.d;
        let id = d.flow_action_id(f, a);
        let created = d.flow_created(f) + a as i64 * 60;
        let next = (a + 1 < FLOW_ACTIONS).then(|| d.flow_action_id(f, a + 1));
        let definition = if Dataset::flow_action_sends(a) {
            json!({"id": id, "type": "send-email", "links": {"next": next},
                   "data": {"status": if FLOWS[f].2 == "live" { "live" } else { "draft" }}})
        } else {
            json!({"id": id, "type": "time-delay", "links": {"next": next},
                   "data": {"unit": "days", "value": 1 + a / 2, "secondary_value": null}})
        };
        json!({
            "type": "flow-action",
            "id": id,
            "attributes": {
                "created": fmt_time(created),
                "updated": fmt_time(created + 86_400),
                "definition": definition,
            },
            "relationships": {
                "flow": {"data": {"type": "flow", "id": d.flow_id(f)},
                         "links": self.rel("flow-actions", &id, "flow")},
                "flow-messages": {"links": self.rel("flow-actions", &id, "flow-messages")},
            },
            "links": {"self": format!("{}/api/flow-actions/{id}/", self.base)},
        })
    }

    fn flow_message_json(&self, k: usize) -> Value {
        let d = self.d;
        let messages = d.flow_messages();
        let m = &messages[k];
        let action = d.flow_action_id(m.flow, m.action);
        let created = d.flow_created(m.flow) + m.action as i64 * 60;
        let template = d.template_id(k % TEMPLATES);
        json!({
            "type": "flow-message",
            "id": m.id,
            "attributes": {
                "channel": "email",
                "created": fmt_time(created),
                "updated": fmt_time(created + 86_400),
                "definition": {
                    "id": m.id,
                    "name": m.name,
                    "from_email": "store@example.com",
                    "from_label": "Example Store",
                    "subject_line": Dataset::template_subject(k % TEMPLATES),
                    "preview_text": null,
                    "template_id": template,
                    "smart_sending_enabled": true,
                    "transactional": false,
                    "add_tracking_params": false,
                },
            },
            "relationships": {
                "flow-action": {"data": {"type": "flow-action", "id": action},
                                "links": self.rel("flow-messages", &m.id, "flow-action")},
                "template": {"data": {"type": "template", "id": template},
                             "links": self.rel("flow-messages", &m.id, "template")},
            },
            "links": {"self": format!("{}/api/flow-messages/{}/", self.base, m.id)},
        })
    }

    fn template_json(&self, t: usize) -> Value {
        let d = self.d;
        let id = d.template_id(t);
        let created = d.template_created(t);
        let subject = Dataset::template_subject(t);
        json!({
            "type": "template",
            "id": id,
            "attributes": {
                "name": format!("Template {}: {subject}", t + 1),
                "editor_type": "CODE",
                "html": format!("<html><body><h1>{subject}</h1><p>{{{{ first_name|default:'friend' }}}}</p></body></html>"),
                "text": format!("{subject}\n"),
                "amp": null,
                "created": fmt_time(created),
                "updated": fmt_time(created + 3 * 86_400),
            },
            "links": {"self": format!("{}/api/templates/{id}/", self.base)},
        })
    }

    fn tag_json(&self, t: usize) -> Value {
        let d = self.d;
        let id = d.tag_id(t);
        let (name, group) = TAGS[t];
        let mut rels = json!({
            "tag-group": {"links": self.rel("tags", &id, "tag-group")},
        });
        for kind in ["campaigns", "flows", "lists", "segments"] {
            rels[kind] = json!({"links": self.rel("tags", &id, kind)});
        }
        if self.including("tag-group") {
            rels["tag-group"]["data"] = json!({"type": "tag-group", "id": d.tag_group_id(group)});
        }
        json!({
            "type": "tag",
            "id": id,
            "attributes": {"name": name},
            "relationships": rels,
            "links": {"self": format!("{}/api/tags/{id}/", self.base)},
        })
    }

    fn tag_group_json(&self, g: usize) -> Value {
        let id = self.d.tag_group_id(g);
        let (name, exclusive, default) = TAG_GROUPS[g];
        json!({
            "type": "tag-group",
            "id": id,
            "attributes": {"name": name, "exclusive": exclusive, "default": default},
            "relationships": {"tags": {"links": self.rel("tag-groups", &id, "tags")}},
            "links": {"self": format!("{}/api/tag-groups/{id}/", self.base)},
        })
    }
}
