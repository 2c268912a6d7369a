//! Usage tokens: short-lived, read-only credentials for `GET /api/v1/usage`, so that a
//! tenant's dashboard in a browser can show the API USAGE panel without holding the tenant's
//! API key. The dashboard's backend, which holds the key, mints one with
//! `POST /api/v1/usage/tokens` and hands it to the page.
//!
//! Tokens are stateless: `tgu_<tenant id>.<key id>.<expiry, Unix seconds>.<MAC>`, the MAC
//! being HMAC-SHA256 (lower-case hex, one spelling) over the tenant id, the id of the API key
//! that minted it and the expiry, under a key derived from the key secret. So nothing is
//! stored, every replica verifies any replica's tokens, and changing the key secret voids
//! tokens as it voids API keys. A token is never an API key: keys are looked up by their
//! hash, and no stored hash is a token's, so the decision path, billing and minting refuse a
//! token as an unknown key (401). Only the usage endpoint reads the `tgu_` prefix, and it
//! also checks that the minting key still works: revoking a leaked key voids the tokens it
//! minted, and so does its tenant's suspension. The lifetime is bounded
//! (`TOLLGATE_USAGE_TOKEN_TTL_SECS`, at most an hour).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// What every usage token starts with; API keys start with `tg_`, so the two never mix.
pub const TOKEN_PREFIX: &str = "tgu_";

/// The longest token this module mints is about 125 bytes; anything longer is not one.
const MAX_TOKEN_BYTES: usize = 256;
/// Tenant and key ids are `tn_` / `key_` and hex; this bounds what is parsed.
const MAX_ID_BYTES: usize = 64;
/// HMAC-SHA256, hex.
const MAC_HEX_LEN: usize = 64;
/// The derivation label: a MAC key for tokens that no other use of the key secret shares.
const KEY_LABEL: &[u8] = b"tollgate usage token key v1";

/// Mints and verifies usage tokens.
#[derive(Clone)]
pub struct UsageTokens {
    /// Keyed once with the derived key; cloning the state is cheaper than re-keying.
    mac: Hmac<Sha256>,
    ttl_secs: u64,
}

/// A token and when it stops working. Not `Debug`: the token is a credential, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedToken {
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this control-plane minted: malformed, tampered with, or from another
    /// key secret.
    #[error("the usage token is not valid")]
    Invalid,
    /// Authentic, but past its expiry.
    #[error("the usage token has expired; mint a new one")]
    Expired,
}

impl UsageTokens {
    pub fn new(key_secret: &Secret, ttl_secs: u64) -> Self {
        // HMAC takes keys of any length, so neither step can fail.
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(key_secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        derive.update(KEY_LABEL);
        let key = derive.finalize().into_bytes();
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { mac, ttl_secs }
    }

    /// How long a minted token lasts, in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// Whether `credential` claims to be a usage token (it may still be forged).
    pub fn is_token(credential: &str) -> bool {
        credential.starts_with(TOKEN_PREFIX)
    }

    /// A token for `tenant`, minted with its key `key_id`, valid from `now` (Unix seconds) for
    /// the configured lifetime.
    pub fn mint(&self, tenant: &str, key_id: &str, now: u64) -> MintedToken {
        let expires_at = now.saturating_add(self.ttl_secs);
        let mac = self
            .mac_of(tenant, key_id, expires_at)
            .finalize()
            .into_bytes();
        MintedToken {
            token: format!(
                "{TOKEN_PREFIX}{tenant}.{key_id}.{expires_at}.{}",
                hex::encode(mac)
            ),
            expires_at,
        }
    }

    /// Who an authentic token, unexpired at `now`, was minted for: the tenant, and the key
    /// that minted it (which the caller checks still works).
    pub fn verify<'a>(&self, token: &'a str, now: u64) -> Result<TokenClaims<'a>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let body = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::Invalid)?;
        let mut parts = body.split('.');
        let (Some(tenant), Some(key_id), Some(expiry), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Invalid);
        };
        let id_ok = |id: &str| {
            !id.is_empty()
                && id.len() <= MAX_ID_BYTES
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        // Digits only, and lower-case hex only: `parse` alone would take a leading `+`, and
        // `hex::decode` upper case, and two spellings of one token would be two tokens.
        let expiry_ok =
            !expiry.is_empty() && expiry.len() <= 20 && expiry.bytes().all(|b| b.is_ascii_digit());
        let mac_ok =
            mac.len() == MAC_HEX_LEN && mac.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !id_ok(tenant) || !id_ok(key_id) || !expiry_ok || !mac_ok {
            return Err(TokenError::Invalid);
        }
        let expires_at: u64 = expiry.parse().map_err(|_| TokenError::Invalid)?;
        let mac = hex::decode(mac).map_err(|_| TokenError::Invalid)?;
        // The MAC first, in constant time: a tampered expiry is invalid, not expired.
        self.mac_of(tenant, key_id, expires_at)
            .verify_slice(&mac)
            .map_err(|_| TokenError::Invalid)?;
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(TokenClaims { tenant, key_id })
    }

    /// What the budgets of the public listener key a token by: its tenant (`tgu_<tenant>`),
    /// so minting many tokens buys no more reads than one. Anything else is returned whole.
    pub fn budget_key(credential: &str) -> &str {
        if Self::is_token(credential) {
            credential.split('.').next().unwrap_or(credential)
        } else {
            credential
        }
    }

    fn mac_of(&self, tenant: &str, key_id: &str, expires_at: u64) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        // The ids have no `\n`, so the input splits one way only.
        mac.update(tenant.as_bytes());
        mac.update(b"\n");
        mac.update(key_id.as_bytes());
        mac.update(b"\n");
        mac.update(expires_at.to_string().as_bytes());
        mac
    }
}

