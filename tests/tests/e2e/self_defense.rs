//! The guard guards itself: attacks on the control-plane, each beside a legitimate tenant
//! whose requests must keep being decided (200, or 429 past its quota; never a 503), at small
//! scale. Setup: the default stack (Envoy with the filter, the control-plane in memory).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_e2e::{Stack, StackOptions, count, header};

/// The control-plane's resident memory, from /proc.
fn rss_bytes(stack: &Stack) -> u64 {
    let pid = stack.control_planes[0]
        .process
        .pid()
        .expect("control-plane pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// A connection that sends the head of a `POST path` announcing a 1 MiB body and `sent`
/// bytes of it, then stalls.
async fn stalled_upload(port: u16, path: &str, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: 1048576\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The peer may stop reading (and answer) before all of it is sent: that is the point.
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&vec![b' '; sent])).await;
    stream
}

/// Asserts that `served` (what got through, named `what`) in `elapsed` seconds is within a
/// token bucket of `burst` at once and `per_second` after (one more for a token refilled
/// while the last request was in flight).
fn within_budget(served: usize, what: &str, elapsed: f64, burst: usize, per_second: f64) {
    let allowed = burst + (per_second * elapsed).ceil() as usize + 1;
    assert!(
        served <= allowed,
        "{served} {what} in {elapsed:.1} s, budget {allowed}"
    );
}

