//! The embedded database file (redb) the tenant registry keeps its records in: opened private
//! to this user and locked to this process, and redb's failures as [`StoreError`]s.
//!
//! - One process at a time: redb locks the file while a [`Database`] on it lives, so a second
//!   control-plane pointed at the same file refuses to start instead of the two overwriting
//!   each other's changes (the state file of earlier versions had the same rule).
//! - Only this process's user can read it (mode 0600): it holds key hashes and billing links.
//! - Crash-safe: every commit is durable when it returns (fsync), and a file left by a killed
//!   process opens to its last commit. The repair redb runs on such a file walks it once
//!   (measured: about 1.2 s for a million tenants; bench/README.md).
//!
//! Nothing here knows what the tables hold; `tenants::embedded` does.

use std::fs::OpenOptions;
use std::path::Path;

use redb::backends::{FileBackend, InMemoryBackend};
use redb::{Builder, Database, DatabaseError};

use super::StoreError;

/// Why the database file could not be opened at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the tenant registry {path}: {reason}")]
pub struct OpenError {
    pub path: String,
    pub reason: String,
}

/// Opens (or creates) the database at `path`, locked for this process, with a page cache of
/// `cache_bytes` (redb's own, on top of the operating system's).
pub fn open(path: &Path, cache_bytes: usize) -> Result<Database, OpenError> {
    let failed = |reason: String| OpenError {
        path: path.display().to_string(),
        reason,
    };
    let file = private_options()
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|e| failed(e.to_string()))?;
    let backend = FileBackend::new(file).map_err(|e| failed(e.to_string()))?;
    Builder::new()
        .set_cache_size(cache_bytes)
        .create_with_backend(backend)
        .map_err(|error| match error {
            DatabaseError::DatabaseAlreadyOpen => {
                failed("another process has it open (one control-plane per registry)".into())
            }
            other => failed(other.to_string()),
        })
}

/// A database that lasts as long as the process (no file): the embedded store without a
/// registry path, and tests.
pub fn in_memory(cache_bytes: usize) -> Result<Database, StoreError> {
    Ok(Builder::new()
        .set_cache_size(cache_bytes)
        .create_with_backend(InMemoryBackend::new())?)
}

/// Options that create files only this user can read.
fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// redb's errors, each kept as text: they say what failed (a disk error, a full disk, a
/// corrupted page), and nothing above this layer branches on them.
macro_rules! embedded_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(error: $error) -> Self {
                StoreError::Embedded(error.to_string())
            }
        }
    )*};
}
embedded_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_private_and_locked_to_one_opener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.redb");
        let db = open(&path, 1 << 20).unwrap();
        let Err(error) = open(&path, 1 << 20) else {
            panic!("a second opener is refused")
        };
        assert!(error.to_string().contains("another process"), "{error}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(db);
        open(&path, 1 << 20).expect("the lock was released");
    }
}
