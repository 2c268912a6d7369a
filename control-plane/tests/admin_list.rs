//! The admin list over HTTP (in process, `oneshot`): pages of tenants with a cursor, each with
//! its current use; and the embedded registry a `--registry` path names, kept across a
//! restart of the state.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tollgate_control_plane::api::internal_router;
use tollgate_control_plane::clock::SystemClock;
use tollgate_control_plane::config::Config;
use tollgate_control_plane::server::build_state;
use tower::ServiceExt;

const TOKEN: &str = "test-admin-token-0123456789";

async fn app(args: &[&str]) -> Router {
    let base = [
        "cp",
        "--admin-token",
        TOKEN,
        "--key-secret",
        "test-key-secret-0123456789-0123456789",
    ];
    let config: Config = clap::Parser::try_parse_from(base.iter().chain(args)).unwrap();
    internal_router(build_state(&config, Arc::new(SystemClock)).await.unwrap())
}

async fn call(app: &Router, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_list_comes_in_pages_with_a_cursor_and_each_tenants_use() {
    let app = app(&[]).await;
    let mut created = Vec::new();
    for n in 0..7 {
        let tier = if n == 0 { "pro" } else { "standard" };
        let (status, body) = call(
            &app,
            "POST",
            "/admin/v1/tenants",
            json!({"name": format!("T{n}"), "tier": tier}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        created.push(body["id"].as_str().unwrap().to_owned());
    }
    created.sort();
    let mut listed = Vec::new();
    let mut uri = "/admin/v1/tenants?limit=3".to_owned();
    let mut sizes = Vec::new();
    loop {
        let (status, page) = call(&app, "GET", &uri, Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let tenants = page["tenants"].as_array().unwrap();
        sizes.push(tenants.len());
        for tenant in tenants {
            assert_eq!(tenant["used"], 0);
            assert!(tenant["limit"] == 60 || tenant["limit"] == 1000, "{tenant}");
            assert!(tenant.get("api_key").is_none() && tenant.get("keys").is_none());
            listed.push(tenant["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/admin/v1/tenants?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(listed, created, "every tenant once, in id order");

    let (status, page) = call(&app, "GET", "/admin/v1/tenants", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page["tenants"].as_array().unwrap().len(),
        7,
        "a page of 100 by default"
    );
    assert_eq!(page["next_cursor"], Value::Null);
    for wrong in ["limit=0", "limit=1001", "limit=x", "page=2"] {
        let (status, problem) = call(
            &app,
            "GET",
            &format!("/admin/v1/tenants?{wrong}"),
            Value::Null,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{wrong}: {problem}"
        );
    }
}

#[tokio::test]
async fn tenants_in_the_registry_file_outlive_the_state_and_the_file_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.redb");
    let args = ["--registry", path.to_str().unwrap()];
    let first = app(&args).await;
    let (status, body) = call(
        &first,
        "POST",
        "/admin/v1/tenants",
        json!({"name": "Kept", "tier": "pro"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_str().unwrap().to_owned();

    let base = [
        "cp",
        "--admin-token",
        TOKEN,
        "--key-secret",
        "test-key-secret-0123456789-0123456789",
    ];
    let config: Config = clap::Parser::try_parse_from(base.iter().chain(&args)).unwrap();
    let error = build_state(&config, Arc::new(SystemClock))
        .await
        .err()
        .expect("a second control-plane on the same registry is refused");
    assert!(error.to_string().contains("another process"), "{error}");

    drop(first);
    let second = app(&args).await;
    let (status, tenant) = call(
        &second,
        "GET",
        &format!("/admin/v1/tenants/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (tenant["name"].as_str(), tenant["tier"].as_str()),
        (Some("Kept"), Some("pro"))
    );
}
