//! Leases through real Envoy (2 workers) and the control-plane: a hot tenant's admissions are
//! spent at the edge without callouts, the limit still holds in every sliding window (two
//! Envoys, each leasing on its own, on memory and on two replicas sharing Redis), the units
//! leases hold back cost only a bounded share of the limit (a client at exactly the limit's
//! rate gets at least 98 %), and a suspension, a revoked key or a tier downgrade reaches
//! leased traffic within the lease's TTL.
//!
//! Every test keeps each request's send and answer times at the client. A request was
//! decided somewhere between the two, so a window that certainly holds more admissions than
//! the limit is one where that many requests were both sent and answered inside it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;
use tollgate_e2e::redis::RedisServer;
use tollgate_e2e::{Stack, StackOptions, Tenant};

const INGEST: &str = "/api/v1/ingest";
/// The filter's default `lease.max_ttl` and the control-plane's default lease TTL: the
/// longest leased traffic goes on after a change.
const LEASE_TTL: Duration = Duration::from_secs(1);
/// What a change may take beyond the TTL on a debug build: the callout that learns of it,
/// and answers in flight.
const SLACK: Duration = Duration::from_millis(400);

/// A limit far above what a test can send: every request is admitted.
const BIG: &str = r#"
    default_tier = "big"
    [tiers.big]
    limit = 10000000
    window_seconds = 60
"#;

/// One request, as the client saw it.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// When it was sent and answered, since the run started.
    sent: Duration,
    answered: Duration,
    status: StatusCode,
}

/// Sends `GET /api/v1/ingest` with `key` from `workers` loops, each sending its next request
/// when the last is answered, until `duration` has passed since `start`. The loops take the
/// stack's Envoys in turn.
async fn drive(
    stack: &Stack,
    key: &str,
    workers: usize,
    start: Instant,
    duration: Duration,
) -> Vec<Sent> {
    let mut loops = JoinSet::new();
    let urls = stack.urls(INGEST);
    for worker in 0..workers {
        let url = urls[worker % urls.len()].clone();
        let (client, key) = (stack.client().clone(), key.to_owned());
        loops.spawn(async move {
            let mut sent = Vec::new();
            while start.elapsed() < duration {
                let at = start.elapsed();
                let response = client.get(&url).header("x-api-key", &key).send().await;
                let status = response.expect("request through Envoy").status();
                sent.push(Sent {
                    sent: at,
                    answered: start.elapsed(),
                    status,
                });
            }
            sent
        });
    }
    let mut all = Vec::new();
    while let Some(sent) = loops.join_next().await {
        all.extend(sent.unwrap());
    }
    all.sort_by_key(|s| s.sent);
    all
}

/// The most admissions that certainly fell into one sliding window of `window`: for each
/// admitted request's send time `t`, those sent at or after `t` and answered before
/// `t + window`. Returns the count and the window's start.
fn most_in_any_window(sent: &[Sent], window: Duration) -> (usize, Duration) {
    let admitted: Vec<&Sent> = sent.iter().filter(|s| s.status == StatusCode::OK).collect();
    let mut most = (0, Duration::ZERO);
    for (i, first) in admitted.iter().enumerate() {
        let end = first.sent + window;
        let inside = admitted[i..]
            .iter()
            .take_while(|s| s.sent < end)
            .filter(|s| s.answered < end)
            .count();
        if inside > most.0 {
            most = (inside, first.sent);
        }
    }
    most
}

/// The filter's Envoy counter `tollgate.<name>`, 0 if it was never incremented.
async fn stat(stack: &Stack, name: &str) -> u64 {
    let stats = stack.envoy_stats().await;
    stats
        .get(&format!("wasmcustom.tollgate.{name}"))
        .copied()
        .unwrap_or(0)
}

fn admitted(sent: &[Sent]) -> usize {
    sent.iter().filter(|s| s.status == StatusCode::OK).count()
}

