//! Package bytes: a small streaming storage trait and its backends — a local directory
//! (the embedded default) and S3-compatible object storage (MinIO, Garage, AWS; feature
//! `s3`, on by default).

mod error;
mod fs;
#[cfg(any(test, feature = "test-util"))]
mod memory;
#[cfg(feature = "s3")]
mod s3;

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use agentpkg_model::ObjectKey;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use tokio::io::AsyncRead;

pub use error::StorageError;
pub use fs::FsStore;
#[cfg(any(test, feature = "test-util"))]
pub use memory::{FailingReader, Fault, MemoryStore};
#[cfg(feature = "s3")]
pub use s3::{S3Config, S3Store};

/// An object's bytes, as they arrive.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Body of a put: read once, front to back.
pub type Body<'a> = &'a mut (dyn AsyncRead + Send + Unpin);

/// Where package bytes live.
///
/// Writes are create-only: putting a key that exists is [`StorageError::AlreadyExists`],
/// never an overwrite. A put that fails leaves no object behind.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Streams `body` into a new object and returns how many bytes were written. If reading
    /// `body` fails, the error is [`StorageError::Body`] with the reader's own error.
    async fn put(&self, key: &ObjectKey, body: Body<'_>) -> Result<u64, StorageError>;
    /// Streams an object out; [`StorageError::NotFound`] when it does not exist.
    async fn get(&self, key: &ObjectKey) -> Result<ByteStream, StorageError>;
    /// Streams bytes `start..=end` of an object, read from the store as a range (never by
    /// reading and discarding a prefix). The caller keeps the range within the object.
    async fn get_range(
        &self,
        key: &ObjectKey,
        start: u64,
        end: u64,
    ) -> Result<ByteStream, StorageError>;
    /// A URL that serves the object to anyone holding it until it expires, with the given
    /// `Content-Disposition` header value; `None` when the backend cannot make one (a
    /// local directory).
    async fn presigned_get(
        &self,
        key: &ObjectKey,
        ttl: std::time::Duration,
        content_disposition: &str,
    ) -> Result<Option<String>, StorageError>;
    /// Removes an object. Removing a missing object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;
    async fn exists(&self, key: &ObjectKey) -> Result<bool, StorageError>;
    /// Every object in this store, with its age (for reconciliation and tests).
    async fn list_objects(&self) -> Result<Vec<ObjectInfo>, StorageError>;
    /// Every object key in this store, sorted.
    async fn list_keys(&self) -> Result<Vec<String>, StorageError> {
        let mut keys: Vec<String> = self
            .list_objects()
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        Ok(keys)
    }
    /// Removes the leftovers of writes that never finished (a process killed mid-upload)
    /// begun before `older_than`, except writes to the keys in `in_flight` (uploads still
    /// being worked on, however long ago they began), and returns what went: [`FsStore`]
    /// its temporary files, `S3Store` the multipart uploads never completed. This default
    /// does nothing, for stores whose failed writes leave nothing behind.
    async fn sweep_incomplete(
        &self,
        older_than: std::time::SystemTime,
        dry_run: bool,
        in_flight: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>, StorageError> {
        let _ = (older_than, dry_run, in_flight);
        Ok(Vec::new())
    }

    /// Whether the store can be used right now (for readiness checks).
    async fn check(&self) -> Result<(), StorageError>;
    /// A short name for logs: `fs`, `s3` or `memory`.
    fn kind(&self) -> &'static str;
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: std::time::SystemTime,
}

/// Shared handle to an object store.
pub type DynObjectStore = Arc<dyn ObjectStore>;
