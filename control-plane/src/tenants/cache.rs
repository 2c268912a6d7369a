//! The bounded cache of active tenants the decision path reads: by key hash on every callout,
//! and by id; and a bounded cache of keys the store said nobody has. Memory follows the
//! tenants that send traffic, not the registry: a tenant enters on a key lookup that missed
//! (one store read) and leaves when the cache is full and it is the least recently used, by
//! the CLOCK rule (a hit sets a flag; eviction sweeps, clearing flags, to the first entry
//! without one), which costs a hit no write lock.
//!
//! Changes keep it right:
//! - every change to the registry is applied here in order ([`Cache::apply`]): a cached tenant
//!   gets its new record (keys included), and every key of the record leaves the cache of
//!   unknown keys; a change to a tenant not cached brings nothing in;
//! - a store read races with changes, so what it found is cached only if no change applied
//!   since could have made it stale: each read says which registry version it is as of, and
//!   the cache remembers which tenants the last changes touched ([`Cache::fill`],
//!   [`Cache::fill_unknown`]);
//! - of two copies of a record, the higher `version` stays.
//!
//! A `std::sync::RwLock`: hits share it (the decision threads never wait on each other), and
//! it is never held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{KeyHash, StoredTenant, TenantId};

/// How many of the latest changes the cache remembers the tenants of, to judge a store read
/// that raced with them; a read older than that is used but not cached.
const RECENT_CHANGES: usize = 4096;

/// What the cache knows of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// The key's tenant (whose key may have expired: see [`Cache::by_key`]).
    Tenant(Arc<StoredTenant>),
    /// The key is known not to work: nobody has it, or it expired.
    Nobody,
    /// Not cached: ask the store.
    NotCached,
}

pub struct Cache {
    inner: RwLock<Inner>,
    capacity: usize,
    unknown_capacity: usize,
}

struct Slot {
    record: Arc<StoredTenant>,
    /// Set by every hit, cleared by the eviction sweep (CLOCK).
    referenced: AtomicBool,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// The eviction sweep's position in `slots`.
    hand: usize,
    by_id: HashMap<TenantId, usize>,
    /// Key hash → slot, and when the key stops working.
    by_key: HashMap<KeyHash, (usize, Option<u64>)>,
    /// Keys nobody has, with the registry version the store said so as of: only a later
    /// change can make one known.
    unknown: HashMap<KeyHash, u64>,
    /// `unknown` in the order entered, for eviction (first in, first out). May name keys
    /// already gone from `unknown`.
    unknown_order: VecDeque<KeyHash>,
    /// The version of the last change applied (see [`Cache::apply`]).
    applied: u64,
    /// The latest changes' versions and tenants, oldest first, at most `RECENT_CHANGES`.
    recent: VecDeque<(u64, TenantId)>,
}

impl Cache {
    /// At most `capacity` tenants and `unknown_capacity` unknown keys.
    pub fn new(capacity: usize, unknown_capacity: usize) -> Self {
        Self {
            inner: RwLock::default(),
            capacity: capacity.max(1),
            unknown_capacity,
        }
    }

    /// What the cache knows of `key` at `now` (seconds since the epoch).
    pub fn by_key(&self, key: &KeyHash, now: u64) -> Known {
        let inner = self.read();
        if let Some((slot, expires_at)) = inner.by_key.get(key) {
            if expires_at.is_some_and(|at| at <= now) {
                return Known::Nobody;
            }
            if let Some(Some(slot)) = inner.slots.get(*slot) {
                slot.referenced.store(true, Ordering::Relaxed);
                return Known::Tenant(slot.record.clone());
            }
        }
        if inner.unknown.contains_key(key) {
            return Known::Nobody;
        }
        Known::NotCached
    }

    /// The cached record of tenant `id`, if cached (no recency: reads by id are operators' and
    /// billing's, not traffic).
    pub fn by_id(&self, id: &str) -> Option<Arc<StoredTenant>> {
        let inner = self.read();
        let slot = inner.by_id.get(id)?;
        Some(inner.slots.get(*slot)?.as_ref()?.record.clone())
    }

