//! Stripe webhooks: the tenant's tier follows its subscription.
//!
//! A delivery (`POST /api/v1/billing/webhook` on the public listener) is verified by its
//! `Stripe-Signature` over the raw body, then read as plain JSON rather than typed structs,
//! so deliveries from accounts on any API version work (localstripe sends 2017-08-15 shapes, Stripe today sends
//! newer ones); a missing field never drops a subscription change, it only leaves that part
//! as it was. Events are applied to the tenant's record idempotently (the ids of recent
//! events are kept with it, so a redelivery is a no-op) and safely out of order (an event
//! older than the last applied one is ignored, and an ended subscription stays ended). A
//! failure to store answers 503, so Stripe delivers again; nothing is lost.
//!
//! Status → tier: active or trialing → the paid tier of the subscription's price (the tier
//! table's `stripe_price`); past_due → the paid tier for `TOLLGATE_PAST_DUE_GRACE_SECS`
//! from the first failed payment, then the default tier (see `Decider::tier_in_force`);
//! canceled, unpaid, incomplete_expired, or a deleted subscription → the default tier.

use serde_json::Value;

use super::stripe_api::TENANT_METADATA_KEY;
use super::{Billing, BillingError, signature};
use crate::tenants::{StoredTenant, Subscription};
use crate::tiers::TierTable;

/// How many applied event ids a tenant remembers. Redeliveries come within days, amid a
/// handful of events per subscription; a redelivery older than the last applied event is
/// refused by its timestamp anyway.
const REMEMBERED_EVENTS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    CheckoutCompleted,
    Subscription,
    PaymentFailed,
}

/// What one event says about one tenant's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubscriptionEvent {
    id: String,
    kind: EventKind,
    created: u64,
    /// The tenant, when the event names it (metadata or client_reference_id).
    tenant: Option<String>,
    customer: Option<String>,
    subscription: Option<String>,
    status: Option<String>,
    price: Option<String>,
    cancel_at_period_end: Option<bool>,
}

