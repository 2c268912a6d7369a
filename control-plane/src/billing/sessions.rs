//! Checkout and Billing Portal sessions: the tenant is handed a Stripe-hosted page. Neither
//! changes the tenant's tier: only what Stripe then says about its subscription does.
//!
//! Every tenant has one Stripe customer, created (with `metadata.tenant_id`) before its first
//! checkout and passed to every one after, so two checkouts can never make two customers; a
//! second subscription of the same customer is found by the next sync and flagged.

use super::stripe_api::CheckoutOrder;
use super::{Billing, BillingError, HostedSession, StripeApi};
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
            .is_some_and(Subscription::blocks_checkout)
        {
            return Err(BillingError::AlreadySubscribed);
        }
        let customer = self.customer_of(stripe, tenant).await?;
        let order = |customer| CheckoutOrder {
            tenant: &tenant.id,
            price,
            customer,
            now: self.clock.now_secs(),
        };
        let (session, customer) = match stripe.checkout(&order(&customer)).await {
            // The customer was deleted at Stripe and the news has not arrived yet: unlink
            // it and buy with a new one, rather than fail until an operator steps in.
            Err(error) if error.is_missing_customer() => {
                tracing::warn!(tenant = %tenant.id, %customer, "the tenant's Stripe customer is gone; creating a new one");
                let unlinked = self.unlink(&tenant.id).await?;
                let fresh = self.customer_of(stripe, &unlinked).await?;
                (stripe.checkout(&order(&fresh)).await?, fresh)
            }
            other => (other?, customer),
        };
        tracing::info!(tenant = %tenant.id, tier = %for_sale.name, session = %session.id, %customer, "checkout session created");
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

    /// The tenant's customer, created and stored first if it has none. Concurrent first
    /// checkouts send the same idempotency key, so Stripe creates one customer for them.
    async fn customer_of(
        &self,
        stripe: &StripeApi,
        tenant: &Tenant,
    ) -> Result<String, BillingError> {
        if let Some(customer) = stripe_customer(tenant) {
            return Ok(customer.to_owned());
        }
        // A tenant unlinked from an earlier customer gets a new one, not that one replayed.
        let generation = tenant
            .subscription
            .as_ref()
            .and_then(|s| s.former_customers.last().cloned())
            .unwrap_or_default();
        let created = stripe
            .create_customer(&tenant.id, &tenant.name, &generation)
            .await?;
        let stored = self
            .tenants
            .modify(&tenant.id, |record| {
                let billing = record.tenant.subscription.get_or_insert_default();
                // Another request linked one meanwhile (the same, by the idempotency key,
                // unless the tenant was unlinked in between): keep what is stored.
                Ok::<_, std::convert::Infallible>(
                    billing.customer.get_or_insert(created.clone()).clone(),
                )
            })
            .await?;
        let customer = match stored {
            Some(Ok(customer)) => customer,
            None => return Err(BillingError::TenantNotFound),
        };
        tracing::info!(tenant = %tenant.id, %customer, "Stripe customer created for the tenant");
        Ok(customer)
    }
}

fn stripe_customer(tenant: &Tenant) -> Option<&str> {
    tenant.subscription.as_ref()?.customer.as_deref()
}
