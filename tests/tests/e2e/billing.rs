//! Stripe billing end to end: localstripe sends real signed webhooks through Envoy's public
//! listener and the tenant's tier follows its subscription at the edge, also when a
//! cancellation's webhook never arrives (the periodic and the on-demand sync correct it);
//! customers, checkout and portal sessions are asked of a stateful stand-in (no fake
//! implements them in current shapes); forged, stale, replayed, out-of-order and oversized
//! deliveries change nothing. The scenarios of the billing rules (paused, incomplete, two
//! checkouts, deleted customers, plan changes, unknown prices) and the property over random
//! deliveries run in-process against the same stand-in: `control-plane/tests/billing.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tollgate_e2e::redis::RedisServer;
use tollgate_e2e::stripe::{LocalStripe, PAID_TIERS, PRO_PRICE, Subscribed};
use tollgate_e2e::stripe_stand_in::{Answer, StripeStandIn};
use tollgate_e2e::{Stack, StackOptions, Tenant, header, within};

const SECRET: &str = "whsec_tollgate_e2e";
/// The RateLimit-Policy the edge answers with on each tier of [`PAID_TIERS`].
const STANDARD: &str = "\"standard\";q=60;w=60";
const PRO: &str = "\"pro\";q=1000;w=60";

/// How long a webhook may take to arrive: localstripe delivers about 1 s after the call that
/// causes it.
const DELIVERY: Duration = Duration::from_secs(10);
/// How soon a restarted Redis takes writes again (the control-plane reconnects within 1 s).
const REDIS_BACK: Duration = Duration::from_secs(5);
/// How soon a tier change must be enforced everywhere (the bound).
const EDGE: Duration = Duration::from_secs(2);

const STRIPE_SECRET_KEY: &str = "sk_test_tollgate_e2e_secret";
const RETURN_URL: &str = "https://platform.example/billing";

async fn billed_stack() -> Stack {
    let options = StackOptions::default()
        .tiers(PAID_TIERS)
        .control_plane_env("STRIPE_WEBHOOK_SECRET", SECRET);
    Stack::start(options).await
}

/// The tenant's record as the admin API shows it.
async fn record(stack: &Stack, tenant: &str) -> Value {
    let path = format!("/admin/v1/tenants/{tenant}");
    let response = stack.admin(reqwest::Method::GET, &path, None).await;
    response.json().await.unwrap()
}

/// Waits until the tenant's subscription has `field` = `value` (localstripe delivers ~1 s
/// after the call that causes an event).
async fn subscription_field_becomes(stack: &Stack, tenant: &str, field: &str, value: &str) {
    let what = format!("subscription {field} = {value}");
    within(DELIVERY, &what, || async move {
        record(stack, tenant).await["subscription"][field] == value
    })
    .await;
}

