//! The decision protocol, control-plane → filter: an [`Answer`] as a status and headers.
//!
//! Two properties from one input:
//! - parsing: the first line is the `:status` (not a number: no status), the others
//!   `name: value` headers (what the filter's callout receives); an answer that parses has
//!   the status it came with and encodes back to itself; a failure status is an error;
//! - encoding: the same bytes read as an answer (variant, tenant, tier, numbers, monthly
//!   quota); what [`Answer::headers`] produces parses back equal, or is refused when a tenant
//!   or tier name is empty (the control-plane never makes one), or a lease breaks its bounds
//!   (an id not 1–64 visible characters, no requests or too many); never a different answer.

use std::collections::HashMap;

use tollgate_protocol::{
    Answer, Lease, MAX_LEASE_REQUESTS, MonthlyQuota, ProtocolError, Quota, is_lease_id, status,
};

use crate::input::{Headers, Stream, lines};

pub fn run(data: &[u8]) {
    parse_direction(data);
    encode_direction(data);
}

fn parse_direction(data: &[u8]) {
    let mut lines = lines(data);
    let status = lines
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .and_then(|line| line.trim().parse::<u16>().ok());
    let headers = Headers::parse(lines);
    match Answer::parse(status, |name| headers.get(name)) {
        Ok(answer) => {
            assert_eq!(Some(answer.status()), status, "{answer:?}");
            assert_eq!(round_trip(&answer), Ok(answer.clone()));
        }
        Err(error) => match status {
            None => assert_eq!(error, ProtocolError::MissingStatus),
            Some(status::UNKNOWN_KEY) => panic!("401 needs no header, got {error:?}"),
            Some(code @ (status::ALLOW | status::DENY | status::SUSPENDED)) => assert!(
                matches!(
                    error,
                    ProtocolError::MissingHeader(_) | ProtocolError::InvalidHeader(_)
                ),
                "{code}: {error:?}"
            ),
            Some(code) => assert_eq!(error, ProtocolError::UnexpectedStatus(code)),
        },
    }
}

fn encode_direction(data: &[u8]) {
    let mut stream = Stream::new(data);
    let variant = stream.u8() % 5;
    let tenant = stream.string();
    let mut quota = Quota {
        policy: stream.string(),
        limit: stream.u32(),
        window_seconds: stream.u32(),
        remaining: stream.u32(),
        reset_ms: stream.u64(),
        monthly: None,
    };
    if stream.bool() {
        quota.monthly = Some(MonthlyQuota {
            limit: stream.u64(),
            remaining: stream.u64(),
            reset_ms: stream.u64(),
        });
    }
    let retry_after_ms = stream.u64();
    let lease = stream.bool().then(|| Lease {
        id: stream.string(),
        requests: stream.u32(),
        ttl_ms: stream.u32(),
    });
    let lease_valid = lease.as_ref().is_none_or(|lease| {
        is_lease_id(&lease.id) && (1..=MAX_LEASE_REQUESTS).contains(&lease.requests)
    });
    let (answer, names) = match variant {
        0 => (
            Answer::Allow {
                tenant: tenant.clone(),
                quota: quota.clone(),
                lease: lease.clone(),
            },
            vec![&tenant, &quota.policy],
        ),
        1 => (
            Answer::Deny {
                tenant: tenant.clone(),
                quota: quota.clone(),
                retry_after_ms,
            },
            vec![&tenant, &quota.policy],
        ),
        2 => (
            Answer::ShadowDeny {
                tenant: tenant.clone(),
                quota: quota.clone(),
                retry_after_ms,
            },
            vec![&tenant, &quota.policy],
        ),
        3 => (Answer::UnknownKey, vec![]),
        _ => (
            Answer::Suspended {
                tenant: tenant.clone(),
            },
            vec![&tenant],
        ),
    };
    let parsed = round_trip(&answer);
    let lease_refused = variant == 0 && !lease_valid;
    if names.iter().any(|name| name.is_empty()) || lease_refused {
        assert!(parsed.is_err(), "{answer:?} gave {parsed:?}");
    } else {
        assert_eq!(parsed, Ok(answer));
    }
}

/// Encodes the answer and parses it back.
fn round_trip(answer: &Answer) -> Result<Answer, ProtocolError> {
    let encoded = answer.headers();
    let count = encoded.len();
    let headers: HashMap<&str, String> = encoded.into_iter().collect();
    assert_eq!(headers.len(), count, "a header is sent twice");
    Answer::parse(Some(answer.status()), |name| {
        headers.get(name).map(String::as_str)
    })
}
