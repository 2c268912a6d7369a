//! Admission on the public listener: budgets for the endpoints the filter does not meter, so
//! no client can make the control-plane busy for everyone else.
//!
//! Each request spends a token from a budget keyed by who sends it: the tenant (its API key)
//! for usage and billing sessions, the client address for everything else and for requests
//! without a usable key. Past the budget the answer is 429 problem+json with `Retry-After`
//! and `RateLimit` headers, at the cost of one hash and one uncontended lock.
//!
//! The buckets are [`super::budgets`]'s bounded table.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tollgate_protocol::api_key_extraction;

use super::AppState;
use super::billing::WEBHOOK_PATH;
use super::budgets::{Budget, Budgets};
use super::dashboard::COMPONENT_PATH;
use super::error::{ApiError, ProblemCode};
use super::listener::peer;
use super::usage::{TIERS_PATH, USAGE_PATH};
use super::usage_tokens::UsageTokens;
use crate::clock::Clock;

/// The public listener's budgets.
#[derive(Debug, Clone, Copy)]
pub struct PublicBudgets {
    /// `GET /api/v1/usage`, per tenant: a dashboard polling every few seconds uses a tenth.
    pub usage: Budget,
    /// Checkout and portal sessions, per tenant: each is a call to Stripe.
    pub billing: Budget,
    /// Stripe's webhook deliveries, per address (Stripe sends from a handful).
    pub webhook: Budget,
    /// Everything else (tiers, dashboard, health), and requests without a usable key, per
    /// client address.
    pub per_address: Budget,
}

impl Default for PublicBudgets {
    fn default() -> Self {
        Self {
            usage: Budget {
                name: "usage",
                per_second: 10,
                burst: 20,
            },
            billing: Budget {
                name: "billing",
                per_second: 1,
                burst: 5,
            },
            webhook: Budget {
                name: "webhook",
                per_second: 100,
                burst: 200,
            },
            per_address: Budget {
                name: "public",
                per_second: 20,
                burst: 40,
            },
        }
    }
}

/// The refusal reason of a request shed because too many are in flight.
const IN_FLIGHT: &str = "in_flight";

impl PublicBudgets {
    /// Every reason admission refuses a request for: each budget's name, and shedding.
    pub fn refusal_reasons(&self) -> [&'static str; 5] {
        [
            self.usage.name,
            self.billing.name,
            self.webhook.name,
            self.per_address.name,
            IN_FLIGHT,
        ]
    }
}

/// Where the client's address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    /// Proxies in front of this listener that append the address they saw to
    /// `X-Forwarded-For` (Envoy with `use_remote_address: true` is one). Zero: the peer of the
    /// connection is the client.
    pub trusted_hops: usize,
}

impl ClientAddress {
    /// The address the outermost trusted proxy saw, or the peer's. Entries left of it were
    /// written by the client and prove nothing.
    pub fn of(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        if self.trusted_hops > 0 {
            let forwarded: Vec<&str> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .map(str::trim)
                .collect();
            if let Some(index) = forwarded.len().checked_sub(self.trusted_hops) {
                return forwarded[index].parse().ok();
            }
        }
        peer.map(|peer| peer.ip())
    }
}

