//! The embedded store's file: a JSON document read once at start and rewritten whole,
//! atomically (temporary file, fsync, rename), on every change, so a crash leaves either the
//! old document or the new one, never half of one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// Why the state file could not be loaded at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the state file {path}: {reason}")]
pub struct StateFileError {
    path: String,
    reason: String,
}

/// The document in `path`, or `None` if there is no file yet.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateFileError> {
    let failed = |reason: String| StateFileError {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| failed(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Replaces the document in `path` with `value`, atomically.
pub async fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let failed = |source: std::io::Error| StoreError::StateFile {
        path: path.display().to_string(),
        source: Arc::new(source),
    };
    let json = serde_json::to_vec_pretty(value).map_err(|e| failed(e.into()))?;
    let path: PathBuf = path.to_owned();
    let tmp = path.with_extension("json.tmp");
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|written| written)
    .map_err(failed)
}
