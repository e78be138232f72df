//! `flows`: a page of `GET /api/flows?include=flow-actions` → `klaviyo.flows` rows, each
//! bringing its actions (its collection), then `GET /api/flow-actions/{id}/flow-messages` of
//! each sending action → `klaviyo.flow_messages`.

use super::*;

impl KlaviyoConnector {
    pub(super) async fn flow_rows(
        &self,
        task: &FetchTask,
        client: &Client,
        page_no: u32,
        page: &Page,
        rows: &mut Collector,
        out: &mut Out,
    ) -> Result<(), ConnectorError> {
        let actions: BTreeMap<String, &Value> = page
            .included
            .iter()
            .filter(|i| i["type"] == "flow-action")
            .filter_map(|i| i["id"].as_str().map(|id| (id.to_string(), i)))
            .collect();
        let mut sending = Vec::new();
        for item in &page.data {
            let converted = (|| -> Result<_, String> {
                let (id, mut a) = envelope(item, "flow")?;
                let what = format!("flow {id}");
                let row = vec![
                    json!(id),
                    take_text(&mut a, "name"),
                    take_text(&mut a, "status"),
                    take_bool(&mut a, "archived"),
                    take_text(&mut a, "trigger_type"),
                    take_time(&mut a, "created", &what)?,
                    take_time(&mut a, "updated", &what)?,
                    Value::Object(a),
                ];
                let mut brought = Vec::new();
                let mut sends = Vec::new();
                for aid in related_ids(item, "flow-actions") {
                    let Some(action) = actions.get(&aid) else {
                        continue;
                    };
                    let (_, mut aa) = envelope(action, "flow-action")?;
                    let what = format!("flow action {aid}");
                    let definition = take_json(&mut aa, "definition");
                    let kind = definition["type"].clone();
                    if kind.as_str().is_some_and(|k| k.starts_with("send-")) {
                        sends.push(aid.clone());
                    }
                    brought.push((
                        &FLOW_ACTIONS,
                        vec![
                            json!(id),
                            json!(aid),
                            kind,
                            take_time(&mut aa, "created", &what)?,
                            take_time(&mut aa, "updated", &what)?,
                            definition,
                            Value::Object(aa),
                        ],
                    ));
                }
                Ok((id, row, brought, sends))
            })();
            match converted {
                Ok((id, row, brought, sends)) => {
                    rows.add(&FLOWS, row, brought);
                    sending.extend(sends.into_iter().map(|a| (id.clone(), a)));
                }
                Err(e) => out.reject(task, page_no, FLOWS.name, e, item),
            }
        }
        // Messages hang off sending actions only: one request per such action.
        for (flow_id, action_id) in sending {
            let mut rel = Some(Client::relative(
                &format!("/api/flow-actions/{action_id}/flow-messages"),
                &[],
            ));
            while let Some(r) = rel.take() {
                let messages = client.get(Tier::S, &r).await?;
                for m in &messages.data {
                    let converted = (|| -> Result<_, String> {
                        let (id, mut a) = envelope(m, "flow-message")?;
                        let what = format!("flow message {id}");
                        let definition = take_json(&mut a, "definition");
                        Ok(vec![
                            json!(id),
                            json!(flow_id),
                            json!(action_id),
                            take_text(&mut a, "channel"),
                            definition["name"].clone(),
                            definition["subject_line"].clone(),
                            definition["template_id"].clone(),
                            take_time(&mut a, "created", &what)?,
                            take_time(&mut a, "updated", &what)?,
                            definition,
                            Value::Object(a),
                        ])
                    })();
                    match converted {
                        Ok(row) => rows.add_row(&FLOW_MESSAGES, row),
                        Err(e) => out.reject(task, page_no, FLOW_MESSAGES.name, e, m),
                    }
                }
                rel = messages
                    .next
                    .as_deref()
                    .and_then(|n| client.relative_next(n));
            }
        }
        Ok(())
    }
}