    /// Caches a record a key lookup read from the store as of registry version `as_of`,
    /// unless a change applied since may have made it stale. Returns whether it was cached.
    pub fn fill(&self, record: Arc<StoredTenant>, as_of: u64) -> bool {
        let mut inner = self.write();
        if !inner.unchanged_since(as_of, &record.tenant.id) {
            return false;
        }
        if let Some(slot) = inner.by_id.get(&record.tenant.id).copied() {
            inner.replace(slot, record);
            return true;
        }
        let slot = inner.take_slot(self.capacity);
        inner.place(slot, record);
        true
    }

    /// Remembers that no tenant has `key`, as the store said as of version `as_of`, unless a
    /// change applied since (which may have added it).
    pub fn fill_unknown(&self, key: KeyHash, as_of: u64) {
        if self.unknown_capacity == 0 {
            return;
        }
        let mut inner = self.write();
        if inner.applied > as_of || inner.unknown.insert(key, as_of).is_some() {
            return;
        }
        inner.unknown_order.push_back(key);
        while inner.unknown.len() > self.unknown_capacity {
            let Some(oldest) = inner.unknown_order.pop_front() else {
                break;
            };
            inner.unknown.remove(&oldest);
        }
    }

    /// Applies the change of registry version `version`: tenant `id` is now `record` (`None`:
    /// gone). `in_order`: changes arrive in version order this way (the change log, or the
    /// embedded store's writes), so the cache is now as of `version`; not so for this
    /// replica's own Redis writes, which the change log brings again, in order.
    pub fn apply(
        &self,
        version: u64,
        in_order: bool,
        id: &TenantId,
        record: Option<Arc<StoredTenant>>,
    ) {
        let mut inner = self.write();
        if let Some(record) = &record {
            for (key, _) in record.key_hashes() {
                // Only a key said unknown before this change: a late copy of an older change
                // must not forget what a newer read found.
                if inner
                    .unknown
                    .get(&key)
                    .is_some_and(|as_of| *as_of < version)
                {
                    inner.unknown.remove(&key);
                }
            }
        }
        if let Some(slot) = inner.by_id.get(id).copied() {
            match record {
                Some(record) => inner.replace(slot, record),
                None => inner.evict(slot),
            }
        }
        if in_order {
            inner.applied = inner.applied.max(version);
            if inner.recent.len() == RECENT_CHANGES {
                inner.recent.pop_front();
            }
            inner.recent.push_back((version, id.clone()));
        }
    }

    /// Starts again from registry version `version` after changes were missed: nothing read
    /// before it may be cached, and no key is known unknown any more. The cached tenants stay
    /// (the caller re-reads them, [`Cache::ids`]).
    pub fn restart_at(&self, version: u64) {
        let mut inner = self.write();
        inner.applied = version;
        inner.recent.clear();
        inner.unknown.clear();
        inner.unknown_order.clear();
    }

    /// Puts a record read after [`Cache::restart_at`] in place of the cached one (`None`: the
    /// tenant is gone); a tenant no longer cached stays out.
    pub fn refresh(&self, id: &TenantId, record: Option<Arc<StoredTenant>>) {
        let mut inner = self.write();
        let Some(slot) = inner.by_id.get(id).copied() else {
            return;
        };
        match record {
            Some(record) => inner.replace(slot, record),
            None => inner.evict(slot),
        }
    }

    /// The registry version of the last change applied.
    pub fn applied(&self) -> u64 {
        self.read().applied
    }

    /// The ids of the cached tenants.
    pub fn ids(&self) -> Vec<TenantId> {
        self.read().by_id.keys().cloned().collect()
    }

    /// Tenants cached.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A panic while holding the lock cannot leave the maps inconsistent in a way that matters
    // (the worst case is an index entry for a slot being replaced), so a poisoned lock is
    // taken over rather than propagated.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Whether no change applied after version `as_of` touched tenant `id`, as far as the
    /// recent changes tell.
    fn unchanged_since(&self, as_of: u64, id: &str) -> bool {
        if self.applied <= as_of {
            // Changes after `as_of` come later, in order; the version check keeps the newer.
            return true;
        }
        let covered = self
            .recent
            .front()
            .is_some_and(|(oldest, _)| *oldest <= as_of + 1);
        covered
            && !self
                .recent
                .iter()
                .rev()
                .take_while(|(version, _)| *version > as_of)
                .any(|(_, changed)| changed.as_ref() == id)
    }

