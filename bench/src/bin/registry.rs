//! The tenant registry at 10,000, 100,000 and 1,000,000 tenants, embedded (redb) and Redis:
//! what a write costs (create, key rotation, a webhook-style update), a key lookup on a cold
//! cache, a control-plane's start-up to ready and its memory, and what one change costs each
//! Redis replica. The point is that none of it grows with the number of tenants.
//!
//! `make bench-registry` (`cargo run --release -p tollgate-bench --bin registry`). The stores
//! are seeded directly (`Embedded::import`, `RedisRegistry::import`), not through HTTP;
//! operations are timed in process through `tenants::Directory`, what the admin API and the
//! decision path call; start-up and memory are the release control-plane's own, as a process.
//! `REGISTRY_SIZES=10000,100000` picks the sizes. Prints figures; asserts nothing about speed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tollgate_control_plane::config::Secret;
use tollgate_control_plane::metrics::RegistryMetrics;
use tollgate_control_plane::storage::redis::{RedisConnection, RedisTarget};
use tollgate_control_plane::tenants::embedded::Embedded;
use tollgate_control_plane::tenants::redis_registry::RedisRegistry;
use tollgate_control_plane::tenants::{
    Directory, KeyHash, KeyHasher, RegistrySettings, StoredKey, StoredTenant, Subscription, Tenant,
};
use tollgate_e2e::redis::RedisServer;
use tollgate_e2e::{Process, binaries_dir, free_port};

const KEY_SECRET: &str = "bench-key-secret-0123456789-0123456789-0123456789";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const NOW: u64 = 1_800_000_000;

/// Operations timed per kind and size.
const WRITES: usize = 500;
const LOOKUPS: usize = 1000;
/// Distinct tenants a running control-plane decides for before its memory is read again.
const ACTIVE: usize = 10_000;
/// Changes whose replica traffic is measured.
const CHANGES: usize = 1000;
/// How long the quiet traffic is measured.
const IDLE: Duration = Duration::from_secs(6);
/// Tenants seeded per batch (one transaction, or one pipeline run, each).
const SEED_BATCH: usize = 10_000;

/// Tenant `i`, deterministic: its id, its key, and its record.
fn tenant(hasher: &KeyHasher, i: usize) -> (String, StoredTenant) {
    let mixed = (i as u64 ^ 0x5DEE_CE66_D1CE_4E5B).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let id = format!("tn_{mixed:016x}");
    let key = format!("tg_{i:048x}");
    let record = StoredTenant::new(
        Tenant {
            id: id.as_str().into(),
            name: format!("Bench tenant {i}"),
            tier: if i.is_multiple_of(10) {
                "pro"
            } else {
                "standard"
            }
            .into(),
            suspended: false,
            created_at: NOW,
            subscription: None,
        },
        StoredKey {
            id: "key_00000001".into(),
            hash: hex(&hasher.hash(&key)),
            prefix: key[..8].to_owned(),
            created_at: NOW,
            expires_at: None,
        },
    );
    (key, record)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seeds `n` tenants through `import`, a batch at a time; returns how long it took.
async fn seed<F, Fut>(n: usize, hasher: &KeyHasher, mut import: F) -> Duration
where
    F: FnMut(Vec<StoredTenant>) -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    for start in (0..n).step_by(SEED_BATCH) {
        let mut batch: Vec<StoredTenant> = (start..(start + SEED_BATCH).min(n))
            .map(|i| tenant(hasher, i).1)
            .collect();
        batch.sort_by(|a, b| a.tenant.id.cmp(&b.tenant.id));
        import(batch).await;
    }
    started.elapsed()
}

#[derive(Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn p(&self, quantile: f64) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort();
        let at = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
        sorted
            .get(at)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }

    fn show(&self) -> String {
        format!("{:>6.2} / {:>6.2}", self.p(0.5), self.p(0.99))
    }
}

