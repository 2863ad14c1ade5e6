//! Direct uploads: the client sends the bytes straight to object storage with a presigned
//! `PUT` that the store accepts only with the announced size and SHA-256, then asks the
//! registry to publish them — with every guarantee of an upload through the API.
//!
//! 1. [`PackageManager::begin_direct`] checks what a proxied upload checks before its body
//!    (role and ownership, coordinates free, the signature and its key), picks a fresh
//!    object key and records the grant: until it expires the object is in flight, so
//!    reconciliation never takes it.
//! 2. The client `PUT`s the file to the URL with the headers given. The store refuses a
//!    body of another length or digest, and a request without the signed checksum header.
//! 3. [`PackageManager::complete_direct`] asks the store what it holds (size, and the
//!    SHA-256 it verified where it reports one), claims the grant (exactly one caller
//!    does), and publishes the object as a staged upload: a conflict or a bad signature
//!    deletes it, as for any upload.

use std::time::Duration;

use agentpkg_model::{
    Actor, DirectUpload, DirectUploadId, Entity, ObjectKey, Package, ValidationError,
};
use agentpkg_storage::PresignedPut;
use chrono::Utc;

use crate::guard::{Keepalive, ObjectGuard};
use crate::upload::{StagedUpload, UploadMeta};
use crate::{Error, PackageManager};

/// The largest object S3 stores with a single `PUT`.
pub const MAX_DIRECT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// A direct upload granted: where and how to send the bytes, and until when.
#[derive(Debug, Clone)]
pub struct DirectGrant {
    pub upload: DirectUpload,
    pub put: PresignedPut,
}

impl PackageManager {
    /// Grants a direct upload of `size` bytes for `meta` (whose `expected_sha256` is
    /// required: the store checks it). Refused before any byte moves: an unknown or taken
    /// name, coordinates already published, a missing or untrusted signature, a size over
    /// the limit — and a backend that cannot take a presigned `PUT` (`fs`).
    pub async fn begin_direct(&self, meta: UploadMeta, size: u64) -> Result<DirectGrant, Error> {
        let direct = self.direct.as_ref().ok_or(Error::DirectUnsupported)?;
        let checksum = meta
            .expected_sha256
            .clone()
            .ok_or_else(|| ValidationError::new("sha256", "is required for a direct upload"))?;
        if size == 0 {
            return Err(ValidationError::new("size", "must be at least 1 byte").into());
        }
        let limit = self.config().max_upload_bytes.min(MAX_DIRECT_BYTES);
        if size > limit {
            return Err(Error::TooLarge { limit });
        }
        self.check_before_bytes(&meta).await?;
        let key = ObjectKey::for_new_package(*uuid::Uuid::new_v4().as_bytes());
        let put = self
            .storage
            .presigned_put(&key, direct.ttl, size, &checksum.digest())
            .await?
            .ok_or(Error::DirectUnsupported)?;
        let expires_at = Utc::now()
            + chrono::Duration::from_std(direct.ttl).unwrap_or(chrono::Duration::minutes(10));
        let upload = DirectUpload {
            id: DirectUploadId::new(*uuid::Uuid::new_v4().as_bytes()),
            user_id: meta.publisher.map(|p| p.user_id),
            coordinates: meta.coordinates,
            size,
            checksum,
            filename: meta.filename,
            description: meta.description,
            storage_key: key,
            signature: meta.signature,
            expires_at,
        };
        let limit = self.config.max_direct_grants_per_user;
        let quota = agentpkg_store::UploadQuota {
            max_uploads: limit,
            max_bytes: self.config.max_bytes_in_flight_per_user,
        };
        if !direct
            .store
            .create_direct_upload(upload.clone(), quota)
            .await?
        {
            return Err(Error::TooManyGrants { limit });
        }
        tracing::info!(
            direct_upload = %upload.id,
            name = %upload.coordinates.name,
            version = %upload.coordinates.version,
            size,
            expires_at = %upload.expires_at,
            "direct upload granted"
        );
        Ok(DirectGrant { upload, put })
    }

    /// Publishes the bytes of a direct upload. Only its grantee (or an admin, or a trusted
    /// caller with `actor` `None`) sees it, through a credential whose names reach the
    /// package; a completed or expired one is gone.
    pub async fn complete_direct(
        &self,
        id: &DirectUploadId,
        actor: Option<&Actor>,
    ) -> Result<Package, Error> {
        let direct = self.direct.as_ref().ok_or(Error::DirectUnsupported)?;
        let upload = direct
            .store
            .direct_upload(id)
            .await?
            .filter(|u| {
                actor.is_none_or(|a| {
                    (a.admin || u.user_id == Some(a.user_id)) && a.names.allows(&u.coordinates.name)
                })
            })
            .ok_or(Error::NotFound(Entity::Upload))?;
        // Nothing is claimed until the bytes are there: the client may send them and ask
        // again. What the store says now stays true: the grant keeps the object in flight
        // until the claim, and the claim's marker after it.
        let Some(stored) = self.storage.stat(&upload.storage_key).await? else {
            return Err(Error::UploadIncomplete(format!(
                "nothing has been stored for direct upload {id} yet: PUT the file to its URL \
                 with its headers first"
            )));
        };
        let upload = direct
            .store
            .claim_direct_upload(id)
            .await?
            .ok_or(Error::NotFound(Entity::Upload))?;
        // From here the object is marked in flight and this guard decides its fate.
        let keepalive = Keepalive::start(
            self.store.clone(),
            upload.storage_key.clone(),
            self.config().stale_upload_after / 4,
        );
        let guard = ObjectGuard::new(
            self.storage.clone(),
            self.store.clone(),
            self.metrics.clone(),
            upload.storage_key.clone(),
            keepalive,
        );
        if stored.size != upload.size {
            guard.discard().await;
            return Err(Error::SizeMismatch {
                expected: upload.size,
                actual: stored.size,
            });
        }
        // The presigned PUT only succeeds with the announced digest, and the store keeps
        // the digest it checked: an object without it, or with another, was not written
        // through the grant.
        match stored.sha256 {
            Some(digest) if digest == upload.checksum.digest() => {}
            other => {
                guard.discard().await;
                return Err(Error::ChecksumMismatch {
                    expected: upload.checksum.to_string(),
                    actual: other.map_or_else(
                        || "nothing (the store keeps no SHA-256 for the object)".to_owned(),
                        |d| agentpkg_model::Checksum::from_digest(&d).to_string(),
                    ),
                });
            }
        }
        let staged = StagedUpload::stored(guard, upload.size, upload.checksum.clone());
        let meta = UploadMeta {
            coordinates: upload.coordinates,
            filename: upload.filename,
            description: upload.description,
            expected_sha256: Some(upload.checksum),
            publisher: actor.cloned(),
            signature: upload.signature,
            size: None,
            // Republishing is the form's and the raw PUT's (an admin's explicit choice).
            republish: false,
        };
        self.publish(staged, meta).await
    }
}

/// Where direct uploads are recorded, and how long a grant lasts.
#[derive(Clone)]
pub(crate) struct DirectUploads {
    pub(crate) store: agentpkg_store::DynDirectUploadStore,
    pub(crate) ttl: Duration,
}
