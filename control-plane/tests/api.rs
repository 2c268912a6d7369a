//! The control-plane's HTTP surface, driven in-process with `oneshot`: admin API errors, the
//! decision endpoint's answers, and the public listener's body limit.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tollgate_control_plane::api::body_limit::PUBLIC_BODY_LIMIT;
use tollgate_control_plane::api::{AppState, internal_router, public_router};
use tollgate_control_plane::billing::signature;
use tollgate_control_plane::clock::{Clock, ManualClock, SystemClock};
use tollgate_control_plane::config::Config;
use tollgate_control_plane::server::build_state;
use tower::ServiceExt;

const TOKEN: &str = "test-admin-token-0123456789";

async fn app() -> Router {
    internal_router(state().await)
}

async fn state() -> AppState {
    state_with(&[], Arc::new(SystemClock)).await
}

/// The state of a control-plane started with `args` besides the secrets, reading time from
/// `clock`.
async fn state_with(args: &[&str], clock: Arc<dyn Clock>) -> AppState {
    let base = [
        "cp",
        "--admin-token",
        TOKEN,
        "--key-secret",
        "test-key-secret-0123456789-0123456789",
    ];
    let config: Config = clap::Parser::try_parse_from(base.iter().chain(args)).unwrap();
    build_state(&config, clock).await.unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

fn admin(method: &str, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn decision(key: Option<&str>, route: &str, cost: &str) -> Request<Body> {
    let mut request = Request::builder()
        .method("POST")
        .uri("/v1/decision")
        .header("x-tollgate-route", route)
        .header("x-tollgate-cost", cost);
    if let Some(key) = key {
        request = request.header("x-tollgate-api-key", key);
    }
    request.body(Body::empty()).unwrap()
}

async fn create(app: &Router, body: Value) -> Value {
    let (status, _, created) =
        send(app, admin("POST", "/admin/v1/tenants", &body.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

#[tokio::test]
async fn the_admin_api_needs_the_token() {
    let app = app().await;
    let (status, headers, body) = send(
        &app,
        Request::post("/admin/v1/tenants")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"name":"x"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthorized");
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));

    let wrong = Request::get("/admin/v1/tenants/tn_1")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}x"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, wrong).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_created_tenant_gets_a_key_once_and_can_be_read_and_changed() {
    let app = app().await;
    let created = create(&app, json!({"name": "Acme"})).await;
    assert_eq!(created["tier"], "standard", "the default tier");
    assert_eq!(created["suspended"], false);
    let key = created["api_key"].as_str().unwrap();
    assert!(key.starts_with("tg_") && key.len() == 51);

    let id = created["id"].as_str().unwrap();
    let (status, _, read) = send(&app, admin("GET", &format!("/admin/v1/tenants/{id}"), "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["name"], "Acme");
    assert!(
        read.get("api_key").is_none(),
        "the key is never shown again"
    );

    let (status, _, patched) = send(
        &app,
        admin(
            "PATCH",
            &format!("/admin/v1/tenants/{id}"),
            r#"{"tier":"pro"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["tier"], "pro");
}

#[tokio::test]
async fn bad_admin_requests_get_problem_json_and_change_nothing() {
    let app = app().await;
    let cases = [
        (
            "POST",
            "/admin/v1/tenants",
            "{not json".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/admin/v1/tenants",
            r#"{"name":"A","tier":"gold"}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_tier",
        ),
        (
            "POST",
            "/admin/v1/tenants",
            r#"{"name":"A","plan":"x"}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "POST",
            "/admin/v1/tenants",
            r#"{"name":"  "}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "POST",
            "/admin/v1/tenants",
            format!(r#"{{"name":"{}"}}"#, "a".repeat(20_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "GET",
            "/admin/v1/tenants/tn_missing",
            String::new(),
            StatusCode::NOT_FOUND,
            "tenant_not_found",
        ),
        (
            "PATCH",
            "/admin/v1/tenants/tn_missing",
            r#"{"suspended":true}"#.to_owned(),
            StatusCode::NOT_FOUND,
            "tenant_not_found",
        ),
    ];
    for (method, uri, body, status, code) in cases {
        let (got, headers, problem) = send(&app, admin(method, uri, &body)).await;
        assert_eq!(
            got,
            status,
            "{method} {uri} {}",
            &body[..body.len().min(60)]
        );
        assert_eq!(problem["code"], code, "{method} {uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    }

    let created = create(&app, json!({"name": "Acme"})).await;
    let uri = format!("/admin/v1/tenants/{}", created["id"].as_str().unwrap());
    let (status, _, _) = send(
        &app,
        admin("PATCH", &uri, r#"{"tier":"gold","suspended":true}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, _, after) = send(&app, admin("GET", &uri, "")).await;
    assert_eq!(
        (after["tier"].as_str(), after["suspended"].as_bool()),
        (Some("standard"), Some(false)),
        "nothing half-applied"
    );
}

#[tokio::test]
async fn the_decision_endpoint_answers_in_status_and_headers() {
    let app = app().await;
    let created = create(&app, json!({"name": "Acme", "tier": "standard"})).await;
    let key = created["api_key"].as_str().unwrap();

    let (status, headers, _) = send(&app, decision(Some(key), "ingest", "1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["x-tollgate-tenant"],
        created["id"].as_str().unwrap()
    );
    assert_eq!(headers["x-tollgate-tier"], "standard");
    assert_eq!(headers["x-tollgate-remaining"], "59");

    let (status, headers, _) = send(&app, decision(Some(key), "predict", "59")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-tollgate-remaining"], "0");

    let (status, headers, _) = send(&app, decision(Some(key), "ingest", "1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = headers["x-tollgate-retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((59_000..=60_000).contains(&retry_after), "{retry_after}");

    let (status, _, _) = send(&app, decision(Some("tg_unknown"), "ingest", "1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&app, decision(None, "ingest", "1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a malformed callout");
    let (status, _, _) = send(&app, decision(Some(key), "ingest", "zero")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn key_lifecycle_errors_are_clear_and_change_nothing() {
    let app = app().await;
    let created = create(&app, json!({"name": "Acme"})).await;
    let id = created["id"].as_str().unwrap();
    let key_id = created["key_id"].as_str().unwrap();
    let keys = format!("/admin/v1/tenants/{id}/keys");

    let cases = [
        (
            "POST",
            format!("{keys}/key_nope/rotate"),
            String::new(),
            StatusCode::NOT_FOUND,
            "key_not_found",
        ),
        (
            "DELETE",
            format!("{keys}/key_nope"),
            String::new(),
            StatusCode::NOT_FOUND,
            "key_not_found",
        ),
        (
            "POST",
            format!("{keys}/{key_id}/rotate"),
            r#"{"grace_seconds": 99999999}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "POST",
            format!("{keys}/{key_id}/rotate"),
            r#"{"grace": 1}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "POST",
            "/admin/v1/tenants/tn_nobody/keys".to_owned(),
            String::new(),
            StatusCode::NOT_FOUND,
            "tenant_not_found",
        ),
    ];
    for (method, uri, body, status, code) in cases {
        let (got, _, problem) = send(&app, admin(method, &uri, &body)).await;
        assert_eq!(
            (got, problem["code"].as_str()),
            (status, Some(code)),
            "{method} {uri} {body}"
        );
    }
    let (_, _, listed) = send(&app, admin("GET", &keys, "")).await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "nothing was added or removed: {listed}"
    );
    assert!(
        listed[0].get("expires_at").is_none(),
        "the key was not put on a grace period"
    );
}

/// Every public POST is held to one limit, whichever handler it reaches: up to the limit the
/// handler answers (here: no key for the sessions, billing not configured for the webhook),
/// one byte more is 413 before any handler.
#[tokio::test]
async fn the_public_listener_refuses_bodies_over_its_limit() {
    let app = public_router(state().await, &[]);
    for (path, handled) in [
        ("/api/v1/billing/checkout", StatusCode::UNAUTHORIZED),
        ("/api/v1/billing/portal", StatusCode::UNAUTHORIZED),
        ("/api/v1/billing/webhook", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        for (size, expected) in [
            (PUBLIC_BODY_LIMIT, handled),
            (PUBLIC_BODY_LIMIT + 1, StatusCode::PAYLOAD_TOO_LARGE),
        ] {
            let request = Request::builder()
                .method("POST")
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(vec![b' '; size]))
                .unwrap();
            let (status, _, body) = send(&app, request).await;
            assert_eq!(status, expected, "{path}, {size} bytes: {body}");
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                assert_eq!(body["code"], "body_too_large", "{body}");
            }
        }
    }
}

/// A clock at a fixed start, moved by the tests.
fn manual_clock() -> (ManualClock, Arc<dyn Clock>) {
    let clock = ManualClock::new(1_800_000_000_000);
    (clock.clone(), Arc::new(clock))
}

#[tokio::test]
async fn a_rotated_key_works_until_its_grace_period_ends_and_not_a_second_longer() {
    let (clock, shared) = manual_clock();
    let app = internal_router(state_with(&[], shared).await);
    let created = create(&app, json!({"name": "Acme"})).await;
    let (id, old_key) = (
        created["id"].as_str().unwrap(),
        created["api_key"].as_str().unwrap(),
    );
    let key_id = created["key_id"].as_str().unwrap();
    let rotate = format!("/admin/v1/tenants/{id}/keys/{key_id}/rotate");
    let (status, _, rotated) =
        send(&app, admin("POST", &rotate, r#"{"grace_seconds": 600}"#)).await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new_key = rotated["api_key"].as_str().unwrap();
    let status_of = |key: &str| decision(Some(key), "ingest", "1");

    clock.advance(Duration::from_secs(599));
    assert_eq!(
        send(&app, status_of(old_key)).await.0,
        StatusCode::OK,
        "in its grace"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        send(&app, status_of(old_key)).await.0,
        StatusCode::UNAUTHORIZED,
        "the grace has ended"
    );
    assert_eq!(send(&app, status_of(new_key)).await.0, StatusCode::OK);
    let (_, _, listed) = send(
        &app,
        admin("GET", &format!("/admin/v1/tenants/{id}/keys"), ""),
    )
    .await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "only the working key is listed: {listed}"
    );
}

#[tokio::test]
async fn a_past_due_subscription_keeps_the_paid_tier_for_the_grace_period_only() {
    const SECRET: &str = "whsec_in_process";
    let (clock, shared) = manual_clock();
    let tiers =
        std::env::temp_dir().join(format!("tollgate-api-tiers-{}.toml", std::process::id()));
    std::fs::write(
        &tiers,
        "default_tier = \"standard\"\n[tiers.standard]\nlimit = 60\nwindow_seconds = 60\n\
         [tiers.pro]\nlimit = 1000\nwindow_seconds = 60\npaid = true\nstripe_price = \"price_pro\"\n",
    )
    .unwrap();
    let args = [
        "--tiers",
        tiers.to_str().unwrap(),
        "--stripe-webhook-secret",
        SECRET,
        "--past-due-grace-secs",
        "3600",
    ];
    let state = state_with(&args, shared.clone()).await;
    let (internal, public) = (internal_router(state.clone()), public_router(state, &[]));
    let created = create(&internal, json!({"name": "Acme"})).await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["api_key"].as_str().unwrap(),
    );

    let deliver = |event: Value| {
        let body = event.to_string();
        let now = shared.now_secs();
        let header = format!(
            "t={now},v1={}",
            signature::sign(now, body.as_bytes(), SECRET)
        );
        Request::post("/api/v1/billing/webhook")
            .header("stripe-signature", header)
            .body(Body::from(body))
            .unwrap()
    };
    let subscription = json!({"id": "sub_1", "customer": "cus_1", "status": "active",
        "metadata": {"tenant_id": id}, "items": {"data": [{"price": {"id": "price_pro"}}]}});
    let active = json!({"id": "evt_1", "created": shared.now_secs(),
        "type": "customer.subscription.updated", "data": {"object": subscription}});
    assert_eq!(send(&public, deliver(active)).await.0, StatusCode::OK);
    let failed = json!({"id": "evt_2", "created": shared.now_secs(), "type": "invoice.payment_failed",
        "data": {"object": {"customer": "cus_1", "subscription": "sub_1"}}});
    assert_eq!(send(&public, deliver(failed)).await.0, StatusCode::OK);

    let tier = |app: Router| async move {
        let (_, headers, _) = send(&app, decision(Some(key), "ingest", "1")).await;
        headers["x-tollgate-tier"].to_str().unwrap().to_owned()
    };
    assert_eq!(
        tier(internal.clone()).await,
        "pro",
        "past due, in its grace"
    );
    clock.advance(Duration::from_secs(3599));
    assert_eq!(
        tier(internal.clone()).await,
        "pro",
        "a second before the grace ends"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        tier(internal.clone()).await,
        "standard",
        "the grace has ended"
    );
    let _ = std::fs::remove_file(&tiers);
}

#[tokio::test]
async fn the_panel_script_loads_cross_origin_for_allowed_origins_and_revalidates() {
    let allowed = axum::http::HeaderValue::from_static("https://dash.example.com");
    let app = public_router(state().await, std::slice::from_ref(&allowed));
    let fetch = |origin: &'static str, etag: Option<&str>| {
        let mut request = Request::get("/ui/tollgate-usage.js").header(header::ORIGIN, origin);
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        request.body(Body::empty()).unwrap()
    };
    let response = app
        .clone()
        .oneshot(fetch("https://dash.example.com", None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://dash.example.com"
    );
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"//"), "the component's source");
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(etag.len(), 34, "a quoted 128-bit hash: {etag}");

    let again = app
        .clone()
        .oneshot(fetch("https://dash.example.com", Some(&etag)))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[header::ETAG], etag.as_str());

    let stranger = app
        .clone()
        .oneshot(fetch("https://evil.example.com", None))
        .await
        .unwrap();
    assert_eq!(stranger.status(), StatusCode::OK);
    assert!(
        stranger
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none(),
        "other origins cannot read it"
    );
}
