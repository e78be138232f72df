#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Cursor, Read};

use serde_json::Value;

use super::*;

fn spec(seed: u64, messages: u64) -> ExportSpec {
    ExportSpec {
        seed,
        messages,
        date: NaiveDate::from_ymd_opt(2016, 4, 1).unwrap(),
    }
}

fn archive(spec: &ExportSpec) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    write_export(spec, &mut out).unwrap();
    out.into_inner()
}

/// (entry name, bytes) in archive order.
fn entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut file = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            file.read_to_end(&mut data).unwrap();
            (file.name().unwrap().into_owned(), data)
        })
        .collect()
}

fn member<'a>(entries: &'a [(String, Vec<u8>)], name: &str) -> &'a str {
    let (_, data) = entries.iter().find(|(n, _)| n == name).unwrap();
    std::str::from_utf8(data).unwrap()
}

fn records(text: &str) -> Vec<serde_json::Map<String, Value>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| match serde_json::from_str(l).unwrap() {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Distinct action keys (action, ts, url) of a message.
fn actions(rec: &serde_json::Map<String, Value>) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (field, action) in [("opens", "open"), ("clicks", "click")] {
        if let Some(list) = rec.get(field) {
            for a in list.as_array().unwrap() {
                let ts = a["ts"]["$date"].as_i64().unwrap().to_string();
                let url = a.get("url").map(s).unwrap_or_default();
                out.push((action.to_owned(), ts, url));
            }
        }
    }
    out
}

/// Row counts of an idempotent load, computed independently from the parsed archive.
fn count_parsed(spec: &ExportSpec, bytes: &[u8]) -> BTreeMap<String, u64> {
    let entries = entries(bytes);
    let mut c: BTreeMap<String, u64> = BTreeMap::new();
    let mut set = |name: &str, n: usize| {
        c.insert(name.to_owned(), n as u64);
    };

    let blasts = records(member(&entries, &spec.member_name("blast")));
    set(
        "blast",
        blasts
            .iter()
            .map(|b| s(&b["id"]))
            .collect::<HashSet<_>>()
            .len(),
    );

    let mut messages = HashSet::new();
    let mut acts = HashSet::new();
    let mut without = 0;
    for m in records(member(&entries, &spec.member_name("message_blast"))) {
        let key = (s(&m["blast_id"]), s(&m["profile_id"]));
        assert!(messages.insert(key.clone()), "duplicate message {key:?}");
        let a = actions(&m);
        if a.is_empty() {
            without += 1;
        }
        for a in a {
            assert!(acts.insert((key.clone(), a)), "duplicate action");
        }
    }
    set("message_blast", messages.len());
    set("message_blast_action", acts.len());
    set("message_blast_flat", acts.len() + without);

    let mut messages = HashSet::new();
    let mut acts = HashSet::new();
    let mut without = 0;
    for m in records(member(&entries, &spec.member_name("message_transactional"))) {
        let id = s(&m["id"]);
        assert_eq!(id.len(), 24);
        assert!(messages.insert(id.clone()), "duplicate transactional id");
        assert!(m.contains_key("opens") && m.contains_key("clicks"));
        let a = actions(&m);
        if a.is_empty() {
            without += 1;
        }
        for a in a {
            assert!(acts.insert((id.clone(), a)), "duplicate action");
        }
    }
    set("message_transactional", messages.len());
    set("message_transactional_action", acts.len());
    set("message_transactional_flat", acts.len() + without);

    let (mut ids, mut geo, mut browser, mut lists, mut vars) = (
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
    );
    for p in records(member(&entries, &spec.member_name("profile"))) {
        let id = s(&p["id"]);
        assert_eq!(id.len(), 24);
        assert!(ids.insert(id.clone()), "duplicate profile id");
        for scope in ["city", "country", "state", "zip"] {
            if let Some(m) = p["geo"].get(scope) {
                for label in m.as_object().unwrap().keys() {
                    geo.insert((id.clone(), scope, label.clone()));
                }
            }
        }
        for name in p["browser"].as_object().unwrap().keys() {
            browser.insert((id.clone(), name.clone()));
        }
        for name in p["lists_signup"].as_object().unwrap().keys() {
            lists.insert((id.clone(), name.clone()));
        }
        for name in p["vars"].as_object().unwrap().keys() {
            vars.insert((id.clone(), name.clone()));
        }
    }
    set("profile", ids.len());
    set("profile_geo", geo.len());
    set("profile_browser", browser.len());
    set("profile_lists_signup", lists.len());
    set("profile_vars", vars.len());
    c
}