/// Times the four operations against `directory` (whose cache is cold), on tenants of
/// `0..n` that nothing has touched yet.
async fn operations(directory: &Directory, hasher: &KeyHasher, n: usize) -> [Latencies; 4] {
    let mut create = Latencies::default();
    for _ in 0..WRITES {
        let (_, stored) = hasher.mint(NOW).expect("random");
        let tenant = Tenant {
            id: Tenant::mint_id().expect("random"),
            name: "Bench new".into(),
            tier: "standard".into(),
            suspended: false,
            created_at: NOW,
            subscription: None,
        };
        let started = Instant::now();
        directory.create(tenant, stored).await.expect("create");
        create.0.push(started.elapsed());
    }
    // Spread the tenants over the whole registry, each touched by one operation only.
    let pick = |k: usize, slot: usize| (k * 4 + slot) * (n / (4 * LOOKUPS)).max(1) % n;
    let mut rotate = Latencies::default();
    for k in 0..WRITES {
        let (_, record) = tenant(hasher, pick(k, 0));
        let (_, fresh) = hasher.mint(NOW).expect("random");
        let started = Instant::now();
        directory
            .modify(&record.tenant.id, |stored| {
                // As the admin API's rotation: the old key works a day longer, a new one now.
                stored.keys[0].expires_at = Some(NOW + 86_400);
                stored.keys.push(fresh.clone());
                Ok::<_, ()>(())
            })
            .await
            .expect("rotate")
            .expect("tenant")
            .expect("edit");
        rotate.0.push(started.elapsed());
    }
    let mut webhook = Latencies::default();
    for k in 0..WRITES {
        let (_, record) = tenant(hasher, pick(k, 1));
        let started = Instant::now();
        directory
            .modify(&record.tenant.id, |stored| {
                // As a subscription event applied: linked, paid tier, event remembered.
                let billing = stored
                    .tenant
                    .subscription
                    .get_or_insert_with(Subscription::default);
                billing.customer = Some(format!("cus_{k}"));
                billing.id = Some(format!("sub_{k}"));
                billing.status = Some("active".into());
                billing.updated_at = NOW;
                billing.recent_events.push(format!("evt_{k}"));
                stored.tenant.tier = "pro".into();
                Ok::<_, ()>(())
            })
            .await
            .expect("webhook")
            .expect("tenant")
            .expect("edit");
        webhook.0.push(started.elapsed());
    }
    let mut lookup = Latencies::default();
    for k in 0..LOOKUPS {
        let (key, _) = tenant(hasher, pick(k, 2));
        let hash: KeyHash = hasher.hash(&key);
        let started = Instant::now();
        let owner = directory.by_key(&hash, NOW).await.expect("lookup");
        lookup.0.push(started.elapsed());
        assert!(owner.is_some(), "tenant {} found", pick(k, 2));
    }
    [create, rotate, webhook, lookup]
}

/// A release control-plane on this store (`env`): time from spawn to ready, memory then, and
/// memory after deciding once for each of `ACTIVE` tenants.
struct Started {
    process: Process,
    ready: Duration,
    internal: String,
}

