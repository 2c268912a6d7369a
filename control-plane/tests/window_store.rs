//! One conformance suite for every window store. Each behaviour is written once, generic over
//! the store, and stamped out per backend by `conformance!`; time is a `ManualClock`, so
//! window expiry is tested without sleeping.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tollgate_control_plane::clock::{Clock, ManualClock};
use tollgate_control_plane::storage::redis::{RedisConnection, RedisTarget};
use tollgate_control_plane::window::{
    GrantedLease, LeaseId, Limit, MemoryWindows, RedisWindows, Returned, WindowDecision,
    WindowRequest, WindowStore,
};
use tollgate_e2e::redis::{RedisCluster, RedisServer};

const START_MS: u64 = 1_700_000_000_000;

fn per(limit: u32, window_secs: u64) -> Limit {
    Limit {
        limit,
        window: Duration::from_secs(window_secs),
        monthly: None,
    }
}

async fn admits_up_to_the_limit_then_denies(store: impl WindowStore, _clock: ManualClock) {
    let limit = per(5, 60);
    for i in 0..5 {
        let decision = store.decide("t1", limit, 1, 0).await.unwrap();
        assert!(decision.admitted, "request {i} should be admitted");
        assert_eq!(decision.remaining, 4 - i, "remaining after request {i}");
    }
    let denied = store.decide("t1", limit, 1, 0).await.unwrap();
    assert!(!denied.admitted, "the 6th request must be denied");
    assert_eq!(denied.remaining, 0);
}

async fn tenants_do_not_share_windows(store: impl WindowStore, _clock: ManualClock) {
    let limit = per(1, 60);
    assert!(store.decide("a", limit, 1, 0).await.unwrap().admitted);
    assert!(store.decide("b", limit, 1, 0).await.unwrap().admitted);
    assert!(!store.decide("a", limit, 1, 0).await.unwrap().admitted);
}

async fn a_denial_says_when_the_oldest_request_leaves(store: impl WindowStore, clock: ManualClock) {
    let limit = per(2, 60);
    store.decide("t1", limit, 1, 0).await.unwrap();
    clock.advance(Duration::from_millis(10_500));
    store.decide("t1", limit, 1, 0).await.unwrap();
    clock.advance(Duration::from_millis(20_000));
    let denied = store.decide("t1", limit, 1, 0).await.unwrap();
    assert!(!denied.admitted);
    // The first request was 30.5 s ago; it leaves the 60 s window in 29.5 s.
    assert_eq!(denied.retry_after_ms, 29_500);
    assert_eq!(denied.reset_ms, 29_500);
}

async fn the_window_slides_instead_of_resetting(store: impl WindowStore, clock: ManualClock) {
    let limit = per(2, 2);
    assert!(store.decide("t1", limit, 1, 0).await.unwrap().admitted);
    clock.advance(Duration::from_millis(1_000));
    assert!(store.decide("t1", limit, 1, 0).await.unwrap().admitted);
    assert!(!store.decide("t1", limit, 1, 0).await.unwrap().admitted);

    // One millisecond before the first request ages out: still full.
    clock.advance(Duration::from_millis(999));
    assert!(
        !store.decide("t1", limit, 1, 0).await.unwrap().admitted,
        "at 1.999 s"
    );
    // It ages out exactly 2 s after it was admitted; the second one is still in.
    clock.advance(Duration::from_millis(1));
    assert!(
        store.decide("t1", limit, 1, 0).await.unwrap().admitted,
        "at 2.000 s"
    );
    assert!(
        !store.decide("t1", limit, 1, 0).await.unwrap().admitted,
        "one slot only"
    );
}

async fn a_costly_request_is_all_or_nothing(store: impl WindowStore, clock: ManualClock) {
    let limit = per(10, 60);
    assert!(store.decide("t1", limit, 4, 0).await.unwrap().admitted);
    clock.advance(Duration::from_secs(1));
    assert!(store.decide("t1", limit, 4, 0).await.unwrap().admitted);
    let denied = store.decide("t1", limit, 5, 0).await.unwrap();
    assert!(!denied.admitted, "8 used + 5 > 10");
    assert_eq!(denied.remaining, 2, "a denied request takes nothing");
    // Freeing 3 units needs the first request (4 units) to age out: 59 s from now.
    assert_eq!(denied.retry_after_ms, 59_000);
    let fits = store.decide("t1", limit, 2, 0).await.unwrap();
    assert!(fits.admitted, "2 units still fit");
    assert_eq!(fits.remaining, 0);
}

async fn a_request_costing_more_than_the_limit_is_denied(
    store: impl WindowStore,
    _clock: ManualClock,
) {
    let denied = store.decide("t1", per(3, 60), 4, 0).await.unwrap();
    assert!(!denied.admitted);
    assert_eq!(denied.retry_after_ms, 60_000);
}

