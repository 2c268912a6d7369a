//! A limited request's way through the edge, in one place: which table answers it, in which
//! order, what its callout asks for, and what the answer teaches each table.
//!
//! Before the callout ([`before_callout`]), in order:
//! 0. the worker's batch: requests its worker took from a live lease of this key, route and
//!    cost ([`WorkerBatches`]) admit the request with no host call at all. They were counted
//!    in the window when the lease was granted and end with the lease, so they come before
//!    the deny cache as the lease itself would after a denial (see [`after_answer`]); a
//!    revocation or suspension still reaches them within the lease's TTL;
//! 1. the deny cache: a cached refusal (429, 401, 403) wins over everything, a lease included
//!    (but an over-quota denial is not kept beside a live lease of its key, see
//!    [`after_answer`]); the request that refreshes an expired refusal makes its callout
//!    whatever, reporting the denials answered meanwhile, and neither spends nor asks for a
//!    lease;
//! 2. the lease table: a live lease of this key, route and cost admits the request at once,
//!    taking a batch of its requests for the worker (unless the lease is due for renewal:
//!    then this request renews it in step 4);
//! 3. the invalid-key budget: an address over it gets no callout (a lease still admits it);
//! 4. the lease table again: the request claims the key's slot when no lease is live and
//!    nobody is asking for one, or renews a live lease that is due (asking for
//!    `max_requests` and handing back what an ended lease left unused), or spends a lease that
//!    arrived meanwhile; when another request is already asking, it makes a plain callout
//!    (asking for none) rather than wait.
//!
//! After the answer ([`after_answer`]): [`outcome::on_answer`] decides the action; the lease
//! table stores a granted lease (or clears the request's placeholder), the deny cache settles
//! what it learned, and an unknown key spends the address's budget. A denial that meets a
//! live lease of the key is answered from the lease instead (see [`after_answer`]).
//!
//! Pure: the host hands in the settings, a [`SharedData`], the time and the answer, and
//! carries out the [`Action`] and counts the [`Counts`] it gets back.

use tollgate_protocol::{Answer, DecisionRequest, LeaseReturn};

use crate::config::Settings;
use crate::deny_cache::{CacheTicket, Fingerprint, Learned, Lookup, Refusal};
use crate::invalid_keys::{ClientId, Recorded};
use crate::leases::{LeaseKey, LeaseLookup, LeaseTicket, Leased, Unused, WorkerBatches};
use crate::outcome::{self, Action, CalloutFailure, Stat};
use crate::shared_data::SharedData;

/// Stats to count, each with how much.
pub type Counts = Vec<(Stat, u64)>;

/// What a limited request with a key does before its callout, or instead of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Before {
    /// Answered at the edge, without a callout.
    Answered { counts: Counts, action: Action },
    /// Make the callout ([`Pending::request`]) and keep `pending` for its answer.
    Callout { counts: Counts, pending: Pending },
}

/// What a request's callout asks for, and what its answer needs to settle the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Host time read before the callout was sent: a granted lease's deadline counts from it,
    /// so it is never later than the control-plane's.
    dispatched_at: u64,
    /// Cached denials reported in the callout.
    edge_denied: u64,
    /// Requests asked for in a lease: `lease.max_requests` when this request claimed the
    /// key's slot, else 0.
    lease_max: u32,
    /// What the key's ended lease left unused, handed back in the callout.
    returned: Option<Unused>,
    /// `None` when the deny cache is off.
    cache: Option<CacheTicket>,
    /// The request's lease slot, and its claim on it; `None` when leases are off.
    lease: Option<(LeaseKey, Option<LeaseTicket>)>,
    /// The client address, read when the invalid-key budget is on, so an unknown-key answer
    /// can be counted against it.
    client: Option<ClientId>,
}

impl Pending {
    /// The decision request to send.
    pub fn request<'a>(
        &'a self,
        api_key: &'a str,
        route: &'a str,
        cost: u32,
    ) -> DecisionRequest<'a> {
        DecisionRequest {
            api_key,
            route,
            cost,
            edge_denied: self.edge_denied,
            lease_max: self.lease_max,
            returned: self.returned.as_ref().map(|unused| LeaseReturn {
                id: &unused.id,
                requests: unused.requests,
            }),
        }
    }
}

fn counted(stats: &[Stat]) -> Counts {
    stats.iter().map(|stat| (*stat, 1)).collect()
}

fn leased(leased: Leased) -> Before {
    let (stats, action) = outcome::on_leased(leased);
    Before::Answered {
        counts: counted(stats),
        action,
    }
}

/// Counts a lease lost with `requests` left.
fn lost(counts: &mut Counts, requests: u32) {
    counts.push((Stat::LeasesLost, 1));
    counts.push((Stat::LeaseRequestsLost, u64::from(requests)));
}

