//! One conformance suite for the tenant registry, stamped out for the embedded store and for
//! Redis by `conformance!`; then what only one of them does: replicas following the Redis
//! change log (and noticing what they missed), the indexes of an older Redis layout, and the
//! embedded store's import of the old state file.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_control_plane::config::Secret;
use tollgate_control_plane::metrics::RegistryMetrics;
use tollgate_control_plane::storage::redis::{RedisConnection, RedisTarget};
use tollgate_control_plane::tenants::directory::UNSEEN_KEY_READS_PER_SECOND;
use tollgate_control_plane::tenants::{
    Directory, KeyHash, KeyHasher, RegistrySettings, StoredKey, StoredTenant, Subscription, Tenant,
    TenantChange,
};
use tollgate_e2e::redis::{RedisCluster, RedisServer};

const NOW: u64 = 1_800_000_000;

fn hasher() -> KeyHasher {
    KeyHasher::new(&Secret::new("a-key-secret-for-the-registry-tests".into()))
}

/// A new tenant on `tier`, its key and the key's hash.
async fn create(directory: &Directory, tier: &str) -> (String, String, KeyHash) {
    let hasher = hasher();
    let (key, stored) = hasher.mint(NOW).unwrap();
    let tenant = Tenant {
        id: Tenant::mint_id().unwrap(),
        name: "Acme".into(),
        tier: tier.into(),
        suspended: false,
        created_at: NOW,
        subscription: None,
    };
    let id = tenant.id.to_string();
    directory.create(tenant, stored).await.unwrap();
    let hash = hasher.hash(key.expose());
    (id, key.expose().to_owned(), hash)
}

/// Polls `condition` every 10 ms until it holds; fails after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn small() -> RegistrySettings {
    RegistrySettings {
        cache_capacity: 8,
        unknown_capacity: 8,
        change_log: 10_000,
    }
}

async fn a_created_tenant_is_found_by_key_and_by_id_and_no_other_key_is(
    directory: Directory,
    _metrics: RegistryMetrics,
) {
    let (id, _, hash) = create(&directory, "standard").await;
    let owner = directory.by_key(&hash, NOW).await.unwrap().unwrap();
    assert_eq!(
        (owner.id.as_ref(), owner.tier.as_ref()),
        (id.as_str(), "standard")
    );
    assert_eq!(directory.get(&id).await.unwrap().unwrap().name, "Acme");
    assert_eq!(
        directory
            .tenant_by_key(&hash, NOW)
            .await
            .unwrap()
            .map(|t| t.id.to_string()),
        Some(id)
    );
    let stranger = hasher().hash("tg_nobody");
    assert_eq!(directory.by_key(&stranger, NOW).await.unwrap(), None);
    assert_eq!(directory.get("tn_nobody").await.unwrap(), None);
}

