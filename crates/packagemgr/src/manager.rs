//! The package manager: its parts and settings, and packages read, downloaded, changed and
//! deleted. Uploads are in `upload.rs`, signatures in `signing.rs`, direct uploads in
//! `direct.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentpkg_model::{
    Actor, Coordinates, Entity, LatestQuery, ListQuery, Package, PackageName, PackagePatch, Page,
    ValidationError, VersionBuilds,
};
use agentpkg_storage::{ByteStream, DynObjectStore, StorageError};
use agentpkg_store::{DynOwnershipStore, DynPackageStore, DynSigningStore};

use crate::direct::DirectUploads;
use crate::guard::delete_logged;
use crate::readiness::Readiness;
use crate::signing::{Keyring, SigningPolicy};
use crate::{Error, ManagerMetrics};

/// Limits of the package manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Largest accepted package, in bytes.
    pub max_upload_bytes: u64,
    /// An upload whose in-flight marker has not been touched for this long is taken for
    /// abandoned (its process died) by reconciliation. Uploads touch theirs four times as
    /// often.
    pub stale_upload_after: Duration,
    /// Uploads streaming at once; one more is refused with [`Error::TooManyUploads`].
    pub max_concurrent_uploads: usize,
    /// Longest wait for object storage to deliver the next chunk of a download (or to
    /// start it): a stalled store fails the download instead of holding it for ever.
    pub storage_read_timeout: Duration,
    /// Bytes one user's open resumable sessions and live direct grants may announce
    /// together: what a publisher can make the registry hold for uploads not finished.
    pub max_bytes_in_flight_per_user: u64,
    /// Direct-upload grants one user may hold at once (not completed, not expired).
    pub max_direct_grants_per_user: u64,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 2 * 1024 * 1024 * 1024,
            stale_upload_after: Duration::from_secs(900),
            max_concurrent_uploads: 64,
            storage_read_timeout: Duration::from_secs(60),
            max_bytes_in_flight_per_user: 8 * 1024 * 1024 * 1024,
            max_direct_grants_per_user: 16,
        }
    }
}

/// A package and its bytes, ready to stream.
pub struct Download {
    pub package: Package,
    pub body: ByteStream,
}

/// The package manager. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct PackageManager {
    pub(crate) store: DynPackageStore,
    pub(crate) storage: DynObjectStore,
    pub(crate) config: ManagerConfig,
    pub(crate) metrics: ManagerMetrics,
    pub(crate) readiness: Arc<tokio::sync::Mutex<Option<(Instant, Readiness)>>>,
    pub(crate) uploads: Arc<tokio::sync::Semaphore>,
    pub(crate) ownership: Option<DynOwnershipStore>,
    pub(crate) keyring: Option<Keyring>,
    pub(crate) signing: SigningPolicy,
    pub(crate) signatures: Option<DynSigningStore>,
    pub(crate) direct: Option<DirectUploads>,
    pub(crate) resumable: Option<crate::resumable::Resumable>,
    pub(crate) audit: Option<crate::AuditLog>,
    /// Package reads kept in memory, for readers ([`crate::PackageGate`]); the manager's
    /// own reads, and the fleet's offers, always ask the store.
    pub(crate) reads: crate::read_cache::ReadCache,
}

impl PackageManager {
    /// A package manager over `store` and `storage`, with metrics of its own.
    pub fn new(store: DynPackageStore, storage: DynObjectStore, config: ManagerConfig) -> Self {
        Self::with_metrics(store, storage, config, ManagerMetrics::default())
    }