    /// A free slot, evicting the least recently used tenant when full.
    fn take_slot(&mut self, capacity: usize) -> usize {
        if let Some(slot) = self.free.pop() {
            return slot;
        }
        if self.slots.len() < capacity {
            self.slots.push(None);
            return self.slots.len() - 1;
        }
        // CLOCK: at most two turns (the first clears every flag).
        for _ in 0..2 * self.slots.len() {
            let slot = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            match &self.slots[slot] {
                Some(entry) if entry.referenced.swap(false, Ordering::Relaxed) => {}
                _ => {
                    self.unplace(slot);
                    return slot;
                }
            }
        }
        // Unreachable in practice (the first turn cleared every flag); evict at the hand.
        let slot = self.hand;
        self.unplace(slot);
        slot
    }

    fn place(&mut self, slot: usize, record: Arc<StoredTenant>) {
        self.index(slot, &record);
        self.by_id.insert(record.tenant.id.clone(), slot);
        if let Some(entry) = self.slots.get_mut(slot) {
            // Unreferenced until its next hit: a tenant seen once (a scan, a burst of one-off
            // keys) leaves before one in steady use.
            *entry = Some(Slot {
                record,
                referenced: AtomicBool::new(false),
            });
        }
    }

    /// Puts `record` in `slot` unless the cached copy is at least as new.
    fn replace(&mut self, slot: usize, record: Arc<StoredTenant>) {
        let Some(Some(cached)) = self.slots.get(slot) else {
            return;
        };
        if cached.record.version >= record.version && cached.record.version > 0 {
            return;
        }
        let old = cached.record.clone();
        for (key, _) in old.key_hashes() {
            self.by_key.remove(&key);
        }
        self.index(slot, &record);
        if let Some(Some(cached)) = self.slots.get_mut(slot) {
            cached.record = record;
        }
    }

    fn index(&mut self, slot: usize, record: &StoredTenant) {
        for (key, expires_at) in record.key_hashes() {
            self.by_key.insert(key, (slot, expires_at));
            self.unknown.remove(&key);
        }
    }

    /// Takes the tenant out and frees its slot.
    fn evict(&mut self, slot: usize) {
        if self.unplace(slot) {
            self.free.push(slot);
        }
    }

