//! Tenants: the record of each (name, tier, suspension, Stripe subscription) and its API
//! keys, stored only as keyed hashes.
//!
//! - this module: the records, as stored and as the decision path sees them;
//! - [`api_key_hashing`]: minting keys and hashing them;
//! - [`registry`]: the in-memory index the decision path reads (by key hash, by id, by Stripe
//!   id);
//! - [`directory`]: where records live durably (process, state file or Redis) and how every
//!   replica's registry learns of changes.

pub mod api_key_hashing;
pub mod directory;
pub mod registry;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::tiers::TierName;
pub use api_key_hashing::{KeyHash, KeyHasher, NewApiKey, RandomError};
pub use directory::Directory;

pub type TenantId = Arc<str>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub tier: TierName,
    pub suspended: bool,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// The tenant's Stripe subscription, as the last applied webhook event described it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub customer: Option<String>,
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
}

impl Subscription {
    /// Running and billed: active, trialing, or past due (in its grace period or not).
    pub fn is_live(&self) -> bool {
        matches!(
            self.status.as_deref(),
            Some("active" | "trialing" | "past_due")
        )
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
        }
    }

    /// The hashes of the tenant's keys, with when each stops working.
    fn key_hashes(&self) -> impl Iterator<Item = (KeyHash, Option<u64>)> + '_ {
        self.keys.iter().filter_map(|k| {
            let mut hash = KeyHash::default();
            hex::decode_to_slice(&k.hash, &mut hash).ok()?;
            Some((hash, k.expires_at))
        })
    }

    fn stripe_ids(&self) -> impl Iterator<Item = &str> {
        let subscription = self.tenant.subscription.as_ref();
        let ids = subscription.map(|s| [s.customer.as_deref(), s.id.as_deref()]);
        ids.into_iter().flatten().flatten()
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
}
