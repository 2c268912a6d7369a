//! What the filter does with a request, decided in one place.
//!
//! Every limited request ends in exactly one of three ways: it resumes upstream (with the
//! tenant's identity and, later, rate-limit headers on the response), it is answered here with
//! a local reply (401, 403, 429), or the decision failed and the configured [`FailureMode`]
//! applies. [`on_answer`] is the only place that maps a callout's result to one of them, and
//! with the same match to the stats it counts under, what the deny cache learns from it and
//! whether it spends the client address's invalid-key budget; the host glue only carries the
//! [`Decision`] out. A refusal served from the deny cache gets its reply from the same
//! function as the callout's ([`on_cached`]), and so does an admission spent from a lease
//! ([`on_leased`]), so the two cannot differ.

use serde::Serialize;
use tollgate_protocol::{Answer, ProtocolError, Quota};

use crate::config::FailureMode;
use crate::deny_cache::{CachedDeny, Learned, Refusal};
use crate::leases::{Grant, Leased};
use crate::ratelimit_headers::{RETRY_AFTER, ceil_seconds, quota_headers};
use tollgate_protocol::api_key_extraction::KeyError;

/// The tenant's id, set by the filter on requests it admits.
pub const TENANT_ID: &str = "x-tenant-id";
/// The tenant's tier, set by the filter on requests it admits.
pub const TIER: &str = "x-tollgate-tier";
/// Set on the response of a request that a shadow-mode tier would have refused; the value is
/// the policy (tier) name.
pub const WOULD_LIMIT: &str = "x-tollgate-would-limit";
/// Set instead of the identity when the failure mode let a request through unchecked; the
/// value says why.
pub const UNCHECKED: &str = "x-tollgate-unchecked";
/// Headers only the filter may set. Removed from every client request that goes upstream, so a
/// tenant can never claim another identity towards the backend, nor report denials of its own.
pub const RESERVED_HEADERS: [&str; 4] = [
    TENANT_ID,
    TIER,
    UNCHECKED,
    tollgate_protocol::header::EDGE_DENIED,
];

pub type Headers = Vec<(&'static str, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Continue upstream, setting `upstream` on the request and adding `response` to the
    /// response.
    Resume {
        upstream: Headers,
        response: Headers,
    },
    /// Answer the client from Envoy.
    Reply(LocalReply),
    /// Answer the client from Envoy after a hold (`held_replies`): a refusal to a client that
    /// keeps asking after it was refused (see [`crate::held_replies`]).
    Hold(LocalReply),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Headers,
    pub body: String,
}

/// Why no decision could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalloutFailure {
    /// Envoy refused to dispatch the callout (e.g. an unknown cluster) or to hand over its
    /// answer.
    #[error("the host failed the callout: {0}")]
    Host(String),
    #[error("the control-plane did not answer in time")]
    Timeout,
    #[error("the control-plane could not decide (status {0})")]
    Unavailable(u16),
    #[error("the control-plane's answer is unreadable: {0}")]
    Garbled(ProtocolError),
}

impl CalloutFailure {
    /// The cause its log line is rate-limited under (see [`crate::log_limit`]).
    pub fn log_cause(&self) -> &'static str {
        match self {
            CalloutFailure::Host(_) => "no decision (host_error)",
            CalloutFailure::Timeout => "no decision (timeout)",
            CalloutFailure::Unavailable(_) => "no decision (unavailable)",
            CalloutFailure::Garbled(_) => "no decision (invalid_answer)",
        }
    }
}

impl CalloutFailure {
    /// Classifies a response that is not a valid answer. Envoy synthesises 504 for a callout
    /// timeout and 503 when the cluster is unreachable.
    pub fn from_protocol(error: ProtocolError) -> Self {
        match error {
            ProtocolError::UnexpectedStatus(504) => CalloutFailure::Timeout,
            ProtocolError::UnexpectedStatus(status) if status >= 500 => {
                CalloutFailure::Unavailable(status)
            }
            other => CalloutFailure::Garbled(other),
        }
    }

