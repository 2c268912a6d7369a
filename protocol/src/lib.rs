//! The decision protocol between the filter (wasm32, inside Envoy) and the control-plane.
//!
//! One definition, compiled by both sides, so header names, status meanings and the protocol
//! version cannot drift. The hot path is headers only: the filter sends a [`DecisionRequest`]
//! as request headers on `POST` [`DECISION_PATH`], the control-plane answers with a status code
//! and headers that encode an [`Answer`]. No bodies, no JSON. The version lives in the path so
//! the two sides can be upgraded independently: a new protocol gets a new path, and the old one
//! is served until every filter has moved. See `docs/protocol.md` for the prose version.
//!
//! This crate has no dependency on proxy-wasm, tokio or serde: it must build for wasm32 and
//! stay cheap to link into the filter.

pub mod api_key_extraction;
pub mod trace_context;

use std::borrow::Cow;

/// The versioned path of the decision endpoint on the control-plane's internal listener.
pub const DECISION_PATH: &str = "/v1/decision";

/// Header names of the protocol. Lowercase, as HTTP/2 and Envoy require.
pub mod header {
    /// Request: the tenant's API key, exactly as the client presented it.
    pub const API_KEY: &str = "x-tollgate-api-key";
    /// Request: the name of the limited route, from the filter's configuration.
    pub const ROUTE: &str = "x-tollgate-route";
    /// Request: how many units of quota the request costs (the route's default cost).
    pub const COST: &str = "x-tollgate-cost";
    /// Request (optional): requests of this key the filter's deny cache refused since it last
    /// reported, to be counted as denied. Also set by the filter on usage requests it
    /// forwards to the control-plane, so usage includes denials not yet reported.
    pub const EDGE_DENIED: &str = "x-tollgate-edge-denied";

    /// Answer: the tenant the key belongs to.
    pub const TENANT: &str = "x-tollgate-tenant";
    /// Answer: the tenant's tier, which names the rate-limit policy.
    pub const TIER: &str = "x-tollgate-tier";
    /// Answer: the quota of the window, in units.
    pub const LIMIT: &str = "x-tollgate-limit";
    /// Answer: the window length in whole seconds.
    pub const WINDOW_SECONDS: &str = "x-tollgate-window-seconds";
    /// Answer: units still available in the window after this decision.
    pub const REMAINING: &str = "x-tollgate-remaining";
    /// Answer: milliseconds until the oldest admitted unit leaves the window.
    pub const RESET_MS: &str = "x-tollgate-reset-ms";
    /// Answer (deny only): milliseconds until enough units free to admit this request.
    pub const RETRY_AFTER_MS: &str = "x-tollgate-retry-after-ms";
    /// Answer (optional): the tier's monthly quota, units left this month, and milliseconds
    /// until the month starts over.
    pub const MONTH_LIMIT: &str = "x-tollgate-month-limit";
    pub const MONTH_REMAINING: &str = "x-tollgate-month-remaining";
    pub const MONTH_RESET_MS: &str = "x-tollgate-month-reset-ms";
    /// Answer (200 only): the tier is in shadow mode and this request would have been denied.
    pub const SHADOW_DENY: &str = "x-tollgate-shadow-deny";

    /// Request (optional): the most requests the filter would take in a lease; absent, 0 or
    /// 1: no lease.
    pub const LEASE_MAX: &str = "x-tollgate-lease-max";
    /// Request (optional): `<lease id> <requests>`: an earlier lease of this key and cost is
    /// over, and this many of its requests were never used.
    pub const LEASE_RETURN: &str = "x-tollgate-lease-return";
    /// Answer (allow only, optional): the lease granted with this admission, opaque to the
    /// filter, handed back in [`LEASE_RETURN`].
    pub const LEASE_ID: &str = "x-tollgate-lease-id";
    /// Answer (with [`LEASE_ID`]): requests in the lease, this one included.
    pub const LEASE_REQUESTS: &str = "x-tollgate-lease-requests";
    /// Answer (with [`LEASE_ID`]): the lease may be used until this many milliseconds after
    /// the callout was sent.
    pub const LEASE_TTL_MS: &str = "x-tollgate-lease-ttl-ms";
}

