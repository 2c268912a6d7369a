//! The in-memory index of tenants the decision path reads: by key hash on every callout, by
//! id, and by Stripe id for webhooks.
//!
//! A map behind a `std::sync::RwLock`: reads are concurrent, writes (admin calls and change
//! notifications) are rare, and the lock is never held across an `.await`. It is a cache of
//! the [`super::directory`]'s durable records, replaced record by record.

use std::collections::HashMap;
use std::sync::RwLock;

use super::{KeyHash, KeyOwner, StoredTenant, Tenant, TenantId};

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
        Some(KeyOwner::from(&record.tenant))
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
    use crate::tenants::{StoredKey, Subscription};

    fn stored_key(key: u8, expires_at: Option<u64>) -> StoredKey {
        StoredKey {
            id: format!("key_{key}"),
            hash: hex::encode([key; 32]),
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
}
