//! Reconciliation: a tenant's record is brought in line with what Stripe holds for it.
//!
//! A sync reads the tenant's customer (deleted → unlinked) and every subscription of it,
//! plus any subscription an event or the record names that belongs to the tenant by its
//! `metadata.tenant_id` (a second customer's, from before customers were created up front),
//! judges them with [`super::rules`] and stores the result. It runs for the tenant an event
//! names, for every linked tenant at startup and every `TOLLGATE_BILLING_SYNC_SECS`, a minute
//! after an event had to be applied without Stripe, and on demand (admin API, CLI).
//!
//! Syncs of many tenants run a bounded number at a time; a 429 from Stripe pauses all of
//! them for its `Retry-After` (or a doubling backoff) and the tenant is tried again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::rules::{self, Change};
use super::stripe_objects::{StripeSubscription, read_subscription};
use super::{Billing, BillingError, StripeApiError};
use crate::tenants::{Subscription, Tenant};

/// How often tenants marked for a re-sync (an event applied without Stripe) are retried.
const RESYNC_RETRY: Duration = Duration::from_secs(60);

/// How many times a sync of all tenants tries one tenant that Stripe rate-limits.
const RATE_LIMITED_ATTEMPTS: u32 = 4;

/// The longest pause a `Retry-After` is honoured for; longer ones are cut to it.
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// How many applied event ids a tenant remembers. Redeliveries come within days, amid a
/// handful of events per subscription.
pub(super) const REMEMBERED_EVENTS: usize = 32;

/// What asked for a sync (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Webhook,
    Startup,
    Periodic,
    /// Tenants an event was applied to without Stripe.
    Retry,
    Admin,
}

impl Trigger {
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Webhook => "webhook",
            Trigger::Startup => "startup",
            Trigger::Periodic => "periodic",
            Trigger::Retry => "retry",
            Trigger::Admin => "admin",
        }
    }
}

/// What an event says to look at, besides what the record names.
#[derive(Debug, Clone, Default)]
pub(super) struct Hint {
    pub subscription: Option<String>,
    /// The event's id, remembered with the tenant once applied.
    pub event: Option<String>,
    /// The event's time (seconds): a subscription it shows past due became so by then.
    pub created: u64,
}

/// The outcome of one tenant's sync.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncReport {
    pub tenant: Tenant,
    /// changed, unchanged, unlinked, not_linked.
    pub outcome: &'static str,
    pub changes: Vec<Change>,
}

/// The outcome of a sync of every linked tenant.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SyncSummary {
    pub synced: usize,
    pub unchanged: usize,
    pub failed: usize,
    /// The tenants that changed, and how.
    pub changed: Vec<SyncReport>,
    /// Tenants Stripe could not be asked about, with why.
    pub failures: Vec<SyncFailure>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncFailure {
    pub tenant: String,
    pub error: String,
}

impl Billing {
    /// Brings one tenant in line with Stripe.
    pub async fn sync_tenant(
        &self,
        id: &str,
        trigger: Trigger,
    ) -> Result<SyncReport, BillingError> {
        self.reconcile(id, &Hint::default(), trigger).await
    }

    /// Fetches what Stripe holds for the tenant (and what `hint` names) and applies it.
    pub(super) async fn reconcile(
        &self,
        id: &str,
        hint: &Hint,
        trigger: Trigger,
    ) -> Result<SyncReport, BillingError> {
        let result = self.reconcile_once(id, hint).await;
        let outcome = result.as_ref().map_or("failed", |report| report.outcome);
        self.metrics.count_sync(trigger.label(), outcome);
        result
    }

