//! The embedded store of tenants (the default of `make run`): a redb database, one record per
//! tenant and one entry per key hash, written transactionally.
//!
//! Why redb: a copy-on-write B-tree in one file, pure Rust with no dependencies of its own
//! (SQLite would bring a C build), transactions with a durable commit (fsync) and a file that
//! a killed process leaves at its last commit. What Tollgate needs is exactly a few ordered
//! maps updated together, which is what redb is.
//!
//! | table | key → value |
//! |---|---|
//! | `tenants` | tenant id → record (JSON, the same document as Redis holds) |
//! | `key_hashes` | key hash (32 bytes) → tenant id |
//! | `stripe_ids` | Stripe customer or subscription id → tenant id |
//! | `tier_counts` | tier → tenants on it |
//! | `linked`, `needs_sync` | tenant id → (): the billing sync's sets |
//! | `meta` | `version` (+1 per write), `imported_state_file` (1 once a state file was imported) |
//!
//! A write is one transaction: the record, every index entry it changes (see
//! [`super::changes`]) and the version, committed together or not at all, in a blocking
//! thread (a commit waits for the disk; the decision threads never do). Its cost does not
//! depend on how many tenants there are: a few B-tree pages per table, not the whole registry
//! as the state file of earlier versions was.
//!
//! The state file of those versions is imported once, in one transaction that also marks the
//! database as imported, then renamed (see [`crate::storage::state_file`]).

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use super::changes::IndexChange;
use super::{KeyHash, Stored, StoredTenant};
use crate::storage::StoreError;
use crate::storage::embedded::{self, OpenError};
use crate::storage::state_file::{self, StateFileError};
use crate::tiers::TierName;

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
const KEYS: TableDefinition<&[u8], &str> = TableDefinition::new("key_hashes");
const STRIPE_IDS: TableDefinition<&str, &str> = TableDefinition::new("stripe_ids");
const TIER_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("tier_counts");
const LINKED: TableDefinition<&str, ()> = TableDefinition::new("linked");
const NEEDS_SYNC: TableDefinition<&str, ()> = TableDefinition::new("needs_sync");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const VERSION: &str = "version";
const IMPORTED: &str = "imported_state_file";

/// redb's own page cache. The inner pages of a million tenants' B-trees fit; leaves come from
/// the operating system's cache. Memory stays flat however many tenants there are.
const PAGE_CACHE_BYTES: usize = 64 << 20;

/// Records per transaction when importing.
const IMPORT_BATCH: usize = 10_000;

/// Why the embedded registry could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    #[error("the tenant registry {path}: {source}")]
    Store { path: String, source: StoreError },
}

/// One write: tenant `id` becomes `json` if it still is `expected` (`None`: no such tenant).
pub struct Write {
    pub id: String,
    pub expected: Option<Vec<u8>>,
    pub json: Vec<u8>,
    pub change: IndexChange,
}

#[derive(Clone)]
pub struct Embedded {
    db: Arc<Database>,
}

impl Embedded {
    /// Opens (or creates) the registry at `database`, locked for this process; imports the
    /// state file at `import_from` if there is one and this database never imported one.
    pub fn open(database: &Path, import_from: Option<&Path>) -> Result<Self, RegistryError> {
        let store_failed = |source: StoreError| RegistryError::Store {
            path: database.display().to_string(),
            source,
        };
        let db = embedded::open(database, PAGE_CACHE_BYTES)?;
        let registry = Self::with(db).map_err(store_failed)?;
        if let Some(legacy) = import_from {
            let Some(records) = state_file::read::<Vec<StoredTenant>>(legacy)? else {
                return Ok(registry);
            };
            registry
                .import_state_file(legacy, &records)
                .map_err(store_failed)?;
            let retired = state_file::retire(legacy)?;
            tracing::info!(path = %retired.display(), "state file set aside");
        }
        Ok(registry)
    }

