//! The OpenAPI documents: the committed copies (docs/openapi.json, docs/openapi-admin.json)
//! are what the code generates, each listener serves its own at `/openapi.json`, and every
//! operation a document lists is routed on that listener.
//!
//! When a handler's contract changes, regenerate the committed copies with
//! `TOLLGATE_UPDATE_OPENAPI=1 cargo test -p tollgate-control-plane --test openapi` (or
//! `make openapi`) and commit them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tollgate_control_plane::api::openapi::{admin_document, public_document, render};
use tollgate_control_plane::api::{AppState, internal_router, public_router};
use tollgate_control_plane::clock::SystemClock;
use tollgate_control_plane::config::Config;
use tollgate_control_plane::server::build_state;
use tower::ServiceExt;

const TOKEN: &str = "test-admin-token-0123456789";

fn docs(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(file)
}

async fn state() -> AppState {
    let args = [
        "cp",
        "--admin-token",
        TOKEN,
        "--key-secret",
        "test-key-secret-0123456789-0123456789",
    ];
    let config: Config = clap::Parser::try_parse_from(args).unwrap();
    build_state(&config, Arc::new(SystemClock)).await.unwrap()
}

#[test]
fn the_committed_documents_are_what_the_code_generates() {
    let update = std::env::var_os("TOLLGATE_UPDATE_OPENAPI").is_some();
    for (file, document) in [
        ("openapi.json", public_document()),
        ("openapi-admin.json", admin_document()),
    ] {
        let generated = render(&document);
        let path = docs(file);
        if update {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/{file} is stale: regenerate it with `make openapi` \
             (TOLLGATE_UPDATE_OPENAPI=1 cargo test -p tollgate-control-plane --test openapi)"
        );
    }
}

#[test]
fn the_documents_are_openapi_3_1_with_problem_errors() {
    for document in [public_document(), admin_document()] {
        let json: Value = serde_json::from_str(&render(&document)).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        let problem = &json["components"]["schemas"]["Problem"];
        for field in ["type", "title", "status", "code", "detail"] {
            assert!(
                problem["required"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from(field)),
                "Problem requires {field}"
            );
        }
        // Every error answer of every operation is a problem document.
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, answer) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert!(
                            answer["content"]["application/problem+json"].is_object(),
                            "{method} {path} {status} is not a problem"
                        );
                    }
                }
            }
        }
    }
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    let request = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, body.to_vec())
}

#[tokio::test]
async fn each_listener_serves_its_own_document() {
    let state = state().await;
    let public = public_router(state.clone(), &[]);
    let internal = internal_router(state);
    for (app, document) in [(&public, public_document()), (&internal, admin_document())] {
        let (status, content_type, body) = get(app, "/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some("application/json"));
        assert_eq!(String::from_utf8(body).unwrap(), render(&document));
    }
    let public_paths: Value = serde_json::to_value(&public_document().paths).unwrap();
    assert!(public_paths["/api/v1/usage"].is_object());
    assert!(
        public_paths.get("/admin/v1/tenants").is_none(),
        "the public document has no admin path"
    );
}

/// A request for each documented operation, on the listener that documents it, reaches a
/// handler: whatever it answers, it is not the router's `not_found` or `method_not_allowed`.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let state = state().await;
    let public = public_router(state.clone(), &[]);
    let internal = internal_router(state);
    for (app, document) in [(&public, public_document()), (&internal, admin_document())] {
        let paths: Value = serde_json::to_value(&document.paths).unwrap();
        let mut operations = 0;
        for (path, item) in paths.as_object().unwrap() {
            let uri = path
                .replace("{id}", "tn_none")
                .replace("{key_id}", "key_none");
            for method in item.as_object().unwrap().keys() {
                if !["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                    continue;
                }
                operations += 1;
                let request = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&uri)
                    .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                    .header("x-forwarded-for", "192.0.2.1")
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let code = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|b| b["code"].as_str().map(str::to_owned));
                assert!(
                    !matches!(code.as_deref(), Some("not_found" | "method_not_allowed")),
                    "{method} {uri}: {status} {code:?}: documented but not routed"
                );
            }
        }
        assert!(operations >= 8, "only {operations} operations documented");
    }
}
