//! Usage: what a tenant has spent, read from the same window the decisions use, so it is
//! exact. `GET /api/v1/usage` on the public listener (authenticated by the tenant's own API
//! key, not counted against its quota, CORS for configured dashboard origins), and the same
//! shape for operators on the admin API.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::AppState;
use crate::caller;
use crate::error::ApiError;
use crate::tenants::Tenant;
use crate::window::{StoreError, WindowStore};

#[derive(Debug, Serialize)]
pub struct Usage {
    pub tenant_id: String,
    pub tier: String,
    pub suspended: bool,
    /// The tier is in shadow mode: `denied` counts requests that would have been refused
    /// and were let through.
    pub shadow: bool,
    pub limit: u32,
    pub window_seconds: u32,
    /// Units admitted in the current rolling window.
    pub used: u32,
    pub remaining: u32,
    /// Seconds until the oldest admitted unit leaves the window (rounded up).
    pub reset_seconds: u64,
    /// Requests the control-plane denied in the current window.
    pub denied: u64,
    pub month_to_date: u64,
    /// The tier's monthly quota, if it has one.
    pub monthly_limit: Option<u64>,
    pub history: Vec<Minute>,
}

#[derive(Debug, Serialize)]
pub struct Minute {
    /// Start of the minute, Unix seconds.
    pub start: u64,
    pub admitted: u64,
    pub denied: u64,
}

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
    let usage = usage_of(&state, &tenant, reported).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(usage)).into_response())
}

/// `GET /admin/v1/tenants/{id}/usage` (behind the admin token).
pub async fn admin_usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = state.directory.get(&id).ok_or(ApiError::TenantNotFound)?;
    let usage = usage_of(&state, &tenant, 0).await?;
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
    for tenant in state.directory.list() {
        let usage = usage_of(&state, &tenant, 0).await?;
        summaries.push(TenantSummary {
            tenant,
            used: usage.used,
            limit: usage.limit,
        });
    }
    Ok(Json(summaries))
}

/// The tenant's usage, after counting `reported_denials` the filter reported.
pub async fn usage_of(
    state: &AppState,
    tenant: &Tenant,
    reported_denials: u64,
) -> Result<Usage, ApiError> {
    let tier = state
        .tier_in_force(&tenant.tier, tenant.past_due_since())
        .ok_or_else(|| {
            ApiError::Store(StoreError::Unavailable(format!(
                "tenant {} is on tier {}, which the tier table does not define",
                tenant.id, tenant.tier
            )))
        })?;
    let limit = tier.quota();
    let window = state
        .windows
        .usage(&tenant.id, limit, reported_denials)
        .await?;
    Ok(Usage {
        tenant_id: tenant.id.to_string(),
        tier: tier.name.to_string(),
        suspended: tenant.suspended,
        shadow: tier.shadow || state.shadow_all,
        limit: tier.limit,
        window_seconds: tier.window_seconds(),
        used: window.used,
        remaining: tier.limit.saturating_sub(window.used),
        reset_seconds: window.reset_ms.div_ceil(1000),
        denied: window.denied,
        month_to_date: window.month_to_date,
        monthly_limit: tier.monthly_limit,
        history: window
            .history
            .iter()
            .map(|m| Minute {
                start: m.minute_start_ms / 1000,
                admitted: m.admitted,
                denied: m.denied,
            })
            .collect(),
    })
}
