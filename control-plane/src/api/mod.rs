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
pub mod admission;
mod billing;
pub mod body_limit;
pub mod budgets;
mod caller;
mod dashboard;
mod decision;
pub mod error;
pub mod listener;
pub mod openapi;
mod usage;
pub mod usage_tokens;

use std::any::Any;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;

use self::admission::Admission;
use self::error::{ApiError, Problem};
use self::usage_tokens::UsageTokens;

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
    /// Budgets and in-flight bounds of the public listener.
    pub admission: Admission,
    /// Mints and verifies the usage endpoint's read-only tokens.
    pub usage_tokens: UsageTokens,
}

pub fn internal_router(state: AppState) -> Router {
    Router::new()
        .route(tollgate_protocol::DECISION_PATH, post(decision::decide))
        .route("/metrics", get(metrics))
        .route("/openapi.json", document(&openapi::admin_document()))
        .merge(admin::routes(state.clone()))
        .fallback(not_found)
        .layer(axum::middleware::map_response(problem_for_bare_405))
        .layer(CatchPanicLayer::custom(panicked))
        .with_state(state)
}

/// `cors_origins`: browser origins allowed to poll the usage endpoint and load the panel.
pub fn public_router(state: AppState, cors_origins: &[HeaderValue]) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/openapi.json",
            document(&openapi::public_document_for(state.api_key_header.as_str())),
        )
        .merge(usage::public_routes(cors_origins, &state.api_key_header))
        .merge(dashboard::routes(cors_origins))
        .merge(billing::routes())
        .fallback(not_found)
        .layer(axum::middleware::map_response(problem_for_bare_405))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admission::admit,
        ))
        .layer(CatchPanicLayer::custom(panicked))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Axum answers a known path with an unknown method 405 and no body; this makes it a
/// problem like every other error. (Its `method_not_allowed_fallback` would also catch the
/// CORS preflights the usage route's own layer answers.)
async fn problem_for_bare_405(response: Response) -> Response {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        let mut problem = ApiError::MethodNotAllowed.into_response();
        if let Some(allow) = response.headers().get(header::ALLOW) {
            problem.headers_mut().insert(header::ALLOW, allow.clone());
        }
        return problem;
    }
    response
}

/// A handler panicked (a bug): the client gets a 500 problem, not a reset connection, and
/// the log says what broke.
fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    if let Some(suppressed) = crate::log_limit::admit("handler_panic") {
        tracing::error!(message, suppressed, "a handler panicked");
    }
    ApiError::Panic.into_response()
}

/// `GET` answering `document`, rendered once when the router is built (cloning `Bytes` per
/// request shares them).
fn document<S: Clone + Send + Sync + 'static>(
    document: &utoipa::openapi::OpenApi,
) -> axum::routing::MethodRouter<S> {
    let text = axum::body::Bytes::from(openapi::render(document));
    get(move || async move { ([(header::CONTENT_TYPE, "application/json")], text) })
}

/// Alive: the process serves requests.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is alive.", body = String, content_type = "text/plain", example = "ok")),
)]
async fn healthz() -> &'static str {
    "ok"
}

/// Whether each store answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub windows: Health,
    pub tenants: Health,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    Unavailable,
}

/// Ready when the window store and the tenant directory answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Both stores answer.", body = Readiness),
        (status = 503, description = "A store does not answer (or the tenants are not loaded yet): \
            which one, as JSON; or too many requests in flight, as a problem (`overloaded`).",
            content((Readiness = "application/json"), (Problem = "application/problem+json"))),
    ),
)]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (windows, tenants) = tokio::join!(state.decider.windows.health(), state.tenants.health());
    let status = |result: &Result<(), _>| {
        if result.is_ok() {
            Health::Ok
        } else {
            Health::Unavailable
        }
    };
    let body = Json(Readiness {
        windows: status(&windows),
        tenants: status(&tenants),
    });
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
