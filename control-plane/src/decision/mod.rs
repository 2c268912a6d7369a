//! The decision: whose key this is, which tier is in force for it, and what its window says.
//!
//! One key hash, two lookups (the tenant, in memory or one store read on a cache miss; the
//! tier) and one window-store operation. The [`Decider`] holds exactly what that takes (tenant directory, tier source, window store, key
//! hasher, clock) and knows nothing of HTTP: the decision endpoint only parses the callout's
//! headers into a [`DecisionRequest`] and encodes the [`Answer`]. The usage a tenant sees is
//! read through the same rules ([`usage`]), so the two never disagree about the tier.

pub mod usage;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_protocol::{Answer, DecisionRequest, Lease, MonthlyQuota, Quota};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::storage::StoreError;
use crate::tenants::{Directory, KeyHasher, KeyOwner};
use crate::tiers::{Tier, TierName, TierSource};
use crate::window::{LeaseId, Returned, WindowRequest, WindowStore, Windows};

/// Why no decision (or usage) could be had. The filter sees 503 and applies its failure mode.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// The window store failed, or the tenants are not loaded yet.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tenant's tier is not in the table. Reloads refuse a table that drops a tier in
    /// use, so this means the tenant's record names a tier that never existed here.
    #[error("tenant {tenant} is on tier {tier:?}, which the tier table does not define")]
    MissingTier { tenant: String, tier: TierName },
}

/// How decisions are made, beyond each tenant's tier.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How long a past-due subscription keeps its paid tier.
    pub past_due_grace: Duration,
    /// Shadow mode for every tier: decide and count, never refuse.
    pub shadow_all: bool,
    /// How long a lease lasts (see `window::lease`); zero: no leases.
    pub lease_ttl: Duration,
}

/// Decides callouts and reads usage. Cloning copies a few `Arc`s.
#[derive(Clone)]
pub struct Decider {
    pub tenants: Arc<Directory>,
    pub tiers: Arc<TierSource>,
    pub windows: Arc<Windows>,
    pub keys: KeyHasher,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub policy: Policy,
}

impl Decider {
    /// The answer to one callout.
    pub async fn decide(&self, request: &DecisionRequest<'_>) -> Result<Answer, DecisionError> {
        let key = self.keys.hash(request.api_key);
        // A cached tenant is a memory lookup; a miss is one store read (see `tenants::directory`).
        let owner = self.tenants.by_key(&key, self.clock.now_secs()).await?;
        self.metrics.count_lookup(owner.is_some());
        let Some(owner) = owner else {
            return Ok(Answer::UnknownKey);
        };
        if owner.suspended {
            return Ok(Answer::Suspended {
                tenant: owner.id.to_string(),
            });
        }
        let tier = self.tier_in_force(&owner)?;
        let cost = tier.cost(request.route, request.cost);
        let window_request = WindowRequest {
            cost,
            reported_denials: request.edge_denied,
            lease_max: if tier.lease { request.lease_max } else { 0 },
            lease_ttl_ms: u64::try_from(self.policy.lease_ttl.as_millis()).unwrap_or(u64::MAX),
            returned: self.returned(request),
        };
        let started = Instant::now();
        let decision = self
            .windows
            .decide_request(&owner.id, tier.quota(), window_request)
            .await;
        self.metrics
            .store_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        let decision = decision.inspect_err(|_| {
            self.metrics.store_errors.inc();
        })?;
        let quota = Quota {
            policy: tier.name.to_string(),
            limit: tier.limit,
            window_seconds: tier.window_seconds(),
            remaining: decision.remaining,
            reset_ms: decision.reset_ms,
            monthly: tier
                .monthly_limit
                .zip(decision.month)
                .map(|(limit, month)| MonthlyQuota {
                    limit,
                    remaining: month.remaining,
                    reset_ms: month.reset_ms,
                }),
        };
        let tenant = owner.id.to_string();
        let retry_after_ms = decision.retry_after_ms;
        // Counted here, where the tier's price for the route is known; the decision endpoint
        // counts calls. The outcome names match its `tollgate_decisions_total` labels.
        let units_outcome = if decision.admitted {
            "allow"
        } else if self.is_shadowed(&tier) {
            "shadow_deny"
        } else {
            "deny"
        };
        self.metrics
            .count_units(tier.name.as_ref(), units_outcome, u64::from(cost));
        Ok(if decision.admitted {
            let lease = decision.lease.map(|lease| {
                self.metrics.leases_granted.inc();
                // The lease's other requests are admitted at the edge, never decided here:
                // their units are counted at the grant, apart from decided ones.
                let leased = u64::from(lease.requests.saturating_sub(1)) * u64::from(cost);
                self.metrics
                    .count_units(tier.name.as_ref(), "leased", leased);
                Lease {
                    id: lease.id.to_string(),
                    requests: lease.requests,
                    ttl_ms: u32::try_from(lease.ttl_ms).unwrap_or(u32::MAX),
                }
            });
            Answer::Allow {
                tenant,
                quota,
                lease,
            }
        } else if self.is_shadowed(&tier) {
            // Counted as denied in the window's usage, like an enforced denial, but let through.
            Answer::ShadowDeny {
                tenant,
                quota,
                retry_after_ms,
            }
        } else {
            Answer::Deny {
                tenant,
                quota,
                retry_after_ms,
            }
        })
    }