#[test]
fn expected_counts_match_the_parsed_archive() {
    for (seed, messages) in [(1, 0), (1, 1), (2, 21), (7, 999), (42, 5_000), (3, 12_345)] {
        let spec = spec(seed, messages);
        let mut out = Cursor::new(Vec::new());
        let written = write_export_with_counts(&spec, &mut out).unwrap();
        let bytes = out.into_inner();
        let expected = expected_counts(&spec);
        assert_eq!(expected.keys().map(String::as_str).collect::<Vec<_>>(), {
            let mut t = TABLES.to_vec();
            t.sort_unstable();
            t
        });
        assert_eq!(written, expected, "seed {seed}, messages {messages}");
        assert_eq!(
            count_parsed(&spec, &bytes),
            expected,
            "seed {seed}, messages {messages}"
        );
        assert_eq!(expected["message_blast"], messages);
        assert_eq!(expected["blast"], spec.blasts());
        assert_eq!(expected["message_transactional"], spec.transactional());
        assert_eq!(expected["profile"], spec.profiles());
    }
}

#[test]
fn same_spec_same_bytes() {
    let a = archive(&spec(9, 3_000));
    let b = archive(&spec(9, 3_000));
    assert_eq!(a, b);
    assert_ne!(a, archive(&spec(10, 3_000)));
}

