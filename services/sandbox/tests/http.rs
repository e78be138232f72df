//! The sandbox over real HTTP on port 0.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;

use serde_json::Value;
use sluice_sandbox::sailthru::{self, ExportSpec};
use sluice_sandbox::{SandboxConfig, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
async fn request(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, &str)]) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        let mut decoded = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size_text = std::str::from_utf8(&rest[..eol]).unwrap();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap(), 16).unwrap();
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = decoded;
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn local_archive(spec: &ExportSpec) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    sailthru::write_export(spec, &mut out).unwrap();
    out.into_inner()
}

fn spec(seed: u64, messages: u64) -> ExportSpec {
    ExportSpec {
        seed,
        messages,
        date: chrono::NaiveDate::from_ymd_opt(2016, 4, 1).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_archives_manifests_and_errors() {
    let cache = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run(
        SandboxConfig {
            cache_dir: cache.path().join("cache"),
        },
        listener,
        shutdown.clone(),
    ));

    let live = request(addr, "GET", "/livez", &[]).await;
    assert_eq!(live.status, 200);

    // Concurrent first requests generate the archive once, intact.
    let spec = spec(7, 3_000);
    let expected = local_archive(&spec);
    let url = "/sailthru/exports/7/3000/sailthru_export.20160401.zip";
    let gets: Vec<_> = (0..4)
        .map(|_| tokio::spawn(request(addr, "GET", url, &[])))
        .collect();
    for get in gets {
        let reply = get.await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, expected);
    }

    let head = request(addr, "HEAD", url, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.headers["content-length"],
        expected.len().to_string(),
        "HEAD carries the archive's length"
    );
    assert!(head.body.is_empty());

    let range = request(addr, "GET", url, &[("Range", "bytes=0-9")]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, expected[..10]);
    assert_eq!(&range.body[..4], b"PK\x03\x04");
    assert_eq!(
        range.headers["content-range"],
        format!("bytes 0-9/{}", expected.len())
    );

    let manifest = request(
        addr,
        "GET",
        "/sailthru/exports/7/3000/manifest.20160401.json",
        &[],
    )
    .await;
    assert_eq!(manifest.status, 200);
    let manifest: Value = serde_json::from_slice(&manifest.body).unwrap();
    assert_eq!(
        manifest["expected"],
        serde_json::to_value(sailthru::expected_counts(&spec)).unwrap()
    );
    assert_eq!(manifest["spec"]["seed"], 7);
    assert_eq!(manifest["spec"]["messages"], 3000);
    assert_eq!(manifest["spec"]["date"], "2016-04-01");

    // A manifest asked for before its archive is computed on its own.
    let manifest = request(
        addr,
        "GET",
        "/sailthru/exports/8/100/manifest.20160401.json",
        &[],
    )
    .await;
    assert_eq!(manifest.status, 200);
    let manifest: Value = serde_json::from_slice(&manifest.body).unwrap();
    assert_eq!(
        manifest["expected"],
        serde_json::to_value(sailthru::expected_counts(&spec_8_100())).unwrap()
    );

    for (path, parameter) in [
        (
            "/sailthru/exports/7/abc/sailthru_export.20160401.zip",
            "messages",
        ),
        (
            "/sailthru/exports/7/50000001/sailthru_export.20160401.zip",
            "messages",
        ),
        ("/sailthru/exports/7/-1/manifest.20160401.json", "messages"),
        (
            "/sailthru/exports/x/10/sailthru_export.20160401.zip",
            "seed",
        ),
        ("/sailthru/exports/7/10/sailthru_export.2016041.zip", "date"),
        (
            "/sailthru/exports/7/10/sailthru_export.20161301.zip",
            "date",
        ),
    ] {
        let reply = request(addr, "GET", path, &[]).await;
        assert_eq!(reply.status, 400, "{path}");
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["parameter"], parameter, "{path}");
        assert!(
            body["error"].as_str().unwrap().contains(parameter),
            "{path}"
        );
    }
    let unknown = request(addr, "GET", "/sailthru/exports/7/10/other.zip", &[]).await;
    assert_eq!(unknown.status, 404);

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

fn spec_8_100() -> ExportSpec {
    spec(8, 100)
}