    /// The lease the filter hands back with this request, if it names one this control-plane
    /// granted; anything else is ignored (and logged), never taken out of a window.
    fn returned(&self, request: &DecisionRequest<'_>) -> Option<Returned> {
        let returned = request.returned?;
        match returned.id.parse::<LeaseId>() {
            Ok(lease) => {
                self.metrics
                    .lease_requests_returned
                    .inc_by(u64::from(returned.requests));
                Some(Returned {
                    lease,
                    requests: returned.requests,
                })
            }
            Err(error) => {
                if let Some(suppressed) = crate::log_limit::admit("unreadable_lease_return") {
                    tracing::warn!(%error, suppressed, "a returned lease is not one of ours");
                }
                None
            }
        }
    }

    /// The tier a tenant's requests are decided with: its own, or the default one once its
    /// subscription has been past due for longer than the grace period.
    pub fn tier_in_force(&self, owner: &KeyOwner) -> Result<Arc<Tier>, DecisionError> {
        let tiers = self.tiers.current();
        let grace = self.policy.past_due_grace.as_secs();
        let lapsed = owner
            .past_due_since
            .is_some_and(|since| since.saturating_add(grace) <= self.clock.now_secs());
        if lapsed {
            return Ok(tiers.default_tier().clone());
        }
        tiers
            .get(&owner.tier)
            .cloned()
            .ok_or_else(|| DecisionError::MissingTier {
                tenant: owner.id.to_string(),
                tier: owner.tier.clone(),
            })
    }

    /// Whether a refusal on this tier is only counted, not enforced.
    pub fn is_shadowed(&self, tier: &Tier) -> bool {
        tier.shadow || self.policy.shadow_all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Secret;
    use crate::tenants::{Subscription, Tenant, TenantChange};
    use crate::window::MemoryWindows;

    const DAY: u64 = 86_400;

    struct Fixture {
        decider: Decider,
        clock: ManualClock,
    }

    fn fixture(shadow_all: bool) -> Fixture {
        let clock = ManualClock::new(1_800_000_000_000);
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let decider = Decider {
            tenants: Arc::new(Directory::in_process().unwrap()),
            tiers: Arc::new(TierSource::load(None).unwrap()),
            windows: Arc::new(Windows::Memory(MemoryWindows::new(shared.clone()))),
            keys: KeyHasher::new(&Secret::new("a-key-secret-for-these-tests".into())),
            clock: shared,
            metrics: Arc::default(),
            policy: Policy {
                past_due_grace: Duration::from_secs(3 * DAY),
                shadow_all,
                lease_ttl: Duration::from_secs(1),
            },
        };
        Fixture { decider, clock }
    }

    impl Fixture {
        /// A tenant on `tier` and its key.
        async fn tenant(&self, tier: &str) -> (String, String) {
            let decider = &self.decider;
            let (key, stored) = decider.keys.mint(self.clock.now_secs()).unwrap();
            let tenant = Tenant {
                id: Tenant::mint_id().unwrap(),
                name: "Acme".into(),
                tier: tier.into(),
                suspended: false,
                created_at: self.clock.now_secs(),
                subscription: None,
            };
            let id = tenant.id.to_string();
            decider.tenants.create(tenant, stored).await.unwrap();
            (id, key.expose().to_owned())
        }

        async fn decide(&self, key: &str) -> Answer {
            let request = request(key, 0);
            self.decider.decide(&request).await.unwrap()
        }

        async fn past_due_since(&self, id: &str, since: u64) {
            self.decider
                .tenants
                .modify(id, |record| {
                    record.tenant.subscription = Some(Subscription {
                        status: Some("past_due".into()),
                        past_due_since: Some(since),
                        ..Subscription::default()
                    });
                    Ok::<_, ()>(())
                })
                .await
                .unwrap();
        }
    }

    /// A callout for one request of `api_key` on route `ingest` at cost 1, asking for a lease
    /// of up to `lease_max` requests.
    fn request(api_key: &str, lease_max: u32) -> DecisionRequest<'_> {
        DecisionRequest {
            api_key,
            route: "ingest",
            cost: 1,
            edge_denied: 0,
            lease_max,
            returned: None,
        }
    }

