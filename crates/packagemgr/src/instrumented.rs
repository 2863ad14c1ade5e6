//! Timing of every call into the object store and the metadata store, by operation and
//! outcome, in [`crate::ManagerMetrics`].
//!
//! The object store is wrapped in a decorator ([`TimedObjects`]). The metadata store times
//! its own calls, in the one function they all pass through, and reports them to
//! [`DatabaseLatencies`]: a decorator there would need a forwarding method for every
//! operation of every store trait.
//!
//! A `put` is timed to its end, so it includes streaming the body; a `get` is timed until
//! the stream opens (the bytes then flow at the client's pace).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use agentpkg_model::{ObjectKey, StoredPart};
use agentpkg_storage::{
    Body, ByteStream, DynObjectStore, IncompleteWrite, ObjectInfo, ObjectStat, ObjectStore,
    PresignedPut, StorageError,
};
use agentpkg_store::CallObserver;
use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OperationLabels {
    operation: &'static str,
    /// `ok` or `error`.
    outcome: &'static str,
}

pub(crate) type Latencies = Family<OperationLabels, Histogram, fn() -> Histogram>;

pub(crate) fn latencies() -> Latencies {
    // 0.1 ms to ~30 s.
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 19)))
}

async fn timed<T, E>(
    latencies: &Latencies,
    operation: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = call.await;
    record(latencies, operation, result.is_ok(), started.elapsed());
    result
}

fn record(latencies: &Latencies, operation: &'static str, ok: bool, elapsed: Duration) {
    latencies
        .get_or_create(&OperationLabels {
            operation,
            outcome: if ok { "ok" } else { "error" },
        })
        .observe(elapsed.as_secs_f64());
}

/// Records the database calls that the store times itself (see
/// [`agentpkg_store::CallObserver`]).
pub(crate) struct DatabaseLatencies(pub(crate) Latencies);

impl CallObserver for DatabaseLatencies {
    fn observe(&self, operation: &'static str, ok: bool, elapsed: Duration) {
        record(&self.0, operation, ok, elapsed);
    }
}

/// An object store whose every call is timed.
pub(crate) struct TimedObjects {
    pub(crate) inner: DynObjectStore,
    pub(crate) latencies: Latencies,
}

#[async_trait]
impl ObjectStore for TimedObjects {
    async fn put(&self, key: &ObjectKey, body: Body<'_>) -> Result<u64, StorageError> {
        timed(&self.latencies, "put", self.inner.put(key, body)).await
    }
    async fn get(&self, key: &ObjectKey) -> Result<ByteStream, StorageError> {
        timed(&self.latencies, "get", self.inner.get(key)).await
    }
    async fn get_range(
        &self,
        key: &ObjectKey,
        start: u64,
        end: u64,
    ) -> Result<ByteStream, StorageError> {
        timed(
            &self.latencies,
            "get_range",
            self.inner.get_range(key, start, end),
        )
        .await
    }
    async fn presigned_get(
        &self,
        key: &ObjectKey,
        ttl: Duration,
        content_disposition: &str,
    ) -> Result<Option<String>, StorageError> {
        timed(
            &self.latencies,
            "presigned_get",
            self.inner.presigned_get(key, ttl, content_disposition),
        )
        .await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        timed(&self.latencies, "delete", self.inner.delete(key)).await
    }
    async fn put_sized(
        &self,
        key: &ObjectKey,
        body: Body<'_>,
        size: u64,
    ) -> Result<u64, StorageError> {
        timed(
            &self.latencies,
            "put",
            self.inner.put_sized(key, body, size),
        )
        .await
    }
    async fn presigned_put(
        &self,
        key: &ObjectKey,
        ttl: Duration,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<Option<PresignedPut>, StorageError> {
        timed(
            &self.latencies,
            "presigned_put",
            self.inner.presigned_put(key, ttl, size, sha256),
        )
        .await
    }
    async fn stat(&self, key: &ObjectKey) -> Result<Option<ObjectStat>, StorageError> {
        timed(&self.latencies, "stat", self.inner.stat(key)).await
    }
    async fn exists(&self, key: &ObjectKey) -> Result<bool, StorageError> {
        timed(&self.latencies, "exists", self.inner.exists(key)).await
    }
    async fn list_objects(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        timed(&self.latencies, "list_objects", self.inner.list_objects()).await
    }
    async fn list_keys(&self) -> Result<Vec<String>, StorageError> {
        timed(&self.latencies, "list_keys", self.inner.list_keys()).await
    }
    async fn list_incomplete(
        &self,
        older_than: SystemTime,
    ) -> Result<Vec<IncompleteWrite>, StorageError> {
        timed(
            &self.latencies,
            "list_incomplete",
            self.inner.list_incomplete(older_than),
        )
        .await
    }
    async fn remove_incomplete(&self, write: &IncompleteWrite) -> Result<(), StorageError> {
        timed(
            &self.latencies,
            "remove_incomplete",
            self.inner.remove_incomplete(write),
        )
        .await
    }
    async fn begin_parts(&self, key: &ObjectKey) -> Result<String, StorageError> {
        timed(&self.latencies, "begin_parts", self.inner.begin_parts(key)).await
    }
    async fn put_part(
        &self,
        key: &ObjectKey,
        upload: &str,
        number: u32,
        body: Body<'_>,
        size: u64,
    ) -> Result<String, StorageError> {
        timed(
            &self.latencies,
            "put_part",
            self.inner.put_part(key, upload, number, body, size),
        )
        .await
    }
    async fn complete_parts(
        &self,
        key: &ObjectKey,
        upload: &str,
        parts: &[StoredPart],
    ) -> Result<(), StorageError> {
        timed(
            &self.latencies,
            "complete_parts",
            self.inner.complete_parts(key, upload, parts),
        )
        .await
    }
    async fn abort_parts(&self, key: &ObjectKey, upload: &str) -> Result<(), StorageError> {
        timed(
            &self.latencies,
            "abort_parts",
            self.inner.abort_parts(key, upload),
        )
        .await
    }
    async fn check(&self) -> Result<(), StorageError> {
        timed(&self.latencies, "check", self.inner.check()).await
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}
