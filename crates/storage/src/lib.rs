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

use agentpkg_model::{ObjectKey, StoredPart};
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

/// A write that never finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteWrite {
    /// The object key it was writing, when the store can tell.
    pub key: Option<String>,
    /// What the store needs to remove it.
    pub handle: String,
    /// For reports and logs.
    pub description: String,
}

/// A request a client makes itself to store one object: a `PUT` of `url` with exactly
/// these headers (and no others that the signature covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPut {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// What the store says of a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStat {
    pub size: u64,
    /// The SHA-256 the store verified and kept for it, when it reports one.
    pub sha256: Option<[u8; 32]>,
}

/// The smallest part of a write in parts, but for its last (S3's limit).
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

/// The most parts one write in parts may have (S3's limit).
pub const MAX_PARTS: u32 = 10_000;

/// The largest part of a write in parts, and the largest object one part may be copied
/// from (S3's limit).
pub const MAX_PART_BYTES: u64 = 5 * 1024 * 1024 * 1024;

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
    /// [`ObjectStore::put`] for a body of exactly `size` bytes (a request with a
    /// `Content-Length`): a store may then write it in one streamed request. A body of
    /// another length fails the put, and leaves nothing.
    async fn put_sized(
        &self,
        key: &ObjectKey,
        body: Body<'_>,
        size: u64,
    ) -> Result<u64, StorageError> {
        let written = self.put(key, body).await?;
        if written != size {
            self.delete(key).await?;
            return Err(StorageError::Body(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the body had {written} bytes, not the {size} announced"),
            )));
        }
        Ok(written)
    }

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
    /// A `PUT` that a client sends straight to the store, valid for `ttl`, which the store
    /// accepts only with exactly `size` bytes whose SHA-256 is `sha256`; `None` for a
    /// backend that cannot make one.
    async fn presigned_put(
        &self,
        key: &ObjectKey,
        ttl: std::time::Duration,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<Option<PresignedPut>, StorageError> {
        let _ = (key, ttl, size, sha256);
        Ok(None)
    }

    /// The size (and, where kept, the SHA-256) of a stored object; `None` when absent.
    async fn stat(&self, key: &ObjectKey) -> Result<Option<ObjectStat>, StorageError>;

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
    /// Writes that never finished (a process killed mid-upload, an abort that failed)
    /// begun before `older_than`: [`FsStore`]'s temporary files, `S3Store`'s multipart
    /// uploads never completed. The caller decides which to remove — a write may belong to
    /// an upload still in flight — with [`ObjectStore::remove_incomplete`]. This default
    /// lists none, for stores whose failed writes leave nothing behind.
    async fn list_incomplete(
        &self,
        older_than: std::time::SystemTime,
    ) -> Result<Vec<IncompleteWrite>, StorageError> {
        let _ = older_than;
        Ok(Vec::new())
    }

    /// Removes a write that [`ObjectStore::list_incomplete`] listed.
    async fn remove_incomplete(&self, write: &IncompleteWrite) -> Result<(), StorageError> {
        let _ = write;
        Ok(())
    }

    /// Starts an object written in parts over time (a resumable upload): S3's multipart
    /// upload, or a directory of part files. Returns the write's handle. Nothing is
    /// visible under `key` until [`ObjectStore::complete_parts`]; until then the write is
    /// one of [`ObjectStore::list_incomplete`]'s, under `key`.
    async fn begin_parts(&self, key: &ObjectKey) -> Result<String, StorageError> {
        let _ = key;
        Err(StorageError::Unsupported("writes in parts"))
    }

    /// Writes part `number` (from 1) of exactly `size` bytes from `body`, replacing a part
    /// of that number written before, and returns what the store names it by. Every part
    /// but the last must hold at least [`MIN_PART_BYTES`].
    async fn put_part(
        &self,
        key: &ObjectKey,
        upload: &str,
        number: u32,
        body: Body<'_>,
        size: u64,
    ) -> Result<String, StorageError> {
        let _ = (key, upload, number, body, size);
        Err(StorageError::Unsupported("writes in parts"))
    }

    /// Whether [`ObjectStore::copy_part`] works here.
    fn copies_parts(&self) -> bool {
        false
    }

    /// Writes part `number` of a write in parts as a copy of the whole object `source`,
    /// inside the store (S3's `UploadPartCopy`): its bytes do not pass through the caller.
    /// Returns what the store names the part by. The size rules of
    /// [`ObjectStore::put_part`] hold, and a source may hold at most [`MAX_PART_BYTES`].
    async fn copy_part(
        &self,
        key: &ObjectKey,
        upload: &str,
        number: u32,
        source: &ObjectKey,
    ) -> Result<String, StorageError> {
        let _ = (key, upload, number, source);
        Err(StorageError::Unsupported("copying parts"))
    }

    /// Joins `parts`, in order, into the object `key` (create-only), and ends the write.
    async fn complete_parts(
        &self,
        key: &ObjectKey,
        upload: &str,
        parts: &[StoredPart],
    ) -> Result<(), StorageError> {
        let _ = (key, upload, parts);
        Err(StorageError::Unsupported("writes in parts"))
    }

    /// Ends a write in parts without an object, removing its parts. Ending one that is
    /// gone succeeds.
    async fn abort_parts(&self, key: &ObjectKey, upload: &str) -> Result<(), StorageError> {
        let _ = (key, upload);
        Err(StorageError::Unsupported("writes in parts"))
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
