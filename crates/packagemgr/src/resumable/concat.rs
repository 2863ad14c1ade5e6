//! Partial uploads joined by a final upload, hashed in order as one package. Where the
//! store copies parts inside itself (S3's `UploadPartCopy`), each partial's object becomes a
//! part of the package's object and its bytes are only read, to be hashed; elsewhere they
//! are read once, hashed and stored again through the server.

use std::io;

use agentpkg_model::{
    Actor, Entity, ObjectKey, Package, SessionKind, SessionProgress, SessionTarget, StoredPart,
    UploadSession, UploadSessionId, ValidationError,
};
use agentpkg_storage::{
    DynObjectStore, MAX_PART_BYTES, MAX_PARTS, MIN_PART_BYTES, ObjectStore, StorageError,
};
use agentpkg_store::SessionLease;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncRead;

use super::lease::{LeaseRenewal, release_logged};
use super::meta_of;
use crate::hashing::HashingReader;
use crate::signing;
use crate::upload::{StagedUpload, UploadMeta};
use crate::{Error, PackageManager};

impl PackageManager {
    /// Joins complete partial uploads of `creator`, in order, into the package `target`
    /// describes: their bytes are read once, hashed and stored, and published with every
    /// check of an upload. The partial uploads end with it (also when it is refused; not
    /// when a backend failed, so that the client may try again).
    pub async fn concatenate(
        &self,
        parts: &[UploadSessionId],
        target: SessionTarget,
        metadata: String,
        creator: Option<&Actor>,
    ) -> Result<(UploadSession, Package), Error> {
        let sessions = self.sessions()?.clone();
        if parts.is_empty() {
            return Err(ValidationError::new("Upload-Concat", "names no partial upload").into());
        }
        let mut partials = Vec::with_capacity(parts.len());
        for id in parts {
            let partial = self.session(id, creator).await?;
            if partial.kind != SessionKind::Partial {
                return Err(ValidationError::new(
                    "Upload-Concat",
                    format!("upload {id} is not a partial upload"),
                )
                .into());
            }
            if !partial.is_complete() {
                return Err(Error::UploadIncomplete(format!(
                    "partial upload {id} has {} of its {} bytes",
                    partial.progress.offset, partial.length
                )));
            }
            partials.push(partial);
        }
        let length: u64 = partials.iter().map(|p| p.length).sum();
        if length > self.config.max_upload_bytes {
            return Err(Error::TooLarge {
                limit: self.config.max_upload_bytes,
            });
        }
        let meta = meta_of(&target, creator, Some(length));
        self.check_before_bytes(&meta).await?;
        // Held while joining: no other final upload takes the same parts.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut held = Vec::new();
        for partial in &partials {
            match sessions
                .store
                .lease_session(
                    &partial.id,
                    partial.length,
                    &token,
                    sessions.config.lease,
                    None,
                )
                .await
            {
                Ok(SessionLease::Leased(_)) => held.push(partial.id.clone()),
                other => {
                    for id in &held {
                        release_logged(&sessions.store, id, &token).await;
                    }
                    return Err(match other {
                        Err(e) => e.into(),
                        Ok(SessionLease::Busy) => Error::UploadLocked,
                        Ok(_) => Error::NotFound(Entity::Upload),
                    });
                }
            }
        }
        let _renewing: Vec<LeaseRenewal> = held
            .iter()
            .map(|id| {
                LeaseRenewal::start(
                    sessions.store.clone(),
                    id.clone(),
                    token.clone(),
                    sessions.config.lease,
                )
            })
            .collect();
        let joined = self.join(&partials, &meta, length).await;
        let outcome = match joined {
            Ok(staged) => self.publish(staged, meta).await,
            Err(e) => Err(e),
        };
        let keep_parts = matches!(
            outcome,
            Err(Error::StorageUnavailable(_) | Error::DatabaseUnavailable(_) | Error::Internal(_))
        );
        if keep_parts {
            for id in &held {
                release_logged(&sessions.store, id, &token).await;
            }
        } else {
            for partial in &partials {
                sessions.store.delete_session(&partial.id).await?;
                self.remove_session_objects(partial).await;
            }
        }
        let package = outcome?;
        let record = UploadSession {
            id: UploadSessionId::new(*uuid::Uuid::new_v4().as_bytes()),
            user_id: creator.map(|a| a.user_id),
            kind: SessionKind::Final,
            target: Some(target),
            metadata,
            parts_of: parts.to_vec(),
            length,
            storage_key: package.storage_key.clone(),
            progress: SessionProgress {
                offset: length,
                multipart: None,
                parts: Vec::new(),
                tail: None,
                hash_state: Vec::new(),
                package_id: Some(package.id),
            },
            expires_at: chrono::Utc::now(),
        };
        // Kept so that the final upload's URL answers until it expires; the package is
        // published whether or not this record could be written.
        let final_session = match sessions
            .store
            .create_session(
                record.clone(),
                sessions.config.ttl,
                agentpkg_store::UploadQuota::UNLIMITED,
            )
            .await
        {
            Ok(Some(created)) => created,
            Ok(None) => record,
            Err(e) => {
                tracing::warn!(error = %e, "could not record a final upload");
                record
            }
        };
        Ok((final_session, package))
    }