/// A POST to a billing endpoint through Envoy, as the tenant with `key`.
async fn billing_call(
    stack: &Stack,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = stack.client().post(stack.url(path));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A current-shape event from `tests/fixtures/stripe`, made about this tenant.
fn fixture(name: &str, id: &str, created: u64, tenant: &str, status: &str) -> Value {
    let path = tollgate_e2e::workspace().join(format!("tests/fixtures/stripe/{name}.json"));
    let text = std::fs::read_to_string(path).unwrap();
    let text = text
        .replace("TENANT_ID", tenant)
        .replace("PRICE_ID", PRO_PRICE)
        .replace("STATUS", status);
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["id"] = json!(id);
    event["created"] = json!(created);
    event
}

/// A current-shape `customer.subscription.updated` about this tenant.
fn subscription_updated(id: &str, created: u64, tenant: &str, status: &str) -> Value {
    fixture("customer.subscription.updated", id, created, tenant, status)
}

/// Delivers `event` (a JSON value or its text) correctly signed, now.
async fn deliver_signed(stack: &Stack, event: &impl std::fmt::Display) -> StatusCode {
    let body = event.to_string();
    deliver(stack, &body, Some(signed(&body, now(), SECRET))).await
}

/// The RateLimit-Policy the edge answers the tenant with `key` now (one request of quota).
async fn policy(stack: &Stack, key: &str) -> String {
    let response = stack.call("/api/v1/ingest", key).await;
    header(&response, "ratelimit-policy").to_owned()
}

async fn policy_becomes(stack: &Stack, key: &str, expected: &str) -> Duration {
    within(DELIVERY, expected, || async move {
        policy(stack, key).await == expected
    })
    .await
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
    let webhook = stack.url("/api/v1/billing/webhook");
    stripe.register_webhook("tollgate", &webhook, SECRET).await;
    // A second endpoint signing with a secret that is not ours: every one of its deliveries
    // must be refused, whatever the other endpoint's copy did.
    stripe
        .register_webhook("impostor", &webhook, "whsec_not_tollgates")
        .await;
    stripe.create_price(PRO_PRICE).await;
    let tenant = stack.create_tenant("standard").await;
    assert_eq!(policy(&stack, &tenant.key).await, STANDARD);

    let subscription = stripe.subscribe(&tenant.id, PRO_PRICE).await;
    let took = policy_becomes(&stack, &tenant.key, PRO).await;
    eprintln!("pro at the edge {took:?} after subscribing");
    let linked = record(&stack, &tenant.id).await;
    assert_eq!(linked["subscription"]["id"], subscription.id.as_str());
    assert_eq!(
        linked["subscription"]["customer"],
        subscription.customer.as_str()
    );
    assert_eq!(linked["subscription"]["status"], "active");

    // The renewal fails 3-D Secure: invoice.payment_failed names no tenant, only the
    // customer and subscription; the tenant is past due and keeps Pro for the grace period.
    stripe.fail_a_payment(&subscription).await;
    subscription_field_becomes(&stack, &tenant.id, "status", "past_due").await;
    assert_eq!(policy(&stack, &tenant.key).await, PRO);
    // localstripe may also send customer.subscription.updated (past_due); wait for the
    // invoice's own delivery rather than race it.
    let failed =
        "tollgate_webhook_events_total{type=\"invoice.payment_failed\",outcome=\"applied\"}";
    within(DELIVERY, "invoice.payment_failed applied", || async {
        stack.metric(0, failed).await == Some(1)
    })
    .await;

    stripe.cancel(&subscription).await;
    policy_becomes(&stack, &tenant.key, STANDARD).await;
    // Every event went to both endpoints: as many refused as accepted, once all arrived.
    within(
        DELIVERY,
        "every delivery to the impostor refused",
        || async {
            let (accepted, refused) = webhook_deliveries(&stack).await;
            accepted >= 3 && accepted == refused
        },
    )
    .await;
}

/// Webhook deliveries the control-plane accepted (any outcome after a valid signature) and
/// refused, from its metrics.
async fn webhook_deliveries(stack: &Stack) -> (u64, u64) {
    let text = stack.metrics_text(0).await;
    let (mut accepted, mut refused) = (0, 0);
    for line in text
        .lines()
        .filter(|l| l.starts_with("tollgate_webhook_events_total{"))
    {
        let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if line.contains("outcome=\"refused\"") {
            refused += count;
        } else {
            accepted += count;
        }
    }
    (accepted, refused)
}

#[tokio::test]
async fn checkout_and_portal_sessions_carry_the_tenant_to_stripe() {
    let stand_in = StripeStandIn::start().await;
    let options = StackOptions::default()
        .tiers(PAID_TIERS)
        .control_plane_env("STRIPE_WEBHOOK_SECRET", SECRET)
        .control_plane_env("STRIPE_SECRET_KEY", STRIPE_SECRET_KEY)
        .control_plane_env("STRIPE_API_BASE", &stand_in.url)
        .control_plane_env("TOLLGATE_BILLING_RETURN_URL", RETURN_URL)
        .control_plane_env("TOLLGATE_CHECKOUT_PROMOTION_CODES", "true");
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    let key = Some(tenant.key.as_str());
    let pro = || Some(json!({"tier": "pro"}));
    let checkout = "/api/v1/billing/checkout";
    let portal = "/api/v1/billing/portal";

    let tiers: Value = stack
        .call_without_key("/api/v1/tiers")
        .await
        .json()
        .await
        .unwrap();
    let for_sale: Vec<&str> = tiers
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["for_sale"] == true)
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(for_sale, ["pro"]);

    let (status, body) = billing_call(&stack, checkout, None, pro()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_api_key")),
        "the filter's code for the same request"
    );
    let (status, body) = billing_call(&stack, checkout, Some("tg_not_a_key"), pro()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_api_key"))
    );
    let (status, body) =
        billing_call(&stack, checkout, key, Some(json!({"tier": "standard"}))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("tier_not_for_sale"))
    );
    let (status, body) = billing_call(&stack, checkout, key, Some(json!({"tier": "gold"}))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_tier"))
    );
    let (status, _) = billing_call(
        &stack,
        checkout,
        key,
        Some(json!({"tier": "pro", "price": "price_free"})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused"
    );
    let (status, body) = billing_call(&stack, checkout, key, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        ),
        "no body, so no JSON content type"
    );
    let (status, body) = billing_call(&stack, portal, key, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("no_billing_account"))
    );
    assert!(
        stand_in.all_requests().is_empty(),
        "nothing above reached Stripe"
    );

    // The first checkout creates the tenant's customer, then the session for it.
    let (status, session) = billing_call(&stack, checkout, key, pro()).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(
        session,
        json!({"id": "cs_test_1", "url": "https://checkout.stripe.test/c/pay/cs_test_1"}),
        "Stripe's session, handed on"
    );
    let asked = stand_in.all_requests();
    assert_eq!(
        (asked[0].path.as_str(), asked[1].path.as_str()),
        ("/v1/customers", "/v1/checkout/sessions")
    );
    assert_eq!(
        asked[0].field("metadata[tenant_id]"),
        Some(tenant.id.as_str())
    );
    assert!(
        asked[0].idempotency_key.is_some(),
        "a retried creation makes no second customer"
    );
    let asked = stand_in.requests().remove(0);
    assert_eq!(
        asked.authorization,
        Some(format!("Bearer {STRIPE_SECRET_KEY}"))
    );
    assert_eq!(
        asked.stripe_version.as_deref(),
        Some("2026-09-30.endive"),
        "the configured version"
    );
    assert_eq!(asked.field("mode"), Some("subscription"));
    assert_eq!(
        asked.field("customer"),
        Some("cus_test_1"),
        "always the tenant's customer"
    );
    assert_eq!(asked.field("line_items[0][price]"), Some(PRO_PRICE));
    assert_eq!(asked.field("line_items[0][quantity]"), Some("1"));
    assert_eq!(asked.field("client_reference_id"), Some(tenant.id.as_str()));
    assert_eq!(asked.field("metadata[tenant_id]"), Some(tenant.id.as_str()));
    assert_eq!(
        asked.field("subscription_data[metadata][tenant_id]"),
        Some(tenant.id.as_str())
    );
    assert_eq!(asked.field("allow_promotion_codes"), Some("true"));
    assert_eq!(asked.field("billing_address_collection"), Some("auto"));
    let expires_at: u64 = asked.field("expires_at").unwrap().parse().unwrap();
    assert!(
        (now() + 1790..=now() + 1870).contains(&expires_at),
        "30 minutes, not Stripe's default 24 hours"
    );
    assert_eq!(
        asked.field("success_url"),
        Some("https://platform.example/billing?checkout=success&session_id={CHECKOUT_SESSION_ID}")
    );
    assert_eq!(
        asked.field("cancel_url"),
        Some("https://platform.example/billing?checkout=canceled")
    );
    let first_key = asked.idempotency_key.clone().expect("an idempotency key");

    let (_, again) = billing_call(&stack, checkout, key, pro()).await;
    assert_eq!(
        again["id"], "cs_test_1",
        "a retried checkout gets Stripe's first session back"
    );
    assert_eq!(
        stand_in.requests()[1].idempotency_key.as_ref(),
        Some(&first_key),
    );

    // The tenant pays: Stripe creates the subscription and says so; the control-plane asks
    // Stripe what it holds and the edge enforces Pro.
    let subscription = stand_in.complete_checkout("cs_test_1");
    let created = stand_in.event("customer.subscription.created", &subscription);
    assert_eq!(deliver_signed(&stack, &created).await, StatusCode::OK);
    policy_becomes(&stack, &tenant.key, PRO).await;
    let (status, body) = billing_call(&stack, checkout, key, pro()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_subscribed"))
    );

    let (status, session) = billing_call(&stack, portal, key, None).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(
        session,
        json!({"id": "bps_test_1", "url": "https://billing.stripe.test/p/session/bps_test_1"}),
        "Stripe's session, handed on"
    );
    let asked = stand_in.requests().pop().unwrap();
    assert_eq!(asked.path, "/v1/billing_portal/sessions");
    assert_eq!(asked.field("customer"), Some("cus_test_1"));
    assert_eq!(asked.field("return_url"), Some(RETURN_URL));

    // Cancelled in the portal; buying again reuses the customer.
    stand_in.set_status(&subscription, "canceled");
    let deleted = stand_in.event("customer.subscription.deleted", &subscription);
    assert_eq!(deliver_signed(&stack, &deleted).await, StatusCode::OK);
    policy_becomes(&stack, &tenant.key, STANDARD).await;
    // From here on only billing calls: none of them is a decision.
    let decisions = stack.decision_requests().await;
    let (status, _) = billing_call(&stack, checkout, key, pro()).await;
    assert_eq!(status, StatusCode::OK);
    let asked = stand_in.requests().pop().unwrap();
    assert_eq!(asked.field("customer"), Some("cus_test_1"));
    assert_eq!(stand_in.customers().len(), 1, "still one customer");

    // Stripe refusing (an unknown price) or failing: the tenant gets a generic error, the
    // log the cause; never the secret key.
    stand_in.answer(Answer::Refuse);
    let (status, body) = billing_call(&stack, checkout, key, Some(json!({"tier": "pro"}))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("stripe_refused"))
    );
    assert!(
        !body.to_string().contains("price_secret_internal_name"),
        "{body}"
    );
    stand_in.answer(Answer::Fail);
    let (status, body) = billing_call(&stack, portal, key, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("stripe_unavailable"))
    );
    let log = stack.control_planes[0].process.log();
    assert!(
        log.contains("price_secret_internal_name"),
        "the cause is logged"
    );
    assert!(
        !log.contains(STRIPE_SECRET_KEY),
        "the secret key is never logged"
    );
    stack
        .patch_tenant(&tenant.id, json!({"suspended": true}))
        .await;
    let (status, body) = billing_call(&stack, checkout, key, pro()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("tenant_suspended"))
    );

    assert_eq!(
        stack.decision_requests().await,
        decisions,
        "billing calls are not metered"
    );
}

