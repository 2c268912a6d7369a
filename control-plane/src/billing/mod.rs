//! Stripe billing on the public listener: tenants buy a paid tier through Stripe Checkout,
//! manage it in Stripe's Billing Portal, and Stripe's signed webhooks move the tenant's tier
//! with its subscription.
//!
//! The two halves are configured separately and each works without the other: the webhook
//! needs `STRIPE_WEBHOOK_SECRET`, the sessions need `STRIPE_SECRET_KEY` and a return URL.
//! Whatever is missing answers 503 `billing_not_configured`; the rest of Tollgate is
//! unaffected.

mod sessions;
pub mod signature;
mod stripe_api;
mod webhook;

use axum::Router;
use axum::routing::post;

pub use stripe_api::{StripeApi, StripeApiError};

use crate::app::AppState;
use crate::config::Secret;

/// What billing is configured with.
#[derive(Clone)]
pub struct Billing {
    /// Verifies webhook deliveries; `None`: the webhook answers 503.
    pub webhook_secret: Option<Secret>,
    /// Creates Checkout and Billing Portal sessions; `None`: those endpoints answer 503.
    pub stripe: Option<StripeApi>,
}

pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/billing/webhook", post(webhook::webhook))
        .route("/api/v1/billing/checkout", post(sessions::checkout))
        .route("/api/v1/billing/portal", post(sessions::portal))
}
