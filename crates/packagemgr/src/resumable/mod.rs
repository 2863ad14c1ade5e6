//! Resumable uploads: a package's bytes sent over many requests, each continuing where the
//! last stopped, on any replica and across restarts (the API speaks tus 1.0 over this).
//!
//! A session's state is in the database and its bytes in object storage, never only in
//! memory: the offset, the parts of a multipart write (each at least 5 MiB, but the last),
//! a *tail* of fewer bytes than a part takes (a small object, sent again at the front of
//! the next part), and the SHA-256 state of everything received. A request that adds bytes
//! takes a lease on the session at its offset, streams its body into parts of at most
//! [`ResumableConfig::part_bytes`] (with a known length, straight through, the next part
//! starting while storage answers for the last; without one, one part buffered at a
//! time), and commits what it stored in one update. A client that
//! disconnects keeps every part that was stored; a request whose checksum does not match
//! keeps nothing. When the last byte arrives the parts are joined and the package is
//! published with every guarantee of an upload in one request; a refusal deletes the
//! object and the session.
//!
//! Partial uploads (sent side by side) are joined by a final upload: their objects are
//! read once, in order, hashed and stored as the package.

use std::time::Duration;

use agentpkg_model::{
    Actor, Checksum, Entity, Package, SessionKind, SessionProgress, SessionTarget, UploadSession,
    UploadSessionId, ValidationError,
};
use agentpkg_store::DynUploadSessionStore;
use sha2_resumable::Digest as _;
use sha2_resumable::digest::common::hazmat::SerializableState;

use crate::upload::UploadMeta;
use crate::{Error, PackageManager};

mod append;
mod concat;
mod lease;
mod pieces;

pub use pieces::RequestChecksum;
use pieces::SessionHasher;

/// Settings of resumable uploads.
#[derive(Debug, Clone)]
pub struct ResumableConfig {
    /// A session not written to for this long expires, and reconciliation removes it.
    pub ttl: Duration,
    /// Sessions one user may have open (neither complete nor expired).
    pub max_sessions_per_user: u64,
    /// The largest part a request writes at once: what a dropped connection can lose, and
    /// what a body without a length holds in memory.
    pub part_bytes: u64,
    /// How long a request holds a session before it must renew its lease (it does, while
    /// it works); a writer that died frees it after this.
    pub lease: Duration,
}

impl Default for ResumableConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            max_sessions_per_user: 100,
            part_bytes: 16 * 1024 * 1024,
            lease: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Resumable {
    pub(crate) store: DynUploadSessionStore,
    config: ResumableConfig,
}

impl Resumable {
    pub(crate) fn new(store: DynUploadSessionStore, config: ResumableConfig) -> Self {
        Self { store, config }
    }
}

/// What a new session is for.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// [`SessionKind::Whole`] or [`SessionKind::Partial`]; a final upload is made by
    /// [`PackageManager::concatenate`].
    pub kind: SessionKind,
    /// Required for a whole upload; a partial one has none.
    pub target: Option<SessionTarget>,
    /// The client's metadata as sent, returned on request.
    pub metadata: String,
    pub length: u64,
}

/// One request's bytes for a session.
#[derive(Debug, Clone)]
pub struct Append {
    /// Where the client says they start.
    pub offset: u64,
    /// The body's length, when announced: it then streams straight into parts.
    pub content_length: Option<u64>,
    pub checksum: Option<RequestChecksum>,
    /// The whole package's SHA-256, sent with the request that completes the upload
    /// (`X-Checksum-Sha256`), by a client that hashed the file while sending it. The
    /// package is published only if its bytes have it; a session created with a `sha256`
    /// must name the same one.
    pub package_sha256: Option<Checksum>,
}

/// A session after a request added to it, and the package it became when that request
/// completed it.
#[derive(Debug, Clone)]
pub struct Appended {
    pub session: UploadSession,
    pub package: Option<Package>,
}

impl PackageManager {
    /// The same manager with resumable uploads, recorded in `store`.
    pub fn with_resumable_uploads(
        mut self,
        store: DynUploadSessionStore,
        config: ResumableConfig,
    ) -> Self {
        self.resumable = Some(Resumable::new(store, config));
        self
    }

    /// The settings of resumable uploads, when they are on.
    pub fn resumable_config(&self) -> Option<&ResumableConfig> {
        self.resumable.as_ref().map(|r| &r.config)
    }

    fn sessions(&self) -> Result<&Resumable, Error> {
        self.resumable.as_ref().ok_or(Error::ResumableUnsupported)
    }

