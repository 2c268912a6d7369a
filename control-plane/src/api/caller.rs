//! The tenant calling a public endpoint, known by its own API key, read by the same rules as
//! the filter (shared from the protocol crate) from the same header (`TOLLGATE_API_KEY_HEADER`,
//! like the filter's `api_key.header`) or `Authorization: Bearer`.

use axum::http::{HeaderMap, HeaderValue};
use tollgate_protocol::api_key_extraction;

use super::AppState;
use super::error::ApiError;
use crate::tenants::Tenant;

/// The tenant whose working key the request carries; otherwise 401 with the filter's code
/// (`missing_api_key`, `malformed_api_key`) or `invalid_api_key` for a key nobody has.
pub async fn tenant(state: &AppState, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    let bytes = |name| headers.get(name).map(HeaderValue::as_bytes);
    let key =
        api_key_extraction::extract(bytes(state.api_key_header.as_str()), bytes("authorization"))
            .map_err(ApiError::ApiKey)?;
    state
        .tenants
        .tenant_by_key(&state.keys.hash(key), state.clock.now_secs())
        .await?
        .ok_or(ApiError::InvalidApiKey)
}