#[tokio::test]
async fn a_hot_tenants_requests_are_admitted_from_leases_with_few_callouts() {
    let stack = Stack::start(StackOptions::default().tiers(BIG)).await;
    let tenant = stack.create_tenant("big").await;
    let callouts = stack.decision_requests().await;

    let start = Instant::now();
    let mut sent = Vec::new();
    for round in 1..=20 {
        sent.extend(drive(&stack, &tenant.key, 4, start, Duration::from_secs(round)).await);
        if sent.len() >= 3_000 {
            break;
        }
    }
    let made = stack.decision_requests().await - callouts;
    let admitted = admitted(&sent) as u64;
    assert_eq!(admitted, sent.len() as u64, "nothing refused");
    assert!(admitted >= 2_000, "only {admitted} sent in 20 s");
    let per_admission = made as f64 / admitted as f64;
    eprintln!(
        "{admitted} admitted in {:?} with {made} callouts ({per_admission:.4} per admission)",
        start.elapsed()
    );
    assert!(per_admission <= 0.05, "{made} callouts for {admitted}");

    let leased = stat(&stack, "requests_allowed_leased").await;
    assert_eq!(stat(&stack, "requests_allowed").await, admitted);
    assert!(leased >= admitted - made, "{leased} leased of {admitted}");
    // A lease's first request is its callout's own: the edge spent at most the rest.
    let (leases, granted) = (
        stat(&stack, "leases_granted").await,
        stat(&stack, "lease_requests_granted").await,
    );
    assert!(leases >= 1);
    assert!(
        leased + leases <= granted,
        "{leased} spent from {leases} leases of {granted} requests"
    );
    assert_eq!(stat(&stack, "leases_lost").await, 0, "one key, one slot");
}

const LIMIT: usize = 1_000;
const WINDOW: Duration = Duration::from_secs(4);

fn hot_tier() -> String {
    format!(
        r#"
        default_tier = "hot"
        [tiers.hot]
        limit = {LIMIT}
        window_seconds = {}
    "#,
        WINDOW.as_secs()
    )
}

#[tokio::test]
async fn the_limit_holds_in_every_sliding_window_with_the_memory_store() {
    let options = StackOptions::default().tiers(&hot_tier()).envoys(2);
    the_limit_holds_and_leases_hold_back_a_bounded_share(Stack::start(options).await).await;
}

#[tokio::test]
async fn the_limit_holds_in_every_sliding_window_with_two_replicas_on_redis() {
    let redis = RedisServer::start();
    let options = StackOptions::default()
        .tiers(&hot_tier())
        .redis(redis.url())
        .replicas(2)
        .envoys(2);
    the_limit_holds_and_leases_hold_back_a_bounded_share(Stack::start(options).await).await;
}

/// A client faster than the limit for eleven seconds of four-second windows, through two
/// Envoys (2 workers each, each holding leases of its own): never more than the limit in any
/// window, at least two windows' worth in all.
async fn the_limit_holds_and_leases_hold_back_a_bounded_share(stack: Stack) {
    let tenant = stack.create_tenant("hot").await;
    for replica in 1..stack.control_planes.len() {
        stack.wait_until_known(replica, &tenant.id).await;
    }

    // Faster than the limit (250 a second; a debug build on a loaded machine still sends
    // twice that): it binds in every window.
    let run = Duration::from_secs(11);
    let sent = drive(&stack, &tenant.key, 8, Instant::now(), run).await;
    let admitted = admitted(&sent);
    let (most, at) = most_in_any_window(&sent, WINDOW);
    eprintln!(
        "{} requests, {admitted} admitted; at most {most} in one window (from {at:?}); \
         {} leased; {} lease requests returned, {} lost",
        sent.len(),
        stat(&stack, "requests_allowed_leased").await,
        stat(&stack, "lease_requests_returned").await,
        stat(&stack, "lease_requests_lost").await,
    );
    assert!(
        sent.len() > 2 * LIMIT * run.as_secs() as usize / WINDOW.as_secs() as usize,
        "the client must ask for more than the limit: {} requests",
        sent.len()
    );
    assert!(most <= LIMIT, "{most} admitted in the window from {at:?}");
    assert!(
        stat(&stack, "requests_allowed_leased").await > 0,
        "leases were used"
    );
    for edge in &stack.more_envoys {
        let stats = stack.envoy_stats_at(edge.admin_port).await;
        let leased = stats.get("wasmcustom.tollgate.requests_allowed_leased");
        assert!(
            leased.is_some_and(|n| *n > 0),
            "the second Envoy spent leases of its own too: {leased:?}"
        );
    }
    // A unit leaves the window at most a window and a lease TTL after its use (stamped at
    // the lease's deadline); unused ones are handed back. So a client that keeps asking is
    // admitted the whole limit in every stretch of a window and a TTL (and a little slack for
    // decisions in flight): two full rounds in eleven seconds of four-second windows.
    let rounds = run.as_millis() / (WINDOW + LEASE_TTL + SLACK).as_millis();
    assert!(
        admitted >= LIMIT * rounds as usize,
        "{admitted} admitted in {run:?}: fewer than {rounds} rounds of {LIMIT}"
    );
}

