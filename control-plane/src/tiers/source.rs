//! The tier table in force, swapped whole on reload.
//!
//! Decisions read the table through an `ArcSwap`: no lock, and a request that started with
//! the old table finishes with it. A reload (SIGHUP, or the file's modification time
//! changing) parses and validates the new file first; an invalid file, or one that drops a
//! tier some tenant is on, is refused with a log line and the old table stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, Guard};

use super::{TierName, TierTable, TierTableError};
use crate::metrics::Metrics;

pub struct TierSource {
    path: Option<PathBuf>,
    table: ArcSwap<TierTable>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Table(#[from] TierTableError),
    #[error("tenants are on tier {0:?}, which the new table does not define")]
    TierInUse(String),
}

impl TierSource {
    /// The table from `path`, or the built-in one.
    pub fn load(path: Option<PathBuf>) -> Result<Self, TierTableError> {
        let table = match &path {
            Some(path) => TierTable::load(path)?,
            None => TierTable::default(),
        };
        Ok(Self {
            path,
            table: ArcSwap::from_pointee(table),
        })
    }

    /// The table in force now.
    pub fn current(&self) -> Guard<Arc<TierTable>> {
        self.table.load()
    }

    /// Reads the file again and puts it in force, unless it is invalid or lacks a tier in
    /// `in_use`. Without a file there is nothing to reload.
    pub fn reload(&self, in_use: impl IntoIterator<Item = TierName>) -> Result<bool, ReloadError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let table = TierTable::load(path)?;
        if let Some(missing) = in_use.into_iter().find(|tier| table.get(tier).is_none()) {
            return Err(ReloadError::TierInUse(missing.to_string()));
        }
        self.table.store(Arc::new(table));
        Ok(true)
    }

    /// The file's modification time, to notice edits.
    pub fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(self.path.as_ref()?).ok()?.modified().ok()
    }
}

/// Reloads on SIGHUP and whenever the file's modification time changes (checked every
/// `poll`), refusing a table that lacks a tier `in_use` names. Runs for the life of the
/// process.
pub fn spawn_reloader<I>(
    tiers: Arc<TierSource>,
    poll: Duration,
    in_use: impl Fn() -> I + Send + 'static,
    metrics: Arc<Metrics>,
) where
    I: IntoIterator<Item = TierName>,
{
    tokio::spawn(async move {
        let mut last = tiers.modified();
        let mut ticks = tokio::time::interval(poll);
        #[cfg(unix)]
        let mut hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hangups.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            let reason = tokio::select! {
                _ = ticks.tick() => {
                    let now = tiers.modified();
                    if now == last {
                        continue;
                    }
                    last = now;
                    "file changed"
                }
                _ = hangup => "SIGHUP",
            };
            match tiers.reload(in_use()) {
                Ok(true) => {
                    tracing::info!(reason, "tier table reloaded");
                    metrics.count_reload("ok");
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(reason, %error, "tier table reload refused; the previous table stays");
                    metrics.count_reload("refused");
                }
            }
        }
    });
}