/// What a verified token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims<'a> {
    pub tenant: &'a str,
    /// The API key that minted it.
    pub key_id: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(secret: &str, ttl: u64) -> UsageTokens {
        UsageTokens::new(&Secret::new(secret.to_owned()), ttl)
    }

    const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cret";

    const CLAIMS: TokenClaims<'static> = TokenClaims {
        tenant: "tn_0123456789abcdef",
        key_id: "key_1a2b3c4d",
    };

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let tokens = tokens(SECRET, 900);
        let minted = tokens.mint(CLAIMS.tenant, CLAIMS.key_id, 1_000);
        assert_eq!(minted.expires_at, 1_900);
        assert!(UsageTokens::is_token(&minted.token));
        assert!(minted.token.bytes().all(|b| b.is_ascii_graphic()));
        assert!(minted.token.len() < MAX_TOKEN_BYTES);
        assert_eq!(tokens.verify(&minted.token, 1_000), Ok(CLAIMS));
        assert_eq!(tokens.verify(&minted.token, 1_899), Ok(CLAIMS));
        assert_eq!(
            tokens.verify(&minted.token, 1_900),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn any_change_to_a_token_makes_it_invalid() {
        let tokens = tokens(SECRET, 900);
        let token = tokens.mint(CLAIMS.tenant, CLAIMS.key_id, 1_000).token;
        let longer_life = token.replace(".1900.", ".99999.");
        let other_tenant = token.replace("tn_0123", "tn_9123");
        let other_key = token.replace("key_1a2b", "key_9a2b");
        let (body, mac) = token.rsplit_once('.').unwrap();
        let upper_case = format!("{body}.{}", mac.to_ascii_uppercase());
        let mut flipped = token.clone();
        let last = flipped.pop().map(|c| if c == '0' { '1' } else { '0' });
        flipped.extend(last);
        let plus = token.replace(".1900.", ".+1900.");
        for forged in [
            longer_life.as_str(),
            other_tenant.as_str(),
            other_key.as_str(),
            upper_case.as_str(),
            flipped.as_str(),
            plus.as_str(),
            "tgu_",
            "tgu_tn_1.1900",
            "tgu_tn_1.key_1.1900",
            "tgu_tn_1.key_1.1900.00.extra",
            "tg_0123",
            &token[..token.len() - 2],
        ] {
            assert_eq!(
                tokens.verify(forged, 1_000),
                Err(TokenError::Invalid),
                "{forged}"
            );
        }
        let too_long = format!("{token}{}", "0".repeat(MAX_TOKEN_BYTES));
        assert_eq!(tokens.verify(&too_long, 1_000), Err(TokenError::Invalid));
    }

    #[test]
    fn another_key_secret_voids_every_token() {
        let token = tokens(SECRET, 900).mint("tn_1", "key_1", 0).token;
        let other = tokens("another-secret-another-secret-1234", 900);
        assert_eq!(other.verify(&token, 0), Err(TokenError::Invalid));
    }

    #[test]
    fn budgets_key_a_token_by_its_tenant() {
        let tokens = tokens(SECRET, 900);
        let first = tokens.mint("tn_1", "key_1", 0).token;
        let second = tokens.mint("tn_1", "key_1", 1).token;
        assert_ne!(first, second);
        assert_eq!(UsageTokens::budget_key(&first), "tgu_tn_1");
        assert_eq!(UsageTokens::budget_key(&second), "tgu_tn_1");
        assert_eq!(UsageTokens::budget_key("tg_abc.def"), "tg_abc.def");
    }
}