/// Drives the tenant's key from 4 loops until `change` has been made (after a second of
/// leased traffic) and `LEASE_TTL + SLACK` more have passed; returns every request and when
/// `change` returned.
async fn change_during_leased_traffic<F, Fut>(
    stack: &Stack,
    tenant: &Tenant,
    change: F,
) -> (Vec<Sent>, Duration)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    let run = Duration::from_secs(1) + LEASE_TTL + SLACK + Duration::from_millis(500);
    let traffic = drive(stack, &tenant.key, 4, start, run);
    let changed = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            stat(stack, "requests_allowed_leased").await > 0,
            "leased traffic before the change"
        );
        change().await;
        start.elapsed()
    };
    tokio::join!(traffic, changed)
}

/// Asserts that after `changed` no request sent later than the lease TTL (and slack) was
/// admitted, and that the later ones all got `refused`.
fn refused_within_the_lease_ttl(sent: &[Sent], changed: Duration, refused: StatusCode) {
    let last_admitted = sent
        .iter()
        .filter(|s| s.status == StatusCode::OK)
        .map(|s| s.sent)
        .max()
        .unwrap_or_default();
    eprintln!(
        "last admission sent {:?} after the change",
        last_admitted.saturating_sub(changed)
    );
    assert!(
        last_admitted <= changed + LEASE_TTL + SLACK,
        "admitted a request sent {:?} after the change",
        last_admitted - changed
    );
    let after: Vec<StatusCode> = sent
        .iter()
        .filter(|s| s.sent > changed + LEASE_TTL + SLACK)
        .map(|s| s.status)
        .collect();
    assert!(!after.is_empty(), "traffic went on after the TTL");
    assert!(after.iter().all(|s| *s == refused), "{after:?}");
}

