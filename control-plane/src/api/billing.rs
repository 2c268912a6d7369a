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
use super::error::{ApiError, Problem};
use super::{AppState, caller};
use crate::billing::{HostedSession, SyncReport, SyncSummary, Trigger};
use crate::tenants::Tenant;

/// Stripe's webhook deliveries.
pub const WEBHOOK_PATH: &str = "/api/v1/billing/webhook";

/// The billing routes, the only public ones that read a body (see [`super::body_limit`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(WEBHOOK_PATH, post(webhook))
        .route("/api/v1/billing/checkout", post(checkout))
        .route("/api/v1/billing/portal", post(portal))
        .route_layer(axum::middleware::from_fn_with_state(
            BodyReaders::default(),
            read_bodies,
        ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// The tier to buy, by name (one `GET /api/v1/tiers` lists `for_sale`).
    #[schema(example = "pro")]
    tier: String,
}

/// Answers `{"id", "url"}` of a Checkout Session for the tier's Stripe price.
#[utoipa::path(
    post,
    path = "/api/v1/billing/checkout",
    tag = "billing",
    security(("api_key" = []), ("bearer" = [])),
    request_body = CheckoutRequest,
    responses(
        (status = 200, description = "A Stripe Checkout Session to send the tenant to.", body = HostedSession),
        (status = 400, description = "The body is not JSON (`invalid_json`).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No usable API key (`missing_api_key`, `malformed_api_key`, `invalid_api_key`).", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The tenant is suspended (`tenant_suspended`).", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within 10 s (`body_timeout`).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant already has a subscription (`already_subscribed`).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 1 MiB (`body_too_large`).", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown fields (`invalid_body`), an unknown tier (`unknown_tier`) or one without a Stripe price (`tier_not_for_sale`).", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "Stripe refused the session (`stripe_refused`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Billing is not configured (`billing_not_configured`), Stripe did not answer (`stripe_unavailable`), or a store did not (`store_unavailable`).", body = Problem, content_type = "application/problem+json"),
    ),
)]
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
#[utoipa::path(
    post,
    path = "/api/v1/billing/portal",
    tag = "billing",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "A Stripe Billing Portal session to send the tenant to.", body = HostedSession),
        (status = 401, description = "No usable API key (`missing_api_key`, `malformed_api_key`, `invalid_api_key`).", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within 10 s (`body_timeout`).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant has no Stripe customer yet (`no_billing_account`).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 1 MiB (`body_too_large`).", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "Stripe refused the session (`stripe_refused`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Billing is not configured (`billing_not_configured`), Stripe did not answer (`stripe_unavailable`), or a store did not (`store_unavailable`).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn portal(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<HostedSession>, ApiError> {
    let tenant = caller::tenant(&state, &headers).await?;
    Ok(Json(state.billing.portal(&tenant).await?))
}

/// 200 once the delivery is verified and applied (or changes nothing).
#[utoipa::path(
    post,
    path = "/api/v1/billing/webhook",
    tag = "billing",
    params(("stripe-signature" = Option<String>, Header, description = "Stripe's signature of the body")),
    request_body(content = String, description = "A Stripe event, signed; read raw (at most 1 MiB).", content_type = "application/json"),
    responses(
        (status = 200, description = "Verified and applied (or it changes nothing); an empty body."),
        (status = 400, description = "The signature is missing, wrong or stale (`invalid_signature`), or the signed body is not an event (`invalid_event`).", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within 10 s (`body_timeout`).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 1 MiB (`body_too_large`).", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "Stripe refused the fetch of the event's objects (`stripe_refused`); Stripe retries.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Billing is not configured (`billing_not_configured`), or Stripe or a store did not answer; Stripe retries.", body = Problem, content_type = "application/problem+json"),
    ),
)]
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
#[utoipa::path(
    post,
    path = "/admin/v1/tenants/{id}/billing/sync",
    tag = "billing",
    params(("id" = String, Path, description = "The tenant's id")),
    responses(
        (status = 200, description = "The tenant and what changed.", body = SyncReport),
        (status = 404, description = "No tenant has this id (`tenant_not_found`).", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "Stripe refused (`stripe_refused`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Billing is not configured (`billing_not_configured`), or Stripe or a store did not answer.", body = Problem, content_type = "application/problem+json"),
    ),
)]
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
#[utoipa::path(
    post,
    path = "/admin/v1/billing/sync",
    tag = "billing",
    responses(
        (status = 200, description = "How many were synced, changed and failed, and why.", body = SyncSummary),
        (status = 503, description = "Billing is not configured (`billing_not_configured`), or the control-plane is shutting down (`overloaded`).", body = Problem, content_type = "application/problem+json"),
    ),
)]
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
#[utoipa::path(
    delete,
    path = "/admin/v1/tenants/{id}/billing",
    tag = "billing",
    params(("id" = String, Path, description = "The tenant's id")),
    responses(
        (status = 200, description = "The tenant, unlinked.", body = Tenant),
        (status = 404, description = "No tenant has this id (`tenant_not_found`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant store did not answer (`store_unavailable`).", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn unlink(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(state.billing.unlink(&id).await?))
}