async fn denials_are_counted_but_take_no_room(store: impl WindowStore, clock: ManualClock) {
    let limit = per(2, 10);
    store.decide("t1", limit, 1, 0).await.unwrap();
    store.decide("t1", limit, 1, 0).await.unwrap();
    for _ in 0..7 {
        assert!(!store.decide("t1", limit, 1, 0).await.unwrap().admitted);
    }
    let usage = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!((usage.used, usage.denied), (2, 7));

    // Once the admitted requests age out the tenant is admitted again at once: the denials
    // did not extend its window.
    clock.advance(Duration::from_secs(10));
    assert!(store.decide("t1", limit, 1, 0).await.unwrap().admitted);
    let usage = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!(
        (usage.used, usage.denied),
        (1, 0),
        "old denials age out too"
    );
}

async fn usage_of_an_unknown_tenant_is_zero(store: impl WindowStore, _clock: ManualClock) {
    let usage = store.usage("nobody", per(60, 60), 0).await.unwrap();
    assert_eq!(
        (
            usage.used,
            usage.denied,
            usage.reset_ms,
            usage.month_to_date
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(usage.history.len(), 60);
    assert!(
        usage
            .history
            .iter()
            .all(|m| m.admitted == 0 && m.denied == 0)
    );
}

async fn usage_reports_per_minute_history_and_month_to_date(
    store: impl WindowStore,
    clock: ManualClock,
) {
    let limit = per(4, 600);
    store.decide("t1", limit, 1, 0).await.unwrap();
    store.decide("t1", limit, 1, 0).await.unwrap();
    store.decide("t1", limit, 2, 0).await.unwrap();
    assert!(!store.decide("t1", limit, 1, 0).await.unwrap().admitted);
    clock.advance(Duration::from_secs(120));
    let usage = store.usage("t1", limit, 0).await.unwrap();
    let first_minute = START_MS / 60_000 * 60_000;
    assert_eq!(
        usage.history[57].minute_start_ms, first_minute,
        "two minutes ago"
    );
    assert_eq!(
        (usage.history[57].admitted, usage.history[57].denied),
        (4, 1)
    );
    assert_eq!(
        usage.history[59].minute_start_ms,
        first_minute + 120_000,
        "the current minute"
    );
    assert_eq!(usage.history.iter().map(|m| m.admitted).sum::<u64>(), 4);
    assert_eq!(usage.month_to_date, 4);
    assert_eq!(
        (usage.used, usage.denied),
        (4, 1),
        "the 600 s window still holds them"
    );

    // START_MS is 2023-11-14; twenty days on it is December, and the month starts from zero.
    clock.advance(Duration::from_secs(20 * 86_400));
    assert!(store.decide("t1", limit, 3, 0).await.unwrap().admitted);
    let usage = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!(usage.month_to_date, 3);
    assert_eq!(
        usage.history.iter().map(|m| m.admitted).sum::<u64>(),
        3,
        "last hour only"
    );
}

async fn denials_reported_by_the_filter_are_counted(store: impl WindowStore, _clock: ManualClock) {
    let limit = per(10, 60);
    assert!(
        store.decide("t1", limit, 1, 5).await.unwrap().admitted,
        "reports take no room"
    );
    let usage = store.usage("t1", limit, 2).await.unwrap();
    assert_eq!((usage.used, usage.denied), (1, 7));
    assert_eq!(usage.history[59].denied, 7);
    assert_eq!(
        store.usage("t1", limit, 0).await.unwrap().denied,
        7,
        "counted once"
    );
}

async fn a_monthly_quota_caps_the_month_as_well(store: impl WindowStore, clock: ManualClock) {
    let limit = Limit {
        limit: 100,
        window: Duration::from_secs(60),
        monthly: Some(5),
    };
    assert!(store.decide("t1", limit, 2, 0).await.unwrap().admitted);
    let second = store.decide("t1", limit, 2, 0).await.unwrap();
    assert_eq!(second.month.map(|m| m.remaining), Some(1));
    let refused = store.decide("t1", limit, 2, 0).await.unwrap();
    assert!(!refused.admitted, "the window has room, the month does not");
    assert_eq!(refused.remaining, 96);
    // START_MS is 2023-11-14T22:13:20Z; the month starts over on 2023-12-01T00:00:00Z.
    let next_month = 1_701_388_800_000 - START_MS;
    assert_eq!(refused.retry_after_ms, next_month);
    assert_eq!(refused.month.map(|m| m.reset_ms), Some(next_month));
    let last = store.decide("t1", limit, 1, 0).await.unwrap();
    assert!(last.admitted, "one unit still fits");
    assert_eq!(last.month.map(|m| m.remaining), Some(0));

    clock.advance(Duration::from_millis(next_month));
    let december = store.decide("t1", limit, 1, 0).await.unwrap();
    assert!(december.admitted);
    assert_eq!(december.month.map(|m| m.remaining), Some(4));
    assert_eq!(
        store.decide("t1", per(100, 60), 1, 0).await.unwrap().month,
        None,
        "no monthly quota"
    );
}

/// Many decisions of one tenant at once, as Envoy's workers send them (the Redis store answers
/// them in shared batches): the window fills exactly, each admitted request sees its own
/// remaining count, and every denial is counted.
async fn concurrent_decisions_are_exact(store: impl WindowStore + 'static, _clock: ManualClock) {
    let store = Arc::new(store);
    let limit = per(60, 60);
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            let cost = if i % 3 == 0 { 2 } else { 1 };
            tokio::spawn(async move { (cost, store.decide("t1", limit, cost, 0).await.unwrap()) })
        })
        .collect();
    let mut admitted_units = 0;
    let mut remaining = Vec::new();
    let mut denied = 0;
    for task in tasks {
        let (cost, decision) = task.await.unwrap();
        if decision.admitted {
            admitted_units += cost;
            remaining.push(decision.remaining);
        } else {
            denied += 1;
        }
    }
    // Plenty of single-unit requests remain when the window nears full, so it fills exactly.
    assert_eq!(admitted_units, 60);
    remaining.sort_unstable();
    let count = remaining.len();
    remaining.dedup();
    assert_eq!(
        remaining.len(),
        count,
        "each admission saw its own remaining count"
    );
    assert_eq!(remaining.first(), Some(&0));
    let usage = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!((usage.used, usage.denied), (60, denied));
}

