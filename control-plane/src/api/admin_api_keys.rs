//! Key lifecycle on the admin API: several keys per tenant, issue, rotate with a grace period,
//! revoke, list. Keys are shown once, when issued; lists show ids, prefixes and dates only.
//! A revoked key stops working at once at every replica (the change is published like any
//! other) and at the edge, where it is never admitted again; an Envoy that cached a denial
//! of it answers that 429 for up to the deny cache's `max_ttl` before the 401.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, Problem};
use crate::tenants::StoredKey;

/// Longest grace period a rotated key may keep working: 30 days.
const MAX_GRACE_SECONDS: u64 = 30 * 86_400;
const DEFAULT_GRACE_SECONDS: u64 = 86_400;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub prefix: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Set on a rotated key: it stops working then (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// A key just issued: shown this once, stored only as a keyed hash. Not `Debug`: it holds
/// the key.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    key: KeyInfo,
    /// `tg_` and 48 hex digits.
    api_key: String,
}

impl From<&StoredKey> for KeyInfo {
    fn from(key: &StoredKey) -> Self {
        Self {
            id: key.id.clone(),
            prefix: key.prefix.clone(),
            created_at: key.created_at,
            expires_at: key.expires_at,
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// How long the old key keeps working: at most 2592000 (30 days), default 86400.
    #[schema(maximum = 2_592_000)]
    grace_seconds: Option<u64>,
}

/// `GET /admin/v1/tenants/{id}/keys`: the keys that still work.
#[utoipa::path(
    get,
    path = "/admin/v1/tenants/{id}/keys",
    tag = "keys",
    params(("id" = String, Path, description = "The tenant's id")),
    responses(
        (status = 200, description = "The tenant's working keys (never the keys themselves).", body = Vec<KeyInfo>),
        (status = 404, description = "No tenant has this id (`tenant_not_found`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant store did not answer (`store_unavailable`).", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    let record = state
        .tenants
        .record(&id)
        .await?
        .ok_or(ApiError::TenantNotFound)?;
    let now = state.clock.now_secs();
    Ok(Json(
        record
            .keys
            .iter()
            .filter(|k| k.expires_at.is_none_or(|at| at > now))
            .map(KeyInfo::from)
            .collect(),
    ))
}

/// `POST /admin/v1/tenants/{id}/keys`: one more key for the tenant.
#[utoipa::path(
    post,
    path = "/admin/v1/tenants/{id}/keys",
    tag = "keys",
    params(("id" = String, Path, description = "The tenant's id")),
    responses(
        (status = 201, description = "The new key (shown once).", body = IssuedKey),
        (status = 404, description = "No tenant has this id (`tenant_not_found`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant store did not answer (`store_unavailable`).", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn issue(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    add_key(&state, &id, None).await
}

/// `POST /admin/v1/tenants/{id}/keys/{key_id}/rotate`: a new key; the old one keeps working
/// for the grace period (default one day).
#[utoipa::path(
    post,
    path = "/admin/v1/tenants/{id}/keys/{key_id}/rotate",
    tag = "keys",
    params(
        ("id" = String, Path, description = "The tenant's id"),
        ("key_id" = String, Path, description = "The key to retire"),
    ),
    request_body(content = Option<Rotation>, description = "Optional: no body means the default grace period."),
    responses(
        (status = 201, description = "The new key (shown once).", body = IssuedKey),
        (status = 404, description = "No tenant has this id (`tenant_not_found`), or it has no working key with this id (`key_not_found`).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 16 KiB (`body_too_large`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is not `{\"grace_seconds\": N}` with N at most 30 days (`invalid_field`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant store did not answer (`store_unavailable`).", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn rotate(
    State(state): State<AppState>,
    Path((id, key_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: no body means the default grace period.
    let rotation: Rotation = if body.is_empty() {
        Rotation::default()
    } else {
        serde_json::from_slice(&body).map_err(|_| {
            ApiError::InvalidField("the body must be {\"grace_seconds\": N} or empty")
        })?
    };
    let grace = rotation.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::InvalidField(
            "grace_seconds must be at most 2592000 (30 days)",
        ));
    }
    add_key(&state, &id, Some((key_id, grace))).await
}

/// `DELETE /admin/v1/tenants/{id}/keys/{key_id}`: the key stops working now.
#[utoipa::path(
    delete,
    path = "/admin/v1/tenants/{id}/keys/{key_id}",
    tag = "keys",
    params(
        ("id" = String, Path, description = "The tenant's id"),
        ("key_id" = String, Path, description = "The key to revoke"),
    ),
    responses(
        (status = 204, description = "The key no longer works."),
        (status = 404, description = "No tenant has this id (`tenant_not_found`), or it has no key with this id (`key_not_found`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant store did not answer (`store_unavailable`).", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .tenants
        .modify(&id, |record| {
            let before = record.keys.len();
            record.keys.retain(|k| k.id != key_id);
            if record.keys.len() < before {
                Ok(())
            } else {
                Err(ApiError::KeyNotFound)
            }
        })
        .await?
        .ok_or(ApiError::TenantNotFound)??;
    tracing::info!(tenant = %id, key = %key_id, "key revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Mints a key for the tenant; with `retiring`, also sets that key to expire after a grace
/// period (a rotation). Both land in one write.
async fn add_key(
    state: &AppState,
    id: &str,
    retiring: Option<(String, u64)>,
) -> Result<Response, ApiError> {
    let now = state.clock.now_secs();
    let (api_key, stored) = state.keys.mint(now)?;
    let info = KeyInfo::from(&stored);
    state
        .tenants
        .modify(id, |record| {
            if let Some((old_id, grace)) = &retiring {
                let old = record
                    .keys
                    .iter_mut()
                    .find(|k| &k.id == old_id && k.expires_at.is_none_or(|at| at > now))
                    .ok_or(ApiError::KeyNotFound)?;
                old.expires_at = Some(now + grace);
            }
            // Keys past their grace period are dropped as the record is rewritten anyway.
            record
                .keys
                .retain(|k| k.expires_at.is_none_or(|at| at > now));
            record.keys.push(stored.clone());
            Ok::<_, ApiError>(())
        })
        .await?
        .ok_or(ApiError::TenantNotFound)??;
    tracing::info!(tenant = %id, key = %info.id, rotated = retiring.is_some(), "key issued");
    let body = IssuedKey {
        key: info,
        api_key: api_key.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
