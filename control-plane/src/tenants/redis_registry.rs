//! The Redis store of tenants (several replicas share it): records and their indexes in the
//! `{registry}` keys (see [`crate::storage::redis::key_layout`]), every operation one round
//! trip, and the change log every replica follows.
//!
//! - A write is one script call ([`scripts::REGISTRY_WRITE`]): a compare-and-set on the record
//!   read, its index entries, the registry's version (+1) and one entry in the change log, as
//!   one atomic step. Its cost does not depend on how many tenants there are.
//! - A lookup by key hash is one script call returning the record and the version it is as of
//!   ([`scripts::REGISTRY_BY_KEY`]).
//! - The change log is a stream trimmed to the configured length (`MAXLEN ~`). Each entry
//!   carries its version, the tenant and the record as written, so a replica applies it
//!   without another read; versions are consecutive, so a replica that misses one (it was cut
//!   off longer than the log reaches) knows, and starts again from the log's end.
//! - Layouts of earlier versions (records only, change notices over pub/sub) get their
//!   indexes built once, by the first replica of this version to start ([`RedisRegistry::migrate`]).

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use redis::AsyncCommands;
use redis::streams::StreamReadReply;

use super::changes::IndexChange;
use super::key_filter::KeyFilter;
use super::{KeyHash, Stored, StoredTenant, TenantId};
use crate::storage::StoreError;
use crate::storage::redis::key_layout::{
    KEY_FILTER, KEY_FILTER_IMPORT, REGISTRY_META, REGISTRY_MIGRATING, REGISTRY_VERSION,
    REGISTRY_WRITE_KEYS, TENANT_CHANGES, TENANT_IDS, TENANT_KEYS, TENANT_STRIPE_IDS,
    TENANT_TIER_COUNTS, TENANTS, TENANTS_LINKED, TENANTS_NEEDING_SYNC,
};
use crate::storage::redis::{RedisConnection, bounded, ping, scripts};
use crate::tiers::TierName;

/// The layout of the registry's keys this version reads and writes.
const SCHEMA: &str = "2";

/// Records scanned per round trip when building the indexes of an older layout.
const MIGRATION_BATCH: usize = 500;

/// How long the replica building indexes holds the job before another may take it over.
const MIGRATION_LEASE: Duration = Duration::from_secs(120);

/// Where the change log stands: the registry's version, the id of the log's entry of that
/// version, and how many tenants each tier has, all as of one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub version: u64,
    pub entry: String,
    pub tier_counts: Vec<(TierName, i64)>,
}

/// One entry of the change log.
#[derive(Debug, Clone)]
pub struct Change {
    /// The stream entry's id: where the next read starts.
    pub entry: String,
    pub version: u64,
    pub id: TenantId,
    pub record: Option<StoredTenant>,
    pub tier_before: Option<TierName>,
}

pub struct RedisRegistry {
    connection: RedisConnection,
    /// Connections driven by other runtimes, by runtime: a read on the decision threads (a
    /// cache miss) goes over their own connection, never waiting on the public threads that
    /// drive `connection`.
    local: RwLock<Vec<(tokio::runtime::Id, RedisConnection)>>,
    timeout: Duration,
    change_log: usize,
    write: redis::Script,
    by_key: redis::Script,
    read: redis::Script,
    page: redis::Script,
    position: redis::Script,
}

