//! Prometheus metrics, served on the internal listener at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabel {
    pub budget: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The Stripe event type; empty when the delivery was refused before it was read.
    pub r#type: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// What asked: webhook, periodic, admin.
    pub trigger: &'static str,
    /// unchanged, changed, unlinked, not_linked, failed.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabel {
    pub what: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByLabel {
    pub by: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// The tenant registry's cache and change feed (see `tenants::directory`). Cloning shares the
/// counters; a default one counts without being served (tests, tools).
#[derive(Clone, Default)]
pub struct RegistryMetrics {
    /// Key lookups answered by a cached tenant.
    pub cache_hits: Counter,
    /// Key lookups that read the store (one round trip each).
    pub cache_misses: Counter,
    /// Unknown keys answered from memory, by what knew: `unknown_keys` (the cache of keys
    /// the store said nobody has) or `key_filter` (never stored).
    pub unknown_from_memory: Family<ByLabel, Counter>,
    /// Tenants in the cache.
    pub cache_entries: Gauge,
    /// Changes applied from the change log (Redis).
    pub changes_applied: Counter,
    /// Times the replica attached to the change log from its end, by reason: start, gap
    /// (changes missed), reset (the store's version went back).
    pub resyncs: Family<ReasonLabel, Counter>,
}

impl RegistryMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "tenant_cache_hits",
            "Key lookups answered by a cached tenant",
            self.cache_hits.clone(),
        );
        registry.register(
            "tenant_cache_misses",
            "Key lookups that read the tenant store",
            self.cache_misses.clone(),
        );
        registry.register(
            "tenant_cache_unknown",
            "Unknown keys answered from memory, by what knew",
            self.unknown_from_memory.clone(),
        );
        registry.register(
            "tenant_cache_entries",
            "Tenants in the cache",
            self.cache_entries.clone(),
        );
        registry.register(
            "tenant_changes_applied",
            "Tenant changes applied from the change log",
            self.changes_applied.clone(),
        );
        registry.register(
            "tenant_resyncs",
            "Attachments to the tenant change log from its end, by reason",
            self.resyncs.clone(),
        );
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The tier the decision was made for; empty when no tenant was found.
    pub tier: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The control-plane's crate version.
    pub version: &'static str,
    /// The decision endpoint it serves, whose path carries the protocol version
    /// (`/v1/decision`, see `tollgate_protocol`).
    pub decision_path: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Every callout that reached the decision endpoint, readable or not. The end-to-end tests
    /// use it to prove the filter made no callout.
    pub decision_requests: Counter,
    /// Decisions by tier and outcome: allow, deny, shadow_deny, unknown_key, suspended,
    /// bad_request, unavailable.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Key lookups in the tenant cache by result (hit: a tenant's key; miss: unknown key).
    pub tenant_lookups: Family<OutcomeLabel, Counter>,
    /// Window-store calls that failed (Redis down or slow).
    pub store_errors: Counter,
    /// Duration of window-store calls.
    pub store_duration_seconds: Histogram,
    /// Tier table reloads by outcome: ok, refused.
    pub tier_reloads: Family<OutcomeLabel, Counter>,
    /// Stripe webhook deliveries by event type and outcome: applied (checked against Stripe,
    /// or applied as delivered when Stripe could not be asked), unchanged, stale, irrelevant,
    /// unlinked, recorded (a dispute or refund), ignored, no_tenant, failed (Stripe retries),
    /// refused.
    pub webhook_events: Family<WebhookLabels, Counter>,
    /// Time from a callout's arrival to its answer, store round trip included.
    pub decision_duration_seconds: Histogram,
    /// Units of quota the decided callouts asked for (a request's cost, after the tier's
    /// route prices), by tier and outcome: calls and units differ once routes cost more than
    /// one. Outcome `leased`: the units of a granted lease's other requests, counted at the
    /// grant (spent at the edge; what comes back unused is `lease_requests_returned`).
    pub decision_units: Family<DecisionLabels, Counter>,
    /// Leases granted with admissions (see `window::lease`).
    pub leases_granted: Counter,
    /// Requests of ended leases handed back unused.
    pub lease_requests_returned: Counter,
    /// Public requests refused before any work, by budget (usage, billing, webhook, public)
    /// or `in_flight` when the listener was full.
    pub public_refusals: Family<BudgetLabel, Counter>,
    /// Tenants checked against Stripe, by what asked and what it changed.
    pub billing_syncs: Family<SyncLabels, Counter>,
    /// Second running subscriptions found for one tenant (each counted once, when found).
    pub billing_conflicts: Counter,
    /// Subscriptions Tollgate could not map to a tier, by what was unknown (a price no tier
    /// lists, a status it does not know), counted when first seen on a tenant.
    pub billing_unmapped: Family<WhatLabel, Counter>,
    /// Disputes and refunds recorded on tenants, by kind.
    pub billing_incidents: Family<KindLabel, Counter>,
    /// Calls to Stripe's API by outcome: ok, refused, not_found, rate_limited, unavailable.
    pub stripe_calls: Family<OutcomeLabel, Counter>,
    /// The tenant registry's cache and change feed.
    pub tenant_registry: RegistryMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let decision_requests = Counter::default();
        registry.register(
            "decision_requests",
            "Callouts received on the decision endpoint",
            decision_requests.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions by tier and outcome",
            decisions.clone(),
        );
        let tenant_lookups = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "tenant_lookups",
            "Key lookups in the tenant cache by result",
            tenant_lookups.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Window-store calls that failed",
            store_errors.clone(),
        );
        let store_duration_seconds = Histogram::new(exponential_buckets(0.000_01, 2.0, 16));
        registry.register(
            "store_duration_seconds",
            "Duration of window-store calls",
            store_duration_seconds.clone(),
        );
        let webhook_events = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_events",
            "Stripe webhook deliveries by type and outcome",
            webhook_events.clone(),
        );
        let tier_reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "tier_reloads",
            "Tier table reloads by outcome",
            tier_reloads.clone(),
        );
        // 50 µs to ~0.8 s: an in-memory decision takes tens of microseconds, a Redis one
        // around a millisecond, and the filter gives up at its timeout (100 ms by default).
        let decision_duration_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 15));
        registry.register(
            "decision_duration_seconds",
            "Time to decide a callout, store included",
            decision_duration_seconds.clone(),
        );
        let decision_units = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decision_units",
            "Units of quota decided callouts asked for, by tier and outcome (leased: units granted in leases)",
            decision_units.clone(),
        );
        // The usual `build_info` gauge: always 1, its labels say which build is running, so
        // a dashboard can join on it and a rollout shows as two versions side by side.
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                decision_path: tollgate_protocol::DECISION_PATH,
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build: always 1, labelled with its version",
            build_info,
        );
        let leases_granted = Counter::default();
        registry.register(
            "leases_granted",
            "Leases granted with admissions",
            leases_granted.clone(),
        );
        let lease_requests_returned = Counter::default();
        registry.register(
            "lease_requests_returned",
            "Requests of ended leases handed back unused",
            lease_requests_returned.clone(),
        );
        let public_refusals = Family::<BudgetLabel, Counter>::default();
        registry.register(
            "public_refusals",
            "Public requests refused by admission, by budget",
            public_refusals.clone(),
        );
        let billing_syncs = Family::<SyncLabels, Counter>::default();
        registry.register(
            "billing_syncs",
            "Tenants checked against Stripe, by trigger and outcome",
            billing_syncs.clone(),
        );
        let billing_conflicts = Counter::default();
        registry.register(
            "billing_conflicts",
            "Second running Stripe subscriptions found for one tenant",
            billing_conflicts.clone(),
        );
        let billing_unmapped = Family::<WhatLabel, Counter>::default();
        registry.register(
            "billing_unmapped",
            "Subscriptions with a price or status Tollgate cannot map to a tier",
            billing_unmapped.clone(),
        );
        let billing_incidents = Family::<KindLabel, Counter>::default();
        registry.register(
            "billing_incidents",
            "Disputes and refunds recorded on tenants",
            billing_incidents.clone(),
        );
        let stripe_calls = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "stripe_calls",
            "Calls to Stripe's API by outcome",
            stripe_calls.clone(),
        );
        let tenant_registry = RegistryMetrics::default();
        tenant_registry.register(&mut registry);
        // The series the alert rules (deploy/prometheus/alerts.yaml) watch exist at zero from
        // the start: a series born with its first event hides that event from `increase()`,
        // and an empty family is not exposed at all, so a dashboard would show "no data".
        // (`get_or_create` creates the series; its read guard is dropped at once.)
        for outcome in ["ok", "refused"] {
            drop(tier_reloads.get_or_create(&OutcomeLabel { outcome }));
        }
        for what in ["price", "status"] {
            drop(billing_unmapped.get_or_create(&WhatLabel { what }));
        }
        drop(webhook_events.get_or_create(&WebhookLabels {
            r#type: String::new(),
            outcome: "refused",
        }));
        for reason in ["start", "gap", "reset"] {
            drop(
                tenant_registry
                    .resyncs
                    .get_or_create(&ReasonLabel { reason }),
            );
        }
        Self {
            registry,
            tenant_registry,
            leases_granted,
            lease_requests_returned,
            billing_syncs,
            billing_conflicts,
            billing_unmapped,
            billing_incidents,
            stripe_calls,
            public_refusals,
            decision_requests,
            decisions,
            tenant_lookups,
            store_errors,
            store_duration_seconds,
            tier_reloads,
            webhook_events,
            decision_duration_seconds,
            decision_units,
        }
    }
}