    async fn reconcile_once(&self, id: &str, hint: &Hint) -> Result<SyncReport, BillingError> {
        let stripe = self.sessions()?;
        let lock = self.sync_lock(id);
        let _one_at_a_time = lock.lock().await;
        let started = self.clock.now_secs();
        let tenant = self
            .tenants
            .get(id)
            .await?
            .ok_or(BillingError::TenantNotFound)?;
        let record = tenant.subscription.clone().unwrap_or_default();
        let mut named: Vec<String> = Vec::new();
        for subscription in hint
            .subscription
            .iter()
            .chain(&record.id)
            .chain(&record.conflicting_subscriptions)
        {
            if !named.contains(subscription) {
                named.push(subscription.clone());
            }
        }
        if record.customer.is_none() && named.is_empty() {
            return Ok(SyncReport {
                tenant,
                outcome: "not_linked",
                changes: Vec::new(),
            });
        }
        let belongs = |subscription: &StripeSubscription, customer: &Option<String>| {
            let former = subscription
                .customer
                .as_ref()
                .is_some_and(|c| record.former_customers.contains(c));
            !former
                && ((subscription.customer.is_some() && subscription.customer == *customer)
                    || subscription.tenant.as_deref() == Some(id))
        };

        let mut customer = record.customer.clone();
        let mut deleted = false;
        if let Some(linked) = &customer {
            deleted = stripe.customer(linked).await?.is_none();
        }
        let mut found: BTreeMap<String, StripeSubscription> = BTreeMap::new();
        if !deleted {
            // With no customer linked yet, a subscription that names the tenant links its
            // customer (subscriptions made before customers were created up front).
            if customer.is_none() {
                for subscription_id in &named {
                    let Some(subscription) = self.fetch_subscription(subscription_id).await? else {
                        continue;
                    };
                    if customer.is_none() && belongs(&subscription, &None) {
                        customer.clone_from(&subscription.customer);
                    }
                    found.insert(subscription.id.clone(), subscription);
                }
            }
            if let Some(linked) = &customer {
                for object in stripe.subscriptions_of(linked).await? {
                    if let Some(subscription) = read_subscription(&object) {
                        found.insert(subscription.id.clone(), subscription);
                    }
                }
            }
            for subscription_id in &named {
                if !found.contains_key(subscription_id)
                    && let Some(subscription) = self.fetch_subscription(subscription_id).await?
                {
                    found.insert(subscription.id.clone(), subscription);
                }
            }
        }
        let theirs: Vec<StripeSubscription> = found
            .into_values()
            .filter(|subscription| belongs(subscription, &customer))
            .collect();
        let tiers = self.tiers.current();
        let assessment = rules::assess(&theirs, &tiers);
        let now = self.clock.now_secs();
        let past_due_from = if hint.created > 0 { hint.created } else { now };
        let stored = self
            .tenants
            .modify(id, |stored| {
                let tier_before = stored.tenant.tier.clone();
                let billing = stored.tenant.subscription.get_or_insert_default();
                // Another replica synced this tenant after this fetch began: its view is
                // newer than this one. (Either way `Err` stores nothing.)
                if billing.synced_at.is_some_and(|at| at > started) {
                    return Err(());
                }
                let before = billing.clone();
                let outcome = if deleted {
                    rules::unlink(billing, &mut stored.tenant.tier, &tiers);
                    "unlinked"
                } else {
                    rules::settle(
                        billing,
                        &mut stored.tenant.tier,
                        &assessment,
                        customer.clone(),
                        past_due_from,
                        now,
                    );
                    "settled"
                };
                if let Some(event) = &hint.event {
                    remember(billing, event);
                    billing.updated_at = billing.updated_at.max(hint.created);
                }
                // Nothing new (a periodic sync of a tenant already right): nothing is written,
                // so a sync of every tenant costs the store only what changed.
                let confirmed = Subscription {
                    synced_at: before.synced_at,
                    ..billing.clone()
                };
                if confirmed == before && stored.tenant.tier == tier_before {
                    return Err(());
                }
                let changes = rules::changes(&before, &tier_before, billing, &stored.tenant.tier);
                Ok((
                    before,
                    billing.clone(),
                    outcome,
                    changes,
                    stored.tenant.clone(),
                ))
            })
            .await?;
        let (before, after, outcome, changes, tenant) = match stored {
            None => return Err(BillingError::TenantNotFound),
            Some(Err(())) => {
                let tenant = self
                    .tenants
                    .get(id)
                    .await?
                    .ok_or(BillingError::TenantNotFound)?;
                return Ok(SyncReport {
                    tenant,
                    outcome: "unchanged",
                    changes: Vec::new(),
                });
            }
            Some(Ok(stored)) => stored,
        };
        self.report_findings(id, &before, &after, assessment.unknown_status.as_deref());
        let outcome = match outcome {
            "unlinked" => {
                tracing::info!(tenant = %id, customer = ?before.customer, "Stripe customer deleted; tenant unlinked");
                "unlinked"
            }
            _ if changes.is_empty() => "unchanged",
            _ => {
                tracing::info!(tenant = %id, tier = %tenant.tier, changes = ?changes, "tenant synced with Stripe");
                "changed"
            }
        };
        Ok(SyncReport {
            tenant,
            outcome,
            changes,
        })
    }

