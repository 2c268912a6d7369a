//! A Bloom filter of every key hash the registry has stored, so an unknown key is almost always
//! answered from memory: a flood of random keys (each one new, so no cache of unknown keys
//! helps) costs no store read at all.
//!
//! 2^25 bits (4 MiB) and 7 probes: about 1 false positive in 100,000 at a million keys, 1.5 %
//! at five million (a false positive costs one store read, then the key sits in the cache of
//! unknown keys). Key hashes are HMAC outputs, uniformly random already, so the probes are
//! seven 25-bit slices of the hash: no hashing here. Keys are never taken out (a revoked key
//! stays a positive until the filter is rebuilt, at the next start): a stale positive costs a
//! store read, never a wrong answer.
//!
//! The bits are in Redis's `SETBIT` order (bit 0 is the high bit of byte 0), so the Redis
//! store keeps the same filter as a string beside the records, set by its write script, and a
//! replica loads it whole with one `GET` when it attaches to the change log.
//!
//! Lock-free: lookups and inserts are atomic byte operations, so the decision path never waits
//! on the change feed adding keys.

use std::sync::atomic::{AtomicU8, Ordering};

use super::KeyHash;

/// Bits in the filter (a power of two: a probe is 25 bits of the hash).
pub const FILTER_BITS: u32 = 1 << 25;
const PROBES: usize = 7;

pub struct KeyFilter {
    bytes: Box<[AtomicU8]>,
}

impl Default for KeyFilter {
    fn default() -> Self {
        Self {
            bytes: (0..FILTER_BITS / 8).map(|_| AtomicU8::new(0)).collect(),
        }
    }
}

impl KeyFilter {
    /// The bit offsets a key sets.
    pub fn offsets(key: &KeyHash) -> [u32; PROBES] {
        let mut offsets = [0; PROBES];
        for (i, offset) in offsets.iter_mut().enumerate() {
            let word = [key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]];
            *offset = u32::from_le_bytes(word) & (FILTER_BITS - 1);
        }
        offsets
    }

    pub fn insert(&self, key: &KeyHash) {
        for offset in Self::offsets(key) {
            let (byte, mask) = Self::bit(offset);
            byte_at(&self.bytes, byte).fetch_or(mask, Ordering::Relaxed);
        }
    }

    /// `false`: no key with this hash was ever stored. `true`: perhaps one was.
    pub fn may_contain(&self, key: &KeyHash) -> bool {
        Self::offsets(key).into_iter().all(|offset| {
            let (byte, mask) = Self::bit(offset);
            byte_at(&self.bytes, byte).load(Ordering::Relaxed) & mask != 0
        })
    }

    /// Replaces every bit with `bitmap`'s (Redis's copy; shorter means the rest are unset).
    pub fn load(&self, bitmap: &[u8]) {
        for (i, byte) in self.bytes.iter().enumerate() {
            byte.store(bitmap.get(i).copied().unwrap_or(0), Ordering::Relaxed);
        }
    }

    /// The bits, in Redis's order.
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes
            .iter()
            .map(|byte| byte.load(Ordering::Relaxed))
            .collect()
    }

    fn bit(offset: u32) -> (usize, u8) {
        ((offset / 8) as usize, 0x80 >> (offset % 8))
    }
}

/// The byte holding a bit; offsets are masked to the filter's size, so it always exists.
fn byte_at(bytes: &[AtomicU8], index: usize) -> &AtomicU8 {
    static SPARE: AtomicU8 = AtomicU8::new(0xff);
    bytes.get(index).unwrap_or(&SPARE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u64) -> KeyHash {
        // A stand-in for an HMAC: spread the seed over 32 bytes.
        let mut key = [0u8; 32];
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for chunk in key.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        key
    }

    #[test]
    fn stored_keys_are_always_found_and_others_almost_never() {
        let filter = KeyFilter::default();
        for n in 0..100_000 {
            filter.insert(&key(n));
        }
        assert!((0..100_000).all(|n| filter.may_contain(&key(n))));
        let false_positives = (100_000..200_000)
            .filter(|n| filter.may_contain(&key(*n)))
            .count();
        assert!(false_positives < 5, "{false_positives} in 100,000");
    }

    #[test]
    fn the_bits_are_in_redis_setbit_order() {
        let filter = KeyFilter::default();
        let mut bitmap = vec![0u8; (FILTER_BITS / 8) as usize];
        let k = key(7);
        for offset in KeyFilter::offsets(&k) {
            // SETBIT offset 1: byte offset / 8, bit 7 - offset % 8.
            bitmap[(offset / 8) as usize] |= 1 << (7 - offset % 8);
        }
        assert!(!filter.may_contain(&k));
        filter.load(&bitmap);
        assert!(filter.may_contain(&k));
        filter.load(&[]);
        assert!(!filter.may_contain(&k), "a load replaces every bit");
    }
}
