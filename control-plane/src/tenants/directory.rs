//! Where tenants live durably, and how every replica's cache learns of changes.
//!
//! - Embedded default: a JSON state file, rewritten atomically (temporary file, fsync, rename)
//!   on every change, so `make run` can restart without losing tenants. Without a file,
//!   tenants last as long as the process.
//! - Redis: the registry hash (see [`crate::storage::redis::key_layout`]); each change is published on a
//!   channel, and every replica's listener replaces that tenant in its cache, so a change made
//!   through any replica applies everywhere within milliseconds. The listener also reloads
//!   everything when it (re)subscribes and every 30 s, in case a message was missed.
//!
//! Writes go to durable storage first and to the cache second: a failed write changes
//! nothing and answers 503. A change is a read-modify-write, so concurrent changes to one
//! tenant (an admin call and a webhook, or two webhooks) must not overwrite each other: within
//! a replica they are serialised; across replicas, the Redis write is a compare-and-set on
//! the record that was read, retried on a conflict.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio::sync::Mutex;

use super::registry::Tenants;
use super::{KeyHash, KeyOwner, StoredKey, StoredTenant, Tenant, TenantChange};
use crate::storage::StoreError;
use crate::storage::redis::key_layout::{TENANT_CHANGES, TENANTS};
use crate::storage::redis::{RedisConnection, RedisTarget, bounded, ping, scripts};
use crate::storage::state_file::{StateFile, StateFileError};

/// How often the Redis listener reloads every tenant, whatever it heard.
const FULL_RELOAD_PERIOD: Duration = Duration::from_secs(30);

/// How many times a change is retried when another replica changed the tenant between the
/// read and the write; past it the caller gets 503 (and Stripe, for instance, retries).
const WRITE_ATTEMPTS: usize = 5;

pub struct Directory {
    cache: Arc<Tenants>,
    durable: Durable,
    /// Serialises this replica's writes: no two read-modify-writes interleave, and no two
    /// state-file snapshots either.
    writes: Mutex<()>,
    /// Whether the cache holds the durable records yet. Redis-backed directories fill it
    /// from the listener; until then the replica is not ready.
    loaded: Arc<AtomicBool>,
}

enum Durable {
    Process,
    File(StateFile),
    Redis {
        connection: RedisConnection,
        timeout: Duration,
        compare_and_set: redis::Script,
    },
}