/// A limited request of `api_key` on `route` at `cost`, at `now_ms` (read once, before any
/// of this, so a lease's deadline never counts from later than its callout left): answered
/// here, or what its callout asks. `client` reads the client address (a host call), only for
/// a request that may cost a callout.
pub fn before_callout(
    settings: &Settings,
    shared: &impl SharedData,
    batches: &mut WorkerBatches,
    (api_key, route, cost): (&str, &str, u32),
    now_ms: u64,
    client: impl FnOnce() -> Option<ClientId>,
) -> Before {
    let lease_key = LeaseKey::of(api_key, route, cost);
    if settings.leases.is_some()
        && let Some(admission) = batches.spend(lease_key, now_ms)
    {
        return leased(admission);
    }
    let mut pending = Pending {
        dispatched_at: now_ms,
        edge_denied: 0,
        lease_max: 0,
        returned: None,
        cache: None,
        lease: None,
        client: None,
    };
    let mut refreshing = false;
    if let Some(cache) = &settings.deny_cache {
        let fingerprint = Fingerprint::of(api_key, cost);
        match cache.lookup(shared, fingerprint, now_ms, settings.timeout_ms()) {
            Lookup::Hit(refusal) => {
                let (stats, reply) = outcome::on_cached(&refusal);
                return Before::Answered {
                    counts: counted(stats),
                    action: Action::Reply(reply),
                };
            }
            Lookup::Refresh { edge_denied } => {
                pending.edge_denied = edge_denied;
                refreshing = true;
            }
            Lookup::Miss => {}
        }
        pending.cache = Some(CacheTicket {
            fingerprint,
            refreshing,
        });
    }

    // The refresh's callout goes out whatever: it carries the denials answered meanwhile.
    let leases = settings.leases.filter(|_| !refreshing);
    if let Some(table) = &leases
        && let Some(batch) =
            table.take_batch(shared, lease_key, now_ms, batches.room(lease_key, now_ms))
    {
        batches.hold(lease_key, &batch, now_ms);
        return leased(batch.leased);
    }
    if settings.leases.is_some() {
        pending.lease = Some((lease_key, None));
    }

    // The address is read only here, for a request about to cost a callout. A refresh goes
    // out whatever the budget: the cache already holds it to one per `max_ttl`.
    if let Some(budget) = &settings.invalid_keys {
        pending.client = client();
        if !refreshing
            && let Some(client) = pending.client
            && let Some(retry_after_ms) = budget.refused_for(shared, client, now_ms)
        {
            return Before::Answered {
                counts: counted(&[Stat::InvalidKeysThrottled]),
                action: Action::Hold(outcome::too_many_invalid_keys(retry_after_ms)),
            };
        }
    }

    let mut counts = Counts::new();
    if let Some(table) = &leases {
        let until = now_ms.saturating_add(settings.timeout_ms());
        match table.take_or_claim(shared, lease_key, now_ms, until) {
            LeaseLookup::Taken(batch) => return leased(batch.leased),
            LeaseLookup::Claimed(claim) => {
                pending.lease_max = table.max_requests;
                if let Some(unused) = &claim.returned {
                    counts.push((Stat::LeaseRequestsReturned, u64::from(unused.requests)));
                }
                if let Some(evicted) = claim.evicted {
                    lost(&mut counts, evicted);
                }
                pending.returned = claim.returned;
                pending.lease = Some((lease_key, Some(claim.ticket)));
            }
            LeaseLookup::Busy => {}
        }
    }
    counts.push((Stat::Callouts, 1));
    Before::Callout { counts, pending }
}

