//! The billing rules: what tier a tenant's subscriptions buy, in pure code.
//!
//! Status → standing, conservatively: active and trialing are paid; past_due is paid for the
//! grace period (`TOLLGATE_PAST_DUE_GRACE_SECS`, applied by the decision path from
//! `past_due_since`); paused, incomplete, incomplete_expired, canceled, unpaid and any status
//! Tollgate does not know buy the default tier. A paid subscription buys the best tier any of
//! its items' prices (or lookup keys) is listed under; one whose prices no tier lists buys
//! the default tier and is reported as unmapped.
//!
//! [`assess`] judges everything Stripe holds for a tenant at once: the subscription that
//! sets the tier is the running one that buys the best tier (a tenant billed twice keeps the
//! best it pays for), and any other running one is a conflict for an operator to resolve.
//! [`settle`] writes an assessment onto the tenant's record and says what changed.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use super::stripe_objects::{Item, StripeSubscription};
use crate::tenants::Subscription;
use crate::tiers::{Tier, TierName, TierTable};

/// How many unlinked customers a tenant remembers (they are never linked again).
const REMEMBERED_CUSTOMERS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// active, trialing: the tier of the price.
    Paid,
    /// past_due: the tier of the price for the grace period.
    PastDue,
    /// paused, incomplete, incomplete_expired, canceled, unpaid: the default tier.
    Lapsed,
    /// A status Tollgate does not know (or none): the default tier, and reported.
    Unknown,
}

impl Standing {
    pub fn of(status: Option<&str>) -> Standing {
        match status {
            Some("active" | "trialing") => Standing::Paid,
            Some("past_due") => Standing::PastDue,
            Some("paused" | "incomplete" | "incomplete_expired" | "canceled" | "unpaid") => {
                Standing::Lapsed
            }
            _ => Standing::Unknown,
        }
    }

    /// Running and billed: it buys its tier.
    pub fn is_running(self) -> bool {
        matches!(self, Standing::Paid | Standing::PastDue)
    }
}

/// What a subscription's items buy if it runs: the best tier any of them is listed under
/// (`None`: none is), and its price ids.
pub fn tier_of_items(items: &[Item], tiers: &TierTable) -> (Option<Arc<Tier>>, Vec<String>) {
    let prices: Vec<String> = items.iter().filter_map(|i| i.price.clone()).collect();
    let best = items
        .iter()
        .filter_map(|item| tiers.tier_for_price(item.price.as_deref(), item.lookup_key.as_deref()))
        .max_by_key(|tier| tier.rank())
        .cloned();
    (best, prices)
}

/// The tier a running subscription buys, and the prices that left it on the default tier
/// when none of them is listed.
fn running_tier(subscription: &StripeSubscription, tiers: &TierTable) -> (Arc<Tier>, Vec<String>) {
    match tier_of_items(&subscription.items, tiers) {
        (Some(tier), _) => (tier, Vec::new()),
        (None, prices) => (tiers.default_tier().clone(), prices),
    }
}

/// What Stripe's subscriptions of one tenant add up to.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// The subscription that sets the tier: the best running one, else the newest.
    pub primary: Option<StripeSubscription>,
    /// The tier it buys.
    pub tier: Arc<Tier>,
    /// Other running subscriptions: the tenant is billed more than once.
    pub conflicting: Vec<String>,
    /// The primary runs on prices no tier lists.
    pub unmapped_prices: Vec<String>,
    /// The primary's status is one Tollgate does not know.
    pub unknown_status: Option<String>,
}

pub fn assess(subscriptions: &[StripeSubscription], tiers: &TierTable) -> Assessment {
    let mut running: Vec<(&StripeSubscription, Arc<Tier>, Vec<String>)> = subscriptions
        .iter()
        .filter(|s| Standing::of(s.status.as_deref()).is_running())
        .map(|s| {
            let (tier, unmapped) = running_tier(s, tiers);
            (s, tier, unmapped)
        })
        .collect();
    // Best tier first; among equals the newest, then by id, so every replica picks the same.
    running.sort_by(|a, b| {
        b.1.rank()
            .cmp(&a.1.rank())
            .then(b.0.created.cmp(&a.0.created))
            .then(a.0.id.cmp(&b.0.id))
    });
    if let Some((primary, tier, unmapped)) = running.first() {
        let mut conflicting: Vec<String> =
            running[1..].iter().map(|(s, ..)| s.id.clone()).collect();
        conflicting.sort();
        return Assessment {
            primary: Some((*primary).clone()),
            tier: tier.clone(),
            conflicting,
            unmapped_prices: unmapped.clone(),
            unknown_status: None,
        };
    }
    let newest = subscriptions
        .iter()
        .max_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    let unknown_status = newest
        .filter(|s| Standing::of(s.status.as_deref()) == Standing::Unknown)
        .map(|s| s.status.clone().unwrap_or_default());
    Assessment {
        primary: newest.cloned(),
        tier: tiers.default_tier().clone(),
        conflicting: Vec::new(),
        unmapped_prices: Vec::new(),
        unknown_status,
    }
}