    /// A registry that lasts as long as the process.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::with(embedded::in_memory(PAGE_CACHE_BYTES)?)
    }

    /// Creates the tables, so every read finds them.
    fn with(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        {
            txn.open_table(RECORDS)?;
            txn.open_table(KEYS)?;
            txn.open_table(STRIPE_IDS)?;
            txn.open_table(TIER_COUNTS)?;
            txn.open_table(LINKED)?;
            txn.open_table(NEEDS_SYNC)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Imports the records of the state file at `path`, with the mark that this database has
    /// imported one, in one transaction: a crash before the file is set aside leaves a file
    /// that the next start sets aside without importing it twice.
    fn import_state_file(&self, path: &Path, records: &[StoredTenant]) -> Result<(), StoreError> {
        if meta(&self.begin_read()?, IMPORTED)? > 0 {
            tracing::warn!(path = %path.display(), "this registry imported a state file before; the file is set aside, not imported again");
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        for record in records {
            import_one(&txn, record)?;
        }
        bump(&txn, IMPORTED)?;
        bump(&txn, VERSION)?;
        txn.commit()?;
        tracing::info!(tenants = records.len(), path = %path.display(), "state file imported into the tenant registry");
        Ok(())
    }

    /// Stores `records` as they are (new tenants, or replacing those of the same id), up to
    /// ten thousand per transaction: seeding and imports. Blocking.
    pub fn import(&self, records: &[StoredTenant]) -> Result<(), StoreError> {
        for batch in records.chunks(IMPORT_BATCH) {
            let txn = self.db.begin_write()?;
            for record in batch {
                import_one(&txn, record)?;
            }
            bump(&txn, VERSION)?;
            txn.commit()?;
        }
        Ok(())
    }

    /// The registry version reads are as of (the last commit's).
    pub fn version(&self) -> Result<u64, StoreError> {
        meta(&self.begin_read()?, VERSION)
    }

    /// Tenant `id`'s record, with the version it is as of.
    pub fn read(&self, id: &str) -> Result<(u64, Option<Stored>), StoreError> {
        let txn = self.begin_read()?;
        let version = meta(&txn, VERSION)?;
        let records = txn.open_table(RECORDS)?;
        let json = records.get(id)?.map(|guard| guard.value().to_vec());
        let stored = json
            .map(|json| {
                let record = parse(&json)?;
                Ok::<_, StoreError>(Stored { record, json })
            })
            .transpose()?;
        Ok((version, stored))
    }

    /// The record of the tenant that has `key`, with the version it is as of.
    pub fn by_key(&self, key: &KeyHash) -> Result<(u64, Option<StoredTenant>), StoreError> {
        let txn = self.begin_read()?;
        let version = meta(&txn, VERSION)?;
        let id = txn
            .open_table(KEYS)?
            .get(key.as_slice())?
            .map(|guard| guard.value().to_owned());
        let Some(id) = id else {
            return Ok((version, None));
        };
        let records = txn.open_table(RECORDS)?;
        let record = records
            .get(id.as_str())?
            .map(|guard| parse(guard.value()))
            .transpose()?;
        Ok((version, record))
    }

    pub fn by_stripe_id(&self, stripe_id: &str) -> Result<Option<String>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(STRIPE_IDS)?;
        Ok(table.get(stripe_id)?.map(|guard| guard.value().to_owned()))
    }

    /// Up to `limit` records in id order, after `after`.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<StoredTenant>, StoreError> {
        let txn = self.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page = Vec::with_capacity(limit.min(1024));
        for entry in records.range::<&str>((from, Bound::Unbounded))?.take(limit) {
            let (_, json) = entry?;
            page.push(parse(json.value())?);
        }
        Ok(page)
    }

    /// The tenants linked to Stripe, or only those marked for a re-sync.
    pub fn linked(&self, only_marked: bool) -> Result<Vec<String>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(if only_marked { NEEDS_SYNC } else { LINKED })?;
        let mut ids = Vec::new();
        for entry in table.iter()? {
            ids.push(entry?.0.value().to_owned());
        }
        Ok(ids)
    }

    /// Every tier at least one tenant is on.
    pub fn tiers_in_use(&self) -> Result<Vec<TierName>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(TIER_COUNTS)?;
        let mut tiers = Vec::new();
        for entry in table.iter()? {
            let (tier, count) = entry?;
            if count.value() > 0 {
                tiers.push(tier.value().into());
            }
        }
        Ok(tiers)
    }

    /// Calls `each` with every key hash stored (to build the key filter at start).
    pub fn each_key_hash(&self, mut each: impl FnMut(&KeyHash)) -> Result<(), StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(KEYS)?;
        for entry in table.iter()? {
            let (key, _) = entry?;
            if let Ok(hash) = KeyHash::try_from(key.value()) {
                each(&hash);
            }
        }
        Ok(())
    }

    /// Applies `write` in one transaction, in a blocking thread. Returns the new registry
    /// version, or `None` when the stored record is no longer `write.expected`.
    pub async fn write(&self, write: Write) -> Result<Option<u64>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || commit(&db, &write))
            .await
            .map_err(|e| StoreError::Embedded(format!("the write's thread failed: {e}")))?
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }
}

