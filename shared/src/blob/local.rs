//! Objects as files under one directory: key `a/b/c` is the file `<root>/a/b/c`. Writes go to a
//! staging file renamed into place, so a reader never sees half an object; links are never
//! followed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::io::ReaderStream;

use super::{BlobError, ObjectInfo, ObjectKey, ObjectRead, ObjectStore};

/// Where writes are staged before the rename: no key lists it (keys below it are never
/// listed, as no session id or upload folder starts with a dot).
const STAGING: &str = ".staging";

pub struct LocalObjects {
    root: PathBuf,
    public_base_url: Option<String>,
}

impl LocalObjects {
    pub fn new(root: PathBuf, public_base_url: Option<String>) -> Self {
        Self {
            root,
            public_base_url,
        }
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }
}

fn modified_secs(metadata: &std::fs::Metadata) -> f64 {
    metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// Every regular file below `dir`, as keys relative to `root`.
fn walk(root: &Path, dir: &Path, found: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let metadata = entry.path().symlink_metadata()?;
        let path = entry.path();
        if metadata.is_dir() {
            walk(root, &path, found)?;
        } else if metadata.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let key = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            // A name this store could not have written (made by hand) is left out.
            if let Ok(key) = ObjectKey::parse(&key) {
                found.push(ObjectInfo {
                    key,
                    size: metadata.len(),
                    modified: modified_secs(&metadata),
                });
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalObjects {
    #[tracing::instrument(name = "objects.put", skip_all, fields(key = %key))]
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), BlobError> {
        let path = self.path(key);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let staging_dir = self.root.join(STAGING);
        tokio::fs::create_dir_all(&staging_dir).await?;
        let staging = staging_dir.join(uuid::Uuid::new_v4().simple().to_string());
        tokio::fs::write(&staging, &body).await?;
        if let Err(error) = tokio::fs::rename(&staging, &path).await {
            let _ = tokio::fs::remove_file(&staging).await;
            return Err(error.into());
        }
        Ok(())
    }

    #[tracing::instrument(name = "objects.get", skip_all, fields(key = %key))]
    async fn get(&self, key: &ObjectKey) -> Result<Option<ObjectRead>, BlobError> {
        let path = self.path(key);
        let metadata = match tokio::fs::symlink_metadata(&path).await {
            Ok(metadata) if metadata.is_file() => metadata,
            Ok(_) => return Ok(None),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let file = tokio::fs::File::open(&path).await?;
        let body = ReaderStream::new(file).map(|chunk| chunk.map_err(BlobError::from));
        Ok(Some(ObjectRead {
            info: ObjectInfo {
                key: key.clone(),
                size: metadata.len(),
                modified: modified_secs(&metadata),
            },
            body: Box::pin(body),
        }))
    }

    #[tracing::instrument(name = "objects.list", skip_all, fields(key = %prefix))]
    async fn list(&self, prefix: &ObjectKey) -> Result<Vec<ObjectInfo>, BlobError> {
        let root = self.root.clone();
        let dir = self.path(prefix);
        let mut found = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            walk(&root, &dir, &mut found).map(|()| found)
        })
        .await
        .map_err(|error| BlobError::Remote(Box::new(error)))??;
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    #[tracing::instrument(name = "objects.delete", skip_all, fields(key = %prefix))]
    async fn delete_prefix(&self, prefix: &ObjectKey) -> Result<u64, BlobError> {
        let count = self.list(prefix).await?.len() as u64;
        match tokio::fs::remove_dir_all(self.path(prefix)).await {
            Ok(()) => Ok(count),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(error) => Err(error.into()),
        }
    }

    async fn url(
        &self,
        key: &ObjectKey,
        _valid_for: Duration,
    ) -> Result<Option<String>, BlobError> {
        Ok(self
            .public_base_url
            .as_ref()
            .map(|base| format!("{}/{key}", base.trim_end_matches('/'))))
    }

    async fn ping(&self) -> Result<(), BlobError> {
        tokio::fs::create_dir_all(&self.root).await?;
        Ok(())
    }

    fn describe(&self) -> String {
        "local directory".into()
    }
}
