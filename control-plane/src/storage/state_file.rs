//! The embedded store's file: a JSON document read once at start and rewritten whole,
//! atomically, on every change.
//!
//! - A crash leaves the old document or the new one, never half of one: the new one is
//!   written to a temporary file of a name no other writer uses, flushed, renamed over the
//!   old, and the directory is flushed so the rename itself survives a power cut.
//! - Only this process's user can read it (mode 0600): it holds key hashes and billing links.
//! - One process at a time: a lock on `<file>.lock`, held as long as the [`StateFile`] lives,
//!   so a second control-plane pointed at the same file refuses to start instead of the two
//!   overwriting each other's changes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// Why the state file could not be opened at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the state file {path}: {reason}")]
pub struct StateFileError {
    path: String,
    reason: String,
}

/// The state file, locked for this process.
pub struct StateFile {
    path: PathBuf,
    /// Held for the lock; released when dropped.
    _lock: File,
}

impl StateFile {
    /// Locks the file for this process and reads its document (`None`: no file yet).
    pub fn open<T: DeserializeOwned>(path: PathBuf) -> Result<(Self, Option<T>), StateFileError> {
        let failed = |reason: String| StateFileError {
            path: path.display().to_string(),
            reason,
        };
        let lock_path = with_suffix(&path, ".lock");
        let lock = private_options()
            .write(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| failed(format!("cannot open {}: {e}", lock_path.display())))?;
        lock.try_lock().map_err(|e| {
            failed(format!(
                "another process holds {} ({e})",
                lock_path.display()
            ))
        })?;
        let document = match std::fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| failed(e.to_string()))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(failed(e.to_string())),
        };
        Ok((Self { path, _lock: lock }, document))
    }

    /// Replaces the document with `value`, atomically and durably.
    pub async fn write<T: Serialize>(&self, value: &T) -> Result<(), StoreError> {
        let failed = |source: std::io::Error| StoreError::StateFile {
            path: self.path.display().to_string(),
            source: Arc::new(source),
        };
        let json = serde_json::to_vec_pretty(value).map_err(|e| failed(e.into()))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || replace(&path, &json))
            .await
            .map_err(std::io::Error::other)
            .and_then(|written| written)
            .map_err(failed)
    }
}

fn replace(path: &Path, json: &[u8]) -> std::io::Result<()> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = with_suffix(path, &format!(".{}.tmp", hex::encode(suffix)));
    let written = (|| {
        let mut file = private_options().write(true).create_new(true).open(&tmp)?;
        file.write_all(json)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename is an entry in the directory: flushed with the directory.
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_is_private_replaced_whole_and_locked_to_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let (file, none) = StateFile::open::<Vec<u32>>(path.clone()).unwrap();
        assert_eq!(none, None, "no file yet");
        file.write(&vec![1, 2, 3]).await.unwrap();
        file.write(&vec![4]).await.unwrap();
        let error = StateFile::open::<Vec<u32>>(path.clone())
            .err()
            .expect("a second opener is refused");
        assert!(error.to_string().contains("another process"), "{error}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().to_string())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        drop(file);
        let (_again, document) = StateFile::open::<Vec<u32>>(path).unwrap();
        assert_eq!(
            document,
            Some(vec![4]),
            "the last write, whole; the lock was released"
        );
    }
}
