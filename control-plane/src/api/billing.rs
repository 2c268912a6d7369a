//! `POST /api/v1/billing/checkout` and `POST /api/v1/billing/portal`: the tenant, known by
//! its own API key, is handed a Stripe-hosted page. Neither changes the tenant's tier: only
//! the webhook does, once Stripe says the subscription is paid for.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use serde::Deserialize;

use super::stripe_api::{CheckoutOrder, HostedSession, StripeApi};
use crate::app::AppState;
use crate::caller;
use crate::directory::unix_now;
use crate::error::ApiError;
use crate::tenants::{Subscription, Tenant};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// The tier to buy, by name.
    tier: String,
}

/// Answers `{"id", "url"}` of a Checkout Session for the tier's Stripe price.
pub async fn checkout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CheckoutRequest>, JsonRejection>,
) -> Result<Json<HostedSession>, ApiError> {
    let stripe = configured(&state)?;
    let tenant = caller::tenant(&state, &headers)?;
    if tenant.suspended {
        return Err(ApiError::TenantSuspended);
    }
    let Json(request) = body?;
    let tiers = state.tiers.current();
    let tier = tiers
        .get(&request.tier)
        .ok_or_else(|| ApiError::UnknownTier(request.tier.clone()))?;
    let price = tier
        .stripe_price
        .as_deref()
        .ok_or_else(|| ApiError::TierNotForSale(request.tier.clone()))?;
    // A second subscription would bill the tenant twice; plan changes and cancellations
    // belong to the portal.
    if tenant
        .subscription
        .as_ref()
        .is_some_and(Subscription::is_live)
    {
        return Err(ApiError::AlreadySubscribed);
    }
    let order = CheckoutOrder {
        tenant: &tenant.id,
        price,
        customer: stripe_customer(&tenant),
        now: unix_now(),
    };
    let session = stripe.checkout(&order).await?;
    tracing::info!(tenant = %tenant.id, tier = %tier.name, session = %session.id, "checkout session created");
    Ok(Json(session))
}

/// Answers `{"id", "url"}` of a Billing Portal session for the tenant's Stripe customer.
pub async fn portal(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<HostedSession>, ApiError> {
    let stripe = configured(&state)?;
    let tenant = caller::tenant(&state, &headers)?;
    let customer = stripe_customer(&tenant).ok_or(ApiError::NoBillingAccount)?;
    let session = stripe.portal(customer).await?;
    tracing::info!(tenant = %tenant.id, session = %session.id, "billing portal session created");
    Ok(Json(session))
}

fn configured(state: &AppState) -> Result<&StripeApi, ApiError> {
    state
        .billing
        .stripe
        .as_ref()
        .ok_or(ApiError::BillingNotConfigured)
}

fn stripe_customer(tenant: &Tenant) -> Option<&str> {
    tenant.subscription.as_ref()?.customer.as_deref()
}
