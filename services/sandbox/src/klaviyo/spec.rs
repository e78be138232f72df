//! What the emulator takes from Klaviyo's OpenAPI files (`specs/klaviyo/*.json` of the
//! shared folder), derived into `operations.json` beside this file and embedded: per
//! emulated operation its query parameters (with the enum of each, e.g. the allowed
//! `include`, `fields[…]`, `additional-fields[…]` and `sort` values), its `page[size]`
//! default and maximum, and its rate-limit tier (`x-klaviyo-ratelimit`) with the tiers its
//! description gives for particular parameter values (`additional-fields[profile]=
//! predictive_analytics`: 10/s, 150/m). The test `embedded_table_matches_the_spec_files`
//! derives the table from the spec files again and compares; with
//! `SLUICE_SANDBOX_WRITE_SPEC_TABLE=1` it rewrites the file instead.
//!
//! The revision facts are not in the spec files (which describe one revision): they are
//! [`REVISIONS`] and [`EVENTS_PAGE_SIZE_SINCE`], from Klaviyo's changelog.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// The revisions Klaviyo published (GA), oldest first, from its API changelog; each is also
/// accepted with the `.pre` suffix of its pre-release. 2026-07-15 is the spec files'
/// revision (checked by a test); 2026-10-15 was published after them and is answered as
/// 2026-07-15.
pub(crate) const REVISIONS: &[&str] = &[
    "2022-10-17",
    "2022-12-15",
    "2023-01-24",
    "2023-02-22",
    "2023-06-15",
    "2023-07-15",
    "2023-08-15",
    "2023-09-15",
    "2023-10-15",
    "2023-12-15",
    "2024-02-15",
    "2024-05-15",
    "2024-06-15",
    "2024-07-15",
    "2024-10-15",
    "2025-01-15",
    "2025-04-15",
    "2025-07-15",
    "2025-10-15",
    "2026-01-15",
    "2026-04-15",
    "2026-07-15",
    "2026-10-15",
];

/// The first revision whose `GET /api/events` takes `page[size]` (Klaviyo's changelog for
/// 2026-01-15); earlier revisions answer 200 events per page whatever it says.
pub(crate) const EVENTS_PAGE_SIZE_SINCE: &str = "2026-01-15";

/// One emulated operation as the spec describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Operation {
    /// The path, e.g. `/api/events`.
    pub path: String,
    /// The HTTP method in lower case (`post`, `patch`, `delete`); left out for `get`.
    #[serde(default = "get_method", skip_serializing_if = "is_get")]
    pub method: String,
    /// `x-klaviyo-ratelimit`: `[burst per second, steady per minute]`.
    pub limits: [u32; 2],
    /// Other tiers for a parameter value: `[parameter, value, burst, steady]`.
    pub limits_when: Vec<(String, String, u32, u32)>,
    /// `page[size]`: `[default, max]` (min 1); `None` when the operation has none.
    pub page_size: Option<[usize; 2]>,
    /// Every query parameter: its enum (`include`, `fields[…]`, `additional-fields[…]`,
    /// `sort`), or `None` for free values (`filter`, `page[cursor]`, `page[size]`).
    pub params: BTreeMap<String, Option<Vec<String>>>,
}

/// The embedded table: `{"revision", "operations": {operation id: Operation}}`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Table {
    /// The spec files' revision (`info.version`).
    pub revision: String,
    /// By operation id (`get_events`, …).
    pub operations: BTreeMap<String, Operation>,
}

fn get_method() -> String {
    "get".to_owned()
}

fn is_get(method: &str) -> bool {
    method == "get"
}

const TABLE_JSON: &str = include_str!("operations.json");

static TABLE: LazyLock<Table> = LazyLock::new(|| match serde_json::from_str(TABLE_JSON) {
    Ok(t) => t,
    // The file is checked by a test; a broken one is a build mistake.
    Err(e) => panic!("klaviyo/operations.json: {e}"),
});