/// Status codes of the answer. Anything else (and 400, 503) means the decision failed and the
/// filter applies its failure mode.
pub mod status {
    pub const ALLOW: u16 = 200;
    pub const DENY: u16 = 429;
    pub const UNKNOWN_KEY: u16 = 401;
    pub const SUSPENDED: u16 = 403;
    /// The callout itself was malformed (a filter/control-plane mismatch).
    pub const BAD_REQUEST: u16 = 400;
    /// The control-plane could not decide (its store is down or slow).
    pub const UNAVAILABLE: u16 = 503;
}

/// Whether `name` may name a route or a tier (policy): 1-64 characters of `a-z 0-9 - _`.
/// Both travel as header values and the tier inside the `RateLimit` structured fields, so
/// both sides hold them to the same rule.
pub fn is_policy_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Longest API key either side accepts, in bytes.
pub const MAX_API_KEY_LEN: usize = 256;

/// The largest [`header::EDGE_DENIED`] count taken; a larger one counts as this many. A filter
/// reports what its cache refused since its last report, far below this; the bound keeps a
/// forged header from overflowing the counters it is added to.
pub const MAX_EDGE_DENIED: u64 = u32::MAX as u64;

/// The most requests one lease may hold, and that a return may name.
pub const MAX_LEASE_REQUESTS: u32 = 1_000_000;

/// The longest a lease id may be.
pub const MAX_LEASE_ID_LEN: usize = 64;

/// What the filter asks: may this key spend `cost` units on `route` now?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRequest<'a> {
    pub api_key: &'a str,
    pub route: &'a str,
    pub cost: u32,
    /// Denials of this key (at this cost) the filter answered from its cache and has not
    /// reported yet.
    pub edge_denied: u64,
    /// The most requests the filter would take in a lease (0 or 1: none).
    pub lease_max: u32,
    /// An earlier lease of this key and cost that is over, with what it left unused.
    pub returned: Option<LeaseReturn<'a>>,
}

/// A lease handed back: `requests` of lease `id` were never used, and never will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseReturn<'a> {
    pub id: &'a str,
    pub requests: u32,
}

/// Admissions of the same key at the same cost granted with an admission, for the filter to
/// spend without asking: `requests` in all (this one included), until `ttl_ms` after the
/// callout was sent. The control-plane has counted them all in the window already, stamped
/// so that none leaves the window earlier than a whole window after its real use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Opaque to the filter; handed back in [`header::LEASE_RETURN`]. Visible ASCII without
    /// spaces, at most [`MAX_LEASE_ID_LEN`] characters.
    pub id: String,
    pub requests: u32,
    pub ttl_ms: u32,
}