async fn a_rotated_key_works_until_its_grace_ends_and_a_revoked_one_at_once(
    directory: Directory,
    _metrics: RegistryMetrics,
) {
    let (id, _, old) = create(&directory, "standard").await;
    directory.by_key(&old, NOW).await.unwrap().unwrap(); // cached
    let (_, fresh) = hasher().mint(NOW).unwrap();
    let new = {
        let mut hash = KeyHash::default();
        hex::decode_to_slice(&fresh.hash, &mut hash).unwrap();
        hash
    };
    directory
        .modify(&id, |record| {
            record.keys[0].expires_at = Some(NOW + 60);
            record.keys.push(fresh.clone());
            Ok::<_, ()>(())
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(directory.by_key(&old, NOW + 59).await.unwrap().is_some());
    assert_eq!(directory.by_key(&old, NOW + 60).await.unwrap(), None);
    assert!(directory.by_key(&new, NOW + 60).await.unwrap().is_some());
    directory
        .modify(&id, |record| {
            record.keys.retain(|k| k.hash != fresh.hash);
            Ok::<_, ()>(())
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(directory.by_key(&new, NOW).await.unwrap(), None, "revoked");
    assert!(
        directory.by_key(&old, NOW).await.unwrap().is_some(),
        "in its grace"
    );
}

async fn the_list_pages_in_id_order_with_a_cursor(directory: Directory, _metrics: RegistryMetrics) {
    let mut ids = BTreeSet::new();
    for _ in 0..25 {
        ids.insert(create(&directory, "standard").await.0);
    }
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = directory.list(cursor.as_deref(), 10).await.unwrap();
        pages += 1;
        assert!(page.tenants.len() <= 10);
        listed.extend(page.tenants.iter().map(|t| t.id.to_string()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        listed,
        ids.into_iter().collect::<Vec<_>>(),
        "every tenant once, in id order"
    );
    let exact = directory.list(None, 25).await.unwrap();
    assert_eq!(
        (exact.tenants.len(), exact.next_cursor),
        (25, None),
        "no empty last page"
    );
}

async fn the_tiers_in_use_follow_every_change(directory: Directory, _metrics: RegistryMetrics) {
    let (a, _, _) = create(&directory, "standard").await;
    create(&directory, "standard").await;
    let (c, _, _) = create(&directory, "pro").await;
    let in_use = || async {
        let mut tiers: Vec<String> = directory
            .tiers_in_use()
            .unwrap()
            .iter()
            .map(|t| t.to_string())
            .collect();
        tiers.sort();
        tiers
    };
    within(Duration::from_secs(2), "standard and pro", || async {
        in_use().await == ["pro", "standard"]
    })
    .await;
    let to = |tier: &str| TenantChange {
        tier: Some(tier.into()),
        suspended: None,
    };
    directory
        .update(&c, &to("standard"))
        .await
        .unwrap()
        .unwrap();
    directory
        .update(&a, &to("enterprise"))
        .await
        .unwrap()
        .unwrap();
    within(Duration::from_secs(2), "pro dropped", || async {
        in_use().await == ["enterprise", "standard"]
    })
    .await;
}

async fn linked_and_marked_tenants_and_stripe_ids_are_indexed(
    directory: Directory,
    _metrics: RegistryMetrics,
) {
    let (id, _, _) = create(&directory, "standard").await;
    create(&directory, "standard").await;
    assert!(directory.linked(false).await.unwrap().is_empty());
    let link = |customer: &'static str, needs_sync: bool| {
        move |record: &mut StoredTenant| {
            record.tenant.subscription = Some(Subscription {
                customer: Some(customer.into()),
                id: Some("sub_1".into()),
                needs_sync,
                ..Subscription::default()
            });
            Ok::<_, ()>(())
        }
    };
    directory.modify(&id, link("cus_1", true)).await.unwrap();
    assert_eq!(directory.linked(false).await.unwrap(), vec![id.clone()]);
    assert_eq!(directory.linked(true).await.unwrap(), vec![id.clone()]);
    assert_eq!(
        directory.by_stripe_id("cus_1").await.unwrap(),
        Some(id.clone())
    );
    assert_eq!(
        directory.by_stripe_id("sub_1").await.unwrap(),
        Some(id.clone())
    );
    directory.modify(&id, link("cus_2", false)).await.unwrap();
    assert_eq!(directory.by_stripe_id("cus_1").await.unwrap(), None);
    assert_eq!(
        directory.by_stripe_id("cus_2").await.unwrap(),
        Some(id.clone())
    );
    assert!(directory.linked(true).await.unwrap().is_empty(), "synced");
    assert_eq!(directory.linked(false).await.unwrap(), [id]);
}

async fn the_cache_stays_bounded_and_each_miss_is_one_counted_read(
    directory: Directory,
    metrics: RegistryMetrics,
) {
    let mut tenants = Vec::new();
    for _ in 0..40 {
        tenants.push(create(&directory, "standard").await);
    }
    assert_eq!(metrics.cache_entries.get(), 0, "writes bring nobody in");
    for (id, _, hash) in &tenants {
        let owner = directory.by_key(hash, NOW).await.unwrap().unwrap();
        assert_eq!(owner.id.as_ref(), id);
        assert!(
            metrics.cache_entries.get() <= 8,
            "{} cached",
            metrics.cache_entries.get()
        );
    }
    assert_eq!(
        metrics.cache_misses.get(),
        40,
        "one store read per cold key"
    );
    // A key in steady use stays cached while others come and go.
    let (_, _, hot) = &tenants[0];
    let misses = metrics.cache_misses.get();
    for (_, _, hash) in &tenants[1..] {
        directory.by_key(hot, NOW).await.unwrap().unwrap();
        directory.by_key(hash, NOW).await.unwrap().unwrap();
    }
    assert_eq!(
        metrics.cache_misses.get() - misses,
        39 + 1,
        "the hot key missed once (it had been evicted), the others once each"
    );
}

async fn an_unknown_key_costs_at_most_one_store_read(
    directory: Directory,
    metrics: RegistryMetrics,
    exact_filter: bool,
) {
    // Never stored: the key filter answers (with Redis, after a budget of reads per second:
    // the filter may not know a key created through another replica a moment ago).
    for n in 0..1000 {
        let random = hasher().hash(&format!("tg_random_{n}"));
        assert_eq!(directory.by_key(&random, NOW).await.unwrap(), None);
    }
    let budget = if exact_filter {
        0
    } else {
        UNSEEN_KEY_READS_PER_SECOND
    };
    assert_eq!(
        metrics.cache_misses.get(),
        budget,
        "a flood of random keys reads at most the budget"
    );
    // The same flood again within the second reads nothing more.
    for n in 0..1000 {
        let random = hasher().hash(&format!("tg_random_{n}"));
        assert_eq!(directory.by_key(&random, NOW).await.unwrap(), None);
    }
    assert_eq!(metrics.cache_misses.get(), budget);

    // Stored once, then revoked: the filter still says maybe; one read, then the cache of
    // unknown keys answers.
    let (id, _, hash) = create(&directory, "standard").await;
    let key = directory.record(&id).await.unwrap().unwrap().keys[0].clone();
    directory
        .modify(&id, |record| {
            record.keys.clear();
            Ok::<_, ()>(())
        })
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(directory.by_key(&hash, NOW).await.unwrap(), None);
    }
    assert_eq!(metrics.cache_misses.get(), budget + 1);
    // The key comes back (a change): no longer unknown.
    directory
        .modify(&id, |record| {
            record.keys.push(key.clone());
            Ok::<_, ()>(())
        })
        .await
        .unwrap();
    within(Duration::from_secs(2), "the key works again", || async {
        directory.by_key(&hash, NOW).await.unwrap().is_some()
    })
    .await;
}

async fn concurrent_changes_to_one_tenant_are_all_kept(
    directory: Directory,
    _metrics: RegistryMetrics,
) {
    let directory = Arc::new(directory);
    let (id, _, _) = create(&directory, "standard").await;
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..20 {
        let (directory, id) = (directory.clone(), id.clone());
        writers.spawn(async move {
            directory
                .modify(&id, |record| {
                    record.keys.push(StoredKey {
                        id: format!("key_{n}"),
                        hash: hex::encode([n as u8 + 100; 32]),
                        prefix: "tg_00000".into(),
                        created_at: NOW,
                        expires_at: None,
                    });
                    Ok::<_, ()>(())
                })
                .await
                .unwrap()
        });
    }
    writers.join_all().await;
    let record = directory.record(&id).await.unwrap().unwrap();
    assert_eq!(record.keys.len(), 21, "the first key and 20 more");
    assert_eq!(record.version, 21);
}

async fn embedded(settings: RegistrySettings) -> (Directory, RegistryMetrics, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = RegistryMetrics::default();
    let directory = Directory::open_embedded(
        &dir.path().join("registry.redb"),
        None,
        settings,
        metrics.clone(),
    )
    .unwrap();
    (directory, metrics, dir)
}

/// A replica on `redis`, attached to the change log.
async fn replica(redis: &RedisServer, settings: RegistrySettings) -> (Directory, RegistryMetrics) {
    replica_of(RedisTarget::Standalone(redis.url()), settings).await
}

async fn replica_of(
    target: RedisTarget,
    settings: RegistrySettings,
) -> (Directory, RegistryMetrics) {
    let timeout = Duration::from_secs(1);
    let connection = RedisConnection::connect(&target, timeout).await.unwrap();
    let metrics = RegistryMetrics::default();
    let directory = Directory::redis(connection, timeout, settings, metrics.clone());
    directory.spawn_feed(target);
    within(Duration::from_secs(5), "the replica attaches", || async {
        directory.health().await.is_ok()
    })
    .await;
    (directory, metrics)
}

async fn redis(settings: RegistrySettings) -> (Directory, RegistryMetrics, RedisServer) {
    let server = RedisServer::start();
    let (directory, metrics) = replica(&server, settings).await;
    (directory, metrics, server)
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded_store {
            $(
                #[tokio::test]
                async fn $name() {
                    let (directory, metrics, _dir) = super::embedded(super::small()).await;
                    super::$name(directory, metrics).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (directory, metrics, _redis) = super::redis(super::small()).await;
                    super::$name(directory, metrics).await;
                }
            )*
        }
    };
}

conformance!(
    a_created_tenant_is_found_by_key_and_by_id_and_no_other_key_is,
    a_rotated_key_works_until_its_grace_ends_and_a_revoked_one_at_once,
    the_list_pages_in_id_order_with_a_cursor,
    the_tiers_in_use_follow_every_change,
    linked_and_marked_tenants_and_stripe_ids_are_indexed,
    the_cache_stays_bounded_and_each_miss_is_one_counted_read,
    concurrent_changes_to_one_tenant_are_all_kept,
);

#[tokio::test]
async fn embedded_store_an_unknown_key_costs_at_most_one_store_read() {
    let (directory, metrics, _dir) = embedded(small()).await;
    an_unknown_key_costs_at_most_one_store_read(directory, metrics, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_an_unknown_key_costs_at_most_one_store_read() {
    let (directory, metrics, _redis) = redis(small()).await;
    an_unknown_key_costs_at_most_one_store_read(directory, metrics, false).await;
}

fn suspend(yes: bool) -> TenantChange {
    TenantChange {
        tier: None,
        suspended: Some(yes),
    }
}

/// Replica B holds the tenant in its cache; a change through replica A reaches that cached
/// copy through the change log, with no store read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_replica_reaches_the_others_cache_without_a_read() {
    let redis = RedisServer::start();
    let (a, _) = replica(&redis, small()).await;
    let (b, b_metrics) = replica(&redis, small()).await;
    let (id, _, hash) = create(&a, "standard").await;
    assert!(!b.by_key(&hash, NOW).await.unwrap().unwrap().suspended);
    let misses = b_metrics.cache_misses.get();
    a.update(&id, &suspend(true)).await.unwrap();
    within(Duration::from_secs(1), "B sees the suspension", || async {
        b.by_key(&hash, NOW).await.unwrap().unwrap().suspended
    })
    .await;
    assert_eq!(b_metrics.cache_misses.get(), misses, "from the cache");
    assert!(b_metrics.changes_applied.get() >= 2);
}

/// A replica that finds a version missing from the log (it was cut off longer than the log
/// reaches) attaches again and re-reads the tenants it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_changes_attaches_again_and_rereads_what_it_holds() {
    let redis = RedisServer::start();
    let (a, _) = replica(&redis, small()).await;
    let (b, b_metrics) = replica(&redis, small()).await;
    let (id, _, hash) = create(&a, "standard").await;
    b.by_key(&hash, NOW).await.unwrap().unwrap();
    // Three versions that no log entry carries: B sees the next change as a gap.
    redis.cli(&["incrby", "tollgate:{registry}:version", "3"]);
    a.update(&id, &suspend(true)).await.unwrap();
    within(Duration::from_secs(2), "B attaches again", || async {
        b_metrics.resyncs.get_or_create(&gap()).get() == 1
    })
    .await;
    assert!(b.by_key(&hash, NOW).await.unwrap().unwrap().suspended);
    // And it follows on from there.
    a.update(&id, &suspend(false)).await.unwrap();
    within(Duration::from_secs(1), "B follows on", || async {
        !b.by_key(&hash, NOW).await.unwrap().unwrap().suspended
    })
    .await;
}

fn gap() -> tollgate_control_plane::metrics::ReasonLabel {
    tollgate_control_plane::metrics::ReasonLabel { reason: "gap" }
}

/// Redis restarted without its data: the version went back; the replica notices on a quiet
/// read and drops what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_notices_when_redis_lost_its_data() {
    let redis = RedisServer::start();
    let (a, _) = replica(&redis, small()).await;
    let (id, _, hash) = create(&a, "standard").await;
    a.update(&id, &suspend(true)).await.unwrap();
    assert!(a.by_key(&hash, NOW).await.unwrap().is_some());
    redis.cli(&["flushall"]);
    within(Duration::from_secs(6), "the tenant is gone", || async {
        a.by_key(&hash, NOW).await.unwrap().is_none()
    })
    .await;
}

/// A registry written by an earlier version (records only, no indexes): the first replica of
/// this version builds the indexes before it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexes_of_an_older_redis_layout_are_built_once() {
    let redis = RedisServer::start();
    let hasher = hasher();
    let mut keys = Vec::new();
    for n in 0..30 {
        let (key, stored) = hasher.mint(NOW).unwrap();
        let record = StoredTenant {
            tenant: Tenant {
                id: format!("tn_old{n:02}").into(),
                name: "Old".into(),
                tier: if n % 3 == 0 { "pro" } else { "standard" }.into(),
                suspended: false,
                created_at: NOW,
                subscription: (n == 7).then(|| Subscription {
                    customer: Some("cus_old".into()),
                    ..Subscription::default()
                }),
            },
            keys: vec![stored],
            version: 0,
        };
        let json = serde_json::to_string(&record).unwrap();
        redis.cli(&[
            "hset",
            "tollgate:{registry}:tenants",
            &record.tenant.id,
            &json,
        ]);
        keys.push((record.tenant.id.to_string(), hasher.hash(key.expose())));
    }
    let (directory, _) = replica(&redis, small()).await;
    for (id, hash) in &keys {
        let owner = directory.by_key(hash, NOW).await.unwrap().unwrap();
        assert_eq!(owner.id.as_ref(), id);
    }
    let mut tiers: Vec<String> = directory
        .tiers_in_use()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    tiers.sort();
    assert_eq!(tiers, ["pro", "standard"]);
    assert_eq!(directory.list(None, 100).await.unwrap().tenants.len(), 30);
    assert_eq!(directory.linked(false).await.unwrap(), ["tn_old07"]);
    assert_eq!(
        directory.by_stripe_id("cus_old").await.unwrap().as_deref(),
        Some("tn_old07")
    );
    assert_eq!(
        redis
            .cli(&["hget", "tollgate:{registry}:meta", "schema"])
            .trim(),
        "2"
    );
    // A second replica finds the layout current and starts at once.
    let (second, _) = replica(&redis, small()).await;
    assert!(second.by_key(&keys[0].1, NOW).await.unwrap().is_some());
}

