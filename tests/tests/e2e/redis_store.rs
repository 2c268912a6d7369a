//! The Redis store end to end: several control-plane replicas share one exact window, tenants
//! survive restarts, changes reach every replica, and Redis outages fail fast and heal.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tollgate_e2e::redis::RedisServer;
use tollgate_e2e::{Stack, StackOptions, count, within};

const BULK_TIER: &str = r#"
    default_tier = "bulk"
    [tiers.bulk]
    limit = 1000
    window_seconds = 60
"#;

/// The replicas run two threads each (the default is one), so decisions also race within a
/// replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_redis_admit_exactly_the_limit() {
    let redis = RedisServer::start();
    let options = StackOptions::default()
        .redis(redis.url())
        .replicas(2)
        .control_plane_env("TOLLGATE_DECISION_THREADS", "2")
        .tiers(BULK_TIER)
        .filter(
            "control_plane",
            json!({"cluster": "tollgate_control_plane", "timeout": "5s"}),
        );
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("bulk").await;
    // Both replicas must know the tenant before the flood, or one would answer 401.
    stack.wait_until_known(1, &tenant.id).await;

    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 5000, 64).await;
    let admitted = count(&statuses, StatusCode::OK) as u64;
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS) as u64,
        5000 - admitted
    );
    // Exactly the limit, across replicas: every unit was admitted, or is held by a lease at
    // the edge that the burst ended before spending (handed back by the key's next callout).
    let stats = stack.envoy_stats().await;
    let stat = |name: &str| stats[&format!("wasmcustom.tollgate.{name}")];
    let unspent = stat("lease_requests_granted")
        - stat("leases_granted")
        - stat("requests_allowed_leased")
        - stat("lease_requests_returned");
    assert_eq!(
        admitted + unspent,
        1000,
        "{admitted} admitted, {unspent} leased and unspent"
    );
    // Both replicas decided a fair share (most admissions were spent from leases at the
    // edge, without a decision).
    let mut served = [0; 2];
    for (replica, served) in served.iter_mut().enumerate() {
        *served = stack
            .metric(replica, "tollgate_decision_requests_total")
            .await
            .unwrap();
    }
    let total: u64 = served.iter().sum();
    for (replica, served) in served.iter().enumerate() {
        assert!(
            *served >= total / 4,
            "replica {replica} served only {served} of {total} decisions"
        );
    }
}

#[tokio::test]
async fn a_change_through_one_replica_reaches_the_other_within_a_second() {
    let redis = RedisServer::start();
    let stack = Stack::start(StackOptions::default().redis(redis.url()).replicas(2)).await;
    let tenant = stack.create_tenant("standard").await;

    let (stack, key) = (&stack, tenant.key.as_str());
    let until = |status: StatusCode| {
        within(
            Duration::from_secs(1),
            "replica 1 agrees",
            move || async move { stack.decide_via(1, key).await == status },
        )
    };
    until(StatusCode::OK).await;

    stack
        .patch_tenant(&tenant.id, json!({"suspended": true}))
        .await;
    let took = until(StatusCode::FORBIDDEN).await;
    eprintln!("suspension reached the other replica after {took:?}");
}

#[tokio::test]
async fn a_redis_outage_fails_fast_and_decisions_resume_when_it_returns() {
    let mut redis = RedisServer::start_durable();
    let mut stack = Stack::start(StackOptions::default().redis(redis.url())).await;
    let tenant = stack.create_tenant("standard").await;
    assert_eq!(
        stack.call("/api/v1/ingest", &tenant.key).await.status(),
        200
    );

    redis.kill();
    for _ in 0..5 {
        let started = Instant::now();
        let response = stack.call("/api/v1/ingest", &tenant.key).await;
        assert_eq!(response.status(), 503, "failure mode closed");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "took {:?}",
            started.elapsed()
        );
    }
    let ready = stack
        .client()
        .get(stack.control_planes[0].url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready while Redis is down");

    redis.restart();
    let took = within(Duration::from_secs(2), "decisions resume", || async {
        stack.call("/api/v1/ingest", &tenant.key).await.status() == 200
    })
    .await;
    eprintln!("decisions resumed {took:?} after Redis came back");

    // The tenant outlived both the outage and a control-plane restart.
    stack.restart_control_plane(0).await;
    assert_eq!(
        stack.call("/api/v1/ingest", &tenant.key).await.status(),
        200
    );
}

#[tokio::test]
async fn a_restarted_replica_serves_tenants_at_once_and_the_window_is_kept() {
    let redis = RedisServer::start();
    let tiers = "default_tier = \"tiny\"\n[tiers.tiny]\nlimit = 3\nwindow_seconds = 60\n";
    let mut stack = Stack::start(
        StackOptions::default()
            .redis(redis.url())
            .replicas(2)
            .tiers(tiers),
    )
    .await;
    let tenant = stack.create_tenant("tiny").await;
    stack.wait_until_known(1, &tenant.id).await;
    assert_eq!(
        stack.decide_via(1, &tenant.key).await,
        StatusCode::OK,
        "1 of 3"
    );
    assert_eq!(
        stack.decide_via(0, &tenant.key).await,
        StatusCode::OK,
        "2 of 3"
    );

    stack.restart_control_plane(0).await;
    stack.restart_control_plane(1).await;
    assert_eq!(
        stack.decide_via(0, &tenant.key).await,
        StatusCode::OK,
        "3 of 3"
    );
    assert_eq!(
        stack.decide_via(1, &tenant.key).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the window survived"
    );
}

#[tokio::test]
async fn the_embedded_store_keeps_tenants_across_a_restart() {
    let mut stack = Stack::start(StackOptions::default().state_file()).await;
    let tenant = stack.create_tenant("pro").await;
    assert_eq!(
        stack.call("/api/v1/ingest", &tenant.key).await.status(),
        200
    );
    stack.restart_control_plane(0).await;
    let response = stack.call("/api/v1/ingest", &tenant.key).await;
    assert_eq!(response.status(), 200, "the key still works");
    assert_eq!(
        response.headers()["ratelimit-policy"],
        "\"pro\";q=1000;w=60"
    );
}
