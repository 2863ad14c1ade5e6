//! Packages: upload, list, get, latest, download, delete.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentpkg_model::{
    Actor, Checksum, Coordinates, Description, DetachedSignature, FileName, LatestQuery, ListQuery,
    NewPackage, NewSignature, ObjectKey, Package, PackageName, PackagePatch, Page, SignatureFormat,
    ValidationError, VersionBuilds,
};
use agentpkg_storage::{ByteStream, DynObjectStore, StorageError};
use agentpkg_store::{Attached, DynOwnershipStore, DynPackageStore, DynSigningStore, StoreError};
use tokio::io::AsyncRead;

use crate::direct::DirectUploads;
use crate::guard::{Keepalive, ObjectGuard, delete_logged};
use crate::hashing::HashingReader;
use crate::instrumented::TimedObjects;
use crate::readiness::Readiness;
use crate::signing::{self, Keyring, SigningPolicy, StreamDigests};

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
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 2 * 1024 * 1024 * 1024,
            stale_upload_after: Duration::from_secs(900),
            max_concurrent_uploads: 64,
            storage_read_timeout: Duration::from_secs(60),
        }
    }
}

/// What describes an upload besides its bytes.
#[derive(Debug, Clone)]
pub struct UploadMeta {
    pub coordinates: Coordinates,
    /// The uploaded file's name; defaults to the package name.
    pub filename: Option<FileName>,
    pub description: Description,
    /// A SHA-256 announced by the client; the upload is refused when the bytes differ.
    pub expected_sha256: Option<Checksum>,
    /// Who publishes: the first publisher of a name owns it, and only its owners (and
    /// admins) publish more. `None` where there are no users.
    pub publisher: Option<Actor>,
    /// A detached signature of the bytes, verified before the package becomes visible
    /// when its format is OpenPGP.
    pub signature: Option<DetachedSignature>,
    /// The body's length, when announced (`Content-Length`): storage may then take it in
    /// one streamed request, and a body of another length is refused.
    pub size: Option<u64>,
}