/// Concurrent denials behind concurrent admissions still say when the oldest unit leaves.
async fn concurrent_denials_say_when_room_frees(
    store: impl WindowStore + 'static,
    clock: ManualClock,
) {
    let store = Arc::new(store);
    let limit = per(4, 60);
    store.decide("t1", limit, 1, 0).await.unwrap();
    store.decide("t1", limit, 1, 0).await.unwrap();
    clock.advance(Duration::from_secs(10));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.decide("t1", limit, 1, 0).await.unwrap() })
        })
        .collect();
    let mut admitted_remaining = Vec::new();
    for task in tasks {
        let decision = task.await.unwrap();
        assert_eq!(decision.reset_ms, 50_000, "the oldest leaves in 50 s");
        if decision.admitted {
            admitted_remaining.push(decision.remaining);
        } else {
            assert_eq!(decision.retry_after_ms, 50_000);
        }
    }
    admitted_remaining.sort_unstable();
    assert_eq!(admitted_remaining, [0, 1]);
}

/// A request of cost 1 asking for a lease of up to `max` requests lasting a second.
fn asking(max: u32) -> WindowRequest {
    WindowRequest {
        lease_max: max,
        lease_ttl_ms: 1_000,
        ..WindowRequest::plain(1, 0)
    }
}

/// Five hundred plain admissions now: a recent rate of 500 units a second (measured over at
/// least a second).
async fn warm_up(store: &impl WindowStore, limit: Limit) {
    for _ in 0..500 {
        assert!(store.decide("t1", limit, 1, 0).await.unwrap().admitted);
    }
}

async fn a_lease_counts_its_units_at_once_sized_by_rate_ask_and_room(
    store: impl WindowStore,
    _clock: ManualClock,
) {
    let limit = per(1_000, 60);
    warm_up(&store, limit).await;
    let granted = store.decide_request("t1", limit, asking(50)).await.unwrap();
    let lease = granted.lease.expect("a lease");
    assert_eq!(
        lease.requests, 50,
        "a 500/s rate wants 500, the ask caps it at 50"
    );
    assert_eq!(lease.id.units, 49);
    assert_eq!(
        granted.remaining,
        1_000 - 501 - 49,
        "the whole lease counts now"
    );
    let usage = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!((usage.used, usage.leased), (550, 49));

    // Near the limit: a quarter of the room at most, shrinking to none, and never over it.
    let small = per(560, 60);
    let mut sizes = Vec::new();
    let mut admitted = 0;
    loop {
        let decided = store.decide_request("t1", small, asking(50)).await.unwrap();
        if !decided.admitted {
            break;
        }
        let requests = decided.lease.map_or(1, |lease| lease.requests);
        sizes.push(requests);
        admitted += requests;
    }
    assert_eq!(
        sizes,
        [3, 2, 2, 1, 1, 1],
        "room 9, 6, 4, 2, 1, 0 after each"
    );
    assert_eq!(550 + admitted, 560, "exactly the limit, leases included");
}

/// After [`warm_up`], a lease of 11 requests (10 units beside the granting one).
async fn warm_lease(store: &impl WindowStore, limit: Limit) -> GrantedLease {
    warm_up(store, limit).await;
    lease_of(store, limit, 11).await
}

/// The lease a request of t1 asking for up to `requests` gets; fails the test without one.
async fn lease_of(store: &impl WindowStore, limit: Limit, requests: u32) -> GrantedLease {
    store
        .decide_request("t1", limit, asking(requests))
        .await
        .unwrap()
        .lease
        .expect("a lease")
}

