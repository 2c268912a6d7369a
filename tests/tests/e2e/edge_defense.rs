//! Defending the edge: unknown keys and suspended tenants are answered from the filter's
//! deny cache instead of a callout per request; distinct random keys from one client address
//! are refused at the edge once the address is over its invalid-key budget; the API key never
//! reaches the backend unless the filter is told to forward it; a revoked key is refused
//! within the deny cache's `max_ttl`; and a client polling past a control-plane budget is
//! refused by Envoy itself until the `Retry-After` it was given.
//!
//! Setup: the stack of `envoy/envoy.yaml` (Envoy with 2 workers, the filter's defaults:
//! `deny_cache.max_ttl` 1 s, `invalid_keys` budget 20 per 10 s), the control-plane counting
//! callouts in `tollgate_decision_requests_total`. The tests connect from 127.0.0.1, and from
//! 127.0.0.2 where a second client address is needed (all of 127.0.0.0/8 is local on Linux).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tollgate_e2e::{Stack, StackOptions, count, header, within};

const INGEST: &str = "/api/v1/ingest";
/// The filter's default `deny_cache.max_ttl`.
const MAX_TTL: Duration = Duration::from_secs(1);
/// The filter's default `invalid_keys.budget`.
const BUDGET: u64 = 20;
/// The filter's default `budget_refusals.max_ttl`, and the control-plane's `Retry-After` for
/// a budget of a few requests a second.
const BUDGET_REFUSAL_TTL: Duration = Duration::from_secs(1);
/// The filter's default `held_replies.hold`.
const DEFAULT_HOLD: Duration = Duration::from_millis(250);
/// The filter's clock counts whole milliseconds: a hold may end up to one early, as a client
/// measures it.
const CLOCK_SLACK: Duration = Duration::from_millis(10);
/// What an answer may take beyond `MAX_TTL` on a debug build: the refresh callout itself,
/// and the test's own polling.
const SLACK: Duration = Duration::from_millis(400);

/// A well-formed key no tenant has: `tg_` and 48 hex digits, like the real ones.
fn random_key() -> String {
    use std::hash::BuildHasher;
    // Each `RandomState` is seeded afresh.
    let state = std::collections::hash_map::RandomState::new();
    let hex: String = (0..3u64)
        .map(|i| format!("{:016x}", state.hash_one(i)))
        .collect();
    format!("tg_{hex}")
}

