//! The `Stripe-Signature` header of a webhook delivery, verified over the raw body.
//!
//! Input: the header on the first line (no newline at all: no header), the endpoint secret
//! on the second, `now` (unix seconds, decimal) on the third, the body after that.
//! Properties: any header × body × secret × now is an answer, never a panic; a header that
//! verifies carries the body's signature at a timestamp within the tolerance; and a header
//! built by [`sign`] (after whatever the fuzzer wrote) verifies exactly when its timestamp is
//! within the tolerance, and stops verifying when the body or the secret changes.

use tollgate_control_plane::billing::signature::{SignatureError, TOLERANCE_SECONDS, sign, verify};

pub fn run(data: &[u8]) {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let header = parts.next().filter(|_| data.contains(&b'\n'));
    let header = header.map(|h| String::from_utf8_lossy(h).into_owned());
    let secret = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let now = std::str::from_utf8(parts.next().unwrap_or_default())
        .ok()
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let body = parts.next().unwrap_or_default();

    let verified = verify(header.as_deref(), body, &secret, now);
    assert_eq!(
        verified == Err(SignatureError::Missing),
        header.is_none(),
        "Missing exactly when there is no header"
    );
    if verified.is_ok() {
        let header = header.as_deref().unwrap_or_default();
        let signed_in_tolerance = header
            .split(',')
            .filter_map(|part| part.trim().strip_prefix("t="))
            .filter_map(|t| t.parse::<u64>().ok())
            .filter(|t| t.abs_diff(now) <= TOLERANCE_SECONDS)
            .any(|t| header.contains(&format!("v1={}", sign(t, body, &secret))));
        assert!(signed_in_tolerance, "{header:?} verified");
    }

    // A delivery signed by the secret at a time near `now` (skew from the input's length).
    let skew = i64::try_from(data.len() % 801).unwrap_or(0) - 400;
    let timestamp = now.saturating_add_signed(skew);
    let signed = format!(
        "{},t={timestamp},v1={}",
        header.as_deref().unwrap_or_default(),
        sign(timestamp, body, &secret)
    );
    let expected = if timestamp.abs_diff(now) <= TOLERANCE_SECONDS {
        Ok(())
    } else {
        Err(SignatureError::Stale)
    };
    assert_eq!(
        verify(Some(signed.as_str()), body, &secret, now),
        expected,
        "{signed:?}"
    );
    if expected.is_ok() {
        let mut tampered = body.to_vec();
        tampered.push(b'!');
        assert_eq!(
            verify(Some(signed.as_str()), &tampered, &secret, now),
            Err(SignatureError::Mismatch)
        );
        let other_secret = format!("{secret}!");
        assert_eq!(
            verify(Some(signed.as_str()), body, &other_secret, now),
            Err(SignatureError::Mismatch)
        );
    }
}