/// Middleware for the public router: sheds the request when too many are in flight (503),
/// spends its budget or answers 429, and only then lets it through.
///
/// A request with a key spends its tenant's budget, so tenants behind one address do not
/// share one; but its address must have budget left, and an unknown key (401) spends from
/// it, so random keys cannot each buy a fresh budget.
pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_in_flight) = state.admission.in_flight.clone().try_acquire_owned() else {
        state.metrics.count_budget_refusal(IN_FLIGHT);
        return ApiError::Overloaded.into_response();
    };
    let (budgets, buckets) = (state.admission.budgets, &state.admission.buckets);
    let path = request.uri().path();
    let tenant_budget = match path {
        // Minting a usage token spends the same budget as reading usage, and a token spends
        // its tenant's (`UsageTokens::budget_key`): however many are minted, they buy no more
        // reads than the key could make itself.
        USAGE_PATH | "/api/v1/usage/tokens" => Some(budgets.usage),
        "/api/v1/billing/checkout" | "/api/v1/billing/portal" => Some(budgets.billing),
        _ => None,
    };
    let headers = request.headers();
    let address = state.admission.client.of(headers, peer(&request));
    let key = tenant_budget.and_then(|budget| {
        let bytes = |name| headers.get(name).map(HeaderValue::as_bytes);
        let key = api_key_extraction::extract(
            bytes(state.api_key_header.as_str()),
            bytes("authorization"),
        );
        key.ok().map(|key| (budget, UsageTokens::budget_key(key)))
    });
    let keyed = key.is_some();
    let webhook = path == WEBHOOK_PATH;
    let admitted = match key {
        Some((budget, key)) => buckets
            .check(budgets.per_address, address)
            .and_then(|()| buckets.spend(budget, key)),
        None if webhook => buckets.spend(budgets.webhook, address),
        None => buckets.spend(budgets.per_address, address),
    };
    if let Err(exhausted) = admitted {
        state.metrics.count_budget_refusal(exhausted.budget.name);
        let mut refusal = ApiError::OverBudget(exhausted).into_response();
        state.admission.allow_origin(path, headers, &mut refusal);
        return refusal;
    }
    let response = next.run(request).await;
    if keyed && response.status() == StatusCode::UNAUTHORIZED {
        let _ = buckets.spend(budgets.per_address, address);
    }
    // A webhook delivery whose signature does not verify spends ten deliveries of its
    // address's budget, as a debt the rate repays: Stripe's own deliveries verify, so a sender
    // of forged ones gets a tenth of the budget's rate in bodies read and verified (each up to
    // 1 MiB). Not more: Stripe may also deliver to this endpoint for a second, misconfigured
    // endpoint (a secret that is not ours), from the same addresses as the real deliveries,
    // which must keep arriving (a second's worth per forged delivery held them back for
    // longer than the tier may lag Stripe).
    if webhook && response.extensions().get() == Some(&ProblemCode("invalid_signature")) {
        buckets.charge(budgets.webhook, address, FORGED_WEBHOOK_CHARGE);
    }
    response
}

/// Tokens more than the one it was admitted with that a forged webhook delivery spends.
const FORGED_WEBHOOK_CHARGE: u32 = 9;

/// Admission state shared by the public router.
#[derive(Clone)]
pub struct Admission {
    pub budgets: PublicBudgets,
    pub buckets: Arc<Budgets>,
    pub client: ClientAddress,
    /// Requests being served; past its permits, a request is shed before any work.
    pub in_flight: Arc<Semaphore>,
    /// Browser origins allowed on the routes with CORS, so a refusal here, answered before
    /// those routes' own CORS layers, still reaches a dashboard on such an origin as a 429.
    pub cors_origins: Arc<[HeaderValue]>,
}

/// The public routes with a CORS layer of their own (`usage::public_routes`,
/// `dashboard::routes`).
const CORS_PATHS: [&str; 3] = [USAGE_PATH, TIERS_PATH, COMPONENT_PATH];

impl Admission {
    /// Slots in the bucket table: 64 Ki buckets, 2 MiB.
    pub const BUCKETS: usize = 65_536;

    pub fn new(
        budgets: PublicBudgets,
        client: ClientAddress,
        max_in_flight: usize,
        clock: Arc<dyn Clock>,
        cors_origins: &[HeaderValue],
    ) -> Self {
        Self {
            budgets,
            buckets: Arc::new(Budgets::new(Self::BUCKETS, clock)),
            client,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            cors_origins: cors_origins.into(),
        }
    }

    /// On a route with CORS, the grant its layer would have given the request's origin.
    fn allow_origin(&self, path: &str, request: &HeaderMap, response: &mut Response) {
        let Some(origin) = request.get(header::ORIGIN) else {
            return;
        };
        if CORS_PATHS.contains(&path) && self.cors_origins.contains(origin) {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_address_the_trusted_proxy_saw() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 10.0.0.9"),
        );
        let peer = Some(SocketAddr::from(([127, 0, 0, 1], 5000)));
        let behind_envoy = ClientAddress { trusted_hops: 1 };
        assert_eq!(
            behind_envoy.of(&headers, peer),
            Some(IpAddr::from([10, 0, 0, 9])),
            "the client wrote 6.6.6.6; Envoy appended 10.0.0.9"
        );
        let direct = ClientAddress { trusted_hops: 0 };
        assert_eq!(
            direct.of(&headers, peer),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(
            behind_envoy.of(&HeaderMap::new(), peer),
            Some(IpAddr::from([127, 0, 0, 1])),
            "no header: the peer"
        );
    }
}
