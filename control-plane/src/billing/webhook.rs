//! Stripe webhooks: verified hints that something changed.
//!
//! A delivery (`POST /api/v1/billing/webhook` on the public listener) is verified by its
//! `Stripe-Signature` over the raw body, then read as plain JSON rather than typed structs,
//! so deliveries from accounts on any API version work (localstripe sends 2017-08-15 shapes,
//! Stripe today sends newer ones; an event of another version than `STRIPE_API_VERSION` is
//! logged once per version). The tenant is found from `metadata.tenant_id`, a Checkout
//! Session's `client_reference_id` (only when it agrees), or the customer or subscription an
//! earlier event or sync linked.
//!
//! Subscription, checkout and invoice events are not applied as they are: the tenant's
//! subscriptions are fetched from Stripe and that state applied ([`super::sync`]), so the
//! order, duplication or loss of events cannot matter. Only when Stripe cannot be asked is
//! the event applied as delivered, by the rules of the first release (recent event ids
//! remembered, older events and news of ended subscriptions ignored), and the tenant marked
//! for a re-sync. `customer.deleted` unlinks the customer. Disputes and refunds are recorded
//! on the tenant and counted; they change no tier (an operator decides). A failure to store
//! answers 503, so Stripe delivers again; nothing is lost.

use serde_json::Value;

use super::rules::{self, Standing};
use super::stripe_api::TENANT_METADATA_KEY;
use super::stripe_objects::{Item, id_of, read_subscription, text};
use super::sync::{Hint, Trigger, remember};
use super::{Billing, BillingError, signature};
use crate::tenants::{PaymentIncident, StoredTenant, Subscription};
use crate::tiers::TierTable;

/// How many disputes and refunds a tenant's record keeps.
const REMEMBERED_INCIDENTS: usize = 16;

/// How long a delivery may spend asking Stripe before the event is applied as delivered:
/// Stripe gives up on an endpoint that does not answer within seconds, and a slow Stripe
/// must not turn every delivery into a retry.
const FETCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(8);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    CheckoutCompleted,
    Subscription,
    InvoicePaid,
    PaymentFailed,
    CustomerDeleted,
    Dispute,
    Refund,
}

/// What one event says about one tenant's billing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BillingEvent {
    id: String,
    kind: EventKind,
    created: u64,
    /// The tenant, when the event names it (metadata or client_reference_id).
    tenant: Option<String>,
    customer: Option<String>,
    subscription: Option<String>,
    status: Option<String>,
    items: Vec<Item>,
    cancel_at_period_end: Option<bool>,
    current_period_end: Option<u64>,
    /// Disputes and refunds: what to record.
    incident: Option<PaymentIncident>,
}

