//! Campaigns, flows, templates, tags and suppressions of the generated account, consistent
//! with its events:
//!
//! - **Campaigns.** One email campaign per UTC day that overlaps `start..end` ("Daily
//!   campaign YYYY-MM-DD", sent that day between 08:00 and 20:00), whose one message has the
//!   id the `$message` of that day's campaign email events carry; and an SMS campaign every
//!   7th day (no events: the account has no SMS metrics). `updated_at` is a day after the send.
//! - **Flows.** [`FLOWS`]: each has four actions (delay, email, delay, email); each email
//!   action one message. A quarter of the email events (`Received`, `Opened`, `Clicked
//!   Email`, …) come from a flow: their `$flow` is the flow's id and `$message` the flow
//!   message's id (and `Campaign Name` the message's name).
//! - **Templates.** [`TEMPLATES`] code templates.
//! - **Tags.** Two tag groups, [`TAGS`] tags; a tag is linked to campaigns, flows, lists and
//!   segments by a hash of the seed and both indexes.
//! - **Suppressions.** One profile in ten has its email marketing suppressed, with a reason
//!   and a time after its creation (`subscriptions.email.marketing.suppression`).
//!
//! Everything is a function of the seed and the range: nothing here is stored.

use serde_json::{Map, Value, json};

use super::{DAY, Dataset, GOLDEN, SUBJECTS, base62, fmt_time, h3, mix64, short_id, stream};

/// (name, trigger type, status) of every flow.
pub(crate) const FLOWS: &[(&str, &str, &str)] = &[
    ("Welcome Series", "Added to List", "live"),
    ("Abandoned Cart", "Metric", "live"),
    ("Browse Abandonment", "Metric", "draft"),
];
/// Actions per flow: delay, email, delay, email.
pub(crate) const FLOW_ACTIONS: usize = 4;
/// Number of templates.
pub(crate) const TEMPLATES: usize = 12;
/// (name, group index) of every tag.
pub(crate) const TAGS: &[(&str, usize)] = &[
    ("Newsletter", 0),
    ("Promotion", 0),
    ("Retention", 0),
    ("Spring", 1),
    ("Summer", 1),
    ("Holiday", 1),
];
/// (name, exclusive, default) of every tag group.
pub(crate) const TAG_GROUPS: &[(&str, bool, bool)] =
    &[("Default", false, true), ("Season", true, false)];
/// Reasons of email marketing suppressions (the spec's enum).
const SUPPRESSION_REASONS: &[&str] = &[
    "HARD_BOUNCE",
    "INVALID_EMAIL",
    "SPAM_COMPLAINT",
    "UNSUBSCRIBE",
    "USER_SUPPRESSED",
];

/// A generated campaign.
#[derive(Clone, Debug, PartialEq)]
pub struct Campaign {
    /// 26-character id.
    pub id: String,
    /// `email` or `sms`.
    pub channel: &'static str,
    /// Display name.
    pub name: String,
    /// Epoch seconds.
    pub created_at: i64,
    /// Epoch seconds (the send time).
    pub send_time: i64,
    /// Epoch seconds.
    pub updated_at: i64,
    /// The id of its one message (`$message` of its email events).
    pub message_id: String,
    /// The UTC day (epoch days) it was sent.
    pub day: i64,
}

/// A generated flow message (of the email action `action` of flow `flow`).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowMessage {
    /// Id (6 characters).
    pub id: String,
    /// The flow's index (in generation order).
    pub flow: usize,
    /// The action's index within the flow.
    pub action: usize,
    /// Display name.
    pub name: String,
}

/// 26 Crockford base-32 characters: 48 bits of `ms`, then 80 bits of a hash (ULID-like).
fn ulid(ms: u64, r1: u64, r2: u64) -> String {
    const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let value: u128 = (u128::from(ms & 0xFFFF_FFFF_FFFF) << 80)
        | (u128::from(r1) << 16)
        | u128::from(r2 & 0xFFFF);
    (0..26)
        .map(|k| CROCKFORD[((value >> (125 - 5 * k as u32)) & 31) as usize] as char)
        .collect()
}

