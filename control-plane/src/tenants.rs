//! Tenants and the hashes of their API keys, as the decision path sees them.
//!
//! The decision path looks a tenant up by key hash on every callout, so this registry is an
//! in-memory map behind a `std::sync::RwLock`: reads are concurrent, writes (admin calls and
//! change notifications) are rare, and the lock is never held across an `.await`. It is a
//! cache of the [`crate::directory`]'s durable records, replaced record by record.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::api_keys::{KeyHash, hex, unhex};
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
}

/// A tenant as persisted: the public record plus the hashes of its keys (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTenant {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub key_hashes: Vec<String>,
}

impl StoredTenant {
    pub fn new(tenant: Tenant, key: &KeyHash) -> Self {
        Self {
            tenant,
            key_hashes: vec![hex(key)],
        }
    }

    fn keys(&self) -> impl Iterator<Item = KeyHash> + '_ {
        self.key_hashes.iter().filter_map(|h| unhex(h))
    }
}

/// The decision path's view of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub id: TenantId,
    pub tier: TierName,
    pub suspended: bool,
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
    by_key: HashMap<KeyHash, TenantId>,
}

impl Tenants {
    /// Puts a tenant's current record in place of the old one (`None`: it is gone), keys
    /// included, in one step.
    pub fn replace(&self, id: &str, record: Option<StoredTenant>) {
        let mut registry = self.write();
        if let Some(old) = registry.by_id.remove(id) {
            for key in old.keys() {
                registry.by_key.remove(&key);
            }
        }
        if let Some(record) = record {
            for key in record.keys() {
                registry.by_key.insert(key, record.tenant.id.clone());
            }
            registry.by_id.insert(record.tenant.id.clone(), record);
        }
    }

    /// Replaces the whole registry.
    pub fn replace_all(&self, records: Vec<StoredTenant>) {
        let mut fresh = Registry::default();
        for record in records {
            for key in record.keys() {
                fresh.by_key.insert(key, record.tenant.id.clone());
            }
            fresh.by_id.insert(record.tenant.id.clone(), record);
        }
        *self.write() = fresh;
    }

    pub fn get(&self, id: &str) -> Option<Tenant> {
        self.read().by_id.get(id).map(|r| r.tenant.clone())
    }

    pub fn record(&self, id: &str) -> Option<StoredTenant> {
        self.read().by_id.get(id).cloned()
    }

    pub fn records(&self) -> Vec<StoredTenant> {
        self.read().by_id.values().cloned().collect()
    }

    /// What the decision path needs of the tenant a key belongs to. Copies two `Arc`s and a
    /// flag, never the whole record.
    pub fn by_key(&self, key: &KeyHash) -> Option<KeyOwner> {
        let registry = self.read();
        let record = registry.by_id.get(registry.by_key.get(key)?)?;
        Some(KeyOwner {
            id: record.tenant.id.clone(),
            tier: record.tenant.tier.clone(),
            suspended: record.tenant.suspended,
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

    fn record(id: &str, key: u8) -> StoredTenant {
        StoredTenant::new(
            Tenant {
                id: id.into(),
                name: "Acme".into(),
                tier: "standard".into(),
                suspended: false,
                created_at: 0,
            },
            &[key; 32],
        )
    }

    #[test]
    fn a_tenant_is_found_by_id_and_by_key_hash() {
        let tenants = Tenants::default();
        tenants.replace("tn_1", Some(record("tn_1", 7)));
        assert_eq!(tenants.get("tn_1").map(|t| t.name), Some("Acme".into()));
        assert_eq!(tenants.by_key(&[7; 32]).map(|t| t.id), Some("tn_1".into()));
        assert_eq!(tenants.by_key(&[8; 32]), None);
    }

    #[test]
    fn replacing_a_record_replaces_its_keys() {
        let tenants = Tenants::default();
        tenants.replace("tn_1", Some(record("tn_1", 7)));
        tenants.replace("tn_1", Some(record("tn_1", 9)));
        assert_eq!(tenants.by_key(&[7; 32]), None, "the old key is gone");
        assert!(tenants.by_key(&[9; 32]).is_some());
        tenants.replace("tn_1", None);
        assert_eq!(tenants.by_key(&[9; 32]), None);
        assert_eq!(tenants.get("tn_1"), None);
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
