//! Minting API keys and hashing them: keys are random, shown once, stored only as keyed
//! hashes.
//!
//! A key is `tg_` followed by 48 hex digits (192 random bits). What the control-plane keeps
//! is HMAC-SHA256(key secret, key): a stolen tenant table cannot be turned back into keys, or
//! checked against guesses, without the secret, which lives only in the environment.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::StoredKey;
use crate::config::Secret;

const KEY_PREFIX: &str = "tg_";
const KEY_RANDOM_BYTES: usize = 24;

/// The stored form of a key.
pub type KeyHash = [u8; 32];

/// A freshly minted key. Deliberately not `Debug` or `Display`: it must not reach a log.
pub struct NewApiKey(String);

impl NewApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Clone)]
pub struct KeyHasher {
    /// The keyed state after absorbing the secret; cloning it is cheaper than re-keying.
    mac: Hmac<Sha256>,
}

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(getrandom::Error);

impl KeyHasher {
    pub fn new(secret: &Secret) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { mac }
    }

    pub fn hash(&self, key: &str) -> KeyHash {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Mints a new key, and the record that stores it (hashed) for a tenant.
    pub fn mint(&self, now: u64) -> Result<(NewApiKey, StoredKey), RandomError> {
        let key = format!("{KEY_PREFIX}{}", random_hex(KEY_RANDOM_BYTES)?);
        let stored = StoredKey {
            id: format!("key_{}", random_hex(4)?),
            hash: hex::encode(self.hash(&key)),
            prefix: key.chars().take(KEY_PREFIX.len() + 5).collect(),
            created_at: now,
            expires_at: None,
        };
        Ok((NewApiKey(key), stored))
    }
}

/// `bytes` random bytes as lowercase hex (keys, key ids and tenant ids).
pub(super) fn random_hex(bytes: usize) -> Result<String, RandomError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(RandomError)?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(secret: &str) -> KeyHasher {
        KeyHasher::new(&Secret::new(secret.to_owned()))
    }

    #[test]
    fn minted_keys_are_long_random_and_visible_ascii() {
        let hasher = hasher("s3cret-s3cret-s3cret-s3cret-s3cret");
        let (a, stored_a) = hasher.mint(7).unwrap();
        let (b, stored_b) = hasher.mint(7).unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(stored_a.id, stored_b.id);
        assert_eq!(a.expose().len(), 3 + 48);
        assert!(a.expose().starts_with("tg_"));
        assert!(a.expose().bytes().all(|c| c.is_ascii_graphic()));
        assert_eq!(stored_a.hash, hex::encode(hasher.hash(a.expose())));
        assert!(a.expose().starts_with(&stored_a.prefix) && stored_a.prefix.len() == 8);
        assert!(
            !stored_a.hash.contains(a.expose()),
            "only the hash is stored"
        );
    }

    #[test]
    fn the_hash_depends_on_the_secret() {
        let key = "tg_0123";
        assert_ne!(
            hasher("secret-one").hash(key),
            hasher("secret-two").hash(key)
        );
        assert_eq!(
            hasher("secret-one").hash(key),
            hasher("secret-one").hash(key)
        );
    }
}
