//! Timing of every call into the metadata store and the object store: decorators that
//! forward each call and record how long it took, by operation and outcome, in
//! [`crate::ManagerMetrics`].
//!
//! A `put` is timed to its end, so it includes streaming the body; a `get` is timed until
//! the stream opens (the bytes then flow at the client's pace).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use agentpkg_model::{
    Arch, Coordinates, ListQuery, NewPackage, ObjectKey, Package, PackageName, PackagePatch, Page,
    Platform, Role, User, Username, VersionRequirement,
};
use agentpkg_storage::{Body, ByteStream, DynObjectStore, ObjectInfo, ObjectStore, StorageError};
use agentpkg_store::{Deleted, DynStore, Inserted, MetadataStore, PoolStatus, StoreError};
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

/// A metadata store whose every call is timed.
pub(crate) struct TimedStore {
    pub(crate) inner: DynStore,
    pub(crate) latencies: Latencies,
}

#[async_trait]
impl MetadataStore for TimedStore {
    async fn insert_package(&self, new: NewPackage) -> Result<Inserted, StoreError> {
        timed(
            &self.latencies,
            "insert_package",
            self.inner.insert_package(new),
        )
        .await
    }
    async fn package_exists(&self, coordinates: &Coordinates) -> Result<bool, StoreError> {
        timed(
            &self.latencies,
            "package_exists",
            self.inner.package_exists(coordinates),
        )
        .await
    }
    async fn get_package(&self, id: i64) -> Result<Option<Package>, StoreError> {
        timed(&self.latencies, "get_package", self.inner.get_package(id)).await
    }
    async fn find_package(&self, coordinates: &Coordinates) -> Result<Option<Package>, StoreError> {
        timed(
            &self.latencies,
            "find_package",
            self.inner.find_package(coordinates),
        )
        .await
    }
    async fn package_versions(&self, name: &PackageName) -> Result<Vec<Package>, StoreError> {
        timed(
            &self.latencies,
            "package_versions",
            self.inner.package_versions(name),
        )
        .await
    }
    async fn update_package(
        &self,
        id: i64,
        patch: PackagePatch,
    ) -> Result<Option<Package>, StoreError> {
        timed(
            &self.latencies,
            "update_package",
            self.inner.update_package(id, patch),
        )
        .await
    }
    async fn list_packages(&self, query: &ListQuery) -> Result<Page<Package>, StoreError> {
        timed(
            &self.latencies,
            "list_packages",
            self.inner.list_packages(query),
        )
        .await
    }
    async fn latest_package(
        &self,
        name: &PackageName,
        platform: Platform,
        arch: Arch,
        requirement: Option<&VersionRequirement>,
        include_prerelease: bool,
    ) -> Result<Option<Package>, StoreError> {
        timed(
            &self.latencies,
            "latest_package",
            self.inner
                .latest_package(name, platform, arch, requirement, include_prerelease),
        )
        .await
    }
    async fn delete_package(&self, id: i64) -> Result<Option<Deleted>, StoreError> {
        timed(
            &self.latencies,
            "delete_package",
            self.inner.delete_package(id),
        )
        .await
    }
    async fn blob_keys(&self) -> Result<Vec<String>, StoreError> {
        timed(&self.latencies, "blob_keys", self.inner.blob_keys()).await
    }
    async fn packages_with_object(&self, key: &str) -> Result<Vec<i64>, StoreError> {
        timed(
            &self.latencies,
            "packages_with_object",
            self.inner.packages_with_object(key),
        )
        .await
    }
    async fn create_user(
        &self,
        username: &Username,
        password_hash: String,
        role: Role,
    ) -> Result<User, StoreError> {
        timed(
            &self.latencies,
            "create_user",
            self.inner.create_user(username, password_hash, role),
        )
        .await
    }
    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        timed(
            &self.latencies,
            "user_credentials",
            self.inner.user_credentials(username),
        )
        .await
    }
    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        timed(&self.latencies, "list_users", self.inner.list_users()).await
    }
    async fn delete_user(&self, id: i64) -> Result<bool, StoreError> {
        timed(&self.latencies, "delete_user", self.inner.delete_user(id)).await
    }
    async fn count_users(&self) -> Result<u64, StoreError> {
        timed(&self.latencies, "count_users", self.inner.count_users()).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        timed(&self.latencies, "ping", self.inner.ping()).await
    }
    fn pool_status(&self) -> Option<PoolStatus> {
        self.inner.pool_status()
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
        filename: &str,
    ) -> Result<Option<String>, StorageError> {
        timed(
            &self.latencies,
            "presigned_get",
            self.inner.presigned_get(key, ttl, filename),
        )
        .await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        timed(&self.latencies, "delete", self.inner.delete(key)).await
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
    async fn sweep_incomplete(
        &self,
        older_than: SystemTime,
        dry_run: bool,
    ) -> Result<Vec<String>, StorageError> {
        timed(
            &self.latencies,
            "sweep_incomplete",
            self.inner.sweep_incomplete(older_than, dry_run),
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
