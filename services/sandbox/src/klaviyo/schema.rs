//! The request-body schemas of the emulated write operations, derived from Klaviyo's
//! OpenAPI files (`specs/klaviyo/{profiles,events,catalogs}.json` of the shared folder) into
//! `write_schemas.json` beside this file and embedded, and a validator of the JSON-Schema
//! subset they use (`type`, `properties`, `required`, `enum`, `nullable`, `items`, `oneOf`,
//! `anyOf`, `allOf`).
//!
//! Each operation of `operations.json` with a method other than `get` and a request body has
//! its schema there, every `$ref` resolved and every other keyword (descriptions, examples,
//! formats) dropped. The test `embedded_schemas_match_the_spec_files` derives them again and
//! compares; with `SLUICE_SANDBOX_WRITE_SPEC_TABLE=1` it rewrites the file instead.
//!
//! Like Klaviyo's API, the validator accepts members a schema does not name (official SDKs
//! send e.g. `relationships` the spec leaves out) and `null` for every `nullable` field.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::Value;

const SCHEMAS_JSON: &str = include_str!("write_schemas.json");

static SCHEMAS: LazyLock<BTreeMap<String, Value>> =
    LazyLock::new(|| match serde_json::from_str(SCHEMAS_JSON) {
        Ok(t) => t,
        // The file is checked by a test; a broken one is a build mistake.
        Err(e) => panic!("klaviyo/write_schemas.json: {e}"),
    });

/// Why a body does not match its schema: the JSON pointer of the offending member
/// (`/data/attributes/title`) and a sentence saying what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invalid {
    /// RFC 6901 pointer into the request body.
    pub pointer: String,
    pub detail: String,
}

/// Checks `body` against the request schema of `operation` (an operation id of
/// `operations.json`). An operation without a schema accepts anything.
pub(crate) fn check(operation: &str, body: &Value) -> Result<(), Invalid> {
    match SCHEMAS.get(operation) {
        Some(schema) => validate(schema, body, ""),
        None => Ok(()),
    }
}

/// Appends one reference token to a JSON pointer (escaping `~` and `/`).
pub(crate) fn push(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", token.replace('~', "~0").replace('/', "~1"))
}

