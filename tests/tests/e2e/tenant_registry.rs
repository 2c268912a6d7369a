//! The tenant registry end to end: the embedded store loses no acknowledged write when the
//! control-plane is killed mid-write, and imports the state file of earlier versions; with
//! Redis, replicas converge within a second after a burst of changes (also one that was cut
//! off during it), and a replica answers a key it never saw at once.
//!
//! Setup: a real stack (Envoy, control-plane(s), demo upstream) per test, and a Redis of its
//! own for the Redis tests. Changes go through the admin API of replica 0; what replica 1
//! knows is read through its decision endpoint, which is what the filter calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tollgate_e2e::redis::RedisServer;
use tollgate_e2e::stack::{ADMIN_TOKEN, KEY_SECRET};
use tollgate_e2e::{Stack, StackOptions, Tenant, within};

/// What one writer saw acknowledged before the crash.
#[derive(Default)]
struct Acked {
    /// Tenant id → (key, whether its move to pro was acknowledged).
    tenants: HashMap<String, (String, bool)>,
    /// Creations sent whose answer never came (the crash): each may or may not have landed.
    unanswered: Vec<String>,
}

/// Keeps creating tenants and moving each to pro through replica 0's admin API until `stop`,
/// recording what was acknowledged.
async fn write_until_stopped(
    admin: String,
    writer: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let name = format!("crash-{writer}-{n}");
        let created = client
            .post(format!("{admin}/admin/v1/tenants"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": name, "tier": "standard"}))
            .send()
            .await;
        let body: Value = match created {
            Ok(response) if response.status() == 201 => match response.json().await {
                Ok(body) => body,
                Err(_) => {
                    acked.lock().unwrap().unanswered.push(name);
                    return;
                }
            },
            // Refused connections once the process is gone: nothing was sent.
            Ok(_) | Err(_) => {
                acked.lock().unwrap().unanswered.push(name);
                return;
            }
        };
        let id = body["id"].as_str().unwrap().to_owned();
        let key = body["api_key"].as_str().unwrap().to_owned();
        acked
            .lock()
            .unwrap()
            .tenants
            .insert(id.clone(), (key, false));
        let moved = client
            .patch(format!("{admin}/admin/v1/tenants/{id}"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"tier": "pro"}))
            .send()
            .await;
        if moved.is_ok_and(|r| r.status() == 200) {
            acked.lock().unwrap().tenants.get_mut(&id).unwrap().1 = true;
        } else {
            return;
        }
    }
}

/// kill -9 in the middle of writes, three times: after each restart every acknowledged
/// creation is there with its key working, every acknowledged move to pro is there, and a
/// write that was in flight is all there (record and key) or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_when_the_control_plane_is_killed_mid_write() {
    let mut stack = Stack::start(StackOptions::default().state_file()).await;
    let admin = stack.internal_url("");
    let mut all: HashMap<String, (String, bool)> = HashMap::new();
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Acked::default()));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                tokio::spawn(write_until_stopped(
                    admin.clone(),
                    format!("r{round}w{writer}"),
                    stop.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(400 + 150 * round)).await;
        stack.kill_control_plane(0);
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await.unwrap();
        }
        stack.start_control_plane(0).await;

        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(
            acked.tenants.len() >= 10,
            "round {round}: only {} writes before the kill",
            acked.tenants.len()
        );
        eprintln!(
            "round {round}: {} creations acknowledged ({} moves to pro) before kill -9, {} in flight",
            acked.tenants.len(),
            acked.tenants.values().filter(|(_, pro)| *pro).count(),
            acked.unanswered.len()
        );
        all.extend(acked.tenants);
        for (id, (key, pro)) in &all {
            let record = stack
                .admin(
                    reqwest::Method::GET,
                    &format!("/admin/v1/tenants/{id}"),
                    None,
                )
                .await;
            assert_eq!(record.status(), 200, "round {round}: tenant {id} lost");
            let record: Value = record.json().await.unwrap();
            if *pro {
                assert_eq!(record["tier"], "pro", "round {round}: {id}'s move lost");
            }
            let decided = stack.decision_via(0, key).await;
            assert_eq!(decided.status(), 200, "round {round}: {id}'s key lost");
        }
        // In flight at the kill: all of it or none. The list shows every tenant stored.
        let listed = list_all(&stack).await;
        for name in &acked.unanswered {
            let found: Vec<&Value> = listed.iter().filter(|t| t["name"] == *name).collect();
            assert!(found.len() <= 1, "{name} stored twice");
        }
        assert!(
            listed.len() >= all.len(),
            "{} listed, {} acknowledged",
            listed.len(),
            all.len()
        );
    }
}

/// Every tenant, through the paginated admin list.
async fn list_all(stack: &Stack) -> Vec<Value> {
    let mut tenants = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/admin/v1/tenants?limit=100&cursor={cursor}"),
            None => "/admin/v1/tenants?limit=100".to_owned(),
        };
        let page: Value = stack
            .admin(reqwest::Method::GET, &path, None)
            .await
            .json()
            .await
            .unwrap();
        tenants.extend(page["tenants"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return tenants,
        }
    }
}

