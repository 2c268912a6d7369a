//! Stripe billing: tenants buy a paid tier through Stripe Checkout, manage it in Stripe's
//! Billing Portal, and their tier always converges to what Stripe says.
//!
//! Stripe is the source of truth. A verified webhook event is a hint: the subscriptions of
//! the tenant it names are fetched from Stripe and applied ([`sync`]), so missed, reordered
//! or duplicated events cannot leave a tier wrong; only when Stripe cannot be asked is the
//! event applied as delivered ([`webhook`]), and the tenant marked for a re-sync. Every
//! linked tenant is also checked at startup, periodically and on demand. What a set of
//! subscriptions buys is decided in pure code ([`rules`]); Stripe's objects are read as plain
//! JSON ([`stripe_objects`]) and every call goes through [`stripe_api`].
//!
//! The two halves are configured separately and each works without the other: the webhook
//! needs `STRIPE_WEBHOOK_SECRET`, the sessions and syncs need `STRIPE_SECRET_KEY` and a
//! return URL. Whatever is missing answers [`BillingError::NotConfigured`]; the rest of
//! Tollgate is unaffected. Nothing here knows HTTP: handlers call [`Billing`].

pub mod rules;
mod sessions;
pub mod signature;
mod stripe_api;
pub mod stripe_objects;
pub mod sync;
mod webhook;

use std::sync::{Arc, Mutex};

use dashmap::DashMap;

pub use stripe_api::{
    CheckoutSettings, HostedSession, StripeApi, StripeApiError, StripeConnection,
};
pub use sync::{SyncReport, SyncSummary, Trigger};

use crate::clock::Clock;
use crate::config::Secret;
use crate::metrics::Metrics;
use crate::storage::StoreError;
use crate::tenants::Directory;
use crate::tiers::TierSource;

/// How many distinct unexpected event API versions are warned about (once each).
const WARNED_VERSIONS: usize = 16;

/// Billing as configured, with what it changes. Cloning copies a few `Arc`s.
#[derive(Clone)]
pub struct Billing {
    /// Verifies webhook deliveries; `None`: the webhook answers `NotConfigured`.
    pub webhook_secret: Option<Secret>,
    /// Calls Stripe (sessions, customers, syncs); `None`: those answer `NotConfigured`, and
    /// events are applied as delivered.
    pub stripe: Option<StripeApi>,
    pub tenants: Arc<Directory>,
    pub tiers: Arc<TierSource>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub settings: BillingSettings,
    shared: Arc<Shared>,
}

/// How billing behaves, from the configuration.
#[derive(Debug, Clone)]
pub struct BillingSettings {
    /// The Stripe API version calls are made with and events are expected in.
    pub api_version: String,
    /// Tenants synced at once by a sync of all of them.
    pub sync_concurrency: usize,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            api_version: crate::config::STRIPE_API_VERSION.to_owned(),
            sync_concurrency: 4,
        }
    }
}

/// What every clone shares.
struct Shared {
    /// One sync at a time per tenant in this replica, so a fetch is never applied after a
    /// fresher one (across replicas, `synced_at` guards the same). A map of small mutexes:
    /// an entry per tenant synced, never held across anything but that tenant's sync.
    syncing: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Event API versions already warned about: each is logged once.
    warned_versions: Mutex<Vec<String>>,
    /// The runtime Stripe work runs on: the public one (see `server.rs`), so that a sync
    /// asked for on the admin listener never runs on the decision threads.
    background: tokio::runtime::Handle,
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
    #[error("no tenant has this id")]
    TenantNotFound,
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    /// The tenant store failed; nothing was changed, and Stripe delivers again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The background runtime is shutting down.
    #[error("the control-plane is shutting down")]
    ShuttingDown,
}

/// What [`Billing::new`] is built from.
pub struct BillingParts {
    pub webhook_secret: Option<Secret>,
    pub stripe: Option<StripeApi>,
    pub tenants: Arc<Directory>,
    pub tiers: Arc<TierSource>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub settings: BillingSettings,
}

impl Billing {
    /// Must run inside the runtime background Stripe work belongs to.
    pub fn new(parts: BillingParts) -> Self {
        Self {
            webhook_secret: parts.webhook_secret,
            stripe: parts.stripe,
            tenants: parts.tenants,
            tiers: parts.tiers,
            clock: parts.clock,
            metrics: parts.metrics,
            settings: parts.settings,
            shared: Arc::new(Shared {
                syncing: DashMap::new(),
                warned_versions: Mutex::new(Vec::new()),
                background: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// The Stripe client, if configured.
    pub fn sessions(&self) -> Result<&StripeApi, BillingError> {
        self.stripe.as_ref().ok_or(BillingError::NotConfigured)
    }

    /// Runs `work` on the background runtime and waits for it: Stripe calls asked for on the
    /// admin listener must not run on the decision threads.
    pub async fn in_background<T, F>(&self, work: F) -> Result<T, BillingError>
    where
        F: Future<Output = Result<T, BillingError>> + Send + 'static,
        T: Send + 'static,
    {
        self.shared
            .background
            .spawn(work)
            .await
            .map_err(|_| BillingError::ShuttingDown)?
    }

    /// Logs an event API version other than the configured one, once per version.
    fn check_api_version(&self, version: Option<&str>) {
        let Some(version) = version else { return };
        if version == self.settings.api_version {
            return;
        }
        let mut warned = self
            .shared
            .warned_versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if warned.len() < WARNED_VERSIONS && !warned.iter().any(|v| v == version) {
            warned.push(version.to_owned());
            tracing::warn!(
                event_api_version = version,
                expected = %self.settings.api_version,
                "a webhook event is in another Stripe API version than configured; it is read \
                 tolerantly, but set the endpoint's version to STRIPE_API_VERSION"
            );
        }
    }

    fn sync_lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.shared
            .syncing
            .entry(tenant.to_owned())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn billing() -> Billing {
        Billing::new(BillingParts {
            webhook_secret: None,
            stripe: None,
            tenants: Arc::new(Directory::in_process().unwrap()),
            tiers: Arc::new(TierSource::load(None).unwrap()),
            clock: Arc::new(crate::clock::ManualClock::new(0)),
            metrics: Arc::default(),
            settings: BillingSettings::default(),
        })
    }

    #[tokio::test]
    async fn each_unexpected_event_api_version_is_warned_about_once_and_the_list_is_bounded() {
        let billing = billing();
        let warned = || billing.shared.warned_versions.lock().unwrap().clone();
        billing.check_api_version(Some(crate::config::STRIPE_API_VERSION));
        billing.check_api_version(None);
        assert!(
            warned().is_empty(),
            "the expected version, or none, is not news"
        );
        billing.check_api_version(Some("2017-08-15"));
        billing.check_api_version(Some("2017-08-15"));
        assert_eq!(warned(), ["2017-08-15"]);
        for n in 0..100 {
            billing.check_api_version(Some(&format!("2020-01-{n:02}")));
        }
        assert_eq!(warned().len(), WARNED_VERSIONS);
    }
}