impl Billing {
    /// Verifies a delivery's signature over its raw body, reads the event and brings the
    /// tenant it names in line. `Ok` also when the event changes nothing (Stripe must not
    /// retry it); `Err` when it was refused, or when storing failed (Stripe retries).
    pub async fn receive_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), BillingError> {
        let secret = self
            .webhook_secret
            .as_ref()
            .ok_or(BillingError::NotConfigured)?;
        signature::verify(signature, body, secret.expose(), self.clock.now_secs()).inspect_err(
            |error| {
                if let Some(suppressed) = crate::log_limit::admit("webhook_refused") {
                    tracing::warn!(%error, suppressed, "webhook refused");
                }
                self.metrics.count_webhook("", "refused");
            },
        )?;
        let event: Value =
            serde_json::from_slice(body).map_err(|_| BillingError::MalformedEvent)?;
        let kind = event["type"].as_str().unwrap_or_default();
        self.check_api_version(event["api_version"].as_str());
        let Some(change) = read_event(&event) else {
            tracing::info!(kind, "webhook event ignored");
            self.metrics.count_webhook(kind, "ignored");
            return Ok(());
        };
        let outcome = self.handle(&change).await.inspect_err(|error| {
            tracing::warn!(kind, event = %change.id, %error, "webhook event not applied; Stripe will deliver it again");
            self.metrics.count_webhook(kind, "failed");
        })?;
        self.metrics.count_webhook(kind, outcome);
        Ok(())
    }

    /// Applies one event; the outcome label for metrics.
    async fn handle(&self, change: &BillingEvent) -> Result<&'static str, BillingError> {
        let Some(tenant) = self.tenant_of(change).await? else {
            tracing::warn!(event = %change.id, "webhook event names no known tenant");
            return Ok("no_tenant");
        };
        let known = self.tenants.get(&tenant).await?;
        let Some(known) = known else {
            tracing::warn!(%tenant, event = %change.id, "webhook event for an unknown tenant");
            return Ok("no_tenant");
        };
        let billing = known.subscription.unwrap_or_default();
        if billing.recent_events.contains(&change.id) {
            return Ok("stale");
        }
        match change.kind {
            EventKind::Dispute | EventKind::Refund => self.record_incident(&tenant, change).await,
            EventKind::CustomerDeleted => self.customer_deleted(&tenant, change).await,
            _ if self.stripe.is_none() => self.apply_as_delivered(&tenant, change, false).await,
            _ => {
                let hint = Hint {
                    subscription: change.subscription.clone(),
                    event: Some(change.id.clone()),
                    created: change.created,
                };
                let asked = tokio::time::timeout(
                    FETCH_BUDGET,
                    self.reconcile(&tenant, &hint, Trigger::Webhook),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(BillingError::Stripe(super::StripeApiError::Unavailable(
                        format!("no answer within {FETCH_BUDGET:?}"),
                    )))
                });
                match asked {
                    Ok(report) => {
                        tracing::info!(%tenant, event = %change.id, tier = %report.tenant.tier, outcome = report.outcome, "webhook event checked against Stripe");
                        Ok(if report.changes.is_empty() {
                            "unchanged"
                        } else {
                            "applied"
                        })
                    }
                    Err(BillingError::Stripe(error)) => {
                        tracing::warn!(%tenant, event = %change.id, %error,
                            "Stripe cannot be asked; the event is applied as delivered and the tenant marked for a re-sync");
                        self.apply_as_delivered(&tenant, change, true).await
                    }
                    Err(other) => Err(other),
                }
            }
        }
    }

    /// The tenant an event is about, if any: named by it, or linked to its customer or
    /// subscription. A dispute names only its charge, which is fetched for its customer.
    async fn tenant_of(&self, change: &BillingEvent) -> Result<Option<String>, BillingError> {
        if let Some(tenant) = &change.tenant {
            return Ok(Some(tenant.clone()));
        }
        let mut linked = None;
        for stripe_id in [&change.subscription, &change.customer]
            .into_iter()
            .flatten()
        {
            linked = self.tenants.by_stripe_id(stripe_id).await?;
            if linked.is_some() {
                break;
            }
        }
        if linked.is_some() || change.kind != EventKind::Dispute {
            return Ok(linked);
        }
        let charge = change.incident.as_ref().and_then(|i| i.charge.as_deref());
        let (Some(stripe), Some(charge)) = (&self.stripe, charge) else {
            return Ok(None);
        };
        let customer = stripe
            .charge(charge)
            .await?
            .and_then(|c| id_of(&c["customer"]));
        match customer {
            Some(customer) => Ok(self.tenants.by_stripe_id(&customer).await?),
            None => Ok(None),
        }
    }

    async fn record_incident(
        &self,
        tenant: &str,
        change: &BillingEvent,
    ) -> Result<&'static str, BillingError> {
        let Some(incident) = change.incident.clone() else {
            return Ok("ignored");
        };
        let kind = if change.kind == EventKind::Dispute {
            "dispute"
        } else {
            "refund"
        };
        let recorded = self
            .tenants
            .modify(tenant, |stored| {
                let billing = stored.tenant.subscription.get_or_insert_default();
                if billing.recent_events.contains(&change.id) {
                    return Err(());
                }
                billing.incidents.push(incident.clone());
                let overflow = billing.incidents.len().saturating_sub(REMEMBERED_INCIDENTS);
                billing.incidents.drain(..overflow);
                remember(billing, &change.id);
                Ok(())
            })
            .await?;
        match recorded {
            Some(Ok(())) => {
                tracing::warn!(%tenant, kind, id = %incident.id, amount = ?incident.amount,
                    currency = ?incident.currency, reason = ?incident.reason,
                    "payment dispute or refund recorded; the tier is unchanged");
                self.metrics.count_incident(kind);
                Ok("recorded")
            }
            Some(Err(())) => Ok("stale"),
            None => Ok("no_tenant"),
        }
    }

    async fn customer_deleted(
        &self,
        tenant: &str,
        change: &BillingEvent,
    ) -> Result<&'static str, BillingError> {
        let tiers = self.tiers.current();
        let unlinked = self
            .tenants
            .modify(tenant, |stored| {
                let billing = stored.tenant.subscription.get_or_insert_default();
                if change.customer.is_none() || billing.customer != change.customer {
                    let former = change
                        .customer
                        .as_ref()
                        .is_some_and(|c| billing.former_customers.contains(c));
                    return Err(if former { "stale" } else { "irrelevant" });
                }
                rules::unlink(billing, &mut stored.tenant.tier, &tiers);
                remember(billing, &change.id);
                Ok(())
            })
            .await?;
        Ok(match unlinked {
            Some(Ok(())) => {
                tracing::info!(%tenant, customer = ?change.customer, "Stripe customer deleted; tenant unlinked");
                "unlinked"
            }
            Some(Err(reason)) => reason,
            None => "no_tenant",
        })
    }

    /// Applies the event as delivered (Stripe not configured or not answering); `mark`: the
    /// tenant is marked for a re-sync, which checks it against Stripe.
    async fn apply_as_delivered(
        &self,
        tenant: &str,
        change: &BillingEvent,
        mark: bool,
    ) -> Result<&'static str, BillingError> {
        let tiers = self.tiers.current();
        let applied = self
            .tenants
            .modify(tenant, |record| {
                let outcome = apply(record, change, &tiers);
                if mark {
                    record
                        .tenant
                        .subscription
                        .get_or_insert_default()
                        .needs_sync = true;
                    Ok(outcome)
                } else {
                    outcome.map(Ok)
                }
            })
            .await?;
        Ok(match applied {
            None => "no_tenant",
            Some(Ok(Ok(applied))) => {
                if applied.unmapped {
                    tracing::warn!(%tenant, prices = ?change.items, "a running subscription's prices match no tier; the tenant is on the default tier");
                    self.metrics.count_unmapped("price");
                }
                if applied.unknown_status {
                    tracing::warn!(%tenant, status = ?change.status, "unknown Stripe subscription status; the tenant is on the default tier");
                    self.metrics.count_unmapped("status");
                }
                tracing::info!(%tenant, event = %change.id, tier = %applied.tier, "webhook event applied as delivered");
                "applied"
            }
            Some(Ok(Err(unchanged)) | Err(unchanged)) => {
                tracing::info!(%tenant, event = %change.id, reason = unchanged.label(), "webhook event changes nothing");
                unchanged.label()
            }
        })
    }

    /// The webhook event parser's entry point: reads a delivery's body as
    /// [`Billing::receive_webhook`] does once the signature has passed, and applies nothing.
    /// `Err(MalformedEvent)` when the body is not JSON, `Ok(None)` for an event that changes
    /// no subscription, otherwise the change it names (opaque outside this module). For the
    /// fuzz targets (`fuzz/`).
    pub fn read_webhook_event(
        body: &[u8],
    ) -> Result<Option<impl std::fmt::Debug + use<>>, BillingError> {
        let event: Value =
            serde_json::from_slice(body).map_err(|_| BillingError::MalformedEvent)?;
        Ok(read_event(&event))
    }
}