/// The stand-in behaves as Stripe does where Tollgate depends on it: parameters validated
/// with Stripe's error shape, idempotent requests replayed or refused.
#[tokio::test]
async fn the_stripe_stand_in_validates_and_replays_like_stripe() {
    let stand_in = StripeStandIn::start().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |path: &str, key: Option<&str>, form: &[(&str, &str)]| {
        let mut request = client
            .post(format!("{}v1{path}", stand_in.url))
            .bearer_auth(STRIPE_SECRET_KEY)
            .form(form);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send()
    };
    let session = [
        ("mode", "subscription"),
        ("line_items[0][price]", "price_nobody_sells"),
        ("success_url", RETURN_URL),
    ];
    let refused = post("/checkout/sessions", None, &session).await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "resource_missing");
    assert_eq!(body["error"]["param"], "line_items[0][price]");
    assert_eq!(
        body["error"]["message"],
        "No such price: 'price_nobody_sells'"
    );
    let missing: Value = post("/checkout/sessions", None, &session[1..])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            missing["error"]["code"].as_str(),
            missing["error"]["param"].as_str()
        ),
        (Some("parameter_missing"), Some("mode"))
    );

    let customer = [("name", "Acme"), ("metadata[tenant_id]", "tn_1")];
    let first = post("/customers", Some("key-1"), &customer).await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let replayed = post("/customers", Some("key-1"), &[customer[1], customer[0]])
        .await
        .unwrap();
    assert_eq!(
        replayed.headers()["idempotent-replayed"],
        "true",
        "parameters in any order"
    );
    assert_eq!(
        replayed.json::<Value>().await.unwrap(),
        first,
        "the first answer again"
    );
    assert_eq!(stand_in.customers().len(), 1, "and no second customer");
    let conflict = post("/customers", Some("key-1"), &[("name", "Other")])
        .await
        .unwrap();
    assert_eq!(conflict.status(), 400);
    let body: Value = conflict.json().await.unwrap();
    assert_eq!(body["error"]["type"], "idempotency_error");
    let unknown = client
        .get(format!("{}v1/subscriptions/sub_nobody", stand_in.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

/// localstripe, through the whole stack, with Stripe's API configured: a cancellation made
/// while Stripe cannot reach the webhook endpoint reaches the edge by the periodic sync.
#[tokio::test]
async fn a_cancellation_missed_by_the_webhook_is_corrected_by_the_periodic_sync() {
    let stripe = LocalStripe::start().await;
    let stack = Stack::start(synced_stack(&stripe, "2")).await;
    let (tenant, subscription) = subscribed_through_localstripe(&stack, &stripe).await;

    stripe
        .register_webhook("tollgate", &unreachable_url(), SECRET)
        .await;
    stripe.cancel(&subscription).await;
    let took = policy_becomes(&stack, &tenant.key, STANDARD).await;
    eprintln!("standard at the edge {took:?} after a cancellation no webhook reported");
    let synced = "tollgate_billing_syncs_total{trigger=\"periodic\",outcome=\"changed\"}";
    assert!(
        stack.metric(0, synced).await.unwrap_or(0) >= 1,
        "the periodic sync did it"
    );
    assert_eq!(
        record(&stack, &tenant.id).await["subscription"]["status"],
        "canceled"
    );
}

/// The same missed cancellation, corrected by an operator: `tollgate billing sync`.
#[tokio::test]
async fn a_cancellation_missed_by_the_webhook_is_corrected_by_an_on_demand_sync() {
    let stripe = LocalStripe::start().await;
    let stack = Stack::start(synced_stack(&stripe, "0")).await;
    let (tenant, subscription) = subscribed_through_localstripe(&stack, &stripe).await;

    stripe
        .register_webhook("tollgate", &unreachable_url(), SECRET)
        .await;
    stripe.cancel(&subscription).await;
    assert_eq!(
        policy(&stack, &tenant.key).await,
        PRO,
        "nothing told the control-plane"
    );
    let output = cli(&stack, &["billing", "sync", &tenant.id]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["outcome"], "changed", "{report}");
    assert!(
        report["changes"]
            .as_array()
            .unwrap()
            .contains(&json!({"field": "tier", "from": "pro", "to": "standard"})),
        "{report}"
    );
    let took = within(EDGE, "standard at the edge", || async {
        policy(&stack, &tenant.key).await == STANDARD
    })
    .await;
    eprintln!("standard at the edge {took:?} after the sync answered");

    let all = cli(&stack, &["billing", "sync", "--all"]);
    let summary: Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(
        (summary["synced"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(0)),
        "{summary}"
    );

    let unlinked = cli(&stack, &["billing", "unlink", &tenant.id]);
    let unlinked: Value = serde_json::from_slice(&unlinked.stdout).unwrap();
    assert!(unlinked["subscription"]["customer"].is_null(), "{unlinked}");
    assert_eq!(
        unlinked["subscription"]["former_customers"],
        json!([subscription.customer])
    );
}

/// A stack whose control-plane calls localstripe, syncing every `sync_secs` (0: never).
fn synced_stack(stripe: &LocalStripe, sync_secs: &str) -> StackOptions {
    StackOptions::default()
        .tiers(PAID_TIERS)
        .control_plane_env("STRIPE_WEBHOOK_SECRET", SECRET)
        .control_plane_env("STRIPE_SECRET_KEY", tollgate_e2e::stripe::API_KEY)
        .control_plane_env("STRIPE_API_BASE", &stripe.api_base())
        .control_plane_env("TOLLGATE_BILLING_RETURN_URL", RETURN_URL)
        .control_plane_env("TOLLGATE_BILLING_SYNC_SECS", sync_secs)
}

/// A tenant subscribed to Pro in localstripe, told by webhook, Pro at the edge.
async fn subscribed_through_localstripe(
    stack: &Stack,
    stripe: &LocalStripe,
) -> (Tenant, Subscribed) {
    stripe
        .register_webhook("tollgate", &stack.url("/api/v1/billing/webhook"), SECRET)
        .await;
    stripe.create_price(PRO_PRICE).await;
    let tenant = stack.create_tenant("standard").await;
    let subscription = stripe.subscribe(&tenant.id, PRO_PRICE).await;
    policy_becomes(stack, &tenant.key, PRO).await;
    let linked = record(stack, &tenant.id).await;
    assert_eq!(
        linked["subscription"]["customer"],
        subscription.customer.as_str()
    );
    (tenant, subscription)
}

/// A URL nothing listens on: the webhook endpoint is down.
fn unreachable_url() -> String {
    format!(
        "http://127.0.0.1:{}/api/v1/billing/webhook",
        tollgate_e2e::free_port()
    )
}

fn cli(stack: &Stack, args: &[&str]) -> std::process::Output {
    std::process::Command::new(tollgate_e2e::binaries_dir().join("tollgate"))
        .args(args)
        .env("TOLLGATE_ADMIN_URL", stack.internal_url(""))
        .env("TOLLGATE_ADMIN_TOKEN", tollgate_e2e::stack::ADMIN_TOKEN)
        .output()
        .expect("run the tollgate CLI; `make test` builds it")
}

#[tokio::test]
async fn forged_stale_replayed_and_older_deliveries_change_nothing() {
    let stack = billed_stack().await;
    let tenant = stack.create_tenant("standard").await;
    let event = |id: &str, created: u64, status: &str| {
        subscription_updated(id, created, &tenant.id, status).to_string()
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
    // Large enough that Envoy is still sending when the control-plane has decided: the 413
    // must reach the client all the same, not a reset turned into 503.
    let oversized = format!("{{\"pad\":\"{}\"}}", "x".repeat(8 * 1024 * 1024));
    let response = stack
        .client()
        .post(stack.url("/api/v1/billing/webhook"))
        .header("stripe-signature", signed(&oversized, now(), SECRET))
        .body(oversized)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "an 8 MB body");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "body_too_large");
    let garbage = "{\"id\": \"evt_garbage\", \"type\": ";
    assert_eq!(
        deliver_signed(&stack, &garbage).await,
        400,
        "authentic garbage"
    );
    let tampered = upgrade.replace("active", "trialing");
    assert_eq!(
        deliver(&stack, &tampered, Some(signed(&upgrade, now(), SECRET))).await,
        400,
        "tampered"
    );
    assert_eq!(
        policy(&stack, &tenant.key).await,
        STANDARD,
        "nothing changed"
    );

    assert_eq!(deliver_signed(&stack, &upgrade).await, 200);
    policy_becomes(&stack, &tenant.key, PRO).await;

    let older = event("evt_old", now() - 100, "canceled");
    assert_eq!(deliver_signed(&stack, &older).await, 200);
    assert_eq!(
        policy(&stack, &tenant.key).await,
        PRO,
        "an older event never wins"
    );
    for _ in 0..10 {
        assert_eq!(deliver_signed(&stack, &upgrade).await, 200, "redelivery");
    }

    let unknown = json!({"id": "evt_x", "created": now(), "type": "radar.early_fraud_warning.created", "data": {"object": {}}}).to_string();
    assert_eq!(
        deliver_signed(&stack, &unknown).await,
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
        counted("type=\"customer.subscription.updated\",outcome=\"stale\"").await,
        Some(11)
    );
    assert_eq!(
        counted("type=\"radar.early_fraud_warning.created\",outcome=\"ignored\"").await,
        Some(1)
    );
}

#[tokio::test]
async fn without_stripe_secrets_billing_answers_503_and_the_rest_works() {
    let stack = Stack::start(StackOptions::default()).await;
    assert_eq!(deliver_signed(&stack, &"{}").await, 503);
    let tenant = stack.create_tenant("standard").await;
    let key = Some(tenant.key.as_str());
    for (path, body) in [
        ("/api/v1/billing/checkout", Some(json!({"tier": "pro"}))),
        ("/api/v1/billing/portal", None),
    ] {
        let (status, problem) = billing_call(&stack, path, key, body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(problem["code"], "billing_not_configured");
    }
    assert_eq!(
        stack.call("/api/v1/ingest", &tenant.key).await.status(),
        200
    );
}

#[tokio::test]
async fn current_shape_events_move_the_tier_whatever_order_they_arrive_in() {
    let stack = billed_stack().await;
    let tenant = stack.create_tenant("standard").await;
    let t = now() - 30;
    let subscription = |id: &str, created: u64, status: &str| {
        subscription_updated(id, created, &tenant.id, status)
    };
    let completed = fixture("checkout.session.completed", "evt_1", t, &tenant.id, "");
    assert_eq!(deliver_signed(&stack, &completed).await, 200);
    let linked = record(&stack, &tenant.id).await;
    assert_eq!(linked["subscription"]["customer"], "cus_TcurrentShape01");
    assert_eq!(linked["subscription"]["id"], "sub_1QcurrentShape01");
    assert_eq!(policy(&stack, &tenant.key).await, STANDARD, "not paid yet");

    assert_eq!(
        deliver_signed(&stack, &subscription("evt_2", t + 1, "trialing")).await,
        200
    );
    policy_becomes(&stack, &tenant.key, PRO).await;

    assert_eq!(
        deliver_signed(&stack, &subscription("evt_3", t + 2, "past_due")).await,
        200
    );
    assert_eq!(policy(&stack, &tenant.key).await, PRO, "past due, in grace");
    assert_eq!(
        record(&stack, &tenant.id).await["subscription"]["past_due_since"],
        t + 2
    );

    let mut ending = subscription("evt_4", t + 3, "active");
    ending["data"]["object"]["cancel_at_period_end"] = json!(true);
    assert_eq!(deliver_signed(&stack, &ending).await, 200);
    let ending = record(&stack, &tenant.id).await;
    assert_eq!(ending["subscription"]["cancel_at_period_end"], true);
    assert!(
        ending["subscription"].get("past_due_since").is_none(),
        "paid again"
    );
    assert_eq!(
        policy(&stack, &tenant.key).await,
        PRO,
        "paid until the period ends"
    );

    // Deleted, then an update of the same second arrives late: the subscription stays ended.
    let mut deleted = subscription("evt_6", t + 4, "canceled");
    deleted["type"] = json!("customer.subscription.deleted");
    assert_eq!(deliver_signed(&stack, &deleted).await, 200);
    assert_eq!(
        deliver_signed(&stack, &subscription("evt_5", t + 4, "active")).await,
        200
    );
    policy_becomes(&stack, &tenant.key, STANDARD).await;
    assert_eq!(
        record(&stack, &tenant.id).await["subscription"]["status"],
        "canceled"
    );
}

#[tokio::test]
async fn a_paid_tier_reaches_every_replica_sharing_redis_and_a_lost_store_means_a_retry() {
    let mut redis = RedisServer::start_durable();
    let options = StackOptions::default()
        .tiers(PAID_TIERS)
        .redis(redis.url())
        .replicas(2)
        .control_plane_env("STRIPE_WEBHOOK_SECRET", SECRET);
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    stack.wait_until_known(1, &tenant.id).await;
    // A replica's decisions reconnect to a restarted Redis on their own: until then they
    // answer 503 (no limit header), and the filter would apply its failure mode.
    let limit_at = |replica: usize| {
        let (stack, key) = (&stack, &tenant.key);
        async move {
            let answer = stack.decision_via(replica, key).await;
            match answer.headers().get("x-tollgate-limit") {
                Some(limit) => limit.to_str().unwrap_or_default().to_owned(),
                None => format!("no decision ({})", answer.status()),
            }
        }
    };
    assert_eq!(
        (limit_at(0).await, limit_at(1).await),
        ("60".into(), "60".into())
    );

    // Delivered to replica 0 directly, so the other one can only learn it through Redis.
    let event = subscription_updated("evt_1", now(), &tenant.id, "active");
    let body = event.to_string();
    let response = stack
        .client()
        .post(stack.control_planes[0].url("/api/v1/billing/webhook"))
        .header("stripe-signature", signed(&body, now(), SECRET))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        limit_at(0).await,
        "1000",
        "the very next decision at the replica that applied it"
    );
    let took = within(EDGE, "replica 1 on the paid tier", || async {
        limit_at(1).await == "1000"
    })
    .await;
    eprintln!("replica 1 on the paid tier {took:?} after the webhook answered");

    // Redis down: the change cannot be stored, so Stripe is told to retry (5xx), and the
    // retry after Redis is back applies it.
    let canceled = subscription_updated("evt_2", now(), &tenant.id, "canceled");
    redis.kill();
    assert_eq!(deliver_signed(&stack, &canceled).await, 503);
    redis.restart();
    within(REDIS_BACK, "the retried delivery stored", || async {
        deliver_signed(&stack, &canceled).await == 200
    })
    .await;
    // Whichever replica took the retry, both apply it within 2 s: a replica whose change
    // listener is still reconnecting to the restarted Redis reloads every tenant when it
    // subscribes again (its backoff is at most 1 s).
    within(EDGE, "both replicas back on standard", || async {
        limit_at(0).await == "60" && limit_at(1).await == "60"
    })
    .await;
}

/// Stripe delivers concurrently; two changes to one tenant must not overwrite each other,
/// within a replica or across replicas sharing Redis.
#[tokio::test]
async fn concurrent_deliveries_for_one_tenant_are_all_kept() {
    let redis = RedisServer::start();
    for replicas in [1, 2] {
        let mut options = StackOptions::default()
            .tiers(PAID_TIERS)
            .control_plane_env("STRIPE_WEBHOOK_SECRET", SECRET);
        // One replica writing a state file (the embedded default of `make run`), or two
        // sharing Redis.
        options = if replicas == 1 {
            options.state_file()
        } else {
            options.redis(redis.url()).replicas(2)
        };
        let stack = Stack::start(options).await;
        let tenant = stack.create_tenant("standard").await;
        let created = now();
        let mut deliveries = tokio::task::JoinSet::new();
        for n in 0..20 {
            let event = subscription_updated(&format!("evt_{n}"), created, &tenant.id, "active");
            let body = event.to_string();
            let request = stack
                .client()
                .post(stack.control_planes[n % replicas].url("/api/v1/billing/webhook"))
                .header("stripe-signature", signed(&body, now(), SECRET))
                .body(body);
            // Redelivered on 503 as Stripe does: with 20 at once and 16 body readers, a
            // loaded machine can keep one waiting past the readers' 1 s (503 `overloaded`).
            deliveries.spawn(async move {
                for _ in 0..4 {
                    let Some(attempt) = request.try_clone() else {
                        break;
                    };
                    let status = attempt.send().await.unwrap().status();
                    if status != 503 {
                        return status;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                request.send().await.unwrap().status()
            });
        }
        let statuses = deliveries.join_all().await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        // Read through replica 0, which hears replica 1's last write over pub/sub a moment
        // after that delivery was answered.
        let what = format!("{replicas} replica(s): every event remembered");
        within(EDGE, &what, || async {
            let events = &record(&stack, &tenant.id).await["subscription"]["recent_events"];
            events.as_array().map(Vec::len) == Some(20)
        })
        .await;
    }
}
