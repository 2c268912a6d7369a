//! Shadow mode: a tier's decisions are made and counted, never enforced. Over its limit a
//! request still goes through, marked, and metrics and usage count it.

use reqwest::StatusCode;
use serde_json::Value;
use tollgate_e2e::{Stack, StackOptions, count};

#[tokio::test]
async fn a_shadowed_tier_lets_requests_through_and_counts_what_it_would_refuse() {
    let tiers = r#"
        default_tier = "standard"
        [tiers.standard]
        limit = 60
        window_seconds = 60
        [tiers.trial]
        limit = 2
        window_seconds = 60
        shadow = true
    "#;
    let stack = Stack::start(StackOptions::default().tiers(tiers)).await;
    let trial = stack.create_tenant("trial").await;
    let enforced = stack.create_tenant("standard").await;

    for i in 0..5 {
        let response = stack.call("/api/v1/ingest", &trial.key).await;
        assert_eq!(response.status(), 200, "request {i} goes through");
        let marked = response.headers().get("x-tollgate-would-limit");
        assert_eq!(
            marked.and_then(|policy| policy.to_str().ok()),
            (i >= 2).then_some("trial"),
            "request {i}: past the limit of 2, marked with the policy that would refuse it"
        );
        let echo: Value = response.json().await.unwrap();
        assert_eq!(
            echo["tenant_id"],
            trial.id.as_str(),
            "the upstream still learns the tenant"
        );
    }

    let usage = stack.usage(&trial.key).await;
    assert_eq!(
        (
            usage["shadow"].as_bool(),
            usage["used"].as_u64(),
            usage["denied"].as_u64()
        ),
        (Some(true), Some(2), Some(3))
    );
    assert_eq!(
        stack
            .metric(
                0,
                "tollgate_decisions_total{tier=\"trial\",outcome=\"shadow_deny\"}"
            )
            .await,
        Some(3)
    );
    assert_eq!(
        stack.envoy_stats().await["wasmcustom.tollgate.requests_shadow_denied"],
        3
    );

    // Other tiers are still enforced.
    let statuses = stack.burst("/api/v1/ingest", &enforced.key, 61, 4).await;
    assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 1);
}

#[tokio::test]
async fn the_global_switch_shadows_every_tier() {
    let stack =
        Stack::start(StackOptions::default().control_plane_env("TOLLGATE_SHADOW", "true")).await;
    let tenant = stack.create_tenant("standard").await;
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 65, 4).await;
    assert_eq!(count(&statuses, StatusCode::OK), 65);
    assert_eq!(
        stack
            .metric(
                0,
                "tollgate_decisions_total{tier=\"standard\",outcome=\"shadow_deny\"}"
            )
            .await,
        Some(5)
    );
}
