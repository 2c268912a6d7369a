//! Tenants and the hashes of their API keys, as the decision path sees them.
//!
//! The decision path looks a tenant up by key hash on every callout, so this registry is an
//! in-memory map behind a `std::sync::RwLock`: reads are concurrent, writes (admin calls and
//! change notifications) are rare, and the lock is never held across an `.await`. It is a
//! cache of the [`crate::directory`]'s durable records, replaced record by record.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::api_keys::{KeyHash, unhex};
use crate::tiers::TierName;

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

    fn key_hashes(&self) -> impl Iterator<Item = (KeyHash, Option<u64>)> + '_ {
        self.keys
            .iter()
            .filter_map(|k| Some((unhex(&k.hash)?, k.expires_at)))
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

#[derive(Default)]
pub struct Tenants {
    inner: RwLock<Registry>,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<TenantId, StoredTenant>,
    /// Key hash → (tenant, when the key stops working).
    by_key: HashMap<KeyHash, (TenantId, Option<u64>)>,
    /// Stripe customer and subscription ids → tenant, for webhook events that name no
    /// tenant (invoices).
    by_stripe_id: HashMap<String, TenantId>,
}

impl Registry {
    fn insert(&mut self, record: StoredTenant) {
        let id = &record.tenant.id;
        for (key, expires_at) in record.key_hashes() {
            self.by_key.insert(key, (id.clone(), expires_at));
        }
        for stripe_id in record.stripe_ids() {
            self.by_stripe_id.insert(stripe_id.to_owned(), id.clone());
        }
        self.by_id.insert(id.clone(), record);
    }

    /// The record of the tenant whose key this is, if the key works at `now`.
    fn owner_of(&self, key: &KeyHash, now: u64) -> Option<&StoredTenant> {
        let (id, expires_at) = self.by_key.get(key)?;
        if expires_at.is_some_and(|at| at <= now) {
            return None;
        }
        self.by_id.get(id)
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            for (key, _) in old.key_hashes() {
                self.by_key.remove(&key);
            }
            for stripe_id in old.stripe_ids() {
                self.by_stripe_id.remove(stripe_id);
            }
        }
    }
}

impl Tenants {
    /// Puts a tenant's current record in place of the old one (`None`: it is gone), keys
    /// included, in one step.
    pub fn replace(&self, id: &str, record: Option<StoredTenant>) {
        let mut registry = self.write();
        registry.remove(id);
        if let Some(record) = record {
            registry.insert(record);
        }
    }

    /// Replaces the whole registry.
    pub fn replace_all(&self, records: Vec<StoredTenant>) {
        let mut fresh = Registry::default();
        for record in records {
            fresh.insert(record);
        }
        *self.write() = fresh;
    }

    pub fn get(&self, id: &str) -> Option<Tenant> {
        self.read().by_id.get(id).map(|r| r.tenant.clone())
    }

    pub fn record(&self, id: &str) -> Option<StoredTenant> {
        self.read().by_id.get(id).cloned()
    }

    /// The whole tenant record a working key belongs to (for the public endpoints, which show
    /// more of it than the decision path needs).
    pub fn tenant_by_key(&self, key: &KeyHash, now: u64) -> Option<Tenant> {
        Some(self.read().owner_of(key, now)?.tenant.clone())
    }

    /// The tenant a Stripe customer or subscription id belongs to.
    pub fn by_stripe_id(&self, stripe_id: &str) -> Option<TenantId> {
        self.read().by_stripe_id.get(stripe_id).cloned()
    }

    pub fn records(&self) -> Vec<StoredTenant> {
        self.read().by_id.values().cloned().collect()
    }

    /// What the decision path needs of the tenant a key belongs to, if the key works at
    /// `now` (seconds since the epoch). Copies two `Arc`s and a flag, never the whole record.
    pub fn by_key(&self, key: &KeyHash, now: u64) -> Option<KeyOwner> {
        let registry = self.read();
        let record = registry.owner_of(key, now)?;
        Some(KeyOwner {
            id: record.tenant.id.clone(),
            tier: record.tenant.tier.clone(),
            suspended: record.tenant.suspended,
            past_due_since: record.tenant.past_due_since(),
        })
    }

