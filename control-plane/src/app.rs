//! The application as functions of its state: the two routers the listeners serve.
//!
//! The internal router (decisions, admin, metrics) must only be reachable from Envoy's
//! callout cluster and operators; the public router is what Envoy's public listener may route
//! to. Keeping them separate routers on separate listeners makes that a deployment fact rather
//! than a path-matching rule.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::api_keys::KeyHasher;
use crate::config::Secret;
use crate::metrics::Metrics;
use crate::tenants::Tenants;
use crate::tiers::TierTable;
use crate::window::Windows;
use crate::{admin, decision};

/// Shared by every request; cloning copies a few `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub tiers: Arc<TierTable>,
    pub tenants: Arc<Tenants>,
    pub windows: Arc<Windows>,
    pub keys: KeyHasher,
    pub admin_token: Secret,
    pub metrics: Arc<Metrics>,
}

pub fn internal_router(state: AppState) -> Router {
    Router::new()
        .route(tollgate_protocol::DECISION_PATH, post(decision::decide))
        .route("/metrics", get(metrics))
        .merge(admin::routes(state.clone()))
        .with_state(state)
}

pub fn public_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .with_state(state)
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
