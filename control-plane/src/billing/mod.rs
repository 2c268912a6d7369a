//! Stripe billing: tenants buy a paid tier through Stripe Checkout, manage it in Stripe's
//! Billing Portal, and Stripe's signed webhooks move the tenant's tier with its subscription.
//!
//! The two halves are configured separately and each works without the other: the webhook
//! needs `STRIPE_WEBHOOK_SECRET`, the sessions need `STRIPE_SECRET_KEY` and a return URL.
//! Whatever is missing answers [`BillingError::NotConfigured`]; the rest of Tollgate is
//! unaffected. Nothing here knows HTTP: the public API's handlers call [`Billing`].

mod sessions;
pub mod signature;
mod stripe_api;
mod webhook;

use std::sync::Arc;

pub use stripe_api::{HostedSession, StripeApi, StripeApiError};

use crate::clock::Clock;
use crate::config::Secret;
use crate::metrics::Metrics;
use crate::storage::StoreError;
use crate::tenants::Directory;
use crate::tiers::TierSource;

/// Billing as configured, with what it changes. Cloning copies a few `Arc`s.
#[derive(Clone)]
pub struct Billing {
    /// Verifies webhook deliveries; `None`: the webhook answers `NotConfigured`.
    pub webhook_secret: Option<Secret>,
    /// Creates Checkout and Billing Portal sessions; `None`: those answer `NotConfigured`.
    pub stripe: Option<StripeApi>,
    pub tenants: Arc<Directory>,
    pub tiers: Arc<TierSource>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
}

/// Why a billing request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("billing is not configured on this control-plane")]
    NotConfigured,
    #[error("the Stripe-Signature does not verify: {0}")]
    InvalidSignature(#[from] signature::SignatureError),
    #[error("the event is not JSON")]
    MalformedEvent,
    #[error("unknown tier {0:?}")]
    UnknownTier(String),
    #[error("tier {0:?} cannot be bought")]
    TierNotForSale(String),
    /// A second subscription would bill the tenant twice; plan changes and cancellations
    /// belong to the portal.
    #[error("the tenant already has a subscription")]
    AlreadySubscribed,
    #[error("the tenant has no billing account yet")]
    NoBillingAccount,
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    /// The tenant store failed; nothing was changed, and Stripe delivers again.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Billing {
    /// The Stripe client for sessions, if configured.
    pub fn sessions(&self) -> Result<&StripeApi, BillingError> {
        self.stripe.as_ref().ok_or(BillingError::NotConfigured)
    }
}