    /// The value of [`UNCHECKED`] in fail-open mode.
    fn reason(&self) -> &'static str {
        match self {
            CalloutFailure::Host(_) => "host_error",
            CalloutFailure::Timeout => "timeout",
            CalloutFailure::Unavailable(_) => "unavailable",
            CalloutFailure::Garbled(_) => "invalid_answer",
        }
    }
}

/// Everything a callout's answer (or its failure) leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The stats it counts under.
    pub stats: &'static [Stat],
    /// What the edge deny cache learns from it.
    pub learned: Learned,
    /// Whether it counts against the client address's invalid-key budget (an unknown key).
    pub unknown_key: bool,
    /// The lease granted with an admission, for the lease table to keep.
    pub grant: Option<Grant>,
    /// What happens to the request.
    pub action: Action,
}

/// The one function that turns a decision (or its failure) into what the filter does. One
/// match, so the stats, the cache and the action cannot disagree about an answer.
pub fn on_answer(failure_mode: FailureMode, answer: Result<Answer, CalloutFailure>) -> Decision {
    match answer {
        Ok(Answer::Allow {
            tenant,
            quota,
            lease,
        }) => Decision {
            stats: &[Stat::Allowed],
            learned: Learned::Admitted,
            unknown_key: false,
            action: admitted(tenant.clone(), &quota),
            grant: lease.map(|lease| Grant {
                tenant,
                quota,
                lease,
            }),
        },
        Ok(Answer::ShadowDeny { tenant, quota, .. }) => {
            let mut response = quota_headers(&quota);
            response.push((WOULD_LIMIT, quota.policy.clone()));
            Decision {
                stats: &[Stat::ShadowDenied],
                // Let through: a refusal cached before the tier went into shadow mode must
                // not go on refusing it.
                learned: Learned::Admitted,
                unknown_key: false,
                // A would-be denial is never leased: each one is decided and reported.
                grant: None,
                action: Action::Resume {
                    upstream: vec![(TENANT_ID, tenant), (TIER, quota.policy)],
                    response,
                },
            }
        }
        Ok(Answer::Deny {
            quota,
            retry_after_ms,
            ..
        }) => refused(Refusal::Denied(CachedDeny {
            quota,
            retry_after_ms,
        })),
        Ok(Answer::UnknownKey) => refused(Refusal::UnknownKey),
        Ok(Answer::Suspended { .. }) => refused(Refusal::Suspended),
        Err(failure) => match failure_mode {
            FailureMode::Open => Decision {
                stats: &[Stat::CalloutFailed, Stat::PassedFailOpen],
                learned: Learned::Nothing,
                unknown_key: false,
                grant: None,
                action: Action::Resume {
                    upstream: vec![(UNCHECKED, failure.reason().to_owned())],
                    response: Vec::new(),
                },
            },
            FailureMode::Closed => Decision {
                stats: &[Stat::CalloutFailed],
                learned: Learned::Nothing,
                unknown_key: false,
                grant: None,
                action: Action::Reply(problem(
                    503,
                    "rate_limiter_unavailable",
                    "The rate limiter could not decide on this request; retry shortly.",
                    vec![(RETRY_AFTER, "1".to_owned())],
                    None,
                )),
            },
        },
    }
}

/// The control-plane refused the request: reply, and teach the deny cache.
fn refused(refusal: Refusal) -> Decision {
    let (stats, unknown_key): (&'static [Stat], bool) = match refusal {
        Refusal::Denied(_) => (&[Stat::Denied], false),
        Refusal::UnknownKey => (&[Stat::Unauthorized], true),
        Refusal::Suspended => (&[Stat::Forbidden], false),
    };
    Decision {
        stats,
        action: Action::Reply(refusal_reply(&refusal)),
        learned: Learned::Refused(refusal),
        unknown_key,
        grant: None,
    }
}