/// Bytes that are stored but not yet published. Until [`PackageManager::publish`] commits
/// them, they are deleted on every way out: [`StagedUpload::discard`], or drop.
pub struct StagedUpload {
    guard: ObjectGuard,
    size: u64,
    checksum: Checksum,
    /// Taken by the signature check, once.
    digests: Option<StreamDigests>,
    /// One of the [`ManagerConfig::max_concurrent_uploads`] places, held until published
    /// or discarded (none for bytes a client sent straight to storage).
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl StagedUpload {
    /// Bytes already in storage (a direct upload), guarded like any staged upload.
    pub(crate) fn stored(guard: ObjectGuard, size: u64, checksum: Checksum) -> Self {
        Self {
            guard,
            size,
            checksum,
            digests: None,
            _place: None,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn checksum(&self) -> &Checksum {
        &self.checksum
    }

    pub fn key(&self) -> &ObjectKey {
        self.guard.key()
    }

    /// Deletes the staged bytes and waits for it.
    pub async fn discard(self) {
        self.guard.discard().await;
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
    config: ManagerConfig,
    pub(crate) metrics: ManagerMetrics,
    pub(crate) readiness: Arc<tokio::sync::Mutex<Option<(Instant, Readiness)>>>,
    uploads: Arc<tokio::sync::Semaphore>,
    pub(crate) ownership: Option<DynOwnershipStore>,
    keyring: Option<Keyring>,
    signing: SigningPolicy,
    signatures: Option<DynSigningStore>,
    pub(crate) direct: Option<DirectUploads>,
}

impl PackageManager {
    /// A package manager over `store` and `storage`, with metrics of its own.
    pub fn new(store: DynPackageStore, storage: DynObjectStore, config: ManagerConfig) -> Self {
        Self::with_metrics(store, storage, config, ManagerMetrics::default())
    }

    /// A package manager that counts into `metrics`. Every object-store call is timed
    /// there; database calls are timed by the store itself, for the observer that
    /// [`ManagerMetrics::database_observer`] gives (`DieselStore::observed_by`).
    pub fn with_metrics(
        store: DynPackageStore,
        storage: DynObjectStore,
        config: ManagerConfig,
        metrics: ManagerMetrics,
    ) -> Self {
        Self {
            store,
            storage: Arc::new(TimedObjects {
                inner: storage,
                latencies: metrics.storage_latency.clone(),
            }),
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
        }
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
        self.ownership.as_ref().ok_or(Error::NotFound)
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

    /// Uploads one package whose metadata is known before its body (a raw `PUT`, a
    /// message with headers): refuses known coordinates before reading the body, streams
    /// the body into storage while hashing it, then records it. On any failure nothing
    /// stays behind: no object, no row. When the metadata may come after the bytes (a
    /// multipart form), use [`PackageManager::stage`] and [`PackageManager::publish`].
    pub async fn upload<R>(&self, meta: UploadMeta, body: R) -> Result<Package, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        if let Some(publisher) = &meta.publisher {
            self.ensure_may_act(&meta.coordinates.name, publisher)
                .await?;
        }
        self.ensure_absent(&meta.coordinates).await?;
        // A missing, unreadable or untrusted signature is refused before the first byte.
        self.judge_signature(&meta.coordinates.name, meta.signature.as_ref())
            .await?;
        if let Some(size) = meta.size
            && size > self.config.max_upload_bytes
        {
            return Err(Error::TooLarge {
                limit: self.config.max_upload_bytes,
            });
        }
        let staged = self
            .stage_inner(body, meta.signature.as_ref(), meta.size)
            .await?;
        self.publish(staged, meta).await
    }

    /// Checks what can be checked of an upload's signature before its bytes: that one is
    /// there when required, that it parses, and that a trusted key for `name` made it.
    pub async fn judge_signature(
        &self,
        name: &PackageName,
        signature: Option<&DetachedSignature>,
    ) -> Result<(), Error> {
        signing::judge(self.keyring.as_ref(), self.signing, name, signature).await?;
        Ok(())
    }

    /// Fails with a conflict when a package with these coordinates exists. Lets callers
    /// refuse a duplicate before reading its body; [`PackageManager::publish`] still relies
    /// on the database's unique index, which is what settles a race.
    pub async fn ensure_absent(&self, coordinates: &Coordinates) -> Result<(), Error> {
        if self.store.package_exists(coordinates).await? {
            return Err(conflict(coordinates));
        }
        Ok(())
    }

    /// Streams `body` into storage under a fresh key, hashing and counting it, and stops as
    /// soon as the size limit is crossed.
    ///
    /// The work runs in a task of its own, so a caller that goes away (a cancelled
    /// request) cannot interrupt it half-way: the task finishes, and the staged object is
    /// deleted because nobody takes it.
    pub async fn stage<R>(&self, body: R) -> Result<StagedUpload, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.stage_for(body, None).await
    }

    /// [`PackageManager::stage`] for bytes whose signature is already known: the digest it
    /// needs is computed on the way, so checking it never reads the bytes again.
    pub async fn stage_for<R>(
        &self,
        body: R,
        signature: Option<&DetachedSignature>,
    ) -> Result<StagedUpload, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.stage_inner(body, signature, None).await
    }

    async fn stage_inner<R>(
        &self,
        body: R,
        signature: Option<&DetachedSignature>,
        size: Option<u64>,
    ) -> Result<StagedUpload, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let extra = signing::stream_hasher(signature)?;
        let place = self
            .uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManyUploads)?;
        let storage = self.storage.clone();
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let limit = self.config.max_upload_bytes;
        let touch_every = self.config.stale_upload_after / 4;
        let task = tokio::spawn(async move {
            let key = ObjectKey::for_new_package(*uuid::Uuid::new_v4().as_bytes());
            // Marked in flight before the first byte is stored, so that reconciliation
            // never takes it for an orphan, however long the upload or its commit takes.
            store.begin_upload(&key).await?;
            let keepalive = Keepalive::start(store.clone(), key.clone(), touch_every);
            let mut reader = HashingReader::new(body, limit).with_extra(extra);
            let stored = match size {
                Some(size) => storage.put_sized(&key, &mut reader, size).await,
                None => storage.put(&key, &mut reader).await,
            };
            // From here the object may exist: the guard owns its fate.
            let guard = ObjectGuard::new(storage, store, metrics, key, keepalive);
            let exceeded = reader.exceeded();
            let (size, checksum, digests) = reader.finish_with_digests();
            match stored {
                Ok(written) if written == size => {}
                Ok(written) => {
                    guard.discard().await;
                    return Err(Error::Internal(format!(
                        "storage wrote {written} bytes of {size}"
                    )));
                }
                Err(e) => {
                    // A failed put leaves no object, but a store that failed after the
                    // write landed would: delete to be sure.
                    guard.discard().await;
                    return Err(match e {
                        StorageError::Body(_) if exceeded => Error::TooLarge { limit },
                        other => Error::from(other),
                    });
                }
            }
            if size == 0 {
                guard.discard().await;
                return Err(ValidationError::new("file", "is empty").into());
            }
            Ok(StagedUpload {
                guard,
                size,
                checksum,
                digests: Some(digests),
                _place: Some(place),
            })
        });
        task.await
            .map_err(|e| Error::Internal(format!("upload task failed: {e}")))?
    }