    /// Logs and counts what a sync newly found wrong: a second running subscription, prices
    /// no tier lists, a status Tollgate does not know.
    fn report_findings(
        &self,
        id: &str,
        before: &Subscription,
        after: &Subscription,
        unknown_status: Option<&str>,
    ) {
        let new_conflicts: Vec<&String> = after
            .conflicting_subscriptions
            .iter()
            .filter(|s| !before.conflicting_subscriptions.contains(s))
            .collect();
        if !new_conflicts.is_empty() {
            tracing::warn!(
                tenant = %id,
                kept = ?after.id,
                conflicting = ?new_conflicts,
                "tenant has more than one running Stripe subscription; it keeps the best tier \
                 it pays for until an operator cancels the others"
            );
            self.metrics
                .billing_conflicts
                .inc_by(u64::try_from(new_conflicts.len()).unwrap_or(u64::MAX));
        }
        if !after.unmapped_prices.is_empty() && after.unmapped_prices != before.unmapped_prices {
            tracing::warn!(tenant = %id, subscription = ?after.id, prices = ?after.unmapped_prices,
                "a running subscription's prices match no tier; the tenant is on the default tier");
            self.metrics.count_unmapped("price");
        }
        if let Some(status) = unknown_status
            && before.status.as_deref() != Some(status)
        {
            tracing::warn!(tenant = %id, subscription = ?after.id, status,
                "unknown Stripe subscription status; the tenant is on the default tier");
            self.metrics.count_unmapped("status");
        }
    }

    async fn fetch_subscription(
        &self,
        id: &str,
    ) -> Result<Option<StripeSubscription>, BillingError> {
        let stripe = self.sessions()?;
        Ok(stripe
            .subscription(id)
            .await?
            .as_ref()
            .and_then(read_subscription))
    }

