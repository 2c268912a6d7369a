//! The request path: filter in real Envoy (2 workers) → control-plane → exact sliding window
//! → 429 at the edge.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tollgate_e2e::stack::{
    filter_config, set_filter_config, shipped_envoy_config, validate_envoy_config,
};
use tollgate_e2e::{Stack, StackOptions, count, header, within};

#[tokio::test]
async fn a_standard_tenant_gets_60_requests_a_minute_and_the_61st_is_refused_at_the_edge() {
    let stack = Stack::start(StackOptions::default()).await;
    let tenant = stack.create_tenant("standard").await;

    let first = Instant::now();
    let response = stack.call("/api/v1/ingest", &tenant.key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ratelimit-limit"), "60");
    assert_eq!(header(&response, "x-ratelimit-remaining"), "59");
    assert_eq!(
        header(&response, "ratelimit-policy"),
        "\"standard\";q=60;w=60"
    );
    assert_eq!(header(&response, "ratelimit"), "\"standard\";r=59;t=60");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["tenant_id"],
        tenant.id.as_str(),
        "the upstream learns the tenant"
    );
    assert_eq!(body["tier"], "standard");

    // One after another, as the README's quickstart sends them, with leases on (the shipped
    // default): exactly the limit. Concurrently, a lease that ends unspent mid-burst on a
    // loaded machine can get a request denied while its units are still counted
    // (under-admission by design); the concurrent exact count runs with leases off
    // (edge_shedding.rs), and leases.rs checks that concurrent leased bursts never exceed it.
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 59, 1).await;
    assert_eq!(count(&statuses, StatusCode::OK), 59, "{statuses:?}");

    let callouts_before = stack.decision_requests().await;
    let refused = stack.call("/api/v1/ingest", &tenant.key).await;
    let true_wait = Duration::from_secs(60).saturating_sub(first.elapsed());
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!(
        retry_after >= true_wait.as_secs() && retry_after <= 60,
        "Retry-After {retry_after} s must not be earlier than the {true_wait:?} until a slot frees"
    );
    assert_eq!(header(&refused, "x-ratelimit-limit"), "60");
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    assert_eq!(
        header(&refused, "x-ratelimit-reset"),
        retry_after.to_string()
    );
    assert_eq!(
        header(&refused, "ratelimit-policy"),
        "\"standard\";q=60;w=60"
    );
    assert_eq!(
        header(&refused, "ratelimit"),
        format!("\"standard\";r=0;t={retry_after}")
    );
    assert_eq!(header(&refused, "content-type"), "application/problem+json");
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["code"], "rate_limited");
    assert_eq!(problem["retry_after"], retry_after);
    assert_eq!(stack.decision_requests().await, callouts_before + 1);
}

#[tokio::test]
async fn a_pro_tenant_gets_1000_requests_a_minute() {
    // Leases off: the burst must get exactly 1,000, and a worker's batch given up unspent
    // when its lease ends on a loaded machine stays counted until it leaves the window
    // (under-admission by design, at most 2% at the limit rate: leases.rs covers it).
    let stack =
        Stack::start(StackOptions::default().filter("lease", json!({"enabled": false}))).await;
    let tenant = stack.create_tenant("pro").await;
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 1000, 16).await;
    assert_eq!(count(&statuses, StatusCode::OK), 1000);
    let refused = stack.call("/api/v1/ingest", &tenant.key).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "ratelimit-policy"), "\"pro\";q=1000;w=60");
}

