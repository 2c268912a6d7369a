//! The rate-limit response headers, in both dialects clients look for: the de-facto
//! `X-RateLimit-*` trio and the IETF draft fields `RateLimit-Policy` / `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers, structured-field syntax).
//!
//! Times are whole seconds rounded up, so a client that waits what we say is never early.

use tollgate_protocol::Quota;

pub const RETRY_AFTER: &str = "retry-after";
pub const X_LIMIT: &str = "x-ratelimit-limit";
pub const X_REMAINING: &str = "x-ratelimit-remaining";
pub const X_RESET: &str = "x-ratelimit-reset";
pub const POLICY: &str = "ratelimit-policy";
pub const RATELIMIT: &str = "ratelimit";

/// Milliseconds to whole seconds, rounded up.
pub fn ceil_seconds(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The headers describing where the tenant stands in its window.
pub fn quota_headers(quota: &Quota) -> Vec<(&'static str, String)> {
    let reset = ceil_seconds(quota.reset_ms);
    vec![
        (X_LIMIT, quota.limit.to_string()),
        (X_REMAINING, quota.remaining.to_string()),
        (X_RESET, reset.to_string()),
        (
            POLICY,
            format!(
                "\"{}\";q={};w={}",
                quota.policy, quota.limit, quota.window_seconds
            ),
        ),
        (
            RATELIMIT,
            format!("\"{}\";r={};t={}", quota.policy, quota.remaining, reset),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn headers_follow_the_draft_syntax() {
        let quota = Quota {
            policy: "standard".into(),
            limit: 60,
            window_seconds: 60,
            remaining: 0,
            reset_ms: 16_001,
        };
        let headers = quota_headers(&quota);
        let get = |name| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get(X_LIMIT), Some("60"));
        assert_eq!(get(X_REMAINING), Some("0"));
        assert_eq!(get(X_RESET), Some("17"));
        assert_eq!(get(POLICY), Some("\"standard\";q=60;w=60"));
        assert_eq!(get(RATELIMIT), Some("\"standard\";r=0;t=17"));
    }

    #[test]
    fn seconds_round_up_never_down() {
        assert_eq!(ceil_seconds(0), 0);
        assert_eq!(ceil_seconds(1), 1);
        assert_eq!(ceil_seconds(1000), 1);
        assert_eq!(ceil_seconds(1001), 2);
    }
}
