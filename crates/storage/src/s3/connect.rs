//! Reaching the bucket: the settings, and the store built from them (created when missing).

use std::sync::Arc;
use std::time::Duration;

use agentpkg_model::CallObserver;
use s3::BucketConfiguration;
use s3::bucket::Bucket;
use s3::creds::Credentials;
use s3::region::Region;
use secrecy::{ExposeSecret, SecretString};

use super::{S3Store, unavailable, unavailable_msg};
use crate::ObjectStore;
use crate::StorageError;

/// How to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:3900` (Garage) or `http://localhost:9000` (MinIO).
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: SecretString,
    /// Path-style addressing (`endpoint/bucket/key`), which MinIO and Garage need.
    pub path_style: bool,
    /// Multipart parts (8 MiB each) in flight per upload: bounds memory per upload.
    pub max_concurrent_parts: usize,
    /// Timeout of each request other than a download's body.
    pub request_timeout: Duration,
}

impl S3Store {
    /// The same store, telling `observer` how long each call took, by operation and
    /// outcome. A `put` is timed to its end (streaming the body included); a `get` until
    /// the stream opens.
    pub fn observed_by(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub(super) async fn observe<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        agentpkg_model::observe(self.observer.as_ref(), operation, call).await
    }

    /// Connects, and creates the bucket when it does not exist yet.
    pub async fn connect(config: &S3Config) -> Result<Self, StorageError> {
        let region = Region::Custom {
            region: config.region.clone(),
            endpoint: config.endpoint.trim_end_matches('/').to_owned(),
        };
        let credentials = Credentials::new(
            Some(&config.access_key),
            Some(config.secret_key.expose_secret()),
            None,
            None,
            None,
        )
        .map_err(|e| StorageError::Unavailable(format!("S3 credentials: {e}")))?;
        let mut bucket = Bucket::new(&config.bucket, region.clone(), credentials.clone())
            .map_err(unavailable)?;
        if config.path_style {
            bucket = bucket.with_path_style();
        }
        bucket.set_request_timeout(Some(config.request_timeout));
        let mut stream_bucket = bucket.clone();
        stream_bucket.set_request_timeout(None);
        let store = Self {
            bucket,
            stream_bucket,
            max_concurrent_parts: config.max_concurrent_parts.max(1),
            http: reqwest::Client::builder()
                .connect_timeout(config.request_timeout)
                .build()
                .map_err(unavailable_msg)?,
            observer: None,
        };
        match store.check().await {
            Ok(()) => {}
            Err(StorageError::NotFound) => {
                tracing::info!(bucket = %config.bucket, "creating bucket");
                let create = if config.path_style {
                    Bucket::create_with_path_style(
                        &config.bucket,
                        region,
                        credentials,
                        BucketConfiguration::default(),
                    )
                    .await
                } else {
                    Bucket::create(
                        &config.bucket,
                        region,
                        credentials,
                        BucketConfiguration::default(),
                    )
                    .await
                };
                create.map_err(unavailable)?;
                store.check().await?;
            }
            Err(e) => return Err(e),
        }
        Ok(store)
    }
}