/// A callout's answer (or its failure) for the request that sent `pending`: the action, and
/// the stats to count. The clock (`now_ms`, a host call in Envoy) is read only when a table
/// stores something or a lease may answer a denial or a failure.
///
/// Two lessons cross from the lease table to the deny cache, both because a live lease here
/// means the control-plane has reserved room for this key on this Envoy: storing a lease
/// drops the key's cached over-quota denial (one that a callout sent beside the lease's own
/// brought back, denied because the lease took the room), and a denial that arrives while
/// the key holds a live lease is not cached but answered by spending one of the lease's
/// requests instead. Both only spend units the control-plane counted: the limit stays exact,
/// and a burst no longer loses its last units to a denial raced by its own lease. (The
/// control-plane counted that request as denied; the edge counts it under
/// [`Stat::LeasedAfterDenial`].) A failed callout meeting a live lease is answered from it
/// too, whatever the failure mode: a valid lease is honoured while the control-plane is
/// unreachable (the request renewing a lease is one; it took none of its requests).
pub fn after_answer(
    settings: &Settings,
    shared: &impl SharedData,
    pending: &Pending,
    answer: Result<Answer, CalloutFailure>,
    now_ms: impl Fn() -> u64,
) -> (Counts, Action) {
    let failed = answer.is_err();
    let decision = outcome::on_answer(settings.failure_mode, answer);
    let mut lease_counts = Counts::new();
    let lease = settings.leases.zip(pending.lease);
    let cache = settings.deny_cache.zip(pending.cache);
    if let Some((table, (key, ticket))) = lease {
        let settled = table.settle(
            shared,
            key,
            ticket,
            decision.grant.as_ref(),
            pending.dispatched_at,
            &now_ms,
        );
        if let Some(requests) = settled.granted {
            lease_counts.push((Stat::LeasesGranted, 1));
            lease_counts.push((Stat::LeaseRequestsGranted, u64::from(requests)));
        }
        if let Some(requests) = settled.lost {
            lost(&mut lease_counts, requests);
        }
        if settled.stored
            && let Some((cache, ticket)) = cache
        {
            cache.forget_denial(shared, ticket.fingerprint);
        }
    }
    let denied = matches!(decision.learned, Learned::Refused(Refusal::Denied(_)));
    let spend_lease = || {
        lease
            .filter(|_| denied || failed)
            .and_then(|(table, (key, _))| table.spend(shared, key, now_ms()))
    };
    // A live lease here answers a denial before it is cached, and one another worker stored
    // meanwhile answers it after: that store dropped the denials cached before it, not this
    // one, remembered after. Whatever the interleaving, no denial stays cached beside a live
    // lease of its key.
    let mut admission = spend_lease();
    if admission.is_none() {
        if let Some((cache, ticket)) = cache {
            cache.settle(shared, ticket, &decision.learned, &now_ms);
        }
        // A failure caches nothing, so only a denial races a lease stored meanwhile.
        if denied {
            admission = spend_lease();
        }
    }
    if let Some(admission) = admission {
        // Also a denial cached before (of another route at the same cost, or the one this
        // request was refreshing): it would go on refusing the lease's requests.
        if let Some((cache, ticket)) = cache {
            cache.forget_denial(shared, ticket.fingerprint);
        }
        let instead = if failed {
            Stat::CalloutFailed
        } else {
            Stat::LeasedAfterDenial
        };
        return leased_instead(admission, instead, lease_counts);
    }
    let mut counts = counted(decision.stats);
    counts.extend(lease_counts);
    if decision.unknown_key
        && let (Some(budget), Some(client)) = (&settings.invalid_keys, pending.client)
        && budget.record(shared, client, now_ms()) == Recorded::BudgetExceeded
    {
        counts.push((Stat::InvalidKeyBudgetExceeded, 1));
    }
    (counts, decision.action)
}

