//! Stripe billing end to end: localstripe sends real signed webhooks through Envoy's public
//! listener; the tenant's tier follows its subscription at the edge. Forged, stale, replayed
//! and out-of-order deliveries change nothing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_e2e::stripe::LocalStripe;
use tollgate_e2e::{Stack, StackOptions};

const SECRET: &str = "whsec_tollgate_e2e";
const TIERS: &str = r#"
    default_tier = "standard"
    [tiers.standard]
    limit = 60
    window_seconds = 60
    [tiers.pro]
    limit = 1000
    window_seconds = 60
    paid = true
    stripe_price = "price_pro_monthly"
"#;

async fn billed_stack() -> Stack {
    let options = StackOptions::default()
        .tiers(TIERS)
        .control_plane_env("STRIPE_WEBHOOK_SECRET", SECRET);
    Stack::start(options).await
}

async fn policy(stack: &Stack, key: &str) -> String {
    let response = stack.call("/api/v1/ingest", key).await;
    response.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn policy_becomes(stack: &Stack, key: &str, expected: &str) -> Duration {
    let started = Instant::now();
    while policy(stack, key).await != expected {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

fn signed(body: &str, timestamp: u64, secret: &str) -> String {
    format!(
        "t={timestamp},v1={}",
        stripe_sign(timestamp, body.as_bytes(), secret)
    )
}

/// Stripe's signature scheme, written out here so the test does not trust the code it tests.
fn stripe_sign(timestamp: u64, body: &[u8], secret: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn deliver(stack: &Stack, body: &str, signature: Option<String>) -> reqwest::StatusCode {
    let mut request = stack
        .client()
        .post(stack.url("/api/v1/billing/webhook"))
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn the_tier_follows_a_localstripe_subscription_at_the_edge() {
    let stack = billed_stack().await;
    let stripe = LocalStripe::start().await;
    stripe
        .register_webhook(&stack.url("/api/v1/billing/webhook"), SECRET)
        .await;
    stripe.create_price("price_pro_monthly").await;
    let tenant = stack.create_tenant("standard").await;
    assert_eq!(policy(&stack, &tenant.key).await, "\"standard\";q=60;w=60");

    let subscription = stripe.subscribe(&tenant.id, "price_pro_monthly").await;
    let took = policy_becomes(&stack, &tenant.key, "\"pro\";q=1000;w=60").await;
    eprintln!("pro at the edge {took:?} after subscribing");
    let record: Value = stack
        .admin(
            reqwest::Method::GET,
            &format!("/admin/v1/tenants/{}", tenant.id),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["subscription"]["id"], subscription.as_str());
    assert_eq!(record["subscription"]["status"], "active");

    stripe.cancel(&subscription).await;
    policy_becomes(&stack, &tenant.key, "\"standard\";q=60;w=60").await;
}

#[tokio::test]
async fn forged_stale_replayed_and_older_deliveries_change_nothing() {
    let stack = billed_stack().await;
    let tenant = stack.create_tenant("standard").await;
    let event = |id: &str, created: u64, status: &str| {
        json!({"id": id, "created": created, "type": "customer.subscription.updated", "data": {"object": {
            "id": "sub_1", "customer": "cus_1", "status": status, "metadata": {"tenant_id": tenant.id},
            "items": {"data": [{"price": {"id": "price_pro_monthly"}}]}}}})
        .to_string()
    };
    let upgrade = event("evt_up", now(), "active");

    assert_eq!(deliver(&stack, &upgrade, None).await, 400, "unsigned");
    assert_eq!(
        deliver(
            &stack,
            &upgrade,
            Some(signed(&upgrade, now(), "whsec_wrong"))
        )
        .await,
        400,
        "forged"
    );
    assert_eq!(
        deliver(
            &stack,
            &upgrade,
            Some(signed(&upgrade, now() - 600, SECRET))
        )
        .await,
        400,
        "stale"
    );
    let tampered = upgrade.replace("active", "trialing");
    assert_eq!(
        deliver(&stack, &tampered, Some(signed(&upgrade, now(), SECRET))).await,
        400,
        "tampered"
    );
    assert_eq!(
        policy(&stack, &tenant.key).await,
        "\"standard\";q=60;w=60",
        "nothing changed"
    );

    assert_eq!(
        deliver(&stack, &upgrade, Some(signed(&upgrade, now(), SECRET))).await,
        200
    );
    assert_eq!(
        policy(&stack, &tenant.key).await,
        "\"pro\";q=1000;w=60",
        "current-shape event applied"
    );

    let older = event("evt_old", now() - 100, "canceled");
    assert_eq!(
        deliver(&stack, &older, Some(signed(&older, now(), SECRET))).await,
        200
    );
    assert_eq!(
        policy(&stack, &tenant.key).await,
        "\"pro\";q=1000;w=60",
        "an older event never wins"
    );
    assert_eq!(
        deliver(&stack, &upgrade, Some(signed(&upgrade, now(), SECRET))).await,
        200,
        "redelivery"
    );

    let unknown = json!({"id": "evt_x", "created": now(), "type": "radar.early_fraud_warning.created", "data": {"object": {}}}).to_string();
    assert_eq!(
        deliver(&stack, &unknown, Some(signed(&unknown, now(), SECRET))).await,
        200,
        "unknown types are acknowledged"
    );

    let counted = |labels: &str| {
        let sample = format!("tollgate_webhook_events_total{{{labels}}}");
        let stack = &stack;
        async move { stack.metric(0, &sample).await }
    };
    assert_eq!(counted("type=\"\",outcome=\"refused\"").await, Some(4));
    assert_eq!(
        counted("type=\"customer.subscription.updated\",outcome=\"applied\"").await,
        Some(1)
    );
    assert_eq!(
        counted("type=\"customer.subscription.updated\",outcome=\"already_applied\"").await,
        Some(2)
    );
    assert_eq!(
        counted("type=\"radar.early_fraud_warning.created\",outcome=\"ignored\"").await,
        Some(1)
    );
}

#[tokio::test]
async fn without_stripe_secrets_billing_answers_503_and_the_rest_works() {
    let stack = Stack::start(StackOptions::default()).await;
    let body = "{}";
    assert_eq!(
        deliver(&stack, body, Some(signed(body, now(), SECRET))).await,
        503
    );
    let tenant = stack.create_tenant("standard").await;
    assert_eq!(
        stack.call("/api/v1/ingest", &tenant.key).await.status(),
        200
    );
}

#[tokio::test]
async fn a_past_due_tenant_keeps_its_paid_tier_for_the_grace_period_only() {
    let options = StackOptions::default()
        .tiers(TIERS)
        .control_plane_env("STRIPE_WEBHOOK_SECRET", SECRET)
        .control_plane_env("TOLLGATE_PAST_DUE_GRACE_SECS", "2");
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    let send = |body: String| {
        let stack = &stack;
        async move {
            let signature = signed(&body, now(), SECRET);
            assert_eq!(deliver(stack, &body, Some(signature)).await, 200);
        }
    };
    let subscription = |id: &str, created: u64| {
        json!({"id": id, "created": created, "type": "customer.subscription.updated", "data": {"object": {
            "id": "sub_1", "customer": "cus_1", "status": "active", "metadata": {"tenant_id": tenant.id},
            "items": {"data": [{"price": {"id": "price_pro_monthly"}}]}}}})
        .to_string()
    };
    send(subscription("evt_1", now() - 10)).await;
    let failed = json!({"id": "evt_2", "created": now(), "type": "invoice.payment_failed",
        "data": {"object": {"customer": "cus_1", "subscription": "sub_1"}}});
    send(failed.to_string()).await;
    assert_eq!(
        policy(&stack, &tenant.key).await,
        "\"pro\";q=1000;w=60",
        "within the grace period"
    );
    let lapsed = policy_becomes(&stack, &tenant.key, "\"standard\";q=60;w=60").await;
    eprintln!("standard after {lapsed:?} of a 2 s grace");

    send(subscription("evt_3", now() + 1)).await;
    assert_eq!(
        policy(&stack, &tenant.key).await,
        "\"pro\";q=1000;w=60",
        "paid again"
    );
}
