//! Checkout and Billing Portal sessions: the tenant is handed a Stripe-hosted page. Neither
//! changes the tenant's tier: only the webhook does, once Stripe says the subscription is
//! paid for.

use super::stripe_api::CheckoutOrder;
use super::{Billing, BillingError, HostedSession};
use crate::tenants::{Subscription, Tenant};

impl Billing {
    /// A Checkout Session for the Stripe price of tier `tier`.
    pub async fn checkout(
        &self,
        tenant: &Tenant,
        tier: &str,
    ) -> Result<HostedSession, BillingError> {
        let stripe = self.sessions()?;
        let tiers = self.tiers.current();
        let for_sale = tiers
            .get(tier)
            .ok_or_else(|| BillingError::UnknownTier(tier.to_owned()))?;
        let price = for_sale
            .stripe_price
            .as_deref()
            .ok_or_else(|| BillingError::TierNotForSale(tier.to_owned()))?;
        if tenant
            .subscription
            .as_ref()
            .is_some_and(Subscription::is_live)
        {
            return Err(BillingError::AlreadySubscribed);
        }
        let order = CheckoutOrder {
            tenant: &tenant.id,
            price,
            customer: stripe_customer(tenant),
            now: self.clock.now_secs(),
        };
        let session = stripe.checkout(&order).await?;
        tracing::info!(tenant = %tenant.id, tier = %for_sale.name, session = %session.id, "checkout session created");
        Ok(session)
    }

    /// A Billing Portal session for the tenant's Stripe customer.
    pub async fn portal(&self, tenant: &Tenant) -> Result<HostedSession, BillingError> {
        let stripe = self.sessions()?;
        let customer = stripe_customer(tenant).ok_or(BillingError::NoBillingAccount)?;
        let session = stripe.portal(customer).await?;
        tracing::info!(tenant = %tenant.id, session = %session.id, "billing portal session created");
        Ok(session)
    }
}

fn stripe_customer(tenant: &Tenant) -> Option<&str> {
    tenant.subscription.as_ref()?.customer.as_deref()
}
