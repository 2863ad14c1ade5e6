//! The upload session store: resumable uploads written under a lease, and how a commit waits.

use std::sync::Arc;
use std::time::Duration;

use agentpkg_model::{SessionProgress, UploadSession, UploadSessionId};
use async_trait::async_trait;

use crate::{Health, StoreError, UploadQuota};

/// What taking a session for a write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionLease {
    /// Held by the caller until it commits, releases it, or the lease runs out.
    Leased(Box<UploadSession>),
    /// The session is at another offset (or complete): the write starts from the wrong
    /// place.
    Offset(u64),
    /// Another write holds it.
    Busy,
    /// No such session, or it expired.
    Gone,
}

/// Whether a session's commit waits until a database crash cannot undo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Answered once durable (PostgreSQL's WAL flushed): for a commit after which
    /// something it replaced is deleted, or that completes the upload.
    Durable,
    /// Answered once applied (PostgreSQL's asynchronous commit): a database crash within
    /// a fraction of a second may undo it, whole, never torn. For progress whose loss
    /// leaves what a writer killed before its commit leaves: parts or a tail the session
    /// does not list, which the next write replaces or reconciliation removes, and a client
    /// that sends those bytes again.
    Applied,
}

/// Resumable upload sessions: created, written to under a lease, completed, expired.
#[async_trait]
pub trait UploadSessionStore: Health {
    /// Records a session expiring `ttl` from now (by the database's clock), unless its user
    /// has `quota.max_uploads` sessions still open (then `None`), or its bytes would pass
    /// `quota.max_bytes` ([`StoreError::OverQuota`]).
    async fn create_session(
        &self,
        session: UploadSession,
        ttl: Duration,
        quota: UploadQuota,
    ) -> Result<Option<UploadSession>, StoreError>;
    /// The session, while it has not expired.
    async fn upload_session(
        &self,
        id: &UploadSessionId,
    ) -> Result<Option<UploadSession>, StoreError>;
    /// Takes the session for a write that starts at `offset`, for `lease` unless renewed;
    /// only a session of `owner`, when given (anyone else's is [`SessionLease::Gone`]).
    async fn lease_session(
        &self,
        id: &UploadSessionId,
        offset: u64,
        token: &str,
        lease: Duration,
        owner: Option<i64>,
    ) -> Result<SessionLease, StoreError>;
    /// Extends a lease; `false` when it was lost.
    async fn renew_session_lease(
        &self,
        id: &UploadSessionId,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError>;
    /// Commits a write's progress and releases its lease, moving the expiry to `ttl` from
    /// now; the new expiry, or `None` when the lease was lost.
    async fn commit_session(
        &self,
        id: &UploadSessionId,
        token: &str,
        progress: SessionProgress,
        ttl: Duration,
        durability: Durability,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError>;
    async fn release_session(&self, id: &UploadSessionId, token: &str) -> Result<(), StoreError>;
    async fn delete_session(&self, id: &UploadSessionId) -> Result<bool, StoreError>;
    /// Sessions past their expiry that no write holds.
    async fn expired_sessions(&self) -> Result<Vec<UploadSession>, StoreError>;
    /// Removes an expired session's row, unless a write took it since: `false` then.
    async fn delete_expired_session(&self, id: &UploadSessionId) -> Result<bool, StoreError>;
}

pub type DynUploadSessionStore = Arc<dyn UploadSessionStore>;