/// An admission: the tenant's identity upstream, where it stands on the response.
fn admitted(tenant: String, quota: &Quota) -> Action {
    Action::Resume {
        upstream: vec![(TENANT_ID, tenant), (TIER, quota.policy.clone())],
        response: quota_headers(quota),
    }
}

/// An admission spent from a lease, without a callout: the stats it counts under and the
/// action, the same as an admission from the control-plane got. Takes the admission, whose
/// tenant becomes the upstream header without a copy (this runs for most admitted requests).
pub fn on_leased(leased: Leased) -> (&'static [Stat], Action) {
    (
        &[Stat::Allowed, Stat::AllowedLeased],
        admitted(leased.tenant, &leased.quota),
    )
}

/// A refusal the deny cache answered, without a callout: the stats it counts under and the
/// reply, the same as the control-plane's own refusal got.
pub fn on_cached(refusal: &Refusal) -> (&'static [Stat], LocalReply) {
    let stats: &'static [Stat] = match refusal {
        Refusal::Denied(_) => &[Stat::DeniedCached],
        Refusal::UnknownKey => &[Stat::Unauthorized, Stat::UnauthorizedCached],
        Refusal::Suspended => &[Stat::Forbidden, Stat::ForbiddenCached],
    };
    (stats, refusal_reply(refusal))
}

fn refusal_reply(refusal: &Refusal) -> LocalReply {
    match refusal {
        Refusal::Denied(denial) => rate_limited(&denial.quota, denial.retry_after_ms),
        Refusal::UnknownKey => unauthorized(
            "invalid_api_key",
            "The API key is not valid.",
            Some("invalid_token"),
        ),
        Refusal::Suspended => problem(
            403,
            "tenant_suspended",
            "The tenant of this API key is suspended.",
            Vec::new(),
            None,
        ),
    }
}

/// The 429 for a request from a client address over its invalid-key budget
/// ([`crate::invalid_keys`]), refused without a callout until its window ends.
pub fn too_many_invalid_keys(retry_after_ms: u64) -> LocalReply {
    let retry_after = ceil_seconds(retry_after_ms);
    let detail = format!(
        "Too many requests with unknown API keys came from this address; retry in {retry_after} s."
    );
    problem(
        429,
        "too_many_invalid_keys",
        &detail,
        vec![(RETRY_AFTER, retry_after.to_string())],
        Some(Members::RetryAfter { retry_after }),
    )
}

/// The 429 repeated from the edge for a control-plane budget that is spent
/// ([`crate::budget_refusals`]): `policy` is the budget's name as a structured-field item
/// (`"usage"`), `headers` what the control-plane's refusal carried (its `RateLimit-Policy`, CORS).
pub fn over_budget(policy: &str, retry_after: u64, mut headers: Headers) -> LocalReply {
    let name = policy.trim_matches('"');
    let detail = format!("The {name} budget is spent; retry in {retry_after} s.");
    headers.push((RETRY_AFTER, retry_after.to_string()));
    headers.push(("ratelimit", format!("{policy};r=0;t={retry_after}")));
    problem(
        429,
        "rate_limited",
        &detail,
        headers,
        Some(Members::RetryAfter { retry_after }),
    )
}

/// The reply for a request without a usable API key; no callout is made for it.
pub fn on_key_error(error: KeyError) -> LocalReply {
    let oauth_error = match error {
        KeyError::Missing => None,
        _ => Some("invalid_request"),
    };
    unauthorized(error.code(), &error.to_string(), oauth_error)
}

/// The reply when the filter cannot make its own request safe to forward.
pub fn internal_error() -> LocalReply {
    problem(
        500,
        "internal_error",
        "The gateway could not process this request.",
        Vec::new(),
        None,
    )
}