/// An HTTP client whose connections come from `address`.
fn client_from(address: &str) -> reqwest::Client {
    let address: IpAddr = address.parse().unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .local_address(address)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The filter's Envoy counter `tollgate.<name>`, 0 if it was never incremented.
async fn stat(stack: &Stack, name: &str) -> u64 {
    let stats = stack.envoy_stats().await;
    stats
        .get(&format!("wasmcustom.tollgate.{name}"))
        .copied()
        .unwrap_or_else(|| panic!("{name} in {stats:?}"))
}

/// Everything a client sees of a local reply: status, the headers that matter, and the body.
async fn reply_of(response: reqwest::Response) -> (StatusCode, Vec<(String, String)>, String) {
    let status = response.status();
    let headers = [
        "www-authenticate",
        "content-type",
        "cache-control",
        "retry-after",
    ]
    .into_iter()
    .filter_map(|name| {
        let value = response.headers().get(name)?.to_str().ok()?;
        Some((name.to_owned(), value.to_owned()))
    })
    .collect();
    (status, headers, response.text().await.unwrap())
}

fn code(body: &str) -> String {
    let problem: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    problem["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn one_unknown_key_repeated_costs_one_callout_per_max_ttl_with_the_same_401() {
    let stack = Stack::start(StackOptions::default()).await;
    let key = random_key();
    let callouts = stack.decision_requests().await;

    let first = reply_of(stack.call(INGEST, &key).await).await;
    assert_eq!(first.0, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&first.2), "invalid_api_key");
    assert_eq!(stack.decision_requests().await, callouts + 1, "asked once");

    let started = Instant::now();
    let statuses = stack.burst(INGEST, &key, 199, 8).await;
    let elapsed = started.elapsed();
    assert_eq!(count(&statuses, StatusCode::UNAUTHORIZED), 199);
    let made = stack.decision_requests().await - callouts;
    // The first, and at most one refresh per max_ttl begun since (one Envoy).
    let allowed = 1 + elapsed.as_millis().div_ceil(MAX_TTL.as_millis()) as u64;
    eprintln!("200 requests of one unknown key in {elapsed:?}: {made} callouts");
    assert!(made <= allowed, "{made} callouts in {elapsed:?}");
    assert!(
        elapsed >= MAX_TTL || made <= 2,
        "{made} callouts within {elapsed:?}"
    );

    let cached = reply_of(stack.call(INGEST, &key).await).await;
    assert_eq!(
        cached, first,
        "the cache's 401 is the control-plane's, to the byte"
    );
    assert_eq!(
        cached.1,
        vec![
            (
                "www-authenticate".to_owned(),
                "Bearer realm=\"tollgate\", error=\"invalid_token\"".to_owned()
            ),
            (
                "content-type".to_owned(),
                "application/problem+json".to_owned()
            ),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ]
    );

    let made = stack.decision_requests().await - callouts;
    assert_eq!(stat(&stack, "requests_unauthorized").await, 201);
    assert_eq!(
        stat(&stack, "requests_unauthorized_cached").await,
        201 - made,
        "every 401 without a callout came from the cache"
    );
    assert_eq!(stat(&stack, "requests_invalid_keys_throttled").await, 0);
}

/// Sends one request per key from `client`, `parallel` at a time; returns the status and body
/// of each, and the `Retry-After` of the 429s.
async fn attack(
    stack: &Stack,
    client: &reqwest::Client,
    keys: Vec<String>,
    parallel: usize,
) -> Vec<(StatusCode, String, Option<u64>)> {
    let mut answers = Vec::with_capacity(keys.len());
    let mut in_flight = JoinSet::new();
    for key in keys {
        if in_flight.len() == parallel {
            answers.push(in_flight.join_next().await.unwrap().unwrap());
        }
        let request = client.get(stack.url(INGEST)).header("x-api-key", key);
        in_flight.spawn(async move {
            let response = request.send().await.expect("request");
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            (
                response.status(),
                response.text().await.unwrap(),
                retry_after,
            )
        });
    }
    while let Some(answer) = in_flight.join_next().await {
        answers.push(answer.unwrap());
    }
    answers
}

#[tokio::test]
async fn distinct_random_keys_from_one_address_are_refused_at_the_edge_after_the_budget() {
    // Leases off: the legitimate tenant's requests must each cost a callout (counted below),
    // and a lease would admit it without one even from the refused address (leases.rs). A
    // short hold, so the flood's 75-odd held refusals leave most of the 10 s window for the
    // checks after it.
    let options = StackOptions::default()
        .filter("lease", json!({"enabled": false}))
        .filter("held_replies", json!({"hold": "50ms"}));
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("pro").await;
    let elsewhere = client_from("127.0.0.2");
    let legit = |client: reqwest::Client, key: String| {
        let url = stack.url(INGEST);
        async move {
            let mut statuses = Vec::new();
            for _ in 0..40 {
                let response = client.get(&url).header("x-api-key", &key).send().await;
                statuses.push(response.expect("request").status());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        }
    };

    let callouts = stack.decision_requests().await;
    let keys: Vec<String> = (0..100).map(|_| random_key()).collect();
    let attacker = stack.client().clone(); // from 127.0.0.1
    let (answers, alongside) = tokio::join!(
        attack(&stack, &attacker, keys, 4),
        legit(elsewhere.clone(), tenant.key.clone())
    );
    let made = stack.decision_requests().await - callouts - 40;

    let unauthorized = answers.iter().filter(|a| a.0 == 401).count() as u64;
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    eprintln!(
        "100 random keys, 4 at a time: {made} callouts, {unauthorized} × 401, {} × 429",
        refused.len()
    );
    assert_eq!(
        unauthorized + refused.len() as u64,
        100,
        "only 401 and 429: {answers:?}"
    );
    assert_eq!(unauthorized, made, "each callout was an unknown key");
    // The one that went over the budget, the three in flight beside it, and one more when
    // both workers wrote the address's first count at once (a slot never written has no
    // compare-and-swap token, so one of the two writes is lost).
    assert!(made <= BUDGET + 1 + 3 + 1, "{made} callouts");
    assert!(made > BUDGET, "the budget is spent first: {made}");
    for (_, body, retry_after) in &refused {
        assert_eq!(code(body), "too_many_invalid_keys", "{body}");
        assert!(
            retry_after.is_some_and(|s| (1..=10).contains(&s)),
            "Retry-After {retry_after:?}: until the 10 s window ends"
        );
    }
    assert_eq!(
        count(&alongside, StatusCode::OK),
        40,
        "a tenant on another address is untouched: {alongside:?}"
    );

    // After the flood: the other address still goes through; this one is refused whatever
    // the key, the legitimate tenant's too (clients behind one address share its budget);
    // and a forwarded-for header does not make it another address.
    let before = stack.decision_requests().await;
    let response = elsewhere
        .get(stack.url(INGEST))
        .header("x-api-key", &tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let same_address = stack.call(INGEST, &tenant.key).await;
    assert_eq!(same_address.status(), 429);
    assert!(
        started.elapsed() >= Duration::from_millis(50) - CLOCK_SLACK,
        "an address that keeps asking is answered after the hold: {:?}",
        started.elapsed()
    );
    assert_eq!(
        code(&same_address.text().await.unwrap()),
        "too_many_invalid_keys"
    );
    let spoofed = stack
        .client()
        .get(stack.url(INGEST))
        .header("x-api-key", random_key())
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(
        spoofed.status(),
        429,
        "the address is the connection's (use_remote_address), not the client's claim"
    );
    assert_eq!(
        stack.decision_requests().await,
        before + 1,
        "only the request from 127.0.0.2 was asked about"
    );

    assert_eq!(
        stat(&stack, "requests_invalid_keys_throttled").await,
        refused.len() as u64 + 2
    );
    assert_eq!(stat(&stack, "invalid_key_budgets_exceeded").await, 1);
}

#[tokio::test]
async fn an_address_over_its_budget_may_try_again_once_its_window_ends() {
    let options = StackOptions::default().filter(
        "invalid_keys",
        json!({"budget": 2, "window": "1s", "slots": 16}),
    );
    let stack = Stack::start(options).await;
    let started = Instant::now();
    for i in 0..3 {
        let response = stack.call(INGEST, &random_key()).await;
        assert_eq!(response.status(), 401, "unknown key {i}");
    }
    let refused = stack.call(INGEST, &random_key()).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), "1");

    let callouts = stack.decision_requests().await;
    let took = within(Duration::from_secs(2), "the window ends", || async {
        stack.call(INGEST, &random_key()).await.status() == 401
    })
    .await;
    let since_first = started.elapsed();
    eprintln!("refused for {since_first:?} after the first unknown key");
    assert!(
        since_first >= Duration::from_secs(1),
        "not before the window ended"
    );
    assert!(took < Duration::from_secs(2));
    assert_eq!(
        stack.decision_requests().await,
        callouts + 1,
        "refused without a callout until then"
    );
}

#[tokio::test]
async fn a_suspended_tenants_403_is_served_from_the_cache_until_max_ttl_after_resuming() {
    let stack = Stack::start(StackOptions::default()).await;
    let tenant = stack.create_tenant("standard").await;
    assert_eq!(stack.call(INGEST, &tenant.key).await.status(), 200);
    stack
        .patch_tenant(&tenant.id, json!({"suspended": true}))
        .await;

    let callouts = stack.decision_requests().await;
    let cached_at = Instant::now();
    let first = reply_of(stack.call(INGEST, &tenant.key).await).await;
    assert_eq!(first.0, StatusCode::FORBIDDEN);
    assert_eq!(code(&first.2), "tenant_suspended");
    let statuses = stack.burst(INGEST, &tenant.key, 50, 5).await;
    assert_eq!(count(&statuses, StatusCode::FORBIDDEN), 50);
    let cached = reply_of(stack.call(INGEST, &tenant.key).await).await;
    assert_eq!(cached, first, "the cache's 403 is the control-plane's");
    let made = stack.decision_requests().await - callouts;
    let allowed = 1 + (cached_at.elapsed().as_millis() / MAX_TTL.as_millis()) as u64;
    assert!(made <= allowed, "{made} callouts for 52 requests");
    assert_eq!(stat(&stack, "requests_forbidden").await, 52);
    assert_eq!(stat(&stack, "requests_forbidden_cached").await, 52 - made);

    stack
        .patch_tenant(&tenant.id, json!({"suspended": false}))
        .await;
    let took = until_status(&stack, &tenant.key, 200, 403).await;
    eprintln!("a resumed tenant was admitted at the edge {took:?} after resuming");
    assert!(took <= MAX_TTL + SLACK, "{took:?}");
}

/// Calls with `key` every 10 ms (answers from the edge cost nothing) until the answer is
/// `wanted`, each one before it being `meanwhile`; returns how long that took. Fails past
/// `MAX_TTL` and `SLACK`.
async fn until_status(stack: &Stack, key: &str, wanted: u16, meanwhile: u16) -> Duration {
    let started = Instant::now();
    loop {
        let status = stack.call(INGEST, key).await.status();
        let took = started.elapsed();
        if status == wanted {
            return took;
        }
        assert_eq!(status, meanwhile, "after {took:?}");
        assert!(took <= MAX_TTL + SLACK, "still {status} after {took:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_when_admitted_and_within_max_ttl_when_denied() {
    let tiers = r#"
        default_tier = "tiny"
        [tiers.tiny]
        limit = 2
        window_seconds = 60
    "#;
    let stack = Stack::start(StackOptions::default().tiers(tiers)).await;
    // Admitted keys are never cached: the next request is refused.
    let admitted = stack.create_tenant("tiny").await;
    assert_eq!(stack.call(INGEST, &admitted.key).await.status(), 200);
    stack.revoke_first_key(&admitted).await;
    let response = stack.call(INGEST, &admitted.key).await;
    assert_eq!(response.status(), 401, "at once");
    assert_eq!(code(&response.text().await.unwrap()), "invalid_api_key");

    // A denied key's 429 is cached: refused with 401 within max_ttl of the revocation.
    let denied = stack.create_tenant("tiny").await;
    let statuses = stack.burst(INGEST, &denied.key, 3, 1).await;
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    stack.revoke_first_key(&denied).await;
    let took = until_status(&stack, &denied.key, 401, 429).await;
    eprintln!("a revoked key under a cached denial was refused with 401 after {took:?}");
    assert!(took <= MAX_TTL + SLACK, "{took:?}");
}

/// The port of the stack's demo upstream, as Envoy's admin lists its cluster.
async fn demo_upstream_port(stack: &Stack) -> u16 {
    let url = format!("http://127.0.0.1:{}/clusters", stack.envoy_admin_port);
    let clusters = stack
        .client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    clusters
        .lines()
        .find_map(|line| {
            let address = line.strip_prefix("demo_upstream::")?.split("::").next()?;
            address.rsplit(':').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("demo_upstream in\n{clusters}"))
}

/// Replaces the stack's demo upstream (which echoes only the identity headers) with one that
/// answers every request with all the headers it received: `{"name": ["value", ...]}`.
async fn record_upstream_headers(stack: &mut Stack) -> tokio::task::JoinHandle<()> {
    let port = demo_upstream_port(stack).await;
    stack.upstream.kill();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the demo upstream's port");
    let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
        let mut headers: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in request.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .or_default()
                .push(value);
        }
        axum::Json(headers)
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// The headers the upstream received for this request.
async fn seen_upstream(request: reqwest::RequestBuilder) -> HashMap<String, Vec<String>> {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "went upstream");
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_backend_never_sees_the_api_key() {
    let tiers = r#"
        default_tier = "standard"
        [tiers.standard]
        limit = 60
        window_seconds = 60
        [tiers.trial]
        limit = 1
        window_seconds = 60
        shadow = true
    "#;
    let mut stack = Stack::start(StackOptions::default().tiers(tiers)).await;
    let upstream = record_upstream_headers(&mut stack).await;
    let tenant = stack.create_tenant("standard").await;
    let get = || stack.client().get(stack.url(INGEST));

    let seen = seen_upstream(get().header("x-api-key", &tenant.key)).await;
    assert_eq!(seen.get("x-api-key"), None, "{seen:?}");
    assert_eq!(seen["x-tenant-id"], [tenant.id.as_str()], "admitted");

    let seen = seen_upstream(get().bearer_auth(&tenant.key)).await;
    assert_eq!(
        seen.get("authorization"),
        None,
        "the key came from it: {seen:?}"
    );

    let seen = seen_upstream(
        get()
            .header("x-api-key", &tenant.key)
            .header("authorization", "Basic dXNlcjpwYXNz"),
    )
    .await;
    assert_eq!(seen.get("x-api-key"), None);
    assert_eq!(
        seen["authorization"],
        ["Basic dXNlcjpwYXNz"],
        "not the key's header: the backend's business"
    );

    let trial = stack.create_tenant("trial").await;
    assert_eq!(stack.call(INGEST, &trial.key).await.status(), 200);
    let response = get().header("x-api-key", &trial.key).send().await.unwrap();
    assert_eq!(header(&response, "x-tollgate-would-limit"), "trial");
    let seen: HashMap<String, Vec<String>> = response.json().await.unwrap();
    assert_eq!(seen.get("x-api-key"), None, "shadow-denied: {seen:?}");

    // Off the limited routes the key stays: the control-plane's usage endpoint reads it.
    let usage = stack.usage(&tenant.key).await;
    assert_eq!(usage["tenant_id"], tenant.id.as_str());
    upstream.abort();
}

#[tokio::test]
async fn a_request_let_through_unchecked_goes_without_its_key_too() {
    let mut stack =
        Stack::start(StackOptions::default().filter("failure_mode", json!("open"))).await;
    let upstream = record_upstream_headers(&mut stack).await;
    stack.control_planes[0].process.kill();
    let seen = seen_upstream(
        stack
            .client()
            .get(stack.url(INGEST))
            .header("x-api-key", random_key()),
    )
    .await;
    assert_eq!(seen["x-tollgate-unchecked"], ["unavailable"]);
    assert_eq!(seen.get("x-api-key"), None, "{seen:?}");
    upstream.abort();
}

#[tokio::test]
async fn the_key_goes_upstream_when_the_filter_is_told_to_forward_it() {
    let options = StackOptions::default().filter(
        "api_key",
        json!({"header": "x-api-key", "bearer": true, "forward": true}),
    );
    let mut stack = Stack::start(options).await;
    let upstream = record_upstream_headers(&mut stack).await;
    let tenant = stack.create_tenant("standard").await;
    let get = || stack.client().get(stack.url(INGEST));
    let seen = seen_upstream(get().header("x-api-key", &tenant.key)).await;
    assert_eq!(seen["x-api-key"], [tenant.key.as_str()]);
    let seen = seen_upstream(get().bearer_auth(&tenant.key)).await;
    assert_eq!(seen["authorization"], [format!("Bearer {}", tenant.key)]);
    upstream.abort();
}

/// The control-plane's refusals for `budget` so far.
async fn refused_upstream(stack: &Stack, budget: &str) -> u64 {
    let sample = format!("tollgate_public_refusals_total{{budget=\"{budget}\"}}");
    stack.metric(0, &sample).await.unwrap_or(0)
}

#[tokio::test]
async fn a_budget_refusal_is_repeated_at_the_edge_until_retry_after() {
    // Without the hold, which the next test covers: 40 polls would take ten seconds.
    let options = StackOptions::default()
        .control_plane_env("TOLLGATE_USAGE_BUDGET", "2")
        .filter("held_replies", json!({"hold": "0s"}));
    let stack = Stack::start(options).await;
    let flooder = stack.create_tenant("pro").await;
    let other = stack.create_tenant("pro").await;

    // A budget of 2 a second, bursts of 4, polled as fast as one client can.
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(stack.call("/api/v1/usage", &flooder.key).await.status());
    }
    let seconds = started.elapsed().as_secs_f64().ceil() as u64;
    let refused = count(&statuses, StatusCode::TOO_MANY_REQUESTS) as u64;
    assert_eq!(
        count(&statuses, StatusCode::OK) as u64 + refused,
        40,
        "{statuses:?}"
    );
    let (at_edge, upstream) = (
        stat(&stack, "requests_budget_refused_cached").await,
        refused_upstream(&stack, "usage").await,
    );
    assert_eq!(
        at_edge + upstream,
        refused,
        "every 429 from one or the other"
    );
    assert!(
        upstream <= seconds + 1,
        "{upstream} refusals reached the control-plane in {seconds} s: one per Retry-After"
    );

    // The edge's answer is the control-plane's.
    let over = stack.call("/api/v1/usage", &flooder.key).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        stat(&stack, "requests_budget_refused_cached").await,
        at_edge + 1
    );
    assert_eq!(header(&over, "ratelimit-policy"), "\"usage\";q=2;w=1");
    assert_eq!(header(&over, "ratelimit"), "\"usage\";r=0;t=1");
    assert_eq!(header(&over, "retry-after"), "1");
    assert_eq!(header(&over, "content-type"), "application/problem+json");
    let problem: Value = over.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");

    // Only who was refused, and (without a hold) only without a body: another key from this
    // address, this key from another address, and this key with a body, still reach the
    // control-plane.
    let at_edge = stat(&stack, "requests_budget_refused_cached").await;
    assert_eq!(
        stack.call("/api/v1/usage", &other.key).await.status(),
        StatusCode::OK
    );
    let elsewhere = poll_usage(&client_from("127.0.0.2"), &stack, &flooder.key)
        .send()
        .await
        .unwrap();
    assert!(
        [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS].contains(&elsewhere.status()),
        "{elsewhere:?}"
    );
    let with_body = stack
        .client()
        .post(stack.url("/api/v1/usage"))
        .header("x-api-key", &flooder.key)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_ne!(with_body.status(), StatusCode::OK, "usage takes GET");
    assert_eq!(
        stat(&stack, "requests_budget_refused_cached").await,
        at_edge,
        "none was answered at the edge"
    );

    // Once Retry-After has passed, the flooder's polls reach the control-plane again, whose
    // budget has refilled meanwhile.
    tokio::time::sleep(BUDGET_REFUSAL_TTL + SLACK).await;
    assert_eq!(
        stack.call("/api/v1/usage", &flooder.key).await.status(),
        StatusCode::OK
    );
}

/// A repeated refusal is held `hold` before it is sent, however fast the client asks again.
const HOLD: Duration = Duration::from_millis(800);

/// A usage poll with `key` through `client` (a client of its own: its own connections, from
/// its own address).
fn poll_usage(client: &reqwest::Client, stack: &Stack, key: &str) -> reqwest::RequestBuilder {
    client
        .get(stack.url("/api/v1/usage"))
        .header("x-api-key", key)
}

/// Polls usage with `key` until the control-plane refuses it (a budget of 1 a second, bursts
/// of 2): from then on, for a second, the edge repeats the refusal.
async fn refuse_usage(stack: &Stack, key: &str) {
    for _ in 0..4 {
        if stack.call("/api/v1/usage", key).await.status() == StatusCode::TOO_MANY_REQUESTS {
            return;
        }
    }
    panic!("the usage budget never refused");
}

#[tokio::test]
async fn a_repeated_refusal_is_held_without_holding_up_anyone_else() {
    // One held reply per worker at most (two workers), so the bound is seen with a few.
    let options = StackOptions::default()
        .control_plane_env("TOLLGATE_USAGE_BUDGET", "1")
        .filter("held_replies", json!({"hold": "800ms", "max_held": 1}));
    let stack = Stack::start(options).await;
    let flooder = stack.create_tenant("pro").await;
    let other = stack.create_tenant("pro").await;

    refuse_usage(&stack, &flooder.key).await;

    // Four polls at once on their own connections: each worker holds one and answers the
    // rest at once; every one is a 429.
    let at_edge = stat(&stack, "requests_budget_refused_cached").await;
    let (held_before, not_held_before) = (
        stat(&stack, "replies_held").await,
        stat(&stack, "replies_not_held").await,
    );
    let mut polls = JoinSet::new();
    for _ in 0..4 {
        let request = poll_usage(&client_from("127.0.0.1"), &stack, &flooder.key);
        polls.spawn(async move {
            let started = Instant::now();
            let response = request.send().await.unwrap();
            (response.status(), started.elapsed())
        });
    }
    // Meanwhile another tenant is answered by the control-plane, held up by no one.
    let started = Instant::now();
    let meanwhile = stack.call("/api/v1/usage", &other.key).await;
    assert_eq!(meanwhile.status(), StatusCode::OK);
    let meanwhile = started.elapsed();
    let polls = polls.join_all().await;
    assert!(
        polls
            .iter()
            .all(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS),
        "{polls:?}"
    );
    let held = polls
        .iter()
        .filter(|(_, took)| *took >= HOLD - CLOCK_SLACK)
        .count();
    assert!((1..=2).contains(&held), "one held per worker: {polls:?}");
    assert_eq!(
        (
            stat(&stack, "replies_held").await - held_before,
            stat(&stack, "replies_not_held").await - not_held_before
        ),
        (held as u64, 4 - held as u64)
    );
    assert!(
        meanwhile < HOLD,
        "another tenant waited {meanwhile:?} behind the held ones"
    );
    assert_eq!(
        stat(&stack, "requests_budget_refused_cached").await,
        at_edge + 4,
        "all four refused by Envoy"
    );

    // A client that gives up while held frees its place at once: the next poll is held (on
    // the same worker, whose one place it took, as on the other), and everyone is served as
    // before. (First a fresh refusal: the last has run out, and so have the held replies.)
    tokio::time::sleep(BUDGET_REFUSAL_TTL + SLACK).await;
    refuse_usage(&stack, &flooder.key).await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let gave_up = poll_usage(&impatient, &stack, &flooder.key).send().await;
    assert!(gave_up.is_err_and(|error| error.is_timeout()), "held");
    let started = Instant::now();
    let next = poll_usage(&client_from("127.0.0.1"), &stack, &flooder.key)
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        started.elapsed() >= HOLD - CLOCK_SLACK,
        "held: {:?}",
        started.elapsed()
    );
    assert_eq!(
        stack.call("/api/v1/usage", &other.key).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_refused_upload_is_held_at_the_edge_and_never_read_upstream() {
    let options = StackOptions::default().control_plane_env("TOLLGATE_BILLING_BUDGET", "1");
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    let checkout = |body: &'static str| {
        stack
            .client()
            .post(stack.url("/api/v1/billing/checkout"))
            .header("x-api-key", &tenant.key)
            .header("content-type", "application/json")
            .body(body)
    };
    // Past the budget (1 a second, bursts of 5), until the control-plane refuses.
    let mut refused = false;
    for _ in 0..8 {
        if checkout("{}").send().await.unwrap().status() == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
    }
    assert!(refused, "the budget refused");
    let (at_edge, upstream) = (
        stat(&stack, "requests_budget_refused_cached").await,
        refused_upstream(&stack, "billing").await,
    );

    // An upload announcing 1 MiB, 64 KiB sent, then stalled: the 429 comes from Envoy after
    // the hold, without the body ever reaching the control-plane.
    let mut upload = tokio::net::TcpStream::connect(("127.0.0.1", stack.envoy_port))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/billing/checkout HTTP/1.1\r\nhost: tollgate\r\nx-api-key: {}\r\n\
         content-type: application/json\r\ncontent-length: 1048576\r\n\r\n",
        tenant.key
    );
    let started = Instant::now();
    tokio::io::AsyncWriteExt::write_all(&mut upload, head.as_bytes())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut upload, &[b' '; 64 * 1024])
        .await
        .unwrap();
    let (status, problem) =
        super::envoy_hardening::read_problem(&mut upload, Duration::from_secs(5)).await;
    assert_eq!(status, 429, "{problem}");
    assert_eq!(problem["code"], "rate_limited");
    assert!(
        started.elapsed() >= DEFAULT_HOLD - CLOCK_SLACK,
        "held: {:?}",
        started.elapsed()
    );
    assert_eq!(
        stat(&stack, "requests_budget_refused_cached").await,
        at_edge + 1
    );
    assert_eq!(
        refused_upstream(&stack, "billing").await,
        upstream,
        "the control-plane saw nothing of it"
    );
}