#[tokio::test]
async fn the_window_slides_as_old_requests_age_out_not_at_a_fixed_boundary() {
    let tiers = r#"
        default_tier = "sliding"
        [tiers.sliding]
        limit = 5
        window_seconds = 2
    "#;
    let stack = Stack::start(StackOptions::default().tiers(tiers)).await;
    let tenant = stack.create_tenant("sliding").await;
    let ok = |statuses: Vec<StatusCode>| count(&statuses, StatusCode::OK);

    let t0 = Instant::now();
    assert_eq!(
        ok(stack.burst("/api/v1/ingest", &tenant.key, 3, 3).await),
        3
    );
    tokio::time::sleep_until((t0 + Duration::from_millis(1000)).into()).await;
    let t1 = Instant::now();
    assert_eq!(
        ok(stack.burst("/api/v1/ingest", &tenant.key, 2, 2).await),
        2
    );
    let full = stack.call("/api/v1/ingest", &tenant.key).await;
    assert_eq!(full.status(), 429, "5 of 5 used");
    // The first three leave at t0 + 2 s, about 1 s from now: rounded up that is 1 s, or 2 s
    // when their admission (at t0 plus a callout) came later after t0 than this request did
    // after t1.
    let retry_after = header(&full, "retry-after");
    assert!(
        retry_after == "1" || retry_after == "2",
        "Retry-After {retry_after}"
    );

    // Just after t0 + 2 s the first three have aged out, the two from t1 have not: exactly
    // three slots, where a fixed 2 s window would have freed all five.
    tokio::time::sleep_until((t0 + Duration::from_millis(2150)).into()).await;
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 5, 1).await;
    assert_eq!(ok(statuses.clone()), 3, "{statuses:?}");

    tokio::time::sleep_until((t1 + Duration::from_millis(2150)).into()).await;
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 5, 1).await;
    assert_eq!(
        ok(statuses.clone()),
        2,
        "the two from t1 aged out: {statuses:?}"
    );
}

#[tokio::test]
async fn three_hundred_parallel_requests_admit_exactly_the_limit() {
    // A generous timeout: this is about exactness, not latency, on a debug build.
    let options = StackOptions::default().filter(
        "control_plane",
        json!({"cluster": "tollgate_control_plane", "timeout": "5s"}),
    );
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 300, 300).await;
    assert_eq!(count(&statuses, StatusCode::OK), 60);
    assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 240);
}

#[tokio::test]
async fn a_route_with_cost_5_uses_5_units_of_quota() {
    // Leases off: a lease's requests count as used at once, so the remaining seen here would
    // drop by a whole lease at a time (leases.rs covers leases).
    let options = StackOptions::default().filter("lease", json!({"enabled": false}));
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    let response = stack.call("/api/v1/predict", &tenant.key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ratelimit-remaining"), "55");
    let response = stack.call("/api/v1/ingest", &tenant.key).await;
    assert_eq!(header(&response, "x-ratelimit-remaining"), "54");

    // 54 units left: ten more predictions (50), then the 11th does not fit in 4.
    let statuses = stack.burst("/api/v1/predict", &tenant.key, 10, 4).await;
    assert_eq!(count(&statuses, StatusCode::OK), 10);
    let refused = stack.call("/api/v1/predict", &tenant.key).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "4");
    let cheap = stack.call("/api/v1/ingest", &tenant.key).await;
    assert_eq!(cheap.status(), 200, "a cost-1 request still fits");
}