/// The billing facts of the event types that concern a tenant; `None` for the rest.
fn read_event(event: &Value) -> Option<BillingEvent> {
    let object = &event["data"]["object"];
    let event_type = event["type"].as_str()?;
    let kind = match event_type {
        "checkout.session.completed"
            if object["mode"].as_str().is_none_or(|m| m == "subscription") =>
        {
            EventKind::CheckoutCompleted
        }
        t if t.starts_with("customer.subscription.") => EventKind::Subscription,
        "invoice.paid" | "invoice.payment_succeeded" => EventKind::InvoicePaid,
        "invoice.payment_failed" => EventKind::PaymentFailed,
        "customer.deleted" => EventKind::CustomerDeleted,
        "charge.dispute.created" => EventKind::Dispute,
        "charge.refunded" => EventKind::Refund,
        _ => return None,
    };
    let created = event["created"].as_u64().unwrap_or(0);
    let mut change = BillingEvent {
        id: text(&event["id"])?,
        kind,
        created,
        tenant: text(&object["metadata"][TENANT_METADATA_KEY]),
        customer: id_of(&object["customer"]),
        subscription: None,
        status: None,
        items: Vec::new(),
        cancel_at_period_end: None,
        current_period_end: None,
        incident: None,
    };
    match kind {
        EventKind::CheckoutCompleted => {
            // Only the metadata Tollgate's own sessions carry names the tenant: anyone can
            // put a client_reference_id on a Payment Link URL, so one that disagrees makes
            // the event name no tenant rather than attach a stranger's subscription.
            let reference = text(&object["client_reference_id"]);
            if reference.is_some() && reference != change.tenant {
                change.tenant = None;
            }
            change.subscription = id_of(&object["subscription"]);
        }
        EventKind::Subscription => {
            let subscription = read_subscription(object)?;
            change.subscription = Some(subscription.id);
            change.status = if event_type == "customer.subscription.deleted" {
                Some("canceled".to_owned())
            } else {
                subscription.status
            };
            change.items = subscription.items;
            change.cancel_at_period_end = subscription.cancel_at_period_end;
            change.current_period_end = subscription.current_period_end;
        }
        EventKind::InvoicePaid | EventKind::PaymentFailed => {
            // Before 2025-03-31 invoices name their subscription at the top level; since,
            // under parent.subscription_details.
            let details = &object["parent"]["subscription_details"];
            change.subscription =
                id_of(&object["subscription"]).or_else(|| id_of(&details["subscription"]));
            change.tenant = text(&details["metadata"][TENANT_METADATA_KEY]);
        }
        EventKind::CustomerDeleted => change.customer = text(&object["id"]),
        EventKind::Dispute => {
            change.customer = None;
            change.incident = Some(PaymentIncident {
                kind: "dispute".into(),
                id: text(&object["id"])?,
                charge: id_of(&object["charge"]),
                amount: object["amount"].as_i64(),
                currency: text(&object["currency"]),
                reason: text(&object["reason"]),
                at: created,
            });
        }
        EventKind::Refund => {
            let full = object["refunded"].as_bool().unwrap_or(false);
            change.incident = Some(PaymentIncident {
                kind: "refund".into(),
                id: text(&object["id"])?,
                charge: text(&object["id"]),
                amount: object["amount_refunded"].as_i64(),
                currency: text(&object["currency"]),
                reason: Some(if full { "full" } else { "partial" }.to_owned()),
                at: created,
            });
        }
    }
    Some(change)
}

