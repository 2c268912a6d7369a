//! The tenant calling a public endpoint, known by its own API key, read by the same rules as
//! the filter (shared from the protocol crate) from the same header (`TOLLGATE_API_KEY_HEADER`,
//! like the filter's `api_key.header`) or `Authorization: Bearer`. The usage endpoint also
//! takes a usage token ([`super::usage_tokens`]) in their place; no other endpoint does.

use axum::http::{HeaderMap, HeaderValue};
use tollgate_protocol::api_key_extraction;

use super::AppState;
use super::error::ApiError;
use super::usage_tokens::{TokenError, UsageTokens};
use crate::tenants::Tenant;

/// The tenant whose working key the request carries; otherwise 401 with the filter's code
/// (`missing_api_key`, `malformed_api_key`) or `invalid_api_key` for a key nobody has (a
/// usage token included: it is nobody's key).
pub async fn tenant(state: &AppState, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    let key = credential(state, headers)?;
    state
        .tenants
        .tenant_by_key(&state.keys.hash(key), state.clock.now_secs())
        .await?
        .ok_or(ApiError::InvalidApiKey)
}

/// As [`tenant`], with the id of the key the request carries (what a usage token names).
pub async fn tenant_and_key_id(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Tenant, String), ApiError> {
    let key = credential(state, headers)?;
    let (hash, now) = (state.keys.hash(key), state.clock.now_secs());
    let record = state
        .tenants
        .record_by_key(&hash, now)
        .await?
        .ok_or(ApiError::InvalidApiKey)?;
    let key_id = record
        .working_key_id(&hash, now)
        .ok_or(ApiError::InvalidApiKey)?
        .to_owned();
    Ok((record.tenant.clone(), key_id))
}

/// The tenant whose usage the request may read: by its API key, as [`tenant`], or by a usage
/// token (401 `invalid_usage_token` or `usage_token_expired`, also once the key that minted
/// it no longer works; 403 `tenant_suspended` while its tenant is suspended).
pub async fn usage_reader(state: &AppState, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    let credential = credential(state, headers)?;
    if !UsageTokens::is_token(credential) {
        return tenant(state, headers).await;
    }
    let now = state.clock.now_secs();
    let claims = state
        .usage_tokens
        .verify(credential, now)
        .map_err(ApiError::UsageToken)?;
    let invalid = ApiError::UsageToken(TokenError::Invalid);
    let record = state.tenants.record(claims.tenant).await?.ok_or(invalid)?;
    if !record.key_works(claims.key_id, now) {
        return Err(ApiError::UsageToken(TokenError::Invalid));
    }
    if record.tenant.suspended {
        return Err(ApiError::TenantSuspended);
    }
    Ok(record.tenant)
}

fn credential<'h>(state: &AppState, headers: &'h HeaderMap) -> Result<&'h str, ApiError> {
    let bytes = |name| headers.get(name).map(HeaderValue::as_bytes);
    api_key_extraction::extract(bytes(state.api_key_header.as_str()), bytes("authorization"))
        .map_err(ApiError::ApiKey)
}
