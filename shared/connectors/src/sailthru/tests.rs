//! Tests of the Sailthru connector against the real sample export and archives built here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use super::settings::{EmailPolicy, SailthruSettings};
use serde_json::{Value, json};
use sluice_contracts::{Compression, FetchTask, FileSlice, Mode, PageRef, TaskKind};
use uuid::Uuid;

use super::*;
use crate::{Connector, ConnectorError, JobSpec, Plan};

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/sailthru/sailthru_data-exporter_samples.zip")
}

fn connector(page_size: u64) -> SailthruConnector {
    build(&SailthruSettings {
        page_size,
        email_policy: EmailPolicy::Hash,
        accounts: BTreeMap::new(),
    })
}

fn job(params: Value) -> JobSpec {
    JobSpec {
        job_id: Uuid::nil(),
        stream: "export".into(),
        account: "default".into(),
        params,
        mode: Mode::Full,
        bookmark: None,
    }
}

fn task(planned: &PlannedTask, params: &Value, index: usize) -> FetchTask {
    FetchTask {
        v: 1,
        task_id: format!("t{index}"),
        job_id: Uuid::nil(),
        connector: "sailthru".into(),
        stream: planned.stream.clone(),
        account: "default".into(),
        kind: planned.kind.clone(),
        attempt: 1,
        params: params.clone(),
        once: None,
    }
}

fn slice_of(planned: &PlannedTask) -> &FileSlice {
    match &planned.kind {
        TaskKind::Page(PageRef { file: Some(f), .. }) => f,
        other => panic!("not a file slice: {other:?}"),
    }
}

/// Fetches every task of a plan; returns rows per table and all rejects.
async fn fetch_all(
    c: &SailthruConnector,
    plan: &Plan,
) -> (
    BTreeMap<String, Vec<Vec<Value>>>,
    Vec<RejectedRecord>,
    BTreeMap<String, Vec<String>>,
) {
    let mut tables: BTreeMap<String, Vec<Vec<Value>>> = BTreeMap::new();
    let mut columns = BTreeMap::new();
    let mut rejected = Vec::new();
    for (i, planned) in plan.tasks.iter().enumerate() {
        let out = c
            .fetch(&task(planned, &plan.params, i))
            .await
            .expect("fetch");
        assert_eq!(out.cursor_max.as_deref(), Some("2016-04-01"));
        let mut seen = std::collections::HashSet::new();
        for t in out.tables {
            assert!(
                seen.insert(t.table.clone()),
                "one TableRows per table per task"
            );
            assert_eq!(t.merge.version_column.as_deref(), Some("export_date"));
            for row in &t.rows {
                assert_eq!(row.len(), t.columns.len());
                assert_eq!(
                    row.last().map(|c| c.value().into_owned()),
                    Some(json!("2016-04-01")),
                    "export_date last"
                );
            }
            columns.insert(t.table.clone(), t.columns.clone());
            tables
                .entry(t.table)
                .or_default()
                .extend(crate::cell::values(t.rows));
        }
        rejected.extend(out.rejected);
    }
    (tables, rejected, columns)
}

fn counts(tables: &BTreeMap<String, Vec<Vec<Value>>>) -> BTreeMap<&str, usize> {
    tables
        .iter()
        .map(|(k, v)| (k.strip_prefix("sailthru.").unwrap(), v.len()))
        .collect()
}

fn expected_sample_counts() -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("blast", 20),
        ("message_blast", 20),
        ("message_blast_action", 8),
        ("message_transactional", 20),
        ("message_transactional_action", 15),
        ("profile", 20),
        ("profile_geo", 508),
        ("profile_browser", 77),
        ("profile_lists_signup", 851),
        ("profile_vars", 1525),
    ])
}