fn has_ended(status: Option<&str>) -> bool {
    matches!(status, Some("canceled" | "incomplete_expired"))
}

/// Why an event left the tenant as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unchanged {
    /// A redelivery, an event older than the last status change, news of a subscription
    /// that has ended, or of a customer unlinked since.
    Stale,
    /// About another subscription than the running one, or a failed or paid invoice of a
    /// subscription that is not the tenant's.
    Irrelevant,
}

impl Unchanged {
    fn label(self) -> &'static str {
        match self {
            Unchanged::Stale => "stale",
            Unchanged::Irrelevant => "irrelevant",
        }
    }
}

/// What applying an event as delivered did.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    tier: String,
    /// A running subscription whose prices no tier lists.
    unmapped: bool,
    unknown_status: bool,
}

/// Whether the event names the stored subscription (or none in particular).
fn is_about(current: &Subscription, change: &BillingEvent) -> bool {
    change.subscription.is_none() || change.subscription == current.id
}

/// Whether the stored state already reflects the event or something newer: a redelivery, or,
/// about the stored subscription, a status change created before the last applied one or
/// news after it ended (Stripe never revives one, so whatever arrives late about it is
/// stale). Time orders the events of one subscription only, and not checkout events: they
/// carry no status, and Stripe creates the subscription before the session completes, so
/// its events may be the older ones.
fn is_stale(current: &Subscription, change: &BillingEvent) -> bool {
    let about_current = is_about(current, change);
    let former = change
        .customer
        .as_ref()
        .is_some_and(|c| current.former_customers.contains(c));
    current.recent_events.contains(&change.id)
        || former
        || (about_current
            && change.kind != EventKind::CheckoutCompleted
            && current.updated_at > change.created)
        || (about_current && change.subscription.is_some() && has_ended(current.status.as_deref()))
}

