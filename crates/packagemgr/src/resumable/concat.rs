//! Partial uploads joined by a final upload: read once, in order, hashed and stored as the
//! package.

use std::io;

use agentpkg_model::{
    Actor, Entity, Package, SessionKind, SessionProgress, SessionTarget, UploadSession,
    UploadSessionId, ValidationError,
};
use agentpkg_store::SessionLease;
use futures_util::StreamExt;

use super::lease::{LeaseRenewal, release_logged};
use super::meta_of;
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

    /// Streams the partial uploads' objects, in order, into a new staged object.
    async fn join(
        &self,
        partials: &[UploadSession],
        meta: &UploadMeta,
        length: u64,
    ) -> Result<StagedUpload, Error> {
        let storage = self.storage.clone();
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
        let reader = tokio_util::io::StreamReader::new(streams.flatten());
        self.stage_inner(reader, meta.signature.as_ref(), Some(length))
            .await
    }
}
