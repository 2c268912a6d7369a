//! One conformance suite for every window store. Each behaviour is written once, generic over
//! the store, and stamped out per backend by `conformance!`; time is a `ManualClock`, so
//! window expiry is tested without sleeping.

use std::sync::Arc;
use std::time::Duration;

use tollgate_control_plane::window::{Limit, ManualClock, MemoryWindows, WindowStore};

const START_MS: u64 = 1_700_000_000_000;

fn per(limit: u32, window_secs: u64) -> Limit {
    Limit {
        limit,
        window: Duration::from_secs(window_secs),
    }
}

async fn admits_up_to_the_limit_then_denies(store: impl WindowStore, _clock: ManualClock) {
    let limit = per(5, 60);
    for i in 0..5 {
        let decision = store.decide("t1", limit, 1).await.unwrap();
        assert!(decision.admitted, "request {i} should be admitted");
        assert_eq!(decision.remaining, 4 - i, "remaining after request {i}");
    }
    let denied = store.decide("t1", limit, 1).await.unwrap();
    assert!(!denied.admitted, "the 6th request must be denied");
    assert_eq!(denied.remaining, 0);
}

async fn tenants_do_not_share_windows(store: impl WindowStore, _clock: ManualClock) {
    let limit = per(1, 60);
    assert!(store.decide("a", limit, 1).await.unwrap().admitted);
    assert!(store.decide("b", limit, 1).await.unwrap().admitted);
    assert!(!store.decide("a", limit, 1).await.unwrap().admitted);
}

async fn a_denial_says_when_the_oldest_request_leaves(store: impl WindowStore, clock: ManualClock) {
    let limit = per(2, 60);
    store.decide("t1", limit, 1).await.unwrap();
    clock.advance(Duration::from_millis(10_500));
    store.decide("t1", limit, 1).await.unwrap();
    clock.advance(Duration::from_millis(20_000));
    let denied = store.decide("t1", limit, 1).await.unwrap();
    assert!(!denied.admitted);
    // The first request was 30.5 s ago; it leaves the 60 s window in 29.5 s.
    assert_eq!(denied.retry_after_ms, 29_500);
    assert_eq!(denied.reset_ms, 29_500);
}

async fn the_window_slides_instead_of_resetting(store: impl WindowStore, clock: ManualClock) {
    let limit = per(2, 2);
    assert!(store.decide("t1", limit, 1).await.unwrap().admitted);
    clock.advance(Duration::from_millis(1_000));
    assert!(store.decide("t1", limit, 1).await.unwrap().admitted);
    assert!(!store.decide("t1", limit, 1).await.unwrap().admitted);

    // One millisecond before the first request ages out: still full.
    clock.advance(Duration::from_millis(999));
    assert!(
        !store.decide("t1", limit, 1).await.unwrap().admitted,
        "at 1.999 s"
    );
    // It ages out exactly 2 s after it was admitted; the second one is still in.
    clock.advance(Duration::from_millis(1));
    assert!(
        store.decide("t1", limit, 1).await.unwrap().admitted,
        "at 2.000 s"
    );
    assert!(
        !store.decide("t1", limit, 1).await.unwrap().admitted,
        "one slot only"
    );
}

async fn a_costly_request_is_all_or_nothing(store: impl WindowStore, clock: ManualClock) {
    let limit = per(10, 60);
    assert!(store.decide("t1", limit, 4).await.unwrap().admitted);
    clock.advance(Duration::from_secs(1));
    assert!(store.decide("t1", limit, 4).await.unwrap().admitted);
    let denied = store.decide("t1", limit, 5).await.unwrap();
    assert!(!denied.admitted, "8 used + 5 > 10");
    assert_eq!(denied.remaining, 2, "a denied request takes nothing");
    // Freeing 3 units needs the first request (4 units) to age out: 59 s from now.
    assert_eq!(denied.retry_after_ms, 59_000);
    let fits = store.decide("t1", limit, 2).await.unwrap();
    assert!(fits.admitted, "2 units still fit");
    assert_eq!(fits.remaining, 0);
}

async fn a_request_costing_more_than_the_limit_is_denied(
    store: impl WindowStore,
    _clock: ManualClock,
) {
    let denied = store.decide("t1", per(3, 60), 4).await.unwrap();
    assert!(!denied.admitted);
    assert_eq!(denied.retry_after_ms, 60_000);
}

async fn denials_are_counted_but_take_no_room(store: impl WindowStore, clock: ManualClock) {
    let limit = per(2, 10);
    store.decide("t1", limit, 1).await.unwrap();
    store.decide("t1", limit, 1).await.unwrap();
    for _ in 0..7 {
        assert!(!store.decide("t1", limit, 1).await.unwrap().admitted);
    }
    let usage = store.usage("t1", limit).await.unwrap();
    assert_eq!((usage.used, usage.denied), (2, 7));

    // Once the admitted requests age out the tenant is admitted again at once: the denials
    // did not extend its window.
    clock.advance(Duration::from_secs(10));
    assert!(store.decide("t1", limit, 1).await.unwrap().admitted);
    let usage = store.usage("t1", limit).await.unwrap();
    assert_eq!(
        (usage.used, usage.denied),
        (1, 0),
        "old denials age out too"
    );
}

async fn usage_of_an_unknown_tenant_is_zero(store: impl WindowStore, _clock: ManualClock) {
    let usage = store.usage("nobody", per(60, 60)).await.unwrap();
    assert_eq!((usage.used, usage.denied, usage.reset_ms), (0, 0, 0));
}

async fn concurrent_decisions_never_over_admit(
    store: impl WindowStore + 'static,
    _clock: ManualClock,
) {
    let store = Arc::new(store);
    let limit = per(60, 60);
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.decide("t1", limit, 1).await.unwrap().admitted })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap());
    }
    assert_eq!(admitted, 60);
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            async fn store() -> (impl WindowStore + 'static, ManualClock) {
                let clock = ManualClock::new(START_MS);
                ($make(clock.clone()).await, clock)
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
                concurrent_decisions_never_over_admit,
            );
        }
    };
    (@tests $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, clock) = store().await;
                super::$name(store, clock).await;
            }
        )*
    };
}

conformance!(memory, |clock: ManualClock| async move {
    MemoryWindows::new(Arc::new(clock))
});

#[tokio::test]
async fn the_memory_store_forgets_idle_tenants() {
    let clock = ManualClock::new(START_MS);
    let store = MemoryWindows::new(Arc::new(clock.clone()));
    store.decide("idle", per(5, 2), 1).await.unwrap();
    clock.advance(Duration::from_secs(1));
    store.decide("busy", per(5, 2), 1).await.unwrap();
    assert_eq!(store.sweep(), 2, "both windows still hold a request");
    clock.advance(Duration::from_millis(1_500));
    assert_eq!(store.sweep(), 1, "the idle tenant's window is dropped");
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.sweep(), 0);
}