/// Whether `id` may be a lease id: 1 to [`MAX_LEASE_ID_LEN`] visible ASCII characters, no space.
pub fn is_lease_id(id: &str) -> bool {
    (1..=MAX_LEASE_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

impl<'a> DecisionRequest<'a> {
    /// The request headers, in addition to the pseudo-headers the caller adds. Key and route
    /// are borrowed: this runs for every limited request.
    pub fn headers(&self) -> Vec<(&'static str, Cow<'a, str>)> {
        let mut headers = Vec::with_capacity(4);
        headers.push((header::API_KEY, Cow::Borrowed(self.api_key)));
        headers.push((header::ROUTE, Cow::Borrowed(self.route)));
        headers.push((header::COST, Cow::Owned(self.cost.to_string())));
        if self.edge_denied > 0 {
            headers.push((
                header::EDGE_DENIED,
                Cow::Owned(self.edge_denied.to_string()),
            ));
        }
        if self.lease_max > 1 {
            headers.push((header::LEASE_MAX, Cow::Owned(self.lease_max.to_string())));
        }
        if let Some(returned) = &self.returned {
            headers.push((
                header::LEASE_RETURN,
                Cow::Owned(format!("{} {}", returned.id, returned.requests)),
            ));
        }
        headers
    }

    /// Reads a request from its headers; `header` looks one up by lowercase name.
    pub fn parse(header: impl Fn(&'static str) -> Option<&'a str>) -> Result<Self, ProtocolError> {
        let api_key = require(&header, header::API_KEY)?;
        let route = require(&header, header::ROUTE)?;
        let cost: u32 = number(&header, header::COST)?;
        if cost == 0 {
            return Err(ProtocolError::InvalidHeader(header::COST));
        }
        let lease_max = match header(header::LEASE_MAX) {
            None => 0,
            Some(_) => number::<u32>(&header, header::LEASE_MAX)?.min(MAX_LEASE_REQUESTS),
        };
        let returned = match header(header::LEASE_RETURN) {
            None => None,
            Some(value) => {
                let invalid = ProtocolError::InvalidHeader(header::LEASE_RETURN);
                let (id, requests) = value.split_once(' ').ok_or(invalid.clone())?;
                let requests: u32 = requests.parse().map_err(|_| invalid.clone())?;
                if !is_lease_id(id) || requests > MAX_LEASE_REQUESTS {
                    return Err(invalid);
                }
                Some(LeaseReturn { id, requests })
            }
        };
        Ok(Self {
            api_key,
            route,
            cost,
            edge_denied: edge_denied(&header)?,
            lease_max,
            returned,
        })
    }
}

/// Where a tenant stands in its window after a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The policy name (the tier), used in `RateLimit-Policy`.
    pub policy: String,
    pub limit: u32,
    pub window_seconds: u32,
    pub remaining: u32,
    pub reset_ms: u64,
    /// The tier's monthly quota, when it has one.
    pub monthly: Option<MonthlyQuota>,
}

/// Where a tenant stands in its calendar-month (UTC) quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthlyQuota {
    pub limit: u64,
    pub remaining: u64,
    /// Milliseconds until the month starts over.
    pub reset_ms: u64,
}

/// The control-plane's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Allow {
        tenant: String,
        quota: Quota,
        /// More admissions the filter may spend without asking.
        lease: Option<Lease>,
    },
    Deny {
        tenant: String,
        quota: Quota,
        retry_after_ms: u64,
    },
    /// The tier is in shadow mode: the request would have been denied, and is let through.
    ShadowDeny {
        tenant: String,
        quota: Quota,
        retry_after_ms: u64,
    },
    UnknownKey,
    Suspended {
        tenant: String,
    },
}

impl Answer {
    pub fn status(&self) -> u16 {
        match self {
            Answer::Allow { .. } | Answer::ShadowDeny { .. } => status::ALLOW,
            Answer::Deny { .. } => status::DENY,
            Answer::UnknownKey => status::UNKNOWN_KEY,
            Answer::Suspended { .. } => status::SUSPENDED,
        }
    }