async fn start_control_plane(name: &str, env: &[(&str, String)], dir: &Path) -> Started {
    let (internal, public) = (free_port(), free_port());
    let mut command = Command::new(binaries_dir().join("tollgate-control-plane"));
    command
        .env("TOLLGATE_INTERNAL_ADDR", format!("127.0.0.1:{internal}"))
        .env("TOLLGATE_PUBLIC_ADDR", format!("127.0.0.1:{public}"))
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TOLLGATE_KEY_SECRET", KEY_SECRET)
        .env("TOLLGATE_LEASE_TTL_MS", "0")
        .env("RUST_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    let client = reqwest::Client::new();
    let started = Instant::now();
    let process = Process::spawn(name, command, dir);
    let ready = format!("http://127.0.0.1:{public}/readyz");
    loop {
        if client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{name} not ready in 2 minutes:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Started {
        ready: started.elapsed(),
        process,
        internal: format!("http://127.0.0.1:{internal}"),
    }
}

/// One decision for each of the first `ACTIVE` tenants, 16 at a time.
async fn activate(started: &Started, hasher: &KeyHasher, n: usize) {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/decision", started.internal);
    let mut running = JoinSet::new();
    for i in 0..ACTIVE.min(n) {
        if running.len() == 16 {
            running.join_next().await;
        }
        let (key, _) = tenant(hasher, i);
        let request = client
            .post(&url)
            .header("x-tollgate-api-key", key)
            .header("x-tollgate-route", "ingest")
            .header("x-tollgate-cost", "1");
        running.spawn(async move {
            // Admitted, or suspended by the sync measurement: found either way.
            let status = request.send().await.map(|r| r.status().as_u16());
            assert!(
                matches!(status, Ok(200 | 403)),
                "decision for tenant {i}: {status:?}"
            );
        });
    }
    running.join_all().await;
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Row {
    store: &'static str,
    tenants: usize,
    seed: Duration,
    ready: Duration,
    ready_after_kill: Option<Duration>,
    rss_ready: u64,
    rss_active: u64,
    ops: [Latencies; 4],
    note: Option<String>,
}

async fn embedded(n: usize, hasher: &KeyHasher) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.redb");
    let store = Embedded::open(&path, None).expect("open");
    let seeded = seed(n, hasher, |batch| {
        let store = store.clone();
        async move {
            tokio::task::spawn_blocking(move || store.import(&batch))
                .await
                .expect("thread")
                .expect("import");
        }
    })
    .await;
    drop(store);

    let env = [("TOLLGATE_REGISTRY", path.display().to_string())];
    let mut started = start_control_plane("embedded", &env, dir.path()).await;
    let rss_ready = tollgate_bench::rss_bytes(started.process.pid());
    activate(&started, hasher, n).await;
    let rss_active = tollgate_bench::rss_bytes(started.process.pid());
    // A crash, then a start that must recover the file.
    started.process.kill();
    let mut restarted = start_control_plane("embedded-after-kill", &env, dir.path()).await;
    let ready_after_kill = restarted.ready;
    restarted.process.terminate();

    // Opened again after the SIGTERM: a clean stop leaves nothing to recover.
    let opening = Instant::now();
    let directory = Directory::open_embedded(
        &path,
        None,
        RegistrySettings::default(),
        RegistryMetrics::default(),
    )
    .expect("open");
    let reopen = opening.elapsed();
    let ops = operations(&directory, hasher, n).await;
    let file = std::fs::metadata(&path).map_or(0, |m| m.len());
    let note = format!(
        "embedded at {n:>9} tenants: file {:.0} MiB; opened again after the control-plane's SIGTERM (key filter built) in {:.0} ms",
        mib(file),
        reopen.as_secs_f64() * 1000.0
    );
    Row {
        note: Some(note),
        store: "embedded",
        tenants: n,
        seed: seeded,
        ready: started.ready,
        ready_after_kill: Some(ready_after_kill),
        rss_ready,
        rss_active,
        ops,
    }
}

/// Redis's total output bytes, from `INFO stats`.
fn redis_output_bytes(redis: &RedisServer) -> u64 {
    redis
        .cli(&["info", "stats"])
        .lines()
        .find_map(|line| line.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Sync traffic: what `CHANGES` changes cost Redis's output with only the writer following,
/// then with one more replica (a control-plane) following: the difference, per change, is one
/// replica's; the same for quiet seconds.
struct Sync {
    per_change: f64,
    idle_per_second: f64,
    old_reload_bytes: u64,
}

async fn changes(directory: &Directory, hasher: &KeyHasher, n: usize, from: usize) {
    for k in 0..CHANGES {
        let (_, record) = tenant(hasher, (from + k * 7) % n);
        directory
            .modify(&record.tenant.id, |stored| {
                stored.tenant.suspended = !stored.tenant.suspended;
                Ok::<_, ()>(())
            })
            .await
            .expect("change")
            .expect("tenant")
            .expect("edit");
    }
}

async fn redis(n: usize, hasher: &KeyHasher) -> (Row, Sync) {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start();
    let target = RedisTarget::Standalone(redis.url());
    let timeout = Duration::from_secs(1);
    let connection = RedisConnection::connect(&target, timeout)
        .await
        .expect("connect");
    let importer = Arc::new(RedisRegistry::new(connection.clone(), timeout, 10_000));
    let seeded = seed(n, hasher, |batch| {
        let importer = importer.clone();
        async move { importer.import(&batch).await.expect("import") }
    })
    .await;
    // The whole registry's size: what the earlier versions' replicas read every 30 s.
    let old_reload_bytes: u64 = redis
        .cli(&[
            "memory",
            "usage",
            "tollgate:{registry}:tenants",
            "samples",
            "1000",
        ])
        .trim()
        .parse()
        .unwrap_or(0);

    // The writer: a replica in this process.
    let writer = Directory::redis(
        connection,
        timeout,
        RegistrySettings::default(),
        RegistryMetrics::default(),
    );
    writer.spawn_feed(target.clone());
    while writer.health().await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Redis output per change, and per quiet second, with only the writer following...
    let before = redis_output_bytes(&redis);
    changes(&writer, hasher, n, 0).await;
    let alone = redis_output_bytes(&redis) - before;
    let before = redis_output_bytes(&redis);
    tokio::time::sleep(IDLE).await;
    let idle_alone = redis_output_bytes(&redis) - before;

    let env = [("REDIS_URL", redis.url())];
    let started = start_control_plane("redis", &env, dir.path()).await;
    let rss_ready = tollgate_bench::rss_bytes(started.process.pid());
    // ... and with one more replica following.
    let before = redis_output_bytes(&redis);
    changes(&writer, hasher, n, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let with_replica = redis_output_bytes(&redis) - before;
    let per_change = with_replica.saturating_sub(alone) as f64 / CHANGES as f64;
    // Quiet: the replica's blocked reads and version checks, nothing else.
    let before = redis_output_bytes(&redis);
    tokio::time::sleep(IDLE).await;
    let idle_with = redis_output_bytes(&redis) - before;
    let idle_per_second = idle_with.saturating_sub(idle_alone) as f64 / IDLE.as_secs_f64();

    activate(&started, hasher, n).await;
    let rss_active = tollgate_bench::rss_bytes(started.process.pid());
    let ready = started.ready;
    drop(started);

    let reader = RedisConnection::connect(&target, timeout)
        .await
        .expect("connect");
    let directory = Directory::redis(
        reader,
        timeout,
        RegistrySettings::default(),
        RegistryMetrics::default(),
    );
    directory.spawn_feed(target);
    while directory.health().await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ops = operations(&directory, hasher, n).await;
    let row = Row {
        note: None,
        store: "redis",
        tenants: n,
        seed: seeded,
        ready,
        ready_after_kill: None,
        rss_ready,
        rss_active,
        ops,
    };
    let sync = Sync {
        per_change,
        idle_per_second,
        old_reload_bytes,
    };
    (row, sync)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::var("REGISTRY_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let hasher = KeyHasher::new(&Secret::new(KEY_SECRET.into()));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "tenant registry benchmark: {cores} cores; per size: {WRITES} creates, {WRITES} key rotations, {WRITES} webhook-style updates, {LOOKUPS} key lookups on a cold cache (p50 / p99 ms); start-up to /readyz of the release control-plane; RSS at ready and after one decision for each of {ACTIVE} tenants"
    );
    println!(
        "{:<9} {:>9} {:>8} {:>9} {:>11} {:>9} {:>10} {:>15} {:>15} {:>15} {:>15}",
        "store",
        "tenants",
        "seed s",
        "ready ms",
        "kill-9 ms",
        "RSS MiB",
        "RSS+act.",
        "create",
        "rotate",
        "webhook",
        "cold lookup"
    );
    let mut syncs = Vec::new();
    let mut notes = Vec::new();
    for &n in &sizes {
        let row = embedded(n, &hasher).await;
        print_row(&row);
        notes.extend(row.note);
        let (row, sync) = redis(n, &hasher).await;
        print_row(&row);
        syncs.push((n, sync));
    }
    for note in notes {
        println!("{note}");
    }
    for (n, sync) in syncs {
        println!(
            "redis sync at {n:>9} tenants: {:.0} B of Redis output per change per following replica; idle {:.0} B/s per replica; (the earlier full reload: {:.1} MiB per replica every 30 s)",
            sync.per_change,
            sync.idle_per_second,
            mib(sync.old_reload_bytes)
        );
    }
}

fn print_row(row: &Row) {
    let [create, rotate, webhook, lookup] = &row.ops;
    println!(
        "{:<9} {:>9} {:>8.1} {:>9.0} {:>11} {:>9.1} {:>10.1} {:>15} {:>15} {:>15} {:>15}",
        row.store,
        row.tenants,
        row.seed.as_secs_f64(),
        row.ready.as_secs_f64() * 1000.0,
        row.ready_after_kill.map_or("-".to_owned(), |d| format!(
            "{:.0}",
            d.as_secs_f64() * 1000.0
        )),
        mib(row.rss_ready),
        mib(row.rss_active),
        create.show(),
        rotate.show(),
        webhook.show(),
        lookup.show()
    );
}