fn commit(db: &Database, write: &Write) -> Result<Option<u64>, StoreError> {
    let txn = db.begin_write()?;
    {
        let records = txn.open_table(RECORDS)?;
        let stored = records.get(write.id.as_str())?.map(|g| g.value().to_vec());
        if stored != write.expected {
            return Ok(None);
        }
    }
    put(&txn, &write.id, &write.json, &write.change)?;
    let version = bump(&txn, VERSION)?;
    txn.commit()?;
    Ok(Some(version))
}

/// Stores one record as it is, indexes updated from what was stored before.
fn import_one(txn: &WriteTransaction, record: &StoredTenant) -> Result<(), StoreError> {
    let id = record.tenant.id.as_ref();
    let before = {
        let records = txn.open_table(RECORDS)?;
        let stored = records.get(id)?.map(|g| g.value().to_vec());
        stored.map(|json| parse(&json)).transpose()?
    };
    let json = serde_json::to_vec(record).map_err(|e| StoreError::malformed("tenant record", e))?;
    put(
        txn,
        id,
        &json,
        &IndexChange::between(before.as_ref(), record),
    )
}

/// The record and every index entry `change` names.
fn put(
    txn: &WriteTransaction,
    id: &str,
    json: &[u8],
    change: &IndexChange,
) -> Result<(), StoreError> {
    txn.open_table(RECORDS)?.insert(id, json)?;
    let mut keys = txn.open_table(KEYS)?;
    for key in &change.keys_removed {
        // Only if the entry still names this tenant.
        let ours = keys.get(key.as_slice())?.is_some_and(|g| g.value() == id);
        if ours {
            keys.remove(key.as_slice())?;
        }
    }
    for key in &change.keys_added {
        keys.insert(key.as_slice(), id)?;
    }
    let mut stripe = txn.open_table(STRIPE_IDS)?;
    for stripe_id in &change.stripe_ids_removed {
        let ours = stripe
            .get(stripe_id.as_str())?
            .is_some_and(|g| g.value() == id);
        if ours {
            stripe.remove(stripe_id.as_str())?;
        }
    }
    for stripe_id in &change.stripe_ids_added {
        stripe.insert(stripe_id.as_str(), id)?;
    }
    if change.tier_before.as_ref() != Some(&change.tier_after) {
        let mut counts = txn.open_table(TIER_COUNTS)?;
        if let Some(before) = &change.tier_before {
            let count = counts.get(before.as_ref())?.map_or(0, |g| g.value());
            if count <= 1 {
                counts.remove(before.as_ref())?;
            } else {
                counts.insert(before.as_ref(), count - 1)?;
            }
        }
        let count = counts
            .get(change.tier_after.as_ref())?
            .map_or(0, |g| g.value());
        counts.insert(change.tier_after.as_ref(), count + 1)?;
    }
    for (table, member) in [(LINKED, change.linked), (NEEDS_SYNC, change.needs_sync)] {
        let mut set = txn.open_table(table)?;
        if member {
            set.insert(id, ())?;
        } else {
            set.remove(id)?;
        }
    }
    Ok(())
}

fn meta(txn: &ReadTransaction, name: &str) -> Result<u64, StoreError> {
    Ok(txn.open_table(META)?.get(name)?.map_or(0, |g| g.value()))
}

/// Adds one to a `meta` counter; returns its new value.
fn bump(txn: &WriteTransaction, name: &str) -> Result<u64, StoreError> {
    let mut table = txn.open_table(META)?;
    let next = table.get(name)?.map_or(0, |g| g.value()) + 1;
    table.insert(name, next)?;
    Ok(next)
}

fn parse(json: &[u8]) -> Result<StoredTenant, StoreError> {
    serde_json::from_slice(json).map_err(|e| StoreError::malformed("tenant record", e))
}
