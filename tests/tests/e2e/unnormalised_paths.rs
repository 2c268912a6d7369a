//! The filter on paths nobody normalised: a real Envoy with the shipped filter configuration,
//! but with `normalize_path` and `merge_slashes` off (an Istio mesh with path normalisation
//! `NONE`), and one catch-all route answering 200 itself with the path it routed.
//!
//! Setup: requests without an API key, sent as raw HTTP/1.1 (an HTTP client library would
//! normalise `/./` itself). Expected: every spelling of a limited path (`//api/v1/ingest`,
//! `/api/v1/./ingest`, `%2F`, `%69`, upper case, `..;` ...) is limited, so the filter refuses
//! it with 401 (no key) before any callout; paths outside the limited prefixes get the
//! route's 200, which shows Envoy passed them on as sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;
use tollgate_e2e::stack::{filter_config, set_filter_config, shipped_envoy_config, spawn_envoy};
use tollgate_e2e::{Process, free_port};

/// A running Envoy without path normalisation; killed when dropped (by [`Process`]).
struct RawEnvoy {
    port: u16,
    _envoy: Process,
    _dir: TempDir,
}

fn start() -> RawEnvoy {
    let dir = TempDir::new().expect("tempdir");
    let (port, admin_port) = (free_port(), free_port());
    let mut config = shipped_envoy_config();
    let filter = filter_config(&mut config);
    set_filter_config(&mut config, &filter);
    config["admin"]["address"]["socket_address"]["port_value"] = json!(admin_port);
    let listener = &mut config["static_resources"]["listeners"][0];
    assert_eq!(listener["name"], "public");
    listener["address"]["socket_address"]["port_value"] = json!(port);
    let hcm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
    hcm["normalize_path"] = json!(false);
    hcm["merge_slashes"] = json!(false);
    hcm["path_with_escaped_slashes_action"] = json!("KEEP_UNCHANGED");
    hcm["route_config"]["virtual_hosts"][0]["routes"] = json!([{
        "match": {"prefix": "/"},
        "direct_response": {"status": 200},
        "response_headers_to_add": [
            {"header": {"key": "x-routed-path", "value": "%REQ(:PATH)%"}}
        ]
    }]);
    let envoy = spawn_envoy("envoy", &config, dir.path(), "warn");
    let started = Instant::now();
    while raw_get(admin_port, "/ready").map(|(status, _)| status) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "Envoy not ready:\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    RawEnvoy {
        port,
        _envoy: envoy,
        _dir: dir,
    }
}

/// `GET path` exactly as written; the status and the `x-routed-path` header, if any.
fn raw_get(port: u16, path: &str) -> Option<(u16, Option<String>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // The status line and headers are all this needs: reading on to EOF would wait out
    // Envoy's delayed close (1 s) on every request.
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..read]);
    }
    let answer = String::from_utf8_lossy(&bytes);
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let routed = answer
        .lines()
        .find_map(|line| line.strip_prefix("x-routed-path: "))
        .map(str::to_owned);
    Some((status, routed))
}

#[test]
fn unnormalised_spellings_of_a_limited_path_cannot_dodge_the_filter() {
    let envoy = start();
    let get = |path: &str| raw_get(envoy.port, path).unwrap_or_else(|| panic!("GET {path}"));

    // Envoy routes these as sent: nothing normalised them before the filter.
    for path in ["//healthz", "/x/./y", "/x//y/", "/API/other", "/a%2Fb"] {
        assert_eq!(get(path), (200, Some(path.to_owned())), "{path}");
    }

    for path in [
        "/api/v1/ingest",
        "//api/v1/ingest",
        "/api//v1/ingest",
        "/api/v1//ingest",
        "/api/v1/./ingest",
        "/./api/v1/ingest",
        "/api/v2/../v1/ingest",
        "/api/v1%2Fingest",
        "/api%2fv1%2fingest",
        "/api/v1/%69ngest",
        "/api/v1/%2e/ingest",
        "/api/v1%5Cingest",
        "/API/V1/INGEST",
        "/api/v1/ingest;x=1",
        "/api/v1/x/..;/ingest",
        "/api/v1/ingest/..%2F..%2Fother",
        "//api/v1/predict//batch",
        // A server that resolves no dot segments serves these from "ingest"; limiting them
        // errs the safe way.
        "/api/v1/ingest/../other",
        "/api/v1/ingest/..;/other",
    ] {
        let (status, _) = get(path);
        assert_eq!(status, 401, "{path} must be limited (no key: 401)");
    }

    for path in [
        "/api/v1/ingestion",
        "//api/v1/ingestion",
        "/api/v1/ingestion/../other",
    ] {
        assert_eq!(
            get(path),
            (200, Some(path.to_owned())),
            "{path} is not limited"
        );
    }
}