    /// The answer's headers.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(8);
        match self {
            Answer::Allow {
                tenant,
                quota,
                lease,
            } => {
                headers.push((header::TENANT, tenant.clone()));
                push_quota(&mut headers, quota);
                if let Some(lease) = lease {
                    headers.push((header::LEASE_ID, lease.id.clone()));
                    headers.push((header::LEASE_REQUESTS, lease.requests.to_string()));
                    headers.push((header::LEASE_TTL_MS, lease.ttl_ms.to_string()));
                }
            }
            Answer::Deny {
                tenant,
                quota,
                retry_after_ms,
            }
            | Answer::ShadowDeny {
                tenant,
                quota,
                retry_after_ms,
            } => {
                headers.push((header::TENANT, tenant.clone()));
                push_quota(&mut headers, quota);
                headers.push((header::RETRY_AFTER_MS, retry_after_ms.to_string()));
                if matches!(self, Answer::ShadowDeny { .. }) {
                    headers.push((header::SHADOW_DENY, "1".to_owned()));
                }
            }
            Answer::UnknownKey => {}
            Answer::Suspended { tenant } => headers.push((header::TENANT, tenant.clone())),
        }
        headers
    }

    /// Reads an answer from the status and headers of the control-plane's response.
    /// `status` is `None` when the response had no (numeric) `:status`.
    pub fn parse<'h>(
        status: Option<u16>,
        header: impl Fn(&'static str) -> Option<&'h str>,
    ) -> Result<Self, ProtocolError> {
        match status {
            Some(status::ALLOW) if header(header::SHADOW_DENY).is_some() => {
                Ok(Answer::ShadowDeny {
                    tenant: require(&header, header::TENANT)?.to_owned(),
                    quota: parse_quota(&header)?,
                    retry_after_ms: number(&header, header::RETRY_AFTER_MS)?,
                })
            }
            Some(status::ALLOW) => Ok(Answer::Allow {
                tenant: require(&header, header::TENANT)?.to_owned(),
                quota: parse_quota(&header)?,
                lease: parse_lease(&header)?,
            }),
            Some(status::DENY) => Ok(Answer::Deny {
                tenant: require(&header, header::TENANT)?.to_owned(),
                quota: parse_quota(&header)?,
                retry_after_ms: number(&header, header::RETRY_AFTER_MS)?,
            }),
            Some(status::UNKNOWN_KEY) => Ok(Answer::UnknownKey),
            Some(status::SUSPENDED) => Ok(Answer::Suspended {
                tenant: require(&header, header::TENANT)?.to_owned(),
            }),
            Some(other) => Err(ProtocolError::UnexpectedStatus(other)),
            None => Err(ProtocolError::MissingStatus),
        }
    }
}

/// The optional [`header::EDGE_DENIED`] count; absent means none, and more than
/// [`MAX_EDGE_DENIED`] counts as that many.
pub fn edge_denied<'h>(
    header: &impl Fn(&'static str) -> Option<&'h str>,
) -> Result<u64, ProtocolError> {
    match header(header::EDGE_DENIED) {
        None => Ok(0),
        Some(_) => number::<u64>(header, header::EDGE_DENIED).map(|n| n.min(MAX_EDGE_DENIED)),
    }
}

/// The lease of an allow, if it has one: an id, at least one request, a TTL.
fn parse_lease<'h>(
    header: &impl Fn(&'static str) -> Option<&'h str>,
) -> Result<Option<Lease>, ProtocolError> {
    let Some(id) = header(header::LEASE_ID) else {
        return Ok(None);
    };
    if !is_lease_id(id) {
        return Err(ProtocolError::InvalidHeader(header::LEASE_ID));
    }
    let requests: u32 = number(header, header::LEASE_REQUESTS)?;
    if !(1..=MAX_LEASE_REQUESTS).contains(&requests) {
        return Err(ProtocolError::InvalidHeader(header::LEASE_REQUESTS));
    }
    Ok(Some(Lease {
        id: id.to_owned(),
        requests,
        ttl_ms: number(header, header::LEASE_TTL_MS)?,
    }))
}

