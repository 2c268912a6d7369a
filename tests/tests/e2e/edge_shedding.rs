//! Shedding floods at the edge: the deny cache answers an over-quota key inside Envoy, so the
//! control-plane sees about one callout per second per worker, and the filter's Envoy stats
//! count what happened.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tollgate_e2e::{Stack, StackOptions, count, header};

/// Envoy runs with `--concurrency 2`.
const WORKERS: u64 = 2;

/// The stack these tests shed floods on: leases off, because [`exhaust`] needs exactly 60
/// admissions, and on a loaded machine a lease that ends unspent mid-burst gets a request
/// denied while its units are still counted (under-admission by design; leases.rs covers
/// leases, and their interplay with the deny cache is unit-tested in the filter).
fn options() -> StackOptions {
    StackOptions::default().filter("lease", json!({"enabled": false}))
}

async fn exhaust(stack: &Stack, key: &str) {
    let statuses = stack.burst("/api/v1/ingest", key, 60, 8).await;
    assert_eq!(count(&statuses, StatusCode::OK), 60);
    assert_eq!(stack.call("/api/v1/ingest", key).await.status(), 429);
}

#[tokio::test]
async fn a_flood_after_a_denial_is_answered_at_the_edge() {
    let stack = Stack::start(options()).await;
    let tenant = stack.create_tenant("standard").await;
    exhaust(&stack, &tenant.key).await;

    let callouts = stack.decision_requests().await;
    let started = Instant::now();
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 1000, 32).await;
    let elapsed = started.elapsed();
    assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 1000);
    let made = stack.decision_requests().await - callouts;
    let allowed = (elapsed.as_secs() + 1) * WORKERS;
    assert!(
        made <= allowed,
        "{made} callouts in {elapsed:?}; at most {allowed} allowed"
    );

    let cached = stack.call("/api/v1/ingest", &tenant.key).await;
    assert_eq!(cached.status(), 429);
    let retry_after: u64 = header(&cached, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(header(&cached, "x-ratelimit-remaining"), "0");
    assert_eq!(
        header(&cached, "ratelimit-policy"),
        "\"standard\";q=60;w=60"
    );
    assert_eq!(
        header(&cached, "ratelimit"),
        format!("\"standard\";r=0;t={retry_after}")
    );
}

#[tokio::test]
async fn after_the_cache_ttl_the_filter_asks_again() {
    let stack = Stack::start(options()).await;
    let tenant = stack.create_tenant("standard").await;
    exhaust(&stack, &tenant.key).await;
    let callouts = stack.decision_requests().await;
    assert_eq!(
        stack.call("/api/v1/ingest", &tenant.key).await.status(),
        429
    );
    assert_eq!(
        stack.decision_requests().await,
        callouts,
        "served from the cache"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        stack.call("/api/v1/ingest", &tenant.key).await.status(),
        429
    );
    assert_eq!(
        stack.decision_requests().await,
        callouts + 1,
        "the entry expired after 1 s"
    );
}

#[tokio::test]
async fn a_cheaper_route_is_not_refused_by_a_dearer_routes_denial() {
    let stack = Stack::start(options()).await;
    let tenant = stack.create_tenant("standard").await;
    let predictions = stack.burst("/api/v1/predict", &tenant.key, 11, 1).await;
    assert_eq!(count(&predictions, StatusCode::OK), 11, "55 of 60 units");
    let ingests = stack.burst("/api/v1/ingest", &tenant.key, 2, 1).await;
    assert_eq!(count(&ingests, StatusCode::OK), 2, "57 of 60 units");

    // A prediction (5 units) no longer fits, and is cached as denied...
    assert_eq!(
        stack.call("/api/v1/predict", &tenant.key).await.status(),
        429
    );
    assert_eq!(
        stack.call("/api/v1/predict", &tenant.key).await.status(),
        429
    );
    // ...but an ingest (1 unit) still fits, and the cache must not refuse it.
    assert_eq!(
        stack.call("/api/v1/ingest", &tenant.key).await.status(),
        200
    );
}

