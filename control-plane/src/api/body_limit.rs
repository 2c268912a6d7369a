//! The public listener's limit on request bodies (Stripe's webhooks, checkout and portal
//! requests; everything else there has none).
//!
//! A longer body is still read, and dropped, up to [`DRAIN_LIMIT`] before the 413: a server
//! that answers and closes with request bytes unread resets the connection, and Envoy, still
//! sending them, would answer 503 instead of forwarding the 413.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;

use super::error::ApiError;

/// Larger than any event Stripe sends a subscription integration, and than any request the
/// public API takes.
pub const PUBLIC_BODY_LIMIT: usize = 1024 * 1024;

const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// Middleware: hands the handler the body read whole, or answers 413 `body_too_large`.
pub async fn limit_public_bodies(request: Request, next: Next) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = read_limited(body).await?;
    Ok(next.run(Request::from_parts(parts, Body::from(body))).await)
}

/// The body, kept only up to [`PUBLIC_BODY_LIMIT`] bytes.
async fn read_limited(body: Body) -> Result<Bytes, ApiError> {
    let mut chunks = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| ApiError::BodyUnreadable)?;
        seen += chunk.len();
        if seen <= PUBLIC_BODY_LIMIT {
            kept.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > PUBLIC_BODY_LIMIT {
        return Err(ApiError::BodyTooLarge {
            limit: PUBLIC_BODY_LIMIT,
        });
    }
    Ok(Bytes::from(kept))
}
