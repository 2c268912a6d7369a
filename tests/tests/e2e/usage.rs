//! The usage endpoint through Envoy: exact figures after a known sequence of requests, for
//! both stores; key authentication; CORS for configured dashboard origins; the admin views.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tollgate_e2e::redis::RedisServer;
use tollgate_e2e::{Stack, StackOptions, count};

async fn usage_matches_what_the_edge_did(stack: Stack) {
    let tenant = stack.create_tenant("standard").await;
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 50, 8).await;
    assert_eq!(count(&statuses, StatusCode::OK), 50);
    assert_eq!(
        stack.call("/api/v1/predict", &tenant.key).await.status(),
        200,
        "5 units"
    );
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 12, 4).await;
    assert_eq!(count(&statuses, StatusCode::OK), 5);
    assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 7);
    assert_eq!(
        stack.call("/api/v1/predict", &tenant.key).await.status(),
        429
    );
    // Some of those denials were answered by Envoy's deny cache without a callout; the usage
    // request collects them on its way through the filter.
    let cached = stack.envoy_stats().await["wasmcustom.tollgate.requests_denied_cached"];
    assert!(cached > 0, "the deny cache answered none");

    let response = stack.call("/api/v1/usage", &tenant.key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tenant_id"], tenant.id.as_str());
    assert_eq!(body["tier"], "standard");
    assert_eq!(body["limit"], 60);
    assert_eq!(body["window_seconds"], 60);
    assert_eq!(body["used"], 60, "50 + 5 + 5 units admitted");
    assert_eq!(body["remaining"], 0);
    assert_eq!(body["denied"], 8, "7 ingests and 1 prediction refused");
    assert_eq!(body["month_to_date"], 60);
    let reset = body["reset_seconds"].as_u64().unwrap();
    assert!(
        (59..=60).contains(&reset),
        "the first request was moments ago: {reset}"
    );
    let history = body["history"].as_array().unwrap();
    assert_eq!(history.len(), 60);
    let sum = |field: &str| {
        history
            .iter()
            .map(|m| m[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("admitted"), sum("denied")), (60, 8));
    let starts: Vec<u64> = history
        .iter()
        .map(|m| m["start"].as_u64().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[1] == w[0] + 60),
        "consecutive minutes, oldest first"
    );

    // Reading usage costs no quota, and counts each denial once.
    let callouts = stack.decision_requests().await;
    for _ in 0..3 {
        let again = stack.usage(&tenant.key).await;
        assert_eq!(
            (again["used"].as_u64(), again["denied"].as_u64()),
            (Some(60), Some(8))
        );
    }
    assert_eq!(stack.decision_requests().await, callouts);

    // More cached denials, then a refresh callout once the cache entry expires: still exact.
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 20, 4).await;
    assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 20);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        stack.call("/api/v1/ingest", &tenant.key).await.status(),
        429
    );
    let after = stack.usage(&tenant.key).await;
    assert_eq!(after["denied"], 8 + 20 + 1);
}

#[tokio::test]
async fn usage_matches_what_the_edge_did_with_the_memory_store() {
    usage_matches_what_the_edge_did(Stack::start(StackOptions::default()).await).await;
}

#[tokio::test]
async fn usage_matches_what_the_edge_did_with_the_redis_store() {
    let redis = RedisServer::start();
    usage_matches_what_the_edge_did(Stack::start(StackOptions::default().redis(redis.url())).await)
        .await;
}