/// A UUID-shaped id from a hash.
fn uuid(r: u64) -> String {
    let (a, b) = (mix64(r), mix64(r ^ GOLDEN));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

impl Dataset {
    fn campaign_key(&self) -> u64 {
        stream(self.spec.seed, 6)
    }

    fn flow_key(&self) -> u64 {
        stream(self.spec.seed, 7)
    }

    fn tag_key(&self) -> u64 {
        stream(self.spec.seed, 8)
    }

    /// The `$message` of the campaign emails of UTC day `day` (epoch days).
    pub(crate) fn campaign_message_id(&self, day: i64) -> String {
        short_id(self.event_key, day as u64 & 0xffff)
    }

    /// Every campaign: the email ones by day, then the SMS ones, each in day order.
    pub(crate) fn campaigns(&self) -> Vec<Campaign> {
        let first = self.spec.start.timestamp().div_euclid(DAY);
        let last = (self.spec.end.timestamp() - 1).div_euclid(DAY);
        let key = self.campaign_key();
        let mut out = Vec::new();
        for channel in ["email", "sms"] {
            for day in first..=last {
                if channel == "sms" && day % 7 != 0 {
                    continue;
                }
                let c = u64::from(channel == "sms");
                let r = h3(key, day as u64, c, 0);
                let send_time = day * DAY + 8 * 3600 + (r % (12 * 3600)) as i64;
                let created_at = send_time - 2 * DAY - ((r >> 20) % 3600) as i64;
                let date = &fmt_time(day * DAY)[..10];
                out.push(Campaign {
                    id: ulid(created_at as u64 * 1000, mix64(r), r >> 7),
                    channel,
                    name: if channel == "email" {
                        format!("Daily campaign {date}")
                    } else {
                        format!("SMS blast {date}")
                    },
                    created_at,
                    send_time,
                    updated_at: send_time + DAY,
                    message_id: if channel == "email" {
                        self.campaign_message_id(day)
                    } else {
                        format!("S{}", base62(mix64(r ^ 5), 5))
                    },
                    day,
                });
            }
        }
        out
    }

    /// The id of flow `f`.
    pub(crate) fn flow_id(&self, f: usize) -> String {
        short_id(self.flow_key(), f as u64)
    }

    /// Creation time of flow `f` (epoch seconds): before the account's events.
    pub(crate) fn flow_created(&self, f: usize) -> i64 {
        self.start - 30 * DAY + (h3(self.flow_key(), f as u64, 1, 0) % DAY as u64) as i64
    }

    /// The id of action `a` of flow `f` (numeric, as Klaviyo's).
    pub(crate) fn flow_action_id(&self, f: usize, a: usize) -> String {
        (100_000 + h3(self.flow_key(), f as u64, 2, 0) % 800_000 * 10 + a as u64).to_string()
    }

    /// Whether action `a` of a flow sends an email (else it is a delay).
    pub(crate) fn flow_action_sends(a: usize) -> bool {
        a % 2 == 1
    }

    /// Every flow message, by flow and action.
    pub(crate) fn flow_messages(&self) -> Vec<FlowMessage> {
        let key = self.flow_key();
        let mut out = Vec::new();
        for (f, (name, _, _)) in FLOWS.iter().enumerate() {
            for a in (0..FLOW_ACTIONS).filter(|&a| Self::flow_action_sends(a)) {
                let k = out.len() as u64;
                out.push(FlowMessage {
                    id: short_id(key ^ 0xF10, k + 1),
                    flow: f,
                    action: a,
                    name: format!("{name}: Email {}", a / 2 + 1),
                });
            }
        }
        out
    }

    /// Email event properties that name the message the event is about: a flow's for a
    /// quarter of the events (`$flow`, `$message`, `Campaign Name` = the message's name),
    /// else the campaign of the event's UTC day (`$message`, `Campaign Name`).
    pub(crate) fn email_origin(&self, ts: i64, r: u64) -> Map<String, Value> {
        let mut p = Map::new();
        if (r >> 40).is_multiple_of(4) {
            let messages = self.flow_messages();
            let m = &messages[((r >> 42) % messages.len() as u64) as usize];
            p.insert("Campaign Name".into(), json!(m.name));
            p.insert("$flow".into(), json!(self.flow_id(m.flow)));
            p.insert("$message".into(), json!(m.id));
        } else {
            let day = ts.div_euclid(DAY);
            p.insert(
                "Campaign Name".into(),
                json!(format!("Daily campaign {}", &fmt_time(day * DAY)[..10])),
            );
            p.insert("$message".into(), json!(self.campaign_message_id(day)));
        }
        p
    }

    /// The id of template `t`.
    pub(crate) fn template_id(&self, t: usize) -> String {
        short_id(self.flow_key() ^ 0x7E3, t as u64)
    }

    /// Creation time of template `t` (epoch seconds).
    pub(crate) fn template_created(&self, t: usize) -> i64 {
        self.start - 60 * DAY + t as i64 * DAY + (h3(self.flow_key(), t as u64, 9, 0) % 3600) as i64
    }

    /// The subject line of template `t` (and of the messages using it).
    pub(crate) fn template_subject(t: usize) -> &'static str {
        SUBJECTS[t % SUBJECTS.len()]
    }

    /// The id of tag `t`.
    pub(crate) fn tag_id(&self, t: usize) -> String {
        uuid(h3(self.tag_key(), t as u64, 1, 0))
    }

    /// The id of tag group `g`.
    pub(crate) fn tag_group_id(&self, g: usize) -> String {
        (1_000 + h3(self.tag_key(), g as u64, 2, 0) % 9_000).to_string()
    }

    /// Whether tag `t` is on the resource `i` of `kind` (`campaign`, `flow`, `list`,
    /// `segment`): about a third of each.
    pub(crate) fn tagged(&self, t: usize, kind: &str, i: usize) -> bool {
        let k = match kind {
            "campaign" => 1,
            "flow" => 2,
            "list" => 3,
            _ => 4,
        };
        h3(self.tag_key(), t as u64, k, i as u64).is_multiple_of(3)
    }

    /// The email marketing suppression of profile `i`: `(reason, epoch seconds)` for one
    /// profile in ten.
    pub(crate) fn suppression(&self, i: u64) -> Option<(&'static str, i64)> {
        let r = h3(self.spec.seed, i, 78, 0);
        r.is_multiple_of(10).then(|| {
            let reason =
                SUPPRESSION_REASONS[((r >> 8) % SUPPRESSION_REASONS.len() as u64) as usize];
            (
                reason,
                self.profile_created(i) + ((r >> 16) % (30 * DAY as u64)) as i64,
            )
        })
    }
}
