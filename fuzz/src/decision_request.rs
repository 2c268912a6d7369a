//! The decision protocol, filter → control-plane: [`DecisionRequest`] as request headers.
//!
//! Two properties from one input:
//! - parsing: the input as `name: value` lines (what the control-plane's `/v1/decision`
//!   receives); whatever parses has the protocol's bounds and encodes back to itself;
//! - encoding: the same bytes read as a request (key, route, cost, edge-denied count); what
//!   [`DecisionRequest::headers`] produces parses back equal (the count capped at
//!   [`MAX_EDGE_DENIED`]), or is refused when the request could never have been made (an
//!   empty key or route, cost 0); never a different request.

use std::collections::HashMap;

use tollgate_protocol::{
    DecisionRequest, LeaseReturn, MAX_EDGE_DENIED, MAX_LEASE_REQUESTS, ProtocolError, header,
    is_lease_id,
};

use crate::input::{Headers, Stream, lines};

pub fn run(data: &[u8]) {
    parse_direction(data);
    encode_direction(data);
}

fn parse_direction(data: &[u8]) {
    let headers = Headers::parse(lines(data));
    let parsed = DecisionRequest::parse(|name| headers.get(name));
    match &parsed {
        Ok(request) => {
            assert!(!request.api_key.is_empty() && !request.route.is_empty());
            assert!(request.cost >= 1);
            assert!(request.edge_denied <= MAX_EDGE_DENIED);
            if headers.get(header::EDGE_DENIED).is_none() {
                assert_eq!(request.edge_denied, 0);
            }
            assert_eq!(
                round_trip(request),
                Ok(owned(request)),
                "encode(parse(x)) parses the same"
            );
        }
        Err(error) => {
            if headers.get(header::API_KEY).is_none() {
                assert_eq!(error, &ProtocolError::MissingHeader(header::API_KEY));
            }
        }
    }
}

fn encode_direction(data: &[u8]) {
    let mut stream = Stream::new(data);
    let api_key = stream.string();
    let route = stream.string();
    let cost = stream.u32();
    let edge_denied = stream.u64();
    let lease_max = stream.u32();
    let lease_id = stream.string();
    let returned = stream.bool().then(|| LeaseReturn {
        id: &lease_id,
        requests: stream.u32(),
    });
    let request = DecisionRequest {
        api_key: &api_key,
        route: &route,
        cost,
        edge_denied,
        lease_max,
        returned,
    };
    let headers = request.headers();
    assert_eq!(
        headers.iter().any(|(name, _)| *name == header::EDGE_DENIED),
        edge_denied > 0,
        "the count is sent only when there is one"
    );
    let parsed = round_trip(&request);
    let return_refused = returned.is_some_and(|returned| {
        !is_lease_id(returned.id) || returned.requests > MAX_LEASE_REQUESTS
    });
    if api_key.is_empty() || route.is_empty() || cost == 0 || return_refused {
        assert!(parsed.is_err(), "{request:?} gave {parsed:?}");
    } else {
        // A lease of one request or none is not asked for; more than the most is the most.
        let expected = DecisionRequest {
            edge_denied: edge_denied.min(MAX_EDGE_DENIED),
            lease_max: if lease_max > 1 {
                lease_max.min(MAX_LEASE_REQUESTS)
            } else {
                0
            },
            ..request
        };
        assert_eq!(parsed, Ok(owned(&expected)));
    }
}

/// A request with its strings owned, to outlive the headers it was parsed from.
type Owned = (String, String, u32, u64, u32, Option<(String, u32)>);

fn owned(request: &DecisionRequest) -> Owned {
    (
        request.api_key.to_owned(),
        request.route.to_owned(),
        request.cost,
        request.edge_denied,
        request.lease_max,
        request.returned.map(|r| (r.id.to_owned(), r.requests)),
    )
}

/// Encodes the request and parses it back.
fn round_trip(request: &DecisionRequest) -> Result<Owned, ProtocolError> {
    let encoded = request.headers();
    let count = encoded.len();
    let headers: HashMap<&str, String> = encoded
        .into_iter()
        .map(|(name, value)| (name, value.into_owned()))
        .collect();
    assert_eq!(headers.len(), count, "a header is sent twice");
    DecisionRequest::parse(|name| headers.get(name).map(String::as_str)).map(|p| owned(&p))
}