/// The state file of earlier versions is imported once: its tenants and keys are there, the
/// file is set aside, and a file found there again later is not imported over newer changes.
#[tokio::test]
async fn an_old_state_file_is_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    let (state_file, database) = (dir.path().join("state.json"), dir.path().join("state.redb"));
    let hasher = hasher();
    let mut records = Vec::new();
    let mut keys = Vec::new();
    for n in 0..50 {
        let (key, stored) = hasher.mint(NOW).unwrap();
        let mut record = StoredTenant::new(
            Tenant {
                id: format!("tn_{n:04}").into(),
                name: format!("Tenant {n}"),
                tier: "pro".into(),
                suspended: n == 3,
                created_at: NOW,
                subscription: None,
            },
            stored,
        );
        record.version = 0; // as earlier versions wrote it
        keys.push(hasher.hash(key.expose()));
        records.push(record);
    }
    std::fs::write(&state_file, serde_json::to_vec_pretty(&records).unwrap()).unwrap();

    let open = || {
        Directory::open_embedded(
            &database,
            Some(&state_file),
            RegistrySettings::default(),
            RegistryMetrics::default(),
        )
        .unwrap()
    };
    let directory = open();
    for (n, key) in keys.iter().enumerate() {
        let owner = directory.by_key(key, NOW).await.unwrap().unwrap();
        assert_eq!(owner.id.as_ref(), format!("tn_{n:04}"));
        assert_eq!(owner.suspended, n == 3);
    }
    assert!(!state_file.exists(), "set aside");
    assert!(dir.path().join("state.json.migrated").exists());
    directory.update("tn_0003", &suspend(false)).await.unwrap();
    drop(directory);

    // The old file shows up again (restored from a backup, say): set aside, not imported.
    std::fs::write(&state_file, serde_json::to_vec_pretty(&records).unwrap()).unwrap();
    let directory = open();
    assert!(
        !directory.get("tn_0003").await.unwrap().unwrap().suspended,
        "the newer change stays"
    );
    assert_eq!(directory.list(None, 100).await.unwrap().tenants.len(), 50);
    assert!(!state_file.exists());
}

