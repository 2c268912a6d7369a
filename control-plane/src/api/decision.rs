//! `POST /v1/decision` on the internal listener, the hot path: the callout's headers in, the
//! [`Answer`] out as a status and headers (see `tollgate_protocol`); no JSON, no body. The
//! decision itself is [`crate::decision::Decider::decide`].
//!
//! The filter forwards the client request's `traceparent` and `x-request-id`; each decision
//! is logged at debug level with them (`RUST_LOG=debug`), so one slow or refused request can
//! be followed from Envoy's access log to the control-plane. Both are checked here again:
//! the callout's headers are input like any other.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tollgate_protocol::{Answer, DecisionRequest, trace_context};

use super::AppState;
use crate::log_limit;

pub async fn decide(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let metrics = &state.metrics;
    metrics.decision_requests.inc();
    let started = std::time::Instant::now();
    let traceparent = trace_header(&headers, trace_context::TRACEPARENT);
    let request_id = trace_header(&headers, trace_context::REQUEST_ID);
    let request = DecisionRequest::parse(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            if let Some(suppressed) = log_limit::admit("malformed_decision_request") {
                tracing::warn!(%error, suppressed, "malformed decision request");
            }
            metrics.count_decision("", "bad_request");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    let answer = state.decider.decide(&request).await;
    metrics
        .decision_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    match answer {
        Ok(answer) => {
            let (tier, outcome) = (tier_of(&answer), outcome(&answer));
            metrics.count_decision(tier, outcome);
            // The key is never logged; the route, cost and outcome are what a trace needs.
            tracing::debug!(
                traceparent,
                request_id,
                route = request.route,
                cost = request.cost,
                tier,
                outcome,
                "decision"
            );
            encode(&answer)
        }
        Err(error) => {
            if let Some(suppressed) = log_limit::admit("no_decision") {
                tracing::error!(%error, suppressed, traceparent, request_id, "no decision");
            }
            metrics.count_decision("", "unavailable");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// A trace header's value if present and well-formed, else `None` (absent and malformed look
/// the same in the log: a malformed one is not worth a line of its own on the hot path).
fn trace_header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    trace_context::forwardable(name, headers.get(name)?.as_bytes())
}

fn tier_of(answer: &Answer) -> &str {
    match answer {
        Answer::Allow { quota, .. }
        | Answer::Deny { quota, .. }
        | Answer::ShadowDeny { quota, .. } => &quota.policy,
        Answer::UnknownKey | Answer::Suspended { .. } => "",
    }
}

fn outcome(answer: &Answer) -> &'static str {
    match answer {
        Answer::Allow { .. } => "allow",
        Answer::Deny { .. } => "deny",
        Answer::ShadowDeny { .. } => "shadow_deny",
        Answer::UnknownKey => "unknown_key",
        Answer::Suspended { .. } => "suspended",
    }
}

fn encode(answer: &Answer) -> Response {
    let mut headers = HeaderMap::with_capacity(8);
    for (name, value) in answer.headers() {
        // Tenant ids, tier names and numbers are visible ASCII by construction.
        match HeaderValue::try_from(value) {
            Ok(value) => {
                headers.insert(HeaderName::from_static(name), value);
            }
            Err(_) => {
                tracing::error!(header = name, "unencodable answer header");
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        }
    }
    let status = StatusCode::from_u16(answer.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (status, headers).into_response()
}
