//! Uploads: a body streamed into storage while it is hashed (staged), then recorded
//! (published) — or, on any failure, deleted.

use std::time::Duration;

use agentpkg_model::{
    Actor, Checksum, Coordinates, Description, DetachedSignature, FileName, NewPackage,
    NewSignature, ObjectKey, Package, PackageName, ValidationError,
};
use agentpkg_storage::{DynObjectStore, StorageError};
use agentpkg_store::{DynPackageStore, StoreError};
use tokio::io::AsyncRead;

use crate::guard::{Keepalive, ObjectGuard};
use crate::hashing::HashingReader;
use crate::signing::{self, Keyring, SigningPolicy, StreamDigests};
use crate::{Error, PackageManager};

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
    /// Publish even when another version of the name already has these bytes: an admin's
    /// explicit choice (anyone else asking is refused).
    pub republish: bool,
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
    /// Bytes stored while they were hashed elsewhere (partial uploads joined inside the
    /// store), holding an upload's `place`.
    pub(crate) fn hashed(
        guard: ObjectGuard,
        hashed: (u64, Checksum, StreamDigests),
        place: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        let (size, checksum, digests) = hashed;
        Self {
            guard,
            size,
            checksum,
            digests: Some(digests),
            _place: Some(place),
        }
    }

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

impl PackageManager {
    /// Uploads one package whose metadata is known before its body (a raw `PUT`, a
    /// message with headers): refuses known coordinates before reading the body, streams
    /// the body into storage while hashing it, then records it. On any failure nothing
    /// stays behind: no object, no row. When the metadata may come after the bytes (a
    /// multipart form), use [`PackageManager::stage`] and [`PackageManager::publish`].
    pub async fn upload<R>(&self, meta: UploadMeta, body: R) -> Result<Package, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.check_before_bytes(&meta).await?;
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

    /// Everything an upload whose metadata is known can be refused for before a byte
    /// moves: a name the publisher may not publish to, coordinates already taken, and a
    /// missing, unreadable or untrusted signature.
    pub(crate) async fn check_before_bytes(&self, meta: &UploadMeta) -> Result<(), Error> {
        if let Some(publisher) = &meta.publisher {
            self.ensure_may_act(&meta.coordinates.name, publisher)
                .await?;
            if meta.republish && !publisher.admin {
                return Err(Error::Forbidden(
                    "only an admin may publish bytes again under another version (republish)"
                        .into(),
                ));
            }
        }
        self.ensure_absent(&meta.coordinates).await?;
        self.judge_signature(&meta.coordinates.name, meta.signature.as_ref())
            .await
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

    pub(crate) async fn stage_inner<R>(
        &self,
        body: R,
        signature: Option<&DetachedSignature>,
        size: Option<u64>,
    ) -> Result<StagedUpload, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let extra = signing::stream_hasher(signature)?;
        let place = self.upload_place()?;
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
            let (size, checksum, digests) = reader.finish();
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
        let reads = self.reads.clone();
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
            let inserted = store.insert_package(new).await;
            reads.forget();
            match inserted {
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
    // NOTE: judged again even when it was judged before the bytes: a key removed, revoked
    // or re-scoped while they streamed must not verify them (one query, a few parses).
    let Some(pending) = signing::judge(keyring, policy, name, meta.signature.as_ref()).await?
    else {
        return Ok(None);
    };
    let digests = staged.digests.take();
    let signature = signing::complete(
        pending,
        digests,
        (storage, staged.key()),
        (name, &staged.checksum),
    )
    .await?;
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
        republish: meta.republish,
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

impl PackageManager {
    /// Takes bytes already stored under `key` (the join of a resumable upload's parts) as
    /// a staged upload: marked in flight first, then guarded like any upload's.
    pub(crate) async fn adopt(
        &self,
        key: ObjectKey,
        size: u64,
        checksum: Checksum,
    ) -> Result<StagedUpload, Error> {
        let guard = self.guard_new_object(key).await?;
        Ok(StagedUpload::stored(guard, size, checksum))
    }

    /// Marks `key` in flight (reconciliation leaves it, and a write in parts under it,
    /// alone) and guards it: from here the object, once it exists, is deleted on every way
    /// out but publishing.
    pub(crate) async fn guard_new_object(&self, key: ObjectKey) -> Result<ObjectGuard, Error> {
        self.store.begin_upload(&key).await?;
        let keepalive = Keepalive::start(
            self.store.clone(),
            key.clone(),
            self.config.stale_upload_after / 4,
        );
        Ok(ObjectGuard::new(
            self.storage.clone(),
            self.store.clone(),
            self.metrics.clone(),
            key,
            keepalive,
        ))
    }

    /// One of the [`ManagerConfig::max_concurrent_uploads`] places, or
    /// [`Error::TooManyUploads`].
    pub(crate) fn upload_place(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        self.uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManyUploads)
    }
}