/// Decides a request of t1 of cost 1 handing back `requests` of `lease`.
async fn hand_back(
    store: &impl WindowStore,
    limit: Limit,
    lease: LeaseId,
    requests: u32,
) -> WindowDecision {
    let returning = WindowRequest {
        returned: Some(Returned { lease, requests }),
        ..WindowRequest::plain(1, 0)
    };
    store.decide_request("t1", limit, returning).await.unwrap()
}

/// Asks for a lease of up to 10,000 requests; the requests it holds (0: none).
async fn leased(store: &impl WindowStore, limit: Limit) -> u32 {
    let decided = store
        .decide_request("t1", limit, asking(10_000))
        .await
        .unwrap();
    assert!(decided.admitted);
    decided.lease.map_or(0, |lease| lease.requests)
}

/// A lease is what the tenant's last seconds used in its lifetime: its whole window's average
/// would lease too little to a tenant back from a quiet spell.
async fn leases_follow_the_last_seconds_not_the_window_average(
    store: impl WindowStore,
    clock: ManualClock,
) {
    let limit = per(100_000, 60);
    // 100 a second for ten seconds: the last five seconds hold four of those bursts, over
    // the four seconds since the first of them.
    for _ in 0..10 {
        for _ in 0..100 {
            store.decide("t1", limit, 1, 0).await.unwrap();
        }
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(leased(&store, limit).await, 101, "100 a second, 1 s lease");

    // Quiet for 40 s, then 300 at once: leased for 300 a second, though the window
    // averages under 30.
    clock.advance(Duration::from_secs(40));
    for _ in 0..300 {
        store.decide("t1", limit, 1, 0).await.unwrap();
    }
    assert_eq!(leased(&store, limit).await, 301);
}

async fn leased_units_leave_a_window_after_the_lease_deadline(
    store: impl WindowStore,
    clock: ManualClock,
) {
    let limit = per(1_000, 60);
    let lease = warm_lease(&store, limit).await;
    assert_eq!(lease.id.units, 10);
    clock.advance(Duration::from_millis(60_001));
    let usage = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!(
        (usage.used, usage.leased),
        (10, 0),
        "the plain ones left; the leased stay a window past the deadline"
    );
    clock.advance(Duration::from_millis(1_000));
    assert_eq!(store.usage("t1", limit, 0).await.unwrap().used, 0);
}

async fn returned_units_leave_at_once_and_from_the_counters(
    store: impl WindowStore,
    clock: ManualClock,
) {
    let limit = Limit {
        monthly: Some(1_000_000),
        ..per(1_000, 60)
    };
    let lease = warm_lease(&store, limit).await;
    let before = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!((before.used, before.month_to_date), (511, 511));
    clock.advance(Duration::from_millis(500));
    let decided = hand_back(&store, limit, lease.id, 7).await;
    assert_eq!(decided.remaining, 1_000 - 511 + 7 - 1);
    let after = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!(
        (after.used, after.leased),
        (505, 3),
        "7 back, one more admitted"
    );
    assert_eq!(after.month_to_date, 505);
    let minutes: u64 = after.history.iter().map(|m| m.admitted).sum();
    assert_eq!(minutes, 505, "the history forgets what came back");

    // Handing it back twice, or what was never ours, takes nothing more.
    let never_ours = LeaseId {
        first: lease.id.first + 1_000,
        stamp_ms: lease.id.stamp_ms + 7,
        ..lease.id
    };
    for (id, requests) in [(lease.id, 7), (never_ours, 3)] {
        hand_back(&store, limit, id, requests).await;
    }
    let last = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!(
        (last.used, last.leased),
        (507, 3),
        "two more admitted, nothing more taken back"
    );
}

/// A lease handed back in the same millisecond as later admissions leaves every admission
/// counted: the window holds exactly what was admitted and not handed back (on Redis, a
/// return once took the minute's total back, and the next admission reused a later one's
/// name, so the window counted one unit fewer than it admitted).
async fn admissions_after_a_return_are_all_counted(store: impl WindowStore, _clock: ManualClock) {
    let limit = per(1_000, 60);
    let lease = warm_lease(&store, limit).await;
    for _ in 0..20 {
        assert!(store.decide("t1", limit, 1, 0).await.unwrap().admitted);
    }
    assert!(hand_back(&store, limit, lease.id, 7).await.admitted);
    for _ in 0..5 {
        assert!(store.decide("t1", limit, 1, 0).await.unwrap().admitted);
    }
    let usage = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!(
        (usage.used, usage.leased),
        (500 + 11 + 20 - 7 + 1 + 5, 3),
        "every admission counted once, the 7 handed back gone"
    );
    let minutes: u64 = usage.history.iter().map(|m| m.admitted).sum();
    assert_eq!(minutes, u64::from(usage.used), "the history agrees");
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            /// The store, its clock, and whatever must live as long as the store (servers).
            async fn store() -> (impl WindowStore + 'static, ManualClock, impl Sized) {
                let clock = ManualClock::new(START_MS);
                let (store, guard) = $make(clock.clone()).await;
                (store, clock, guard)
            }

            conformance!(@tests
                admits_up_to_the_limit_then_denies,
                tenants_do_not_share_windows,
                a_denial_says_when_the_oldest_request_leaves,
                the_window_slides_instead_of_resetting,
                a_costly_request_is_all_or_nothing,
                a_request_costing_more_than_the_limit_is_denied,
                denials_are_counted_but_take_no_room,
                usage_of_an_unknown_tenant_is_zero,
                usage_reports_per_minute_history_and_month_to_date,
                denials_reported_by_the_filter_are_counted,
                a_monthly_quota_caps_the_month_as_well,
                concurrent_decisions_are_exact,
                concurrent_denials_say_when_room_frees,
                a_lease_counts_its_units_at_once_sized_by_rate_ask_and_room,
                leases_follow_the_last_seconds_not_the_window_average,
                leased_units_leave_a_window_after_the_lease_deadline,
                returned_units_leave_at_once_and_from_the_counters,
                admissions_after_a_return_are_all_counted,
            );
        }
    };
    (@tests $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, clock, _guard) = store().await;
                super::$name(store, clock).await;
            }
        )*
    };
}

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