/// A request whose callout was denied or failed, admitted from its key's live lease instead:
/// counted as leased, and under `instead` (the denial or the failure).
fn leased_instead(admission: Leased, instead: Stat, lease_counts: Counts) -> (Counts, Action) {
    let (stats, action) = outcome::on_leased(admission);
    let mut counts = counted(stats);
    counts.push((instead, 1));
    counts.extend(lease_counts);
    (counts, action)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::cell::RefCell;
    use std::collections::HashMap;

    use tollgate_protocol::{Lease, ProtocolError, Quota, header};

    use crate::outcome::{Headers, TENANT_ID, TIER, WOULD_LIMIT};
    use crate::shared_data::FakeShared;

    const KEY: &str = "tg_hot";
    const REQUEST: (&str, &str, u32) = (KEY, "ingest", 1);

    /// Every test starts here, so this also gives the test's worker no batches: under
    /// wasm32 all tests run on one thread and would otherwise share them.
    fn settings(extra: &str) -> Settings {
        WORKER.with_borrow_mut(|batches| *batches = WorkerBatches::default());
        let json = format!(
            r#"{{"control_plane":{{"cluster":"cp","timeout":"100ms"}},
                "routes":[{{"prefix":"/i","name":"ingest"}}]{extra}}}"#
        );
        Settings::from_json(Some(json.as_bytes())).unwrap()
    }

    fn quota(remaining: u32) -> Quota {
        Quota {
            policy: "pro".into(),
            limit: 1_000,
            window_seconds: 60,
            remaining,
            reset_ms: 30_000,
            monthly: None,
        }
    }

    fn allow(lease: Option<(&str, u32, u32)>) -> Result<Answer, CalloutFailure> {
        Ok(Answer::Allow {
            tenant: "tn_hot".into(),
            quota: quota(900),
            lease: lease.map(|(id, requests, ttl_ms)| Lease {
                id: id.into(),
                requests,
                ttl_ms,
            }),
        })
    }

    /// A client address for tests of the invalid-key budget.
    fn address(text: &str) -> Option<ClientId> {
        ClientId::from_source_address(text.as_bytes())
    }

    thread_local! {
        /// The batches of the one worker a test's requests run on (reset by `settings`).
        static WORKER: RefCell<WorkerBatches> = RefCell::default();
    }

    /// [`super::before_callout`] on the test's worker.
    fn before_callout(
        settings: &Settings,
        shared: &FakeShared,
        request: (&str, &str, u32),
        now_ms: u64,
        client: impl FnOnce() -> Option<ClientId>,
    ) -> Before {
        WORKER.with_borrow_mut(|batches| {
            super::before_callout(settings, shared, batches, request, now_ms, client)
        })
    }

    fn before(settings: &Settings, shared: &FakeShared, now_ms: u64) -> Before {
        before_callout(settings, shared, REQUEST, now_ms, || address("192.0.2.1"))
    }

    /// The request must make a callout: its pending state and the headers it sends.
    fn callout(before: Before) -> (Pending, HashMap<&'static str, String>, Counts) {
        match before {
            Before::Callout { counts, pending } => {
                let headers = pending
                    .request(KEY, "ingest", 1)
                    .headers()
                    .into_iter()
                    .map(|(name, value)| (name, value.into_owned()))
                    .collect();
                (pending, headers, counts)
            }
            answered => panic!("expected a callout, got {answered:?}"),
        }
    }

    fn admitted_from_lease(before: &Before) -> bool {
        matches!(
            before,
            Before::Answered { counts, action: Action::Resume { .. } }
                if *counts == [(Stat::Allowed, 1), (Stat::AllowedLeased, 1)]
        )
    }

    fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What a claim asks for: the configured `lease.max_requests`.
    fn max_requests(settings: &Settings) -> u32 {
        settings.leases.map_or(0, |table| table.max_requests)
    }

    /// Claims the hot key's slot at `now_ms` and answers it with a lease.
    fn lease(settings: &Settings, shared: &FakeShared, now_ms: u64, lease: (&str, u32, u32)) {
        lease_on(settings, shared, REQUEST, now_ms, lease);
    }

    /// Claims the slot of `request` (key, route, cost) at `now_ms` and answers it with a
    /// lease.
    fn lease_on(
        settings: &Settings,
        shared: &FakeShared,
        request: (&str, &str, u32),
        now_ms: u64,
        lease: (&str, u32, u32),
    ) {
        let Before::Callout { pending, .. } =
            before_callout(settings, shared, request, now_ms, || None)
        else {
            panic!("a callout");
        };
        assert_eq!(
            pending.lease_max,
            max_requests(settings),
            "asks for max_requests"
        );
        let (counts, _) = after_answer(settings, shared, &pending, allow(Some(lease)), || {
            now_ms + 5
        });
        assert!(counts.contains(&(Stat::LeasesGranted, 1)), "{counts:?}");
    }

    fn deny() -> Result<Answer, CalloutFailure> {
        Ok(Answer::Deny {
            tenant: "tn_hot".into(),
            quota: quota(0),
            retry_after_ms: 5_000,
        })
    }

    /// The lease table's slots, and what they hold.
    fn lease_slots(shared: &FakeShared) -> Vec<(String, Vec<u8>)> {
        let mut slots: Vec<_> = shared
            .0
            .borrow()
            .iter()
            .filter(|(slot, _)| slot.starts_with("tollgate.lease."))
            .map(|(slot, (value, _))| (slot.clone(), value.clone()))
            .collect();
        slots.sort();
        slots
    }

    #[test]
    fn one_request_asks_for_a_lease_and_the_next_ones_spend_it_without_callouts() {
        let settings = settings("");
        let shared = FakeShared::default();
        let (asking, headers, _) = callout(before(&settings, &shared, 1_000));
        assert_eq!(
            headers[header::LEASE_MAX],
            max_requests(&settings).to_string()
        );
        assert!(!headers.contains_key(header::LEASE_RETURN));
        let (plain, headers, _) = callout(before(&settings, &shared, 1_001));
        assert!(
            !headers.contains_key(header::LEASE_MAX),
            "a concurrent request asks for no lease rather than wait"
        );

        let (counts, action) = after_answer(
            &settings,
            &shared,
            &asking,
            allow(Some(("L1", 10, 1_000))),
            || 1_020,
        );
        assert_eq!(
            counts,
            [
                (Stat::Allowed, 1),
                (Stat::LeasesGranted, 1),
                (Stat::LeaseRequestsGranted, 10)
            ]
        );
        assert!(matches!(action, Action::Resume { .. }));
        let (counts, _) = after_answer(&settings, &shared, &plain, allow(None), || 1_021);
        assert_eq!(counts, [(Stat::Allowed, 1)]);

        for now in 1_030..1_039 {
            assert!(
                admitted_from_lease(&before(&settings, &shared, now)),
                "leased at {now}"
            );
        }
        let (_, headers, _) = callout(before(&settings, &shared, 1_040));
        assert_eq!(
            headers[header::LEASE_MAX],
            max_requests(&settings).to_string(),
            "used up: the next one asks again"
        );
        assert!(!headers.contains_key(header::LEASE_RETURN), "nothing left");
    }

    #[test]
    fn an_ended_lease_is_handed_back_by_exactly_one_callout_with_its_unused_requests() {
        let settings = settings("");
        let shared = FakeShared::default();
        lease(&settings, &shared, 0, ("L1", 10, 1_000));
        for now in [10, 20, 30] {
            assert!(admitted_from_lease(&before(&settings, &shared, now)));
        }
        let (returning, headers, counts) = callout(before(&settings, &shared, 1_000));
        assert_eq!(headers[header::LEASE_RETURN], "L1 6");
        assert_eq!(
            headers[header::LEASE_MAX],
            max_requests(&settings).to_string()
        );
        assert_eq!(
            counts,
            [(Stat::LeaseRequestsReturned, 6), (Stat::Callouts, 1)]
        );
        for now in [1_001, 1_050] {
            let (_, headers, counts) = callout(before(&settings, &shared, now));
            assert!(!headers.contains_key(header::LEASE_RETURN), "once");
            assert!(!headers.contains_key(header::LEASE_MAX));
            assert_eq!(counts, [(Stat::Callouts, 1)], "each callout counted");
        }
        let (counts, _) = after_answer(
            &settings,
            &shared,
            &returning,
            allow(Some(("L2", 3, 1_000))),
            || 1_060,
        );
        assert!(counts.contains(&(Stat::LeaseRequestsGranted, 3)));
        assert!(admitted_from_lease(&before(&settings, &shared, 1_070)));
    }

    #[test]
    fn a_leased_admission_carries_what_an_admission_from_the_callout_carries() {
        let settings = settings("");
        let shared = FakeShared::default();
        let (pending, ..) = callout(before(&settings, &shared, 0));
        let (_, from_callout) = after_answer(
            &settings,
            &shared,
            &pending,
            allow(Some(("L1", 5, 1_000))),
            || 100,
        );
        let Before::Answered {
            action: from_lease, ..
        } = before(&settings, &shared, 100)
        else {
            panic!("leased");
        };
        assert_eq!(
            from_lease, from_callout,
            "same identity upstream, same rate-limit headers, at the same moment"
        );
    }

    #[test]
    fn a_leased_admission_reports_the_grants_remaining_with_the_reset_counting_down() {
        let settings = settings("");
        let shared = FakeShared::default();
        lease(&settings, &shared, 0, ("L1", 5, 1_000));
        let Before::Answered {
            action: Action::Resume { upstream, response },
            ..
        } = before(&settings, &shared, 900)
        else {
            panic!("leased");
        };
        assert_eq!(header(&upstream, TENANT_ID), Some("tn_hot"));
        assert_eq!(header(&upstream, TIER), Some("pro"));
        assert_eq!(header(&response, "x-ratelimit-remaining"), Some("900"));
        assert_eq!(
            header(&response, "x-ratelimit-reset"),
            Some("30"),
            "30,000 ms from the answer at 5, 29,105 ms at 900: 30 s rounded up"
        );
        assert_eq!(header(&response, "ratelimit"), Some("\"pro\";r=900;t=30"));
    }

    /// A plain callout of the hot key on another route, sent at 10 ms while the lease was
    /// asked for, learns at 20 ms that the tenant is suspended: the deny cache keeps it.
    fn suspended_by_a_plain_callout(settings: &Settings, shared: &FakeShared) {
        let (plain, ..) = callout(before_callout(
            settings,
            shared,
            (KEY, "other", 1),
            10,
            || None,
        ));
        let suspended = Ok(Answer::Suspended {
            tenant: "tn_hot".into(),
        });
        after_answer(settings, shared, &plain, suspended, || 20);
    }

    #[test]
    fn a_cached_refusal_wins_over_a_live_lease() {
        let settings = settings("");
        let shared = FakeShared::default();
        lease(&settings, &shared, 0, ("L1", 100, 1_000));
        suspended_by_a_plain_callout(&settings, &shared);
        let Before::Answered {
            action: Action::Reply(reply),
            counts,
        } = before(&settings, &shared, 30)
        else {
            panic!("refused from the cache");
        };
        assert_eq!(reply.status, 403);
        assert_eq!(counts, [(Stat::Forbidden, 1), (Stat::ForbiddenCached, 1)]);
    }

    #[test]
    fn a_batch_the_worker_holds_is_spent_before_a_cached_refusal() {
        let settings = settings("");
        let shared = FakeShared::default();
        // A roomy lease: the next request takes a batch of 3 (a share of the 99 left).
        lease(&settings, &shared, 0, ("L1", 100, 1_000));
        assert!(admitted_from_lease(&before(&settings, &shared, 5)));
        suspended_by_a_plain_callout(&settings, &shared);
        // The batch's two were counted when the lease was granted: spent, within its TTL.
        for now in [30, 40] {
            assert!(
                admitted_from_lease(&before(&settings, &shared, now)),
                "{now}"
            );
        }
        let Before::Answered {
            action: Action::Reply(reply),
            ..
        } = before(&settings, &shared, 50)
        else {
            panic!("refused from the cache");
        };
        assert_eq!(reply.status, 403, "then the cache answers");
    }

    #[test]
    fn the_deny_caches_refresh_neither_spends_nor_asks_for_a_lease() {
        let settings = settings(r#","deny_cache":{"max_ttl":"100ms"}"#);
        let shared = FakeShared::default();
        // A lease lives on the 5-unit ingest route; a denial of another route at the same
        // cost is cached (for 100 ms), and so refuses ingest requests too.
        let dear = (KEY, "ingest", 5);
        lease_on(&settings, &shared, dear, 0, ("L1", 100, 1_000));
        let (plain, ..) = callout(before_callout(
            &settings,
            &shared,
            (KEY, "other", 5),
            1,
            || None,
        ));
        after_answer(&settings, &shared, &plain, deny(), || 2);
        assert!(matches!(
            before_callout(&settings, &shared, dear, 50, || None),
            Before::Answered { action: Action::Reply(ref r), .. } if r.status == 429
        ));
        let before_refresh = lease_slots(&shared);
        let refresh = before_callout(&settings, &shared, dear, 150, || None);
        let Before::Callout { pending, .. } = refresh else {
            panic!("the refresh makes its callout: {refresh:?}");
        };
        let request = pending.request(KEY, "ingest", 5);
        assert_eq!(request.edge_denied, 1);
        assert_eq!((request.lease_max, request.returned), (0, None));
        assert_eq!(pending.lease, Some((LeaseKey::of(KEY, "ingest", 5), None)));
        assert_eq!(
            lease_slots(&shared),
            before_refresh,
            "the lease is untouched"
        );

        // Denied (the window is full, the lease holding its share): the lease answers it,
        // and the denial no longer refuses the lease's requests.
        let (counts, action) = after_answer(&settings, &shared, &pending, deny(), || 160);
        assert!(counts.contains(&(Stat::LeasedAfterDenial, 1)), "{counts:?}");
        assert!(matches!(action, Action::Resume { .. }));
        let next = before_callout(&settings, &shared, dear, 170, || None);
        assert!(admitted_from_lease(&next), "{next:?}");
    }

    #[test]
    fn a_denial_that_meets_a_live_lease_is_answered_from_it_and_not_cached() {
        let settings = settings("");
        let shared = FakeShared::default();
        // Sent beside the request that asked for the lease, and denied because the lease
        // took the room; answered after the lease was stored.
        let (asking, ..) = callout(before(&settings, &shared, 0));
        let (plain, ..) = callout(before(&settings, &shared, 1));
        after_answer(
            &settings,
            &shared,
            &asking,
            allow(Some(("L1", 3, 1_000))),
            || 5,
        );
        let (counts, action) = after_answer(&settings, &shared, &plain, deny(), || 10);
        assert_eq!(
            counts,
            [
                (Stat::Allowed, 1),
                (Stat::AllowedLeased, 1),
                (Stat::LeasedAfterDenial, 1)
            ]
        );
        let Action::Resume { upstream, .. } = action else {
            panic!("admitted from the lease");
        };
        assert_eq!(header(&upstream, TENANT_ID), Some("tn_hot"));
        assert!(
            admitted_from_lease(&before(&settings, &shared, 20)),
            "the denial was not cached; the lease's last request is spent"
        );
        let (late, ..) = callout(before(&settings, &shared, 30));
        let (counts, action) = after_answer(&settings, &shared, &late, deny(), || 40);
        assert_eq!(counts, [(Stat::Denied, 1)], "the lease is used up");
        assert!(matches!(action, Action::Reply(ref r) if r.status == 429));
        assert!(
            matches!(
                before(&settings, &shared, 50),
                Before::Answered { action: Action::Reply(ref r), .. } if r.status == 429
            ),
            "cached now"
        );
    }

    /// Shared data that runs `between` once, just before the first write to a deny-cache
    /// slot: another worker's step landing between two of this one's.
    struct Interleaved<'a, F: Fn(&FakeShared)> {
        inner: &'a FakeShared,
        between: std::cell::Cell<Option<F>>,
    }

    impl<F: Fn(&FakeShared)> SharedData for Interleaved<'_, F> {
        fn get(&self, slot: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.inner.get(slot)
        }

        fn set(&self, slot: &str, value: &[u8], cas: Option<u32>) -> bool {
            if slot.starts_with("tollgate.deny.")
                && let Some(between) = self.between.take()
            {
                between(self.inner);
            }
            self.inner.set(slot, value, cas)
        }
    }

    #[test]
    fn a_lease_stored_by_another_worker_while_a_denial_is_cached_still_wins() {
        let settings = settings("");
        let shared = FakeShared::default();
        let (asking, ..) = callout(before(&settings, &shared, 0));
        let (plain, ..) = callout(before(&settings, &shared, 1));
        // The denial finds no lease, and before it is cached, the other worker stores the
        // lease (dropping the denials cached so far: none yet).
        let other_worker = Interleaved {
            inner: &shared,
            between: std::cell::Cell::new(Some(|inner: &FakeShared| {
                after_answer(
                    &settings,
                    inner,
                    &asking,
                    allow(Some(("L1", 10, 1_000))),
                    || 5,
                );
            })),
        };
        let (counts, action) = after_answer(&settings, &other_worker, &plain, deny(), || 6);
        assert!(counts.contains(&(Stat::LeasedAfterDenial, 1)), "{counts:?}");
        assert!(matches!(action, Action::Resume { .. }));
        assert!(
            admitted_from_lease(&before(&settings, &shared, 7)),
            "no denial stays cached beside the lease"
        );
    }

    #[test]
    fn storing_a_lease_drops_the_denial_a_callout_beside_it_brought_back() {
        let settings = settings("");
        let shared = FakeShared::default();
        let (asking, ..) = callout(before(&settings, &shared, 0));
        let (plain, ..) = callout(before(&settings, &shared, 1));
        // The denial (no room: the lease took it) comes back before the lease.
        after_answer(&settings, &shared, &plain, deny(), || 5);
        assert!(matches!(
            before(&settings, &shared, 6),
            Before::Answered { action: Action::Reply(ref r), .. } if r.status == 429
        ));
        after_answer(
            &settings,
            &shared,
            &asking,
            allow(Some(("L1", 10, 1_000))),
            || 7,
        );
        assert!(
            admitted_from_lease(&before(&settings, &shared, 8)),
            "the lease's requests are not refused"
        );
    }

    #[test]
    fn a_live_lease_is_honoured_while_the_control_plane_is_unreachable() {
        let settings = settings("");
        let shared = FakeShared::default();
        lease(&settings, &shared, 0, ("L1", 100, 1_000));
        // Plain callouts of another route fail meanwhile.
        let other = (KEY, "other", 1);
        let (plain, ..) = callout(before_callout(&settings, &shared, other, 10, || None));
        let (_, action) = after_answer(
            &settings,
            &shared,
            &plain,
            Err(CalloutFailure::Timeout),
            || 110,
        );
        assert!(matches!(action, Action::Reply(ref r) if r.status == 503));
        for now in [120, 500, 999] {
            assert!(
                admitted_from_lease(&before(&settings, &shared, now)),
                "{now}"
            );
        }
        // Over: the return goes out in a callout that fails; the failure mode applies, and
        // the next request asks again without returning anything twice.
        // The first took a batch of 3 of the 99 left for its worker (a share of what is
        // left), which the three spent: the 96 left in the table are handed back.
        let (returning, headers, _) = callout(before(&settings, &shared, 1_000));
        assert_eq!(headers[header::LEASE_RETURN], "L1 96");
        assert_eq!(WORKER.with_borrow_mut(WorkerBatches::take_lost), 0);
        let unavailable = Err(CalloutFailure::from_protocol(
            ProtocolError::UnexpectedStatus(503),
        ));
        // No lease left to answer it from, and nothing stored.
        let (counts, action) = after_answer(&settings, &shared, &returning, unavailable, || 1_005);
        assert_eq!(counts, [(Stat::CalloutFailed, 1)]);
        assert!(matches!(action, Action::Reply(ref r) if r.status == 503));
        let (_, headers, _) = callout(before(&settings, &shared, 1_010));
        assert_eq!(
            headers[header::LEASE_MAX],
            max_requests(&settings).to_string(),
            "the placeholder was cleared"
        );
        assert!(!headers.contains_key(header::LEASE_RETURN));
    }

    /// A lease of 101 requests stored at 0, 91 of them spent by 250 ms: at that rate what is
    /// left lasts less than the runway, so the next request renews it with its callout (its
    /// pending request and callout headers).
    fn renewing(
        settings: &Settings,
        shared: &FakeShared,
    ) -> (Pending, HashMap<&'static str, String>) {
        lease(settings, shared, 0, ("L1", 101, 1_000));
        for n in 0..91 {
            assert!(
                admitted_from_lease(&before(settings, shared, 250)),
                "request {n}"
            );
        }
        let (renewing, headers, _) = callout(before(settings, shared, 250));
        (renewing, headers)
    }

    #[test]
    fn a_hot_keys_lease_is_renewed_while_it_still_admits_and_a_denied_renewal_spends_it() {
        let settings = settings("");
        let shared = FakeShared::default();
        let (renewing, headers) = renewing(&settings, &shared);
        assert_eq!(
            headers[header::LEASE_MAX],
            max_requests(&settings).to_string()
        );
        // ...while the others go on spending it.
        assert!(admitted_from_lease(&before(&settings, &shared, 250)));
        // The tenant is at its limit: the renewing request is answered from the lease, and no
        // denial is cached to refuse the rest of it.
        let (counts, action) = after_answer(&settings, &shared, &renewing, deny(), || 255);
        assert!(counts.contains(&(Stat::LeasedAfterDenial, 1)), "{counts:?}");
        assert!(matches!(action, Action::Resume { .. }));
        assert!(
            matches!(before(&settings, &shared, 256), Before::Callout { .. }),
            "due for renewal again: the next request asks"
        );
        assert!(admitted_from_lease(&before(&settings, &shared, 257)));
    }

    #[test]
    fn a_renewal_that_fails_is_answered_from_the_lease_whatever_the_failure_mode() {
        let settings = settings("");
        let shared = FakeShared::default();
        let (renewing, _) = renewing(&settings, &shared);
        let (counts, action) = after_answer(
            &settings,
            &shared,
            &renewing,
            Err(CalloutFailure::Timeout),
            || 350,
        );
        assert!(
            matches!(action, Action::Resume { .. }),
            "fail-closed, yet the lease it was renewing admits it"
        );
        assert_eq!(
            counts,
            [
                (Stat::Allowed, 1),
                (Stat::AllowedLeased, 1),
                (Stat::CalloutFailed, 1)
            ]
        );
    }

    #[test]
    fn a_shadow_deny_is_let_through_and_leaves_no_lease() {
        let settings = settings("");
        let shared = FakeShared::default();
        let (asking, ..) = callout(before(&settings, &shared, 0));
        let shadow = Ok(Answer::ShadowDeny {
            tenant: "tn_hot".into(),
            quota: quota(0),
            retry_after_ms: 1_000,
        });
        let (counts, action) = after_answer(&settings, &shared, &asking, shadow, || 10);
        assert_eq!(counts, [(Stat::ShadowDenied, 1)]);
        let Action::Resume { response, .. } = action else {
            panic!("let through");
        };
        assert_eq!(header(&response, WOULD_LIMIT), Some("pro"));
        let (_, headers, _) = callout(before(&settings, &shared, 20));
        assert_eq!(
            headers[header::LEASE_MAX],
            max_requests(&settings).to_string(),
            "no lease; the placeholder was cleared"
        );
    }

    #[test]
    fn with_leases_off_every_admission_is_a_callout_asking_for_none() {
        let settings = settings(r#","lease":{"enabled":false}"#);
        let shared = FakeShared::default();
        for now in [0, 10] {
            let (pending, headers, _) = callout(before(&settings, &shared, now));
            assert!(!headers.contains_key(header::LEASE_MAX));
            // Even a lease granted unasked is not kept.
            let (counts, _) = after_answer(
                &settings,
                &shared,
                &pending,
                allow(Some(("L1", 10, 1_000))),
                || now + 5,
            );
            assert_eq!(counts, [(Stat::Allowed, 1)]);
        }
    }

    #[test]
    fn an_address_over_its_invalid_key_budget_still_spends_a_lease_but_claims_nothing() {
        let settings = settings(r#","invalid_keys":{"budget":1}"#);
        let shared = FakeShared::default();
        lease(&settings, &shared, 0, ("L1", 3, 1_000));
        for key in ["tg_x", "tg_y"] {
            let (pending, ..) = callout(before_callout(
                &settings,
                &shared,
                (key, "ingest", 1),
                10,
                || address("192.0.2.1"),
            ));
            after_answer(&settings, &shared, &pending, Ok(Answer::UnknownKey), || 20);
        }
        for now in [30, 40] {
            assert!(admitted_from_lease(&before(&settings, &shared, now)));
        }
        let refused = before(&settings, &shared, 1_000);
        assert!(
            matches!(&refused, Before::Answered { action: Action::Hold(r), .. } if r.status == 429),
            "{refused:?}"
        );
        let elsewhere = before_callout(&settings, &shared, REQUEST, 1_001, || {
            address("198.51.100.7")
        });
        let (_, headers, _) = callout(elsewhere);
        assert_eq!(
            headers[header::LEASE_MAX],
            max_requests(&settings).to_string(),
            "the refused request left the slot unclaimed"
        );
    }

    #[test]
    fn a_lease_overwritten_in_its_slot_is_counted_as_lost() {
        let settings = settings(r#","lease":{"slots":1}"#);
        let shared = FakeShared::default();
        let (slow, ..) = callout(before(&settings, &shared, 0));
        // Its placeholder ran out; another key claimed the slot and got a lease.
        let (other, ..) = callout(before_callout(
            &settings,
            &shared,
            ("tg_other", "ingest", 1),
            100,
            || None,
        ));
        after_answer(
            &settings,
            &shared,
            &other,
            allow(Some(("L2", 50, 1_000))),
            || 110,
        );
        let (counts, _) = after_answer(
            &settings,
            &shared,
            &slow,
            allow(Some(("L1", 10, 1_000))),
            || 120,
        );
        assert_eq!(
            counts,
            [
                (Stat::Allowed, 1),
                (Stat::LeasesGranted, 1),
                (Stat::LeaseRequestsGranted, 10),
                (Stat::LeasesLost, 1),
                (Stat::LeaseRequestsLost, 49)
            ]
        );
    }
}
