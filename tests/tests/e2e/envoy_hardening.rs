//! Envoy's own defences on the public listener (envoy/envoy.yaml), through a real stack: a
//! client that sends half a request header is cut off after `request_headers_timeout`;
//! bodies and headers over the limits and unknown paths are answered by Envoy, before the
//! control-plane sees them; each such answer is an RFC 9457 problem with a stable code; and
//! the filter's own 401/429/503 problems, sent through the same local-reply path, reach the
//! client unchanged.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_e2e::stack::shipped_envoy_config;
use tollgate_e2e::{Stack, StackOptions, count, free_port, header};

/// envoy/envoy.yaml's `request_headers_timeout`.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// How late past a timeout Envoy may act (its timers, a loaded machine).
const MARGIN: Duration = Duration::from_secs(3);

/// The `detail` envoy/envoy.yaml's local-reply mapper for `code` writes: an answer with it
/// came from Envoy's mapper, not from the control-plane or the filter (which may use the same
/// code).
fn envoy_detail(code: &str) -> String {
    let config = shipped_envoy_config();
    let mappers = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["local_reply_config"]["mappers"]
        .as_array()
        .expect("local_reply_config.mappers")
        .clone();
    mappers
        .iter()
        .map(|m| &m["body_format_override"]["json_format"])
        .find(|problem| problem["code"] == code)
        .and_then(|problem| problem["detail"].as_str())
        .unwrap_or_else(|| panic!("no local-reply mapper for {code}"))
        .to_owned()
}

/// The answer's problem document; fails the test unless it is `status` and
/// `application/problem+json` with the RFC 9457 members.
async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("a JSON problem");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["type"], "about:blank", "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// Sends `request` as raw bytes on a new connection and reads Envoy's answer (at most 5 s);
/// returns its status, its problem body and how long it took to arrive whole.
async fn raw(stack: &Stack, request: &[u8]) -> (u16, Value, Duration) {
    let mut connection = TcpStream::connect(("127.0.0.1", stack.envoy_port))
        .await
        .expect("connect to Envoy");
    let started = Instant::now();
    connection.write_all(request).await.expect("send");
    let (status, body) = read_problem(&mut connection, Duration::from_secs(5)).await;
    (status, body, started.elapsed())
}