#[tokio::test]
async fn requests_without_a_usable_key_get_401_from_the_filter_without_a_callout() {
    let stack = Stack::start(StackOptions::default()).await;
    let callouts = stack.decision_requests().await;
    let long_key = "k".repeat(257);
    type Header<'a> = Option<(&'a str, &'a [u8])>;
    let cases: [(&str, Header); 6] = [
        ("missing", None),
        ("empty", Some(("x-api-key", b""))),
        ("too long", Some(("x-api-key", long_key.as_bytes()))),
        ("not visible ASCII", Some(("x-api-key", b"tg_caf\xe9"))),
        ("inner space", Some(("x-api-key", b"tg_a b"))),
        (
            "not a bearer token",
            Some(("authorization", b"Basic dXNlcjpwYXNz")),
        ),
    ];
    for (case, header_pair) in cases {
        let mut request = stack.client().get(stack.url("/api/v1/ingest"));
        if let Some((name, value)) = header_pair {
            request = request.header(
                name,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{case}");
        // RFC 6750: a request that carried no credentials gets the bare challenge.
        let (code, challenge) = if case == "missing" {
            ("missing_api_key", "Bearer realm=\"tollgate\"")
        } else {
            (
                "malformed_api_key",
                "Bearer realm=\"tollgate\", error=\"invalid_request\"",
            )
        };
        assert_eq!(header(&response, "www-authenticate"), challenge, "{case}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{case}");
    }
    assert_eq!(
        stack.decision_requests().await,
        callouts,
        "no callout for any of them"
    );
}

#[tokio::test]
async fn unknown_keys_get_401_and_suspended_tenants_403() {
    let stack = Stack::start(StackOptions::default()).await;
    let unknown = stack
        .call(
            "/api/v1/ingest",
            "tg_0000000000000000000000000000000000000000000000",
        )
        .await;
    assert_eq!(unknown.status(), 401);
    let problem: Value = unknown.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_api_key");

    let tenant = stack.create_tenant("standard").await;
    let bearer = stack
        .client()
        .get(stack.url("/api/v1/ingest"))
        .bearer_auth(&tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200, "a bearer key works too");

    stack
        .patch_tenant(&tenant.id, json!({"suspended": true}))
        .await;
    let suspended = stack.call("/api/v1/ingest", &tenant.key).await;
    assert_eq!(suspended.status(), 403);
    let problem: Value = suspended.json().await.unwrap();
    assert_eq!(problem["code"], "tenant_suspended");

    // The edge cached the 403 for at most `deny_cache.max_ttl` (1 s): admitted again within it.
    stack
        .patch_tenant(&tenant.id, json!({"suspended": false}))
        .await;
    within(
        Duration::from_millis(1500),
        "admitted again after resuming",
        || async { stack.call("/api/v1/ingest", &tenant.key).await.status() == 200 },
    )
    .await;
}

#[tokio::test]
async fn a_spoofed_identity_never_reaches_the_upstream() {
    let stack = Stack::start(StackOptions::default()).await;
    let tenant = stack.create_tenant("standard").await;
    let response = stack
        .client()
        .get(stack.url("/api/v1/ingest"))
        .header("x-api-key", &tenant.key)
        .header("x-tenant-id", "tn_someone_else")
        .header("x-tollgate-tier", "pro")
        .header("x-tollgate-unchecked", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(
        echo["tenant_id"],
        tenant.id.as_str(),
        "exactly one, the real tenant"
    );
    assert_eq!(echo["tier"], "standard");
    assert_eq!(echo["unchecked"], Value::Null);
}

/// Envoy answers callouts to a cluster with nothing listening at once with a synthesised 503.
#[tokio::test]
async fn with_the_control_plane_down_closed_mode_refuses_and_open_mode_passes_unchecked() {
    for mode in ["closed", "open"] {
        let mut stack =
            Stack::start(StackOptions::default().filter("failure_mode", json!(mode))).await;
        let tenant = stack.create_tenant("standard").await;
        assert_eq!(
            stack.call("/api/v1/ingest", &tenant.key).await.status(),
            200
        );
        stack.control_planes[0].process.kill();

        let started = Instant::now();
        let response = stack
            .client()
            .get(stack.url("/api/v1/ingest"))
            .header("x-api-key", &tenant.key)
            .header("x-tenant-id", "tn_spoofed")
            .send()
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(1000),
            "{mode}: answered after {elapsed:?}"
        );
        if mode == "closed" {
            assert_eq!(response.status(), 503);
            assert_eq!(
                header(&response, "content-type"),
                "application/problem+json"
            );
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["code"], "rate_limiter_unavailable");
        } else {
            assert_eq!(response.status(), 200);
            let echo: Value = response.json().await.unwrap();
            assert_eq!(echo["unchecked"], "unavailable");
            assert_eq!(
                echo["tenant_id"],
                Value::Null,
                "no identity, and not the spoofed one"
            );
        }
    }
}

/// A control-plane that accepts connections but never answers: the callout times out.
#[tokio::test]
async fn a_hanging_control_plane_is_cut_off_at_the_callout_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            connections.push(socket);
        }
    });
    for mode in ["closed", "open"] {
        let options = StackOptions::default()
            .callout_port(port)
            .filter("failure_mode", json!(mode))
            .filter(
                "control_plane",
                json!({"cluster": "tollgate_control_plane", "timeout": "300ms"}),
            );
        let stack = Stack::start(options).await;
        let started = Instant::now();
        let response = stack.call("/api/v1/ingest", "tg_whatever").await;
        let elapsed = started.elapsed();
        // Envoy's timers fire within a millisecond or so of the deadline, either side.
        assert!(
            elapsed >= Duration::from_millis(280) && elapsed < Duration::from_millis(1300),
            "{mode}: answered after {elapsed:?}, the timeout is 300 ms"
        );
        if mode == "closed" {
            assert_eq!(response.status(), 503);
        } else {
            assert_eq!(response.status(), 200);
            let echo: Value = response.json().await.unwrap();
            assert_eq!(echo["unchecked"], "timeout");
        }
    }
    held.abort();
}

