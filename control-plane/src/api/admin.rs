//! The admin API on the internal listener: tenants, their keys and their billing link (the
//! billing handlers live in [`super::billing`]).
//!
//! Every route needs `Authorization: Bearer <TOLLGATE_ADMIN_TOKEN>`. A created tenant's API key
//! is in the 201 response and nowhere else: it is stored only as a keyed hash.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{ApiError, Problem};
use super::{AppState, admin_api_keys as keys, billing, usage};
use crate::tenants::{Tenant, TenantChange};
use crate::tiers::TierName;

/// Admin request bodies are small; anything larger is refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/admin/v1/tenants",
            post(create_tenant).get(usage::list_tenants),
        )
        .route(
            "/admin/v1/tenants/{id}",
            get(get_tenant).patch(update_tenant),
        )
        .route("/admin/v1/tenants/{id}/usage", get(usage::admin_usage))
        .route(
            "/admin/v1/tenants/{id}/keys",
            get(keys::list).post(keys::issue),
        )
        .route("/admin/v1/tenants/{id}/keys/{key_id}", delete(keys::revoke))
        .route(
            "/admin/v1/tenants/{id}/keys/{key_id}/rotate",
            post(keys::rotate),
        )
        .route("/admin/v1/tenants/{id}/billing", delete(billing::unlink))
        .route(
            "/admin/v1/tenants/{id}/billing/sync",
            post(billing::sync_tenant),
        )
        .route("/admin/v1/billing/sync", post(billing::sync_all))
        .route_layer(axum::middleware::from_fn_with_state(state, require_admin))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// JSON body whose rejections answer as [`ApiError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
struct Body<T>(T);

async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compare digests, in constant time, so neither the content nor the length of the token
    // leaks through timing.
    let authorized = presented.is_some_and(|token| {
        let expected = Sha256::digest(state.admin_token.expose().as_bytes());
        Sha256::digest(token.as_bytes()).ct_eq(&expected).into()
    });
    if authorized {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1 to 128 characters (trimmed).
    #[schema(example = "Acme")]
    name: String,
    /// A tier of the table in force; default: the table's default tier.
    #[schema(example = "standard")]
    tier: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// A tier of the table in force.
    tier: Option<String>,
    /// Suspended tenants are refused at the edge (403).
    suspended: Option<bool>,
}

/// A created tenant, with its first API key: shown this once, stored only as a keyed hash.
/// Not `Debug`: it holds the key.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedTenant {
    #[serde(flatten)]
    tenant: Tenant,
    /// `tg_` and 48 hex digits.
    api_key: String,
    key_id: String,
}

/// Answers of operations on one tenant that may not find it.
const NO_TENANT: &str = "No tenant has this id (`tenant_not_found`).";

/// `POST /admin/v1/tenants`: a tenant and its first API key.
#[utoipa::path(
    post,
    path = "/admin/v1/tenants",
    tag = "tenants",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "The tenant, with its API key (shown once).", body = CreatedTenant),
        (status = 400, description = "The body is not JSON (`invalid_json`).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 16 KiB (`body_too_large`).", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown or missing fields (`invalid_body`), a name out of bounds (`invalid_field`), an unknown tier (`unknown_tier`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant store did not answer; nothing was created (`store_unavailable`).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn create_tenant(
    State(state): State<AppState>,
    Body(body): Body<CreateTenant>,
) -> Result<impl IntoResponse, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(ApiError::InvalidField("name must be 1 to 128 characters"));
    }
    let tier = match body.tier {
        Some(tier) => known_tier(&state, tier)?,
        None => state.tiers.current().default_tier().name.clone(),
    };
    let now = state.clock.now_secs();
    let (api_key, stored_key) = state.keys.mint(now)?;
    let key_id = stored_key.id.clone();
    let tenant = Tenant {
        id: Tenant::mint_id()?,
        name: name.to_owned(),
        tier,
        suspended: false,
        created_at: now,
        subscription: None,
    };
    state.tenants.create(tenant.clone(), stored_key).await?;
    tracing::info!(tenant = %tenant.id, tier = %tenant.tier, "tenant created");
    let body = CreatedTenant {
        tenant,
        api_key: api_key.expose().to_owned(),
        key_id,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// `GET /admin/v1/tenants/{id}`: the tenant (never its keys).
#[utoipa::path(
    get,
    path = "/admin/v1/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id")),
    responses(
        (status = 200, description = "The tenant.", body = Tenant),
        (status = 404, description = NO_TENANT, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant store did not answer (`store_unavailable`).", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get_tenant(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    state
        .tenants
        .get(&id)
        .await?
        .map(Json)
        .ok_or(ApiError::TenantNotFound)
}

/// `PATCH /admin/v1/tenants/{id}`: a new tier, or suspended / resumed.
#[utoipa::path(
    patch,
    path = "/admin/v1/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body = UpdateTenant,
    responses(
        (status = 200, description = "The tenant as changed.", body = Tenant),
        (status = 400, description = "The body is not JSON (`invalid_json`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = NO_TENANT, body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 16 KiB (`body_too_large`).", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown fields (`invalid_body`) or an unknown tier (`unknown_tier`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant store did not answer; nothing was changed (`store_unavailable`).", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn update_tenant(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<UpdateTenant>,
) -> Result<Json<Tenant>, ApiError> {
    let change = TenantChange {
        tier: body.tier.map(|tier| known_tier(&state, tier)).transpose()?,
        suspended: body.suspended,
    };
    let tenant = state
        .tenants
        .update(&id, &change)
        .await?
        .ok_or(ApiError::TenantNotFound)?;
    tracing::info!(tenant = %tenant.id, tier = %tenant.tier, suspended = tenant.suspended, "tenant updated");
    Ok(Json(tenant))
}

fn known_tier(state: &AppState, tier: String) -> Result<TierName, ApiError> {
    match state.tiers.current().get(&tier) {
        Some(known) => Ok(known.name.clone()),
        None => Err(ApiError::UnknownTier(tier)),
    }
}
