//! Tenants: the record of each (name, tier, suspension, Stripe subscription) and its API
//! keys, stored only as keyed hashes.
//!
//! - this module: the records, as stored and as the decision path sees them;
//! - [`api_key_hashing`]: minting keys and hashing them;
//! - [`directory`]: the registry as the rest of the control-plane uses it: lookups through a
//!   bounded cache, writes to the durable store, pages for the admin list;
//! - [`cache`]: the bounded cache of active tenants (by key hash and by id) and of unknown
//!   keys, and [`key_filter`], which answers most unknown keys without a store read;
//! - [`changes`]: what a write changes in the indexes, the same for both stores;
//! - [`embedded`]: the embedded store (redb), and the import of the old state file;
//! - [`redis_registry`]: the Redis store, and the change log every replica follows.

pub mod api_key_hashing;
pub mod cache;
pub mod changes;
pub mod directory;
pub mod embedded;
pub mod key_filter;
pub mod redis_registry;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::tiers::TierName;
pub use api_key_hashing::{KeyHash, KeyHasher, NewApiKey, RandomError};
pub use directory::{Directory, Page, RegistrySettings};

pub type TenantId = Arc<str>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tenant {
    #[schema(value_type = String, example = "tn_0123456789abcdef")]
    pub id: TenantId,
    pub name: String,
    #[schema(value_type = String, example = "standard")]
    pub tier: TierName,
    pub suspended: bool,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// The tenant's Stripe customer and subscription, as Stripe last described them (a fetch,
    /// or a webhook event when Stripe could not be asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
}

/// A tenant's billing link to Stripe. Every field added since the first release has a serde
/// default, so state files and Redis records written before still load.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    /// The tenant's one Stripe customer, created (with `metadata.tenant_id`) before its first
    /// checkout and passed to every later one.
    pub customer: Option<String>,
    /// The subscription that sets the tier (the best-paying one when there are several).
    pub id: Option<String>,
    /// Stripe's status (active, trialing, past_due, canceled, …).
    pub status: Option<String>,
    /// The subscription ends with the current period (the tier stays until then).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_at_period_end: bool,
    /// `created` of the last event applied (seconds): an older event never overwrites it.
    pub updated_at: u64,
    /// Ids of the events applied lately, newest last: a redelivery of any is a no-op, even
    /// after other events of the same second.
    #[serde(default)]
    pub recent_events: Vec<String>,
    /// When payment started failing (event time, seconds); the paid tier lasts a grace
    /// period from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub past_due_since: Option<u64>,
    /// The end of the subscription's current billing period (seconds), as Stripe said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_period_end: Option<u64>,
    /// The prices (or, in old API versions, plans) of the subscription's items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<String>,
    /// Prices of a running subscription that no tier lists: it buys the default tier until
    /// the tier table names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmapped_prices: Vec<String>,
    /// Other running subscriptions of this tenant at Stripe: it is billed more than once,
    /// and an operator must cancel the extra ones. Until then the tenant keeps the best tier
    /// it pays for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicting_subscriptions: Vec<String>,
    /// When a sync with Stripe last changed this record (seconds); a sync that finds the
    /// record right writes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<u64>,
    /// An event was applied as delivered because Stripe could not be asked; the next sync
    /// checks it against Stripe.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_sync: bool,
    /// Customers unlinked from this tenant (deleted at Stripe, or unlinked by an operator),
    /// newest last: news about them never links them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_customers: Vec<String>,
    /// Disputes and refunds of the tenant's payments, newest last (a bounded record for
    /// operators; they change no tier).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<PaymentIncident>,
}

/// A dispute or refund of one of the tenant's payments.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentIncident {
    /// `dispute` or `refund`.
    pub kind: String,
    /// The dispute's id, or the refunded charge's.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<String>,
    /// In the currency's smallest unit (for a refund: the amount refunded so far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The dispute's reason, or the refund's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When Stripe created the event (seconds).
    pub at: u64,
}

impl Subscription {
    /// Running and billed: active, trialing, or past due (in its grace period or not).
    pub fn is_live(&self) -> bool {
        matches!(
            self.status.as_deref(),
            Some("active" | "trialing" | "past_due")
        )
    }

    /// Whether the tenant still holds a subscription it can go back to (paused, or unpaid
    /// with invoices open) or is running: a second checkout would bill it twice, so changes
    /// go through the portal.
    pub fn blocks_checkout(&self) -> bool {
        self.is_live() || matches!(self.status.as_deref(), Some("paused" | "unpaid"))
    }
}

impl Tenant {
    /// A new tenant's id: `tn_` and 64 random bits.
    pub fn mint_id() -> Result<TenantId, RandomError> {
        Ok(format!("tn_{}", api_key_hashing::random_hex(8)?).into())
    }

    /// Since when the tenant's subscription is past due, if it is.
    pub fn past_due_since(&self) -> Option<u64> {
        self.subscription.as_ref()?.past_due_since
    }
}

/// A tenant as persisted: the public record plus its keys (hashed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTenant {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub keys: Vec<StoredKey>,
    /// One more at every write of this record (0: never written since versions were
    /// introduced). Of two copies, a replica keeps the higher: a change it hears late never
    /// replaces one it already has.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u64,
}