#[tokio::test]
async fn a_garbled_answer_is_a_failed_decision() {
    for mode in ["closed", "open"] {
        let options = StackOptions::default()
            .callout_to_demo_upstream()
            .filter("failure_mode", json!(mode));
        let stack = Stack::start(options).await;
        let response = stack.call("/api/v1/ingest", "tg_whatever").await;
        if mode == "closed" {
            assert_eq!(response.status(), 503);
        } else {
            assert_eq!(response.status(), 200);
            let echo: Value = response.json().await.unwrap();
            assert_eq!(echo["unchecked"], "invalid_answer");
        }
    }
}

#[tokio::test]
async fn routes_that_are_not_limited_pass_through_without_a_key_or_a_callout() {
    let stack = Stack::start(StackOptions::default()).await;
    let callouts = stack.decision_requests().await;
    for _ in 0..3 {
        let response = stack.call_without_key("/healthz").await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("x-ratelimit-limit").is_none());
    }
    // A path that merely starts with the same letters is another route.
    let response = stack.call_without_key("/api/v1/ingestion").await;
    assert_eq!(
        response.status(),
        404,
        "routed to the control-plane, which has no such page"
    );
    assert_eq!(stack.decision_requests().await, callouts);
}

#[tokio::test]
async fn path_tricks_do_not_dodge_the_limit() {
    let stack = Stack::start(StackOptions::default()).await;
    for path in [
        "//api/v1/ingest",
        "/api/v1/./ingest",
        "/api/v1/foo/../ingest",
        "/api/v1/%69ngest",
    ] {
        let response = stack.call_without_key(path).await;
        assert_eq!(
            response.status(),
            401,
            "{path} must be limited (no key → 401)"
        );
    }
}

#[tokio::test]
async fn envoy_refuses_an_invalid_filter_configuration() {
    let mut config = shipped_envoy_config();
    let good = filter_config(&mut config);
    set_filter_config(&mut config, &good);
    let (accepted, output) = validate_envoy_config(&config);
    assert!(
        accepted,
        "the shipped configuration must validate: {output}"
    );

    let broken = [
        (
            "unknown field",
            json!({"control_plane": good["control_plane"], "routes": good["routes"], "failur_mode": "open"}),
        ),
        (
            "bad failure mode",
            json!({"control_plane": good["control_plane"], "routes": good["routes"], "failure_mode": "sometimes"}),
        ),
        (
            "no routes",
            json!({"control_plane": good["control_plane"], "routes": []}),
        ),
        (
            "zero cost",
            json!({"control_plane": good["control_plane"], "routes": [{"prefix": "/a", "name": "a", "cost": 0}]}),
        ),
        (
            "bad timeout",
            json!({"control_plane": {"cluster": "c", "timeout": "soon"}, "routes": good["routes"]}),
        ),
    ];
    for (case, filter) in broken {
        set_filter_config(&mut config, &filter);
        let (accepted, output) = validate_envoy_config(&config);
        assert!(!accepted, "{case}: Envoy accepted it:\n{output}");
        assert!(
            output.contains("configuration refused"),
            "{case}: the log says why:\n{output}"
        );
    }
}

#[tokio::test]
async fn the_control_plane_stops_cleanly_on_sigterm() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let started = Instant::now();
    let status = stack.control_planes[0]
        .process
        .terminate()
        .expect("exit status");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// The filter reads all request headers in one host call, whose SDK decoding panics on a
/// header name that is not UTF-8. Envoy's codec must refuse such a request before any filter
/// sees it, and the filter must keep working for everyone else.
#[tokio::test]
async fn a_header_name_that_is_not_utf8_is_refused_by_envoy_before_the_filter() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start(StackOptions::default()).await;
    let tenant = stack.create_tenant("standard").await;
    let mut connection = tokio::net::TcpStream::connect(("127.0.0.1", stack.envoy_port))
        .await
        .unwrap();
    let mut request = b"GET /api/v1/ingest HTTP/1.1\r\nhost: tollgate\r\nx-caf\xe9: 1\r\n".to_vec();
    request.extend_from_slice(format!("x-api-key: {}\r\n\r\n", tenant.key).as_bytes());
    connection.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), connection.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        stack.call("/api/v1/ingest", &tenant.key).await.status(),
        200
    );
}
