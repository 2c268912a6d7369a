//! The tenant registry as the rest of the control-plane uses it: lookups through a bounded
//! cache, writes to the durable store, pages for the admin list, and in Redis mode the
//! replica's following of every other replica's changes.
//!
//! - Stores: the embedded one (redb, [`super::embedded`]; in memory without a file), or Redis
//!   ([`super::redis_registry`]), shared by every replica.
//! - Lookups by key hash (every callout): a cached tenant is a memory lookup; an unknown key is
//!   answered from memory when the cache of unknown keys or the key filter knows it; anything
//!   else is one store read (counted: `tollgate_tenant_cache_misses_total`) whose answer is
//!   cached. Memory follows the tenants that send traffic, never the registry's size.
//! - The key filter is exact about the past, not the last milliseconds: with Redis, a key
//!   created through another replica reaches this one's filter with the change log, a moment
//!   later. So a key the filter has never seen still gets a store read, up to a budget per
//!   second ([`UNSEEN_KEY_READS_PER_SECOND`]): a key used the moment it was created works at
//!   once, and a flood of random keys costs the store at most the budget. (The embedded
//!   store's filter learns every key before its write returns: it is exact, and such keys
//!   cost nothing.)
//! - Writes go to the store first and to the cache second: a failed write changes nothing and
//!   answers 503. A change is a read-modify-write, so concurrent changes to one tenant (an
//!   admin call and a webhook, or two webhooks) must not overwrite each other: within a
//!   replica they are serialised; across replicas, the write is a compare-and-set on the
//!   record read, retried on a conflict.
//! - Replicas (Redis): each follows the change log from where it attached, applying every
//!   change in version order to its cache and key filter; it attaches from the log's end (and
//!   re-reads only the tenants it has cached) at start, and when it finds it missed changes.
//!   Nothing is reloaded periodically: a replica's traffic is one log entry per change,
//!   whatever the number of tenants. Until attached, no key is judged (`NotLoaded`: the
//!   filter's failure mode, not a 401).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Mutex;

use super::cache::{Cache, Known};
use super::changes::IndexChange;
use super::embedded::{self, Embedded};
use super::key_filter::KeyFilter;
use super::redis_registry::{Change, RedisRegistry};
use super::{KeyHash, KeyOwner, Stored, StoredKey, StoredTenant, Tenant, TenantChange, TenantId};
use crate::metrics::{ByLabel, ReasonLabel, RegistryMetrics};
use crate::storage::StoreError;
use crate::storage::redis::{RedisConnection, RedisTarget};
use crate::tiers::TierName;

/// How many times a change is retried when another replica changed the tenant between the
/// read and the write; past it the caller gets 503 (and Stripe, for instance, retries).
const WRITE_ATTEMPTS: usize = 5;

/// How long one read of the change log waits for news; after a quiet wait the replica checks
/// the registry's version, so a log that lost entries (a Redis restarted without its data)
/// is noticed within two waits.
const FEED_BLOCK: Duration = Duration::from_secs(2);

/// Changes read from the log at once.
const FEED_BATCH: usize = 1000;

/// Tenants re-read per round trip when attaching.
const REFRESH_BATCH: usize = 500;

/// Redis: store reads per second for keys the key filter has never seen (see the module
/// comment); past it, such keys are answered unknown from memory.
pub const UNSEEN_KEY_READS_PER_SECOND: u64 = 100;

/// What the registry may hold in memory, and how long the change log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Tenants cached (the active ones).
    pub cache_capacity: usize,
    /// Keys remembered as nobody's.
    pub unknown_capacity: usize,
    /// Redis: entries the change log keeps; a replica cut off for longer re-attaches.
    pub change_log: usize,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            cache_capacity: 100_000,
            unknown_capacity: 65_536,
            change_log: 10_000,
        }
    }
}

/// One page of the admin list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub tenants: Vec<Tenant>,
    /// Where the next page starts; `None`: this was the last.
    pub next_cursor: Option<String>,
}