impl RedisRegistry {
    /// Over `connection`, every call bounded by `timeout`; the change log keeps about
    /// `change_log` entries.
    pub fn new(connection: RedisConnection, timeout: Duration, change_log: usize) -> Self {
        Self {
            connection,
            local: RwLock::default(),
            timeout,
            change_log,
            write: redis::Script::new(scripts::REGISTRY_WRITE),
            by_key: redis::Script::new(scripts::REGISTRY_BY_KEY),
            read: redis::Script::new(scripts::REGISTRY_READ),
            page: redis::Script::new(scripts::REGISTRY_PAGE),
            position: redis::Script::new(scripts::REGISTRY_POSITION),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reads made on the runtime this is called on go over `connection` (made on it).
    pub fn serve_reads_on_this_runtime(&self, connection: RedisConnection) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut local = self.local.write().unwrap_or_else(|p| p.into_inner());
        local.retain(|(id, _)| *id != runtime.id());
        local.push((runtime.id(), connection));
    }

    /// The connection of the runtime this runs on.
    fn reads(&self) -> RedisConnection {
        let runtime = tokio::runtime::Handle::try_current().map(|h| h.id());
        if let Ok(runtime) = runtime {
            let local = self.local.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, connection)) = local.iter().find(|(id, _)| *id == runtime) {
                return connection.clone();
            }
        }
        self.connection.clone()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        ping(&self.connection, self.timeout).await
    }

    /// The record of the tenant that has `key`, with the version it is as of.
    pub async fn by_key(&self, key: &KeyHash) -> Result<(u64, Option<StoredTenant>), StoreError> {
        let mut invocation = self.by_key.prepare_invoke();
        invocation
            .key(TENANT_KEYS)
            .key(TENANTS)
            .key(REGISTRY_VERSION)
            .arg(key.as_slice());
        let reply: Vec<Option<Vec<u8>>> =
            bounded(&self.reads(), self.timeout, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        let version = version_of(reply.first())?;
        let record = reply
            .into_iter()
            .nth(1)
            .flatten()
            .map(|json| parse(&json))
            .transpose()?;
        Ok((version, record))
    }

    /// Records by id (at most a thousand), with the version they are as of. Read before a
    /// write and when attaching, never by a decision: bounded like a write.
    pub async fn read(&self, ids: &[&str]) -> Result<(u64, Vec<Option<Stored>>), StoreError> {
        let mut invocation = self.read.prepare_invoke();
        invocation.key(TENANTS).key(REGISTRY_VERSION);
        for id in ids {
            invocation.arg(*id);
        }
        let reply: Vec<Option<Vec<u8>>> =
            bounded(&self.reads(), self.timeout * 10, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        let version = version_of(reply.first())?;
        let records = reply
            .into_iter()
            .skip(1)
            .map(|json| {
                json.map(|json| {
                    let record = parse(&json)?;
                    Ok::<_, StoreError>(Stored { record, json })
                })
                .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        if records.len() != ids.len() {
            return Err(StoreError::malformed(
                "registry read",
                format!("{} records for {} ids", records.len(), ids.len()),
            ));
        }
        Ok((version, records))
    }

    /// Up to `limit` records in id order, after `after`.
    pub async fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredTenant>, StoreError> {
        let mut invocation = self.page.prepare_invoke();
        invocation
            .key(TENANT_IDS)
            .key(TENANTS)
            .arg(after.unwrap_or(""))
            .arg(limit);
        let reply: Vec<Option<Vec<u8>>> =
            bounded(&self.reads(), self.timeout, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        reply
            .chunks(2)
            .filter_map(|pair| pair.get(1).cloned().flatten())
            .map(|json| parse(&json))
            .collect()
    }

    pub async fn by_stripe_id(&self, stripe_id: &str) -> Result<Option<String>, StoreError> {
        let stripe_id = stripe_id.to_owned();
        bounded(&self.reads(), self.timeout, |mut c| async move {
            c.hget(TENANT_STRIPE_IDS, stripe_id).await
        })
        .await
    }

    /// The tenants linked to Stripe, or only those marked for a re-sync.
    pub async fn linked(&self, only_marked: bool) -> Result<Vec<String>, StoreError> {
        let set = if only_marked {
            TENANTS_NEEDING_SYNC
        } else {
            TENANTS_LINKED
        };
        bounded(&self.connection, self.timeout * 10, |mut c| async move {
            c.smembers(set).await
        })
        .await
    }

    /// Writes `json` as tenant `id`'s record if the stored one is still `expected` (`None`:
    /// no record). Returns the new registry version, or `None` when another writer came first.
    pub async fn write(
        &self,
        id: &str,
        expected: Option<&[u8]>,
        json: &[u8],
        change: &IndexChange,
    ) -> Result<Option<u64>, StoreError> {
        let mut invocation = self.write.prepare_invoke();
        invocation
            .key(&REGISTRY_WRITE_KEYS[..])
            .arg(id)
            .arg(expected.unwrap_or_default())
            .arg(json)
            .arg(change.tier_before.as_deref().unwrap_or(""))
            .arg(change.tier_after.as_ref())
            .arg(u8::from(change.linked))
            .arg(u8::from(change.needs_sync))
            .arg(self.change_log);
        for keys in [&change.keys_removed, &change.keys_added] {
            invocation.arg(keys.len());
            for key in keys {
                invocation.arg(key.as_slice());
            }
        }
        for ids in [&change.stripe_ids_removed, &change.stripe_ids_added] {
            invocation.arg(ids.len());
            for stripe_id in ids {
                invocation.arg(stripe_id.as_str());
            }
        }
        invocation.arg(change.keys_added.len() * KeyFilter::offsets(&[0; 32]).len());
        for key in &change.keys_added {
            for offset in KeyFilter::offsets(key) {
                invocation.arg(offset);
            }
        }
        // Writes come from the admin API, webhooks and the billing sync, never a decision:
        // they get the longer bound, so a Redis busy with a burst of writes slows them down
        // rather than failing them with 503.
        let version: u64 = bounded(&self.connection, self.timeout * 10, |mut c| async move {
            invocation.invoke_async(&mut c).await
        })
        .await?;
        Ok((version > 0).then_some(version))
    }

    /// Where the change log stands now.
    pub async fn position(&self) -> Result<Position, StoreError> {
        let mut invocation = self.position.prepare_invoke();
        invocation
            .key(REGISTRY_VERSION)
            .key(TENANT_CHANGES)
            .key(TENANT_TIER_COUNTS);
        let reply: Vec<String> = bounded(&self.connection, self.timeout, |mut c| async move {
            invocation.invoke_async(&mut c).await
        })
        .await?;
        let malformed = || StoreError::malformed("change log position", format!("{reply:?}"));
        let (Some(version), Some(entry)) = (reply.first(), reply.get(1)) else {
            return Err(malformed());
        };
        let version = version.parse().map_err(|_| malformed())?;
        let tier_counts = reply[2..]
            .chunks_exact(2)
            .map(|pair| (pair[0].as_str().into(), pair[1].parse().unwrap_or(0)))
            .collect();
        Ok(Position {
            version,
            entry: entry.clone(),
            tier_counts,
        })
    }

    /// The registry's version now.
    pub async fn version(&self) -> Result<u64, StoreError> {
        let version: Option<u64> = bounded(&self.connection, self.timeout, |mut c| async move {
            c.get(REGISTRY_VERSION).await
        })
        .await?;
        Ok(version.unwrap_or(0))
    }

    /// The key filter's bits, as Redis holds them.
    pub async fn key_filter(&self) -> Result<Vec<u8>, StoreError> {
        let bits: Option<Vec<u8>> =
            bounded(&self.connection, self.timeout * 10, |mut c| async move {
                c.get(KEY_FILTER).await
            })
            .await?;
        Ok(bits.unwrap_or_default())
    }

    /// Up to `count` changes after log entry `after`, waiting up to `block` for the first, on
    /// `feed` (a connection of its own: see [`RedisConnection::connect_for_blocking`]).
    /// `None`: nothing new within `block`.
    pub async fn changes(
        &self,
        feed: &RedisConnection,
        after: &str,
        count: usize,
        block: Duration,
    ) -> Result<Option<Vec<Change>>, StoreError> {
        let after = after.to_owned();
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX);
        let reply: Option<StreamReadReply> =
            bounded(feed, block + self.timeout, |mut c| async move {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(block_ms)
                    .arg("STREAMS")
                    .arg(TENANT_CHANGES)
                    .arg(after)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some(reply) = reply else {
            return Ok(None);
        };
        let entries = reply.keys.into_iter().flat_map(|key| key.ids);
        let changes = entries
            .map(|entry| {
                let malformed = |what: &str| {
                    StoreError::malformed(
                        "change log entry",
                        format!("{} without {what}", entry.id),
                    )
                };
                let version = entry.get::<u64>("v").ok_or_else(|| malformed("v"))?;
                let id = entry.get::<String>("id").ok_or_else(|| malformed("id"))?;
                let record = entry
                    .get::<Vec<u8>>("r")
                    .filter(|json| !json.is_empty())
                    .map(|json| parse(&json))
                    .transpose()?;
                let tier_before = entry
                    .get::<String>("tb")
                    .filter(|tier| !tier.is_empty())
                    .map(|tier| tier.as_str().into());
                Ok(Change {
                    entry: entry.id.clone(),
                    version,
                    id: id.into(),
                    record,
                    tier_before,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some(changes))
    }

    /// Stores `records` as new tenants, with their indexes, in pipelines of a thousand:
    /// seeding a registry, or moving tenants from another store. The change log does not
    /// carry them: replicas attached meanwhile find them by store reads (their key filters
    /// learn them at the next attachment), so import before the replicas start.
    pub async fn import(&self, records: &[StoredTenant]) -> Result<(), StoreError> {
        let long = self.timeout * 10;
        let filter = KeyFilter::default();
        for batch in records.chunks(1000) {
            let mut pipe = redis::pipe();
            for record in batch {
                let id = record.tenant.id.as_ref();
                let json = serde_json::to_vec(record)
                    .map_err(|e| StoreError::malformed("tenant record", e))?;
                let change = IndexChange::between(None, record);
                pipe.hset(TENANTS, id, json).ignore();
                for key in &change.keys_added {
                    pipe.hset(TENANT_KEYS, key.as_slice(), id).ignore();
                    filter.insert(key);
                }
                for stripe_id in &change.stripe_ids_added {
                    pipe.hset(TENANT_STRIPE_IDS, stripe_id, id).ignore();
                }
                pipe.zadd(TENANT_IDS, id, 0).ignore();
                if change.linked {
                    pipe.sadd(TENANTS_LINKED, id).ignore();
                }
                if change.needs_sync {
                    pipe.sadd(TENANTS_NEEDING_SYNC, id).ignore();
                }
                pipe.hincr(TENANT_TIER_COUNTS, change.tier_after.as_ref(), 1)
                    .ignore();
            }
            bounded(&self.connection, long, |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await?;
        }
        // The filter's bits, ORed into Redis's in one step rather than seven SETBITs a key.
        let scratch = KEY_FILTER_IMPORT;
        let mut pipe = redis::pipe();
        pipe.set(scratch, filter.bytes())
            .ignore()
            .cmd("BITOP")
            .arg("OR")
            .arg(KEY_FILTER)
            .arg(KEY_FILTER)
            .arg(scratch)
            .ignore()
            .del(scratch)
            .ignore()
            .hset(REGISTRY_META, "schema", SCHEMA)
            .ignore();
        bounded(&self.connection, long, |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Builds the indexes of a registry written by an earlier version (records only), once:
    /// the first replica to get here does it while the others wait; a replica that dies
    /// doing it leaves the job to another after [`MIGRATION_LEASE`]. Writes of this version
    /// wait for it (the replicas are not ready until then); replicas of the earlier version
    /// must be stopped first, or their writes meanwhile miss the indexes.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let long = self.timeout * 10;
        loop {
            let schema: Option<String> = bounded(&self.connection, long, |mut c| async move {
                c.hget(REGISTRY_META, "schema").await
            })
            .await?;
            if schema.as_deref() == Some(SCHEMA) {
                return Ok(());
            }
            let lease_ms = u64::try_from(MIGRATION_LEASE.as_millis()).unwrap_or(u64::MAX);
            let taken: Option<String> = bounded(&self.connection, long, |mut c| async move {
                redis::cmd("SET")
                    .arg(REGISTRY_MIGRATING)
                    .arg("1")
                    .arg("NX")
                    .arg("PX")
                    .arg(lease_ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
            if taken.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            self.build_indexes().await?;
            return Ok(());
        }
    }

    async fn build_indexes(&self) -> Result<(), StoreError> {
        let long = self.timeout * 10;
        let mut cursor: u64 = 0;
        let mut tier_counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut tenants = 0usize;
        loop {
            let (next, fields): (u64, Vec<(String, Vec<u8>)>) =
                bounded(&self.connection, long, |mut c| async move {
                    redis::cmd("HSCAN")
                        .arg(TENANTS)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(MIGRATION_BATCH)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let mut pipe = redis::pipe();
            let scanned = fields.len();
            for (id, json) in fields {
                let record = match parse(&json) {
                    Ok(record) => record,
                    Err(error) => {
                        tracing::error!(tenant = %id, %error, "unreadable tenant record left out of the indexes");
                        continue;
                    }
                };
                let change = IndexChange::between(None, &record);
                for key in &change.keys_added {
                    pipe.hset(TENANT_KEYS, key.as_slice(), &id).ignore();
                    for offset in KeyFilter::offsets(key) {
                        pipe.setbit(KEY_FILTER, offset as usize, true).ignore();
                    }
                }
                for stripe_id in &change.stripe_ids_added {
                    pipe.hset(TENANT_STRIPE_IDS, stripe_id, &id).ignore();
                }
                pipe.zadd(TENANT_IDS, &id, 0).ignore();
                if change.linked {
                    pipe.sadd(TENANTS_LINKED, &id).ignore();
                }
                if change.needs_sync {
                    pipe.sadd(TENANTS_NEEDING_SYNC, &id).ignore();
                }
                *tier_counts
                    .entry(change.tier_after.to_string())
                    .or_default() += 1;
                tenants += 1;
            }
            if scanned > 0 {
                bounded(&self.connection, long, |mut c| async move {
                    pipe.query_async::<()>(&mut c).await
                })
                .await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut pipe = redis::pipe();
        pipe.del(TENANT_TIER_COUNTS).ignore();
        for (tier, count) in &tier_counts {
            pipe.hset(TENANT_TIER_COUNTS, tier, count).ignore();
        }
        pipe.hset(REGISTRY_META, "schema", SCHEMA)
            .ignore()
            .del(REGISTRY_MIGRATING)
            .ignore();
        bounded(&self.connection, long, |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await?;
        tracing::info!(tenants, "tenant registry indexes built (layout {SCHEMA})");
        Ok(())
    }
}

fn version_of(value: Option<&Option<Vec<u8>>>) -> Result<u64, StoreError> {
    value
        .and_then(|v| v.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StoreError::malformed("registry version", format!("{value:?}")))
}

fn parse(json: &[u8]) -> Result<StoredTenant, StoreError> {
    serde_json::from_slice(json).map_err(|e| StoreError::malformed("tenant record", e))
}