fn key_hash(key: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY_SECRET.as_bytes()).unwrap();
    mac.update(key.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A state file as the earlier versions wrote it (an array of records, no versions).
fn old_record(id: &str, tier: &str, suspended: bool, key: &str, customer: Option<&str>) -> Value {
    let mut record = json!({
        "id": id, "name": format!("Old {id}"), "tier": tier, "suspended": suspended,
        "created_at": 1_700_000_000,
        "keys": [{"id": "key_0001", "hash": key_hash(key), "prefix": &key[..8], "created_at": 1_700_000_000}],
    });
    if let Some(customer) = customer {
        record["subscription"] = json!({"customer": customer, "id": "sub_old", "status": "active",
            "updated_at": 1_700_000_000, "recent_events": ["evt_old"]});
    }
    record
}

/// The first start imports the old state file: its tenants, keys (through Envoy), suspension
/// and billing links work at once; the file is set aside; restarts keep everything.
#[tokio::test]
async fn an_old_state_file_is_imported_on_the_first_start() {
    let (pro, suspended, linked) = (
        "tg_00000000000000000000000000000000000000000000aaaa",
        "tg_00000000000000000000000000000000000000000000bbbb",
        "tg_00000000000000000000000000000000000000000000cccc",
    );
    let records = json!([
        old_record("tn_old1", "pro", false, pro, None),
        old_record("tn_old2", "standard", true, suspended, None),
        old_record("tn_old3", "standard", false, linked, Some("cus_old")),
    ]);
    let mut stack = Stack::start(StackOptions::default().old_state_file(records)).await;
    let response = stack.call("/api/v1/ingest", pro).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["ratelimit-policy"],
        "\"pro\";q=1000;w=60"
    );
    assert_eq!(stack.call("/api/v1/ingest", suspended).await.status(), 403);
    assert_eq!(stack.call("/api/v1/ingest", linked).await.status(), 200);
    let record: Value = stack
        .admin(reqwest::Method::GET, "/admin/v1/tenants/tn_old3", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["subscription"]["customer"], "cus_old");
    assert!(!stack.dir().join("state.json").exists(), "set aside");
    assert!(stack.dir().join("state.json.migrated").exists());
    assert!(stack.dir().join("state.redb").exists());

    // A change after the import, then a restart: nothing is imported again over it.
    stack
        .patch_tenant("tn_old2", json!({"suspended": false}))
        .await;
    stack.restart_control_plane(0).await;
    // (Envoy may still answer the 403 it cached, for up to a second.)
    within(
        Duration::from_secs(3),
        "the resumed tenant is admitted",
        || async { stack.call("/api/v1/ingest", suspended).await.status() == 200 },
    )
    .await;
    assert_eq!(list_all(&stack).await.len(), 3);
}

const BURST: usize = 1000;
const TENANTS: usize = 100;

/// `count` tenants created through replica 0, each decided once through replica 1 (so
/// replica 1 holds them in its cache, and changes must reach that copy).
async fn warm_tenants(stack: &Stack, count: usize) -> Vec<Tenant> {
    let mut tenants = Vec::new();
    for _ in 0..count {
        tenants.push(stack.create_tenant("standard").await);
    }
    for tenant in &tenants {
        within(Duration::from_secs(1), "replica 1 decides", || async {
            stack.decide_via(1, &tenant.key).await == StatusCode::OK
        })
        .await;
    }
    tenants
}

/// `BURST` changes through replica 0: ten per tenant, one tenant's in order, tenants in
/// parallel. The last change of tenant `i` leaves it suspended if `i` is even, on pro if `i`
/// is a multiple of three.
async fn burst_of_changes(stack: &Stack, tenants: &[Tenant]) {
    let per_tenant = BURST / tenants.len();
    let mut writers = tokio::task::JoinSet::new();
    for (i, tenant) in tenants.iter().enumerate() {
        let client = stack.client().clone();
        let url = stack.internal_url(&format!("/admin/v1/tenants/{}", tenant.id));
        writers.spawn(async move {
            for k in 0..per_tenant {
                let change = if k + 1 == per_tenant {
                    json!({"suspended": i % 2 == 0, "tier": if i % 3 == 0 { "pro" } else { "standard" }})
                } else {
                    json!({"suspended": k % 2 == 0, "tier": if k % 2 == 0 { "pro" } else { "standard" }})
                };
                let response = client
                    .patch(&url)
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&change)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "change {k} of tenant {i}");
            }
        });
    }
    writers.join_all().await;
}