impl Directory {
    /// Tenants that last as long as the process.
    pub fn in_process() -> Self {
        Self {
            cache: Arc::default(),
            durable: Durable::Process,
            writes: Mutex::new(()),
            loaded: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Tenants in a state file; loads it now if it exists.
    pub fn file(path: PathBuf) -> Result<Self, StateFileError> {
        let cache = Arc::new(Tenants::default());
        let (file, records) = StateFile::open::<Vec<StoredTenant>>(path.clone())?;
        if let Some(records) = records {
            tracing::info!(tenants = records.len(), path = %path.display(), "state file loaded");
            cache.replace_all(records);
        }
        Ok(Self {
            cache,
            durable: Durable::File(file),
            writes: Mutex::new(()),
            loaded: Arc::new(AtomicBool::new(true)),
        })
    }

    /// Tenants in Redis. The cache fills when the listener (see [`Directory::spawn_listener`])
    /// first loads them.
    pub fn redis(connection: RedisConnection, timeout: Duration) -> Self {
        Self {
            cache: Arc::default(),
            durable: Durable::Redis {
                connection,
                timeout,
                compare_and_set: redis::Script::new(scripts::COMPARE_AND_SET),
            },
            writes: Mutex::new(()),
            loaded: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn get(&self, id: &str) -> Option<Tenant> {
        self.cache.get(id)
    }

    /// Every tenant, by id.
    pub fn list(&self) -> Vec<Tenant> {
        let mut tenants: Vec<Tenant> = self.cache.records().into_iter().map(|r| r.tenant).collect();
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        tenants
    }

    /// The tenant a key belongs to, if the key works at `now` (seconds since the epoch).
    /// Before a replica has loaded the tenants, no key can be judged: [`StoreError::NotLoaded`],
    /// so the filter applies its failure mode rather than refusing a valid key.
    pub fn by_key(&self, key: &KeyHash, now: u64) -> Result<Option<KeyOwner>, StoreError> {
        self.ensure_loaded()?;
        Ok(self.cache.by_key(key, now))
    }

    /// The whole tenant a key belongs to, if the key works at `now`; as [`Directory::by_key`].
    pub fn tenant_by_key(&self, key: &KeyHash, now: u64) -> Result<Option<Tenant>, StoreError> {
        self.ensure_loaded()?;
        Ok(self.cache.tenant_by_key(key, now))
    }

    fn ensure_loaded(&self) -> Result<(), StoreError> {
        if self.loaded.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::NotLoaded)
        }
    }

    /// The tenant a Stripe customer or subscription id belongs to.
    pub fn by_stripe_id(&self, stripe_id: &str) -> Option<String> {
        self.cache.by_stripe_id(stripe_id).map(|id| id.to_string())
    }

    /// The tenant's record, keys included (hashed).
    pub fn record(&self, id: &str) -> Option<StoredTenant> {
        self.cache.record(id)
    }

    pub async fn create(&self, tenant: Tenant, key: StoredKey) -> Result<(), StoreError> {
        let record = StoredTenant::new(tenant, key);
        let _writer = self.writes.lock().await;
        // A new id: the stored record it replaces is none.
        if !self.store(&record, None).await? {
            return Err(StoreError::IdTaken(record.tenant.id.to_string()));
        }
        self.cache.replace(&record.tenant.id.clone(), Some(record));
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
        let _writer = self.writes.lock().await;
        for _ in 0..WRITE_ATTEMPTS {
            let Some((mut record, read)) = self.latest(id).await? else {
                return Ok(None);
            };
            let result = match edit(&mut record) {
                Ok(result) => result,
                Err(unchanged) => return Ok(Some(Err(unchanged))),
            };
            if self.store(&record, read.as_deref()).await? {
                self.cache.replace(id, Some(record));
                return Ok(Some(Ok(result)));
            }
            tracing::info!(tenant = %id, "tenant changed by another replica meanwhile; retrying");
        }
        Err(StoreError::Contended {
            attempts: WRITE_ATTEMPTS,
        })
    }

    /// The freshest record, and in Redis mode the stored JSON it was read from (the value a
    /// write must still find there): from Redis when shared, so a change made through another
    /// replica a moment ago is not overwritten.
    async fn latest(&self, id: &str) -> Result<Option<(StoredTenant, Option<String>)>, StoreError> {
        match &self.durable {
            Durable::Redis {
                connection,
                timeout,
                ..
            } => fetch(connection, *timeout, id).await,
            Durable::Process | Durable::File(_) => {
                Ok(self.cache.record(id).map(|record| (record, None)))
            }
        }
    }

    /// Stores the record; in Redis mode only if the stored JSON is still `read` (`None`: no
    /// record). Returns whether it was written. Callers hold `writes`.
    async fn store(&self, record: &StoredTenant, read: Option<&str>) -> Result<bool, StoreError> {
        match &self.durable {
            Durable::Process => Ok(true),
            Durable::File(file) => {
                let mut records = self.cache.records();
                records.retain(|r| r.tenant.id != record.tenant.id);
                records.push(record.clone());
                records.sort_by(|a, b| a.tenant.id.cmp(&b.tenant.id));
                file.write(&records).await.map(|()| true)
            }
            Durable::Redis {
                connection,
                timeout,
                compare_and_set,
            } => {
                let json = serde_json::to_string(record)
                    .map_err(|e| StoreError::malformed("tenant record", e))?;
                let mut invocation = compare_and_set.prepare_invoke();
                invocation
                    .key(TENANTS)
                    .arg(record.tenant.id.as_ref())
                    .arg(read.unwrap_or(""))
                    .arg(json)
                    .arg(TENANT_CHANGES);
                let written: u8 = bounded(connection, *timeout, |mut c| async move {
                    invocation.invoke_async(&mut c).await
                })
                .await?;
                Ok(written == 1)
            }
        }
    }

    /// Whether the tenants are loaded and their durable home answers.
    pub async fn health(&self) -> Result<(), StoreError> {
        match &self.durable {
            Durable::Process | Durable::File(_) => Ok(()),
            Durable::Redis {
                connection,
                timeout,
                ..
            } => {
                ping(connection, *timeout).await?;
                self.ensure_loaded()
            }
        }
    }

    /// In Redis mode, keeps this replica's cache in step with every other replica's changes.
    /// The task holds only a weak reference to the cache and ends when it is dropped.
    pub fn spawn_listener(&self, target: RedisTarget) {
        let Durable::Redis {
            connection,
            timeout,
            ..
        } = &self.durable
        else {
            return;
        };
        let cache = Arc::downgrade(&self.cache);
        let loaded = self.loaded.clone();
        let (connection, timeout) = (connection.clone(), *timeout);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            while cache.strong_count() > 0 {
                match listen(&target, &connection, timeout, &cache, &loaded).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, retry_ms = backoff.as_millis() as u64, "tenant change listener lost Redis");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        });
    }
}

