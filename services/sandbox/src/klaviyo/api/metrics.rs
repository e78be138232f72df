//! `GET /api/metrics` and `GET /api/metrics/{id}`.

use super::*;

impl Ctx<'_> {
    pub(super) fn metric_json(&self, m: usize) -> Value {
        let id = self.mid(m);
        let attrs = match m.checked_sub(self.d.metrics.len()) {
            None => match self.d.metric_attributes(m) {
                Value::Object(o) => o,
                _ => Map::new(),
            },
            Some(k) => self.created_metric_attributes(k),
        };
        let mut rels =
            json!({"flow-triggers": {"links": self.rel("metrics", id, "flow-triggers")}});
        if matches!(self.ep, Ep::Metrics | Ep::Metric) && self.including("flow-triggers") {
            // Flows are not modelled: no metric triggers one.
            rels["flow-triggers"]["data"] = json!([]);
        }
        json!({
            "type": "metric",
            "id": id,
            "attributes": sparse(attrs, &self.q.list("fields[metric]")),
            "relationships": rels,
            "links": {"self": format!("{}/api/metrics/{id}/", self.base)},
        })
    }

    pub(super) fn metrics(&self) -> Result<Value, ApiErr> {
        // `page[size]` and `sort` are not parameters of this endpoint: refused by
        // `check_params`.
        let page = self.page(METRICS_PAGE, METRICS_PAGE)?;
        let conds = self.filter(&page, METRICS_ALLOWED)?;
        let all: Vec<usize> = (0..self.metric_count())
            .filter(|&m| {
                let (name, category) = self.integration_of(m);
                conds.iter().all(|c| {
                    let v = text_value(c);
                    match c.field.as_str() {
                        "integration.name" => v.contains(&name),
                        _ => v.contains(&category),
                    }
                })
            })
            .collect();
        self.offset_page(&page, all, |m| self.metric_json(m))
    }
}