fn invalid(pointer: &str, detail: impl Into<String>) -> Invalid {
    Invalid {
        pointer: if pointer.is_empty() {
            "/".to_owned()
        } else {
            pointer.to_owned()
        },
        detail: detail.into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validates `v` (found at `pointer`) against the resolved `schema`.
pub(crate) fn validate(schema: &Value, v: &Value, pointer: &str) -> Result<(), Invalid> {
    if v.is_null() {
        let typed = schema.get("type").is_some()
            || schema.get("oneOf").is_some()
            || schema.get("anyOf").is_some();
        return if !typed || schema["nullable"] == Value::Bool(true) {
            Ok(())
        } else {
            Err(invalid(pointer, "This field may not be null."))
        };
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(s, v, pointer)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            let mut first = None;
            for s in alts {
                match validate(s, v, pointer) {
                    Ok(()) => {
                        first = None;
                        break;
                    }
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first {
                return Err(e);
            }
        }
    }
    let Some(ty) = schema.get("type").and_then(Value::as_str) else {
        return Ok(());
    };
    let actual = type_name(v);
    let fits = match ty {
        "number" => matches!(actual, "number" | "integer"),
        "integer" => {
            actual == "integer"
                || v.as_f64()
                    .is_some_and(|x| x.fract() == 0.0 && x.is_finite())
        }
        other => actual == other,
    };
    if !fits {
        return Err(invalid(
            pointer,
            format!("Expected a value of type '{ty}', got '{actual}'."),
        ));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(invalid(
            pointer,
            format!("{v} is not a valid choice. Allowed: {}.", names.join(", ")),
        ));
    }
    match v {
        Value::Object(o) => {
            for req in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = req.as_str()
                    && !o.contains_key(name)
                {
                    return Err(invalid(
                        &push(pointer, name),
                        format!("'{name}' is a required field."),
                    ));
                }
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, child) in o {
                    if let Some(s) = props.get(k) {
                        validate(s, child, &push(pointer, k))?;
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(s, item, &push(pointer, &i.to_string()))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use serde_json::{Map, Value, json};

    use super::super::spec::tests::spec_file;
    use super::*;

    const KEPT: &[&str] = &[
        "type",
        "properties",
        "required",
        "enum",
        "nullable",
        "items",
        "oneOf",
        "anyOf",
        "allOf",
    ];

    /// `schema` with every `$ref` (into `spec`'s components) resolved and only the
    /// validated keywords kept.
    pub(crate) fn resolve(spec: &Value, schema: &Value, depth: usize) -> Value {
        assert!(depth < 64, "schema nesting too deep (a cycle?)");
        let mut s = schema;
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().expect("ref name");
            s = &spec["components"]["schemas"][name];
        }
        let Some(o) = s.as_object() else {
            return s.clone();
        };
        let mut out = Map::new();
        for (k, v) in o {
            if !KEPT.contains(&k.as_str()) {
                continue;
            }
            let v = match k.as_str() {
                "properties" => Value::Object(
                    v.as_object()
                        .expect("properties")
                        .iter()
                        .map(|(name, p)| (name.clone(), resolve(spec, p, depth + 1)))
                        .collect(),
                ),
                "items" => resolve(spec, v, depth + 1),
                "oneOf" | "anyOf" | "allOf" => Value::Array(
                    v.as_array()
                        .expect("alternatives")
                        .iter()
                        .map(|x| resolve(spec, x, depth + 1))
                        .collect(),
                ),
                _ => v.clone(),
            };
            out.insert(k.clone(), v);
        }
        Value::Object(out)
    }

    /// The spec file holding `path`.
    pub(crate) fn spec_of(path: &str) -> Value {
        let resource = path
            .strip_prefix("/api/")
            .and_then(|p| p.split('/').next())
            .expect("an /api/ path");
        let file = spec_file(resource);
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        serde_json::from_str(&text).expect("spec JSON")
    }

    /// The resolved schema of the response `status` of `method path`.
    /// (`4XX` is the shared `ClientError` response.)
    pub(crate) fn response_schema(path: &str, method: &str, status: &str) -> Value {
        let spec = spec_of(path);
        let mut r = &spec["paths"][path][method]["responses"][status];
        while let Some(name) = r["$ref"].as_str().and_then(|x| x.rsplit('/').next()) {
            r = &spec["components"]["responses"][name];
        }
        let s = &r["content"]["application/vnd.api+json"]["schema"];
        assert!(!s.is_null(), "{method} {path} has no {status} body schema");
        resolve(&spec, s, 0)
    }

    fn derive() -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for (id, op) in &super::super::spec::tests::table().operations {
            if op.method == "get" {
                continue;
            }
            let spec = spec_of(&op.path);
            let body = &spec["paths"][op.path.as_str()][op.method.as_str()]["requestBody"]["content"]
                ["application/vnd.api+json"]["schema"];
            if body.is_null() {
                continue;
            }
            out.insert(id.clone(), resolve(&spec, body, 0));
        }
        out
    }

    #[test]
    fn embedded_schemas_match_the_spec_files() {
        let derived = derive();
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/klaviyo/write_schemas.json");
        if std::env::var_os("SLUICE_SANDBOX_WRITE_SPEC_TABLE").is_some() {
            let text = serde_json::to_string(&derived).expect("JSON") + "\n";
            std::fs::write(&file, text).expect("writing write_schemas.json");
            return;
        }
        assert_eq!(
            derived,
            *SCHEMAS,
            "{} differs from the spec files: rerun with SLUICE_SANDBOX_WRITE_SPEC_TABLE=1",
            file.display()
        );
        assert!(SCHEMAS.contains_key("bulk_create_catalog_items"));
    }

    #[test]
    fn validator_points_at_what_is_wrong() {
        let item = json!({"data": {"type": "catalog-item", "attributes": {
            "external_id": "a", "title": "A", "description": "d", "url": "https://x",
            "price": null, "published": true,
        }, "relationships": {"categories": {"data": []}}}});
        assert_eq!(check("create_catalog_item", &item), Ok(()));
        let mut missing = item.clone();
        missing["data"]["attributes"]
            .as_object_mut()
            .unwrap()
            .remove("title");
        let e = check("create_catalog_item", &missing).unwrap_err();
        assert_eq!(e.pointer, "/data/attributes/title");
        let mut wrong_type = item.clone();
        wrong_type["data"]["type"] = json!("catalog-variant");
        let e = check("create_catalog_item", &wrong_type).unwrap_err();
        assert_eq!(e.pointer, "/data/type");
        let mut not_number = item.clone();
        not_number["data"]["attributes"]["price"] = json!("12");
        let e = check("create_catalog_item", &not_number).unwrap_err();
        assert_eq!(e.pointer, "/data/attributes/price");
        let mut null_title = item;
        null_title["data"]["attributes"]["title"] = Value::Null;
        let e = check("create_catalog_item", &null_title).unwrap_err();
        assert_eq!(e.pointer, "/data/attributes/title");
        assert_eq!(push("/a", "b/c~d"), "/a/b~1c~0d");
    }
}
