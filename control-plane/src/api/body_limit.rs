//! Request bodies on the public listener: read only by the routes that take one (Stripe's
//! webhook, checkout, portal), at most [`MAX_BODY_READERS`] at a time, each within
//! [`BODY_READ_TIMEOUT`] and [`PUBLIC_BODY_LIMIT`] bytes. Every other public route never reads
//! its body. So a thousand stalled uploads cost a few connections' buffers, not a megabyte
//! each.
//!
//! A longer body is still read, and dropped, up to [`DRAIN_LIMIT`] before the 413: a server
//! that answers and closes with request bytes unread resets the connection, and Envoy, still
//! sending them, would answer 503 instead of forwarding the 413.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use tokio::sync::Semaphore;

use super::error::ApiError;

/// Larger than any event Stripe sends a subscription integration, and than any request the
/// public API takes.
pub const PUBLIC_BODY_LIMIT: usize = 1024 * 1024;

const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// The most a reader reserves before the bytes arrive: more than a Stripe event usually takes.
const RESERVED_BODY_BYTES: usize = 64 * 1024;

/// Bodies being read at once, so the memory held by bodies in flight stays under
/// `MAX_BODY_READERS × PUBLIC_BODY_LIMIT`. A request finding them all busy waits up to
/// [`READER_WAIT`] (a burst of Stripe's retries passes), then answers 503.
pub const MAX_BODY_READERS: usize = 16;
pub const READER_WAIT: Duration = Duration::from_secs(1);

/// The longest a body may take to arrive whole.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The readers' permits, shared by every body route of a listener.
#[derive(Clone)]
pub struct BodyReaders(Arc<Semaphore>);

impl Default for BodyReaders {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(MAX_BODY_READERS)))
    }
}

/// Middleware for body routes: hands the handler the body read whole, or answers 413
/// `body_too_large`, 408 `body_timeout`, or 503 `overloaded`.
pub async fn read_bodies(
    State(BodyReaders(readers)): State<BodyReaders>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Ok(Ok(_permit)) = tokio::time::timeout(READER_WAIT, readers.acquire()).await else {
        return Err(ApiError::Overloaded);
    };
    let (parts, body) = request.into_parts();
    // Sized from the announced length, up to what a Stripe event needs: an upload that
    // announces a megabyte and stalls then holds what it sent, not a megabyte (attack f3
    // peaked 12 MiB higher when every reader reserved the announced length); a larger body
    // grows as its bytes arrive.
    let reserve = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0)
        .min(RESERVED_BODY_BYTES);
    let body = tokio::time::timeout(BODY_READ_TIMEOUT, read_limited(body, reserve))
        .await
        .map_err(|_| ApiError::BodyTimeout)??;
    Ok(next.run(Request::from_parts(parts, Body::from(body))).await)
}

/// The body, kept only up to [`PUBLIC_BODY_LIMIT`] bytes.
async fn read_limited(body: Body, reserve: usize) -> Result<Bytes, ApiError> {
    let mut chunks = body.into_data_stream();
    let mut kept = Vec::with_capacity(reserve);
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
