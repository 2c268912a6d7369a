//! The application as functions of its state: the two routers the listeners serve.
//!
//! The internal router (decisions, admin, metrics) must only be reachable from Envoy's
//! callout cluster and operators; the public router is what Envoy's public listener may route
//! to. Keeping them separate routers on separate listeners makes that a deployment fact rather
//! than a path-matching rule.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::api_keys::KeyHasher;
use crate::billing::Billing;
use crate::config::Secret;
use crate::directory::{Directory, unix_now};
use crate::metrics::Metrics;
use crate::tier_source::TierSource;
use crate::tiers::Tier;
use crate::window::Windows;
use crate::{admin, billing, body_limit, dashboard, decision, usage};

/// Shared by every request; cloning copies a few `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub tiers: Arc<TierSource>,
    pub directory: Arc<Directory>,
    pub windows: Arc<Windows>,
    pub keys: KeyHasher,
    /// The header tenants send their key in, besides `Authorization: Bearer`.
    pub api_key_header: HeaderName,
    pub admin_token: Secret,
    /// Shadow mode for every tier (`--shadow`).
    pub shadow_all: bool,
    pub billing: Billing,
    /// How long a past-due subscription keeps its paid tier.
    pub past_due_grace: Duration,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// The tier a tenant's requests are decided with: its own, or the default one once its
    /// subscription has been past due for longer than the grace period.
    pub fn tier_in_force(&self, tier: &str, past_due_since: Option<u64>) -> Option<Arc<Tier>> {
        let tiers = self.tiers.current();
        let lapsed =
            past_due_since.is_some_and(|since| since + self.past_due_grace.as_secs() <= unix_now());
        if lapsed {
            Some(tiers.default_tier().clone())
        } else {
            tiers.get(tier).cloned()
        }
    }
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
        .merge(billing::public_routes())
        .layer(axum::middleware::from_fn(body_limit::limit_public_bodies))
        .with_state(state)
}

/// Ready when the window store and the tenant directory answer.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (windows, directory) = tokio::join!(state.windows.health(), state.directory.health());
    let status = |result: &Result<(), _>| if result.is_ok() { "ok" } else { "unavailable" };
    let body = Json(json!({ "windows": status(&windows), "tenants": status(&directory) }));
    if windows.is_ok() && directory.is_ok() {
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