/// One field a sync changed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Change {
    pub field: &'static str,
    pub from: Value,
    pub to: Value,
}

/// The fields a sync reports changes of, as they stand.
fn reported(record: &Subscription, tier: &str) -> [(&'static str, Value); 8] {
    [
        ("tier", json!(tier)),
        ("customer", json!(record.customer)),
        ("subscription", json!(record.id)),
        ("status", json!(record.status)),
        ("cancel_at_period_end", json!(record.cancel_at_period_end)),
        ("prices", json!(record.prices)),
        (
            "conflicting_subscriptions",
            json!(record.conflicting_subscriptions),
        ),
        ("unmapped_prices", json!(record.unmapped_prices)),
    ]
}

pub fn changes(
    before: &Subscription,
    tier_before: &str,
    after: &Subscription,
    tier_after: &str,
) -> Vec<Change> {
    reported(before, tier_before)
        .into_iter()
        .zip(reported(after, tier_after))
        .filter(|((_, from), (_, to))| from != to)
        .map(|((field, from), (_, to))| Change { field, from, to })
        .collect()
}

/// Writes what Stripe says onto the tenant's billing record and tier. `customer`: the
/// tenant's customer after this sync; `past_due_from`: when a subscription newly past due
/// started being so, as far as known (the event's time, or now). The tier is set whenever a
/// subscription speaks for it (a tenant that never subscribed keeps the tier an operator
/// gave it).
pub fn settle(
    record: &mut Subscription,
    tier: &mut TierName,
    assessment: &Assessment,
    customer: Option<String>,
    past_due_from: u64,
    now: u64,
) {
    let had_subscription = record.id.is_some();
    let previous_id = record.id.clone();
    record.customer = customer;
    match &assessment.primary {
        Some(primary) => {
            record.id = Some(primary.id.clone());
            record.status.clone_from(&primary.status);
            record.cancel_at_period_end = primary.cancel_at_period_end.unwrap_or(false);
            record.current_period_end = primary.current_period_end;
            record.prices = primary
                .items
                .iter()
                .filter_map(|i| i.price.clone())
                .collect();
        }
        None => {
            record.id = None;
            record.status = None;
            record.cancel_at_period_end = false;
            record.current_period_end = None;
            record.prices = Vec::new();
        }
    }
    let past_due = assessment
        .primary
        .as_ref()
        .is_some_and(|p| Standing::of(p.status.as_deref()) == Standing::PastDue);
    record.past_due_since = if past_due {
        let same = previous_id == record.id;
        record
            .past_due_since
            .filter(|_| same)
            .or(Some(past_due_from))
    } else {
        None
    };
    record
        .conflicting_subscriptions
        .clone_from(&assessment.conflicting);
    record
        .unmapped_prices
        .clone_from(&assessment.unmapped_prices);
    record.synced_at = Some(now);
    record.needs_sync = false;
    if assessment.primary.is_some() || had_subscription {
        *tier = assessment.tier.name.clone();
    }
}

/// Unlinks the tenant from its Stripe customer (deleted at Stripe, or by an operator): the
/// customer is remembered so that late news about it never links it again; a tenant whose
/// tier a subscription set goes back to the default tier (deleting a customer cancels its
/// subscriptions). Returns whether anything was linked.
pub fn unlink(record: &mut Subscription, tier: &mut TierName, tiers: &TierTable) -> bool {
    let linked = record.customer.is_some() || record.id.is_some();
    if record.id.is_some() {
        *tier = tiers.default_tier().name.clone();
    }
    if let Some(customer) = record.customer.take() {
        record.former_customers.retain(|c| *c != customer);
        record.former_customers.push(customer);
        let overflow = record
            .former_customers
            .len()
            .saturating_sub(REMEMBERED_CUSTOMERS);
        record.former_customers.drain(..overflow);
    }
    *record = Subscription {
        updated_at: record.updated_at,
        recent_events: std::mem::take(&mut record.recent_events),
        former_customers: std::mem::take(&mut record.former_customers),
        incidents: std::mem::take(&mut record.incidents),
        ..Subscription::default()
    };
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiers() -> TierTable {
        r#"
            default_tier = "standard"
            [tiers.standard]
            limit = 60
            window_seconds = 60
            [tiers.pro]
            limit = 1000
            window_seconds = 60
            stripe_price = "price_pro"
            stripe_prices = ["price_pro_annual"]
            [tiers.scale]
            limit = 10000
            window_seconds = 60
            stripe_price = "price_scale"
        "#
        .parse()
        .unwrap()
    }

    fn subscription(id: &str, status: &str, prices: &[&str], created: u64) -> StripeSubscription {
        StripeSubscription {
            id: id.into(),
            customer: Some("cus_1".into()),
            status: Some(status.into()),
            items: prices
                .iter()
                .map(|p| Item {
                    price: Some((*p).into()),
                    lookup_key: None,
                })
                .collect(),
            cancel_at_period_end: Some(false),
            current_period_end: Some(100),
            tenant: Some("tn_1".into()),
            created,
        }
    }

    #[test]
    fn every_status_maps_conservatively() {
        let tiers = tiers();
        for (status, tier) in [
            ("active", "pro"),
            ("trialing", "pro"),
            ("past_due", "pro"),
            ("paused", "standard"),
            ("incomplete", "standard"),
            ("incomplete_expired", "standard"),
            ("canceled", "standard"),
            ("unpaid", "standard"),
            ("something_new", "standard"),
        ] {
            let assessed = assess(&[subscription("sub_1", status, &["price_pro"], 1)], &tiers);
            assert_eq!(assessed.tier.name.as_ref(), tier, "{status}");
            assert_eq!(
                assessed.unknown_status.is_some(),
                status == "something_new",
                "{status}"
            );
        }
    }

    #[test]
    fn every_item_counts_and_an_unknown_price_buys_the_default_tier() {
        let tiers = tiers();
        let add_on_first = subscription("sub_1", "active", &["price_addon", "price_pro_annual"], 1);
        let assessed = assess(&[add_on_first], &tiers);
        assert_eq!(assessed.tier.name.as_ref(), "pro");
        assert!(assessed.unmapped_prices.is_empty());
        let unknown = assess(
            &[subscription("sub_1", "active", &["price_other"], 1)],
            &tiers,
        );
        assert_eq!(unknown.tier.name.as_ref(), "standard");
        assert_eq!(unknown.unmapped_prices, ["price_other"]);
    }

    #[test]
    fn a_tenant_billed_twice_keeps_the_best_tier_and_the_other_is_a_conflict() {
        let tiers = tiers();
        let subscriptions = [
            subscription("sub_old", "canceled", &["price_scale"], 1),
            subscription("sub_pro", "active", &["price_pro"], 3),
            subscription("sub_scale", "past_due", &["price_scale"], 2),
        ];
        let assessed = assess(&subscriptions, &tiers);
        assert_eq!(assessed.primary.unwrap().id, "sub_scale");
        assert_eq!(assessed.tier.name.as_ref(), "scale");
        assert_eq!(assessed.conflicting, ["sub_pro"]);
    }

    #[test]
    fn without_a_running_subscription_the_newest_one_is_shown() {
        let tiers = tiers();
        let subscriptions = [
            subscription("sub_1", "canceled", &["price_pro"], 1),
            subscription("sub_2", "paused", &["price_pro"], 2),
        ];
        let assessed = assess(&subscriptions, &tiers);
        assert_eq!(assessed.primary.unwrap().status.as_deref(), Some("paused"));
        assert_eq!(assessed.tier.name.as_ref(), "standard");
        assert!(assess(&[], &tiers).primary.is_none());
    }

    #[test]
    fn settling_keeps_the_past_due_start_and_a_never_subscribed_tenants_tier() {
        let tiers = tiers();
        let mut record = Subscription::default();
        let mut tier: TierName = "standard".into();
        let past_due = assess(
            &[subscription("sub_1", "past_due", &["price_pro"], 1)],
            &tiers,
        );
        settle(
            &mut record,
            &mut tier,
            &past_due,
            Some("cus_1".into()),
            50,
            60,
        );
        assert_eq!((tier.as_ref(), record.past_due_since), ("pro", Some(50)));
        settle(
            &mut record,
            &mut tier,
            &past_due,
            Some("cus_1".into()),
            70,
            80,
        );
        assert_eq!(
            record.past_due_since,
            Some(50),
            "the grace runs from the first failure"
        );
        let paid = assess(
            &[subscription("sub_1", "active", &["price_pro"], 1)],
            &tiers,
        );
        let before = record.clone();
        settle(&mut record, &mut tier, &paid, Some("cus_1".into()), 90, 90);
        assert_eq!(record.past_due_since, None);
        let changed = changes(&before, "pro", &record, "pro");
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_eq!(changed[0].field, "status");

        let mut comped = Subscription::default();
        let mut tier: TierName = "pro".into();
        settle(
            &mut comped,
            &mut tier,
            &assess(&[], &tiers),
            Some("cus_1".into()),
            0,
            0,
        );
        assert_eq!(tier.as_ref(), "pro", "no subscription speaks for the tier");
    }

    #[test]
    fn unlinking_remembers_the_customer_and_ends_the_paid_tier() {
        let tiers = tiers();
        let mut record = Subscription {
            customer: Some("cus_1".into()),
            id: Some("sub_1".into()),
            status: Some("active".into()),
            recent_events: vec!["evt_1".into()],
            ..Subscription::default()
        };
        let mut tier: TierName = "pro".into();
        assert!(unlink(&mut record, &mut tier, &tiers));
        assert_eq!(tier.as_ref(), "standard");
        assert_eq!(
            (record.customer.as_deref(), record.id.as_deref()),
            (None, None)
        );
        assert_eq!(record.former_customers, ["cus_1"]);
        assert_eq!(record.recent_events, ["evt_1"]);
        assert!(
            !unlink(&mut record, &mut tier, &tiers),
            "nothing left to unlink"
        );
    }
}
