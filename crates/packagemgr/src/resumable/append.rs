//! Adding one request's bytes to a session: the lease taken at its offset, the pieces
//! written and committed, and, with the last byte, the package published.

use agentpkg_model::{
    Actor, Checksum, Entity, SessionKind, SessionProgress, SessionTarget, UploadSession,
    UploadSessionId, ValidationError,
};
use agentpkg_storage::MIN_PART_BYTES;
use agentpkg_store::{Durability, SessionLease};
use sha2_resumable::Digest as _;
use sha2_resumable::digest::common::hazmat::SerializableState;
use tokio::io::AsyncRead;

use super::lease::{LeaseRenewal, release_logged};
use super::pieces::{Kept, PieceWriter, SessionReader, Written, restore};
use super::{Append, Appended, RequestChecksum, Resumable, meta_of, visible_to};
use crate::{Error, PackageManager};

impl PackageManager {
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
            // Leased by its creator, but through a credential whose names do not reach the
            // package: as if it were someone else's.
            SessionLease::Leased(session) if !visible_to(&session, actor) => {
                release_logged(&sessions.store, id, &token).await;
                return Err(Error::NotFound(Entity::Upload));
            }
            SessionLease::Leased(session) => *session,
            SessionLease::Offset(actual) => {
                let session = self.session(id, actor).await?;
                if session.kind == SessionKind::Final {
                    return Err(Error::Forbidden(
                        "a final upload is complete when created; it takes no bytes".into(),
                    ));
                }
                if actual == append.offset {
                    // At the right offset, but nothing more is taken: the last byte came and
                    // published the package.
                    return Err(Error::Conflict(format!(
                        "this upload is complete ({actual} bytes) and its package published: there is nothing more to send"
                    )));
                }
                return Err(Error::OffsetMismatch {
                    sent: append.offset,
                    actual,
                });
            }
            SessionLease::Busy => return Err(Error::UploadLocked),
            SessionLease::Gone => return Err(Error::NotFound(Entity::Upload)),
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
                    .commit_session(
                        &session.id,
                        token,
                        kept,
                        sessions.config.ttl,
                        Durability::Applied,
                    )
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
        // Waits for the database's flush only when the old tail is deleted after it: a commit
        // a database crash undid would otherwise list a tail that is gone.
        let durability = if old_tail_consumed {
            Durability::Durable
        } else {
            Durability::Applied
        };
        let committed = sessions
            .store
            .commit_session(
                &session.id,
                token,
                progress.clone(),
                sessions.config.ttl,
                durability,
            )
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
            return completed(sessions, session, token, progress, None).await;
        };
        let staged = self.adopt(key.clone(), session.length, checksum).await?;
        // Whoever completes it publishes it: its creator, or an admin.
        let publisher = actor.cloned().or(session.user_id.map(|user_id| Actor {
            user_id,
            admin: false,
            names: agentpkg_model::NameScope::All,
        }));
        let meta = meta_of(target, publisher.as_ref(), None);
        match self.publish(staged, meta).await {
            Ok(package) => {
                progress.package_id = Some(package.id);
                completed(sessions, session, token, progress, Some(package)).await
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
}

/// Commits the progress that completes `session` (durably: it is the last), and the
/// session as it now stands with the package it became.
async fn completed(
    sessions: &Resumable,
    session: &UploadSession,
    token: &str,
    progress: SessionProgress,
    package: Option<agentpkg_model::Package>,
) -> Result<Appended, Error> {
    let expires_at = sessions
        .store
        .commit_session(
            &session.id,
            token,
            progress.clone(),
            sessions.config.ttl,
            Durability::Durable,
        )
        .await?
        .ok_or(Error::UploadLocked)?;
    Ok(Appended {
        session: UploadSession {
            progress,
            expires_at,
            ..session.clone()
        },
        package,
    })
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
