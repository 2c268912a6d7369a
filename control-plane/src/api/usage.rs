//! Usage and tiers as tenants and operators read them: `GET /api/v1/usage` on the public
//! listener (authenticated by the tenant's own API key or a usage token, not counted against
//! its quota, CORS for configured dashboard origins), `POST /api/v1/usage/tokens` (a usage
//! token for the key's tenant; see [`super::usage_tokens`]), `GET /api/v1/tiers`, and the
//! same usage for operators on the admin API, one tenant or a page of them. The figures come
//! from [`crate::decision::usage`].

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::{ApiError, Problem};
use super::{AppState, caller};
use crate::decision::usage::Usage;
use crate::tenants::Tenant;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TierInfo {
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
#[utoipa::path(
    get,
    path = "/api/v1/tiers",
    tag = "tiers",
    responses((status = 200, description = "Every tier of the table in force.", body = Vec<TierInfo>)),
)]
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

/// The usage route (also its budget's, see `admission`).
pub const USAGE_PATH: &str = "/api/v1/usage";
/// The tier table's public route.
pub const TIERS_PATH: &str = "/api/v1/tiers";

/// The tenant-facing routes, with CORS for `origins` (none: same-origin only); browsers may
/// send the key in `key_header` or `Authorization`.
pub fn public_routes(origins: &[HeaderValue], key_header: &HeaderName) -> Router<AppState> {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET])
        .allow_headers([header::AUTHORIZATION, key_header.clone()])
        .max_age(std::time::Duration::from_secs(600));
    // Minting has no CORS on purpose: it takes the API key, which belongs on the dashboard's
    // backend, not in a browser.
    Router::new()
        .route(USAGE_PATH, get(tenant_usage).layer(cors.clone()))
        .route("/api/v1/usage/tokens", post(mint_usage_token))
        .route(TIERS_PATH, get(tiers).layer(cors))
}

/// `GET /api/v1/usage`: the caller's usage in the current window, by its API key or a usage
/// token.
#[utoipa::path(
    get,
    path = "/api/v1/usage",
    tag = "usage",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The tenant's usage; `Cache-Control: no-store`.", body = Usage),
        (status = 401, description = "No usable key (`missing_api_key`, `malformed_api_key`), \
            a key nobody has (`invalid_api_key`), or a usage token that is not valid \
            (`invalid_usage_token`) or has expired (`usage_token_expired`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The usage token's tenant is suspended (`tenant_suspended`).",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn tenant_usage(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = caller::usage_reader(&state, &headers).await?;
    // Envoy's filter attaches the key's denials it answered from its cache and has not
    // reported yet. A client that sets the header itself (bypassing Envoy) can only inflate
    // its own denied count.
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let reported = tollgate_protocol::edge_denied(&header).unwrap_or(0);
    let usage = state.decider.usage(&tenant, reported).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(usage)).into_response())
}

/// A usage token and when it expires. Not `Debug`: it is a credential.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageToken {
    /// Send as `Authorization: Bearer <token>` (or in the API-key header) to
    /// `GET /api/v1/usage`; accepted nowhere else.
    #[schema(example = "tgu_tn_0123456789abcdef.key_1a2b3c4d.1767225600.4f1c…")]
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// Seconds from now.
    pub expires_in: u64,
}

/// `POST /api/v1/usage/tokens`: a short-lived, read-only token for the key's tenant, valid
/// only for `GET /api/v1/usage`, so a browser dashboard needs no API key. Minting spends the
/// tenant's usage budget.
#[utoipa::path(
    post,
    path = "/api/v1/usage/tokens",
    tag = "usage",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "A token; `Cache-Control: no-store`.", body = UsageToken),
        (status = 401, description = "No usable API key (`missing_api_key`, \
            `malformed_api_key`, `invalid_api_key`); a usage token cannot mint another.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The tenant is suspended (`tenant_suspended`).",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn mint_usage_token(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (tenant, key_id) = caller::tenant_and_key_id(&state, &headers).await?;
    if tenant.suspended {
        return Err(ApiError::TenantSuspended);
    }
    let minted = state
        .usage_tokens
        .mint(&tenant.id, &key_id, state.clock.now_secs());
    let body = UsageToken {
        token: minted.token,
        expires_at: minted.expires_at,
        expires_in: state.usage_tokens.ttl_secs(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// `GET /admin/v1/tenants/{id}/usage` (behind the admin token).
#[utoipa::path(
    get,
    path = "/admin/v1/tenants/{id}/usage",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id")),
    responses(
        (status = 200, description = "The tenant's usage (the shape of `GET /api/v1/usage`).", body = Usage),
        (status = 404, description = "No tenant has this id (`tenant_not_found`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store did not answer (`store_unavailable`).",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantSummary {
    #[serde(flatten)]
    tenant: Tenant,
    used: u32,
    limit: u32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantPage {
    tenants: Vec<TenantSummary>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Tenants per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page; none for the first.
    cursor: Option<String>,
}

/// `GET /admin/v1/tenants?limit=&cursor=` (behind the admin token): a page of tenants in id
/// order (`limit`, 1 to 1000, default 100), each with its current use, read in one batch: the
/// page's usage reads go out together (over Redis, pipelined on one connection).
#[utoipa::path(
    get,
    path = "/admin/v1/tenants",
    tag = "tenants",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of tenants in id order, each with its current use.", body = TenantPage),
        (status = 422, description = "A query parameter out of range or unknown (`invalid_field`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store did not answer (`store_unavailable`).",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
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
