//! The two calls Tollgate makes to Stripe's API, through async-stripe: a Checkout Session
//! that subscribes a tenant to a tier's price, and a Billing Portal session for the tenant's
//! customer. Everything else Stripe tells us arrives by webhook.

use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};

use crate::config::Secret;

/// Longest wait for Stripe on one call; the tenant is waiting on the other side.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A retried checkout (double click, client retry) within this long gets the same session
/// back instead of a second one; a tenant who comes back later gets a fresh one. Shorter
/// than both Stripe's idempotency-key lifetime and a session's (24 h).
const CHECKOUT_IDEMPOTENCY_PERIOD_SECS: u64 = 3600;

/// The metadata key that names the tenant on sessions and subscriptions; the webhook reads
/// the same key.
pub const TENANT_METADATA_KEY: &str = "tenant_id";

#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// Stripe answered with an error: usually configuration (an unknown price, a portal
    /// that is not set up).
    #[error("Stripe refused the request (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// Stripe could not be reached, timed out, or answered something unreadable.
    #[error("Stripe did not answer usably: {0}")]
    Unavailable(String),
    #[error("the Stripe client cannot be configured: {0}")]
    Config(String),
}

impl From<StripeError> for StripeApiError {
    fn from(error: StripeError) -> Self {
        match error {
            // 429 is Stripe's rate limit: a reason to retry, not a refusal.
            StripeError::Stripe(details, status) if status < 500 && status != 429 => {
                StripeApiError::Refused {
                    status,
                    message: details.message.clone().unwrap_or_default(),
                }
            }
            StripeError::ConfigError(reason) => StripeApiError::Config(reason),
            other => StripeApiError::Unavailable(other.to_string()),
        }
    }
}

/// A session the tenant is sent to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostedSession {
    pub id: String,
    pub url: String,
}

/// What a Checkout Session is created for.
#[derive(Debug)]
pub struct CheckoutOrder<'a> {
    pub tenant: &'a str,
    pub price: &'a str,
    /// The tenant's Stripe customer, when an earlier checkout created one.
    pub customer: Option<&'a str>,
    /// Seconds since the epoch.
    pub now: u64,
}

impl CheckoutOrder<'_> {
    /// Everything that shapes the session, so two different orders can never share a key
    /// (Stripe refuses a key reused with other parameters).
    fn idempotency_key(&self) -> String {
        let period = self.now / CHECKOUT_IDEMPOTENCY_PERIOD_SECS;
        let mut digest = Sha256::new();
        for part in [self.tenant, self.price, self.customer.unwrap_or("")] {
            digest.update(part.as_bytes());
            digest.update([0]);
        }
        digest.update(period.to_be_bytes());
        format!("tollgate-checkout-{}", hex::encode(digest.finalize()))
    }
}

#[derive(Clone)]
pub struct StripeApi {
    client: Client,
    /// Where Checkout and the portal send the tenant back.
    return_url: String,
}

impl StripeApi {
    /// `api_base`: Stripe's API root (`https://api.stripe.com/`); tests point it elsewhere.
    pub fn new(
        secret_key: &Secret,
        api_base: &str,
        return_url: String,
    ) -> Result<Self, StripeApiError> {
        let base = if api_base.ends_with('/') {
            api_base.to_owned()
        } else {
            format!("{api_base}/")
        };
        let client = ClientBuilder::new(secret_key.expose())
            .url(base)
            .timeout(TIMEOUT)
            .app_info("tollgate", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
            .build()?;
        Ok(Self { client, return_url })
    }

    /// A subscription-mode Checkout Session for one unit of `order.price`, naming the tenant
    /// in `client_reference_id` and in the subscription's metadata (so every later
    /// subscription event names it too).
    pub async fn checkout(
        &self,
        order: &CheckoutOrder<'_>,
    ) -> Result<HostedSession, StripeApiError> {
        let tenant = HashMap::from([(TENANT_METADATA_KEY.to_owned(), order.tenant.to_owned())]);
        let mut line = CreateCheckoutSessionLineItems::new();
        line.price = Some(order.price.to_owned());
        line.quantity = Some(1);
        let mut subscription = CreateCheckoutSessionSubscriptionData::new();
        subscription.metadata = Some(tenant.clone());
        let mut request = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .line_items(vec![line])
            .client_reference_id(order.tenant)
            .metadata(tenant)
            .subscription_data(subscription)
            .success_url(self.return_to("checkout=success&session_id={CHECKOUT_SESSION_ID}"))
            .cancel_url(self.return_to("checkout=canceled"));
        if let Some(customer) = order.customer {
            request = request.customer(customer);
        }
        let key = IdempotencyKey::new(order.idempotency_key())
            .map_err(|e| StripeApiError::Config(e.to_string()))?;
        let session = request
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await?;
        let url = session
            .url
            .ok_or_else(|| StripeApiError::Unavailable("the session has no url".to_owned()))?;
        Ok(HostedSession {
            id: session.id.to_string(),
            url,
        })
    }

    /// A Billing Portal session for the customer, returning to the configured URL.
    pub async fn portal(&self, customer: &str) -> Result<HostedSession, StripeApiError> {
        let session = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(&self.return_url)
            .send(&self.client)
            .await?;
        Ok(HostedSession {
            id: session.id.to_string(),
            url: session.url,
        })
    }

    fn return_to(&self, query: &str) -> String {
        let separator = if self.return_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{separator}{query}", self.return_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(customer: Option<&'static str>, now: u64) -> CheckoutOrder<'static> {
        CheckoutOrder {
            tenant: "tn_1",
            price: "price_pro",
            customer,
            now,
        }
    }

    #[test]
    fn a_retry_within_the_period_reuses_the_key_and_anything_else_does_not() {
        let first = order(None, 7200).idempotency_key();
        assert_eq!(first, order(None, 7200 + 3599).idempotency_key());
        assert_ne!(first, order(None, 7200 + 3600).idempotency_key());
        assert_ne!(first, order(Some("cus_1"), 7200).idempotency_key());
        assert!(IdempotencyKey::new(&first).is_ok(), "{first}");
    }

    #[test]
    fn return_urls_keep_their_own_query() {
        let api = |return_url: &str| {
            StripeApi::new(
                &Secret::new("sk_test_x".into()),
                "http://127.0.0.1:1",
                return_url.to_owned(),
            )
            .unwrap()
        };
        assert_eq!(
            api("https://p.example/billing").return_to("checkout=canceled"),
            "https://p.example/billing?checkout=canceled"
        );
        assert_eq!(
            api("https://p.example/app?tab=billing").return_to("checkout=canceled"),
            "https://p.example/app?tab=billing&checkout=canceled"
        );
    }
}
