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

/// Nominal window of a calendar-month quota in `RateLimit-Policy` (30 days); the reset time
/// says when the month really starts over.
const MONTH_SECONDS: u64 = 30 * 86_400;

/// The headers describing where the tenant stands. `RateLimit-Policy` lists every policy
/// (the rolling window, and the month when the tier has one); `RateLimit` and the
/// `X-RateLimit-*` trio describe the one closest to exhaustion.
pub fn quota_headers(quota: &Quota) -> Vec<(&'static str, String)> {
    let mut policies = format!(
        "\"{}\";q={};w={}",
        quota.policy, quota.limit, quota.window_seconds
    );
    let (mut name, mut limit, mut remaining, mut reset_ms) = (
        quota.policy.clone(),
        u64::from(quota.limit),
        u64::from(quota.remaining),
        quota.reset_ms,
    );
    if let Some(month) = &quota.monthly {
        let month_name = format!("{}-monthly", quota.policy);
        policies.push_str(&format!(
            ", \"{month_name}\";q={};w={MONTH_SECONDS}",
            month.limit
        ));
        // The smaller share left binds: month.remaining / month.limit < remaining / limit.
        if u128::from(month.remaining) * u128::from(limit)
            < u128::from(remaining) * u128::from(month.limit)
        {
            (name, limit, remaining, reset_ms) =
                (month_name, month.limit, month.remaining, month.reset_ms);
        }
    }
    let reset = ceil_seconds(reset_ms);
    vec![
        (X_LIMIT, limit.to_string()),
        (X_REMAINING, remaining.to_string()),
        (X_RESET, reset.to_string()),
        (POLICY, policies),
        (RATELIMIT, format!("\"{name}\";r={remaining};t={reset}")),
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
            monthly: None,
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
    fn with_a_monthly_quota_both_policies_are_listed_and_the_tighter_one_reported() {
        let mut quota = Quota {
            policy: "standard".into(),
            limit: 60,
            window_seconds: 60,
            remaining: 50,
            reset_ms: 10_000,
            monthly: Some(tollgate_protocol::MonthlyQuota {
                limit: 100_000,
                remaining: 0,
                reset_ms: 86_400_000,
            }),
        };
        let get = |headers: &[(&str, String)], name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let headers = quota_headers(&quota);
        assert_eq!(
            get(&headers, POLICY).as_deref(),
            Some("\"standard\";q=60;w=60, \"standard-monthly\";q=100000;w=2592000")
        );
        assert_eq!(
            get(&headers, RATELIMIT).as_deref(),
            Some("\"standard-monthly\";r=0;t=86400")
        );
        assert_eq!(get(&headers, X_LIMIT).as_deref(), Some("100000"));

        quota.monthly = Some(tollgate_protocol::MonthlyQuota {
            limit: 100_000,
            remaining: 99_000,
            reset_ms: 1,
        });
        let headers = quota_headers(&quota);
        assert_eq!(
            get(&headers, RATELIMIT).as_deref(),
            Some("\"standard\";r=50;t=10"),
            "the minute binds"
        );
    }

    #[test]
    fn seconds_round_up_never_down() {
        assert_eq!(ceil_seconds(0), 0);
        assert_eq!(ceil_seconds(1), 1);
        assert_eq!(ceil_seconds(1000), 1);
        assert_eq!(ceil_seconds(1001), 2);
    }
}
