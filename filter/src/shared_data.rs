//! Proxy-wasm shared data, as the edge's tables ([`crate::deny_cache`],
//! [`crate::invalid_keys`]) use it: one key-value store per `vm_id`, seen by every worker's VM
//! of one Envoy, with a compare-and-swap token per key, and nothing that expires or shrinks by
//! itself. The trait is implemented over host calls in `host`, and by [`FakeShared`] in tests.

/// Shared data as the tables need it.
pub trait SharedData {
    /// The value and its CAS token, if the key was ever set.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Sets the value if the CAS token still matches (`None`: unconditionally). `false` when
    /// another writer came first.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// The key of the slot of `table` (`tollgate.<table>.<n>`) that a 64-bit `hash` maps to,
/// among `slots`: how every edge table direct-maps its entries, so each is bounded by its
/// slot count.
pub(crate) fn slot_key(table: &str, hash: u64, slots: u32) -> String {
    format!("tollgate.{table}.{}", hash % u64::from(slots.max(1)))
}

/// How many times a slot's read-modify-write is tried when another worker wrote the slot in
/// between; giving up only costs a callout (or one uncounted unknown key).
pub(crate) const CAS_ATTEMPTS: usize = 4;

/// Shared data as Envoy keeps it: values with a CAS counter bumped on every write.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct FakeShared(
    pub(crate) std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>,
);

#[cfg(test)]
impl SharedData for FakeShared {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.0.borrow().get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut map = self.0.borrow_mut();
        let current = map.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != current {
            return false;
        }
        map.insert(key.to_owned(), (value.to_vec(), current.unwrap_or(0) + 1));
        true
    }
}