    /// Opens a session. A whole upload is checked as an upload is before its body
    /// (publisher's rights, coordinates free, signature); every session is refused over
    /// the size limit, past the creator's number of open sessions, or past the bytes
    /// their unfinished uploads may hold.
    pub async fn create_session(
        &self,
        new: NewSession,
        creator: Option<&Actor>,
    ) -> Result<UploadSession, Error> {
        let sessions = self.sessions()?;
        if new.length == 0 {
            return Err(ValidationError::new("Upload-Length", "must be at least 1 byte").into());
        }
        if new.length > self.config.max_upload_bytes {
            return Err(Error::TooLarge {
                limit: self.config.max_upload_bytes,
            });
        }
        match (new.kind, &new.target) {
            (SessionKind::Whole, Some(target)) => {
                self.check_before_bytes(&meta_of(target, creator, None))
                    .await?;
            }
            (SessionKind::Whole, None) => {
                return Err(ValidationError::new(
                    "Upload-Metadata",
                    "must name the package: name, version, platform and arch",
                )
                .into());
            }
            (SessionKind::Partial, _) => {}
            (SessionKind::Final, _) => {
                return Err(Error::Internal(
                    "a final upload is made by concatenate".into(),
                ));
            }
        }
        let session = UploadSession {
            id: UploadSessionId::new(*uuid::Uuid::new_v4().as_bytes()),
            user_id: creator.map(|a| a.user_id),
            kind: new.kind,
            target: if new.kind == SessionKind::Partial {
                None
            } else {
                new.target
            },
            metadata: new.metadata,
            parts_of: Vec::new(),
            length: new.length,
            storage_key: agentpkg_model::ObjectKey::for_new_package(
                *uuid::Uuid::new_v4().as_bytes(),
            ),
            progress: SessionProgress {
                offset: 0,
                multipart: None,
                parts: Vec::new(),
                tail: None,
                hash_state: SessionHasher::new().serialize().to_vec(),
                package_id: None,
            },
            expires_at: chrono::Utc::now(),
        };
        let created = sessions
            .store
            .create_session(
                session,
                sessions.config.ttl,
                agentpkg_store::UploadQuota {
                    max_uploads: sessions.config.max_sessions_per_user,
                    max_bytes: self.config.max_bytes_in_flight_per_user,
                },
            )
            .await?
            .ok_or(Error::TooManySessions {
                limit: sessions.config.max_sessions_per_user,
            })?;
        tracing::info!(upload_session = %created.id, kind = created.kind.as_str(), length = created.length, "resumable upload opened");
        Ok(created)
    }

    /// A session its creator (or an admin, or a trusted caller with `actor` `None`) may
    /// see; anyone else's is [`Error::NotFound(Entity::Upload)`], as is an expired one.
    pub async fn session(
        &self,
        id: &UploadSessionId,
        actor: Option<&Actor>,
    ) -> Result<UploadSession, Error> {
        self.sessions()?
            .store
            .upload_session(id)
            .await?
            .filter(|s| visible_to(s, actor))
            .ok_or(Error::NotFound(Entity::Upload))
    }

    /// Ends a session and removes everything it stored.
    pub async fn terminate(
        &self,
        id: &UploadSessionId,
        actor: Option<&Actor>,
    ) -> Result<(), Error> {
        let sessions = self.sessions()?;
        let session = self.session(id, actor).await?;
        if !sessions.store.delete_session(id).await? {
            return Err(Error::NotFound(Entity::Upload));
        }
        self.remove_session_objects(&session).await;
        tracing::info!(upload_session = %id, "resumable upload terminated");
        Ok(())
    }

    /// Removes a session's multipart write, tail and (unless a package owns it) object.
    /// A failure is logged; reconciliation removes what stays.
    pub(crate) async fn remove_session_objects(&self, session: &UploadSession) {
        if let Some(upload) = &session.progress.multipart
            && let Err(e) = self.storage.abort_parts(&session.storage_key, upload).await
        {
            tracing::error!(object_key = %session.storage_key, error = %e, "could not abort a session's multipart write");
        }
        for key in session.objects() {
            crate::guard::delete_logged(&self.storage, &key).await;
        }
    }
}

/// Whether `actor` may see (and continue) `session`: its creator or an admin, and only
/// while the credential may touch the package it publishes (a token limited to other
/// names does not see its owner's upload).
pub(super) fn visible_to(session: &UploadSession, actor: Option<&Actor>) -> bool {
    actor.is_none_or(|a| {
        (a.admin || session.user_id == Some(a.user_id))
            && session
                .target
                .as_ref()
                .is_none_or(|t| a.names.allows(&t.coordinates.name))
    })
}

pub(super) fn meta_of(
    target: &SessionTarget,
    creator: Option<&Actor>,
    size: Option<u64>,
) -> UploadMeta {
    UploadMeta {
        coordinates: target.coordinates.clone(),
        filename: target.filename.clone(),
        description: target.description.clone(),
        expected_sha256: target.expected_sha256.clone(),
        publisher: creator.cloned(),
        signature: target.signature.clone(),
        size,
        // Republishing is the form's and the raw PUT's (an admin's explicit choice).
        republish: false,
    }
}
