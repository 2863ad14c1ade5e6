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
    Actor, Checksum, Package, SessionKind, SessionProgress, SessionTarget, UploadSession,
    UploadSessionId, ValidationError,
};
use agentpkg_storage::MIN_PART_BYTES;
use agentpkg_store::{DynUploadSessionStore, SessionLease};
use sha2_resumable::Digest as _;
use sha2_resumable::digest::common::hazmat::SerializableState;
use tokio::io::AsyncRead;

use crate::upload::UploadMeta;
use crate::{Error, PackageManager};

mod concat;
mod pieces;

pub use pieces::RequestChecksum;
use pieces::{Kept, PieceWriter, SessionHasher, SessionReader, Written, restore};

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
    /// the size limit or past the creator's number of open sessions.
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
                sessions.config.max_sessions_per_user,
            )
            .await?
            .ok_or(Error::TooManySessions {
                limit: sessions.config.max_sessions_per_user,
            })?;
        tracing::info!(upload_session = %created.id, kind = created.kind.as_str(), length = created.length, "resumable upload opened");
        Ok(created)
    }

    /// A session its creator (or an admin, or a trusted caller with `actor` `None`) may
    /// see; anyone else's is [`Error::UploadNotFound`], as is an expired one.
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
            .ok_or(Error::UploadNotFound)
    }

    /// Adds one request's bytes to a session, and publishes the package when they
    /// complete it (a partial upload is kept for its final upload instead).
    pub async fn append<R>(
        &self,
        id: &UploadSessionId,
        actor: Option<&Actor>,
        append: Append,
        body: R,
    ) -> Result<Appended, Error>
    where
        R: AsyncRead + Send + Unpin,
    {
        let sessions = self.sessions()?.clone();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let lease = sessions.config.lease;
        // Taken at once (only the creator's, unless an admin): one request to the database.
        let owner = actor.filter(|a| !a.admin).map(|a| a.user_id);
        let session = match sessions
            .store
            .lease_session(id, append.offset, &token, lease, owner)
            .await?
        {
            SessionLease::Leased(session) => *session,
            SessionLease::Offset(actual) => {
                let session = self.session(id, actor).await?;
                if session.kind == SessionKind::Final {
                    return Err(Error::Forbidden(
                        "a final upload is complete when created; it takes no bytes".into(),
                    ));
                }
                return Err(Error::OffsetMismatch { actual });
            }
            SessionLease::Busy => return Err(Error::UploadLocked),
            SessionLease::Gone => return Err(Error::UploadNotFound),
        };
        let remaining = session.length - session.progress.offset;
        if append.content_length.is_some_and(|n| n > remaining) {
            release_logged(&sessions.store, id, &token).await;
            return Err(Error::PastLength {
                length: session.length,
            });
        }
        if let Some(refusal) = append
            .package_sha256
            .as_ref()
            .and_then(|named| misplaced_package_sha256(&session, &append, named))
        {
            release_logged(&sessions.store, id, &token).await;
            return Err(refusal);
        }
        let renewing =
            LeaseRenewal::start(sessions.store.clone(), id.clone(), token.clone(), lease);
        let result = self
            .write_and_commit(&sessions, &session, &token, append, actor, body)
            .await;
        drop(renewing);
        if result.is_err() {
            // Nothing committed: the next request may start at once.
            release_logged(&sessions.store, id, &token).await;
        }
        result
    }

    async fn write_and_commit<R>(
        &self,
        sessions: &Resumable,
        session: &UploadSession,
        token: &str,
        append: Append,
        actor: Option<&Actor>,
        body: R,
    ) -> Result<Appended, Error>
    where
        R: AsyncRead + Send + Unpin,
    {
        let hasher = restore(&session.progress.hash_state)?;
        let remaining = session.length - session.progress.offset;
        let mut reader = SessionReader {
            inner: body,
            hasher,
            request: append.checksum.as_ref().map(RequestChecksum::hasher),
            count: 0,
            limit: remaining,
            past_length: false,
        };
        let mut writer = PieceWriter {
            storage: &self.storage,
            session,
            progress: session.progress.clone(),
            part_bytes: sessions.config.part_bytes.max(MIN_PART_BYTES),
            kept: Kept {
                hasher: reader.hasher.clone(),
                body_bytes: 0,
            },
            new_tail: None,
            old_tail_consumed: false,
            planned_parts: session.progress.parts.len(),
        };
        let outcome = writer.write(&mut reader, append.content_length).await;
        let request = reader.request.take();
        let past_length = reader.past_length;
        let PieceWriter {
            progress,
            kept,
            new_tail,
            old_tail_consumed,
            ..
        } = writer;
        // A request with a checksum is kept whole or not at all.
        let refusal = if past_length {
            Some(Error::PastLength {
                length: session.length,
            })
        } else if let Some(expected) = &append.checksum {
            let matches = request.is_some_and(|hasher| hasher.matches(expected));
            match &outcome {
                Ok(()) if matches => None,
                Ok(()) => Some(Error::RequestChecksumMismatch),
                Err(_) => None,
            }
        } else {
            None
        };
        let keep_nothing = refusal.is_some() || (append.checksum.is_some() && outcome.is_err());
        if keep_nothing {
            if let Some(tail) = new_tail {
                crate::guard::delete_logged(&self.storage, &tail).await;
            }
            if progress.multipart != session.progress.multipart {
                // The multipart write stays the session's, for the next request.
                let kept = SessionProgress {
                    multipart: progress.multipart.clone(),
                    ..session.progress.clone()
                };
                if let Err(e) = sessions
                    .store
                    .commit_session(&session.id, token, kept, sessions.config.ttl)
                    .await
                {
                    tracing::warn!(upload_session = %session.id, error = %e, "could not record a session's multipart write");
                }
            }
            return Err(match (refusal, outcome) {
                (Some(refusal), _) => refusal,
                (None, Err(e)) => e,
                (None, Ok(())) => Error::RequestChecksumMismatch,
            });
        }
        let mut progress = progress;
        progress.hash_state = kept.hasher.serialize().to_vec();
        if progress.offset == session.length {
            let named = append.package_sha256;
            let session = &UploadSession {
                target: session.target.clone().map(|target| SessionTarget {
                    expected_sha256: target.expected_sha256.or(named),
                    ..target
                }),
                ..session.clone()
            };
            return self
                .finish(
                    sessions,
                    session,
                    token,
                    Written {
                        progress,
                        hasher: kept.hasher,
                        old_tail_consumed,
                    },
                    actor,
                )
                .await;
        }
        let committed = sessions
            .store
            .commit_session(&session.id, token, progress.clone(), sessions.config.ttl)
            .await;
        let committed = match committed {
            Ok(Some(expires_at)) => UploadSession {
                progress,
                expires_at,
                ..session.clone()
            },
            other => {
                if let Some(tail) = new_tail {
                    crate::guard::delete_logged(&self.storage, &tail).await;
                }
                return Err(match other {
                    Err(e) => e.into(),
                    _ => Error::UploadLocked,
                });
            }
        };
        if old_tail_consumed && let Some(old) = &session.progress.tail {
            crate::guard::delete_logged(&self.storage, &old.key).await;
        }
        match outcome {
            // A body cut short keeps what was stored; the client asks where to go on.
            Err(Error::Body(e)) => {
                tracing::info!(upload_session = %session.id, offset = committed.progress.offset, error = %e, "resumable upload interrupted; what arrived is kept");
                Err(Error::Body(e))
            }
            Err(e) => Err(e),
            Ok(()) => Ok(Appended {
                session: committed,
                package: None,
            }),
        }
    }

    /// The last byte has arrived: joins the parts, then publishes the package (a whole
    /// upload) or keeps the object for its final upload (a partial one).
    async fn finish(
        &self,
        sessions: &Resumable,
        session: &UploadSession,
        token: &str,
        written: Written,
        actor: Option<&Actor>,
    ) -> Result<Appended, Error> {
        let Written {
            mut progress,
            hasher,
            old_tail_consumed,
        } = written;
        let key = &session.storage_key;
        if let Some(upload) = &progress.multipart {
            self.storage
                .complete_parts(key, upload, &progress.parts)
                .await?;
        }
        if old_tail_consumed && let Some(old) = &session.progress.tail {
            crate::guard::delete_logged(&self.storage, &old.key).await;
        }
        let checksum = agentpkg_model::Checksum::from_digest(&hasher.finalize().into());
        progress.multipart = None;
        progress.parts.clear();
        progress.tail = None;
        let Some(target) = &session.target else {
            // A partial upload: its object waits for the final upload.
            let expires_at = sessions
                .store
                .commit_session(&session.id, token, progress.clone(), sessions.config.ttl)
                .await?
                .ok_or(Error::UploadLocked)?;
            return Ok(Appended {
                session: UploadSession {
                    progress,
                    expires_at,
                    ..session.clone()
                },
                package: None,
            });
        };
        let staged = self.adopt(key.clone(), session.length, checksum).await?;
        // Whoever completes it publishes it: its creator, or an admin.
        let publisher = actor.copied().or(session.user_id.map(|user_id| Actor {
            user_id,
            admin: false,
        }));
        let meta = meta_of(target, publisher.as_ref(), None);
        match self.publish(staged, meta).await {
            Ok(package) => {
                progress.package_id = Some(package.id);
                let expires_at = sessions
                    .store
                    .commit_session(&session.id, token, progress.clone(), sessions.config.ttl)
                    .await?
                    .ok_or(Error::UploadLocked)?;
                Ok(Appended {
                    session: UploadSession {
                        progress,
                        expires_at,
                        ..session.clone()
                    },
                    package: Some(package),
                })
            }
            Err(e) => {
                // Refused or failed: publish deleted the bytes; the session goes too (if
                // its row cannot be deleted now, it expires; the refusal is the answer).
                if let Err(gone) = sessions.store.delete_session(&session.id).await {
                    tracing::warn!(upload_session = %session.id, error = %gone, "could not delete a refused session");
                }
                Err(e)
            }
        }
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
            return Err(Error::UploadNotFound);
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

fn visible_to(session: &UploadSession, actor: Option<&Actor>) -> bool {
    actor.is_none_or(|a| a.admin || session.user_id == Some(a.user_id))
}

/// Why a request may not name the whole package's SHA-256 (`named`): it does not publish
/// a package, it is not the one that completes the upload, or the session was created
/// with another.
fn misplaced_package_sha256(
    session: &UploadSession,
    append: &Append,
    named: &Checksum,
) -> Option<Error> {
    let remaining = session.length - session.progress.offset;
    match &session.target {
        None => Some(
            ValidationError::new(
                "X-Checksum-Sha256",
                "names a package's SHA-256: send it with the final upload instead",
            )
            .into(),
        ),
        Some(_) if append.content_length != Some(remaining) => Some(
            ValidationError::new(
                "X-Checksum-Sha256",
                "belongs on the request that completes the upload, with its Content-Length",
            )
            .into(),
        ),
        Some(target) => match &target.expected_sha256 {
            Some(declared) if declared != named => Some(
                ValidationError::new(
                    "X-Checksum-Sha256",
                    "differs from the sha256 the upload was created with",
                )
                .into(),
            ),
            _ => None,
        },
    }
}

fn meta_of(target: &SessionTarget, creator: Option<&Actor>, size: Option<u64>) -> UploadMeta {
    UploadMeta {
        coordinates: target.coordinates.clone(),
        filename: target.filename.clone(),
        description: target.description.clone(),
        expected_sha256: target.expected_sha256.clone(),
        publisher: creator.copied(),
        signature: target.signature.clone(),
        size,
    }
}

/// Gives a lease back; a failure is logged (the lease then runs out by itself).
async fn release_logged(store: &DynUploadSessionStore, id: &UploadSessionId, token: &str) {
    if let Err(e) = store.release_session(id, token).await {
        tracing::warn!(upload_session = %id, error = %e, "could not release a session's lease");
    }
}

/// Renews a session's lease while a request works on it.
struct LeaseRenewal(tokio::task::JoinHandle<()>);

impl LeaseRenewal {
    fn start(
        store: DynUploadSessionStore,
        id: UploadSessionId,
        token: String,
        lease: Duration,
    ) -> Self {
        let every = (lease / 3).max(Duration::from_millis(100));
        Self(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match store.renew_session_lease(&id, &token, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(upload_session = %id, "a session's lease was lost");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(upload_session = %id, error = %e, "could not renew a session's lease")
                    }
                }
            }
        }))
    }
}

impl Drop for LeaseRenewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}