    // A panic while holding the lock cannot leave the maps half-updated in a way that matters
    // (the worst case is a key index entry for a tenant being replaced), so a poisoned lock is
    // safe to keep using.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_key(key: u8, expires_at: Option<u64>) -> StoredKey {
        StoredKey {
            id: format!("key_{key}"),
            hash: crate::api_keys::hex(&[key; 32]),
            prefix: "tg_0000".into(),
            created_at: 0,
            expires_at,
        }
    }

    fn record(id: &str, key: u8) -> StoredTenant {
        StoredTenant::new(
            Tenant {
                id: id.into(),
                name: "Acme".into(),
                tier: "standard".into(),
                suspended: false,
                created_at: 0,
                subscription: None,
            },
            stored_key(key, None),
        )
    }

    #[test]
    fn a_key_past_its_grace_period_no_longer_works() {
        let tenants = Tenants::default();
        let mut record = record("tn_1", 7);
        record.keys.push(stored_key(8, Some(100)));
        tenants.replace("tn_1", Some(record));
        assert!(
            tenants.by_key(&[8; 32], 99).is_some(),
            "still in its grace period"
        );
        assert!(tenants.by_key(&[8; 32], 100).is_none());
        assert!(tenants.by_key(&[7; 32], 100).is_some(), "the new key works");
    }

    #[test]
    fn a_tenant_is_found_by_id_and_by_key_hash() {
        let tenants = Tenants::default();
        tenants.replace("tn_1", Some(record("tn_1", 7)));
        assert_eq!(tenants.get("tn_1").map(|t| t.name), Some("Acme".into()));
        assert_eq!(
            tenants.by_key(&[7; 32], 0).map(|t| t.id),
            Some("tn_1".into())
        );
        assert_eq!(tenants.by_key(&[8; 32], 0), None);
    }

    #[test]
    fn replacing_a_record_replaces_its_keys() {
        let tenants = Tenants::default();
        tenants.replace("tn_1", Some(record("tn_1", 7)));
        tenants.replace("tn_1", Some(record("tn_1", 9)));
        assert_eq!(tenants.by_key(&[7; 32], 0), None, "the old key is gone");
        assert!(tenants.by_key(&[9; 32], 0).is_some());
        tenants.replace("tn_1", None);
        assert_eq!(tenants.by_key(&[9; 32], 0), None);
        assert_eq!(tenants.get("tn_1"), None);
    }

    #[test]
    fn a_tenant_is_found_by_its_stripe_ids_until_they_change() {
        let tenants = Tenants::default();
        let mut linked = record("tn_1", 7);
        linked.tenant.subscription = Some(Subscription {
            customer: Some("cus_1".into()),
            id: Some("sub_1".into()),
            ..Subscription::default()
        });
        tenants.replace("tn_1", Some(linked.clone()));
        assert_eq!(tenants.by_stripe_id("cus_1"), Some("tn_1".into()));
        assert_eq!(tenants.by_stripe_id("sub_1"), Some("tn_1".into()));
        linked.tenant.subscription.as_mut().unwrap().id = Some("sub_2".into());
        tenants.replace("tn_1", Some(linked));
        assert_eq!(tenants.by_stripe_id("sub_1"), None);
        assert_eq!(tenants.by_stripe_id("sub_2"), Some("tn_1".into()));
    }

    #[test]
    fn changes_touch_only_what_they_name() {
        let mut tenant = record("tn_1", 1).tenant;
        TenantChange {
            suspended: Some(true),
            tier: None,
        }
        .apply(&mut tenant);
        assert!(tenant.suspended);
        assert_eq!(tenant.tier.as_ref(), "standard");
    }
}
