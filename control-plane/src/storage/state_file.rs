//! The state file of earlier versions: one JSON document holding every tenant, rewritten
//! whole on every change. Tollgate no longer writes it; the tenant registry imports it once
//! (`tenants::embedded`) and then retires it, so this module only reads and retires one.
//!
//! - Reading takes the lock those versions held on `<file>.lock`: a control-plane of an
//!   earlier version still running on the file makes the import refuse, instead of missing
//!   the changes that process makes afterwards.
//! - Retiring renames the file to `<file>.migrated` (kept for the operator, never read again)
//!   and flushes the directory, so a restart after the import cannot import it twice.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why the state file could not be read or retired.
#[derive(Debug, thiserror::Error)]
#[error("cannot import the state file {path}: {reason}")]
pub struct StateFileError {
    path: String,
    reason: String,
}

impl StateFileError {
    fn new(path: &Path, reason: impl std::fmt::Display) -> Self {
        Self {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The document at `path`, read under the lock of the versions that wrote it (`None`: no
/// file).
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateFileError> {
    let lock_path = with_suffix(path, ".lock");
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateFileError::new(path, e)),
    };
    let lock = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| StateFileError::new(path, format!("{}: {e}", lock_path.display())))?;
    lock.try_lock().map_err(|e| {
        StateFileError::new(
            path,
            format!("another process holds {} ({e})", lock_path.display()),
        )
    })?;
    let document = serde_json::from_slice(&bytes).map_err(|e| StateFileError::new(path, e))?;
    Ok(Some(document))
}

/// Renames the file to `<file>.migrated` (and drops its lock file); returns the new path.
pub fn retire(path: &Path) -> Result<PathBuf, StateFileError> {
    let retired = with_suffix(path, ".migrated");
    std::fs::rename(path, &retired).map_err(|e| StateFileError::new(path, e))?;
    let _ = std::fs::remove_file(with_suffix(path, ".lock"));
    // The rename is an entry in the directory: flushed with the directory.
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)
        .and_then(|d| d.sync_all())
        .map_err(|e| StateFileError::new(path, e))?;
    Ok(retired)
}

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_read_under_the_old_lock_and_retired_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(read::<Vec<u32>>(&path).unwrap(), None, "no file yet");
        std::fs::write(&path, "[1, 2, 3]").unwrap();

        // An earlier version still running holds the lock: refused.
        let held = File::create(with_suffix(&path, ".lock")).unwrap();
        held.lock().unwrap();
        let error = read::<Vec<u32>>(&path).unwrap_err();
        assert!(error.to_string().contains("another process"), "{error}");
        drop(held);

        assert_eq!(read::<Vec<u32>>(&path).unwrap(), Some(vec![1, 2, 3]));
        let retired = retire(&path).unwrap();
        assert_eq!(retired, dir.path().join("state.json.migrated"));
        assert!(!path.exists() && retired.exists());
        assert_eq!(
            read::<Vec<u32>>(&path).unwrap(),
            None,
            "nothing to import again"
        );
    }
}