    /// The partial uploads' bytes, in order, as a new staged object: joined inside the
    /// store when it can, else streamed through.
    async fn join(
        &self,
        partials: &[UploadSession],
        meta: &UploadMeta,
        length: u64,
    ) -> Result<StagedUpload, Error> {
        if joins_in_store(self.storage.as_ref(), partials) {
            self.join_in_store(partials, meta, length).await
        } else {
            let reader = read_in_order(&self.storage, partials);
            self.stage_inner(reader, meta.signature.as_ref(), Some(length))
                .await
                .map_err(|e| match e {
                    // The body is the partial uploads' objects: reading them failed in the
                    // store, not in a client.
                    Error::Body(e) => unreadable(e),
                    other => other,
                })
        }
    }

    /// Each partial's object copied as a part of a new write in parts, while the same
    /// bytes are read once, in order, for the package's SHA-256 (and a signature's
    /// digests): no byte is written through the server.
    async fn join_in_store(
        &self,
        partials: &[UploadSession],
        meta: &UploadMeta,
        length: u64,
    ) -> Result<StagedUpload, Error> {
        let extra = signing::stream_hasher(meta.signature.as_ref())?;
        let place = self.upload_place()?;
        let key = ObjectKey::for_new_package(*uuid::Uuid::new_v4().as_bytes());
        let guard = self.guard_new_object(key.clone()).await?;
        let upload = match self.storage.begin_parts(&key).await {
            Ok(upload) => upload,
            Err(e) => {
                guard.discard().await;
                return Err(e.into());
            }
        };
        let storage = &self.storage;
        // Numbered from 1; `joins_in_store` allowed no more than S3's 10 000.
        let copies = futures_util::stream::iter((1u32..).zip(partials))
            .map(|(number, partial)| {
                let key = &key;
                let upload = &upload;
                async move {
                    let etag = storage
                        .copy_part(key, upload, number, &partial.storage_key)
                        .await
                        .map_err(|e| match e {
                            // The database says it is there: the store lost it.
                            StorageError::NotFound => StorageError::Unavailable(format!(
                                "partial upload object {} is missing",
                                partial.storage_key
                            )),
                            other => other,
                        })?;
                    Ok::<_, StorageError>(StoredPart {
                        number,
                        etag,
                        size: partial.length,
                    })
                }
            })
            .buffered(PARALLEL_COPIES)
            .try_collect::<Vec<_>>();
        let hashing = async {
            let reader = read_in_order(storage, partials);
            let mut hashing = HashingReader::new(reader, length).with_extra(extra);
            let mut buffered = tokio::io::BufReader::with_capacity(HASH_BUFFER, &mut hashing);
            tokio::io::copy_buf(&mut buffered, &mut tokio::io::sink()).await?;
            Ok::<_, io::Error>(hashing.finish())
        };
        let (copied, hashed) = futures_util::future::join(copies, hashing).await;
        let completed = match (copied, hashed) {
            (Ok(parts), Ok(hashed)) if hashed.0 == length => storage
                .complete_parts(&key, &upload, &parts)
                .await
                .map(|()| hashed)
                .map_err(Error::from),
            (Ok(_), Ok(hashed)) => Err(Error::Internal(format!(
                "the partial uploads hold {} bytes, not the {length} recorded",
                hashed.0
            ))),
            (Err(e), _) => Err(e.into()),
            (_, Err(e)) => Err(unreadable(e)),
        };
        match completed {
            Ok(hashed) => Ok(StagedUpload::hashed(guard, hashed, place)),
            Err(e) => {
                if let Err(abort) = storage.abort_parts(&key, &upload).await {
                    tracing::warn!(object_key = %key, error = %abort, "could not abort a join of partial uploads; reconciliation removes it");
                }
                guard.discard().await;
                Err(e)
            }
        }
    }
}

/// Reading the partial uploads' objects failed: the store's outage (a 503).
fn unreadable(e: io::Error) -> Error {
    StorageError::Unavailable(format!("reading the partial uploads: {e}")).into()
}

/// Parts copied at once while joining in the store.
const PARALLEL_COPIES: usize = 4;

/// Bytes hashed per read while joining in the store.
const HASH_BUFFER: usize = 256 * 1024;

/// Whether `partials` can be joined inside `storage`: it copies parts, and each partial may
/// be a part (all but the last at least [`MIN_PART_BYTES`], none over [`MAX_PART_BYTES`]).
fn joins_in_store(storage: &dyn ObjectStore, partials: &[UploadSession]) -> bool {
    let (last, rest) = match partials.split_last() {
        Some(split) => split,
        None => return false,
    };
    storage.copies_parts()
        && partials.len() <= MAX_PARTS as usize
        && last.length <= MAX_PART_BYTES
        && rest
            .iter()
            .all(|p| (MIN_PART_BYTES..=MAX_PART_BYTES).contains(&p.length))
}

/// The partial uploads' objects, one after the other, as one reader.
fn read_in_order(
    storage: &DynObjectStore,
    partials: &[UploadSession],
) -> impl AsyncRead + Send + Unpin + 'static {
    let storage = storage.clone();
    let keys: Vec<_> = partials.iter().map(|p| p.storage_key.clone()).collect();
    let streams = futures_util::stream::iter(keys).then(
        move |key| -> futures_util::future::BoxFuture<'static, agentpkg_storage::ByteStream> {
            let storage = storage.clone();
            Box::pin(async move {
                match storage.get(&key).await {
                    Ok(stream) => stream,
                    Err(e) => Box::pin(futures_util::stream::once(async move {
                        Err(io::Error::other(format!(
                            "partial upload object {key}: {e}"
                        )))
                    })) as agentpkg_storage::ByteStream,
                }
            })
        },
    );
    tokio_util::io::StreamReader::new(streams.flatten())
}