async fn redis_store(target: RedisTarget, clock: Option<ManualClock>) -> RedisWindows {
    let connection = RedisConnection::connect(&target, REDIS_TIMEOUT)
        .await
        .unwrap();
    let clock = clock.map(|c| Arc::new(c) as Arc<dyn Clock>);
    RedisWindows::new(connection, REDIS_TIMEOUT, clock)
}

conformance!(memory, |clock: ManualClock| async move {
    (MemoryWindows::new(Arc::new(clock)), ())
});

conformance!(redis, |clock: ManualClock| async move {
    let server = RedisServer::start();
    (
        redis_store(RedisTarget::Standalone(server.url()), Some(clock)).await,
        server,
    )
});

conformance!(redis_cluster, |clock: ManualClock| async move {
    let cluster = RedisCluster::start();
    (
        redis_store(RedisTarget::Cluster(cluster.urls()), Some(clock)).await,
        cluster,
    )
});

/// With no clock given, the script takes Redis's own `TIME`.
#[tokio::test]
async fn the_redis_store_can_use_redis_time() {
    let server = RedisServer::start();
    let store = redis_store(RedisTarget::Standalone(server.url()), None).await;
    let limit = per(2, 60);
    assert!(store.decide("t1", limit, 1, 0).await.unwrap().admitted);
    assert!(store.decide("t1", limit, 1, 0).await.unwrap().admitted);
    let denied = store.decide("t1", limit, 1, 0).await.unwrap();
    assert!(!denied.admitted);
    assert!(
        (59_000..=60_000).contains(&denied.retry_after_ms),
        "{denied:?}"
    );
}

/// Concurrent decisions of one tenant share round trips: the first goes alone, those that
/// arrive while it is in flight go together in one more. Other tenants' decisions are never
/// held back by it.
#[tokio::test]
async fn concurrent_decisions_of_a_tenant_share_one_round_trip() {
    let server = RedisServer::start();
    let store = Arc::new(redis_store(RedisTarget::Standalone(server.url()), None).await);
    let limit = per(1000, 60);
    // Load the script, so every call below is one EVALSHA.
    store.decide("warm-up", limit, 1, 0).await.unwrap();
    server.cli(&["config", "resetstat"]);

    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = store.clone();
            let tenant = if i < 90 { "hot" } else { "quiet" };
            tokio::spawn(async move { store.decide(tenant, limit, 1, 0).await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().admitted);
    }
    // The test's runtime has one thread, so all 100 are queued before the first call leaves:
    // per tenant, the first alone and the rest in one batch.
    assert_eq!(server.calls_of("evalsha"), 4);
    assert_eq!(server.calls_of("zadd"), 4, "one ZADD per batch");
    let hot = store.usage("hot", limit, 0).await.unwrap();
    let quiet = store.usage("quiet", limit, 0).await.unwrap();
    assert_eq!((hot.used, quiet.used), (90, 10));
}

