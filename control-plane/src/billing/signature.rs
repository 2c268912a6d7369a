//! Verifying the `Stripe-Signature` header of a webhook delivery, over the raw body bytes.
//!
//! The header is `t=<unix seconds>,v1=<hex hmac>[,v1=…][,v0=…]`; the signed payload is
//! `"{t}.{body}"`, HMAC-SHA256 under the endpoint's secret. Any one matching `v1` is enough
//! (Stripe sends several while a secret is being rolled). Comparison is constant-time, and a
//! timestamp more than the tolerance away from now is refused, so a captured delivery cannot
//! be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Stripe's own default tolerance.
pub const TOLERANCE_SECONDS: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no v1 signature matches")]
    Mismatch,
}

pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: u64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if timestamp.abs_diff(now) > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    let expected = sign(timestamp, body, secret);
    let matches = signatures
        .iter()
        .any(|candidate| candidate.as_bytes().ct_eq(expected.as_bytes()).into());
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `v1` signature of `body` at `timestamp` (hex).
pub fn sign(timestamp: u64, body: &[u8], secret: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;

    #[test]
    fn a_good_signature_passes_and_any_v1_may_match() {
        let good = sign(1000, BODY, SECRET);
        assert_eq!(
            verify(Some(&format!("t=1000,v1={good}")), BODY, SECRET, 1000),
            Ok(())
        );
        let rolled = format!(
            "t=1000,v1={},v1={good},v0=abc",
            sign(1000, BODY, "whsec_old")
        );
        assert_eq!(verify(Some(&rolled), BODY, SECRET, 1200), Ok(()));
    }

    #[test]
    fn forged_tampered_stale_and_malformed_signatures_fail() {
        let good = sign(1000, BODY, SECRET);
        let header = format!("t=1000,v1={good}");
        assert_eq!(
            verify(Some(&header), br#"{"id":"evt_2"}"#, SECRET, 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, "whsec_other", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, SECRET, 1301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(Some(&header), BODY, SECRET, 699),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(None, BODY, SECRET, 1000),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some("v1=abc"), BODY, SECRET, 1000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some("t=1000"), BODY, SECRET, 1000),
            Err(SignatureError::Malformed)
        );
    }
}