#[tokio::test]
async fn plans_the_sample_archive() {
    let c = connector(7);
    let plan = c
        .plan(&job(json!({"export": sample().to_str().unwrap()})))
        .await
        .expect("plan");
    // The four __MACOSX entries are skipped, each with a warning naming it; nothing is rejected.
    assert_eq!(plan.warnings.len(), 4, "{:?}", plan.warnings);
    assert!(
        plan.warnings
            .iter()
            .all(|w| w.contains("__MACOSX/._") && w.contains("macOS metadata")),
        "{:?}",
        plan.warnings
    );
    assert!(plan.rejected.is_empty(), "{:?}", plan.rejected);
    assert_eq!(
        plan.params,
        json!({"export": sample().to_str().unwrap(), "page_size": 7, "email_policy": "hash"})
    );
    let mut per_member: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for t in &plan.tasks {
        let s = slice_of(t);
        assert_eq!(s.compression, Compression::Deflate);
        assert!(s.compressed_size.is_some());
        assert_eq!(t.stream, s.member.split('.').next().unwrap());
        per_member
            .entry(s.member.clone())
            .or_default()
            .push((s.first_line, s.line_count));
    }
    assert_eq!(per_member.len(), 4);
    for member in ["blast", "message_blast", "message_transactional"] {
        assert_eq!(
            per_member[&format!("{member}.20160401.json")],
            vec![(1, 7), (8, 7), (15, 6)],
            "{member}"
        );
    }
    // profile has 20 records and a trailing empty line, kept with the last slice.
    assert_eq!(
        per_member["profile.20160401.json"],
        vec![(1, 7), (8, 7), (15, 7)]
    );
    // Offsets agree with the archive's local headers (see archive tests).
    let blast = plan
        .tasks
        .iter()
        .map(slice_of)
        .find(|s| s.member.starts_with("blast"))
        .unwrap();
    assert_eq!(
        blast.data_offset,
        30 + "blast.20160401.json".len() as u64 + 16
    );
    assert_eq!(blast.compressed_size, Some(696));
}

#[tokio::test]
async fn fetches_every_row_of_the_sample_in_small_slices() {
    for page_size in [7, 5000] {
        let c = connector(page_size);
        let plan = c
            .plan(&job(json!({"export": sample().to_str().unwrap()})))
            .await
            .unwrap();
        let (tables, rejected, columns) = fetch_all(&c, &plan).await;
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(
            counts(&tables),
            expected_sample_counts(),
            "page_size {page_size}"
        );

        // The flat views: one row per action, one for a message without actions.
        for (parent, actions, flat) in [
            (
                "sailthru.message_blast",
                "sailthru.message_blast_action",
                23,
            ),
            (
                "sailthru.message_transactional",
                "sailthru.message_transactional_action",
                28,
            ),
        ] {
            let key = if parent.ends_with("blast") { 2 } else { 1 };
            let with_actions: std::collections::HashSet<String> = tables[actions]
                .iter()
                .map(|r| r[..key].iter().map(Value::to_string).collect::<String>())
                .collect();
            let without = tables[parent].len() - with_actions.len();
            assert_eq!(tables[actions].len() + without, flat, "{parent}");
        }

        // Values: normalised timestamps, exact action instants, hashed e-mail.
        let mb = &tables["sailthru.message_blast"];
        let cols = &columns["sailthru.message_blast"];
        let send = cols.iter().position(|c| c == "send_time").unwrap();
        assert!(
            mb.iter()
                .any(|r| r[send] == json!("2016-03-31T08:00:03.016000"))
        );
        assert!(
            tables["sailthru.message_blast_action"]
                .iter()
                .any(|r| r[3] == json!("2016-03-31T13:41:48.000Z") && r[2] == json!("open"))
        );
        let profile_cols = &columns["sailthru.profile"];
        let email = profile_cols.iter().position(|c| c == "email").unwrap();
        for row in &tables["sailthru.profile"] {
            let e = row[email].as_str().unwrap();
            assert_eq!(e.len(), 64);
            assert!(!e.contains('@'));
        }
        // Keys differing only by case stay distinct rows.
        let vars = &tables["sailthru.profile_vars"];
        let ids_with = |name: &str| -> std::collections::HashSet<Value> {
            vars.iter()
                .filter(|r| r[1] == json!(name))
                .map(|r| r[0].clone())
                .collect()
        };
        let upper = ids_with("Group");
        let lower = ids_with("group");
        assert!(!upper.is_empty() && !lower.is_empty());
        assert!(
            tables["sailthru.profile_lists_signup"]
                .iter()
                .any(|r| r[1] == json!("Jess delta test"))
        );
        assert!(
            tables["sailthru.profile_lists_signup"]
                .iter()
                .any(|r| r[1] == json!("Jess Delta Test"))
        );
        assert!(
            tables["sailthru.profile_lists_signup"]
                .iter()
                .all(|r| r[2].is_null() || r[2].as_str().unwrap().len() == 26)
        );
    }
}