/// The operation `id` (`get_events`, …) of the table.
///
/// # Panics
/// When the table has no such operation (every emulated one is checked by a test).
pub(crate) fn operation(id: &str) -> &'static Operation {
    match TABLE.operations.get(id) {
        Some(op) => op,
        None => panic!("klaviyo/operations.json has no operation {id}"),
    }
}

/// Whether Klaviyo published `revision` (`YYYY-MM-DD`, or that with `.pre`).
pub(crate) fn published(revision: &str) -> bool {
    let date = revision.strip_suffix(".pre").unwrap_or(revision);
    REVISIONS.contains(&date)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::Value;

    use super::*;

    /// The embedded table.
    pub(crate) fn table() -> &'static Table {
        &TABLE
    }

    /// The shared folder's Klaviyo specs (`../shared/specs/klaviyo` of the repository).
    pub(crate) fn spec_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs/klaviyo")
    }

    /// `[burst, steady]` of `{"burst": "350/s", "steady": "3500/m"}`-like texts.
    fn rate(burst: &str, steady: &str) -> [u32; 2] {
        let n = |s: &str, unit: &str| -> u32 {
            s.trim()
                .strip_suffix(unit)
                .and_then(|x| x.parse().ok())
                .unwrap_or_else(|| panic!("rate {s:?}"))
        };
        [n(burst, "/s"), n(steady, "/m")]
    }

    /// `(default, max)` of "Default: 20. Min: 1. Max: 100.".
    fn page_size(description: &str) -> [usize; 2] {
        let num = |key: &str| -> usize {
            let rest = &description[description.find(key).expect(key) + key.len()..];
            rest.trim()
                .trim_end_matches('.')
                .split(['.', ' '])
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or_else(|| panic!("{key} in {description:?}"))
        };
        assert_eq!(num("Min:"), 1, "{description}");
        [num("Default:"), num("Max:")]
    }

    fn derive_operation(spec: &Value, path: &str, method: &str) -> (String, Operation) {
        let op = &spec["paths"][path][method];
        let id = op["operationId"].as_str().expect("operationId").to_owned();
        let rl = &op["x-klaviyo-ratelimit"];
        let limits = rate(
            rl["burst"].as_str().expect("burst"),
            rl["steady"].as_str().expect("steady"),
        );
        let mut params = BTreeMap::new();
        let mut size = None;
        for p in op["parameters"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if p["in"] != "query" {
                continue;
            }
            let name = p["name"].as_str().expect("name").to_owned();
            let schema = &p["schema"];
            let values = schema
                .get("items")
                .unwrap_or(schema)
                .get("enum")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .map(|v| v.as_str().expect("text enum").to_owned())
                        .collect::<Vec<_>>()
                });
            if name == "page[size]" {
                size = Some(page_size(p["description"].as_str().expect("description")));
            }
            params.insert(name, values);
        }
        // "Rate limits when using the `include=list` parameter in your API request:<br>Burst:
        // `1/s`<br>Steady: `15/m`" (the value may be written singular: `list` for `lists`).
        let description = op["description"].as_str().unwrap_or("");
        let mut limits_when = Vec::new();
        let marker = "Rate limits when using the `";
        for part in description.split(marker).skip(1) {
            let (setting, rest) = part.split_once('`').expect("closing quote");
            let (param, mut value) = setting.split_once('=').expect("param=value");
            let value_owned;
            if let Some(Some(values)) = params.get(param)
                && !values.iter().any(|v| v == value)
            {
                value_owned = format!("{value}s");
                assert!(values.contains(&value_owned), "{id}: {setting}");
                value = &value_owned;
            }
            let tail = |key: &str| -> String {
                let after = &rest[rest.find(key).expect(key) + key.len()..];
                after.split('`').nth(1).expect("quoted rate").to_owned()
            };
            let [b, s] = rate(&tail("Burst:"), &tail("Steady:"));
            limits_when.push((param.to_owned(), value.to_owned(), b, s));
        }
        (
            id,
            Operation {
                path: path.to_owned(),
                method: method.to_owned(),
                limits,
                limits_when,
                page_size: size,
                params,
            },
        )
    }

    /// The spec file of an `/api/<resource>…` path: `<resource>.json`, or the file of the
    /// family (`catalog-…` → `catalogs`, `profile-…` → `profiles`, `event-…` → `events`).
    pub(crate) fn spec_file(resource: &str) -> PathBuf {
        // Resources described in another resource's file.
        let resource = match resource {
            "flow-actions" => "flows",
            "tag-groups" => "tags",
            "metric-aggregates" => "metrics",
            other => other,
        };
        let dir = spec_dir();
        let own = dir.join(format!("{resource}.json"));
        if own.exists() {
            return own;
        }
        let family = ["catalog", "profile", "event"]
            .into_iter()
            .find(|f| resource.starts_with(f))
            .map_or_else(|| resource.to_owned(), |f| format!("{f}s"));
        dir.join(format!("{family}.json"))
    }

    fn derive(paths: impl IntoIterator<Item = (String, String)>) -> Table {
        let mut files: BTreeMap<String, Value> = BTreeMap::new();
        let mut revision = None;
        let mut operations = BTreeMap::new();
        for (path, method) in paths {
            let resource = path
                .strip_prefix("/api/")
                .and_then(|p| p.split('/').next())
                .expect("an /api/ path");
            let resource = resource.to_owned();
            let spec = files.entry(resource.clone()).or_insert_with(|| {
                let file = spec_file(&resource);
                let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
                    panic!("reading {} (the shared specs): {e}", file.display())
                });
                serde_json::from_str(&text).expect("spec JSON")
            });
            let v = spec["info"]["version"].as_str().expect("info.version");
            assert_eq!(*revision.get_or_insert_with(|| v.to_owned()), v);
            let (id, op) = derive_operation(spec, &path, &method);
            operations.insert(id, op);
        }
        Table {
            revision: revision.expect("at least one operation"),
            operations,
        }
    }

    #[test]
    fn embedded_table_matches_the_spec_files() {
        let paths: Vec<(String, String)> = TABLE
            .operations
            .values()
            .map(|o| (o.path.clone(), o.method.clone()))
            .collect();
        let derived = derive(paths);
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/klaviyo/operations.json");
        if std::env::var_os("SLUICE_SANDBOX_WRITE_SPEC_TABLE").is_some() {
            let text = serde_json::to_string_pretty(&derived).expect("JSON") + "\n";
            std::fs::write(&file, text).expect("writing operations.json");
            return;
        }
        assert_eq!(
            derived,
            *TABLE,
            "{} differs from the spec files: rerun with SLUICE_SANDBOX_WRITE_SPEC_TABLE=1",
            file.display()
        );
        assert!(
            REVISIONS.contains(&TABLE.revision.as_str()),
            "the spec files' revision {} is a published one",
            TABLE.revision
        );
        assert!(REVISIONS.windows(2).all(|w| w[0] < w[1]));
        assert!(REVISIONS.contains(&EVENTS_PAGE_SIZE_SINCE));
    }

    #[test]
    fn every_emulated_operation_is_in_the_table() {
        for id in super::super::api::OPERATION_IDS
            .iter()
            .chain(super::super::api::ENGAGEMENT_OPERATION_IDS)
        {
            assert!(operation(id).path.starts_with("/api/"), "{id}");
        }
    }

    #[test]
    fn published_revisions() {
        assert!(published("2026-07-15"));
        assert!(published("2024-10-15.pre"));
        assert!(!published("2024-01-01"));
        assert!(!published("2026-07-15.beta"));
        assert!(!published("2026-13-45"));
    }
}