    /// Records staged bytes as a package. Runs in a task of its own: once started, it
    /// either commits the row or deletes the object, even if the caller goes away.
    pub async fn publish(&self, staged: StagedUpload, meta: UploadMeta) -> Result<Package, Error> {
        let store = self.store.clone();
        let storage = self.storage.clone();
        let keyring = self.keyring.clone();
        let policy = self.signing;
        let task = tokio::spawn(async move {
            let mut staged = staged;
            let coordinates = meta.coordinates.clone();
            let (size, checksum) = (staged.size, staged.checksum.clone());
            let refused = |error: &Error| {
                tracing::info!(
                    name = coordinates.name.as_str(),
                    version = %coordinates.version,
                    platform = %coordinates.platform,
                    arch = %coordinates.arch,
                    size,
                    sha256 = %checksum,
                    outcome = %error,
                    "package refused; its bytes are deleted"
                );
            };
            let signed = verify_signature(&storage, keyring.as_ref(), policy, &mut staged, &meta);
            let new = match signed
                .await
                .and_then(|signature| prepare_row(&staged, meta, signature))
            {
                Ok(new) => new,
                Err(e) => {
                    refused(&e);
                    staged.discard().await;
                    return Err(e);
                }
            };
            match store.insert_package(new).await {
                Ok(inserted) => {
                    let package = inserted.package;
                    if inserted.reused_object {
                        // The same bytes were already stored: the package shares that
                        // object, and this upload's copy goes.
                        staged.guard.delete_spare_copy().await;
                    } else {
                        staged.guard.disarm();
                    }
                    tracing::info!(
                        package_id = package.id,
                        name = %package.name,
                        version = %package.version,
                        platform = %package.platform,
                        arch = %package.arch,
                        size = package.file_size,
                        sha256 = %package.checksum,
                        deduplicated = inserted.reused_object,
                        "package published"
                    );
                    Ok(package)
                }
                Err(StoreError::CommitUncertain(detail)) => {
                    // The row may have committed: find out before undoing anything.
                    match committed(&store, &coordinates, &checksum).await {
                        Some(package) => {
                            if package.storage_key == *staged.key() {
                                staged.guard.disarm();
                            } else {
                                staged.guard.delete_spare_copy().await;
                            }
                            tracing::info!(
                                package_id = package.id,
                                "package published (its commit was confirmed after the connection broke)"
                            );
                            Ok(package)
                        }
                        None => {
                            let e = Error::from(StoreError::CommitUncertain(detail));
                            refused(&e);
                            staged.guard.abandon();
                            Err(e)
                        }
                    }
                }
                Err(e) => {
                    let e = match e {
                        StoreError::Conflict => conflict(&coordinates),
                        other => other.into(),
                    };
                    refused(&e);
                    staged.discard().await;
                    Err(e)
                }
            }
        });
        task.await
            .map_err(|e| Error::Internal(format!("publish task failed: {e}")))?
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Page<Package>, Error> {
        Ok(self.store.list_packages(query).await?)
    }

    pub async fn get(&self, id: i64) -> Result<Package, Error> {
        self.store.get_package(id).await?.ok_or(Error::NotFound)
    }

    /// The package at exactly these coordinates, active or yanked: an agent pinned to a
    /// version keeps getting it.
    pub async fn find(&self, coordinates: &Coordinates) -> Result<Package, Error> {
        self.store
            .find_package(coordinates)
            .await?
            .ok_or(Error::NotFound)
    }

    /// The history of one package: every version (yanked ones included), newest first,
    /// each with its builds across platforms; [`Error::NotFound`] for an unknown name.
    pub async fn history(&self, name: &PackageName) -> Result<Vec<VersionBuilds>, Error> {
        let packages = self.store.package_versions(name).await?;
        if packages.is_empty() {
            return Err(Error::NotFound);
        }
        Ok(VersionBuilds::group(packages))
    }

    /// The active package of highest SemVer precedence, optionally among the versions that
    /// match a requirement; pre-releases only when asked.
    pub async fn latest(&self, query: &LatestQuery) -> Result<Package, Error> {
        self.store
            .latest_package(query)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Yanks or restores a package (`is_active`), or edits its description. A yanked
    /// package leaves lists and `latest` but stays downloadable by id and coordinates.
    pub async fn update(
        &self,
        id: i64,
        patch: PackagePatch,
        actor: Option<&Actor>,
    ) -> Result<Package, Error> {
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
        let package = self
            .store
            .update_package(id, patch)
            .await?
            .ok_or(Error::NotFound)?;
        tracing::info!(
            package_id = id,
            is_active = package.is_active,
            "package updated"
        );
        Ok(package)
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
                tracing::error!(package_id = package.id, object_key = %key, "package row has no object");
                Err(Error::NotFound)
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

    /// A package's signature: its format and bytes, as the publisher sent them.
    pub async fn signature(&self, package: &Package) -> Result<(SignatureFormat, Vec<u8>), Error> {
        if package.signature.is_none() {
            return Err(Error::NoSignature);
        }
        let store = self.signatures.as_ref().ok_or(Error::NoSignature)?;
        store
            .signature_bytes(package.id)
            .await?
            .ok_or(Error::NoSignature)
    }

    /// Signs an existing package: the signature is judged and verified (over the stored
    /// bytes, read once) exactly as at upload. Replacing a verified signature needs an
    /// admin (`actor` `None` is a trusted caller).
    pub async fn attach_signature(
        &self,
        id: i64,
        signature: DetachedSignature,
        actor: Option<&Actor>,
    ) -> Result<Package, Error> {
        let package = self.get(id).await?;
        if let Some(actor) = actor {
            self.ensure_may_act(&package.name, actor).await?;
        }
        let store = self.signatures.as_ref().ok_or_else(|| {
            Error::SignatureInvalid("this registry does not keep signatures".into())
        })?;
        let pending = signing::judge(
            self.keyring.as_ref(),
            self.signing,
            &package.name,
            Some(&signature),
        )
        .await?
        .ok_or_else(|| Error::Internal("a signature judged as absent".into()))?;
        // The upload's digests are long gone: the stored bytes are read once to check.
        let new = signing::complete(pending, None, (&self.storage, &package.storage_key)).await?;
        let may_replace_verified = actor.is_none_or(|a| a.admin);
        match store
            .attach_signature(id, new, may_replace_verified)
            .await?
        {
            Attached::Done { package, replaced } => {
                tracing::info!(
                    package_id = id,
                    verified = package
                        .signature
                        .as_ref()
                        .is_some_and(|s| s.verified_by.is_some()),
                    replaced = replaced.is_some(),
                    "package signature attached"
                );
                Ok(package)
            }
            Attached::NoPackage => Err(Error::NotFound),
            Attached::VerifiedExists(_) => Err(Error::Forbidden(
                "the package has a verified signature; only an admin may replace it".into(),
            )),
        }
    }

    /// Deletes a package: the row first, then the object — unless another package has the
    /// same bytes.
    ///
    /// NOTE: the order is deliberate. Once the row is gone nobody can be handed the
    /// package, so a crash or storage failure before the object is deleted leaves only an
    /// unreferenced object, which reconciliation can remove. The other order could leave a
    /// row pointing at nothing: a package that lists but cannot be downloaded.
    pub async fn delete(&self, id: i64) -> Result<Package, Error> {
        let deleted = self
            .store
            .delete_package(id)
            .await?
            .ok_or(Error::NotFound)?;
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
        Ok(package)
    }
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

/// After a commit whose answer was lost: the package at `coordinates`, if the database
/// (asked again, a few times) shows that it committed with these bytes. `None` when it did
/// not, or when the database cannot tell; the caller then leaves the object to
/// reconciliation, which decides once the upload's marker is stale.
async fn committed(
    store: &DynPackageStore,
    coordinates: &Coordinates,
    checksum: &Checksum,
) -> Option<Package> {
    for attempt in 0..5u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match store.find_package(coordinates).await {
            Ok(Some(package)) if package.checksum == *checksum => return Some(package),
            // Absent, or someone else's bytes: not (yet) ours. A commit still in flight on
            // the lost connection could land later, so nothing is deleted here.
            Ok(_) => return None,
            Err(e) => tracing::warn!(error = %e, "cannot confirm the lost commit yet"),
        }
    }
    None
}

/// Judges the upload's signature and completes it against the bytes it staged.
async fn verify_signature(
    storage: &DynObjectStore,
    keyring: Option<&Keyring>,
    policy: SigningPolicy,
    staged: &mut StagedUpload,
    meta: &UploadMeta,
) -> Result<Option<NewSignature>, Error> {
    if let Some(expected) = &meta.expected_sha256
        && expected != &staged.checksum
    {
        // The cheaper refusal first: the bytes are not the ones announced.
        return Err(Error::ChecksumMismatch {
            expected: expected.to_string(),
            actual: staged.checksum.to_string(),
        });
    }
    let name = &meta.coordinates.name;
    let Some(pending) = signing::judge(keyring, policy, name, meta.signature.as_ref()).await?
    else {
        return Ok(None);
    };
    let digests = staged.digests.take();
    let signature = signing::complete(pending, digests, (storage, staged.key())).await?;
    Ok(Some(signature))
}

/// Checks what only the finished upload can tell, and builds the row.
fn prepare_row(
    staged: &StagedUpload,
    meta: UploadMeta,
    signature: Option<NewSignature>,
) -> Result<NewPackage, Error> {
    let filename = match meta.filename {
        Some(f) => f,
        None => FileName::parse(meta.coordinates.name.as_str())?,
    };
    Ok(NewPackage {
        coordinates: meta.coordinates,
        filename,
        description: meta.description,
        file_size: staged.size,
        checksum: staged.checksum.clone(),
        storage_key: staged.key().clone(),
        publisher: meta.publisher,
        signature,
    })
}

fn conflict(c: &Coordinates) -> Error {
    Error::Conflict(format!(
        "{} {} for {}/{} already exists",
        c.name.as_str(),
        c.version,
        c.platform,
        c.arch
    ))
}