/// On Redis a lease is one member of the window however many units it holds, and a return
/// shrinks it: a hot tenant's lease costs Redis what a plain admission does (a member per unit
/// once held Redis, and every tenant's decisions behind it, for tens of milliseconds per
/// lease). The window's count follows members the scripts did not write: one unit each for an
/// older Tollgate's, counted again when they appear behind its back.
#[tokio::test]
async fn a_lease_is_one_member_of_the_redis_window_and_the_count_follows_every_writer() {
    let server = RedisServer::start();
    let clock = ManualClock::new(START_MS);
    let store = redis_store(RedisTarget::Standalone(server.url()), Some(clock.clone())).await;
    let window_key = "tollgate:{t1}:window";
    let members = || -> u64 { server.cli(&["zcard", window_key]).trim().parse().unwrap() };
    // The count the scripts keep is the window's, added up here from its members.
    let count_is_kept = || {
        let names = server.cli(&["zrange", window_key, "0", "-1"]);
        let units: u64 = names
            .lines()
            .map(|name| name.rsplit_once(':').map_or(1, |(_, u)| u.parse().unwrap()))
            .sum();
        let kept = server.cli(&["hmget", "tollgate:{t1}:window-count", "u", "m"]);
        let kept: Vec<u64> = kept.lines().map(|n| n.trim().parse().unwrap()).collect();
        assert_eq!(kept, [units, names.lines().count() as u64], "{names}");
    };
    let limit = per(1_000_000, 60);
    // 5,000 units in one request: a recent rate of 5 a millisecond, so a lease of a second
    // wants 5,000 requests.
    assert!(store.decide("t1", limit, 5_000, 0).await.unwrap().admitted);
    let lease = lease_of(&store, limit, 10_000).await;
    assert_eq!(lease.requests, 5_001);
    let usage = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!((usage.used, usage.leased), (10_001, 5_000));
    assert_eq!(members(), 3, "two decisions' admissions and one lease");
    count_is_kept();

    assert!(hand_back(&store, limit, lease.id, 4_000).await.admitted);
    let usage = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!((usage.used, usage.leased), (6_002, 1_000));
    assert_eq!(members(), 4, "the lease shrank in place");
    count_is_kept();

    // A second lease, handed back whole, leaves the window.
    let second = lease_of(&store, limit, 10).await;
    assert_eq!(members(), 6);
    assert!(
        hand_back(&store, limit, second.id, second.requests - 1)
            .await
            .admitted
    );
    assert_eq!(
        members(),
        6,
        "the returning request's unit in, the lease out"
    );
    assert_eq!(store.usage("t1", limit, 0).await.unwrap().used, 6_004);
    count_is_kept();

    // Three members an older Tollgate wrote, a unit each, added behind the scripts' back.
    let now = START_MS.to_string();
    for seq in ["900001", "900002", "900003"] {
        server.cli(&["zadd", window_key, &now, &format!("{now}-{seq}")]);
    }
    let usage = store.usage("t1", limit, 0).await.unwrap();
    assert_eq!(usage.used, 6_007);
    count_is_kept();
    let decided = store.decide("t1", per(6_008, 60), 2, 0).await.unwrap();
    assert!(!decided.admitted, "6,007 + 2 is over 6,008");
    assert_eq!(
        decided.retry_after_ms, 60_000,
        "when the oldest unit leaves"
    );
    // Under a tier lowered to 1,000, room comes when all but 999 units have left: the 5,007
    // stamped now, then the first of the lease's, stamped at its deadline a second on.
    let lowered = store.decide("t1", per(1_000, 60), 1, 0).await.unwrap();
    assert!(!lowered.admitted);
    assert_eq!(lowered.retry_after_ms, 61_000);

    let ttl: i64 = server
        .cli(&["pttl", "tollgate:{t1}:window-count"])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0, "the count expires too: {ttl}");
    // Everything leaves a window after its stamp: the lease's a second later.
    clock.advance(Duration::from_millis(60_999));
    assert_eq!(
        store.usage("t1", limit, 0).await.unwrap().used,
        1_000,
        "the first lease's rest"
    );
    count_is_kept();
    clock.advance(Duration::from_millis(1));
    assert_eq!(store.usage("t1", limit, 0).await.unwrap().used, 0);
    assert_eq!(members(), 0);
}

/// The window key's expiry, set on the minute's first admission to a window past the end of
/// the minute, covers every later member of that minute.
#[tokio::test]
async fn the_window_key_outlives_every_member_of_its_minute() {
    let server = RedisServer::start();
    let clock = ManualClock::new(START_MS);
    let store = redis_store(RedisTarget::Standalone(server.url()), Some(clock.clone())).await;
    let pttl = || -> i64 {
        server
            .cli(&["pttl", "tollgate:{t}:window"])
            .trim()
            .parse()
            .unwrap()
    };
    // START_MS is 20 s into its minute: the minute ends in 40 s, the window lasts 60 s.
    assert!(store.decide("t", per(5, 60), 1, 0).await.unwrap().admitted);
    assert!((99_000..=100_000).contains(&pttl()), "{} ms", pttl());
    clock.advance(Duration::from_secs(30));
    assert!(store.decide("t", per(5, 60), 1, 0).await.unwrap().admitted);
    // Its member leaves at +90 s; the key lives until +100 s.
    assert!((99_000..=100_000).contains(&pttl()), "{} ms", pttl());
}

