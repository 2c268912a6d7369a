//! Usage and tiers as tenants and operators read them: `GET /api/v1/usage` on the public
//! listener (authenticated by the tenant's own API key, not counted against its quota, CORS
//! for configured dashboard origins), `GET /api/v1/tiers`, and the same usage for operators
//! on the admin API. The figures come from [`crate::decision::usage`].

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;
use super::{AppState, caller};
use crate::tenants::Tenant;

#[derive(Debug, Serialize)]
struct TierInfo {
    name: String,
    limit: u32,
    window_seconds: u32,
    monthly_limit: Option<u64>,
    paid: bool,
    display_price: Option<String>,
    /// Whether `POST /api/v1/billing/checkout` sells it here (a Stripe price, and billing
    /// configured).
    for_sale: bool,
}

/// `GET /api/v1/tiers`: what each tier offers, for pricing pages and dashboards.
async fn tiers(State(state): State<AppState>) -> Json<Vec<TierInfo>> {
    let table = state.tiers.current();
    Json(
        table
            .tiers()
            .into_iter()
            .map(|tier| TierInfo {
                name: tier.name.to_string(),
                limit: tier.limit,
                window_seconds: tier.window_seconds(),
                monthly_limit: tier.monthly_limit,
                paid: tier.paid,
                display_price: tier.display_price.clone(),
                for_sale: tier.stripe_price.is_some() && state.billing.stripe.is_some(),
            })
            .collect(),
    )
}

/// The tenant-facing routes, with CORS for `origins` (none: same-origin only); browsers may
/// send the key in `key_header` or `Authorization`.
pub fn public_routes(origins: &[HeaderValue], key_header: &HeaderName) -> Router<AppState> {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET])
        .allow_headers([header::AUTHORIZATION, key_header.clone()])
        .max_age(std::time::Duration::from_secs(600));
    Router::new()
        .route("/api/v1/usage", get(tenant_usage).layer(cors.clone()))
        .route("/api/v1/tiers", get(tiers).layer(cors))
}

async fn tenant_usage(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = caller::tenant(&state, &headers)?;
    // Envoy's filter attaches the key's denials it answered from its cache and has not
    // reported yet. A client that sets the header itself (bypassing Envoy) can only inflate
    // its own denied count.
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let reported = tollgate_protocol::edge_denied(&header).unwrap_or(0);
    let usage = state.decider.usage(&tenant, reported).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(usage)).into_response())
}

/// `GET /admin/v1/tenants/{id}/usage` (behind the admin token).
pub async fn admin_usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = state.tenants.get(&id).ok_or(ApiError::TenantNotFound)?;
    let usage = state.decider.usage(&tenant, 0).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(usage)).into_response())
}

#[derive(Debug, Serialize)]
pub struct TenantSummary {
    #[serde(flatten)]
    tenant: Tenant,
    used: u32,
    limit: u32,
}

/// `GET /admin/v1/tenants` (behind the admin token): every tenant with its current use, one
/// store round trip per tenant.
pub async fn list_tenants(
    State(state): State<AppState>,
) -> Result<Json<Vec<TenantSummary>>, ApiError> {
    let mut summaries = Vec::new();
    for tenant in state.tenants.list() {
        let usage = state.decider.usage(&tenant, 0).await?;
        summaries.push(TenantSummary {
            tenant,
            used: usage.used,
            limit: usage.limit,
        });
    }
    Ok(Json(summaries))
}
