//! Reading a Stripe webhook event, as the control-plane does once the signature has passed
//! (`Billing::read_webhook_event`).
//!
//! Input: the delivery's body. Properties: any body is an answer, never a panic; it is
//! refused exactly when it is not JSON; an event is read as a subscription change exactly
//! when it is of one of the five types that change a tenant (a checkout only in subscription
//! mode) and has a string id, and the change carries that id.

use serde_json::Value;
use tollgate_control_plane::billing::{Billing, BillingError};

const CHANGING_TYPES: [&str; 4] = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.payment_failed",
];

pub fn run(data: &[u8]) {
    let read = Billing::read_webhook_event(data);
    let json = serde_json::from_slice::<Value>(data);
    let (read, event) = match (read, json) {
        (Ok(read), Ok(event)) => (read, event),
        (Err(BillingError::MalformedEvent), Err(_)) => return,
        (read, json) => panic!("read {read:?}, but as JSON the body is {json:?}"),
    };
    let kind = event["type"].as_str();
    let changes_a_tenant = kind.is_some_and(|kind| CHANGING_TYPES.contains(&kind))
        || (kind == Some("checkout.session.completed")
            && event["data"]["object"]["mode"]
                .as_str()
                .is_none_or(|mode| mode == "subscription"));
    let id = event["id"].as_str();
    assert_eq!(
        read.is_some(),
        changes_a_tenant && id.is_some(),
        "{kind:?} {id:?}: {read:?}"
    );
    if let (Some(change), Some(id)) = (read, id) {
        let change = format!("{change:?}");
        assert!(change.contains(&format!("id: {id:?}")), "{change}");
    }
}