/// What happened to a limited request, for the filter's Envoy stats. Most count requests; the
/// lease stats count leases and the requests in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Admitted (from a callout or from a lease).
    Allowed,
    /// Admitted from a lease, without a callout (also counted as [`Stat::Allowed`]).
    AllowedLeased,
    /// Denied by the control-plane while the key held a live lease here (a lease granted to
    /// a request sent beside it had taken the room), and admitted from that lease instead
    /// (also counted as [`Stat::Allowed`] and [`Stat::AllowedLeased`]).
    LeasedAfterDenial,
    Denied,
    /// Denied by the edge deny cache, without a callout.
    DeniedCached,
    /// No usable key, or an unknown one (every 401, from the cache too).
    Unauthorized,
    /// An unknown key answered by the deny cache, without a callout (also counted as
    /// [`Stat::Unauthorized`]).
    UnauthorizedCached,
    /// The tenant is suspended (every 403, from the cache too).
    Forbidden,
    /// A suspended tenant answered by the deny cache, without a callout (also counted as
    /// [`Stat::Forbidden`]).
    ForbiddenCached,
    /// Refused without a callout: the client address is over its invalid-key budget.
    InvalidKeysThrottled,
    /// A client address went over its invalid-key budget (once per window).
    InvalidKeyBudgetExceeded,
    /// A request to the control-plane's public routes answered at the edge with a budget
    /// refusal the control-plane gave the same client ([`crate::budget_refusals`]).
    BudgetRefusedCached,
    /// Refusals held before they were sent ([`crate::held_replies`]).
    RepliesHeld,
    /// Refusals that would have been held but were not, the worker holding its most
    /// (`held_replies.max_held`): sent at once, or left to the control-plane for an upload.
    RepliesNotHeld,
    /// Callouts sent to the control-plane (or attempted: a callout Envoy refused to dispatch
    /// is counted here and in [`Stat::CalloutFailed`]).
    Callouts,
    /// No decision: the control-plane was down, slow or garbled.
    CalloutFailed,
    /// No decision, and the request was let through unchecked.
    PassedFailOpen,
    /// Let through by a shadow-mode tier that would have refused it.
    ShadowDenied,
    /// Leases granted by the control-plane.
    LeasesGranted,
    /// Requests in the leases granted (each lease's first one included).
    LeaseRequestsGranted,
    /// Requests handed back unused, in callouts, from leases that ended.
    LeaseRequestsReturned,
    /// Leases lost with requests left: overwritten in their slot, or not storable. Their
    /// unused requests stay counted in the window until they leave it (under-admission).
    LeasesLost,
    /// The requests those lost leases had left, and the requests of workers' batches given
    /// up unspent when their lease ended (see `leases::WorkerBatches`).
    LeaseRequestsLost,
}

impl Stat {
    pub const ALL: [Stat; 23] = [
        Stat::Allowed,
        Stat::AllowedLeased,
        Stat::LeasedAfterDenial,
        Stat::Denied,
        Stat::DeniedCached,
        Stat::Unauthorized,
        Stat::UnauthorizedCached,
        Stat::Forbidden,
        Stat::ForbiddenCached,
        Stat::InvalidKeysThrottled,
        Stat::InvalidKeyBudgetExceeded,
        Stat::BudgetRefusedCached,
        Stat::RepliesHeld,
        Stat::RepliesNotHeld,
        Stat::Callouts,
        Stat::CalloutFailed,
        Stat::PassedFailOpen,
        Stat::ShadowDenied,
        Stat::LeasesGranted,
        Stat::LeaseRequestsGranted,
        Stat::LeaseRequestsReturned,
        Stat::LeasesLost,
        Stat::LeaseRequestsLost,
    ];