pub struct Directory {
    store: Store,
    /// Shared with the change feed, which holds it weakly: the feed ends when the directory
    /// is dropped.
    cache: Arc<Cache>,
    /// Shared with the change feed, which adds the keys other replicas create.
    filter: Arc<KeyFilter>,
    /// Whether the replica follows the store's changes (always, embedded; once attached to
    /// the change log, Redis). Until then no key is judged. Set by the feed.
    attached: Arc<AtomicBool>,
    /// Serialises this replica's writes: no two read-modify-writes interleave, and the
    /// embedded store's changes reach the cache in version order. A tokio mutex: it is held
    /// across the store's round trip (or commit).
    writes: Mutex<()>,
    /// Redis: tenants per tier, as the change log tells (the tier reloader reads it; the
    /// embedded store counts them in its own table). Shared with the feed; a std mutex, never
    /// held across an `.await`.
    tier_counts: Arc<std::sync::Mutex<HashMap<TierName, i64>>>,
    /// Redis: store reads spent this second on keys the filter has never seen.
    unseen_reads: UnseenReads,
    metrics: RegistryMetrics,
}

/// A budget per second, counted in atomics (approximate under races, which is all it needs).
#[derive(Default)]
struct UnseenReads {
    second: AtomicU64,
    spent: AtomicU64,
}

impl UnseenReads {
    /// Whether one more read fits in second `now`'s budget.
    fn spend(&self, now: u64) -> bool {
        let second = self.second.load(Ordering::Relaxed);
        if second != now
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.spent.store(0, Ordering::Relaxed);
        }
        self.spent.fetch_add(1, Ordering::Relaxed) < UNSEEN_KEY_READS_PER_SECOND
    }
}

enum Store {
    Embedded(Embedded),
    Redis(Arc<RedisRegistry>),
}

impl Directory {
    /// Tenants that last as long as the process.
    pub fn in_process() -> Result<Self, StoreError> {
        Self::embedded(
            Embedded::in_memory()?,
            RegistrySettings::default(),
            RegistryMetrics::default(),
        )
    }

    /// Tenants in the embedded store; the key filter is built from it now.
    pub fn embedded(
        store: Embedded,
        settings: RegistrySettings,
        metrics: RegistryMetrics,
    ) -> Result<Self, StoreError> {
        let filter = KeyFilter::default();
        store.each_key_hash(|key| filter.insert(key))?;
        let directory = Self::with(Store::Embedded(store), filter, settings, metrics);
        directory.cache.restart_at(match &directory.store {
            Store::Embedded(store) => store.version()?,
            Store::Redis(_) => 0,
        });
        directory.attached.store(true, Ordering::Release);
        Ok(directory)
    }

    /// Opens the embedded store at `database` (importing the state file at `import_from`
    /// once), as [`Directory::embedded`].
    pub fn open_embedded(
        database: &std::path::Path,
        import_from: Option<&std::path::Path>,
        settings: RegistrySettings,
        metrics: RegistryMetrics,
    ) -> Result<Self, embedded::RegistryError> {
        let store = Embedded::open(database, import_from)?;
        Self::embedded(store, settings, metrics).map_err(|source| embedded::RegistryError::Store {
            path: database.display().to_string(),
            source,
        })
    }

    /// Tenants in Redis. Keys are judged once the feed (see [`Directory::spawn_feed`]) has
    /// attached to the change log.
    pub fn redis(
        connection: RedisConnection,
        timeout: Duration,
        settings: RegistrySettings,
        metrics: RegistryMetrics,
    ) -> Self {
        let store = RedisRegistry::new(connection, timeout, settings.change_log);
        Self::with(
            Store::Redis(Arc::new(store)),
            KeyFilter::default(),
            settings,
            metrics,
        )
    }

    fn with(
        store: Store,
        filter: KeyFilter,
        settings: RegistrySettings,
        metrics: RegistryMetrics,
    ) -> Self {
        Self {
            store,
            cache: Arc::new(Cache::new(
                settings.cache_capacity,
                settings.unknown_capacity,
            )),
            filter: Arc::new(filter),
            attached: Arc::new(AtomicBool::new(false)),
            writes: Mutex::new(()),
            tier_counts: Arc::default(),
            unseen_reads: UnseenReads::default(),
            metrics,
        }
    }