    /// Syncs every linked tenant (or only those marked for a re-sync), a bounded number at a
    /// time, waiting out Stripe's rate limit.
    pub async fn sync_all(&self, trigger: Trigger, only_marked: bool) -> SyncSummary {
        // The registry keeps the linked (and the marked) tenants' ids: no other tenant is read.
        let ids: VecDeque<String> = match self.tenants.linked(only_marked).await {
            Ok(ids) => ids.into(),
            Err(error) => {
                tracing::warn!(trigger = trigger.label(), %error, "billing sync cannot list the linked tenants; next time");
                return SyncSummary::default();
            }
        };
        let workers = self.settings.sync_concurrency.clamp(1, 64).min(ids.len());
        let queue = Arc::new(std::sync::Mutex::new(ids));
        // Milliseconds since the epoch (the clock's) before which nobody calls Stripe.
        let paused_until = Arc::new(AtomicU64::new(0));
        let mut running = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (billing, queue, paused_until) =
                (self.clone(), queue.clone(), paused_until.clone());
            running.spawn(async move {
                let mut done = Vec::new();
                loop {
                    let next = queue
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .pop_front();
                    let Some(id) = next else { return done };
                    let result = billing.sync_patiently(&id, trigger, &paused_until).await;
                    done.push((id, result));
                }
            });
        }
        let mut summary = SyncSummary::default();
        while let Some(joined) = running.join_next().await {
            for (tenant, result) in joined.unwrap_or_default() {
                summary.synced += 1;
                match result {
                    Ok(report) if report.changes.is_empty() => summary.unchanged += 1,
                    Ok(report) => summary.changed.push(report),
                    Err(error) => {
                        summary.failed += 1;
                        summary.failures.push(SyncFailure {
                            tenant,
                            error: error.to_string(),
                        });
                    }
                }
            }
        }
        summary
            .changed
            .sort_by(|a, b| a.tenant.id.cmp(&b.tenant.id));
        if summary.failed > 0 {
            tracing::warn!(trigger = trigger.label(), synced = summary.synced, failed = summary.failed,
                failures = ?summary.failures, "billing sync could not ask Stripe about every tenant");
        } else if summary.synced > 0 {
            tracing::info!(
                trigger = trigger.label(),
                synced = summary.synced,
                changed = summary.changed.len(),
                "billing sync done"
            );
        }
        summary
    }

    /// One tenant's sync, waiting out (and then honouring for everyone) Stripe's rate limit.
    async fn sync_patiently(
        &self,
        id: &str,
        trigger: Trigger,
        paused_until: &AtomicU64,
    ) -> Result<SyncReport, BillingError> {
        let mut attempt = 0;
        loop {
            let wait = paused_until
                .load(Ordering::Acquire)
                .saturating_sub(self.clock.now_ms());
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            match self.reconcile(id, &Hint::default(), trigger).await {
                Err(BillingError::Stripe(StripeApiError::RateLimited { retry_after }))
                    if attempt + 1 < RATE_LIMITED_ATTEMPTS =>
                {
                    let pause = pause_after(retry_after, attempt);
                    tracing::info!(tenant = %id, pause_ms = pause.as_millis() as u64, "Stripe is rate-limiting the sync; pausing");
                    let until =
                        self.clock.now_ms() + u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
                    paused_until.fetch_max(until, Ordering::AcqRel);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Syncs every linked tenant at once, then every `period`, and the tenants marked for a
    /// re-sync every minute, on the background runtime, for as long as it runs.
    pub fn spawn_sync(&self, period: Duration) {
        let billing = self.clone();
        self.shared.background.spawn(async move {
            billing.sync_all(Trigger::Startup, false).await;
            let mut full = tokio::time::interval(period);
            full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            full.tick().await;
            let mut retry = tokio::time::interval(RESYNC_RETRY.min(period));
            retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            retry.tick().await;
            loop {
                tokio::select! {
                    _ = full.tick() => { billing.sync_all(Trigger::Periodic, false).await; }
                    _ = retry.tick() => { billing.sync_all(Trigger::Retry, true).await; }
                }
            }
        });
    }

    /// Unlinks the tenant from its Stripe customer by an operator's decision: nothing is
    /// changed at Stripe (cancel there what should not bill); the tenant goes back to the
    /// default tier if a subscription had set its tier, and its next checkout creates a new
    /// customer.
    pub async fn unlink(&self, id: &str) -> Result<Tenant, BillingError> {
        let tiers = self.tiers.current();
        let unlinked = self
            .tenants
            .modify(id, |stored| {
                let Some(billing) = stored.tenant.subscription.as_mut() else {
                    // Never linked: nothing to store.
                    return Err(Box::new(stored.tenant.clone()));
                };
                let customer = billing.customer.clone();
                rules::unlink(billing, &mut stored.tenant.tier, &tiers);
                Ok((customer, stored.tenant.clone()))
            })
            .await?;
        match unlinked {
            Some(Ok((customer, tenant))) => {
                tracing::info!(tenant = %id, ?customer, "tenant unlinked from Stripe by an operator");
                Ok(tenant)
            }
            Some(Err(never_linked)) => Ok(*never_linked),
            None => Err(BillingError::TenantNotFound),
        }
    }
}

/// How long to pause after a 429: Stripe's `Retry-After` (at most a minute), else one second
/// doubling with each attempt.
fn pause_after(retry_after: Option<Duration>, attempt: u32) -> Duration {
    retry_after
        .unwrap_or_else(|| Duration::from_secs(1) * 2u32.saturating_pow(attempt))
        .min(MAX_PAUSE)
}

/// Remembers an applied event's id, so a redelivery is a no-op.
pub(super) fn remember(billing: &mut Subscription, event: &str) {
    if billing.recent_events.iter().any(|e| e == event) {
        return;
    }
    billing.recent_events.push(event.to_owned());
    let overflow = billing
        .recent_events
        .len()
        .saturating_sub(REMEMBERED_EVENTS);
    billing.recent_events.drain(..overflow);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_pauses_for_retry_after_or_a_doubling_second_never_more_than_a_minute() {
        assert_eq!(
            pause_after(Some(Duration::from_secs(3)), 0),
            Duration::from_secs(3)
        );
        assert_eq!(pause_after(None, 0), Duration::from_secs(1));
        assert_eq!(pause_after(None, 2), Duration::from_secs(4));
        assert_eq!(pause_after(Some(Duration::from_secs(3600)), 0), MAX_PAUSE);
        assert_eq!(pause_after(None, 30), MAX_PAUSE);
    }

    #[test]
    fn remembered_event_ids_are_bounded_and_unique() {
        let mut billing = Subscription::default();
        for n in 0..100 {
            remember(&mut billing, &format!("evt_{n}"));
        }
        remember(&mut billing, "evt_99");
        assert_eq!(billing.recent_events.len(), REMEMBERED_EVENTS);
        assert_eq!(
            billing.recent_events.last().map(String::as_str),
            Some("evt_99")
        );
    }
}
