//! The billing routes, adapting requests to [`crate::billing`]. On the public listener:
//! `POST /api/v1/billing/checkout` and `/portal` (the tenant, known by its own API key, is
//! handed a Stripe-hosted page) and `/webhook` (Stripe's signed deliveries, read raw). For
//! the admin API (mounted by [`super::admin`], behind its token): a tenant's sync with
//! Stripe, every linked tenant's, and unlinking a tenant from its Stripe customer.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::Deserialize;

use super::body_limit::{BodyReaders, read_bodies};
use super::error::ApiError;
use super::{AppState, caller};
use crate::billing::{HostedSession, SyncReport, SyncSummary, Trigger};
use crate::tenants::Tenant;

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
    let tenant = caller::tenant(&state, &headers).await?;
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
    let tenant = caller::tenant(&state, &headers).await?;
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

/// `POST /admin/v1/tenants/{id}/billing/sync`: the tenant checked against Stripe now; 200
/// with the tenant and what changed.
pub(super) async fn sync_tenant(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SyncReport>, ApiError> {
    let billing = state.billing.clone();
    billing.sessions()?;
    let report = state
        .billing
        .in_background(async move { billing.sync_tenant(&id, Trigger::Admin).await })
        .await?;
    Ok(Json(report))
}

/// `POST /admin/v1/billing/sync`: every linked tenant checked against Stripe now.
pub(super) async fn sync_all(State(state): State<AppState>) -> Result<Json<SyncSummary>, ApiError> {
    let billing = state.billing.clone();
    billing.sessions()?;
    let summary = state
        .billing
        .in_background(async move { Ok(billing.sync_all(Trigger::Admin, false).await) })
        .await?;
    Ok(Json(summary))
}

/// `DELETE /admin/v1/tenants/{id}/billing`: the tenant unlinked from its Stripe customer.
pub(super) async fn unlink(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(state.billing.unlink(&id).await?))
}