#[tokio::test]
async fn a_suspension_reaches_leased_traffic_within_the_lease_ttl() {
    let stack = Stack::start(StackOptions::default().tiers(BIG)).await;
    let tenant = stack.create_tenant("big").await;
    let (sent, changed) = change_during_leased_traffic(&stack, &tenant, || async {
        stack
            .patch_tenant(&tenant.id, json!({"suspended": true}))
            .await;
    })
    .await;
    refused_within_the_lease_ttl(&sent, changed, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_revoked_key_is_refused_to_leased_traffic_within_the_lease_ttl() {
    let stack = Stack::start(StackOptions::default().tiers(BIG)).await;
    let tenant = stack.create_tenant("big").await;
    let (sent, changed) =
        change_during_leased_traffic(&stack, &tenant, || stack.revoke_first_key(&tenant)).await;
    refused_within_the_lease_ttl(&sent, changed, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_tier_downgrade_reaches_leased_traffic_within_the_lease_ttl() {
    let tiers = format!("{BIG}\n[tiers.small]\nlimit = 10\nwindow_seconds = 60\n");
    let stack = Stack::start(StackOptions::default().tiers(&tiers)).await;
    let tenant = stack.create_tenant("big").await;
    let (sent, changed) = change_during_leased_traffic(&stack, &tenant, || async {
        stack
            .patch_tenant(&tenant.id, json!({"tier": "small"}))
            .await;
    })
    .await;
    // Far more than 10 were admitted in the last minute: on the small tier, every request
    // is over its limit.
    refused_within_the_lease_ttl(&sent, changed, StatusCode::TOO_MANY_REQUESTS);
}

/// A client sending at exactly its tier's rate (300 per 3-second window: one request every
/// 10 ms, open loop) for three windows is admitted at least 98 % of what it sends: leases and
/// the units they hold back cost it at most 2 %.
#[tokio::test]
async fn a_client_at_exactly_the_limit_rate_gets_at_least_98_percent() {
    const PACED_LIMIT: u64 = 300;
    const PACED_WINDOW: Duration = Duration::from_secs(3);
    let tiers = format!(
        "default_tier = \"paced\"\n[tiers.paced]\nlimit = {PACED_LIMIT}\nwindow_seconds = {}\n",
        PACED_WINDOW.as_secs()
    );
    let stack = Stack::start(StackOptions::default().tiers(&tiers)).await;
    let tenant = stack.create_tenant("paced").await;

    let interval = PACED_WINDOW / PACED_LIMIT as u32;
    let mut ticks = tokio::time::interval(interval);
    // A late tick is skipped, never sent in a catch-up burst: the client is never faster than
    // the limit, whatever the machine's load.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut requests = JoinSet::new();
    let start = Instant::now();
    while start.elapsed() < 3 * PACED_WINDOW {
        ticks.tick().await;
        let request = stack
            .client()
            .get(stack.url(INGEST))
            .header("x-api-key", &tenant.key);
        requests.spawn(async move { request.send().await.expect("through Envoy").status() });
    }
    let statuses = requests.join_all().await;
    let sent = statuses.len() as u64;
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count() as u64;
    let others: Vec<&StatusCode> = statuses
        .iter()
        .filter(|s| **s != StatusCode::OK && **s != StatusCode::TOO_MANY_REQUESTS)
        .collect();
    eprintln!(
        "{sent} sent at {interval:?} intervals, {admitted} admitted ({:.1} %), {} leased",
        100.0 * admitted as f64 / sent as f64,
        stat(&stack, "requests_allowed_leased").await
    );
    assert!(others.is_empty(), "only admissions and 429s: {others:?}");
    assert!(
        sent >= 3 * PACED_LIMIT * 9 / 10,
        "the client kept (about) the limit's rate: {sent} sent"
    );
    assert!(
        admitted * 100 >= sent * 98,
        "{admitted} of {sent} admitted: under 98 %"
    );
}

#[tokio::test]
async fn a_lease_left_unused_is_handed_back_and_every_unit_is_accounted_for() {
    let stack = Stack::start(StackOptions::default().tiers(BIG)).await;
    let tenant = stack.create_tenant("big").await;
    let sent = drive(
        &stack,
        &tenant.key,
        4,
        Instant::now(),
        Duration::from_millis(1500),
    )
    .await;
    assert_eq!(admitted(&sent), sent.len());
    let mut admitted = sent.len() as u64;
    // Requests granted in leases and neither spent nor handed back: every unit the window
    // holds is an admitted request or one of these, none lost or counted twice.
    let unspent = || async {
        stat(&stack, "lease_requests_granted").await
            - stat(&stack, "leases_granted").await
            - stat(&stack, "requests_allowed_leased").await
            - stat(&stack, "lease_requests_returned").await
    };
    // The traffic may have stopped just as its last lease was used up: then one more
    // request asks for another.
    for _ in 0..5 {
        if unspent().await > 0 {
            break;
        }
        assert_eq!(stack.call(INGEST, &tenant.key).await.status(), 200);
        admitted += 1;
    }
    let left = unspent().await;
    assert!(left > 0, "no lease left anything unused");
    let usage = stack.usage(&tenant.key).await;
    assert_eq!(usage["used"].as_u64(), Some(admitted + left));

    // Once it is over, the next request's callout hands back what it left, once. (A lease
    // renewed before it ran out may have left some too: a callout hands back one lease's, and
    // the other's wait in the slot for the next claim, still counted in `left`.)
    let returned_before = stat(&stack, "lease_requests_returned").await;
    tokio::time::sleep(LEASE_TTL + Duration::from_millis(100)).await;
    assert_eq!(stack.call(INGEST, &tenant.key).await.status(), 200);
    admitted += 1;
    let handed_back = stat(&stack, "lease_requests_returned").await - returned_before;
    // What a worker held of the ended lease in a batch and never spent is given up (counted
    // lost), not handed back; it stays counted in the window like a lease never returned.
    let lost = stat(&stack, "lease_requests_lost").await;
    assert!(
        handed_back > 0 && handed_back + lost <= left,
        "{handed_back} handed back and {lost} given up of {left} left"
    );
    assert_eq!(stat(&stack, "requests_allowed").await, admitted);
    let now_unspent = unspent().await;
    let usage = stack.usage(&tenant.key).await;
    eprintln!(
        "{admitted} admitted, {handed_back} of {left} handed back, {now_unspent} left in leases; usage: \
         used {}, leased {}",
        usage["used"], usage["leased"]
    );
    assert_eq!(usage["used"].as_u64(), Some(admitted + now_unspent));
    // The control-plane counts as leased the running lease's requests; those of an ended one
    // still waiting in the slot to be handed back count as used until then.
    let waiting = left - handed_back;
    assert_eq!(usage["leased"].as_u64(), Some(now_unspent - waiting));
}
