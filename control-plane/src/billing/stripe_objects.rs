//! Stripe's objects as Tollgate reads them, from plain JSON: a subscription fetched from the
//! API or carried by a webhook event, in any API version (localstripe's 2017-08-15 shapes,
//! where the plan sits at the top level and the period on the subscription, and current
//! ones, where each item has a price and its own period). A missing field is `None`, never
//! an error: what is known is applied, the rest left as it was.

use serde_json::Value;

use super::stripe_api::TENANT_METADATA_KEY;

/// One item of a subscription: what it is priced at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The price id (or, in old API versions, the plan id).
    pub price: Option<String>,
    /// The price's lookup key, when Stripe includes it.
    pub lookup_key: Option<String>,
}

/// A subscription, as far as a tier depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSubscription {
    pub id: String,
    pub customer: Option<String>,
    pub status: Option<String>,
    pub items: Vec<Item>,
    pub cancel_at_period_end: Option<bool>,
    pub current_period_end: Option<u64>,
    /// `metadata.tenant_id`: Tollgate's Checkout puts it there.
    pub tenant: Option<String>,
    /// When Stripe created it (seconds).
    pub created: u64,
}

pub fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// An id of a related object: a string, or the object itself when expanded.
pub fn id_of(value: &Value) -> Option<String> {
    text(value).or_else(|| text(&value["id"]))
}

/// A subscription object; `None` if it has no id or is another kind of object.
pub fn read_subscription(object: &Value) -> Option<StripeSubscription> {
    if object["object"]
        .as_str()
        .is_some_and(|kind| kind != "subscription")
    {
        return None;
    }
    let id = text(&object["id"])?;
    let data = object["items"]["data"].as_array();
    let mut items: Vec<Item> = data
        .into_iter()
        .flatten()
        .map(|item| Item {
            price: id_of(&item["price"]).or_else(|| id_of(&item["plan"])),
            lookup_key: text(&item["price"]["lookup_key"]),
        })
        .collect();
    if items.is_empty() {
        // 2017-08-15 and older: one plan at the top level.
        if let Some(plan) = id_of(&object["plan"]) {
            items.push(Item {
                price: Some(plan),
                lookup_key: None,
            });
        }
    }
    // Since 2025-03-31 the period is per item; before, on the subscription.
    let item_period_end = data
        .into_iter()
        .flatten()
        .filter_map(|item| item["current_period_end"].as_u64())
        .max();
    Some(StripeSubscription {
        id,
        customer: id_of(&object["customer"]),
        status: text(&object["status"]),
        items,
        cancel_at_period_end: object["cancel_at_period_end"].as_bool(),
        current_period_end: object["current_period_end"].as_u64().or(item_period_end),
        tenant: text(&object["metadata"][TENANT_METADATA_KEY]),
        created: object["created"].as_u64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_api_shapes_read_the_same_facts() {
        let old = json!({"id": "sub_1", "object": "subscription", "customer": "cus_1",
            "status": "active", "cancel_at_period_end": false, "current_period_end": 200,
            "metadata": {"tenant_id": "tn_1"}, "plan": {"id": "price_pro"},
            "items": {"object": "list", "data": [{"plan": {"id": "price_pro"}, "quantity": 1}]}});
        let current = json!({"id": "sub_1", "object": "subscription",
            "customer": {"id": "cus_1", "object": "customer"}, "status": "active",
            "cancel_at_period_end": false, "metadata": {"tenant_id": "tn_1"},
            "items": {"data": [
                {"price": {"id": "price_addon", "lookup_key": null}, "current_period_end": 150},
                {"price": {"id": "price_pro", "lookup_key": "pro_monthly"}, "current_period_end": 200}]}});
        let old = read_subscription(&old).unwrap();
        let current = read_subscription(&current).unwrap();
        assert_eq!(
            (old.customer.as_deref(), old.current_period_end),
            (Some("cus_1"), Some(200))
        );
        assert_eq!(
            (current.customer.as_deref(), current.current_period_end),
            (Some("cus_1"), Some(200))
        );
        assert_eq!(old.items.len(), 1);
        assert_eq!(current.items[1].lookup_key.as_deref(), Some("pro_monthly"));
        assert_eq!(current.tenant.as_deref(), Some("tn_1"));
    }

    #[test]
    fn a_top_level_plan_stands_for_missing_items_and_other_objects_are_not_subscriptions() {
        let bare = json!({"id": "sub_1", "plan": {"id": "plan_1"}});
        assert_eq!(
            read_subscription(&bare).unwrap().items[0].price.as_deref(),
            Some("plan_1")
        );
        assert_eq!(
            read_subscription(&json!({"id": "in_1", "object": "invoice"})),
            None
        );
        assert_eq!(read_subscription(&json!({"status": "active"})), None);
    }
}