/// Applies the event to the tenant as delivered and says what it did, or why nothing
/// changed (nothing is changed then).
fn apply(
    record: &mut StoredTenant,
    change: &BillingEvent,
    tiers: &TierTable,
) -> Result<Applied, Unchanged> {
    let tenant = &mut record.tenant;
    let current = tenant.subscription.as_ref();
    if current.is_some_and(|c| is_stale(c, change)) {
        return Err(Unchanged::Stale);
    }
    let running = current.is_some_and(Subscription::is_live);
    // With nothing stored, a named subscription is a new one.
    let same_subscription = change.subscription.is_none()
        || change.subscription.as_ref() == current.and_then(|c| c.id.as_ref());
    let irrelevant = match change.kind {
        // An invoice matters to the subscription that is running; a failed first payment
        // leaves a subscription incomplete, which Stripe reports by its own events, and an
        // invoice of no subscription is not about the tier.
        EventKind::PaymentFailed | EventKind::InvoicePaid => {
            change.subscription.is_none() || !same_subscription || !running
        }
        // While one subscription runs, news of another (an older one that ends late, say)
        // must not replace it.
        EventKind::CheckoutCompleted | EventKind::Subscription => !same_subscription && running,
        EventKind::CustomerDeleted | EventKind::Dispute | EventKind::Refund => true,
    };
    if irrelevant {
        return Err(Unchanged::Irrelevant);
    }
    let mut subscription = tenant.subscription.take().unwrap_or_default();
    let mut applied = Applied {
        tier: String::new(),
        unmapped: false,
        unknown_status: false,
    };
    match change.kind {
        EventKind::PaymentFailed => subscription.status = Some("past_due".to_owned()),
        EventKind::InvoicePaid => {
            // A paid invoice settles a past-due subscription.
            if subscription.status.as_deref() == Some("past_due") {
                subscription.status = Some("active".to_owned());
            }
        }
        _ => {
            if !same_subscription {
                // A new subscription (none was running): nothing of the old one's state
                // carries over, its time included.
                subscription = Subscription {
                    customer: subscription.customer,
                    id: change.subscription.clone(),
                    recent_events: subscription.recent_events,
                    former_customers: subscription.former_customers,
                    incidents: subscription.incidents,
                    needs_sync: subscription.needs_sync,
                    ..Subscription::default()
                };
            }
            if change.status.is_some() {
                subscription.status.clone_from(&change.status);
            }
            if change.customer.is_some() && subscription.customer.is_none() {
                subscription.customer.clone_from(&change.customer);
            }
            if let Some(cancel_at_period_end) = change.cancel_at_period_end {
                subscription.cancel_at_period_end = cancel_at_period_end;
            }
            if change.current_period_end.is_some() {
                subscription.current_period_end = change.current_period_end;
            }
        }
    }
    // Only subscription events carry the prices; the others leave the tier to the status.
    let standing = Standing::of(subscription.status.as_deref());
    match standing {
        Standing::Paid if change.kind == EventKind::Subscription => {
            let item_prices = change
                .items
                .iter()
                .filter_map(|i| i.price.clone())
                .collect();
            subscription.prices = item_prices;
            match rules::tier_of_items(&change.items, tiers) {
                (Some(tier), _) => {
                    tenant.tier = tier.name.clone();
                    subscription.unmapped_prices = Vec::new();
                }
                (None, prices) => {
                    tenant.tier = tiers.default_tier().name.clone();
                    applied.unmapped = subscription.unmapped_prices != prices;
                    subscription.unmapped_prices = prices;
                }
            }
        }
        Standing::Paid | Standing::PastDue => {}
        Standing::Lapsed => tenant.tier = tiers.default_tier().name.clone(),
        Standing::Unknown if subscription.status.is_some() => {
            applied.unknown_status = true;
            tenant.tier = tiers.default_tier().name.clone();
        }
        // A checkout links the customer before the subscription's status is known.
        Standing::Unknown => {}
    }
    subscription.past_due_since = (standing == Standing::PastDue)
        .then(|| subscription.past_due_since.unwrap_or(change.created));
    if change.kind != EventKind::CheckoutCompleted {
        subscription.updated_at = change.created;
    }
    remember(&mut subscription, &change.id);
    tenant.subscription = Some(subscription);
    applied.tier = tenant.tier.to_string();
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiers() -> TierTable {
        r#"
            default_tier = "standard"
            [tiers.standard]
            limit = 60
            window_seconds = 60
            [tiers.pro]
            limit = 1000
            window_seconds = 60
            paid = true
            stripe_price = "price_pro"
        "#
        .parse()
        .unwrap()
    }

    fn record() -> StoredTenant {
        StoredTenant {
            tenant: crate::tenants::Tenant {
                id: "tn_1".into(),
                name: "Acme".into(),
                tier: "standard".into(),
                suspended: false,
                created_at: 0,
                subscription: None,
            },
            keys: Vec::new(),
            version: 1,
        }
    }

    fn subscription_event(id: &str, created: u64, kind: &str, status: &str, shape: &str) -> Value {
        let mut object = json!({"id": "sub_1", "customer": "cus_1", "status": status, "metadata": {"tenant_id": "tn_1"}});
        match shape {
            "2017" => object["plan"] = json!({"id": "price_pro"}),
            _ => object["items"] = json!({"data": [{"price": {"id": "price_pro"}}]}),
        }
        json!({"id": id, "created": created, "type": kind, "data": {"object": object}})
    }

    /// A current-shape `customer.subscription.<action>` event about sub_1.
    fn event(action: &str, id: &str, created: u64, status: &str) -> Value {
        let kind = format!("customer.subscription.{action}");
        subscription_event(id, created, &kind, status, "current")
    }

    fn apply_json(record: &mut StoredTenant, event: Value) -> Option<String> {
        apply(record, &read_event(&event).unwrap(), &tiers())
            .ok()
            .map(|applied| applied.tier)
    }

    #[test]
    fn the_tier_follows_the_subscription_in_either_payload_shape() {
        for shape in ["2017", "current"] {
            let mut record = record();
            let created = subscription_event(
                "evt_1",
                10,
                "customer.subscription.created",
                "active",
                shape,
            );
            assert_eq!(
                apply_json(&mut record, created).as_deref(),
                Some("pro"),
                "{shape}"
            );
            let failed = json!({"id": "evt_2", "created": 20, "type": "invoice.payment_failed",
                                "data": {"object": {"customer": "cus_1", "subscription": "sub_1"}}});
            assert_eq!(
                apply_json(&mut record, failed).as_deref(),
                Some("pro"),
                "past_due keeps the tier"
            );
            let subscription = record.tenant.subscription.as_ref().unwrap();
            assert_eq!(subscription.status.as_deref(), Some("past_due"));
            assert_eq!(
                subscription.past_due_since,
                Some(20),
                "the grace period starts"
            );
            let paid = json!({"id": "evt_3", "created": 25, "type": "invoice.paid",
                              "data": {"object": {"customer": "cus_1", "subscription": "sub_1"}}});
            assert_eq!(apply_json(&mut record, paid).as_deref(), Some("pro"));
            let subscription = record.tenant.subscription.as_ref().unwrap();
            assert_eq!(
                (subscription.status.as_deref(), subscription.past_due_since),
                (Some("active"), None),
                "invoice.paid clears past due"
            );
            let deleted = subscription_event(
                "evt_4",
                30,
                "customer.subscription.deleted",
                "active",
                shape,
            );
            assert_eq!(
                apply_json(&mut record, deleted).as_deref(),
                Some("standard")
            );
        }
    }

    #[test]
    fn paused_incomplete_and_unknown_statuses_never_keep_a_paid_tier() {
        for status in ["paused", "incomplete", "unpaid", "a_status_from_the_future"] {
            let mut record = record();
            apply_json(&mut record, event("updated", "evt_1", 10, "active"));
            assert_eq!(record.tenant.tier.as_ref(), "pro");
            assert_eq!(
                apply_json(&mut record, event("updated", "evt_2", 20, status)).as_deref(),
                Some("standard"),
                "{status}"
            );
            let resumed = event("resumed", "evt_3", 30, "active");
            assert_eq!(
                apply_json(&mut record, resumed).as_deref(),
                Some("pro"),
                "{status}"
            );
        }
        let mut fresh = record();
        let applied = apply(
            &mut fresh,
            &read_event(&event("created", "evt_1", 10, "incomplete")).unwrap(),
            &tiers(),
        );
        assert_eq!(
            applied.unwrap().tier,
            "standard",
            "incomplete never grants the paid tier"
        );
    }

    #[test]
    fn an_unknown_price_buys_the_default_tier_and_is_reported() {
        let mut record = record();
        apply_json(&mut record, event("updated", "evt_1", 10, "active"));
        let mut other = event("updated", "evt_2", 20, "active");
        other["data"]["object"]["items"] = json!({"data": [{"price": {"id": "price_unknown"}}]});
        let applied = apply(&mut record, &read_event(&other).unwrap(), &tiers()).unwrap();
        assert_eq!(
            (applied.tier.as_str(), applied.unmapped),
            ("standard", true)
        );
        assert_eq!(
            record.tenant.subscription.unwrap().unmapped_prices,
            ["price_unknown"]
        );
    }

    #[test]
    fn redeliveries_and_older_events_change_nothing() {
        let mut record = record();
        apply_json(&mut record, event("updated", "evt_2", 20, "active"));
        let again = event("updated", "evt_2", 20, "canceled");
        assert_eq!(apply_json(&mut record, again), None, "the same event id");
        let older = event("updated", "evt_1", 10, "canceled");
        assert_eq!(apply_json(&mut record, older), None, "an older event");
        assert_eq!(record.tenant.tier.as_ref(), "pro");
    }

    #[test]
    fn events_of_other_kinds_are_read_or_ignored() {
        assert_eq!(
            read_event(&json!({"id": "evt_1", "type": "customer.created", "data": {"object": {}}})),
            None
        );
        let deleted = read_event(&json!({"id": "evt_2", "type": "customer.deleted",
            "data": {"object": {"id": "cus_1", "object": "customer", "deleted": true}}}))
        .unwrap();
        assert_eq!(
            (deleted.kind, deleted.customer.as_deref()),
            (EventKind::CustomerDeleted, Some("cus_1"))
        );
        let dispute = read_event(&json!({"id": "evt_3", "created": 9, "type": "charge.dispute.created",
            "data": {"object": {"id": "dp_1", "charge": "ch_1", "amount": 4900, "currency": "usd", "reason": "fraudulent"}}}))
        .unwrap();
        let incident = dispute.incident.unwrap();
        assert_eq!(
            (incident.charge.as_deref(), incident.amount, incident.at),
            (Some("ch_1"), Some(4900), 9)
        );
        let refund = read_event(&json!({"id": "evt_4", "type": "charge.refunded",
            "data": {"object": {"id": "ch_1", "customer": "cus_1", "amount_refunded": 100, "refunded": false}}}))
        .unwrap();
        assert_eq!(refund.customer.as_deref(), Some("cus_1"));
        assert_eq!(refund.incident.unwrap().reason.as_deref(), Some("partial"));
    }

    fn checkout_completed(id: &str, created: u64, reference: Option<&str>) -> Value {
        json!({"id": id, "created": created, "type": "checkout.session.completed",
            "data": {"object": {"mode": "subscription", "client_reference_id": reference,
                "metadata": {"tenant_id": "tn_1"}, "customer": "cus_9", "subscription": "sub_9"}}})
    }

    #[test]
    fn checkout_links_the_customer_without_changing_the_tier() {
        let mut record = record();
        let change = read_event(&checkout_completed("evt_1", 5, Some("tn_1"))).unwrap();
        assert_eq!(change.tenant.as_deref(), Some("tn_1"));
        assert_eq!(
            apply(&mut record, &change, &tiers()).unwrap().tier,
            "standard"
        );
        let linked = record.tenant.subscription.unwrap();
        assert_eq!(
            (linked.customer.as_deref(), linked.id.as_deref()),
            (Some("cus_9"), Some("sub_9"))
        );
    }

    #[test]
    fn news_of_an_unlinked_customer_never_links_it_again() {
        let mut record = record();
        record.tenant.subscription = Some(Subscription {
            former_customers: vec!["cus_9".into()],
            ..Subscription::default()
        });
        let change = read_event(&checkout_completed("evt_1", 5, None)).unwrap();
        assert_eq!(apply(&mut record, &change, &tiers()), Err(Unchanged::Stale));
    }

    #[test]
    fn a_redelivery_is_a_no_op_even_after_other_events_of_the_same_second() {
        let mut record = record();
        let created = event("created", "evt_1", 10, "active");
        let canceled = event("updated", "evt_2", 10, "canceled");
        apply_json(&mut record, created.clone());
        apply_json(&mut record, canceled);
        assert_eq!(apply_json(&mut record, created), None);
        assert_eq!(record.tenant.tier.as_ref(), "standard");
    }

    #[test]
    fn nothing_arriving_late_about_an_ended_subscription_revives_it() {
        let mut record = record();
        let deleted = event("deleted", "evt_2", 10, "canceled");
        let updated = event("updated", "evt_1", 10, "active");
        assert_eq!(
            apply_json(&mut record, deleted).as_deref(),
            Some("standard")
        );
        assert_eq!(
            apply_json(&mut record, updated),
            None,
            "deleted before updated"
        );
        assert_eq!(record.tenant.tier.as_ref(), "standard");
    }

    #[test]
    fn a_new_subscription_after_an_ended_one_starts_afresh() {
        let mut record = record();
        apply_json(&mut record, event("deleted", "evt_1", 10, "canceled"));
        let completed = json!({"id": "evt_2", "created": 20, "type": "checkout.session.completed",
            "data": {"object": {"mode": "subscription", "client_reference_id": "tn_1", "customer": "cus_1", "subscription": "sub_2"}}});
        apply_json(&mut record, completed);
        let mut created = event("created", "evt_3", 20, "active");
        created["data"]["object"]["id"] = json!("sub_2");
        assert_eq!(apply_json(&mut record, created).as_deref(), Some("pro"));
        assert_eq!(
            record.tenant.subscription.unwrap().id.as_deref(),
            Some("sub_2")
        );
    }

    #[test]
    fn a_failed_payment_makes_only_a_running_subscription_past_due() {
        // Current invoices name the subscription under parent.subscription_details.
        let failed = |id: &str| {
            json!({"id": id, "created": 20, "type": "invoice.payment_failed",
            "data": {"object": {"customer": "cus_1",
                "parent": {"subscription_details": {"subscription": "sub_1", "metadata": {"tenant_id": "tn_1"}}}}}})
        };
        let change = read_event(&failed("evt_x")).unwrap();
        assert_eq!(
            (change.tenant.as_deref(), change.subscription.as_deref()),
            (Some("tn_1"), Some("sub_1"))
        );
        for (status, after, past_due_since) in [
            ("incomplete", "incomplete", None),
            ("active", "past_due", Some(20)),
        ] {
            let mut tenant = record();
            apply_json(&mut tenant, event("created", "evt_1", 10, status));
            apply_json(&mut tenant, failed("evt_2"));
            let subscription = tenant.tenant.subscription.unwrap();
            assert_eq!(
                (subscription.status.as_deref(), subscription.past_due_since),
                (Some(after), past_due_since),
                "a failed payment of a subscription {status}"
            );
        }
    }

    #[test]
    fn a_cancellation_at_period_end_keeps_the_tier_until_the_subscription_ends() {
        let mut record = record();
        let mut updated = event("updated", "evt_1", 10, "active");
        updated["data"]["object"]["cancel_at_period_end"] = json!(true);
        assert_eq!(apply_json(&mut record, updated).as_deref(), Some("pro"));
        assert!(
            record
                .tenant
                .subscription
                .as_ref()
                .unwrap()
                .cancel_at_period_end
        );
    }

    #[test]
    fn only_tollgates_metadata_names_the_tenant_of_a_checkout() {
        let disagreeing = read_event(&checkout_completed("evt_1", 5, Some("tn_victim"))).unwrap();
        assert_eq!(
            disagreeing.tenant, None,
            "a Payment Link's reference is not trusted"
        );
        let mut without_metadata = checkout_completed("evt_2", 5, Some("tn_1"));
        without_metadata["data"]["object"]["metadata"] = json!({});
        assert_eq!(read_event(&without_metadata).unwrap().tenant, None);
    }

    #[test]
    fn a_checkout_completing_after_its_subscription_started_does_not_hide_it() {
        // Stripe creates the subscription (19) before the session completes (20); the
        // deliveries may arrive the other way round.
        let mut record = record();
        apply_json(&mut record, checkout_completed("evt_cs", 20, None));
        let mut created = event("created", "evt_sub", 19, "active");
        created["data"]["object"]["id"] = json!("sub_9");
        created["data"]["object"]["customer"] = json!("cus_9");
        assert_eq!(apply_json(&mut record, created).as_deref(), Some("pro"));
    }

    #[test]
    fn news_of_another_subscription_never_replaces_the_running_one() {
        let mut record = record();
        apply_json(&mut record, event("created", "evt_1", 10, "active"));
        let mut old_one_ends = event("deleted", "evt_2", 20, "canceled");
        old_one_ends["data"]["object"]["id"] = json!("sub_old");
        let change = read_event(&old_one_ends).unwrap();
        assert_eq!(
            apply(&mut record, &change, &tiers()),
            Err(Unchanged::Irrelevant)
        );
        assert_eq!(record.tenant.tier.as_ref(), "pro");
        let one_off_invoice = json!({"id": "evt_3", "created": 30, "type": "invoice.payment_failed",
            "data": {"object": {"customer": "cus_1"}}});
        let change = read_event(&one_off_invoice).unwrap();
        assert_eq!(
            apply(&mut record, &change, &tiers()),
            Err(Unchanged::Irrelevant)
        );
    }

    #[test]
    fn a_new_subscription_is_not_ordered_against_the_old_ones_events() {
        // sub_1 stops being paid; the tenant buys again (sub_2, created at 95); sub_1's
        // deletion (100) arrives before sub_2's creation.
        let mut record = record();
        apply_json(&mut record, event("updated", "evt_1", 50, "unpaid"));
        apply_json(&mut record, event("deleted", "evt_2", 100, "canceled"));
        let mut created = event("created", "evt_3", 95, "active");
        created["data"]["object"]["id"] = json!("sub_2");
        assert_eq!(apply_json(&mut record, created).as_deref(), Some("pro"));
    }
}
