//! `tags`: a page of `GET /api/tags?include=tag-group` → `klaviyo.tags` rows, each bringing
//! its links (`GET /api/tags/{id}/relationships/{campaigns,flows,lists,segments}`, one
//! collection table per kind).

use super::*;

impl KlaviyoConnector {
    pub(super) async fn tag_rows(
        &self,
        task: &FetchTask,
        client: &Client,
        page_no: u32,
        page: &Page,
        rows: &mut Collector,
        out: &mut Out,
    ) -> Result<(), ConnectorError> {
        for item in &page.data {
            let (id, mut a) = match envelope(item, "tag") {
                Ok(x) => x,
                Err(e) => {
                    out.reject(task, page_no, TAGS.name, e, item);
                    continue;
                }
            };
            let row = vec![
                json!(id),
                take_text(&mut a, "name"),
                related(item, "tag-group"),
                Value::Object(a),
            ];
            let mut brought = Vec::new();
            for (kind, table) in [
                ("campaigns", &TAG_CAMPAIGNS),
                ("flows", &TAG_FLOWS),
                ("lists", &TAG_LISTS),
                ("segments", &TAG_SEGMENTS),
            ] {
                let linked = client
                    .get(
                        Tier::S,
                        &Client::relative(&format!("/api/tags/{id}/relationships/{kind}"), &[]),
                    )
                    .await?;
                for l in &linked.data {
                    if let Some(lid) = l["id"].as_str() {
                        brought.push((table, vec![json!(id), json!(lid)]));
                    }
                }
            }
            rows.add(&TAGS, row, brought);
        }
        Ok(())
    }
}
