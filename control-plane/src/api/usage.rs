//! Usage and tiers as tenants and operators read them: `GET /api/v1/usage` on the public
//! listener (authenticated by the tenant's own API key, not counted against its quota, CORS
//! for configured dashboard origins), `GET /api/v1/tiers`, and the same usage for operators
//! on the admin API, one tenant or a page of them. The figures come from
//! [`crate::decision::usage`].

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
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
    let tenant = caller::tenant(&state, &headers).await?;
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
    let tenant = state
        .tenants
        .get(&id)
        .await?
        .ok_or(ApiError::TenantNotFound)?;
    let usage = state.decider.usage(&tenant, 0).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(usage)).into_response())
}

/// Tenants per page of the admin list unless asked otherwise, and at most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

#[derive(Debug, Serialize)]
pub struct TenantSummary {
    #[serde(flatten)]
    tenant: Tenant,
    used: u32,
    limit: u32,
}

#[derive(Debug, Serialize)]
pub struct TenantPage {
    tenants: Vec<TenantSummary>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /admin/v1/tenants?limit=&cursor=` (behind the admin token): a page of tenants in id
/// order (`limit`, 1 to 1000, default 100), each with its current use, read in one batch: the
/// page's usage reads go out together (over Redis, pipelined on one connection).
pub async fn list_tenants(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TenantPage>, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::InvalidField("the query takes limit (1 to 1000) and cursor, nothing else")
    })?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidField("limit must be 1 to 1000"));
    }
    let page = state.tenants.list(query.cursor.as_deref(), limit).await?;
    let usages = futures_util::future::join_all(
        page.tenants
            .iter()
            .map(|tenant| state.decider.usage(tenant, 0)),
    )
    .await;
    let mut tenants = Vec::with_capacity(page.tenants.len());
    for (tenant, usage) in page.tenants.into_iter().zip(usages) {
        let usage = usage?;
        tenants.push(TenantSummary {
            tenant,
            used: usage.used,
            limit: usage.limit,
        });
    }
    Ok(Json(TenantPage {
        tenants,
        next_cursor: page.next_cursor,
    }))
}