#[tokio::test]
async fn usage_needs_the_tenants_own_key() {
    let stack = Stack::start(StackOptions::default()).await;
    let refused = stack.call("/api/v1/usage", "tg_not_a_key").await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["www-authenticate"],
        "Bearer realm=\"tollgate\""
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_api_key");
    let missing = stack.call_without_key("/api/v1/usage").await;
    assert_eq!(missing.status(), 401);
    let problem: Value = missing.json().await.unwrap();
    assert_eq!(
        problem["code"], "missing_api_key",
        "the filter's code for the same request"
    );

    let tenant = stack.create_tenant("pro").await;
    let bearer = stack
        .client()
        .get(stack.url("/api/v1/usage"))
        .bearer_auth(&tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let body: Value = bearer.json().await.unwrap();
    assert_eq!(
        (body["tier"].as_str(), body["limit"].as_u64()),
        (Some("pro"), Some(1000))
    );
}

#[tokio::test]
async fn cors_lets_configured_origins_poll_and_no_others() {
    let allowed = "https://dashboard.example.com";
    let options = StackOptions::default()
        .control_plane_env("TOLLGATE_CORS_ORIGINS", allowed)
        .control_plane_env("TOLLGATE_USAGE_BUDGET", "1");
    let stack = Stack::start(options).await;
    let preflight = |origin: &'static str| {
        stack
            .client()
            .request(Method::OPTIONS, stack.url("/api/v1/usage"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-api-key")
            .send()
    };
    let granted = preflight(allowed).await.unwrap();
    assert_eq!(granted.status(), 200);
    assert_eq!(granted.headers()["access-control-allow-origin"], allowed);
    assert_eq!(granted.headers()["access-control-allow-methods"], "GET");
    assert_eq!(
        granted.headers()["access-control-allow-headers"],
        "authorization,x-api-key",
        "the key header, or a bearer key"
    );

    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no grant for another origin"
    );

    let tenant = stack.create_tenant("standard").await;
    let read = || {
        stack
            .client()
            .get(stack.url("/api/v1/usage"))
            .header("origin", allowed)
            .header("x-api-key", &tenant.key)
            .send()
    };
    let first = read().await.unwrap();
    assert_eq!(first.headers()["access-control-allow-origin"], allowed);

    // Past the usage budget (1 a second, bursts of 2) the 429 reaches the dashboard's origin
    // too, from the control-plane and then repeated by Envoy.
    let refusals_at_edge = || async {
        stack.envoy_stats().await["wasmcustom.tollgate.requests_budget_refused_cached"]
    };
    let before = refusals_at_edge().await;
    let mut refused = Vec::new();
    for _ in 0..10 {
        let answer = read().await.unwrap();
        if answer.status() == 429 {
            refused.push(answer);
        }
    }
    assert!(refused.len() >= 2, "{} refused", refused.len());
    for read in &refused {
        assert_eq!(read.headers()["access-control-allow-origin"], allowed);
        assert_eq!(read.headers()["ratelimit-policy"], "\"usage\";q=1;w=1");
    }
    assert!(refusals_at_edge().await > before, "some repeated by Envoy");
}

#[tokio::test]
async fn operators_see_any_tenants_usage_and_the_list() {
    // Leases off: the usage read must be exactly the calls made (a lease's units count as used
    // until handed back; leases.rs covers leases).
    let options = StackOptions::default().filter("lease", serde_json::json!({"enabled": false}));
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    let other = stack.create_tenant("pro").await;
    stack.burst("/api/v1/ingest", &tenant.key, 7, 4).await;

    let path = format!("/admin/v1/tenants/{}/usage", tenant.id);
    let one: Value = stack
        .admin(Method::GET, &path, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (one["used"].as_u64(), one["remaining"].as_u64()),
        (Some(7), Some(53))
    );

    let list: Value = stack
        .admin(Method::GET, "/admin/v1/tenants", None)
        .await
        .json()
        .await
        .unwrap();
    let list = list["tenants"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let find = |id: &str| list.iter().find(|t| t["id"] == id).cloned().unwrap();
    assert_eq!(
        (
            find(&tenant.id)["used"].as_u64(),
            find(&tenant.id)["limit"].as_u64()
        ),
        (Some(7), Some(60))
    );
    assert_eq!(
        (
            find(&other.id)["used"].as_u64(),
            find(&other.id)["limit"].as_u64()
        ),
        (Some(0), Some(1000))
    );
    assert!(
        list.iter().all(|t| t.get("api_key").is_none()),
        "keys are never listed"
    );

    let anonymous = stack
        .client()
        .get(stack.internal_url("/admin/v1/tenants"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn the_tiers_on_offer_are_public() {
    let stack = Stack::start(StackOptions::default()).await;
    let response = stack.call_without_key("/api/v1/tiers").await;
    assert_eq!(response.status(), 200);
    let tiers: Value = response.json().await.unwrap();
    let tiers = tiers.as_array().unwrap();
    let summary: Vec<(&str, u64, bool)> = tiers
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                t["limit"].as_u64().unwrap(),
                t["paid"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, vec![("pro", 1000, true), ("standard", 60, false)]);
    assert!(
        tiers.iter().all(|t| t.get("stripe_price").is_none()),
        "internal ids stay internal"
    );
}

#[tokio::test]
async fn a_client_cannot_report_denials_of_its_own_through_envoy() {
    let stack = Stack::start(StackOptions::default()).await;
    let tenant = stack.create_tenant("standard").await;
    let response = stack
        .client()
        .get(stack.url("/api/v1/usage"))
        .header("x-api-key", &tenant.key)
        .header("x-tollgate-edge-denied", "1000")
        .send()
        .await
        .expect("usage");
    assert_eq!(response.status(), StatusCode::OK);
    let usage: Value = response.json().await.unwrap();
    assert_eq!(usage["denied"], 0, "the filter strips the reserved header");
}

#[tokio::test]
async fn the_control_plane_reads_the_key_from_the_header_the_filter_is_configured_with() {
    let options = StackOptions::default()
        .filter(
            "api_key",
            serde_json::json!({"header": "x-tenant-key", "bearer": true}),
        )
        .control_plane_env("TOLLGATE_API_KEY_HEADER", "X-Tenant-Key");
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    let usage_with = |header: &'static str| {
        let request = stack
            .client()
            .get(stack.url("/api/v1/usage"))
            .header(header, &tenant.key);
        async move { request.send().await.expect("usage").status() }
    };
    assert_eq!(usage_with("x-tenant-key").await, StatusCode::OK);
    assert_eq!(usage_with("x-api-key").await, StatusCode::UNAUTHORIZED);
    let ingest = stack
        .client()
        .get(stack.url("/api/v1/ingest"))
        .header("x-tenant-key", &tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ingest.status(),
        StatusCode::OK,
        "the filter reads the same header"
    );
}