/// The legitimate tenant's traffic: `n` requests through Envoy, 8 at a time.
async fn legitimate(stack: &Stack, key: &str, n: usize) -> Vec<StatusCode> {
    let statuses = stack.burst("/api/v1/ingest", key, n, 8).await;
    let failures: Vec<_> = statuses
        .iter()
        .filter(|s| **s != StatusCode::OK && **s != StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        failures.is_empty(),
        "the legitimate tenant got {failures:?}"
    );
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_cost_bytes_not_megabytes_and_decisions_go_on() {
    let stack = Stack::start(StackOptions::default()).await;
    let tenant = stack.create_tenant("pro").await;
    legitimate(&stack, &tenant.key, 20).await;
    let before = rss_bytes(&stack);

    let mut stalled = Vec::new();
    for n in 0..150 {
        let path = match n % 3 {
            0 => "/api/v1/billing/webhook",
            1 => "/api/v1/billing/checkout",
            _ => "/healthz",
        };
        stalled.push(stalled_upload(stack.envoy_port, path, 256 * 1024).await);
    }
    let statuses = legitimate(&stack, &tenant.key, 300).await;
    assert_eq!(count(&statuses, StatusCode::OK), 300);
    let during = rss_bytes(&stack);
    let grew = during.saturating_sub(before);
    eprintln!(
        "control-plane RSS {} MiB -> {} MiB with 150 stalled uploads",
        before >> 20,
        during >> 20
    );
    assert!(
        grew < 32 << 20,
        "150 stalled uploads grew the control-plane by {} MiB",
        grew >> 20
    );
    drop(stalled);
    let statuses = legitimate(&stack, &tenant.key, 100).await;
    assert_eq!(count(&statuses, StatusCode::OK), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_usage_is_refused_past_its_budget_and_others_are_decided() {
    let stack =
        Stack::start(StackOptions::default().control_plane_env("TOLLGATE_USAGE_BUDGET", "10"))
            .await;
    let flooder = stack.create_tenant("pro").await;
    let tenant = stack.create_tenant("pro").await;

    let started = Instant::now();
    let (flood, decided) = tokio::join!(
        stack.burst("/api/v1/usage", &flooder.key, 400, 16),
        legitimate(&stack, &tenant.key, 300),
    );
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(count(&decided, StatusCode::OK), 300, "never a 503");
    let served = count(&flood, StatusCode::OK);
    let refused = count(&flood, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(served + refused, 400, "only 200 or 429: {flood:?}");
    // A burst of 20, then 10 a second.
    within_budget(served, "usage answers", elapsed, 20, 10.0);

    let over = stack.call("/api/v1/usage", &flooder.key).await;
    if over.status() == StatusCode::TOO_MANY_REQUESTS {
        assert_eq!(header(&over, "ratelimit-policy"), "\"usage\";q=10;w=1");
        assert!(header(&over, "retry-after").parse::<u64>().unwrap() >= 1);
        let problem: Value = over.json().await.unwrap();
        assert_eq!(problem["code"], "rate_limited");
    }
    // The other tenant's own usage budget is untouched.
    assert_eq!(
        stack.usage(&tenant.key).await["tenant_id"],
        tenant.id.as_str()
    );
}

#[tokio::test]
async fn random_keys_cannot_each_buy_a_usage_budget() {
    let stack =
        Stack::start(StackOptions::default().control_plane_env("TOLLGATE_PUBLIC_BUDGET", "20"))
            .await;
    let usage = stack.control_planes[0].url("/api/v1/usage");
    let started = Instant::now();
    let mut statuses = Vec::new();
    for n in 0..200 {
        let response = stack
            .client()
            .get(&usage)
            .header("x-api-key", format!("tg_random{n:040x}"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let unknown = count(&statuses, StatusCode::UNAUTHORIZED);
    let refused = count(&statuses, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(unknown + refused, 200, "{statuses:?}");
    // Each unknown key spends from the address's budget: a burst of 40, then 20 a second.
    within_budget(unknown, "unknown keys looked up", elapsed, 40, 20.0);
}

#[tokio::test]
async fn a_forged_webhook_spends_ten_deliveries_of_its_addresss_budget() {
    let stack = Stack::start(
        StackOptions::default().control_plane_env("STRIPE_WEBHOOK_SECRET", "whsec_e2e_secret"),
    )
    .await;
    let webhook = stack.control_planes[0].url("/api/v1/billing/webhook");
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let response = stack
            .client()
            .post(&webhook)
            .header("stripe-signature", "t=1,v1=00")
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let forged = count(&statuses, StatusCode::BAD_REQUEST);
    let refused = count(&statuses, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(forged + refused, 60, "{statuses:?}");
    // The budget: 200 deliveries at once, then 100 a second; each forged one spends ten.
    within_budget(forged, "forged deliveries read", elapsed, 20, 10.0);
    assert!(refused > 0, "{statuses:?}");
}

#[tokio::test]
async fn a_forged_edge_denied_count_cannot_break_a_tenants_decisions() {
    // Leases off: the burst below counts exactly 60 admissions, and a lease that runs out
    // unspent mid-burst on a loaded machine leaves a unit free behind a cached denial
    // (leases.rs covers leases).
    let options = StackOptions::default().filter("lease", json!({"enabled": false}));
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    let control_plane = &stack.control_planes[0];
    // Each report counts as at most u32::MAX denials, and counters saturate.
    for reports in 1..=2u64 {
        let usage = stack
            .client()
            .get(control_plane.url("/api/v1/usage"))
            .header("x-api-key", &tenant.key)
            .header("x-tollgate-edge-denied", u64::MAX.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(usage.status(), StatusCode::OK);
        let usage: Value = usage.json().await.unwrap();
        assert_eq!(usage["denied"], reports * u64::from(u32::MAX));
    }
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 70, 4).await;
    assert_eq!(count(&statuses, StatusCode::OK), 60);
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        10,
        "never a 503"
    );
}

/// Reads until the server closes the connection; how long that took, or `None` if it stayed
/// open for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_on_both_listeners() {
    let stack = Stack::start(
        StackOptions::default()
            .control_plane_env("TOLLGATE_HEADER_TIMEOUT_MS", "1000")
            .control_plane_env("TOLLGATE_IDLE_TIMEOUT_MS", "2000"),
    )
    .await;
    let control_plane = &stack.control_planes[0];
    for port in [control_plane.public_port, control_plane.internal_port] {
        let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut half = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nhost: loc")
            .await
            .unwrap();
        let (silent, half) = tokio::join!(
            closed_within(&mut silent, Duration::from_secs(10)),
            closed_within(&mut half, Duration::from_secs(10)),
        );
        let silent = silent.unwrap_or_else(|| panic!("a silent connection to {port} stayed open"));
        let half = half.unwrap_or_else(|| panic!("half a header to {port} stayed open"));
        eprintln!("port {port}: silent closed after {silent:?}, half a header after {half:?}");
    }
    let tenant = stack.create_tenant("pro").await;
    legitimate(&stack, &tenant.key, 10).await;
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problems_and_the_dashboard_cannot_be_framed() {
    let stack = Stack::start(StackOptions::default()).await;
    let control_plane = &stack.control_planes[0];
    let client = stack.client();
    for (request, status, code) in [
        (
            client.get(control_plane.url("/nowhere")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            client.delete(control_plane.url("/api/v1/usage")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            client.get(control_plane.internal_url("/nowhere")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(
            header(&response, "content-type"),
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code);
    }
    let dashboard = client.get(stack.url("/dashboard")).send().await.unwrap();
    assert_eq!(dashboard.status(), StatusCode::OK);
    let policy = header(&dashboard, "content-security-policy");
    assert!(
        policy.contains("frame-ancestors 'none'") && policy.contains("script-src 'self';"),
        "{policy}"
    );
    assert_eq!(header(&dashboard, "x-frame-options"), "DENY");
}