fn is_zero(version: &u64) -> bool {
    *version == 0
}

/// A record as read from a store: parsed, and the bytes a compare-and-set compares.
pub struct Stored {
    pub record: StoredTenant,
    pub json: Vec<u8>,
}

/// One API key of a tenant, as stored: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Stable handle for rotation and revocation, e.g. `key_1a2b3c4d`.
    pub id: String,
    /// HMAC of the key (hex).
    pub hash: String,
    /// The key's first characters, so an operator can tell keys apart.
    pub prefix: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// After a rotation, when the old key stops working (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl StoredTenant {
    pub fn new(tenant: Tenant, key: StoredKey) -> Self {
        Self {
            tenant,
            keys: vec![key],
            version: 1,
        }
    }

    /// Linked to a Stripe customer or subscription: the periodic billing sync checks it.
    pub fn is_linked(&self) -> bool {
        let subscription = self.tenant.subscription.as_ref();
        subscription.is_some_and(|s| s.customer.is_some() || s.id.is_some())
    }

    /// Its last billing event was applied as delivered: the next sync checks it first.
    pub fn needs_sync(&self) -> bool {
        let subscription = self.tenant.subscription.as_ref();
        self.is_linked() && subscription.is_some_and(|s| s.needs_sync)
    }

    /// The hashes of the tenant's keys, with when each stops working.
    /// The id of the record's key whose hash is `key`, if it works at `now`.
    pub fn working_key_id(&self, key: &KeyHash, now: u64) -> Option<&str> {
        let hash = hex::encode(key);
        self.keys
            .iter()
            .find(|k| k.hash == hash && k.expires_at.is_none_or(|at| at > now))
            .map(|k| k.id.as_str())
    }

    /// Whether the record's key `id` works at `now` (not revoked, not past a rotation's grace).
    pub fn key_works(&self, id: &str, now: u64) -> bool {
        self.keys
            .iter()
            .any(|k| k.id == id && k.expires_at.is_none_or(|at| at > now))
    }

    pub fn key_hashes(&self) -> impl Iterator<Item = (KeyHash, Option<u64>)> + '_ {
        self.keys.iter().filter_map(|k| {
            let mut hash = KeyHash::default();
            hex::decode_to_slice(&k.hash, &mut hash).ok()?;
            Some((hash, k.expires_at))
        })
    }

    /// The Stripe ids that name this tenant: its customer, its subscription and any other
    /// running one (so an invoice of either finds it).
    pub fn stripe_ids(&self) -> impl Iterator<Item = &str> {
        let subscription = self.tenant.subscription.as_ref();
        let ids = subscription.map(|s| [s.customer.as_deref(), s.id.as_deref()]);
        let conflicting =
            subscription.map(|s| s.conflicting_subscriptions.iter().map(String::as_str));
        ids.into_iter()
            .flatten()
            .flatten()
            .chain(conflicting.into_iter().flatten())
    }
}

/// The decision path's view of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub id: TenantId,
    pub tier: TierName,
    pub suspended: bool,
    pub past_due_since: Option<u64>,
}

impl From<&Tenant> for KeyOwner {
    fn from(tenant: &Tenant) -> Self {
        Self {
            id: tenant.id.clone(),
            tier: tenant.tier.clone(),
            suspended: tenant.suspended,
            past_due_since: tenant.past_due_since(),
        }
    }
}

/// A change to a tenant; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct TenantChange {
    pub tier: Option<TierName>,
    pub suspended: Option<bool>,
}

impl TenantChange {
    pub fn apply(&self, tenant: &mut Tenant) {
        if let Some(tier) = &self.tier {
            tenant.tier = tier.clone();
        }
        if let Some(suspended) = self.suspended {
            tenant.suspended = suspended;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_touch_only_what_they_name() {
        let mut tenant = Tenant {
            id: "tn_1".into(),
            name: "Acme".into(),
            tier: "standard".into(),
            suspended: false,
            created_at: 0,
            subscription: None,
        };
        TenantChange {
            suspended: Some(true),
            tier: None,
        }
        .apply(&mut tenant);
        assert!(tenant.suspended);
        assert_eq!(tenant.tier.as_ref(), "standard");
    }

    #[test]
    fn records_written_before_the_billing_fields_still_load() {
        // A state-file record of the first release: only the original subscription fields.
        let old = r#"{"id":"tn_1","name":"Acme","tier":"pro","suspended":false,"created_at":1,
            "subscription":{"customer":"cus_1","id":"sub_1","status":"active","updated_at":5,
            "recent_events":["evt_1"]},"keys":[]}"#;
        let record: StoredTenant = serde_json::from_str(old).unwrap();
        let subscription = record.tenant.subscription.as_ref().unwrap();
        assert_eq!(subscription.id.as_deref(), Some("sub_1"));
        assert!(!subscription.needs_sync && subscription.conflicting_subscriptions.is_empty());
        // And what is written now reads back the same, without empty new fields.
        let written = serde_json::to_string(&record).unwrap();
        assert!(
            !written.contains("incidents") && !written.contains("needs_sync"),
            "{written}"
        );
        assert_eq!(
            serde_json::from_str::<StoredTenant>(&written).unwrap(),
            record
        );
    }
}