    /// Redis: store reads made on the runtime this is called on go over `connection` (made on
    /// it), so a decision's cache miss never waits on another runtime's threads.
    pub fn serve_reads_on_this_runtime(&self, connection: RedisConnection) {
        if let Store::Redis(store) = &self.store {
            store.serve_reads_on_this_runtime(connection);
        }
    }

    /// What the decision path needs of the tenant a key belongs to, if the key works at
    /// `now` (seconds since the epoch). Before a replica follows the store's changes, no key
    /// can be judged: [`StoreError::NotLoaded`], so the filter applies its failure mode
    /// rather than refusing a valid key.
    pub async fn by_key(&self, key: &KeyHash, now: u64) -> Result<Option<KeyOwner>, StoreError> {
        Ok(self
            .lookup(key, now)
            .await?
            .map(|record| KeyOwner::from(&record.tenant)))
    }

    /// The whole tenant a key belongs to, if the key works at `now`; as [`Directory::by_key`].
    pub async fn tenant_by_key(
        &self,
        key: &KeyHash,
        now: u64,
    ) -> Result<Option<Tenant>, StoreError> {
        Ok(self.lookup(key, now).await?.map(|r| r.tenant.clone()))
    }

    /// The record a key belongs to (its keys included), if the key works at `now`; as
    /// [`Directory::by_key`].
    pub async fn record_by_key(
        &self,
        key: &KeyHash,
        now: u64,
    ) -> Result<Option<Arc<StoredTenant>>, StoreError> {
        self.lookup(key, now).await
    }

    async fn lookup(
        &self,
        key: &KeyHash,
        now: u64,
    ) -> Result<Option<Arc<StoredTenant>>, StoreError> {
        self.ensure_attached()?;
        match self.cache.by_key(key, now) {
            Known::Tenant(record) => {
                self.metrics.cache_hits.inc();
                return Ok(Some(record));
            }
            Known::Nobody => {
                self.count_unknown("unknown_keys");
                return Ok(None);
            }
            Known::NotCached => {}
        }
        if !self.filter.may_contain(key) {
            let exact = matches!(self.store, Store::Embedded(_));
            if exact || !self.unseen_reads.spend(now) {
                self.count_unknown("key_filter");
                return Ok(None);
            }
        }
        self.metrics.cache_misses.inc();
        let (as_of, record) = match &self.store {
            Store::Embedded(store) => store.by_key(key)?,
            Store::Redis(store) => store.by_key(key).await?,
        };
        let Some(record) = record else {
            self.cache.fill_unknown(*key, as_of);
            return Ok(None);
        };
        let record = Arc::new(record);
        if self.cache.fill(record.clone(), as_of) {
            self.count_entries();
        }
        let works = record
            .key_hashes()
            .any(|(hash, expires_at)| hash == *key && expires_at.is_none_or(|at| at > now));
        Ok(works.then_some(record))
    }