#[tokio::test]
async fn file_urls_and_param_overrides() {
    let c = connector(5000);
    let url = url::Url::from_file_path(sample()).unwrap().to_string();
    let plan = c
        .plan(&job(
            json!({"export": url, "page_size": 50, "email_policy": "drop"}),
        ))
        .await
        .unwrap();
    assert_eq!(plan.params["email_policy"], json!("drop"));
    assert_eq!(plan.tasks.len(), 4);
    let profile = plan.tasks.iter().find(|t| t.stream == "profile").unwrap();
    let out = c.fetch(&task(profile, &plan.params, 0)).await.unwrap();
    let p = out
        .tables
        .iter()
        .find(|t| t.table == "sailthru.profile")
        .unwrap();
    let email = p.columns.iter().position(|c| c == "email").unwrap();
    assert!(p.rows.iter().all(|r| r[email].is_null()));
    assert_eq!(p.rows.len(), 20);
    let geo = out
        .tables
        .iter()
        .find(|t| t.table == "sailthru.profile_geo")
        .unwrap();
    assert_eq!(geo.merge.replace_scope, Some(vec!["id".to_string()]));
}

#[tokio::test]
async fn invalid_params_and_locations() {
    let c = connector(10);
    for params in [
        json!({}),
        json!({"export": ""}),
        json!({"export": "  "}),
        json!(null),
        json!({"export": 3}),
    ] {
        let e = c.plan(&job(params.clone())).await.unwrap_err();
        assert!(
            matches!(e, ConnectorError::InvalidParams(ref m) if m.contains("export")),
            "{params}: {e}"
        );
    }
    let e = c
        .plan(&job(json!({"export": "/x.zip", "page_size": 0})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ConnectorError::InvalidParams(ref m) if m.contains("page_size")),
        "{e}"
    );
    let e = c
        .plan(&job(json!({"export": "/x.zip", "email_policy": "encrypt"})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ConnectorError::InvalidParams(ref m) if m.contains("email_policy")),
        "{e}"
    );
    let e = c
        .plan(&job(json!({"export": "/x.zip", "emailpolicy": "keep"})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ConnectorError::InvalidParams(ref m) if m.contains("emailpolicy")),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.zip");
    let e = c
        .plan(&job(json!({"export": missing.to_str().unwrap()})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ConnectorError::InvalidParams(ref m) if m.contains("nope.zip") && m.contains("not found")),
        "{e}"
    );

    let not_zip = dir.path().join("notes.zip");
    std::fs::write(&not_zip, b"this is not a zip archive at all\n").unwrap();
    let e = c
        .plan(&job(json!({"export": not_zip.to_str().unwrap()})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ConnectorError::Permanent(_))
            && e.to_string().contains("notes.zip")
            && e.to_string().contains("not a readable zip archive"),
        "{e}"
    );

    let mut bad_stream = job(json!({"export": "/x.zip"}));
    bad_stream.stream = "blast".into();
    assert!(matches!(
        c.plan(&bad_stream).await.unwrap_err(),
        ConnectorError::InvalidParams(_)
    ));
}

fn build_zip(members: &[(&str, &[u8], zip::CompressionMethod)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, method) in members {
        let options = zip::write::SimpleFileOptions::default().compression_method(*method);
        writer.start_file(*name, options).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[tokio::test]
async fn corrupt_lines_are_rejected_and_the_rest_loads() {
    let blast = b"{ \"name\" : \"a\", \"day\" : \"2016-03-31\", \"id\" : 1 }\n\
{ \"name\" : \"b\", \"day\" : \"2016-03-31\", \"id\" : 2 }\n\
{ \"name\" : \"c\", \"day\" : \"2016-03-31\", \"id\" : 3 \n\
\n\
{ \"name\" : \"d\", \"day\" : \"2016-13-31\", \"id\" : 4 }\n\
{ \"name\" : \"e\", \"day\" : \"2016-03-31\", \"id\" : 5 }";
    let profile =
        b"{ \"id\" : \"p1\", \"email\" : \"Someone@Example.com\", \"total_opens\" : \"x\" }\n\
{ \"id\" : \"p2\", \"email\" : \"someone@example.com\" \n\
{ \"id\" : \"p3\", \"vars\" : { \"a\" : 1 } }\n";
    let bytes = build_zip(&[
        (
            "blast.20160402.json",
            blast,
            zip::CompressionMethod::Deflated,
        ),
        (
            "profile.20160402.json",
            profile,
            zip::CompressionMethod::Stored,
        ),
        (
            "clicks.20160401.json",
            b"{}\n",
            zip::CompressionMethod::Deflated,
        ),
        ("readme.txt", b"hello\n", zip::CompressionMethod::Deflated),
        (
            "__MACOSX/._blast.20160402.json",
            b"junk",
            zip::CompressionMethod::Stored,
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.zip");
    std::fs::write(&path, &bytes).unwrap();

    let c = connector(2);
    let plan = c
        .plan(&job(json!({"export": path.to_str().unwrap()})))
        .await
        .unwrap();
    // Unknown table → rejected; unexpected name and macOS junk → a warning each.
    assert_eq!(plan.rejected.len(), 1, "{:?}", plan.rejected);
    assert_eq!(plan.rejected[0].source, "clicks.20160401.json");
    assert!(plan.rejected[0].error.contains("unknown table 'clicks' in member clicks.20160401.json; known tables: blast, message_blast, message_transactional, profile"));
    assert_eq!(
        plan.rejected[0].raw,
        json!({"member": "clicks.20160401.json"})
    );
    assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
    assert!(plan.warnings[0].contains("readme.txt"));
    assert!(plan.warnings[1].contains("__MACOSX/._blast.20160402.json"));

    let slices: Vec<&FileSlice> = plan.tasks.iter().map(slice_of).collect();
    assert!(slices.iter().any(|s| s.compression == Compression::Stored));
    // blast: 5 non-blank lines in slices of 2: lines 1-2, 3-5 (the blank line 4 rides
    // along), 6.
    let blast_slices: Vec<(u64, u64)> = slices
        .iter()
        .filter(|s| s.member.starts_with("blast"))
        .map(|s| (s.first_line, s.line_count))
        .collect();
    assert_eq!(blast_slices, vec![(1, 2), (3, 3), (6, 1)]);

    let (tables, rejected, _) = {
        let mut tables: BTreeMap<String, Vec<Vec<Value>>> = BTreeMap::new();
        let mut rejected = Vec::new();
        for (i, t) in plan.tasks.iter().enumerate() {
            let out = c.fetch(&task(t, &plan.params, i)).await.unwrap();
            assert_eq!(out.cursor_max.as_deref(), Some("2016-04-02"));
            for tr in out.tables {
                tables
                    .entry(tr.table)
                    .or_default()
                    .extend(crate::cell::values(tr.rows));
            }
            rejected.extend(out.rejected);
        }
        (tables, rejected, ())
    };
    let ids: Vec<i64> = tables["sailthru.blast"]
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 5]);
    assert_eq!(tables["sailthru.profile"].len(), 1);
    assert_eq!(tables["sailthru.profile_vars"].len(), 1);

    let by_source: BTreeMap<&str, &RejectedRecord> =
        rejected.iter().map(|r| (r.source.as_str(), r)).collect();
    assert_eq!(by_source.len(), 4, "{rejected:?}");
    let line3 = by_source["blast.20160402.json line 3"];
    assert!(line3.error.contains("not valid JSON"), "{}", line3.error);
    assert!(line3.raw.as_str().unwrap().contains("\"c\""));
    assert_eq!(line3.table.as_deref(), Some("sailthru.blast"));
    let line5 = by_source["blast.20160402.json line 5"];
    assert!(
        line5.error.contains("'day'") && line5.error.contains("2016-13-31"),
        "{}",
        line5.error
    );
    assert_eq!(line5.raw["id"], json!(4));
    // Rejected profiles keep the e-mail policy (hash by default): no address in raw.
    let p1 = by_source["profile.20160402.json line 1"];
    assert!(p1.error.contains("total_opens"), "{}", p1.error);
    assert!(!p1.raw.to_string().contains('@'), "{}", p1.raw);
    assert_eq!(p1.raw["email"].as_str().unwrap().len(), 64);
    let p2 = by_source["profile.20160402.json line 2"];
    assert!(!p2.raw.as_str().unwrap().contains('@'), "{}", p2.raw);
}

#[tokio::test]
async fn duplicate_records_in_one_slice_collapse_to_the_last() {
    let profile = b"{ \"id\" : \"p1\", \"vars\" : { \"a\" : 1, \"b\" : 2 } }\n\
{ \"id\" : \"p1\", \"vars\" : { \"a\" : 3 } }\n\
{ \"profile_id\": \"x\" }\n";
    let mb = b"{ \"profile_id\" : \"p\", \"blast_id\" : 1, \"opens\" : [{ \"ts\" : { \"$date\" : 1 } }, { \"ts\" : { \"$date\" : 1 } }] }\n";
    let bytes = build_zip(&[
        (
            "profile.20160401.json",
            profile,
            zip::CompressionMethod::Deflated,
        ),
        (
            "message_blast.20160401.json",
            mb,
            zip::CompressionMethod::Deflated,
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.zip");
    std::fs::write(&path, &bytes).unwrap();
    let c = connector(100);
    let plan = c
        .plan(&job(json!({"export": path.to_str().unwrap()})))
        .await
        .unwrap();
    let (tables, rejected, _) = fetch_all_dates(&c, &plan).await;
    assert_eq!(tables["sailthru.profile"].len(), 1);
    assert_eq!(
        tables["sailthru.profile_vars"],
        vec![vec![json!("p1"), json!("a"), json!(3), json!("2016-04-01")]]
    );
    assert_eq!(tables["sailthru.message_blast_action"].len(), 1);
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].error.contains("'id'") && rejected[0].error.contains("missing primary key")
    );
}

async fn fetch_all_dates(
    c: &SailthruConnector,
    plan: &Plan,
) -> (BTreeMap<String, Vec<Vec<Value>>>, Vec<RejectedRecord>, ()) {
    let mut tables: BTreeMap<String, Vec<Vec<Value>>> = BTreeMap::new();
    let mut rejected = Vec::new();
    for (i, t) in plan.tasks.iter().enumerate() {
        let out = c.fetch(&task(t, &plan.params, i)).await.unwrap();
        for tr in out.tables {
            tables
                .entry(tr.table)
                .or_default()
                .extend(crate::cell::values(tr.rows));
        }
        rejected.extend(out.rejected);
    }
    (tables, rejected, ())
}

#[tokio::test]
async fn truncated_archive_plans_complete_members_and_reports_the_cut_one() {
    let bytes = std::fs::read(sample()).unwrap();
    // The profile member's data starts at 3482 + 30 + 21 + 16 and is 18358 bytes long;
    // cut it roughly in the middle.
    let cut = 3482 + 30 + 21 + 16 + 9000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.zip");
    std::fs::write(&path, &bytes[..cut]).unwrap();

    let c = connector(7);
    let plan = c
        .plan(&job(json!({"export": path.to_str().unwrap()})))
        .await
        .unwrap();
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("central directory")),
        "{:?}",
        plan.warnings
    );
    assert_eq!(plan.rejected.len(), 1, "{:?}", plan.rejected);
    let r = &plan.rejected[0];
    assert_eq!(r.source, "profile.20160401.json");
    assert!(
        r.error
            .starts_with("member profile.20160401.json is truncated after line ")
            && r.error.ends_with(&format!("(archive ends at byte {cut})")),
        "{}",
        r.error
    );
    let truncated_lines: u64 = r.error
        ["member profile.20160401.json is truncated after line ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        truncated_lines > 0 && truncated_lines < 20,
        "{truncated_lines}"
    );

    // The complete members have the same slices as with the intact archive, exact sizes included.
    let intact = c
        .plan(&job(json!({"export": sample().to_str().unwrap()})))
        .await
        .unwrap();
    for (a, b) in intact.tasks.iter().zip(&plan.tasks).take(9) {
        let (a, b) = (slice_of(a), slice_of(b));
        assert_eq!(
            (
                &a.member,
                a.data_offset,
                a.compressed_size,
                a.first_line,
                a.line_count
            ),
            (
                &b.member,
                b.data_offset,
                b.compressed_size,
                b.first_line,
                b.line_count
            )
        );
    }
    let profile: Vec<&FileSlice> = plan
        .tasks
        .iter()
        .map(slice_of)
        .filter(|s| s.member.starts_with("profile"))
        .collect();
    assert!(profile.iter().all(|s| s.compressed_size.is_none()));
    assert_eq!(
        profile.iter().map(|s| s.line_count).sum::<u64>(),
        truncated_lines
    );

    let (tables, rejected, _) = fetch_all(&c, &plan).await;
    assert!(rejected.is_empty(), "{rejected:?}");
    let got = counts(&tables);
    for t in [
        "blast",
        "message_blast",
        "message_blast_action",
        "message_transactional",
        "message_transactional_action",
    ] {
        assert_eq!(got[t], expected_sample_counts()[t], "{t}");
    }
    assert_eq!(got["profile"] as u64, truncated_lines);

    // Cut inside the first member: its complete lines are still planned.
    let early = dir.path().join("early.zip");
    std::fs::write(&early, &bytes[..400]).unwrap();
    let plan = c
        .plan(&job(json!({"export": early.to_str().unwrap()})))
        .await
        .unwrap();
    assert_eq!(plan.rejected.len(), 1);
    assert!(
        plan.rejected[0]
            .error
            .contains("blast.20160401.json is truncated"),
        "{:?}",
        plan.rejected
    );

    // Cut inside the first header: nothing readable.
    let tiny = dir.path().join("tiny.zip");
    std::fs::write(&tiny, &bytes[..20]).unwrap();
    let e = c
        .plan(&job(json!({"export": tiny.to_str().unwrap()})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ConnectorError::Permanent(_))
            && e.to_string().contains("not a readable zip archive"),
        "{e}"
    );
}

#[tokio::test]
async fn fetch_reads_only_its_slice() {
    // A slice whose location does not exist fails permanently, naming it.
    let c = connector(7);
    let planned = PlannedTask {
        stream: "blast".into(),
        kind: TaskKind::Page(PageRef {
            file: Some(FileSlice {
                location: "/definitely/not/here.zip".into(),
                member: "blast.20160401.json".into(),
                data_offset: 0,
                compressed_size: Some(10),
                compression: Compression::Deflate,
                first_line: 1,
                line_count: 5,
                version: None,
            }),
            ..PageRef::default()
        }),
        once: None,
    };
    let e = c.fetch(&task(&planned, &Value::Null, 0)).await.unwrap_err();
    assert!(
        matches!(e, ConnectorError::Permanent(_)) && e.to_string().contains("here.zip"),
        "{e}"
    );

    // A slice asking for more lines than the member has: permanent, naming the member.
    let plan = c
        .plan(&job(json!({"export": sample().to_str().unwrap()})))
        .await
        .unwrap();
    let mut last = plan
        .tasks
        .iter()
        .find(|t| t.stream == "blast" && slice_of(t).first_line == 15)
        .unwrap()
        .clone();
    if let TaskKind::Page(PageRef { file: Some(f), .. }) = &mut last.kind {
        f.line_count = 10;
    }
    let e = c.fetch(&task(&last, &plan.params, 0)).await.unwrap_err();
    assert!(
        matches!(e, ConnectorError::Permanent(_)) && e.to_string().contains("blast.20160401.json"),
        "{e}"
    );
}

#[tokio::test]
async fn an_archive_replaced_after_planning_fails_its_tasks_instead_of_reading_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.zip");
    std::fs::copy(sample(), &path).unwrap();
    let c = connector(7);
    let plan = c
        .plan(&job(json!({"export": path.to_str().unwrap()})))
        .await
        .unwrap();
    let first = &plan.tasks[0];
    assert!(
        slice_of(first).version.is_some(),
        "the plan pins the archive's ETag"
    );
    // Unchanged: reads work.
    c.fetch(&task(first, &plan.params, 0)).await.unwrap();

    // Replaced by a different archive (same name): every read is refused, naming the change.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let other = build_zip(&[(
        "blast.20160401.json",
        b"{ \"id\" : 1, \"name\" : \"x\", \"day\" : \"2016-04-01\" }\n",
        zip::CompressionMethod::Deflated,
    )]);
    std::fs::write(&path, other).unwrap();
    let e = c.fetch(&task(first, &plan.params, 0)).await.unwrap_err();
    assert!(
        matches!(e, ConnectorError::Permanent(_))
            && e.to_string().contains("changed since the job was planned"),
        "{e}"
    );
}
