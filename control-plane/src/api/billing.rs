//! The billing routes on the public listener, adapting requests to [`crate::billing`]:
//! `POST /api/v1/billing/checkout` and `/portal` (the tenant, known by its own API key, is
//! handed a Stripe-hosted page) and `/webhook` (Stripe's signed deliveries, read raw).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::Deserialize;

use super::body_limit::{BodyReaders, read_bodies};
use super::error::ApiError;
use super::{AppState, caller};
use crate::billing::HostedSession;

/// The billing routes, the only public ones that read a body (see [`super::body_limit`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/billing/webhook", post(webhook))
        .route("/api/v1/billing/checkout", post(checkout))
        .route("/api/v1/billing/portal", post(portal))
        .route_layer(axum::middleware::from_fn_with_state(
            BodyReaders::default(),
            read_bodies,
        ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    /// The tier to buy, by name.
    tier: String,
}

/// Answers `{"id", "url"}` of a Checkout Session for the tier's Stripe price.
async fn checkout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CheckoutRequest>, JsonRejection>,
) -> Result<Json<HostedSession>, ApiError> {
    // Who asks comes first: a stranger learns nothing about how billing is set up.
    let tenant = caller::tenant(&state, &headers)?;
    state.billing.sessions()?;
    if tenant.suspended {
        return Err(ApiError::TenantSuspended);
    }
    let Json(request) = body?;
    Ok(Json(state.billing.checkout(&tenant, &request.tier).await?))
}

/// Answers `{"id", "url"}` of a Billing Portal session for the tenant's Stripe customer.
async fn portal(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<HostedSession>, ApiError> {
    let tenant = caller::tenant(&state, &headers)?;
    Ok(Json(state.billing.portal(&tenant).await?))
}

/// 200 once the delivery is verified and applied (or changes nothing).
async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    state.billing.receive_webhook(signature, &body).await?;
    Ok(StatusCode::OK)
}
