//! One conformance suite for every object store backend: the local directory and S3 (moto's S3
//! server, path-style, as MinIO is used).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sage_core::blob::{LocalObjects, ObjectKey, ObjectStore, S3Objects};

use crate::common::*;

fn key(text: &str) -> ObjectKey {
    ObjectKey::parse(text).unwrap()
}

async fn read_all(store: &dyn ObjectStore, name: &str) -> Option<Vec<u8>> {
    let read = store.get(&key(name)).await.unwrap()?;
    let mut bytes = Vec::new();
    let mut body = read.body;
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(read.info.size, bytes.len() as u64, "{name}: the size told");
    Some(bytes)
}

async fn objects_are_written_read_listed_and_deleted(store: Arc<dyn ObjectStore>) {
    let store = store.as_ref();
    store.ping().await.unwrap();
    assert!(read_all(store, "s-1/missing.txt").await.is_none());
    store
        .put(&key("s-1/charts/plot.csv"), "x,y\n1,2\n".into())
        .await
        .unwrap();
    store.put(&key("s-1/a.md"), "first".into()).await.unwrap();
    store.put(&key("s-1/a.md"), "second".into()).await.unwrap();
    store
        .put(&key("s-10/other.md"), "other".into())
        .await
        .unwrap();
    assert_eq!(read_all(store, "s-1/a.md").await.unwrap(), b"second");

    let listed = store.list(&key("s-1")).await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|info| info.key.as_str()).collect();
    assert_eq!(
        keys,
        ["s-1/a.md", "s-1/charts/plot.csv"],
        "only below the folder s-1/, not s-10/"
    );
    assert_eq!(listed[1].size, 8);
    assert!(listed[1].modified > 1_700_000_000.0, "{:?}", listed[1]);
    assert!(store.list(&key("nothing-here")).await.unwrap().is_empty());

    // Over the S3 backend's 8 MiB part size: three parts.
    let large: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    store
        .put(&key("s-1/large.bin"), large.clone().into())
        .await
        .unwrap();
    assert!(read_all(store, "s-1/large.bin").await.unwrap() == large);

    assert_eq!(store.delete_prefix(&key("s-1")).await.unwrap(), 3);
    assert!(store.list(&key("s-1")).await.unwrap().is_empty());
    assert!(read_all(store, "s-1/a.md").await.is_none());
    assert_eq!(read_all(store, "s-10/other.md").await.unwrap(), b"other");
    assert_eq!(store.delete_prefix(&key("s-1")).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    objects_are_written_read_listed_and_deleted(Arc::new(LocalObjects::new(
        dir.path().to_path_buf(),
        None,
    )))
    .await;
    let store = LocalObjects::new(dir.path().to_path_buf(), None);
    assert_eq!(
        store
            .url(&key("a/b.txt"), Duration::from_secs(60))
            .await
            .unwrap(),
        None,
        "the server serves local files itself"
    );
    let public = LocalObjects::new(
        dir.path().to_path_buf(),
        Some("https://files.example.com/".into()),
    );
    assert_eq!(
        public
            .url(&key("a/b.txt"), Duration::from_secs(60))
            .await
            .unwrap()
            .as_deref(),
        Some("https://files.example.com/a/b.txt")
    );
}

async fn s3_store(public_base_url: Option<&str>) -> S3Objects {
    s3_objects(&fresh_name("sage-blob").replace('_', "-"), public_base_url).await
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_bucket() {
    objects_are_written_read_listed_and_deleted(Arc::new(s3_store(None).await)).await;

    let store = s3_store(None).await;
    store
        .put(&key("s-2/report.md"), "presigned bytes".into())
        .await
        .unwrap();
    let url = store
        .url(&key("s-2/report.md"), Duration::from_secs(300))
        .await
        .unwrap()
        .expect("a presigned URL");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let fetched = reqwest::get(&url).await.unwrap();
    assert_eq!(fetched.status().as_u16(), 200, "{url}");
    assert_eq!(fetched.text().await.unwrap(), "presigned bytes");

    // An object over 8 MiB goes up in parts: S3 marks a multipart object's ETag with its
    // number of parts.
    let large: Vec<u8> = (0..17 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    store
        .put(&key("s-2/large.bin"), large.clone().into())
        .await
        .unwrap();
    let url = store
        .url(&key("s-2/large.bin"), Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    let fetched = reqwest::get(&url).await.unwrap();
    let etag = fetched.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "three parts: {etag}"
    );
    assert!(fetched.bytes().await.unwrap() == large);

    let public = s3_store(Some("https://cdn.example.com/files")).await;
    assert_eq!(
        public
            .url(&key("s-2/report.md"), Duration::from_secs(300))
            .await
            .unwrap()
            .as_deref(),
        Some("https://cdn.example.com/files/s-2/report.md")
    );
}