/// Every key of a window expires once idle: the window a window past the end of the minute of
/// its latest admission, the denials with the window; a window emptied by trimming and
/// created again gets its expiry again.
#[tokio::test]
async fn the_redis_store_lets_idle_windows_expire() {
    let server = RedisServer::start();
    let store = redis_store(RedisTarget::Standalone(server.url()), None).await;
    let pttl = |key: &str| -> i64 { server.cli(&["pttl", key]).trim().parse().unwrap() };
    let (window_key, denied_key) = ("tollgate:{idle}:window", "tollgate:{idle}:denied");
    let admits = async |cost| {
        store
            .decide("idle", per(5, 1), cost, 0)
            .await
            .unwrap()
            .admitted
    };
    assert!(admits(1).await);
    assert!(!admits(9).await);
    let ttl = pttl(window_key);
    assert!(
        (1..=61_000).contains(&ttl),
        "the window key expires a window after the end of the minute: {ttl} ms"
    );
    assert!((1..=1000).contains(&pttl(denied_key)));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(server.cli(&["exists", denied_key]).trim(), "0");
    assert!(admits(1).await);
    let ttl = pttl(window_key);
    assert!(
        (1..=61_000).contains(&ttl),
        "the window key, emptied and created again, expires again: {ttl} ms"
    );
}

/// The usage history outlives a tenant's last request by an hour and the month counter its
/// month, whichever clock the script is given (Redis's own, or the caller's, here set far
/// from Redis's).
#[tokio::test]
async fn usage_and_month_counters_expire_after_an_hour_and_a_month() {
    const MINUTE_MS: i64 = 60_000;
    let server = RedisServer::start();
    for clock in [None, Some(ManualClock::new(1_000_000_000_123))] {
        server.cli(&["flushall"]);
        let store = redis_store(RedisTarget::Standalone(server.url()), clock.clone()).await;
        store.decide("t", per(5, 60), 1, 0).await.unwrap();
        let pttl = |key: &str| -> i64 { server.cli(&["pttl", key]).trim().parse().unwrap() };
        let usage = pttl("tollgate:{t}:usage");
        assert!(
            (60 * MINUTE_MS..=61 * MINUTE_MS).contains(&usage),
            "usage history expires in {usage} ms"
        );
        let month = pttl("tollgate:{t}:month");
        assert!(
            (31 * 1440 * MINUTE_MS..=32 * 1440 * MINUTE_MS).contains(&month),
            "month counter expires in {month} ms"
        );
        // A second decision in the same minute leaves both expiries as they were.
        if let Some(clock) = &clock {
            clock.advance(Duration::from_secs(1));
        }
        store.decide("t", per(5, 60), 1, 0).await.unwrap();
        assert!(pttl("tollgate:{t}:usage") <= usage);
    }
}

/// A tenant that never goes idle long enough for its hashes to expire still keeps only the
/// last hour's minutes and the current month: each minute's and month's first write drops
/// what is older.
#[tokio::test]
async fn counters_of_past_minutes_and_months_are_dropped() {
    let server = RedisServer::start();
    let clock = ManualClock::new(START_MS);
    let store = redis_store(RedisTarget::Standalone(server.url()), Some(clock.clone())).await;
    let limit = per(1_000, 60);
    for _ in 0..90 {
        for _ in 0..3 {
            store.decide("t", limit, 1, 0).await.unwrap();
        }
        store.decide("t", per(0, 60), 1, 0).await.unwrap();
        clock.advance(Duration::from_secs(60));
    }
    // Old fields are looked for on a minute's (admitted, denied) or the month's first write
    // only, not on each of the 360 decisions.
    assert_eq!(server.calls_of("hkeys"), 90 * 2 + 1);
    let fields = |key: &str| -> Vec<String> {
        let mut fields: Vec<String> = server
            .cli(&["hkeys", key])
            .lines()
            .map(String::from)
            .collect();
        fields.sort();
        fields
    };
    let usage = fields("tollgate:{t}:usage");
    assert_eq!(
        usage.len(),
        2 * 60,
        "admitted and denied of the last 60 minutes: {usage:?}"
    );
    let latest = (START_MS + 89 * 60_000) / 60_000;
    assert!(usage.contains(&format!("a{}", latest - 59)), "{usage:?}");
    assert!(!usage.contains(&format!("a{}", latest - 60)), "{usage:?}");
    // 90 minutes from START_MS (2023-11-14T22:13:20Z) stay in November.
    assert_eq!(fields("tollgate:{t}:month"), ["202311"]);

    clock.advance(Duration::from_secs(20 * 86_400));
    store.decide("t", limit, 1, 0).await.unwrap();
    assert_eq!(fields("tollgate:{t}:month"), ["202312"]);
}

#[tokio::test]
async fn a_dead_redis_is_a_prompt_unavailable_error_and_recovery_is_automatic() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let connection = RedisConnection::connect(&RedisTarget::Standalone(server.url()), timeout)
        .await
        .unwrap();
    let store = RedisWindows::new(connection, timeout, None);
    assert!(store.decide("t1", per(5, 60), 1, 0).await.is_ok());

    server.kill();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let error = store.decide("t1", per(5, 60), 1, 0).await;
        assert!(error.is_err(), "Redis is down");
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "took {:?}",
            started.elapsed()
        );
    }

    server.restart();
    let started = std::time::Instant::now();
    while store.decide("t1", per(5, 60), 1, 0).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no recovery within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Redis that accepts but never answers (stopped, not dead) is cut off by the timeout, which
