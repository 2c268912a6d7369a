//! The storage layer, at the bottom: Redis (connection, key layout, every Lua script), the
//! embedded database file and the state file of earlier versions, with the one error type
//! every store operation returns.
//!
//! Nothing here knows tenants, tiers or HTTP; the window store and the tenant directory build
//! on it.

pub mod embedded;
pub mod redis;
pub mod state_file;

use std::time::Duration;

use ::redis::{RedisError, RetryMethod};

/// Why a store operation failed. Each variant keeps its cause; [`StoreError::is_transient`]
/// tells a failure worth retrying (an outage, a timeout, a race) from one that will fail the
/// same way again (data this version cannot read, a command the server refuses).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer within the bound every call has.
    #[error("no answer from the store within {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// Redis refused or failed the call; transient or not as the error says.
    #[error("Redis failed the call: {0}")]
    Redis(#[source] RedisError),
    /// What the store holds or answered is not in the shape this version writes.
    #[error("unreadable {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// The embedded database failed (a disk error, a full disk); nothing was changed.
    #[error("the embedded registry failed: {0}")]
    Embedded(String),
    /// Another writer changed the record between every read and write attempted.
    #[error("the record kept changing under {attempts} attempts to write it")]
    Contended { attempts: usize },
    /// A record that must be new already exists (a fresh random id collided).
    #[error("the id {0} is taken")]
    IdTaken(String),
    /// The replica is not following the store's changes yet (starting): what it would answer
    /// from memory could be stale.
    #[error("the records are not loaded from the store yet")]
    NotLoaded,
}

impl StoreError {
    /// Whether the same call may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::TimedOut(_)
            | StoreError::Contended { .. }
            | StoreError::IdTaken(_)
            | StoreError::NotLoaded => true,
            StoreError::Redis(error) => !matches!(error.retry_method(), RetryMethod::NoRetry),
            // A full disk or a permission fixed by an operator: worth retrying.
            StoreError::Embedded(_) => true,
            StoreError::Malformed { .. } => false,
        }
    }

    pub fn malformed(what: &'static str, detail: impl std::fmt::Display) -> Self {
        StoreError::Malformed {
            what,
            detail: detail.to_string(),
        }
    }
}

impl From<RedisError> for StoreError {
    fn from(error: RedisError) -> Self {
        StoreError::Redis(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_transient_and_unreadable_data_is_not() {
        assert!(StoreError::TimedOut(Duration::from_millis(100)).is_transient());
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(StoreError::from(dropped).is_transient());
        let refused = RedisError::from((::redis::ErrorKind::Client, "wrong type"));
        assert!(!StoreError::from(refused).is_transient());
        assert!(!StoreError::malformed("decision reply", "3 figures").is_transient());
    }
}
