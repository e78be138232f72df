//! Ground truth of the campaigns, flows, templates, tags and suppressions the emulation
//! serves (for tests comparing what was extracted with what was served).

pub use super::data::{Campaign, FlowMessage};
use super::data::{Dataset, FLOW_ACTIONS, FLOWS, TAG_GROUPS, TAGS, TEMPLATES};
use super::{KlaviyoDataSpec, dataset};

/// Every campaign (email ones by day, then SMS ones), each with its one message.
///
/// # Panics
/// When `spec` is invalid.
pub fn campaigns(spec: &KlaviyoDataSpec) -> Vec<Campaign> {
    dataset(spec).campaigns()
}

/// `(flow id, [action ids])` of every flow.
///
/// # Panics
/// When `spec` is invalid.
pub fn flows(spec: &KlaviyoDataSpec) -> Vec<(String, Vec<String>)> {
    let d = dataset(spec);
    (0..FLOWS.len())
        .map(|f| {
            (
                d.flow_id(f),
                (0..FLOW_ACTIONS).map(|a| d.flow_action_id(f, a)).collect(),
            )
        })
        .collect()
}

/// `(message id, flow id, action id)` of every flow message.
///
/// # Panics
/// When `spec` is invalid.
pub fn flow_messages(spec: &KlaviyoDataSpec) -> Vec<(String, String, String)> {
    let d = dataset(spec);
    d.flow_messages()
        .into_iter()
        .map(|m| {
            (
                m.id.clone(),
                d.flow_id(m.flow),
                d.flow_action_id(m.flow, m.action),
            )
        })
        .collect()
}

/// Every template id.
///
/// # Panics
/// When `spec` is invalid.
pub fn templates(spec: &KlaviyoDataSpec) -> Vec<String> {
    let d = dataset(spec);
    (0..TEMPLATES).map(|t| d.template_id(t)).collect()
}

/// `(tag id, name, tag group id)` of every tag.
///
/// # Panics
/// When `spec` is invalid.
pub fn tags(spec: &KlaviyoDataSpec) -> Vec<(String, String, String)> {
    let d = dataset(spec);
    TAGS.iter()
        .enumerate()
        .map(|(t, (name, g))| (d.tag_id(t), (*name).to_owned(), d.tag_group_id(*g)))
        .collect()
}

/// Every tag group id.
///
/// # Panics
/// When `spec` is invalid.
pub fn tag_groups(spec: &KlaviyoDataSpec) -> Vec<String> {
    let d = dataset(spec);
    (0..TAG_GROUPS.len()).map(|g| d.tag_group_id(g)).collect()
}

/// `(tag id, resource id)` of every link of tags to resources of `kind` (`campaign`,
/// `flow`, `list`, `segment`).
///
/// # Panics
/// When `spec` is invalid.
pub fn tag_links(spec: &KlaviyoDataSpec, kind: &str) -> Vec<(String, String)> {
    let d = dataset(spec);
    let ids: Vec<String> = match kind {
        "campaign" => d.campaigns().into_iter().map(|c| c.id).collect(),
        "flow" => (0..FLOWS.len()).map(|f| d.flow_id(f)).collect(),
        "list" => d.lists.iter().map(|g| g.id.clone()).collect(),
        _ => d.segments.iter().map(|g| g.id.clone()).collect(),
    };
    let mut out = Vec::new();
    for t in 0..TAGS.len() {
        for (i, id) in ids.iter().enumerate() {
            if d.tagged(t, kind, i) {
                out.push((d.tag_id(t), id.clone()));
            }
        }
    }
    out
}

/// `(profile id, reason, RFC 3339 time)` of every profile whose email marketing is
/// suppressed, in profile order. `O(profiles)`.
///
/// # Panics
/// When `spec` is invalid.
pub fn suppressions(spec: &KlaviyoDataSpec) -> Vec<(String, String, String)> {
    let d: Dataset = dataset(spec);
    (0..spec.profiles)
        .filter_map(|i| {
            d.suppression(i)
                .map(|(reason, t)| (d.profile_id(i), reason.to_owned(), super::data::fmt_time(t)))
        })
        .collect()
}
