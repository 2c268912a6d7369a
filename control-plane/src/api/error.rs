//! Errors of the JSON APIs (admin, usage, billing) and how they answer.
//!
//! Every error answers an RFC 9457 problem document with a stable `code`. Internal causes
//! are logged here, once, and never sent to the client.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tollgate_protocol::api_key_extraction::KeyError;

use super::budgets::Exhausted;
use super::usage_tokens::TokenError;

use crate::billing::{BillingError, StripeApiError};
use crate::decision::DecisionError;
use crate::storage::StoreError;
use crate::tenants::RandomError;

/// The body of every error answer: an RFC 9457 problem document (`application/problem+json`)
/// with a stable `code`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: `code` says which problem it is.
    #[schema(example = "about:blank")]
    pub r#type: &'static str,
    /// The HTTP status's reason phrase.
    #[schema(example = "Unauthorized")]
    pub title: &'static str,
    /// The HTTP status code.
    #[schema(example = 401, minimum = 400, maximum = 599)]
    pub status: u16,
    /// Stable and machine-readable, e.g. `invalid_api_key`, `rate_limited`, `tenant_not_found`.
    #[schema(example = "invalid_api_key")]
    pub code: &'static str,
    /// For humans; may change between versions.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no admin token, or the wrong one.
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    /// 401: no usable API key (missing or malformed), as the filter would say.
    #[error("{0}")]
    ApiKey(KeyError),
    /// 401: the API key is well-formed but no tenant's working key.
    #[error("the API key is not valid")]
    InvalidApiKey,
    /// 401: a usage token that is forged, tampered with, or expired.
    #[error("{0}")]
    UsageToken(TokenError),
    /// 400: a webhook whose signature is missing, wrong or stale.
    #[error("the Stripe-Signature does not verify")]
    InvalidSignature,
    /// 400: an authentic webhook delivery whose body is not a JSON event.
    #[error("the event is not JSON")]
    MalformedEvent,
    /// 503: no Stripe secrets configured.
    #[error("billing is not configured on this control-plane")]
    BillingNotConfigured,
    /// 422: the tier has no Stripe price.
    #[error("tier {0:?} cannot be bought")]
    TierNotForSale(String),
    /// 409: checkout while a subscription is live.
    #[error("the tenant already has a subscription; change or cancel it in the billing portal")]
    AlreadySubscribed,
    /// 409: the portal before any checkout.
    #[error("the tenant has no billing account yet; subscribe through checkout first")]
    NoBillingAccount,
    /// 502 or 503: Stripe refused or did not answer. Its message may name configuration
    /// (prices, portal settings), so the tenant gets a generic detail and the log the cause.
    #[error("the payment provider could not create the session; retry shortly")]
    Stripe(#[from] StripeApiError),
    /// 403: the tenant is suspended (it may still manage its billing in the portal).
    #[error("the tenant is suspended")]
    TenantSuspended,
    /// 404
    #[error("no tenant has this id")]
    TenantNotFound,
    /// 404
    #[error("the tenant has no working key with this id")]
    KeyNotFound,
    /// 422
    #[error("unknown tier {0:?}")]
    UnknownTier(String),
    /// 422: a field is out of its range.
    #[error("{0}")]
    InvalidField(&'static str),
    /// 400, 413, 415 or 422: the body is not the JSON this endpoint takes.
    #[error("{0}")]
    Body(#[from] JsonRejection),
    /// 413: the raw body is longer than the endpoint takes.
    #[error("the body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// 400: the raw body could not be read to its end.
    #[error("the body could not be read")]
    BodyUnreadable,
    /// 408: the body did not arrive in time.
    #[error("the body did not arrive in time")]
    BodyTimeout,
    /// 429: the caller's budget on this endpoint is spent.
    #[error("the {} budget of {} requests per second is spent; retry shortly", .0.budget.name, .0.budget.per_second)]
    OverBudget(Exhausted),
    /// 503: too much is in flight on this listener; shed before any work.
    #[error("the server is busy; retry shortly")]
    Overloaded,
    /// 404
    #[error("no resource at this path")]
    NotFound,
    /// 405
    #[error("the resource does not take this method")]
    MethodNotAllowed,
    /// 500: a handler panicked (a bug); the panic is logged.
    #[error("internal error")]
    Panic,
    /// 503: the durable store of tenants did not answer; nothing was changed.
    #[error("the tenant store is unavailable; retry shortly")]
    TenantStore(#[from] StoreError),
    /// 503: the window store did not answer.
    #[error("the usage store is unavailable; retry shortly")]
    WindowStore(StoreError),
    /// 500: the tenant's tier is not in the tier table.
    #[error("internal error")]
    MissingTier(DecisionError),
    /// 500: the OS could not supply randomness for a key.
    #[error("internal error")]
    Random(#[from] RandomError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::ApiKey(error) => (StatusCode::UNAUTHORIZED, error.code()),
            ApiError::InvalidApiKey => (StatusCode::UNAUTHORIZED, "invalid_api_key"),
            ApiError::UsageToken(TokenError::Invalid) => {
                (StatusCode::UNAUTHORIZED, "invalid_usage_token")
            }
            ApiError::UsageToken(TokenError::Expired) => {
                (StatusCode::UNAUTHORIZED, "usage_token_expired")
            }
            ApiError::TenantNotFound => (StatusCode::NOT_FOUND, "tenant_not_found"),
            ApiError::TenantSuspended => (StatusCode::FORBIDDEN, "tenant_suspended"),
            ApiError::KeyNotFound => (StatusCode::NOT_FOUND, "key_not_found"),
            ApiError::InvalidSignature => (StatusCode::BAD_REQUEST, "invalid_signature"),
            ApiError::MalformedEvent => (StatusCode::BAD_REQUEST, "invalid_event"),
            ApiError::BillingNotConfigured => {
                (StatusCode::SERVICE_UNAVAILABLE, "billing_not_configured")
            }
            ApiError::UnknownTier(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_tier"),
            ApiError::TierNotForSale(_) => (StatusCode::UNPROCESSABLE_ENTITY, "tier_not_for_sale"),
            ApiError::AlreadySubscribed => (StatusCode::CONFLICT, "already_subscribed"),
            ApiError::NoBillingAccount => (StatusCode::CONFLICT, "no_billing_account"),
            ApiError::Stripe(StripeApiError::Refused { .. }) => {
                (StatusCode::BAD_GATEWAY, "stripe_refused")
            }
            ApiError::Stripe(StripeApiError::NotFound(_)) => {
                (StatusCode::BAD_GATEWAY, "stripe_refused")
            }
            ApiError::Stripe(
                StripeApiError::Unavailable(_) | StripeApiError::RateLimited { .. },
            ) => (StatusCode::SERVICE_UNAVAILABLE, "stripe_unavailable"),
            ApiError::Stripe(StripeApiError::Config(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
            ApiError::InvalidField(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            ApiError::Body(rejection) => {
                let status = rejection.status();
                let code = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                    StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
                    _ => "invalid_json",
                };
                (status, code)
            }
            ApiError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::BodyUnreadable => (StatusCode::BAD_REQUEST, "invalid_body"),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ApiError::OverBudget(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Panic => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            ApiError::TenantStore(_) | ApiError::WindowStore(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
            ApiError::MissingTier(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            ApiError::Random(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl From<DecisionError> for ApiError {
    fn from(error: DecisionError) -> Self {
        match error {
            DecisionError::Store(store) => ApiError::WindowStore(store),
            missing @ DecisionError::MissingTier { .. } => ApiError::MissingTier(missing),
        }
    }
}

impl From<BillingError> for ApiError {
    fn from(error: BillingError) -> Self {
        match error {
            BillingError::NotConfigured => ApiError::BillingNotConfigured,
            BillingError::InvalidSignature(_) => ApiError::InvalidSignature,
            BillingError::MalformedEvent => ApiError::MalformedEvent,
            BillingError::UnknownTier(tier) => ApiError::UnknownTier(tier),
            BillingError::TierNotForSale(tier) => ApiError::TierNotForSale(tier),
            BillingError::AlreadySubscribed => ApiError::AlreadySubscribed,
            BillingError::NoBillingAccount => ApiError::NoBillingAccount,
            BillingError::Stripe(stripe) => ApiError::Stripe(stripe),
            BillingError::Store(store) => ApiError::TenantStore(store),
            BillingError::TenantNotFound => ApiError::TenantNotFound,
            BillingError::ShuttingDown => ApiError::Overloaded,
        }
    }
}

impl ApiError {
    /// Whether retrying the same request later may succeed (a store outage, not a bug).
    fn is_transient(&self) -> bool {
        match self {
            ApiError::TenantStore(error) | ApiError::WindowStore(error) => error.is_transient(),
            _ => false,
        }
    }
}

/// The stable `code` of a problem answer, kept on the response for middleware that acts on
/// what a handler answered (admission charges a forged webhook's sender more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemCode(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // Shedding is the intended answer to overload, not a failure to investigate.
        if status.is_server_error()
            && !matches!(self, ApiError::Overloaded)
            && let Some(suppressed) = crate::log_limit::admit(code)
        {
            tracing::error!(error = ?self, suppressed, "request failed");
        }
        let problem = Problem {
            r#type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            code,
            detail: self.to_string(),
        };
        let mut response = (status, Json(problem)).into_response();
        response.extensions_mut().insert(ProblemCode(code));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        let headers = response.headers_mut();
        let realm = match &self {
            ApiError::Unauthorized => Some("Bearer realm=\"tollgate-admin\""),
            ApiError::InvalidApiKey | ApiError::ApiKey(_) => Some("Bearer realm=\"tollgate\""),
            ApiError::UsageToken(_) => Some("Bearer realm=\"tollgate\", error=\"invalid_token\""),
            _ => None,
        };
        if let Some(realm) = realm {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(realm));
        }
        let retry_after_ms = match &self {
            ApiError::OverBudget(exhausted) => {
                // Structured fields (RFC 9651) like the filter's: the budget is a policy of
                // `per_second` requests a second, none left.
                let Exhausted { budget, .. } = exhausted;
                let policy = format!("\"{}\";q={};w=1", budget.name, budget.per_second);
                let remaining = format!("\"{}\";r=0;t=1", budget.name);
                for (name, value) in [("ratelimit-policy", policy), ("ratelimit", remaining)] {
                    if let Ok(value) = HeaderValue::try_from(value) {
                        headers.insert(name, value);
                    }
                }
                Some(exhausted.retry_after_ms)
            }
            ApiError::Overloaded => Some(1000),
            ApiError::Stripe(StripeApiError::RateLimited { retry_after }) => {
                Some(retry_after.map_or(1000, |after| {
                    u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
                }))
            }
            error @ (ApiError::TenantStore(_) | ApiError::WindowStore(_)) => {
                Some(1000).filter(|_| error.is_transient())
            }
            _ => None,
        };
        if let Some(ms) = retry_after_ms {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(ms.div_ceil(1000).max(1)),
            );
        }
        response
    }
}
