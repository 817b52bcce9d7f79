//! Object storage: session workspaces and uploaded files. One trait, two backends: a local
//! directory (the default, the workspace folder) and S3 or MinIO (`--minio_bucket_name`). One
//! conformance suite (`tests/blob_conformance.rs`) runs on both.

mod local;
#[cfg(feature = "s3")]
mod s3;

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub use local::LocalObjects;
#[cfg(feature = "s3")]
pub use s3::S3Objects;

use crate::config::BlobConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("object key {0:?} is not a valid key")]
    InvalidKey(String),
    #[error("the object store's directory cannot be used")]
    Io(#[from] std::io::Error),
    #[error("object storage request failed")]
    Remote(#[source] BoxError),
    #[error("object storage configuration: {0}")]
    Config(String),
}

/// A key in the store: `/`-separated segments, none empty, `.` or `..`, no backslash or control
/// character, at most 1,024 bytes. It can be joined to a directory without leaving it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub const MAX_LEN: usize = 1024;

    pub fn parse(key: &str) -> Result<Self, BlobError> {
        let valid = !key.is_empty()
            && key.len() <= Self::MAX_LEN
            && key
                .split('/')
                .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
            && !key.chars().any(|c| c == '\\' || c.is_control());
        if valid {
            Ok(Self(key.to_owned()))
        } else {
            Err(BlobError::InvalidKey(key.chars().take(200).collect()))
        }
    }

    /// This key with `relative` (itself `/`-separated) below it.
    pub fn join(&self, relative: &str) -> Result<Self, BlobError> {
        Self::parse(&format!("{}/{relative}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The folder inside each session's workspace that holds what the server keeps for the session
/// (its plan): the file routes do not show it and the built-in file tools cannot reach it.
pub const RESERVED_FOLDER: &str = ".sage";

/// One stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo {
    pub key: ObjectKey,
    pub size: u64,
    /// Seconds since the epoch.
    pub modified: f64,
}

/// An object's bytes, read as they arrive.
pub type ObjectBody = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send>>;

/// An object being read: what it is, and its bytes.
pub struct ObjectRead {
    pub info: ObjectInfo,
    pub body: ObjectBody,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Writes the object whole, replacing what the key held.
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), BlobError>;
    /// The object, streamed; `None` when the key holds nothing.
    async fn get(&self, key: &ObjectKey) -> Result<Option<ObjectRead>, BlobError>;
    /// Every object below the folder `prefix` (keys starting `prefix/`), by key.
    async fn list(&self, prefix: &ObjectKey) -> Result<Vec<ObjectInfo>, BlobError>;
    /// Removes every object below the folder `prefix`; returns how many.
    async fn delete_prefix(&self, prefix: &ObjectKey) -> Result<u64, BlobError>;
    /// A URL a client can fetch the object from for `valid_for`: the public base URL's, or a
    /// presigned one; `None` when this backend hands out none (the server serves the bytes).
    async fn url(&self, key: &ObjectKey, valid_for: Duration) -> Result<Option<String>, BlobError>;
    /// A cheap round trip, for readiness checks.
    async fn ping(&self) -> Result<(), BlobError>;
    /// What readiness reports the backend as.
    fn describe(&self) -> String;
}

/// The backend the configuration names: S3 when a bucket is set, else the local directory. A
/// function built without S3 (MCP-admin, Jobs) stores no files, whatever the bucket.
pub async fn open_objects(
    config: &BlobConfig,
    local_root: &std::path::Path,
) -> Result<std::sync::Arc<dyn ObjectStore>, BlobError> {
    let local = || {
        std::sync::Arc::new(LocalObjects::new(
            local_root.to_path_buf(),
            config.s3_public_base_url.clone(),
        ))
    };
    match &config.minio_bucket_name {
        None => Ok(local()),
        #[cfg(feature = "s3")]
        Some(_) => Ok(std::sync::Arc::new(S3Objects::connect(config).await?)),
        #[cfg(not(feature = "s3"))]
        Some(_) => {
            tracing::debug!("this function stores no files; --minio_bucket_name is not used here");
            Ok(local())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ObjectKey;

    #[test]
    fn keys_cannot_leave_their_folder() {
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "a/../b",
            "..",
            "a/./b",
            "a\\b",
            "a/",
            "a\nb",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?}");
        }
        let key = ObjectKey::parse("s-1/reports/q1.md").unwrap();
        assert_eq!(key.as_str(), "s-1/reports/q1.md");
        assert!(ObjectKey::parse("s-1").unwrap().join("../s-2/x").is_err());
    }
}
