//! `metric_aggregates`: one `POST /api/metric-aggregates` per task window → one
//! `klaviyo.metric_aggregates` row per group, interval start and measurement.

use super::*;

impl KlaviyoConnector {
    pub(super) async fn fetch_aggregates(
        &self,
        task: &FetchTask,
        client: &Client,
        p: &Params,
        metric: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<FetchOutput, ConnectorError> {
        let mut out = Out::new();
        if end <= start {
            return Ok(out.finish(Vec::new(), self.lag()));
        }
        let interval = p.interval.clone().unwrap_or_else(|| "day".into());
        let measurements = if p.measurements.is_empty() {
            MEASUREMENTS.iter().map(|m| (*m).to_string()).collect()
        } else {
            p.measurements.clone()
        };
        let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
        let mut attributes = json!({
            "metric_id": metric,
            "measurements": measurements,
            "interval": interval,
            "filter": [
                format!("greater-or-equal(datetime,{})", fmt(start)),
                format!("less-than(datetime,{})", fmt(end)),
            ],
            "timezone": "UTC",
        });
        if !p.by.is_empty() {
            attributes["by"] = json!(p.by);
        }
        let body = json!({"data": {"type": "metric-aggregate", "attributes": attributes}});
        let page = client
            .post(Tier::S, "/api/metric-aggregates", &body)
            .await?;
        let grouping = Value::Array(p.by.iter().map(|b| json!(b)).collect()).to_string();
        let mut rows = Vec::new();
        for doc in &page.data {
            let a = &doc["attributes"];
            let dates: Vec<Option<String>> = a["dates"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|x| {
                            x.as_str()
                                .and_then(records::parse_time)
                                .map(windows::cursor)
                        })
                        .collect()
                })
                .unwrap_or_default();
            for row in a["data"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let dims = row["dimensions"].clone();
                if !dims.is_array() {
                    out.reject(
                        task,
                        1,
                        METRIC_AGGREGATES.name,
                        "aggregate row without a `dimensions` array".into(),
                        row,
                    );
                    continue;
                }
                let Some(ms) = row["measurements"].as_object() else {
                    out.reject(
                        task,
                        1,
                        METRIC_AGGREGATES.name,
                        "aggregate row without a `measurements` object".into(),
                        row,
                    );
                    continue;
                };
                for (measurement, series) in ms {
                    for (i, v) in series
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                        .iter()
                        .enumerate()
                    {
                        let Some(Some(date)) = dates.get(i) else {
                            out.reject(
                                task,
                                1,
                                METRIC_AGGREGATES.name,
                                format!("measurement {measurement}: value {i} has no date"),
                                row,
                            );
                            break;
                        };
                        rows.push(vec![
                            json!(metric),
                            json!(interval),
                            json!(date),
                            json!(grouping),
                            json!(dims.to_string()),
                            json!(measurement),
                            v.as_f64().map_or(Value::Null, Value::from),
                        ]);
                    }
                }
            }
        }
        out.see(Some(end));
        Ok(out.finish(vec![METRIC_AGGREGATES.table_rows(dedup(rows))], self.lag()))
    }
}

/// Rows of one part must have distinct keys: the last copy of a key wins.
fn dedup(rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    let mut seen = HashSet::new();
    let mut out: Vec<Vec<Value>> = rows
        .into_iter()
        .rev()
        .filter(|r| seen.insert(r[..6].iter().map(Value::to_string).collect::<Vec<_>>()))
        .collect();
    out.reverse();
    out
}
