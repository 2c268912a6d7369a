//! Tenants and the hashes of their API keys.
//!
//! The decision path looks a tenant up by key hash on every callout, so the registry is an
//! in-memory map behind a `std::sync::RwLock`: reads are concurrent, writes (admin calls) are
//! rare, and the lock is never held across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::api_keys::KeyHash;
use crate::tiers::TierName;

pub type TenantId = Arc<str>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub tier: TierName,
    pub suspended: bool,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
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

#[derive(Default)]
pub struct Tenants {
    inner: RwLock<Registry>,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<TenantId, Tenant>,
    by_key: HashMap<KeyHash, TenantId>,
}

impl Tenants {
    /// Adds a tenant with its first key. Both land together or not at all.
    pub fn insert(&self, tenant: Tenant, key: KeyHash) {
        let mut registry = self.write();
        registry.by_key.insert(key, tenant.id.clone());
        registry.by_id.insert(tenant.id.clone(), tenant);
    }

    pub fn get(&self, id: &str) -> Option<Tenant> {
        self.read().by_id.get(id).cloned()
    }

    /// What the decision path needs of the tenant a key belongs to. Copies two `Arc`s and a
    /// flag, never the whole record.
    pub fn by_key(&self, key: &KeyHash) -> Option<KeyOwner> {
        let registry = self.read();
        let tenant = registry.by_id.get(registry.by_key.get(key)?)?;
        Some(KeyOwner {
            id: tenant.id.clone(),
            tier: tenant.tier.clone(),
            suspended: tenant.suspended,
        })
    }

    pub fn update(&self, id: &str, change: TenantChange) -> Option<Tenant> {
        let mut registry = self.write();
        let tenant = registry.by_id.get_mut(id)?;
        if let Some(tier) = change.tier {
            tenant.tier = tier;
        }
        if let Some(suspended) = change.suspended {
            tenant.suspended = suspended;
        }
        Some(tenant.clone())
    }

    // A panic while holding the lock cannot leave the maps half-updated (each write is a
    // single insert or field store), so a poisoned lock is safe to keep using.
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

    fn tenant(id: &str) -> Tenant {
        Tenant {
            id: id.into(),
            name: "Acme".into(),
            tier: "standard".into(),
            suspended: false,
            created_at: 0,
        }
    }

    #[test]
    fn a_tenant_is_found_by_id_and_by_key_hash() {
        let tenants = Tenants::default();
        tenants.insert(tenant("tn_1"), [7; 32]);
        assert_eq!(tenants.get("tn_1").map(|t| t.name), Some("Acme".into()));
        assert_eq!(tenants.by_key(&[7; 32]).map(|t| t.id), Some("tn_1".into()));
        assert_eq!(tenants.by_key(&[8; 32]), None);
    }

    #[test]
    fn updates_change_only_what_they_name() {
        let tenants = Tenants::default();
        tenants.insert(tenant("tn_1"), [7; 32]);
        let updated = tenants
            .update(
                "tn_1",
                TenantChange {
                    suspended: Some(true),
                    tier: None,
                },
            )
            .unwrap();
        assert!(updated.suspended);
        assert_eq!(updated.tier.as_ref(), "standard");
        assert_eq!(tenants.update("tn_missing", TenantChange::default()), None);
    }
}