/// A subscription to the change channel through the first node that answers: Redis Cluster
/// forwards every PUBLISH to every node, so any one will do, and a seed that is down must
/// not keep the replica from loading its tenants.
async fn subscribe(
    target: &RedisTarget,
    timeout: Duration,
) -> Result<redis::aio::PubSub, StoreError> {
    let mut last = StoreError::NotLoaded;
    for url in target.urls() {
        let attempt = async {
            let client = redis::Client::open(url.as_str())?;
            let mut pubsub = tokio::time::timeout(timeout * 10, client.get_async_pubsub())
                .await
                .map_err(|_| StoreError::TimedOut(timeout * 10))??;
            pubsub.subscribe(TENANT_CHANGES).await?;
            Ok::<_, StoreError>(pubsub)
        };
        match attempt.await {
            Ok(pubsub) => return Ok(pubsub),
            Err(error) => {
                tracing::debug!(node = %crate::storage::redis::redact(url), %error, "cannot subscribe through this node");
                last = error;
            }
        }
    }
    Err(last)
}

/// Subscribes, loads everything, then applies each announced change. Returns `Ok` only when
/// the cache is gone (shutdown).
async fn listen(
    target: &RedisTarget,
    connection: &RedisConnection,
    timeout: Duration,
    cache: &Weak<Tenants>,
    loaded: &AtomicBool,
) -> Result<(), StoreError> {
    let mut pubsub = subscribe(target, timeout).await?;
    // Subscribed first, loaded second: a change made in between is both loaded and heard.
    reload_all(connection, timeout, cache).await?;
    loaded.store(true, Ordering::Release);
    let mut messages = pubsub.on_message();
    let mut reload = tokio::time::interval(FULL_RELOAD_PERIOD);
    reload.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(StoreError::SubscriptionClosed);
                };
                let Ok(id) = message.get_payload::<String>() else { continue };
                let record = fetch(connection, timeout, &id).await?.map(|(record, _)| record);
                let Some(cache) = cache.upgrade() else { return Ok(()) };
                cache.replace(&id, record);
            }
            _ = reload.tick() => reload_all(connection, timeout, cache).await?,
        }
        if cache.strong_count() == 0 {
            return Ok(());
        }
    }
}

async fn reload_all(
    connection: &RedisConnection,
    timeout: Duration,
    cache: &Weak<Tenants>,
) -> Result<(), StoreError> {
    let all: Vec<(String, String)> = bounded(connection, timeout * 10, |mut c| async move {
        c.hgetall(TENANTS).await
    })
    .await?;
    let records: Vec<StoredTenant> = all
        .into_iter()
        .filter_map(|(id, json)| match serde_json::from_str(&json) {
            Ok(record) => Some(record),
            Err(error) => {
                tracing::error!(tenant = %id, %error, "unreadable tenant record skipped");
                None
            }
        })
        .collect();
    if let Some(cache) = cache.upgrade() {
        tracing::debug!(tenants = records.len(), "tenants reloaded from Redis");
        cache.replace_all(records);
    }
    Ok(())
}

/// A tenant's record from Redis, with the JSON it was stored as.
async fn fetch(
    connection: &RedisConnection,
    timeout: Duration,
    id: &str,
) -> Result<Option<(StoredTenant, Option<String>)>, StoreError> {
    let id = id.to_owned();
    let json: Option<String> = bounded(connection, timeout, |mut c| async move {
        c.hget(TENANTS, id).await
    })
    .await?;
    json.map(|json| {
        serde_json::from_str(&json)
            .map(|record| (record, Some(json)))
            .map_err(|e| StoreError::malformed("tenant record", e))
    })
    .transpose()
}