fn push_quota(headers: &mut Vec<(&'static str, String)>, quota: &Quota) {
    headers.push((header::TIER, quota.policy.clone()));
    headers.push((header::LIMIT, quota.limit.to_string()));
    headers.push((header::WINDOW_SECONDS, quota.window_seconds.to_string()));
    headers.push((header::REMAINING, quota.remaining.to_string()));
    headers.push((header::RESET_MS, quota.reset_ms.to_string()));
    if let Some(monthly) = &quota.monthly {
        headers.push((header::MONTH_LIMIT, monthly.limit.to_string()));
        headers.push((header::MONTH_REMAINING, monthly.remaining.to_string()));
        headers.push((header::MONTH_RESET_MS, monthly.reset_ms.to_string()));
    }
}

fn parse_quota<'h>(
    header: &impl Fn(&'static str) -> Option<&'h str>,
) -> Result<Quota, ProtocolError> {
    Ok(Quota {
        policy: require(header, header::TIER)?.to_owned(),
        limit: number(header, header::LIMIT)?,
        window_seconds: number(header, header::WINDOW_SECONDS)?,
        remaining: number(header, header::REMAINING)?,
        reset_ms: number(header, header::RESET_MS)?,
        monthly: match header(header::MONTH_LIMIT) {
            None => None,
            Some(_) => Some(MonthlyQuota {
                limit: number(header, header::MONTH_LIMIT)?,
                remaining: number(header, header::MONTH_REMAINING)?,
                reset_ms: number(header, header::MONTH_RESET_MS)?,
            }),
        },
    })
}

fn require<'h>(
    header: &impl Fn(&'static str) -> Option<&'h str>,
    name: &'static str,
) -> Result<&'h str, ProtocolError> {
    match header(name) {
        Some(value) if !value.is_empty() => Ok(value),
        Some(_) => Err(ProtocolError::InvalidHeader(name)),
        None => Err(ProtocolError::MissingHeader(name)),
    }
}

fn number<'h, N: std::str::FromStr>(
    header: &impl Fn(&'static str) -> Option<&'h str>,
    name: &'static str,
) -> Result<N, ProtocolError> {
    require(header, name)?
        .parse()
        .map_err(|_| ProtocolError::InvalidHeader(name))
}