/// Tenants imported straight into Redis (seeding, or a move from another store): a replica
/// attaching afterwards finds them by key (its key filter included), in the list, and counts
/// their tiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_imported_into_redis_are_found_by_a_replica_attaching_afterwards() {
    use tollgate_control_plane::tenants::redis_registry::RedisRegistry;
    let redis = RedisServer::start();
    let timeout = Duration::from_secs(1);
    let connection = RedisConnection::connect(&RedisTarget::Standalone(redis.url()), timeout)
        .await
        .unwrap();
    let hasher = hasher();
    let mut records = Vec::new();
    let mut keys = Vec::new();
    for n in 0..2500 {
        let (key, stored) = hasher.mint(NOW).unwrap();
        records.push(StoredTenant::new(
            Tenant {
                id: format!("tn_{n:05}").into(),
                name: "Imported".into(),
                tier: if n % 5 == 0 { "pro" } else { "standard" }.into(),
                suspended: false,
                created_at: NOW,
                subscription: None,
            },
            stored,
        ));
        keys.push(hasher.hash(key.expose()));
    }
    RedisRegistry::new(connection, timeout, 100)
        .import(&records)
        .await
        .unwrap();
    let (directory, metrics) = replica(&redis, RegistrySettings::default()).await;
    // Strangers spend this second's budget of reads for keys the filter has not seen...
    for n in 0..2 * UNSEEN_KEY_READS_PER_SECOND {
        let stranger = hasher.hash(&format!("tg_stranger_{n}"));
        assert_eq!(directory.by_key(&stranger, NOW).await.unwrap(), None);
    }
    assert_eq!(metrics.cache_misses.get(), UNSEEN_KEY_READS_PER_SECOND);
    // ... and the imported keys are still found: the filter loaded at attachment has them.
    for (n, key) in keys.iter().enumerate().step_by(97) {
        let owner = directory.by_key(key, NOW).await.unwrap().unwrap();
        assert_eq!(owner.id.as_ref(), format!("tn_{n:05}"));
    }
    let page = directory.list(Some("tn_02495"), 100).await.unwrap();
    assert_eq!(page.tenants.len(), 4);
    assert_eq!(page.next_cursor, None);
    let mut tiers: Vec<String> = directory
        .tiers_in_use()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    tiers.sort();
    assert_eq!(tiers, ["pro", "standard"]);
}

/// On Redis Cluster: the registry's keys share one slot, so every script, the change log's
/// blocking read and the pipelines reach its node; replicas follow each other's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_a_redis_cluster_follow_each_others_changes() {
    let cluster = RedisCluster::start();
    let target = RedisTarget::Cluster(cluster.urls());
    let (a, _) = replica_of(target.clone(), small()).await;
    let (b, _) = replica_of(target, small()).await;
    let (id, _, hash) = create(&a, "standard").await;
    assert!(
        !b.by_key(&hash, NOW).await.unwrap().unwrap().suspended,
        "at once"
    );
    a.update(&id, &suspend(true)).await.unwrap();
    within(Duration::from_secs(1), "B sees the suspension", || async {
        b.by_key(&hash, NOW).await.unwrap().unwrap().suspended
    })
    .await;
    let page = b.list(None, 10).await.unwrap();
    assert_eq!(page.tenants.len(), 1);
}
