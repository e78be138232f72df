//! Rows of `templates` (`GET /api/templates`) and `suppressions` (`GET /api/profiles` with
//! `additional-fields[profile]=subscriptions`).

use super::*;

pub(super) fn template_rows(
    task: &FetchTask,
    page_no: u32,
    page: &Page,
    rows: &mut Collector,
    out: &mut Out,
) {
    for item in &page.data {
        let converted = (|| -> Result<_, String> {
            let (id, mut a) = envelope(item, "template")?;
            let what = format!("template {id}");
            Ok(vec![
                json!(id),
                take_text(&mut a, "name"),
                take_text(&mut a, "editor_type"),
                take_text(&mut a, "html"),
                take_text(&mut a, "text"),
                take_text(&mut a, "amp"),
                take_time(&mut a, "created", &what)?,
                take_time(&mut a, "updated", &what)?,
                Value::Object(a),
            ])
        })();
        match converted {
            Ok(row) => rows.add_row(&TEMPLATES, row),
            Err(e) => out.reject(task, page_no, TEMPLATES.name, e, item),
        }
    }
}

pub(super) fn suppression_rows(
    task: &FetchTask,
    page_no: u32,
    page: &Page,
    rows: &mut Collector,
    out: &mut Out,
) {
    for item in &page.data {
        let Some(id) = item["id"].as_str() else {
            out.reject(
                task,
                page_no,
                SUPPRESSIONS.name,
                "profile without a string `id`".into(),
                item,
            );
            continue;
        };
        let email = item["attributes"]["email"].clone();
        let list = &item["attributes"]["subscriptions"]["email"]["marketing"]["suppression"];
        for s in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(reason) = s["reason"].as_str() else {
                out.reject(
                    task,
                    page_no,
                    SUPPRESSIONS.name,
                    format!("profile {id}: a suppression without a reason"),
                    item,
                );
                continue;
            };
            let at = s["timestamp"]
                .as_str()
                .and_then(records::parse_time)
                .map_or(Value::Null, |t| json!(windows::cursor(t)));
            rows.add_row(
                &SUPPRESSIONS,
                vec![json!(id), json!(reason), at, email.clone()],
            );
        }
    }
}
