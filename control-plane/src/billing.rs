//! Stripe webhooks: the tenant's tier follows its subscription.
//!
//! `POST /api/v1/billing/webhook` (public listener) verifies `Stripe-Signature` over the raw
//! body, then reads the event as plain JSON rather than typed structs, so deliveries from
//! accounts on any API version work (localstripe sends 2017-08-15 shapes, Stripe today sends
//! newer ones); a missing field never drops a subscription change, it only leaves that part
//! as it was. Events are applied to the tenant's record idempotently (a redelivered event id
//! is a no-op) and in order (an event older than the last applied one is ignored). A failure
//! to store answers 503, so Stripe delivers again; nothing is lost.
//!
//! Status → tier: active or trialing → the paid tier of the subscription's price (the tier
//! table's `stripe_price`); past_due → the paid tier for `TOLLGATE_PAST_DUE_GRACE_SECS`
//! from the first failed payment, then the default tier (see `AppState::tier_in_force`);
//! canceled, unpaid, incomplete_expired, or a deleted subscription → the default tier.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::app::AppState;
use crate::directory::unix_now;
use crate::error::ApiError;
use crate::stripe_signature;
use crate::tenants::{StoredTenant, Subscription};
use crate::tiers::TierTable;

/// What one event says about one tenant's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubscriptionEvent {
    id: String,
    created: u64,
    /// The tenant, when the event names it (metadata or client_reference_id).
    tenant: Option<String>,
    customer: Option<String>,
    subscription: Option<String>,
    status: Option<String>,
    price: Option<String>,
}

pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let secret = state
        .stripe_webhook_secret
        .as_ref()
        .ok_or(ApiError::BillingNotConfigured)?;
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    stripe_signature::verify(signature, &body, secret.expose(), unix_now()).map_err(|error| {
        tracing::warn!(%error, "webhook refused");
        state.metrics.count_webhook("", "refused");
        ApiError::InvalidSignature
    })?;
    let event: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::InvalidField("the event is not JSON"))?;
    let kind = event["type"].as_str().unwrap_or_default();
    let Some(change) = read_event(&event) else {
        tracing::info!(kind, "webhook event ignored");
        state.metrics.count_webhook(kind, "ignored");
        return Ok(StatusCode::OK);
    };
    let tenant = change
        .tenant
        .clone()
        .or_else(|| tenant_of_customer(&state, change.customer.as_deref()?));
    let Some(tenant) = tenant else {
        tracing::warn!(kind, event = %change.id, "webhook event names no known tenant");
        state.metrics.count_webhook(kind, "no_tenant");
        return Ok(StatusCode::OK);
    };
    let tiers = state.tiers.current();
    let applied = state
        .directory
        .modify(&tenant, |record| apply(record, &change, &tiers))
        .await?;
    let outcome = match applied {
        None => {
            tracing::warn!(kind, %tenant, "webhook event for an unknown tenant");
            "no_tenant"
        }
        Some(None) => {
            tracing::info!(kind, %tenant, event = %change.id, "webhook event already applied or older");
            "already_applied"
        }
        Some(Some(tier)) => {
            tracing::info!(kind, %tenant, %tier, "subscription applied");
            "applied"
        }
    };
    state.metrics.count_webhook(kind, outcome);
    Ok(StatusCode::OK)
}

fn tenant_of_customer(state: &AppState, customer: &str) -> Option<String> {
    state
        .directory
        .list()
        .into_iter()
        .find(|t| t.subscription.as_ref().and_then(|s| s.customer.as_deref()) == Some(customer))
        .map(|t| t.id.to_string())
}

/// The subscription facts of the event types that change a tenant; `None` for the rest.
fn read_event(event: &Value) -> Option<SubscriptionEvent> {
    let object = &event["data"]["object"];
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let mut change = SubscriptionEvent {
        id: text(&event["id"])?,
        created: event["created"].as_u64().unwrap_or(0),
        tenant: None,
        customer: text(&object["customer"]),
        subscription: None,
        status: None,
        price: None,
    };
    match event["type"].as_str()? {
        "checkout.session.completed" => {
            change.tenant = text(&object["client_reference_id"])
                .or_else(|| text(&object["metadata"]["tenant_id"]));
            change.subscription = text(&object["subscription"]);
        }
        kind @ ("customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted") => {
            change.tenant = text(&object["metadata"]["tenant_id"]);
            change.subscription = text(&object["id"]);
            change.status = if kind == "customer.subscription.deleted" {
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
        }
        "invoice.payment_failed" => {
            change.subscription = text(&object["subscription"]);
            change.status = Some("past_due".to_owned());
        }
        _ => return None,
    }
    Some(change)
}

/// Applies the event to the tenant; `None` when it was already applied or is older than the
/// last one (nothing is stored then). Returns the tier the tenant is on afterwards.
fn apply(
    record: &mut StoredTenant,
    change: &SubscriptionEvent,
    tiers: &TierTable,
) -> Option<String> {
    let tenant = &mut record.tenant;
    if let Some(current) = &tenant.subscription
        && (current.last_event == change.id || current.updated_at > change.created)
    {
        return None;
    }
    let previous = tenant.subscription.take();
    let old_past_due_since = previous.as_ref().and_then(|s| s.past_due_since);
    let keep = |new: &Option<String>, old: Option<String>| new.clone().or(old);
    let (old_customer, old_id, old_status) = match previous {
        Some(s) => (s.customer, s.id, s.status),
        None => (None, None, None),
    };
    let status = keep(&change.status, old_status);
    match status.as_deref() {
        Some("active" | "trialing") => {
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
    tenant.subscription = Some(Subscription {
        customer: keep(&change.customer, old_customer),
        id: keep(&change.subscription, old_id),
        status: status.clone(),
        updated_at: change.created,
        last_event: change.id.clone(),
        past_due_since: (status.as_deref() == Some("past_due"))
            .then(|| old_past_due_since.unwrap_or(change.created)),
    });
    Some(tenant.tier.to_string())
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

    fn apply_json(record: &mut StoredTenant, event: Value) -> Option<String> {
        apply(record, &read_event(&event).unwrap(), &tiers())
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
        apply_json(
            &mut record,
            subscription_event(
                "evt_2",
                20,
                "customer.subscription.updated",
                "active",
                "current",
            ),
        );
        let again = subscription_event(
            "evt_2",
            20,
            "customer.subscription.updated",
            "canceled",
            "current",
        );
        assert_eq!(apply_json(&mut record, again), None, "the same event id");
        let older = subscription_event(
            "evt_1",
            10,
            "customer.subscription.updated",
            "canceled",
            "current",
        );
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

    #[test]
    fn checkout_links_the_customer_without_changing_the_tier() {
        let mut record = record();
        let completed = json!({"id": "evt_1", "created": 5, "type": "checkout.session.completed",
            "data": {"object": {"client_reference_id": "tn_1", "customer": "cus_9", "subscription": "sub_9"}}});
        let change = read_event(&completed).unwrap();
        assert_eq!(change.tenant.as_deref(), Some("tn_1"));
        assert_eq!(
            apply(&mut record, &change, &tiers()).as_deref(),
            Some("standard")
        );
        let linked = record.tenant.subscription.unwrap();
        assert_eq!(
            (linked.customer.as_deref(), linked.id.as_deref()),
            (Some("cus_9"), Some("sub_9"))
        );
    }
}