    fn ensure_attached(&self) -> Result<(), StoreError> {
        if self.attached.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::NotLoaded)
        }
    }

    fn count_unknown(&self, by: &'static str) {
        self.metrics
            .unknown_from_memory
            .get_or_create(&ByLabel { by })
            .inc();
    }

    fn count_entries(&self) {
        let entries = i64::try_from(self.cache.len()).unwrap_or(i64::MAX);
        self.metrics.cache_entries.set(entries);
    }

    pub async fn get(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        Ok(self.record(id).await?.map(|record| record.tenant))
    }

    /// The tenant's record, keys included (hashed): the cached copy, or the store's.
    pub async fn record(&self, id: &str) -> Result<Option<StoredTenant>, StoreError> {
        if let Some(record) = self.cache.by_id(id) {
            return Ok(Some((*record).clone()));
        }
        Ok(self.fetch(id).await?.map(|stored| stored.record))
    }

    /// The tenant a Stripe customer or subscription id belongs to.
    pub async fn by_stripe_id(&self, stripe_id: &str) -> Result<Option<String>, StoreError> {
        match &self.store {
            Store::Embedded(store) => store.by_stripe_id(stripe_id),
            Store::Redis(store) => store.by_stripe_id(stripe_id).await,
        }
    }

    /// Up to `limit` tenants in id order, after `cursor` (a page's `next_cursor`).
    pub async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let limit = limit.max(1);
        let mut records = match &self.store {
            Store::Embedded(store) => store.page(cursor, limit + 1)?,
            Store::Redis(store) => store.page(cursor, limit + 1).await?,
        };
        let more = records.len() > limit;
        records.truncate(limit);
        let next_cursor = more
            .then(|| records.last().map(|r| r.tenant.id.to_string()))
            .flatten();
        Ok(Page {
            tenants: records.into_iter().map(|r| r.tenant).collect(),
            next_cursor,
        })
    }

    /// The ids of the tenants linked to Stripe (or only of those marked for a re-sync): what
    /// the billing sync goes through, without reading any other tenant.
    pub async fn linked(&self, only_marked: bool) -> Result<Vec<String>, StoreError> {
        match &self.store {
            Store::Embedded(store) => store.linked(only_marked),
            Store::Redis(store) => store.linked(only_marked).await,
        }
    }

    /// Every tier at least one tenant is on, from counts the store keeps: the tier reloader
    /// refuses a table without one of them, and reads no tenant to know.
    pub fn tiers_in_use(&self) -> Result<Vec<TierName>, StoreError> {
        match &self.store {
            Store::Embedded(store) => store.tiers_in_use(),
            Store::Redis(_) => {
                self.ensure_attached()?;
                let counts = self.tier_counts.lock().unwrap_or_else(|p| p.into_inner());
                Ok(counts
                    .iter()
                    .filter(|(_, count)| **count > 0)
                    .map(|(tier, _)| tier.clone())
                    .collect())
            }
        }
    }

    pub async fn create(&self, tenant: Tenant, key: StoredKey) -> Result<(), StoreError> {
        self.ensure_attached()?;
        let record = StoredTenant::new(tenant, key);
        let _writer = self.writes.lock().await;
        // A new id: the stored record it replaces is none.
        let id = record.tenant.id.to_string();
        if !self.store(None, record).await? {
            return Err(StoreError::IdTaken(id));
        }
        Ok(())
    }

    /// Applies `change` to the tenant's latest record; `None` if there is no such tenant.
    pub async fn update(
        &self,
        id: &str,
        change: &TenantChange,
    ) -> Result<Option<Tenant>, StoreError> {
        let updated = self
            .modify(id, |record| {
                change.apply(&mut record.tenant);
                Ok::<_, std::convert::Infallible>(record.tenant.clone())
            })
            .await?;
        Ok(updated.map(|Ok(tenant)| tenant))
    }

    /// Changes the tenant's latest record with `edit` and stores it; `edit` returning `Err`
    /// stores nothing and says why. `Ok(None)`: no such tenant. `edit` runs again on a fresh
    /// copy if another replica changed the tenant meanwhile.
    pub async fn modify<T, E>(
        &self,
        id: &str,
        mut edit: impl FnMut(&mut StoredTenant) -> Result<T, E>,
    ) -> Result<Option<Result<T, E>>, StoreError> {
        self.ensure_attached()?;
        let _writer = self.writes.lock().await;
        for _ in 0..WRITE_ATTEMPTS {
            let Some(stored) = self.fetch(id).await? else {
                return Ok(None);
            };
            let mut record = stored.record.clone();
            let result = match edit(&mut record) {
                Ok(result) => result,
                Err(unchanged) => return Ok(Some(Err(unchanged))),
            };
            record.version = stored.record.version + 1;
            if self.store(Some(&stored), record).await? {
                return Ok(Some(Ok(result)));
            }
            tracing::info!(tenant = %id, "tenant changed by another replica meanwhile; retrying");
        }
        Err(StoreError::Contended {
            attempts: WRITE_ATTEMPTS,
        })
    }

    /// The tenant's record as the store holds it now, with its bytes.
    async fn fetch(&self, id: &str) -> Result<Option<Stored>, StoreError> {
        match &self.store {
            Store::Embedded(store) => Ok(store.read(id)?.1),
            Store::Redis(store) => Ok(store.read(&[id]).await?.1.into_iter().next().flatten()),
        }
    }

    /// Stores `record` if the stored one is still `before` (`None`: no record); then the
    /// cache and the key filter learn it. Returns whether it was written. Callers hold
    /// `writes`.
    async fn store(
        &self,
        before: Option<&Stored>,
        record: StoredTenant,
    ) -> Result<bool, StoreError> {
        let change = IndexChange::between(before.map(|s| &s.record), &record);
        let json =
            serde_json::to_vec(&record).map_err(|e| StoreError::malformed("tenant record", e))?;
        let id = record.tenant.id.clone();
        let expected = before.map(|s| s.json.as_slice());
        let (written, in_order) = match &self.store {
            Store::Embedded(store) => {
                let write = embedded::Write {
                    id: id.to_string(),
                    expected: expected.map(<[u8]>::to_vec),
                    json,
                    change: change.clone(),
                };
                // Every change of the embedded store is made here, under `writes`: in order.
                (store.write(write).await?, true)
            }
            // Not in order with other replicas' changes: the change log brings it again, in
            // order.
            Store::Redis(store) => (store.write(&id, expected, &json, &change).await?, false),
        };
        let Some(version) = written else {
            return Ok(false);
        };
        for key in &change.keys_added {
            self.filter.insert(key);
        }
        self.cache
            .apply(version, in_order, &id, Some(Arc::new(record)));
        Ok(true)
    }

    /// Whether this replica follows the store's changes and the store answers.
    pub async fn health(&self) -> Result<(), StoreError> {
        match &self.store {
            Store::Embedded(_) => Ok(()),
            Store::Redis(store) => {
                store.ping().await?;
                self.ensure_attached()
            }
        }
    }

    /// Redis: follows the change log for as long as the directory lives (building the
    /// indexes of an older layout first, if needed). The task holds only a weak reference to
    /// the cache and ends when it is dropped.
    pub fn spawn_feed(&self, target: RedisTarget) {
        let Store::Redis(store) = &self.store else {
            return;
        };
        let feed = Feed {
            store: store.clone(),
            cache: Arc::downgrade(&self.cache),
            filter: self.filter.clone(),
            attached: self.attached.clone(),
            tier_counts: self.tier_counts.clone(),
            metrics: self.metrics.clone(),
        };
        tokio::spawn(feed.run(target));
    }
}

