//! The HTTP layer: the two routers the listeners serve, as functions of their state, and the
//! thin handlers that adapt requests to the domain ([`crate::decision`], [`crate::tenants`],
//! [`crate::billing`]) and its answers to responses.
//!
//! The internal router (decisions, admin, metrics) must only be reachable from Envoy's
//! callout cluster and operators; the public router is what Envoy's public listener may route
//! to. Keeping them separate routers on separate listeners makes that a deployment fact rather
//! than a path-matching rule.

mod admin;
mod admin_api_keys;
mod billing;
pub mod body_limit;
mod caller;
mod dashboard;
mod decision;
pub mod error;
mod usage;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::billing::Billing;
use crate::clock::Clock;
use crate::config::Secret;
use crate::decision::Decider;
use crate::metrics::Metrics;
use crate::tenants::{Directory, KeyHasher};
use crate::tiers::TierSource;

/// Shared by every request; cloning copies a few `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub decider: Decider,
    pub billing: Billing,
    pub tenants: Arc<Directory>,
    pub tiers: Arc<TierSource>,
    pub keys: KeyHasher,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// The header tenants send their key in, besides `Authorization: Bearer`.
    pub api_key_header: HeaderName,
    pub admin_token: Secret,
}

pub fn internal_router(state: AppState) -> Router {
    Router::new()
        .route(tollgate_protocol::DECISION_PATH, post(decision::decide))
        .route("/metrics", get(metrics))
        .merge(admin::routes(state.clone()))
        .with_state(state)
}

/// `cors_origins`: browser origins allowed to poll the usage endpoint.
pub fn public_router(state: AppState, cors_origins: &[HeaderValue]) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(usage::public_routes(cors_origins, &state.api_key_header))
        .merge(dashboard::routes())
        .merge(billing::routes())
        .layer(axum::middleware::from_fn(body_limit::limit_public_bodies))
        .with_state(state)
}

/// Ready when the window store and the tenant directory answer.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (windows, tenants) = tokio::join!(state.decider.windows.health(), state.tenants.health());
    let status = |result: &Result<(), _>| if result.is_ok() { "ok" } else { "unavailable" };
    let body = Json(json!({ "windows": status(&windows), "tenants": status(&tenants) }));
    if windows.is_ok() && tenants.is_ok() {
        (StatusCode::OK, body)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