    /// Takes the tenant in `slot` out, leaving the slot to the caller; whether there was one.
    fn unplace(&mut self, slot: usize) -> bool {
        let Some(entry) = self.slots.get_mut(slot).and_then(Option::take) else {
            return false;
        };
        for (key, _) in entry.record.key_hashes() {
            if self.by_key.get(&key).is_some_and(|(at, _)| *at == slot) {
                self.by_key.remove(&key);
            }
        }
        self.by_id.remove(&entry.record.tenant.id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::{StoredKey, Tenant};

    fn record(n: u8, version: u64) -> Arc<StoredTenant> {
        Arc::new(StoredTenant {
            tenant: Tenant {
                id: format!("tn_{n}").into(),
                name: "Acme".into(),
                tier: "standard".into(),
                suspended: false,
                created_at: 0,
                subscription: None,
            },
            keys: vec![StoredKey {
                id: "key_1".into(),
                hash: hex::encode([n; 32]),
                prefix: "tg_00000".into(),
                created_at: 0,
                expires_at: None,
            }],
            version,
        })
    }

    fn id(n: u8) -> TenantId {
        format!("tn_{n}").into()
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity_and_keeps_what_is_used() {
        let cache = Cache::new(4, 4);
        for n in 0..4 {
            assert!(cache.fill(record(n, 1), 0));
        }
        // Tenant 0 is used again; the next fill must evict another.
        for _ in 0..2 {
            assert!(matches!(cache.by_key(&[0; 32], 0), Known::Tenant(_)));
            cache.fill(record(4, 1), 0);
        }
        for n in 5..40 {
            assert!(matches!(cache.by_key(&[0; 32], 0), Known::Tenant(_)));
            cache.fill(record(n, 1), 0);
            assert!(cache.len() <= 4, "{} cached", cache.len());
        }
        assert!(matches!(cache.by_key(&[0; 32], 0), Known::Tenant(_)));
        assert_eq!(cache.by_key(&[1; 32], 0), Known::NotCached, "evicted");
        assert!(cache.by_id("tn_1").is_none());
    }

    #[test]
    fn a_change_replaces_a_cached_record_and_its_keys_and_the_older_copy_never_wins() {
        let cache = Cache::new(8, 8);
        cache.fill(record(1, 1), 0);
        let mut rotated = (*record(1, 2)).clone();
        rotated.keys[0].hash = hex::encode([9; 32]);
        cache.apply(1, true, &id(1), Some(Arc::new(rotated)));
        assert_eq!(cache.by_key(&[1; 32], 0), Known::NotCached, "old key gone");
        assert!(matches!(cache.by_key(&[9; 32], 0), Known::Tenant(r) if r.version == 2));
        // A late copy of version 1 (a read that raced) changes nothing.
        cache.apply(1, false, &id(1), Some(record(1, 1)));
        assert!(matches!(cache.by_key(&[9; 32], 0), Known::Tenant(r) if r.version == 2));
        cache.apply(2, true, &id(1), None);
        assert!(cache.is_empty(), "a tenant gone leaves the cache");
    }

    #[test]
    fn a_change_to_a_tenant_not_cached_brings_nothing_in() {
        let cache = Cache::new(8, 8);
        cache.apply(1, true, &id(1), Some(record(1, 1)));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_read_that_raced_with_a_change_to_its_tenant_is_not_cached() {
        let cache = Cache::new(8, 8);
        // Read as of version 5; the change log has applied up to 7 meanwhile.
        cache.apply(6, true, &id(2), Some(record(2, 1)));
        cache.apply(7, true, &id(1), Some(record(1, 3)));
        assert!(!cache.fill(record(1, 2), 5), "tenant 1 changed at 7");
        assert!(
            cache.fill(record(2, 1), 6),
            "tenant 2's change at 6 is in the read"
        );
        // A read as of a version the recent changes no longer reach: not cached.
        let cache = Cache::new(8, 8);
        cache.restart_at(100);
        assert!(!cache.fill(record(1, 1), 50));
        assert!(cache.fill(record(1, 1), 100));
    }

    #[test]
    fn unknown_keys_are_bounded_and_forgotten_when_a_change_adds_them() {
        let cache = Cache::new(8, 2);
        cache.fill_unknown([1; 32], 0);
        assert_eq!(cache.by_key(&[1; 32], 0), Known::Nobody);
        cache.apply(1, true, &id(1), Some(record(1, 1)));
        assert_eq!(cache.by_key(&[1; 32], 0), Known::NotCached, "invalidated");
        cache.fill_unknown([1; 32], 0);
        assert_eq!(
            cache.by_key(&[1; 32], 0),
            Known::NotCached,
            "read before the change that added it: not cached"
        );
        for n in 2..10 {
            cache.fill_unknown([n; 32], 1);
        }
        assert_eq!(cache.by_key(&[2; 32], 0), Known::NotCached, "evicted");
        assert_eq!(cache.by_key(&[9; 32], 0), Known::Nobody);
    }

    #[test]
    fn an_expired_key_of_a_cached_tenant_is_nobodys() {
        let cache = Cache::new(8, 8);
        let mut rotated = (*record(1, 1)).clone();
        rotated.keys[0].expires_at = Some(100);
        cache.fill(Arc::new(rotated), 0);
        assert!(matches!(cache.by_key(&[1; 32], 99), Known::Tenant(_)));
        assert_eq!(cache.by_key(&[1; 32], 100), Known::Nobody);
    }
}