    /// The Envoy stat name (Envoy shows it as `wasmcustom.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Stat::Allowed => "tollgate.requests_allowed",
            Stat::AllowedLeased => "tollgate.requests_allowed_leased",
            Stat::LeasedAfterDenial => "tollgate.requests_leased_after_denial",
            Stat::Denied => "tollgate.requests_denied",
            Stat::DeniedCached => "tollgate.requests_denied_cached",
            Stat::Unauthorized => "tollgate.requests_unauthorized",
            Stat::UnauthorizedCached => "tollgate.requests_unauthorized_cached",
            Stat::Forbidden => "tollgate.requests_forbidden",
            Stat::ForbiddenCached => "tollgate.requests_forbidden_cached",
            Stat::InvalidKeysThrottled => "tollgate.requests_invalid_keys_throttled",
            Stat::InvalidKeyBudgetExceeded => "tollgate.invalid_key_budgets_exceeded",
            Stat::BudgetRefusedCached => "tollgate.requests_budget_refused_cached",
            Stat::RepliesHeld => "tollgate.replies_held",
            Stat::RepliesNotHeld => "tollgate.replies_not_held",
            Stat::Callouts => "tollgate.callouts",
            Stat::CalloutFailed => "tollgate.callout_failures",
            Stat::PassedFailOpen => "tollgate.requests_passed_fail_open",
            Stat::ShadowDenied => "tollgate.requests_shadow_denied",
            Stat::LeasesGranted => "tollgate.leases_granted",
            Stat::LeaseRequestsGranted => "tollgate.lease_requests_granted",
            Stat::LeaseRequestsReturned => "tollgate.lease_requests_returned",
            Stat::LeasesLost => "tollgate.leases_lost",
            Stat::LeaseRequestsLost => "tollgate.lease_requests_lost",
        }
    }

    /// The Envoy stat name of this stat for one limited route:
    /// `tollgate.route.<route>.<stat>`. Route names are `[a-z0-9_-]` (checked in the
    /// configuration), so a `stats_tags` regex in Envoy's bootstrap can cut the name out into
    /// a `tollgate_route` tag (see `envoy/envoy.yaml`); names come from the configuration,
    /// never from a request, so their number is bounded by it.
    pub fn route_name(self, route: &str) -> String {
        let stat = self.name();
        let stat = stat.strip_prefix("tollgate.").unwrap_or(stat);
        format!("tollgate.route.{route}.{stat}")
    }
}

/// The 429 for a denied request, whether the control-plane or the deny cache denied it.
pub fn rate_limited(quota: &Quota, retry_after_ms: u64) -> LocalReply {
    let retry_after = ceil_seconds(retry_after_ms);
    let mut headers = quota_headers(quota);
    headers.push((RETRY_AFTER, retry_after.to_string()));
    let detail = format!(
        "The {} quota of {} per {} s is used up; retry in {} s.",
        quota.policy, quota.limit, quota.window_seconds, retry_after
    );
    let members = Members::Quota {
        retry_after,
        limit: quota.limit,
        policy: &quota.policy,
    };
    problem(429, "rate_limited", &detail, headers, Some(members))
}

fn unauthorized(code: &str, detail: &str, oauth_error: Option<&str>) -> LocalReply {
    let challenge = match oauth_error {
        Some(error) => format!("Bearer realm=\"tollgate\", error=\"{error}\""),
        None => "Bearer realm=\"tollgate\"".to_owned(),
    };
    problem(
        401,
        code,
        detail,
        vec![("www-authenticate", challenge)],
        None,
    )
}

/// An RFC 9457 problem document; `code` is our stable machine-readable member.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u32,
    code: &'a str,
    detail: &'a str,
    #[serde(flatten)]
    members: Option<Members<'a>>,
}

/// What a 429's body adds to the problem document.
#[derive(Serialize)]
#[serde(untagged)]
enum Members<'a> {
    /// Over quota: when to retry, and the quota.
    Quota {
        retry_after: u64,
        limit: u32,
        policy: &'a str,
    },
    /// Refused for another reason: when to retry.
    RetryAfter { retry_after: u64 },
}

