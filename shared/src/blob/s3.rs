//! Objects in an S3 bucket through aws-sdk-s3: Amazon S3 (credentials and region from the
//! environment, as Lambda gives them), or MinIO and other S3 servers with `--minio_endpoint`
//! (path-style addressing, `--minio_access_key` / `--minio_secret_key`).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use tokio_util::io::ReaderStream;

use super::{BlobError, ObjectInfo, ObjectKey, ObjectRead, ObjectStore};
use crate::config::BlobConfig;

pub struct S3Objects {
    client: Client,
    bucket: String,
    public_base_url: Option<String>,
}

fn remote<E: std::error::Error + Send + Sync + 'static>(error: E) -> BlobError {
    BlobError::Remote(Box::new(error))
}

fn epoch_secs(time: Option<&aws_sdk_s3::primitives::DateTime>) -> f64 {
    time.map_or(0.0, |time| time.as_secs_f64())
}

impl S3Objects {
    /// Builds the client and, with an endpoint override (MinIO, moto), creates the bucket when
    /// it is missing.
    pub async fn connect(config: &BlobConfig) -> Result<Self, BlobError> {
        let bucket = config
            .minio_bucket_name
            .clone()
            .ok_or_else(|| BlobError::Config("--minio_bucket_name is required for S3".into()))?;
        let mut loader = crate::util::tls::aws_config_loader();
        if let (Some(access_key), Some(secret_key)) =
            (&config.minio_access_key, &config.minio_secret_key)
        {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key.clone(),
                secret_key.expose_secret().to_owned(),
                None,
                None,
                "sage-minio-settings",
            ));
        }
        let endpoint = config.minio_endpoint.as_ref().map(|endpoint| {
            if endpoint.contains("://") {
                endpoint.clone()
            } else if config.minio_secure {
                format!("https://{endpoint}")
            } else {
                format!("http://{endpoint}")
            }
        });
        let shared = crate::util::tls::load_aws_config(loader).await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(endpoint) = &endpoint {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        let objects = Self {
            client: Client::from_conf(builder.build()),
            bucket,
            public_base_url: config.s3_public_base_url.clone(),
        };
        if endpoint.is_some() {
            objects.create_bucket().await?;
        }
        Ok(objects)
    }

    async fn create_bucket(&self) -> Result<(), BlobError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            Err(error) => Err(remote(error)),
        }
    }
}

/// Objects larger than this go up in parts of this size: one request never carries more, and a
/// failed part is all that is sent again.
const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;

impl S3Objects {
    /// A multipart upload; on any failure the upload is aborted, so no parts are left billed.
    async fn put_in_parts(&self, key: &ObjectKey, body: Bytes) -> Result<(), BlobError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(remote)?;
        let upload_id = created
            .upload_id
            .ok_or_else(|| BlobError::Config("the S3 server gave no upload id".into()))?;
        let uploaded = async {
            let mut parts = Vec::new();
            for (index, chunk) in body.chunks(MULTIPART_THRESHOLD).enumerate() {
                let number = index as i32 + 1;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key.as_str())
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body.slice_ref(chunk)))
                    .send()
                    .await
                    .map_err(remote)?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag)
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(remote)?;
            Ok::<(), BlobError>(())
        }
        .await;
        if uploaded.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(&upload_id)
                .send()
                .await;
        }
        uploaded
    }
}

#[async_trait]
impl ObjectStore for S3Objects {
    #[tracing::instrument(name = "objects.put", skip_all, fields(key = %key))]
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), BlobError> {
        if body.len() > MULTIPART_THRESHOLD {
            return self.put_in_parts(key, body).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(remote)?;
        Ok(())
    }

    #[tracing::instrument(name = "objects.get", skip_all, fields(key = %key))]
    async fn get(&self, key: &ObjectKey) -> Result<Option<ObjectRead>, BlobError> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(output) => output,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(error) => return Err(remote(error)),
        };
        let info = ObjectInfo {
            key: key.clone(),
            size: output.content_length.unwrap_or(0).max(0) as u64,
            modified: epoch_secs(output.last_modified.as_ref()),
        };
        let body = ReaderStream::new(output.body.into_async_read())
            .map(|chunk| chunk.map_err(BlobError::from));
        Ok(Some(ObjectRead {
            info,
            body: Box::pin(body),
        }))
    }

    #[tracing::instrument(name = "objects.list", skip_all, fields(key = %prefix))]
    async fn list(&self, prefix: &ObjectKey) -> Result<Vec<ObjectInfo>, BlobError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{prefix}/"))
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            for object in page.map_err(remote)?.contents.unwrap_or_default() {
                let Some(Ok(key)) = object.key.as_deref().map(ObjectKey::parse) else {
                    continue;
                };
                found.push(ObjectInfo {
                    key,
                    size: object.size.unwrap_or(0).max(0) as u64,
                    modified: epoch_secs(object.last_modified.as_ref()),
                });
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    #[tracing::instrument(name = "objects.delete", skip_all, fields(key = %prefix))]
    async fn delete_prefix(&self, prefix: &ObjectKey) -> Result<u64, BlobError> {
        let objects = self.list(prefix).await?;
        for batch in objects.chunks(1000) {
            let identifiers = batch
                .iter()
                .map(|object| {
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key(object.key.as_str())
                        .build()
                        .map_err(remote)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let delete = aws_sdk_s3::types::Delete::builder()
                .set_objects(Some(identifiers))
                .quiet(true)
                .build()
                .map_err(remote)?;
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(remote)?;
        }
        Ok(objects.len() as u64)
    }

    async fn url(&self, key: &ObjectKey, valid_for: Duration) -> Result<Option<String>, BlobError> {
        if let Some(base) = &self.public_base_url {
            return Ok(Some(format!("{}/{key}", base.trim_end_matches('/'))));
        }
        let presigning = PresigningConfig::expires_in(valid_for).map_err(remote)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .presigned(presigning)
            .await
            .map_err(remote)?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(remote)?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("S3 bucket {}", self.bucket)
    }
}