/// Reads one whole HTTP/1.1 answer from `connection` (at most `limit`): its status and its
/// problem body.
pub(crate) async fn read_problem(connection: &mut TcpStream, limit: Duration) -> (u16, Value) {
    let mut answer = Vec::new();
    let whole = tokio::time::timeout(limit, async {
        let mut buffer = [0; 4096];
        loop {
            let read = connection.read(&mut buffer).await.unwrap_or(0);
            answer.extend_from_slice(&buffer[..read]);
            if read == 0 || complete(&answer) {
                break;
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        whole.is_ok() && complete(answer.as_bytes()),
        "no whole answer within {limit:?}: {answer:?}"
    );
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    let body = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body:?}"));
    (status, body)
}

/// Whether `answer` holds a whole HTTP/1.1 response with a `content-length`.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .is_some_and(|length| body.len() >= length)
}

#[tokio::test]
async fn a_half_sent_header_is_cut_off_after_the_headers_timeout() {
    let stack = Stack::start(StackOptions::default()).await;
    let callouts = stack.decision_requests().await;
    let mut stalled = TcpStream::connect(("127.0.0.1", stack.envoy_port))
        .await
        .expect("connect to Envoy");
    let started = Instant::now();
    stalled
        .write_all(b"GET /api/v1/ingest HTTP/1.1\r\nhost: tollgate\r\nx-api-k")
        .await
        .expect("send half a header");

    // Meanwhile everyone else is served.
    let served = stack.call_without_key("/api/v1/ingest").await;
    assert_eq!(served.status(), 401);

    // Envoy answers 408 at the timeout, then closes the connection.
    let (status, body) = read_problem(&mut stalled, HEADERS_TIMEOUT + MARGIN).await;
    let elapsed = started.elapsed();
    assert_eq!(
        (status, body["code"].as_str()),
        (408, Some("request_timeout"))
    );
    assert_eq!(body["detail"], envoy_detail("request_timeout"));
    assert!(
        elapsed >= HEADERS_TIMEOUT - Duration::from_millis(500),
        "answered after {elapsed:?}, before the headers timeout"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(MARGIN, stalled.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "still connected after the 408");
    assert_eq!(
        stack.decision_requests().await,
        callouts,
        "a request without whole headers costs no callout"
    );
    assert!(
        !stack
            .envoy
            .log()
            .contains("no configured limit to the number of allowed active downstream"),
        "Envoy warns that its connections are unbounded"
    );
}

#[tokio::test]
async fn envoy_answers_its_own_errors_as_problems_and_passes_the_filters_through() {
    // Leases off: the burst below needs exactly 60 admissions, which a lease ending unspent
    // mid-burst on a loaded machine can make 59 (leases.rs covers leases).
    let options = StackOptions::default().filter("lease", serde_json::json!({"enabled": false}));
    let stack = Stack::start(options).await;
    let client = stack.client();

    // An unknown path never reaches the control-plane.
    let unknown = problem(stack.call_without_key("/wp-login.php").await, 404).await;
    assert_eq!(unknown["code"], "not_found");
    assert_eq!(unknown["detail"], envoy_detail("not_found"));

    // A body announced over the route's limit is refused from the headers alone, before a
    // byte of it is read: the stalled `POST /healthz` of 1 MiB, and a billing body
    // 1 byte over 1 MiB.
    let body_too_large = envoy_detail("body_too_large");
    for (path, length) in [
        ("/healthz", 1024 * 1024),
        ("/api/v1/billing/webhook", 1024 * 1024 + 1),
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: tollgate\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n"
        );
        let (status, body, elapsed) = raw(&stack, request.as_bytes()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (413, Some("body_too_large")),
            "{path}"
        );
        assert_eq!(body["detail"], body_too_large, "{path}: Envoy's answer");
        assert!(
            elapsed < Duration::from_secs(2),
            "{path}: answered after {elapsed:?}"
        );
    }
    // A chunked body (no length announced) is cut off once it passes the limit: 1 KiB on
    // routes that take no body.
    let chunk = "x".repeat(2048);
    let request = format!(
        "POST /api/v1/usage HTTP/1.1\r\nhost: tollgate\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{chunk}\r\n",
        chunk.len()
    );
    let (status, body, _) = raw(&stack, request.as_bytes()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("body_too_large"))
    );

    // Headers over 16 KiB.
    let large = client
        .get(stack.url("/api/v1/ingest"))
        .header("x-padding", "p".repeat(17 * 1024))
        .send()
        .await
        .expect("request");
    let large = problem(large, 431).await;
    assert_eq!(large["code"], "headers_too_large");
    // An underscore in a header name.
    let underscore = client
        .get(stack.url("/api/v1/ingest"))
        .header("x_api_key", "tg_whatever")
        .send()
        .await
        .expect("request");
    assert_eq!(problem(underscore, 400).await["code"], "bad_request");

    // The filter's own answers keep their bodies and headers: no key ...
    let missing = stack.call_without_key("/api/v1/ingest").await;
    assert_eq!(
        header(&missing, "www-authenticate"),
        "Bearer realm=\"tollgate\""
    );
    assert_eq!(header(&missing, "cache-control"), "no-store");
    assert_eq!(problem(missing, 401).await["code"], "missing_api_key");
    // ... and over quota, with the members a 429 problem adds.
    let tenant = stack.create_tenant("standard").await;
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 60, 8).await;
    assert_eq!(count(&statuses, StatusCode::OK), 60);
    let refused = stack.call("/api/v1/ingest", &tenant.key).await;
    assert!(header(&refused, "retry-after").parse::<u64>().is_ok());
    let refused = problem(refused, 429).await;
    assert_eq!(refused["code"], "rate_limited");
    assert_eq!(refused["limit"], 60, "{refused}");
    assert!(refused["retry_after"].is_u64(), "{refused}");

    // The backend is down: Envoy's 503 (a response flag), not the filter's.
    let other = stack.create_tenant("standard").await;
    let mut stack = stack;
    stack.upstream.kill();
    let down = problem(stack.call("/api/v1/ingest", &other.key).await, 503).await;
    assert_eq!(down["code"], "upstream_unavailable");
}

#[tokio::test]
async fn the_filters_503_without_a_decision_is_not_rewritten() {
    // Callouts go to a port nobody listens on: every decision fails, the filter answers 503.
    let stack = Stack::start(StackOptions::default().callout_port(free_port())).await;
    let response = stack.call("/api/v1/ingest", "tg_any_well_formed_key").await;
    assert_eq!(header(&response, "retry-after"), "1");
    assert_eq!(header(&response, "cache-control"), "no-store");
    let body = problem(response, 503).await;
    assert_eq!(body["code"], "rate_limiter_unavailable");
    assert_ne!(
        body["detail"],
        envoy_detail("rate_limiter_unavailable"),
        "Envoy's mapper for a failed VM rewrote the filter's answer"
    );
}