impl Billing {
    /// Verifies a delivery's signature over its raw body, reads the event and applies it to
    /// the tenant it names. `Ok` also when the event changes nothing (Stripe must not retry
    /// it); `Err` when it was refused, or when storing failed (Stripe retries).
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
        let Some(change) = read_event(&event) else {
            tracing::info!(kind, "webhook event ignored");
            self.metrics.count_webhook(kind, "ignored");
            return Ok(());
        };
        let tenant = change.tenant.clone().or_else(|| {
            [&change.subscription, &change.customer]
                .into_iter()
                .flatten()
                .find_map(|stripe_id| self.tenants.by_stripe_id(stripe_id))
        });
        let Some(tenant) = tenant else {
            tracing::warn!(kind, event = %change.id, "webhook event names no known tenant");
            self.metrics.count_webhook(kind, "no_tenant");
            return Ok(());
        };
        let tiers = self.tiers.current();
        let applied = self
            .tenants
            .modify(&tenant, |record| apply(record, &change, &tiers))
            .await?;
        let outcome = match applied {
            None => {
                tracing::warn!(kind, %tenant, "webhook event for an unknown tenant");
                "no_tenant"
            }
            Some(Ok(tier)) => {
                tracing::info!(kind, %tenant, %tier, "subscription applied");
                "applied"
            }
            Some(Err(unchanged)) => {
                let reason = unchanged.label();
                tracing::info!(kind, %tenant, event = %change.id, reason, "webhook event changes nothing");
                reason
            }
        };
        self.metrics.count_webhook(kind, outcome);
        Ok(())
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

/// The subscription facts of the event types that change a tenant; `None` for the rest.
fn read_event(event: &Value) -> Option<SubscriptionEvent> {
    let object = &event["data"]["object"];
    let text = |value: &Value| value.as_str().map(str::to_owned);
    // Ids of related objects are strings, or the object itself when expanded.
    let id_of = |value: &Value| text(value).or_else(|| text(&value["id"]));
    let kind = match event["type"].as_str()? {
        "checkout.session.completed"
            if object["mode"].as_str().is_none_or(|m| m == "subscription") =>
        {
            EventKind::CheckoutCompleted
        }
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => EventKind::Subscription,
        "invoice.payment_failed" => EventKind::PaymentFailed,
        _ => return None,
    };
    let mut change = SubscriptionEvent {
        id: text(&event["id"])?,
        kind,
        created: event["created"].as_u64().unwrap_or(0),
        tenant: text(&object["metadata"][TENANT_METADATA_KEY]),
        customer: id_of(&object["customer"]),
        subscription: None,
        status: None,
        price: None,
        cancel_at_period_end: None,
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
            change.subscription = text(&object["id"]);
            change.status = if event["type"] == "customer.subscription.deleted" {
                Some("canceled".to_owned())
            } else {
                text(&object["status"])
            };
            // Current API versions: items.data[].price; older ones: items.data[].plan, or a
            // top-level plan (2017-08-15).
            let item = &object["items"]["data"][0];
            change.price = text(&item["price"]["id"])
                .or_else(|| text(&item["plan"]["id"]))
                .or_else(|| text(&object["plan"]["id"]));
            change.cancel_at_period_end = object["cancel_at_period_end"].as_bool();
        }
        EventKind::PaymentFailed => {
            // Before 2025-03-31 invoices name their subscription at the top level; since,
            // under parent.subscription_details.
            change.subscription = id_of(&object["subscription"])
                .or_else(|| id_of(&object["parent"]["subscription_details"]["subscription"]));
            change.tenant =
                text(&object["parent"]["subscription_details"]["metadata"][TENANT_METADATA_KEY]);
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
    /// A redelivery, an event older than the last status change, or news of a subscription
    /// that has ended.
    Stale,
    /// About another subscription than the running one, or a failed payment of a
    /// subscription that is not running.
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

/// Whether the event names the stored subscription (or none in particular).
fn is_about(current: &Subscription, change: &SubscriptionEvent) -> bool {
    change.subscription.is_none() || change.subscription == current.id
}

/// Whether the stored state already reflects the event or something newer: a redelivery, or,
/// about the stored subscription, a status change created before the last applied one or
/// news after it ended (Stripe never revives one, so whatever arrives late about it is
/// stale). Time orders the events of one subscription only, and not checkout events: they
/// carry no status, and Stripe creates the subscription before the session completes, so
/// its events may be the older ones.
fn is_stale(current: &Subscription, change: &SubscriptionEvent) -> bool {
    let about_current = is_about(current, change);
    current.recent_events.contains(&change.id)
        || (about_current
            && change.kind != EventKind::CheckoutCompleted
            && current.updated_at > change.created)
        || (about_current && change.subscription.is_some() && has_ended(current.status.as_deref()))
}

/// Applies the event to the tenant and returns the tier it is on afterwards, or why nothing
/// changed (nothing is stored then).
fn apply(
    record: &mut StoredTenant,
    change: &SubscriptionEvent,
    tiers: &TierTable,
) -> Result<String, Unchanged> {
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
        // A failed payment matters to the subscription that is running; a failed first
        // payment leaves a subscription incomplete, which Stripe reports by its own events,
        // and an invoice of no subscription is not about the tier.
        EventKind::PaymentFailed => change.subscription.is_none() || !same_subscription || !running,
        // While one subscription runs, news of another (an older one that ends late, say)
        // must not replace it.
        EventKind::CheckoutCompleted | EventKind::Subscription => !same_subscription && running,
    };
    if irrelevant {
        return Err(Unchanged::Irrelevant);
    }
    let mut subscription = tenant.subscription.take().unwrap_or_default();
    match change.kind {
        EventKind::PaymentFailed => subscription.status = Some("past_due".to_owned()),
        EventKind::CheckoutCompleted | EventKind::Subscription => {
            if !same_subscription {
                // A new subscription (none was running): nothing of the old one's state
                // carries over, its time included.
                subscription = Subscription {
                    customer: subscription.customer,
                    id: change.subscription.clone(),
                    recent_events: subscription.recent_events,
                    ..Subscription::default()
                };
            }
            if change.status.is_some() {
                subscription.status.clone_from(&change.status);
            }
            if change.customer.is_some() {
                subscription.customer.clone_from(&change.customer);
            }
            if let Some(cancel_at_period_end) = change.cancel_at_period_end {
                subscription.cancel_at_period_end = cancel_at_period_end;
            }
        }
    }
    match subscription.status.as_deref() {
        Some("active" | "trialing") if change.kind == EventKind::Subscription => {
            let paid = change.price.as_deref().and_then(|price| {
                tiers
                    .tiers()
                    .into_iter()
                    .find(|t| t.stripe_price.as_deref() == Some(price))
            });
            match paid {
                Some(tier) => tenant.tier = tier.name.clone(),
                None => {
                    tracing::warn!(price = ?change.price, "subscription price matches no tier; tier unchanged")
                }
            }
        }
        Some("canceled" | "unpaid" | "incomplete_expired") => {
            tenant.tier = tiers.default_tier().name.clone()
        }
        _ => {}
    }
    subscription.past_due_since = (subscription.status.as_deref() == Some("past_due"))
        .then(|| subscription.past_due_since.unwrap_or(change.created));
    if change.kind != EventKind::CheckoutCompleted {
        subscription.updated_at = change.created;
    }
    subscription.recent_events.push(change.id.clone());
    let overflow = subscription
        .recent_events
        .len()
        .saturating_sub(REMEMBERED_EVENTS);
    subscription.recent_events.drain(..overflow);
    tenant.subscription = Some(subscription);
    Ok(tenant.tier.to_string())
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
        apply(record, &read_event(&event).unwrap(), &tiers()).ok()
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
            let deleted = subscription_event(
                "evt_3",
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
    fn unknown_event_types_are_not_changes() {
        assert_eq!(
            read_event(&json!({"id": "evt_1", "type": "customer.created", "data": {"object": {}}})),
            None
        );
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
            apply(&mut record, &change, &tiers()).as_deref(),
            Ok("standard")
        );
        let linked = record.tenant.subscription.unwrap();
        assert_eq!(
            (linked.customer.as_deref(), linked.id.as_deref()),
            (Some("cus_9"), Some("sub_9"))
        );
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
    fn remembered_event_ids_are_bounded() {
        let mut record = record();
        for n in 0..100 {
            let event = event("updated", &format!("evt_{n}"), n, "active");
            apply_json(&mut record, event);
        }
        let remembered = &record.tenant.subscription.unwrap().recent_events;
        assert_eq!(remembered.len(), REMEMBERED_EVENTS);
        assert_eq!(remembered.last().map(String::as_str), Some("evt_99"));
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