impl Metrics {
    pub fn count_decision(&self, tier: &str, outcome: &'static str) {
        let labels = DecisionLabels {
            tier: tier.to_owned(),
            outcome,
        };
        self.decisions.get_or_create(&labels).inc();
    }

    /// Counts `units` of quota decided for `tier` with `outcome` (see `decision_units`).
    pub fn count_units(&self, tier: &str, outcome: &'static str, units: u64) {
        let labels = DecisionLabels {
            tier: tier.to_owned(),
            outcome,
        };
        self.decision_units.get_or_create(&labels).inc_by(units);
    }

    pub fn count_lookup(&self, hit: bool) {
        let outcome = if hit { "hit" } else { "miss" };
        self.tenant_lookups
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn count_webhook(&self, kind: &str, outcome: &'static str) {
        let labels = WebhookLabels {
            r#type: kind.to_owned(),
            outcome,
        };
        self.webhook_events.get_or_create(&labels).inc();
    }

    pub fn count_sync(&self, trigger: &'static str, outcome: &'static str) {
        self.billing_syncs
            .get_or_create(&SyncLabels { trigger, outcome })
            .inc();
    }

    pub fn count_unmapped(&self, what: &'static str) {
        self.billing_unmapped
            .get_or_create(&WhatLabel { what })
            .inc();
    }

    pub fn count_incident(&self, kind: &'static str) {
        self.billing_incidents
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    pub fn count_stripe_call(&self, outcome: &'static str) {
        self.stripe_calls
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Exports `budget`'s refusal count before its first refusal.
    pub fn declare_budget_refusal(&self, budget: &'static str) {
        let _ = self.public_refusals.get_or_create(&BudgetLabel { budget });
    }

    pub fn count_budget_refusal(&self, budget: &'static str) {
        self.public_refusals
            .get_or_create(&BudgetLabel { budget })
            .inc();
    }

    pub fn count_reload(&self, outcome: &'static str) {
        self.tier_reloads
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