#[tokio::test]
async fn a_tier_upgrade_during_a_flood_is_honoured_within_the_cache_ttl() {
    let stack = Stack::start(options()).await;
    let tenant = stack.create_tenant("standard").await;
    exhaust(&stack, &tenant.key).await;

    stack.patch_tenant(&tenant.id, json!({"tier": "pro"})).await;
    let started = Instant::now();
    loop {
        let response = stack.call("/api/v1/ingest", &tenant.key).await;
        if response.status() == 200 {
            assert_eq!(
                response.headers()["ratelimit-policy"],
                "\"pro\";q=1000;w=60"
            );
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(
            started.elapsed() < Duration::from_millis(1300),
            "still refused after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_filters_envoy_stats_count_what_happened() {
    let stack = Stack::start(options()).await;
    let active = stack.create_tenant("standard").await;
    let suspended = stack.create_tenant("standard").await;
    stack
        .patch_tenant(&suspended.id, json!({"suspended": true}))
        .await;

    exhaust(&stack, &active.key).await; // 60 allowed, 1 denied by the control-plane
    let cached = stack.burst("/api/v1/ingest", &active.key, 25, 5).await;
    assert_eq!(count(&cached, StatusCode::TOO_MANY_REQUESTS), 25);
    for _ in 0..3 {
        stack.call_without_key("/api/v1/ingest").await;
    }
    stack.call("/api/v1/ingest", "tg_unknown").await;
    stack.call("/api/v1/ingest", &suspended.key).await;
    stack.call("/api/v1/ingest", &suspended.key).await;

    let stats = stack.envoy_stats().await;
    let stat = |name: &str| {
        stats
            .get(&format!("wasmcustom.tollgate.{name}"))
            .copied()
            .unwrap_or_else(|| panic!("{name} in {stats:?}"))
    };
    assert_eq!(stat("requests_allowed"), 60);
    // The one callout denial, plus any made by a worker whose cache entry had not been
    // written yet when its requests arrived; all others came from the cache.
    assert_eq!(stat("requests_denied") + stat("requests_denied_cached"), 26);
    assert!(stat("requests_denied_cached") >= 20, "{stats:?}");
    assert_eq!(stat("requests_unauthorized"), 4);
    assert_eq!(stat("requests_forbidden"), 2);
    assert_eq!(stat("callout_failures"), 0);
    assert_eq!(stat("requests_passed_fail_open"), 0);
    // Every callout the filter counts reached the control-plane.
    let decisions = stack.metric(0, "tollgate_decision_requests_total").await;
    assert_eq!(Some(stat("callouts")), decisions);

    // Each route counts its own requests (Envoy tags them with the route, see
    // envoy/envoy.yaml); only ingest has had traffic so far.
    for name in [
        "requests_allowed",
        "requests_denied",
        "requests_denied_cached",
        "requests_unauthorized",
        "requests_forbidden",
        "callouts",
    ] {
        assert_eq!(stat(&format!("route.ingest.{name}")), stat(name), "{name}");
        assert_eq!(stat(&format!("route.predict.{name}")), 0, "{name}");
    }
    let other = stack.create_tenant("standard").await;
    assert_eq!(
        stack.call("/api/v1/predict", &other.key).await.status(),
        200
    );
    let stats = stack.envoy_stats().await;
    assert_eq!(
        stats["wasmcustom.tollgate.route.predict.requests_allowed"],
        1
    );
    assert_eq!(
        stats["wasmcustom.tollgate.route.ingest.requests_allowed"],
        60
    );
    assert_eq!(stats["wasmcustom.tollgate.requests_allowed"], 61);
}

#[tokio::test]
async fn failures_are_counted_in_stats() {
    let mut stack = Stack::start(options().filter("failure_mode", json!("open"))).await;
    let tenant = stack.create_tenant("standard").await;
    stack.control_planes[0].process.kill();
    for _ in 0..3 {
        assert_eq!(
            stack.call("/api/v1/ingest", &tenant.key).await.status(),
            200
        );
    }
    let stats = stack.envoy_stats().await;
    assert_eq!(stats["wasmcustom.tollgate.callout_failures"], 3);
    assert_eq!(stats["wasmcustom.tollgate.requests_passed_fail_open"], 3);
}
