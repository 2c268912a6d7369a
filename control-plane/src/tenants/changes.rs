//! What one write of a tenant record changes besides the record: the key-hash and Stripe-id
//! indexes, the tier counts, the billing sync's sets and the key filter. Worked out once, here,
//! from the record before and after, so the embedded store and the Redis script keep the same
//! indexes the same way.

use std::collections::BTreeSet;

use super::{KeyHash, StoredTenant};
use crate::tiers::TierName;

/// The index entries one write adds and removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexChange {
    pub keys_removed: Vec<KeyHash>,
    pub keys_added: Vec<KeyHash>,
    pub stripe_ids_removed: Vec<String>,
    pub stripe_ids_added: Vec<String>,
    /// `None`: a new tenant.
    pub tier_before: Option<TierName>,
    pub tier_after: TierName,
    /// Whether the record, after the write, belongs in the set of linked tenants.
    pub linked: bool,
    /// Whether it belongs in the set of tenants the billing sync must check first.
    pub needs_sync: bool,
}

impl IndexChange {
    pub fn between(before: Option<&StoredTenant>, after: &StoredTenant) -> Self {
        let keys = |record: Option<&StoredTenant>| -> BTreeSet<KeyHash> {
            record
                .into_iter()
                .flat_map(|r| r.key_hashes().map(|(hash, _)| hash))
                .collect()
        };
        let stripe = |record: Option<&StoredTenant>| -> BTreeSet<String> {
            record
                .into_iter()
                .flat_map(|r| r.stripe_ids().map(str::to_owned))
                .collect()
        };
        let (keys_before, keys_after) = (keys(before), keys(Some(after)));
        let (stripe_before, stripe_after) = (stripe(before), stripe(Some(after)));
        Self {
            keys_removed: keys_before.difference(&keys_after).copied().collect(),
            keys_added: keys_after.difference(&keys_before).copied().collect(),
            stripe_ids_removed: stripe_before.difference(&stripe_after).cloned().collect(),
            stripe_ids_added: stripe_after.difference(&stripe_before).cloned().collect(),
            tier_before: before.map(|r| r.tenant.tier.clone()),
            tier_after: after.tenant.tier.clone(),
            linked: after.is_linked(),
            needs_sync: after.needs_sync(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::{StoredKey, Subscription, Tenant};

    fn key(byte: u8) -> StoredKey {
        StoredKey {
            id: format!("key_{byte}"),
            hash: hex::encode([byte; 32]),
            prefix: "tg_00000".into(),
            created_at: 0,
            expires_at: None,
        }
    }

    fn record(tier: &str, keys: &[u8], customer: Option<&str>) -> StoredTenant {
        StoredTenant {
            tenant: Tenant {
                id: "tn_1".into(),
                name: "Acme".into(),
                tier: tier.into(),
                suspended: false,
                created_at: 0,
                subscription: customer.map(|c| Subscription {
                    customer: Some(c.into()),
                    needs_sync: true,
                    ..Subscription::default()
                }),
            },
            keys: keys.iter().copied().map(key).collect(),
            version: 1,
        }
    }

    #[test]
    fn a_new_tenant_adds_all_its_entries() {
        let change = IndexChange::between(None, &record("standard", &[1, 2], None));
        assert_eq!(change.keys_added, vec![[1; 32], [2; 32]]);
        assert!(change.keys_removed.is_empty() && change.stripe_ids_added.is_empty());
        assert_eq!(change.tier_before, None);
        assert!(!change.linked && !change.needs_sync);
    }

    #[test]
    fn a_rotation_and_a_link_change_only_what_differs() {
        let before = record("standard", &[1, 2], Some("cus_1"));
        let after = record("pro", &[2, 3], Some("cus_2"));
        let change = IndexChange::between(Some(&before), &after);
        assert_eq!(
            (change.keys_removed, change.keys_added),
            (vec![[1; 32]], vec![[3; 32]])
        );
        assert_eq!(
            (change.stripe_ids_removed, change.stripe_ids_added),
            (vec!["cus_1".to_owned()], vec!["cus_2".to_owned()])
        );
        assert_eq!(change.tier_before.as_deref(), Some("standard"));
        assert_eq!(change.tier_after.as_ref(), "pro");
        assert!(change.linked && change.needs_sync);
    }
}