/// Why a request or answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("the response has no status")]
    MissingStatus,
    #[error("unexpected status {0}")]
    UnexpectedStatus(u16),
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header {0} is invalid")]
    InvalidHeader(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn quota() -> Quota {
        Quota {
            policy: "standard".into(),
            limit: 60,
            window_seconds: 60,
            remaining: 0,
            reset_ms: 16_250,
            monthly: None,
        }
    }

    fn round_trip(answer: &Answer) -> Result<Answer, ProtocolError> {
        let headers: HashMap<&str, String> = answer.headers().into_iter().collect();
        Answer::parse(Some(answer.status()), |name| {
            headers.get(name).map(String::as_str)
        })
    }

    #[test]
    fn every_answer_survives_encoding_and_parsing() {
        let answers = [
            Answer::Allow {
                tenant: "tn_1".into(),
                quota: quota(),
                lease: None,
            },
            Answer::Allow {
                tenant: "tn_1".into(),
                quota: quota(),
                lease: Some(Lease {
                    id: "1700000001000.1700000000000.17.40.5".into(),
                    requests: 40,
                    ttl_ms: 1000,
                }),
            },
            Answer::Deny {
                tenant: "tn_1".into(),
                quota: quota(),
                retry_after_ms: 16_250,
            },
            Answer::ShadowDeny {
                tenant: "tn_1".into(),
                quota: quota(),
                retry_after_ms: 1_000,
            },
            Answer::Deny {
                tenant: "tn_1".into(),
                quota: Quota {
                    monthly: Some(MonthlyQuota {
                        limit: 100_000,
                        remaining: 0,
                        reset_ms: 86_400_000,
                    }),
                    ..quota()
                },
                retry_after_ms: 86_400_000,
            },
            Answer::UnknownKey,
            Answer::Suspended {
                tenant: "tn_2".into(),
            },
        ];
        for answer in answers {
            assert_eq!(round_trip(&answer), Ok(answer.clone()), "{answer:?}");
        }
    }

    #[test]
    fn a_request_survives_encoding_and_parsing() {
        let returned = LeaseReturn {
            id: "1700000001000.1700000000000.17.40.5",
            requests: 12,
        };
        for (edge_denied, lease_max, returned) in [(0, 0, None), (17, 64, Some(returned))] {
            let request = DecisionRequest {
                api_key: "tg_abc",
                route: "predict",
                cost: 5,
                edge_denied,
                lease_max,
                returned,
            };
            let headers: HashMap<&str, String> = request
                .headers()
                .into_iter()
                .map(|(name, value)| (name, value.into_owned()))
                .collect();
            assert_eq!(headers.contains_key(header::EDGE_DENIED), edge_denied > 0);
            let parsed = DecisionRequest::parse(|name| headers.get(name).map(String::as_str));
            assert_eq!(parsed, Ok(request));
        }
    }

    #[test]
    fn a_request_with_zero_or_garbled_cost_is_rejected() {
        for cost in ["0", "-1", "five", ""] {
            let parsed = DecisionRequest::parse(|name| match name {
                header::COST => Some(cost),
                _ => Some("x"),
            });
            assert_eq!(
                parsed,
                Err(ProtocolError::InvalidHeader(header::COST)),
                "cost {cost:?}"
            );
        }
    }

    #[test]
    fn an_allow_without_quota_headers_is_an_error_not_a_default() {
        let parsed = Answer::parse(Some(200), |name| (name == header::TENANT).then_some("tn_1"));
        assert_eq!(parsed, Err(ProtocolError::MissingHeader(header::TIER)));
    }

    #[test]
    fn failure_statuses_and_a_missing_status_are_errors() {
        assert_eq!(
            Answer::parse(Some(503), |_| None),
            Err(ProtocolError::UnexpectedStatus(503))
        );
        assert_eq!(
            Answer::parse(Some(504), |_| None),
            Err(ProtocolError::UnexpectedStatus(504))
        );
        assert_eq!(
            Answer::parse(None, |_| None),
            Err(ProtocolError::MissingStatus)
        );
    }

    #[test]
    fn lease_headers_are_held_to_their_bounds() {
        fn request<'a>(
            lease_max: &'a str,
            returned: &'a str,
        ) -> Result<DecisionRequest<'a>, ProtocolError> {
            DecisionRequest::parse(move |name| match name {
                header::COST => Some("1"),
                header::LEASE_MAX => Some(lease_max),
                header::LEASE_RETURN => Some(returned),
                header::EDGE_DENIED => None,
                _ => Some("x"),
            })
        }
        let clamped = request("4000000000", "id 3").unwrap();
        assert_eq!(
            clamped.lease_max, MAX_LEASE_REQUESTS,
            "more than the most is the most"
        );
        let too_long = format!("{} 1", "x".repeat(MAX_LEASE_ID_LEN + 1));
        for bad in ["", "id", "id -1", "id 1000001", "a b 1", "é 1", &too_long] {
            assert_eq!(
                request("1", bad),
                Err(ProtocolError::InvalidHeader(header::LEASE_RETURN)),
                "{bad:?}"
            );
        }
        fn allow(id: &str, requests: &str) -> Result<Answer, ProtocolError> {
            Answer::parse(Some(200), move |name| match name {
                header::LEASE_ID => Some(id),
                header::LEASE_REQUESTS => Some(requests),
                header::SHADOW_DENY | header::MONTH_LIMIT => None,
                header::TIER | header::TENANT => Some("t"),
                _ => Some("1"),
            })
        }
        let Ok(Answer::Allow { lease, .. }) = allow("L1", "5") else {
            panic!("an allow with a lease")
        };
        assert_eq!(
            lease,
            Some(Lease {
                id: "L1".into(),
                requests: 5,
                ttl_ms: 1
            })
        );
        assert_eq!(
            allow("L1", "0"),
            Err(ProtocolError::InvalidHeader(header::LEASE_REQUESTS))
        );
        assert_eq!(
            allow("has space", "5"),
            Err(ProtocolError::InvalidHeader(header::LEASE_ID))
        );
    }
}
