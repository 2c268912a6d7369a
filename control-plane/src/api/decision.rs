//! The decision endpoint, `POST /v1/decision` on the internal listener: the hot path.
//!
//! Headers in, status and headers out (see `tollgate_protocol`); no JSON, no body. A decision
//! is one key hash, two in-memory lookups (tenant, tier) and one window-store operation.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tollgate_protocol::{Answer, DecisionRequest, MonthlyQuota, Quota};

use crate::app::AppState;
use crate::tiers::TierName;
use crate::window::{StoreError, WindowStore};

/// Why no decision could be made. The filter sees 503 and applies its failure mode.
#[derive(Debug, thiserror::Error)]
enum DecisionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("tenant {tenant} is on tier {tier:?}, which the tier table does not define")]
    MissingTier { tenant: String, tier: TierName },
}

pub async fn decide(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state.metrics.decision_requests.inc();
    let started = std::time::Instant::now();
    let request = DecisionRequest::parse(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(%error, "malformed decision request");
            state.metrics.count_decision("", "bad_request");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    let answer = answer(&state, &request).await;
    state
        .metrics
        .decision_seconds
        .observe(started.elapsed().as_secs_f64());
    match answer {
        Ok(answer) => {
            state
                .metrics
                .count_decision(tier_of(&answer), outcome(&answer));
            encode(&answer)
        }
        Err(error) => {
            tracing::error!(%error, "no decision");
            state.metrics.count_decision("", "unavailable");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn answer(state: &AppState, request: &DecisionRequest<'_>) -> Result<Answer, DecisionError> {
    let key = state.keys.hash(request.api_key);
    let owner = state.directory.by_key(&key);
    state.metrics.count_lookup(owner.is_some());
    let Some(owner) = owner else {
        return Ok(Answer::UnknownKey);
    };
    if owner.suspended {
        return Ok(Answer::Suspended {
            tenant: owner.id.to_string(),
        });
    }
    let tier = state
        .tier_in_force(&owner.tier, owner.past_due_since)
        .ok_or_else(|| DecisionError::MissingTier {
            tenant: owner.id.to_string(),
            tier: owner.tier.clone(),
        })?;
    let limit = tier.quota();
    let cost = tier.cost(request.route, request.cost);
    let started = std::time::Instant::now();
    let decision = state
        .windows
        .decide(&owner.id, limit, cost, request.edge_denied)
        .await;
    state
        .metrics
        .store_seconds
        .observe(started.elapsed().as_secs_f64());
    let decision = decision.inspect_err(|_| {
        state.metrics.store_errors.inc();
    })?;
    let quota = Quota {
        policy: tier.name.to_string(),
        limit: tier.limit,
        window_seconds: tier.window_seconds(),
        remaining: decision.remaining,
        reset_ms: decision.reset_ms,
        monthly: tier
            .monthly_limit
            .zip(decision.month)
            .map(|(limit, month)| MonthlyQuota {
                limit,
                remaining: month.remaining,
                reset_ms: month.reset_ms,
            }),
    };
    let tenant = owner.id.to_string();
    let retry_after_ms = decision.retry_after_ms;
    Ok(if decision.admitted {
        Answer::Allow { tenant, quota }
    } else if tier.shadow || state.shadow_all {
        // Counted as denied in the window's usage, like an enforced denial, but let through.
        Answer::ShadowDeny {
            tenant,
            quota,
            retry_after_ms,
        }
    } else {
        Answer::Deny {
            tenant,
            quota,
            retry_after_ms,
        }
    })
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
