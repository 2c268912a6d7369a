//! Which of the client request's tracing headers ride along on the callout, so the
//! control-plane can log its decision with the request's trace and request id. One rule for
//! both sides: the filter forwards only what passes it, and the control-plane checks again
//! (the callout's headers are input like any other).
//!
//! Both are the client's (or an upstream proxy's) bytes, copied into a request the
//! control-plane trusts more than the public listener: only well-formed, length-bounded
//! values go. `traceparent` is W3C Trace Context (`version-trace_id-parent_id-flags`, lower-
//! case hex); `x-request-id` is whatever Envoy or the client set, kept to visible ASCII.

/// The headers forwarded, under their own names.
pub const TRACEPARENT: &str = "traceparent";
pub const REQUEST_ID: &str = "x-request-id";

/// Version 00 is 55 characters; later versions may append fields.
const MAX_TRACEPARENT_LEN: usize = 128;
/// Envoy's own ids are 36-character UUIDs.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The value to forward for header `name`, if it may be forwarded.
pub fn forwardable<'v>(name: &str, value: &'v [u8]) -> Option<&'v str> {
    let value = std::str::from_utf8(value).ok()?;
    let valid = match name {
        TRACEPARENT => is_traceparent(value),
        REQUEST_ID => is_request_id(value),
        _ => false,
    };
    valid.then_some(value)
}

fn is_traceparent(value: &str) -> bool {
    if !(55..=MAX_TRACEPARENT_LEN).contains(&value.len()) {
        return false;
    }
    let lower_hex = |field: &str, len: usize| {
        field.len() == len
            && field
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let not_zero = |field: &str| field.bytes().any(|b| b != b'0');
    let mut fields = value.split('-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    lower_hex(version, 2)
        && version != "ff"
        && lower_hex(trace_id, 32)
        && not_zero(trace_id)
        && lower_hex(parent_id, 16)
        && not_zero(parent_id)
        && lower_hex(flags, 2)
        // Version 00 has exactly four fields; a later one may have more.
        && (version != "00" || fields.next().is_none())
}

fn is_request_id(value: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn well_formed_trace_headers_are_forwarded() {
        assert_eq!(forwardable(TRACEPARENT, VALID.as_bytes()), Some(VALID));
        let uuid = "8f0e0c4e-1d0b-4f3c-9f1e-3b0a2c1d4e5f";
        assert_eq!(forwardable(REQUEST_ID, uuid.as_bytes()), Some(uuid));
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(
            forwardable(TRACEPARENT, later.as_bytes()),
            Some(later),
            "a later version may append fields"
        );
    }

    #[test]
    fn malformed_or_oversized_trace_headers_are_not() {
        let long = format!(
            "01-{}-00f067aa0ba902b7-01-{}",
            &VALID[3..35],
            "a".repeat(90)
        );
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            long.as_str(),
        ] {
            assert_eq!(forwardable(TRACEPARENT, bad.as_bytes()), None, "{bad}");
        }
        for bad in [
            &b""[..],
            b"a b",
            b"\xff\xfe",
            &[b'a'; MAX_REQUEST_ID_LEN + 1],
        ] {
            assert_eq!(forwardable(REQUEST_ID, bad), None, "{bad:?}");
        }
        assert_eq!(forwardable("x-other", b"anything"), None);
    }
}