#[test]
fn layout_matches_the_sample() {
    let spec = spec(5, 2_000);
    let entries = entries(&archive(&spec));
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "blast.20160401.json",
            "__MACOSX/",
            "__MACOSX/._blast.20160401.json",
            "message_blast.20160401.json",
            "__MACOSX/._message_blast.20160401.json",
            "message_transactional.20160401.json",
            "__MACOSX/._message_transactional.20160401.json",
            "profile.20160401.json",
            "__MACOSX/._profile.20160401.json",
        ]
    );
    for (name, data) in &entries {
        if name.starts_with("__MACOSX/._") {
            assert_eq!(data.len(), 222);
            assert_eq!(data.as_slice(), APPLE_DOUBLE);
        } else if name.starts_with("profile.") {
            assert!(data.ends_with(b" }\n\n"), "{name} ends with an empty line");
        } else if name.ends_with(".json") {
            assert!(data.ends_with(b" }\n"), "{name} ends with a newline");
        }
    }
    assert!(member(&entries, "profile.20160401.json").ends_with("}\n\n"));

    // The AppleDouble bytes are the sample's, and the top-level keys of each member are
    // the sample's.
    let sample_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/sailthru/sailthru_data-exporter_samples.zip"
    );
    let Ok(sample) = std::fs::read(sample_path) else {
        eprintln!("sample not found at {sample_path}; skipping the comparison");
        return;
    };
    let sample = self::entries(&sample);
    for (name, data) in &sample {
        if name.starts_with("__MACOSX/._") {
            assert_eq!(data.as_slice(), APPLE_DOUBLE, "{name}");
        }
    }
    let keys = |text: &str| -> BTreeSet<String> {
        records(text)
            .iter()
            .flat_map(|r| r.keys().cloned().collect::<Vec<_>>())
            .collect()
    };
    for table in ["blast", "message_blast", "message_transactional", "profile"] {
        let name = spec.member_name(table);
        assert_eq!(
            keys(member(&entries, &name)),
            keys(member(&sample, &name)),
            "{table}"
        );
    }
    let geo_keys = |text: &str| -> BTreeSet<String> {
        records(text)
            .iter()
            .flat_map(|r| {
                r["geo"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(
        geo_keys(member(&entries, "profile.20160401.json")),
        geo_keys(member(&sample, "profile.20160401.json"))
    );
}

#[test]
fn lines_keep_the_export_quirks() {
    let spec = spec(11, 20_000);
    let entries = entries(&archive(&spec));
    let mut lengths = BTreeMap::new();
    for (name, data) in &entries {
        if !name.ends_with(".json") || name.starts_with("__MACOSX") {
            continue;
        }
        let text = std::str::from_utf8(data).unwrap();
        for line in text.lines().filter(|l| !l.is_empty()) {
            assert!(line.starts_with("{ \"") && line.ends_with(" }"), "{line}");
            assert!(!line.contains("\":") && !line.contains("{\""), "{line}");
            // Zone-less timestamps: count them by length.
            for piece in line.split('"') {
                let b = piece.as_bytes();
                if b.len() >= 16 && b[4] == b'-' && b[10] == b'T' && b[13] == b':' {
                    *lengths.entry(b.len()).or_insert(0u64) += 1;
                }
            }
        }
    }
    assert_eq!(
        lengths.keys().copied().collect::<Vec<_>>(),
        [16, 19, 23],
        "minute, second and millisecond precision all appear: {lengths:?}"
    );

    let mb = member(&entries, "message_blast.20160401.json");
    assert!(mb.contains("\"opens\" : [{ \"ts\" : { \"$date\" : "));
    assert!(mb.contains("\"clicks\" : [{ \"url\" : "));
    assert!(
        mb.contains("\"device\" : null, \"message_revenue\" : null, \"delivery_status\" : null }")
    );
    let without = records(mb)
        .iter()
        .filter(|r| !r.contains_key("opens") && !r.contains_key("clicks"))
        .count();
    assert!(without > 0);
    let mt = member(&entries, "message_transactional.20160401.json");
    assert!(mt.contains("\"clicks\" : [], \"opens\" : []"));
    assert!(mb.contains("’") || member(&entries, "blast.20160401.json").contains("’"));

    let profiles = records(member(&entries, "profile.20160401.json"));
    assert!(profiles.iter().any(|p| !p.contains_key("optout_reason")));
    assert!(
        profiles
            .iter()
            .any(|p| p.get("optout_reason") == Some(&Value::Null))
    );
    assert!(
        profiles
            .iter()
            .any(|p| !p["geo"].as_object().unwrap().contains_key("zip"))
    );
    assert!(profiles.iter().any(|p| {
        let v = p["vars"].as_object().unwrap();
        v.contains_key("Group") && v.contains_key("group")
    }));
    assert!(profiles.iter().any(|p| {
        let l = p["lists_signup"].as_object().unwrap();
        l.contains_key("Jess Delta Test") && l.contains_key("Jess delta test")
    }));
    let var_types: BTreeSet<&str> = profiles
        .iter()
        .flat_map(|p| p["vars"].as_object().unwrap().values())
        .map(|v| match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            _ => "other",
        })
        .collect();
    assert_eq!(
        var_types.into_iter().collect::<Vec<_>>(),
        ["bool", "null", "number", "string"]
    );
}

#[test]
fn invalid_specs_name_the_parameter() {
    let mut s = spec(1, MAX_MESSAGES + 1);
    assert_eq!(s.validate().unwrap_err().parameter, "messages");
    assert!(write_export(&s, Cursor::new(Vec::new())).is_err());
    s.messages = 1;
    s.date = NaiveDate::from_ymd_opt(1975, 1, 1).unwrap();
    assert_eq!(s.validate().unwrap_err().parameter, "date");
    assert_eq!(parse_date_stamp("20160401").unwrap(), spec(0, 0).date);
    for bad in ["2016041", "2016-04-01", "20161301", "+2016040"] {
        assert_eq!(parse_date_stamp(bad).unwrap_err().parameter, "date");
    }
}