/// Whether replica 1 decides every tenant as its last change left it.
async fn replica_1_agrees(stack: &Stack, tenants: &[Tenant]) -> bool {
    for (i, tenant) in tenants.iter().enumerate() {
        let answer = stack.decision_via(1, &tenant.key).await;
        let expected = if i % 2 == 0 { 403 } else { 200 };
        if answer.status() != expected {
            return false;
        }
        if expected == 200 {
            let tier = answer
                .headers()
                .get("x-tollgate-tier")
                .and_then(|v| v.to_str().ok());
            if tier != Some(if i % 3 == 0 { "pro" } else { "standard" }) {
                return false;
            }
        }
    }
    true
}

async fn misses(stack: &Stack, replica: usize) -> u64 {
    stack
        .metric(replica, "tollgate_tenant_cache_misses_total")
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_converge_within_a_second_after_a_burst_of_1000_changes() {
    let redis = RedisServer::start();
    let stack = Stack::start(StackOptions::default().redis(redis.url()).replicas(2)).await;
    let tenants = warm_tenants(&stack, TENANTS).await;
    let before = misses(&stack, 1).await;

    let started = Instant::now();
    burst_of_changes(&stack, &tenants).await;
    let burst = started.elapsed();
    let took = within(Duration::from_secs(1), "replica 1 converges", || {
        replica_1_agrees(&stack, &tenants)
    })
    .await;
    eprintln!("{BURST} changes in {burst:?}; replica 1 agreed {took:?} after the last");
    assert_eq!(
        misses(&stack, 1).await,
        before,
        "replica 1 applied the changes to its cache: no store read"
    );
    let applied = stack
        .metric(1, "tollgate_tenant_changes_applied_total")
        .await
        .unwrap();
    assert!(
        applied >= (BURST + TENANTS) as u64,
        "{applied} changes applied"
    );
}

/// Replica 1 is stopped (SIGSTOP) for the whole burst and its Redis connections are cut; when
/// it comes back it converges within a second: from the change log when it still reaches back
/// far enough, or by attaching again (re-reading the tenants it holds) when it does not.
async fn a_replica_cut_off_during_the_burst_converges(change_log: Option<&str>) {
    let redis = RedisServer::start();
    let mut options = StackOptions::default().redis(redis.url()).replicas(2);
    if let Some(length) = change_log {
        options = options.control_plane_env("TOLLGATE_TENANT_CHANGE_LOG", length);
    }
    let stack = Stack::start(options).await;
    let tenants = warm_tenants(&stack, TENANTS).await;

    stack.pause_control_plane(1);
    burst_of_changes(&stack, &tenants).await;
    redis.cli(&["client", "kill", "type", "normal"]);
    stack.resume_control_plane(1);
    let took = within(Duration::from_secs(1), "replica 1 converges", || {
        replica_1_agrees(&stack, &tenants)
    })
    .await;
    let gaps = || async {
        stack
            .metric(1, "tollgate_tenant_resyncs_total{reason=\"gap\"}")
            .await
            .unwrap_or(0)
    };
    if change_log.is_some() {
        // Counted once the attachment is done (the cached tenants were re-read before).
        within(
            Duration::from_secs(2),
            "attached again: the log no longer reached back",
            || async { gaps().await == 1 },
        )
        .await;
    } else {
        assert_eq!(gaps().await, 0, "caught up from the log");
    }
    eprintln!(
        "replica 1 agreed {took:?} after it came back ({} re-attachments)",
        gaps().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_during_the_burst_catches_up_from_the_log_within_a_second() {
    a_replica_cut_off_during_the_burst_converges(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_longer_than_the_log_reaches_attaches_again_within_a_second() {
    a_replica_cut_off_during_the_burst_converges(Some("100")).await;
}

/// A key created through replica 0 works through replica 1 at once (its cache has never seen
/// it: one store read); an unknown key costs replica 1 one store read, the first time.
#[tokio::test]
async fn a_replica_answers_a_key_it_never_saw_at_once() {
    let redis = RedisServer::start();
    let stack = Stack::start(StackOptions::default().redis(redis.url()).replicas(2)).await;
    let tenant = stack.create_tenant("pro").await;
    let before = misses(&stack, 1).await;
    assert_eq!(
        stack.decide_via(1, &tenant.key).await,
        StatusCode::OK,
        "at once"
    );
    assert_eq!(misses(&stack, 1).await, before + 1, "one store read");
    assert_eq!(stack.decide_via(1, &tenant.key).await, StatusCode::OK);
    assert_eq!(misses(&stack, 1).await, before + 1, "then from the cache");

    // Unknown keys: each read once (a key the filter has never seen may be one created a
    // moment ago through the other replica), then answered from memory.
    for round in 0..3 {
        for n in 0..20 {
            let stranger = format!("tg_{n:048}");
            assert_eq!(
                stack.decide_via(1, &stranger).await,
                StatusCode::UNAUTHORIZED,
                "round {round}"
            );
        }
    }
    assert_eq!(misses(&stack, 1).await, before + 1 + 20);
    let remembered = stack
        .metric(
            1,
            "tollgate_tenant_cache_unknown_total{by=\"unknown_keys\"}",
        )
        .await
        .unwrap();
    assert_eq!(remembered, 40);
}
