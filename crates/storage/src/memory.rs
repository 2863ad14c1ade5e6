//! An in-memory store with fault injection, for unit tests of failure paths. It holds
//! whole objects in memory, so it is never wired into the server.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use agentpkg_model::ObjectKey;
use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::{Body, ByteStream, ObjectInfo, ObjectStore, StorageError};

/// What the next calls of a [`MemoryStore`] should get wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fault {
    /// `put` reads the body, then fails as an unreachable store would.
    pub put: bool,
    /// `delete` fails.
    pub delete: bool,
    /// `get`, `exists`, `list_keys` and `check` fail.
    pub read: bool,
    /// `get` opens a stream that never delivers a byte (a stalled store).
    pub stall: bool,
}

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, (Bytes, std::time::SystemTime)>>,
    fault: Mutex<Fault>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts an object as if written at `at` (to test what happens to old objects).
    pub fn insert_at(&self, key: &ObjectKey, data: &[u8], at: std::time::SystemTime) {
        self.objects()
            .insert(key.to_string(), (Bytes::copy_from_slice(data), at));
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().expect("fault lock") = fault;
    }

    fn fault(&self) -> Fault {
        *self.fault.lock().expect("fault lock")
    }

    fn objects(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, std::time::SystemTime)>> {
        self.objects.lock().expect("objects lock")
    }

    fn unavailable() -> StorageError {
        StorageError::Unavailable("injected fault".into())
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(&self, key: &ObjectKey, body: Body<'_>) -> Result<u64, StorageError> {
        if self.objects().contains_key(key.as_str()) {
            return Err(StorageError::AlreadyExists);
        }
        let mut data = Vec::new();
        body.read_to_end(&mut data)
            .await
            .map_err(StorageError::Body)?;
        if self.fault().put {
            return Err(Self::unavailable());
        }
        let n = data.len() as u64;
        self.objects().insert(
            key.to_string(),
            (Bytes::from(data), std::time::SystemTime::now()),
        );
        Ok(n)
    }

    async fn get(&self, key: &ObjectKey) -> Result<ByteStream, StorageError> {
        if self.fault().read {
            return Err(Self::unavailable());
        }
        let (data, _) = self
            .objects()
            .get(key.as_str())
            .cloned()
            .ok_or(StorageError::NotFound)?;
        if self.fault().stall {
            return Ok(Box::pin(futures_util::stream::pending()));
        }
        Ok(Box::pin(futures_util::stream::iter([Ok(data)])))
    }

    async fn get_range(
        &self,
        key: &ObjectKey,
        start: u64,
        end: u64,
    ) -> Result<ByteStream, StorageError> {
        if self.fault().read {
            return Err(Self::unavailable());
        }
        let (data, _) = self
            .objects()
            .get(key.as_str())
            .cloned()
            .ok_or(StorageError::NotFound)?;
        let end = usize::try_from(end)
            .unwrap_or(usize::MAX)
            .min(data.len().saturating_sub(1));
        let start = usize::try_from(start).unwrap_or(usize::MAX).min(end);
        Ok(Box::pin(futures_util::stream::iter([Ok(
            data.slice(start..=end)
        )])))
    }

    async fn presigned_get(
        &self,
        _key: &ObjectKey,
        _ttl: std::time::Duration,
        _content_disposition: &str,
    ) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        if self.fault().delete {
            return Err(Self::unavailable());
        }
        self.objects().remove(key.as_str());
        Ok(())
    }

    async fn stat(&self, key: &ObjectKey) -> Result<Option<crate::ObjectStat>, StorageError> {
        if self.fault().read {
            return Err(Self::unavailable());
        }
        Ok(self
            .objects()
            .get(key.as_str())
            .map(|(data, _)| crate::ObjectStat {
                size: data.len() as u64,
                sha256: None,
            }))
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool, StorageError> {
        if self.fault().read {
            return Err(Self::unavailable());
        }
        Ok(self.objects().contains_key(key.as_str()))
    }

    async fn list_objects(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        if self.fault().read {
            return Err(Self::unavailable());
        }
        Ok(self
            .objects()
            .iter()
            .map(|(key, (data, at))| ObjectInfo {
                key: key.clone(),
                size: data.len() as u64,
                last_modified: *at,
            })
            .collect())
    }

    async fn check(&self) -> Result<(), StorageError> {
        if self.fault().read {
            return Err(Self::unavailable());
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// A reader that fails on every read, like a client that hung up.
pub struct FailingReader;

impl AsyncRead for FailingReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "client went away",
        )))
    }
}