    fn policy_of(answer: &Answer) -> &str {
        match answer {
            Answer::Allow { quota, .. }
            | Answer::Deny { quota, .. }
            | Answer::ShadowDeny { quota, .. } => &quota.policy,
            other => panic!("expected a decision with a quota, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_standard_tenant_gets_its_limit_and_then_a_deny_with_a_retry_time() {
        let fixture = fixture(false);
        let (id, key) = fixture.tenant("standard").await;
        for n in 1..=60 {
            let answer = fixture.decide(&key).await;
            let Answer::Allow { tenant, quota, .. } = answer else {
                panic!("request {n} should be admitted, got {answer:?}");
            };
            assert_eq!((tenant.as_str(), quota.remaining), (id.as_str(), 60 - n));
        }
        fixture.clock.advance(Duration::from_secs(20));
        let answer = fixture.decide(&key).await;
        let Answer::Deny { retry_after_ms, .. } = answer else {
            panic!("the 61st is denied, got {answer:?}");
        };
        assert_eq!(retry_after_ms, 40_000, "the first admission leaves in 40 s");
    }

    #[tokio::test]
    async fn unknown_keys_and_suspended_tenants_are_answered_without_the_window() {
        let fixture = fixture(false);
        assert_eq!(fixture.decide("tg_nobody").await, Answer::UnknownKey);
        let (id, key) = fixture.tenant("standard").await;
        let change = TenantChange {
            suspended: Some(true),
            tier: None,
        };
        fixture.decider.tenants.update(&id, &change).await.unwrap();
        assert_eq!(fixture.decide(&key).await, Answer::Suspended { tenant: id });
    }

    #[tokio::test]
    async fn a_past_due_tenant_keeps_its_paid_tier_for_the_grace_period_only() {
        let fixture = fixture(false);
        let (id, key) = fixture.tenant("pro").await;
        let since = fixture.clock.now_secs();
        fixture.past_due_since(&id, since).await;
        assert_eq!(policy_of(&fixture.decide(&key).await), "pro");
        fixture
            .clock
            .advance(Duration::from_secs(3 * DAY) - Duration::from_millis(1));
        assert_eq!(
            policy_of(&fixture.decide(&key).await),
            "pro",
            "a millisecond before the grace ends"
        );
        fixture.clock.advance(Duration::from_millis(1));
        assert_eq!(
            policy_of(&fixture.decide(&key).await),
            "standard",
            "the grace has ended"
        );
    }

    #[tokio::test]
    async fn a_rotated_key_works_until_its_grace_ends() {
        let fixture = fixture(false);
        let (id, old_key) = fixture.tenant("standard").await;
        let expires_at = fixture.clock.now_secs() + 60;
        fixture
            .decider
            .tenants
            .modify(&id, |record| {
                record.keys[0].expires_at = Some(expires_at);
                Ok::<_, ()>(())
            })
            .await
            .unwrap();
        fixture.clock.advance(Duration::from_secs(59));
        assert!(matches!(
            fixture.decide(&old_key).await,
            Answer::Allow { .. }
        ));
        fixture.clock.advance(Duration::from_secs(1));
        assert_eq!(fixture.decide(&old_key).await, Answer::UnknownKey);
    }

    #[tokio::test]
    async fn shadow_mode_lets_a_refusal_through_marked() {
        let fixture = fixture(true);
        let (_, key) = fixture.tenant("standard").await;
        for _ in 0..60 {
            fixture.decide(&key).await;
        }
        let answer = fixture.decide(&key).await;
        assert!(
            matches!(answer, Answer::ShadowDeny { .. }),
            "got {answer:?}"
        );
    }

    #[tokio::test]
    async fn before_the_tenants_are_loaded_no_key_is_refused_the_decision_fails() {
        use crate::storage::redis::{RedisConnection, RedisTarget};
        // A Redis directory whose change feed never ran: not attached.
        let target = RedisTarget::Standalone("redis://127.0.0.1:1".into());
        let timeout = Duration::from_millis(50);
        let connection = RedisConnection::connect(&target, timeout).await.unwrap();
        let mut fixture = fixture(false);
        let settings = crate::tenants::RegistrySettings::default();
        fixture.decider.tenants = Arc::new(Directory::redis(
            connection,
            timeout,
            settings,
            Default::default(),
        ));
        let request = request("tg_any", 0);
        let error = fixture.decider.decide(&request).await.unwrap_err();
        assert!(
            matches!(error, DecisionError::Store(StoreError::NotLoaded)),
            "a 503 (the filter's failure mode), not a 401: {error}"
        );
    }

    #[tokio::test]
    async fn an_admission_asked_for_a_lease_carries_one_and_its_return_is_taken_back() {
        let fixture = fixture(false);
        let (_, key) = fixture.tenant("pro").await;
        for _ in 0..100 {
            fixture.decide(&key).await;
        }
        let asking = request(&key, 10);
        let Answer::Allow {
            quota,
            lease: Some(lease),
            ..
        } = fixture.decider.decide(&asking).await.unwrap()
        else {
            panic!("an admission with a lease")
        };
        assert_eq!((lease.requests, lease.ttl_ms), (10, 1000));
        assert_eq!(quota.remaining, 1000 - 110, "the lease counts at once");
        let returning = DecisionRequest {
            lease_max: 0,
            returned: Some(tollgate_protocol::LeaseReturn {
                id: &lease.id,
                requests: 9,
            }),
            ..asking.clone()
        };
        let Answer::Allow { quota, lease, .. } = fixture.decider.decide(&returning).await.unwrap()
        else {
            panic!("an admission")
        };
        assert_eq!(lease, None, "none asked");
        assert_eq!(quota.remaining, 1000 - 102, "nine back, one more spent");
        let garbage = DecisionRequest {
            returned: Some(tollgate_protocol::LeaseReturn {
                id: "not-ours",
                requests: 50,
            }),
            ..returning
        };
        let Answer::Allow { quota, .. } = fixture.decider.decide(&garbage).await.unwrap() else {
            panic!("an admission")
        };
        assert_eq!(
            quota.remaining,
            1000 - 103,
            "a lease not ours takes nothing back"
        );
    }

    #[tokio::test]
    async fn a_tier_without_leases_decides_every_request_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiers.toml");
        std::fs::write(
            &path,
            "default_tier = \"exact\"\n[tiers.exact]\nlimit = 100\nwindow_seconds = 60\nlease = false\n",
        )
        .unwrap();
        let mut fixture = fixture(false);
        fixture.decider.tiers = Arc::new(TierSource::load(Some(path)).unwrap());
        let (_, key) = fixture.tenant("exact").await;
        for _ in 0..50 {
            fixture.decide(&key).await;
        }
        let asking = request(&key, 10);
        let Answer::Allow { quota, lease, .. } = fixture.decider.decide(&asking).await.unwrap()
        else {
            panic!("an admission")
        };
        assert_eq!(lease, None, "the tier says no leases");
        assert_eq!(quota.remaining, 100 - 51, "only this request counted");
    }

    #[tokio::test]
    async fn a_tier_missing_from_the_table_is_an_error_not_a_default() {
        let fixture = fixture(false);
        let (_, key) = fixture.tenant("platinum").await;
        let request = request(&key, 0);
        let error = fixture.decider.decide(&request).await.unwrap_err();
        assert!(
            matches!(&error, DecisionError::MissingTier { tier, .. } if tier.as_ref() == "platinum"),
            "{error}"
        );
    }
}