fn problem(
    status: u32,
    code: &str,
    detail: &str,
    mut headers: Headers,
    members: Option<Members<'_>>,
) -> LocalReply {
    let body = Problem {
        kind: "about:blank",
        title: title(status),
        status,
        code,
        detail,
        members,
    };
    headers.push(("content-type", "application/problem+json".to_owned()));
    headers.push(("cache-control", "no-store".to_owned()));
    LocalReply {
        status,
        headers,
        // Serialising borrowed strings and numbers cannot fail.
        body: serde_json::to_string(&body).unwrap_or_default(),
    }
}

fn title(status: u32) -> &'static str {
    match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn quota(remaining: u32) -> Quota {
        Quota {
            policy: "standard".into(),
            limit: 60,
            window_seconds: 60,
            remaining,
            reset_ms: 16_400,
            monthly: None,
        }
    }

    fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn reply(decision: Decision) -> LocalReply {
        match decision.action {
            Action::Reply(reply) => reply,
            resume => panic!("expected a local reply, got {resume:?}"),
        }
    }

    fn body(reply: &LocalReply) -> serde_json::Value {
        serde_json::from_str(&reply.body).unwrap()
    }

    #[test]
    fn an_allow_resumes_with_identity_upstream_and_quota_on_the_response() {
        let decision = on_answer(
            FailureMode::Closed,
            Ok(Answer::Allow {
                tenant: "tn_1".into(),
                quota: quota(59),
                lease: None,
            }),
        );
        assert_eq!(decision.stats, [Stat::Allowed]);
        assert_eq!(decision.learned, Learned::Admitted);
        assert!(!decision.unknown_key);
        let Action::Resume { upstream, response } = decision.action else {
            panic!("expected resume, got {:?}", decision.action);
        };
        assert_eq!(header(&upstream, TENANT_ID), Some("tn_1"));
        assert_eq!(header(&upstream, TIER), Some("standard"));
        assert_eq!(header(&response, "x-ratelimit-remaining"), Some("59"));
        assert_eq!(
            header(&response, "ratelimit"),
            Some("\"standard\";r=59;t=17")
        );
    }

    #[test]
    fn an_allow_hands_its_lease_to_the_table_and_a_leased_admission_looks_the_same() {
        let lease = tollgate_protocol::Lease {
            id: "L1".into(),
            requests: 40,
            ttl_ms: 1_000,
        };
        let decision = on_answer(
            FailureMode::Closed,
            Ok(Answer::Allow {
                tenant: "tn_1".into(),
                quota: quota(20),
                lease: Some(lease.clone()),
            }),
        );
        assert_eq!(decision.stats, [Stat::Allowed]);
        assert_eq!(
            decision.grant,
            Some(Grant {
                tenant: "tn_1".into(),
                quota: quota(20),
                lease
            })
        );
        let (stats, action) = on_leased(Leased {
            tenant: "tn_1".into(),
            quota: quota(20),
        });
        assert_eq!(stats, [Stat::Allowed, Stat::AllowedLeased]);
        assert_eq!(action, decision.action, "headers up and down alike");

        let without = on_answer(
            FailureMode::Closed,
            Ok(Answer::Allow {
                tenant: "tn_1".into(),
                quota: quota(20),
                lease: None,
            }),
        );
        assert_eq!(without.grant, None);
        let refusals = [
            Ok(Answer::ShadowDeny {
                tenant: "tn_1".into(),
                quota: quota(0),
                retry_after_ms: 1,
            }),
            Ok(Answer::UnknownKey),
            Err(CalloutFailure::Timeout),
        ];
        for answer in refusals {
            for mode in [FailureMode::Open, FailureMode::Closed] {
                assert_eq!(on_answer(mode, answer.clone()).grant, None, "{answer:?}");
            }
        }
    }

    #[test]
    fn a_deny_is_a_429_problem_with_a_retry_after_rounded_up_and_is_cached() {
        let decision = on_answer(
            FailureMode::Open,
            Ok(Answer::Deny {
                tenant: "tn_1".into(),
                quota: quota(0),
                retry_after_ms: 16_400,
            }),
        );
        assert_eq!(decision.stats, [Stat::Denied]);
        assert_eq!(
            decision.learned,
            Learned::Refused(Refusal::Denied(CachedDeny {
                quota: quota(0),
                retry_after_ms: 16_400
            }))
        );
        assert!(!decision.unknown_key);
        let reply = reply(decision);
        assert_eq!(reply.status, 429);
        assert_eq!(header(&reply.headers, "retry-after"), Some("17"));
        assert_eq!(header(&reply.headers, "x-ratelimit-limit"), Some("60"));
        assert_eq!(
            header(&reply.headers, "ratelimit-policy"),
            Some("\"standard\";q=60;w=60")
        );
        assert_eq!(
            header(&reply.headers, "content-type"),
            Some("application/problem+json")
        );
        let body = body(&reply);
        assert_eq!(body["status"], 429);
        assert_eq!(body["code"], "rate_limited");
        assert_eq!(body["retry_after"], 17);
    }

    #[test]
    fn a_shadow_deny_resumes_and_says_it_would_have_limited() {
        let decision = on_answer(
            FailureMode::Closed,
            Ok(Answer::ShadowDeny {
                tenant: "tn_1".into(),
                quota: quota(0),
                retry_after_ms: 900,
            }),
        );
        assert_eq!(decision.stats, [Stat::ShadowDenied]);
        assert_eq!(
            decision.learned,
            Learned::Admitted,
            "let through: nothing cached may refuse it"
        );
        let Action::Resume { upstream, response } = decision.action else {
            panic!("a shadow deny must resume, got {:?}", decision.action);
        };
        assert_eq!(header(&upstream, TENANT_ID), Some("tn_1"));
        assert_eq!(header(&response, WOULD_LIMIT), Some("standard"));
        assert_eq!(header(&response, "x-ratelimit-remaining"), Some("0"));
    }

    #[test]
    fn unknown_keys_and_suspended_tenants_are_refused_and_cached() {
        let unknown = on_answer(FailureMode::Open, Ok(Answer::UnknownKey));
        assert_eq!(unknown.stats, [Stat::Unauthorized]);
        assert_eq!(unknown.learned, Learned::Refused(Refusal::UnknownKey));
        assert!(unknown.unknown_key, "spends the address's budget");
        let unknown = reply(unknown);
        assert_eq!(unknown.status, 401);
        assert_eq!(body(&unknown)["code"], "invalid_api_key");
        assert_eq!(
            header(&unknown.headers, "www-authenticate"),
            Some("Bearer realm=\"tollgate\", error=\"invalid_token\"")
        );

        let suspended = on_answer(
            FailureMode::Open,
            Ok(Answer::Suspended {
                tenant: "tn_1".into(),
            }),
        );
        assert_eq!(suspended.stats, [Stat::Forbidden]);
        assert_eq!(suspended.learned, Learned::Refused(Refusal::Suspended));
        assert!(!suspended.unknown_key);
        let suspended = reply(suspended);
        assert_eq!(suspended.status, 403);
        assert_eq!(body(&suspended)["code"], "tenant_suspended");
    }

    #[test]
    fn a_refusal_from_the_cache_is_the_same_reply_as_the_callouts() {
        let answers = [
            Answer::UnknownKey,
            Answer::Suspended {
                tenant: "tn_1".into(),
            },
            Answer::Deny {
                tenant: "tn_1".into(),
                quota: quota(0),
                retry_after_ms: 16_400,
            },
        ];
        let cached_stats: [&[Stat]; 3] = [
            &[Stat::Unauthorized, Stat::UnauthorizedCached],
            &[Stat::Forbidden, Stat::ForbiddenCached],
            &[Stat::DeniedCached],
        ];
        for (answer, expected_stats) in answers.into_iter().zip(cached_stats) {
            let decision = on_answer(FailureMode::Closed, Ok(answer.clone()));
            let Learned::Refused(refusal) = &decision.learned else {
                panic!("{answer:?} is cached");
            };
            let (stats, cached) = on_cached(refusal);
            assert_eq!(stats, expected_stats, "{answer:?}");
            assert_eq!(
                cached,
                reply(decision.clone()),
                "{answer:?}: status, headers, body"
            );
        }
    }

    #[test]
    fn an_address_over_its_invalid_key_budget_gets_a_429_saying_when() {
        let reply = too_many_invalid_keys(7_001);
        assert_eq!(reply.status, 429);
        assert_eq!(header(&reply.headers, "retry-after"), Some("8"));
        assert_eq!(
            header(&reply.headers, "content-type"),
            Some("application/problem+json")
        );
        assert_eq!(
            header(&reply.headers, "x-ratelimit-limit"),
            None,
            "no quota"
        );
        let body = body(&reply);
        assert_eq!(body["code"], "too_many_invalid_keys");
        assert_eq!(body["status"], 429);
        assert_eq!(body["retry_after"], 8);
        assert_eq!(body["title"], "Too Many Requests");
        assert_eq!(body.get("limit"), None);
    }

    #[test]
    fn failures_follow_the_failure_mode() {
        let failures = [
            CalloutFailure::Host("BadArgument".into()),
            CalloutFailure::from_protocol(ProtocolError::UnexpectedStatus(504)),
            CalloutFailure::from_protocol(ProtocolError::UnexpectedStatus(503)),
            CalloutFailure::from_protocol(ProtocolError::MissingStatus),
        ];
        for failure in failures {
            let closed = on_answer(FailureMode::Closed, Err(failure.clone()));
            assert_eq!(closed.stats, [Stat::CalloutFailed], "{failure:?}");
            assert_eq!(closed.learned, Learned::Nothing, "{failure:?}");
            assert!(!closed.unknown_key, "{failure:?}");
            assert!(
                failure.log_cause().starts_with("no decision ("),
                "{failure:?}"
            );
            let closed = reply(closed);
            assert_eq!(closed.status, 503, "{failure:?}");
            assert_eq!(body(&closed)["code"], "rate_limiter_unavailable");

            let open = on_answer(FailureMode::Open, Err(failure.clone()));
            assert_eq!(
                open.stats,
                [Stat::CalloutFailed, Stat::PassedFailOpen],
                "{failure:?}"
            );
            assert_eq!(open.learned, Learned::Nothing, "{failure:?}");
            let Action::Resume { upstream, .. } = open.action else {
                panic!("fail-open must resume on {failure:?}");
            };
            assert_eq!(header(&upstream, UNCHECKED), Some(failure.reason()));
            assert_eq!(header(&upstream, TENANT_ID), None);
        }
    }

    #[test]
    fn every_stat_has_its_own_name() {
        let mut names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Stat::ALL.len());
        assert!(names.iter().all(|n| n.starts_with("tollgate.")));
    }

    #[test]
    fn a_route_stat_puts_the_route_where_envoy_cuts_out_its_tag() {
        assert_eq!(
            Stat::DeniedCached.route_name("ingest"),
            "tollgate.route.ingest.requests_denied_cached"
        );
        // The route segment sits between `route.` and the stat, which never holds a dot.
        assert!(Stat::ALL.iter().all(|s| !s.route_name("r").ends_with(".r")));
        assert!(
            Stat::ALL
                .iter()
                .all(|s| s.route_name("r").matches('.').count() == 3)
        );
    }

    #[test]
    fn key_errors_are_401s_that_never_echo_the_key() {
        let reply = on_key_error(KeyError::InvalidCharacters);
        assert_eq!(reply.status, 401);
        assert_eq!(body(&reply)["code"], "malformed_api_key");
        let missing = on_key_error(KeyError::Missing);
        assert_eq!(
            header(&missing.headers, "www-authenticate"),
            Some("Bearer realm=\"tollgate\"")
        );
    }
}