/// bounds every decision: also those queued behind a call in flight, which would otherwise
/// wait for that call and then their own.
#[tokio::test]
async fn a_frozen_redis_is_a_prompt_unavailable_error() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(300);
    let connection = RedisConnection::connect(&RedisTarget::Standalone(server.url()), timeout)
        .await
        .unwrap();
    let store = Arc::new(RedisWindows::new(connection, timeout, None));
    assert!(store.decide("t1", per(5, 60), 1, 0).await.is_ok());
    let signal = |name: &str| {
        let pid = server.pid().expect("redis runs").to_string();
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };

    signal("-STOP");
    let decisions: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let decision = store.decide("t1", per(5, 60), 1, 0).await;
                (decision, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for decision in decisions {
        answers.push(decision.await.unwrap());
    }
    signal("-CONT");
    for (decision, waited) in answers {
        assert!(decision.is_err(), "no answer is no decision");
        assert!(waited < Duration::from_millis(500), "took {waited:?}");
    }
    assert!(store.decide("t1", per(5, 60), 1, 0).await.is_ok());
}

/// Decides `requests` (cost, reported denials) for `tenant`: one at a time, or all at once so
/// that they share calls (on this single-threaded test runtime: the first alone, the rest in
/// one batch, in order).
async fn decide_in_turn(
    store: &Arc<RedisWindows>,
    tenant: &'static str,
    limit: Limit,
    requests: &[(u32, u64)],
    together: bool,
) -> Vec<WindowDecision> {
    let mut decisions = Vec::new();
    if together {
        let tasks: Vec<_> = requests
            .iter()
            .map(|&(cost, reported)| {
                let store = store.clone();
                tokio::spawn(async move { store.decide(tenant, limit, cost, reported).await })
            })
            .collect();
        for task in tasks {
            decisions.push(task.await.unwrap().unwrap());
        }
    } else {
        for &(cost, reported) in requests {
            decisions.push(store.decide(tenant, limit, cost, reported).await.unwrap());
        }
    }
    decisions
}

/// A batch answers every request exactly as deciding them one at a time would, and leaves the
/// same counters: denials before any admission in an empty window, costs that only a member
/// of the same batch could free, reported denials, cached retry ranks, the monthly quota.
#[tokio::test]
async fn a_batch_decides_exactly_as_one_at_a_time() {
    let server = RedisServer::start();
    let clock = ManualClock::new(START_MS);
    let store =
        Arc::new(redis_store(RedisTarget::Standalone(server.url()), Some(clock.clone())).await);
    let limit = Limit {
        limit: 4,
        window: Duration::from_secs(60),
        monthly: Some(6),
    };
    let phases: [(u64, &[(u32, u64)]); 3] = [
        // An empty window: a denial before the first admission, a cost only this batch's own
        // members could make room for, reported denials, a full window.
        (
            0,
            &[
                (9, 0),
                (9, 0),
                (1, 2),
                (4, 0),
                (1, 0),
                (1, 0),
                (1, 1),
                (1, 0),
                (2, 0),
            ],
        ),
        // Ten seconds on, still full: denials that wait for the oldest members.
        (10, &[(1, 0), (1, 0), (2, 0), (1, 3)]),
        // The window empties; the month has two units left.
        (51, &[(1, 0), (1, 0), (1, 0), (2, 0), (1, 0)]),
    ];
    for (advance, requests) in phases {
        clock.advance(Duration::from_secs(advance));
        let one_at_a_time = decide_in_turn(&store, "one-by-one", limit, requests, false).await;
        server.cli(&["config", "resetstat"]);
        let together = decide_in_turn(&store, "together", limit, requests, true).await;
        assert_eq!(
            server.calls_of("evalsha"),
            2,
            "the first alone, the rest as one batch"
        );
        assert_eq!(together, one_at_a_time, "requests {requests:?}");
        assert_eq!(
            store.usage("together", limit, 0).await.unwrap(),
            store.usage("one-by-one", limit, 0).await.unwrap()
        );
    }
}

#[tokio::test]
async fn the_memory_store_forgets_tenants_once_nothing_of_theirs_counts() {
    let clock = ManualClock::new(START_MS);
    let store = MemoryWindows::new(Arc::new(clock.clone()));
    store.decide("idle", per(5, 2), 1, 0).await.unwrap();
    clock.advance(Duration::from_secs(30 * 60));
    store.decide("busy", per(5, 2), 1, 0).await.unwrap();
    assert_eq!(
        store.sweep(),
        2,
        "both still have history and a month-to-date"
    );
    // START_MS is 2023-11-14T22:13:20Z: past midnight of December 1st, the month is over too.
    clock.advance(Duration::from_millis(1_701_388_800_000 - START_MS));
    assert_eq!(store.sweep(), 0);
    let usage = store.usage("idle", per(5, 2), 0).await.unwrap();
    assert_eq!((usage.used, usage.month_to_date), (0, 0));
}
