//! `campaigns`: a page of `GET /api/campaigns?include=campaign-messages` → `klaviyo.campaigns`
//! rows, each bringing its messages (`klaviyo.campaign_messages`, its collection).

use super::*;

impl KlaviyoConnector {
    pub(super) fn campaign_rows(
        &self,
        task: &FetchTask,
        page_no: u32,
        page: &Page,
        rows: &mut Collector,
        out: &mut Out,
    ) {
        let channel = task.stream.strip_prefix("campaigns/").unwrap_or("");
        let messages: BTreeMap<String, &Value> = page
            .included
            .iter()
            .filter(|i| i["type"] == "campaign-message")
            .filter_map(|i| i["id"].as_str().map(|id| (id.to_string(), i)))
            .collect();
        for item in &page.data {
            let converted = (|| -> Result<_, String> {
                let (id, mut a) = envelope(item, "campaign")?;
                let what = format!("campaign {id}");
                let updated = take_time(&mut a, "updated_at", &what)?;
                let row = vec![
                    json!(id),
                    json!(channel),
                    take_text(&mut a, "name"),
                    take_text(&mut a, "status"),
                    take_bool(&mut a, "archived"),
                    take_json(&mut a, "audiences"),
                    take_json(&mut a, "send_options"),
                    take_json(&mut a, "tracking_options"),
                    take_json(&mut a, "send_strategy"),
                    take_time(&mut a, "created_at", &what)?,
                    take_time(&mut a, "scheduled_at", &what)?,
                    updated.clone(),
                    take_time(&mut a, "send_time", &what)?,
                    Value::Object(a),
                ];
                let mut brought = Vec::new();
                for mid in related_ids(item, "campaign-messages") {
                    let Some(m) = messages.get(&mid) else {
                        continue;
                    };
                    let (_, mut ma) = envelope(m, "campaign-message")?;
                    let what = format!("campaign message {mid}");
                    let definition = take_json(&mut ma, "definition");
                    brought.push((
                        &CAMPAIGN_MESSAGES,
                        vec![
                            json!(id),
                            json!(mid),
                            definition["channel"].clone(),
                            definition["label"].clone(),
                            definition["content"]["subject"].clone(),
                            related(m, "template"),
                            take_json(&mut ma, "send_times"),
                            definition,
                            take_time(&mut ma, "created_at", &what)?,
                            take_time(&mut ma, "updated_at", &what)?,
                            Value::Object(ma),
                        ],
                    ));
                }
                Ok((row, brought, updated))
            })();
            match converted {
                Ok((row, brought, updated)) => {
                    out.see(updated.as_str().and_then(records::parse_time));
                    rows.add(&CAMPAIGNS, row, brought);
                }
                Err(e) => out.reject(task, page_no, CAMPAIGNS.name, e, item),
            }
        }
    }
}