/// A replica's following of the Redis change log.
struct Feed {
    store: Arc<RedisRegistry>,
    cache: Weak<Cache>,
    filter: Arc<KeyFilter>,
    attached: Arc<AtomicBool>,
    tier_counts: Arc<std::sync::Mutex<HashMap<TierName, i64>>>,
    metrics: RegistryMetrics,
}

/// Where the feed stands between reads.
#[derive(Default)]
struct Cursor {
    /// The log entry to read after; `None`: attach from the log's end first.
    after: Option<String>,
    /// Why the next attachment happens.
    reason: &'static str,
    /// A version the store was found at, ahead of the cache, after a quiet read: if the next
    /// quiet read still finds the cache behind it, the log lost changes.
    ahead: Option<u64>,
}

impl Feed {
    async fn run(self, target: RedisTarget) {
        let mut feed: Option<RedisConnection> = None;
        let mut cursor = Cursor {
            reason: "start",
            ..Cursor::default()
        };
        let mut backoff = Duration::from_millis(50);
        while self.cache.strong_count() > 0 {
            match self.step(&target, &mut feed, &mut cursor).await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(error) => {
                    if let Some(suppressed) = crate::log_limit::admit("tenant_feed") {
                        tracing::warn!(%error, suppressed, retry_ms = backoff.as_millis() as u64, "tenant change feed lost Redis");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Attaches, or reads and applies the next changes.
    async fn step(
        &self,
        target: &RedisTarget,
        feed: &mut Option<RedisConnection>,
        cursor: &mut Cursor,
    ) -> Result<(), StoreError> {
        let Some(cache) = self.cache.upgrade() else {
            return Ok(());
        };
        let connection = match feed {
            Some(connection) => connection.clone(),
            None => {
                let connection =
                    RedisConnection::connect_for_blocking(target, self.store.timeout(), FEED_BLOCK)
                        .await?;
                *feed = Some(connection.clone());
                connection
            }
        };
        let Some(after) = cursor.after.clone() else {
            self.store.migrate().await?;
            cursor.after = Some(self.attach(&cache, cursor.reason).await?);
            cursor.ahead = None;
            return Ok(());
        };
        // The read waits for news: no strong reference to the cache meanwhile.
        drop(cache);
        let changes = self
            .store
            .changes(&connection, &after, FEED_BATCH, FEED_BLOCK)
            .await?;
        let Some(cache) = self.cache.upgrade() else {
            return Ok(());
        };
        let Some(changes) = changes else {
            return self.check_quiet(&cache, cursor).await;
        };
        cursor.ahead = None;
        for change in changes {
            let applied = cache.applied();
            if change.version <= applied {
                cursor.after = Some(change.entry);
                continue;
            }
            if change.version != applied + 1 {
                tracing::warn!(
                    applied,
                    next = change.version,
                    "tenant changes were missed (cut off longer than the change log reaches); attaching again"
                );
                cursor.after = None;
                cursor.reason = "gap";
                return Ok(());
            }
            cursor.after = Some(change.entry.clone());
            self.apply(&cache, change);
        }
        Ok(())
    }

    /// After a read that found nothing: the store's version must be the cache's.
    async fn check_quiet(&self, cache: &Cache, cursor: &mut Cursor) -> Result<(), StoreError> {
        let version = self.store.version().await?;
        let applied = cache.applied();
        if version < applied {
            tracing::warn!(
                version,
                applied,
                "the tenant registry's version went back (Redis lost its data?); attaching again"
            );
            cursor.after = None;
            cursor.reason = "reset";
        } else if version > applied {
            if cursor.ahead.is_some_and(|ahead| applied < ahead) {
                tracing::warn!(
                    version,
                    applied,
                    "the change log lacks changes the registry has; attaching again"
                );
                cursor.after = None;
                cursor.reason = "gap";
            } else {
                cursor.ahead = Some(version);
            }
        } else {
            cursor.ahead = None;
        }
        Ok(())
    }

    /// Starts from the log's end: the cached tenants are read again, the key filter and the
    /// tier counts loaded; returns the entry to read after.
    async fn attach(&self, cache: &Cache, reason: &'static str) -> Result<String, StoreError> {
        let position = self.store.position().await?;
        cache.restart_at(position.version);
        let ids = cache.ids();
        for chunk in ids.chunks(REFRESH_BATCH) {
            let names: Vec<&str> = chunk.iter().map(|id| id.as_ref()).collect();
            let (_, records) = self.store.read(&names).await?;
            for (id, stored) in chunk.iter().zip(records) {
                cache.refresh(id, stored.map(|s| Arc::new(s.record)));
            }
        }
        self.filter.load(&self.store.key_filter().await?);
        *self.tier_counts.lock().unwrap_or_else(|p| p.into_inner()) =
            position.tier_counts.into_iter().collect();
        self.attached.store(true, Ordering::Release);
        self.metrics
            .resyncs
            .get_or_create(&ReasonLabel { reason })
            .inc();
        tracing::info!(
            version = position.version,
            reason,
            cached = ids.len(),
            "following the tenant change log"
        );
        Ok(position.entry)
    }

    fn apply(&self, cache: &Cache, change: Change) {
        if let Some(record) = &change.record {
            for (key, _) in record.key_hashes() {
                self.filter.insert(&key);
            }
            let tier = &record.tenant.tier;
            if change.tier_before.as_ref() != Some(tier) {
                let mut counts = self.tier_counts.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(before) = &change.tier_before {
                    *counts.entry(before.clone()).or_default() -= 1;
                }
                *counts.entry(tier.clone()).or_default() += 1;
            }
        }
        let id: TenantId = change.id;
        cache.apply(change.version, true, &id, change.record.map(Arc::new));
        self.metrics.changes_applied.inc();
    }
}