    /// A package manager that counts into `metrics`. The backends time their own calls,
    /// for the observers that [`ManagerMetrics::database_observer`] and
    /// [`ManagerMetrics::storage_observer`] give (`DieselStore::observed_by`,
    /// `S3Store::observed_by`).
    pub fn with_metrics(
        store: DynPackageStore,
        storage: DynObjectStore,
        config: ManagerConfig,
        metrics: ManagerMetrics,
    ) -> Self {
        Self {
            store,
            storage,
            uploads: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_uploads.max(1),
            )),
            config,
            metrics,
            readiness: Arc::default(),
            ownership: None,
            keyring: None,
            signing: SigningPolicy::default(),
            signatures: None,
            direct: None,
            resumable: None,
            audit: None,
            reads: crate::read_cache::ReadCache::default(),
        }
    }

    /// The same manager keeping package reads in memory for readers (the gate's `get`,
    /// `find`, `latest` and `history`), as `config` says: forgotten at once when this
    /// manager changes a package, and when the store's package revision moves — start
    /// [`Self::spawn_read_cache_watcher`] to read it.
    pub fn with_read_cache(mut self, config: crate::ReadCacheConfig) -> Self {
        self.reads = crate::read_cache::ReadCache::new(config, self.metrics.cached_reads.clone());
        self
    }

    /// Reads the store's package revision every `watch_every` and forgets the reads kept
    /// when it moves (a change made by another replica or tool), until aborted. `None`
    /// without a read cache, or when the store keeps no revision.
    pub fn spawn_read_cache_watcher(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.reads.spawn_watcher(self.store.clone())
    }

    /// The same manager with direct uploads (on storage that makes presigned `PUT`s),
    /// recorded in `store`, each grant valid for `ttl`.
    pub fn with_direct_uploads(
        mut self,
        store: agentpkg_store::DynDirectUploadStore,
        ttl: Duration,
    ) -> Self {
        self.direct = Some(DirectUploads { store, ttl });
        self
    }

    /// The same manager with signatures: OpenPGP signatures are verified against the
    /// trusted keys in `store`, signatures of packages are kept there, and `policy` says
    /// whether every upload needs one. Without it, an upload that brings a signature is
    /// refused, and so is every upload when `policy.required`.
    pub fn with_signing(mut self, store: DynSigningStore, policy: SigningPolicy) -> Self {
        self.keyring = Some(Keyring::new(store.clone()));
        self.signatures = Some(store);
        self.signing = policy;
        self
    }

    /// The same manager verifying Sigstore bundles against `trust` (with the identity
    /// policies in the signing store): call after [`Self::with_signing`]. Without it a
    /// bundle is refused as unverifiable.
    pub fn with_sigstore(mut self, trust: crate::SigstoreTrust) -> Self {
        self.keyring = self.keyring.map(|k| k.with_sigstore(trust));
        self
    }

    /// The same manager recording what its gate decides in `audit`.
    pub fn with_audit(mut self, audit: crate::AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The trusted signing keys, when signatures are set up.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    pub fn signing_policy(&self) -> SigningPolicy {
        self.signing
    }

    /// The same manager with package ownership: the first publisher of a name owns it, and
    /// only its owners (and admins) publish to or change it. Without it, every publisher
    /// may act on every name (a service without users).
    pub fn with_ownership(mut self, ownership: DynOwnershipStore) -> Self {
        self.ownership = Some(ownership);
        self
    }

    pub(crate) fn ownership(&self) -> Result<&DynOwnershipStore, Error> {
        self.ownership
            .as_ref()
            .ok_or(Error::NotFound(Entity::Package))
    }

    /// Takes a snapshot of the database pool into the metrics; call it before exporting
    /// them.
    pub fn refresh_metrics(&self) {
        if let Some(status) = self.store.pool_status() {
            self.metrics.set_pool(status);
        }
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// Counters of rollbacks and reconciliation, to register with a metrics registry.
    pub fn metrics(&self) -> &ManagerMetrics {
        &self.metrics
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Page<Package>, Error> {
        Ok(self.store.list_packages(query).await?)
    }

    pub async fn get(&self, id: i64) -> Result<Package, Error> {
        self.store
            .get_package(id)
            .await?
            .ok_or(Error::NotFound(Entity::Package))
    }

    /// The package at exactly these coordinates, active or yanked: an agent pinned to a
    /// version keeps getting it.
    pub async fn find(&self, coordinates: &Coordinates) -> Result<Package, Error> {
        self.store
            .find_package(coordinates)
            .await?
            .ok_or(Error::NotFound(Entity::Package))
    }

    /// The history of one package: every version (yanked ones included), newest first,
    /// each with its builds across platforms; [`Error::NotFound`] for an unknown name.
    pub async fn history(&self, name: &PackageName) -> Result<Vec<VersionBuilds>, Error> {
        history_of(self.store.package_versions(name).await?)
    }

    /// [`Self::get`], from the read cache when there is one.
    pub(crate) async fn read_get(&self, id: i64) -> Result<Package, Error> {
        self.reads
            .get(&self.store, id)
            .await?
            .ok_or(Error::NotFound(Entity::Package))
    }

    /// [`Self::find`], from the read cache when there is one.
    pub(crate) async fn read_find(&self, coordinates: &Coordinates) -> Result<Package, Error> {
        self.reads
            .find(&self.store, coordinates)
            .await?
            .ok_or(Error::NotFound(Entity::Package))
    }

    /// [`Self::latest`], from the read cache when there is one.
    pub(crate) async fn read_latest(&self, query: &LatestQuery) -> Result<Package, Error> {
        self.reads
            .latest(&self.store, query)
            .await?
            .ok_or(Error::NotFound(Entity::LatestBuild))
    }

    /// [`Self::history`], from the read cache when there is one.
    pub(crate) async fn read_history(
        &self,
        name: &PackageName,
    ) -> Result<Vec<VersionBuilds>, Error> {
        let packages = self.reads.versions(&self.store, name).await?;
        history_of(Vec::clone(&packages))
    }

    /// The active package of highest SemVer precedence, optionally among the versions that
    /// match a requirement; pre-releases only when asked.
    pub async fn latest(&self, query: &LatestQuery) -> Result<Package, Error> {
        self.store
            .latest_package(query)
            .await?
            .ok_or(Error::NotFound(Entity::LatestBuild))
    }

    /// Yanks or restores a package (`is_active`), or edits its description. A yanked
    /// package leaves lists and `latest` but stays downloadable by id and coordinates.
    pub async fn update(
        &self,
        id: i64,
        patch: PackagePatch,
        actor: Option<&Actor>,
    ) -> Result<Package, Error> {
        Ok(self.update_recorded(id, patch, actor, Vec::new()).await?.0)
    }

    /// [`PackageManager::update`], with `events` recorded in the change's transaction
    /// where the store keeps the audit log; the events it could not record are handed
    /// back.
    pub(crate) async fn update_recorded(
        &self,
        id: i64,
        patch: PackagePatch,
        actor: Option<&Actor>,
        events: Vec<agentpkg_model::NewAuditEvent>,
    ) -> Result<(Package, Vec<agentpkg_model::NewAuditEvent>), Error> {
        if let Some(actor) = actor {
            let package = self.get(id).await?;
            self.ensure_may_act(&package.name, actor).await?;
        }
        if patch.is_empty() {
            return Err(ValidationError::new(
                "body",
                "nothing to change: send is_active and/or description",
            )
            .into());
        }
        let updated = self.store.update_package_recorded(id, patch, events).await;
        self.reads.forget();
        let (package, unrecorded) = updated?;
        let package = package.ok_or(Error::NotFound(Entity::Package))?;
        tracing::info!(
            package_id = id,
            is_active = package.is_active,
            "package updated"
        );
        Ok((package, unrecorded))
    }

    /// Opens a package's bytes as a stream.
    pub async fn download(&self, id: i64) -> Result<Download, Error> {
        let package = self.get(id).await?;
        let body = self.open(&package, None).await?;
        Ok(Download { package, body })
    }

    /// Streams a package's bytes, or the inclusive byte range `start..=end` of them (read
    /// from storage as a range).
    pub async fn open(
        &self,
        package: &Package,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream, Error> {
        let key = &package.storage_key;
        let timeout = self.config.storage_read_timeout;
        let opening = async {
            match range {
                None => self.storage.get(key).await,
                Some((start, end)) => self.storage.get_range(key, start, end).await,
            }
        };
        let opened = tokio::time::timeout(timeout, opening)
            .await
            .unwrap_or_else(|_| {
                Err(StorageError::Unavailable(format!(
                    "no answer within {} s",
                    timeout.as_secs()
                )))
            });
        match opened {
            Ok(body) => Ok(stalls_fail(body, timeout)),
            Err(StorageError::NotFound) => {
                // A delete that landed between reading the row and opening its object is
                // a race the caller lost; a row that is still there without its object is
                // damage worth an operator's attention.
                match self.store.get_package(package.id).await {
                    Ok(Some(_)) => tracing::error!(
                        package_id = package.id, object_key = %key, "package row has no object"
                    ),
                    Ok(None) => tracing::debug!(
                        package_id = package.id,
                        "package deleted while its bytes were opened"
                    ),
                    Err(e) => tracing::warn!(
                        package_id = package.id, object_key = %key, error = %e,
                        "object missing; could not tell whether its package was deleted meanwhile"
                    ),
                }
                Err(Error::NotFound(Entity::Package))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A URL that serves the package straight from object storage until `ttl` passes, when
    /// the backend can make one.
    pub async fn presigned_url(
        &self,
        package: &Package,
        ttl: Duration,
    ) -> Result<Option<String>, Error> {
        Ok(self
            .storage
            .presigned_get(
                &package.storage_key,
                ttl,
                &package.filename.content_disposition(),
            )
            .await?)
    }

    /// Deletes a package: the row first, then the object — unless another package has the
    /// same bytes.
    ///
    /// NOTE: the order is deliberate. Once the row is gone nobody can be handed the
    /// package, so a crash or storage failure before the object is deleted leaves only an
    /// unreferenced object, which reconciliation can remove. The other order could leave a
    /// row pointing at nothing: a package that lists but cannot be downloaded.
    pub async fn delete(&self, id: i64) -> Result<Package, Error> {
        Ok(self.delete_recorded(id, Vec::new()).await?.0)
    }

    /// [`PackageManager::delete`], with `events` recorded in the row's deletion where the
    /// store keeps the audit log; the events it could not record are handed back.
    pub(crate) async fn delete_recorded(
        &self,
        id: i64,
        events: Vec<agentpkg_model::NewAuditEvent>,
    ) -> Result<(Package, Vec<agentpkg_model::NewAuditEvent>), Error> {
        let deleted = self.store.delete_package_recorded(id, events).await;
        self.reads.forget();
        let (deleted, unrecorded) = deleted?;
        let deleted = deleted.ok_or(Error::NotFound(Entity::Package))?;
        let package = deleted.package;
        // Other packages with the same bytes keep the object.
        if deleted.object_released {
            delete_logged(&self.storage, &package.storage_key).await;
        }
        tracing::info!(
            package_id = id,
            name = %package.name,
            version = %package.version,
            object_deleted = deleted.object_released,
            "package deleted"
        );
        Ok((package, unrecorded))
    }
}

/// A name's versions grouped by version, or not found when it has none.
fn history_of(packages: Vec<Package>) -> Result<Vec<VersionBuilds>, Error> {
    if packages.is_empty() {
        return Err(Error::NotFound(Entity::Package));
    }
    Ok(VersionBuilds::group(packages))
}

/// The same stream, failing with `TimedOut` when storage delivers nothing for `idle`. The
/// timer only runs while a chunk is awaited, so a slow client (which reads late) is not
/// charged for it.
fn stalls_fail(body: ByteStream, idle: Duration) -> ByteStream {
    use futures_util::StreamExt;
    Box::pin(futures_util::stream::unfold(
        Some(body),
        move |body| async move {
            let mut body = body?;
            match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(item)) => Some((item, Some(body))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("object storage delivered nothing for {} s", idle.as_secs()),
                    )),
                    None,
                )),
            }
        },
    ))
}
