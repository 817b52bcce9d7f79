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

    /// Whether the path of `key` passes through a link (made on the disk by something other
    /// than this store): the first `depth` segments are checked, each as it is on the disk.
    async fn through_link(&self, key: &ObjectKey, depth: usize) -> Result<bool, BlobError> {
        let mut path = self.root.clone();
        for segment in key.as_str().split('/').take(depth) {
            path.push(segment);
            match tokio::fs::symlink_metadata(&path).await {
                Ok(metadata) if metadata.file_type().is_symlink() => return Ok(true),
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(error) => return Err(error.into()),
            }
        }
        Ok(false)
    }
}

fn segments(key: &ObjectKey) -> usize {
    key.as_str().split('/').count()
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
        if self.through_link(key, segments(key)).await? {
            return Err(BlobError::InvalidKey(key.to_string()));
        }
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
        if self.through_link(key, segments(key)).await? {
            return Ok(None);
        }
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
        if self.through_link(prefix, segments(prefix)).await? {
            return Ok(Vec::new());
        }
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
        // A link as the last segment is removed itself, never what it points to.
        if self.through_link(prefix, segments(prefix) - 1).await? {
            return Err(BlobError::InvalidKey(prefix.to_string()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A link made on the disk inside the store's directory leads nowhere: reads find nothing,
    /// writes and deletes through it are refused, and what it points to is untouched.
    #[tokio::test]
    async fn links_on_the_disk_are_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "outside").unwrap();
        std::fs::create_dir_all(root.path().join("s")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("s/link")).unwrap();
        let store = LocalObjects::new(root.path().to_path_buf(), None);
        let key = |text: &str| ObjectKey::parse(text).unwrap();

        assert!(
            store
                .get(&key("s/link/secret.txt"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.list(&key("s/link")).await.unwrap().is_empty());
        assert!(store.list(&key("s")).await.unwrap().is_empty());
        assert!(
            store
                .put(&key("s/link/new.txt"), Bytes::from("x"))
                .await
                .is_err()
        );
        assert!(store.delete_prefix(&key("s/link/deeper")).await.is_err());
        store.delete_prefix(&key("s")).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret.txt")).unwrap(),
            "outside"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    }
}
