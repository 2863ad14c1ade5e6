use std::io;

use agentpkg_model::{Entity, ValidationError};
use agentpkg_storage::StorageError;
use agentpkg_store::StoreError;

/// Everything the business logic can answer besides success. Each variant is one thing a
/// caller can act on; the API maps each to a status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No such thing, or one the caller may not see (told the same).
    #[error("{}", .0.not_found())]
    NotFound(Entity),
    /// A field of a request that takes each once came twice.
    #[error("{0} was sent more than once")]
    DuplicateField(&'static str),
    /// A required field of a request did not come.
    #[error("{0} is required")]
    MissingField(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// The bytes are already published under another version of the name.
    #[error(
        "these bytes are already published as version {version} of this name: a signature covers bytes, not a version, so publishing them again as another version needs an admin (republish=true)"
    )]
    SameBytes { version: String },
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(
        "SHA-256 mismatch: the client announced {expected} but the bytes received hash to {actual}"
    )]
    ChecksumMismatch { expected: String, actual: String },
    /// The upload body ended early or could not be read (client disconnect, broken
    /// framing).
    #[error("the upload body could not be read to its end: {0}")]
    Body(#[source] io::Error),
    /// The registry requires a (verifiable) signature and none came.
    #[error("{0}")]
    SignatureRequired(String),
    /// The signature does not verify: wrong bytes, an untrusted, expired or revoked key.
    #[error("{0}")]
    SignatureInvalid(String),
    /// The signature data cannot be read at all.
    #[error("{0}")]
    SignatureMalformed(String),
    /// A key that cannot be registered.
    #[error("{0}")]
    InvalidKey(String),
    /// Direct uploads need storage that makes presigned `PUT`s (S3).
    #[error("direct uploads need the s3 storage backend; use the proxied or resumable upload")]
    DirectUnsupported,
    /// The bytes of a direct upload are not (all) there yet.
    #[error("{0}")]
    UploadIncomplete(String),
    /// A rollout cannot do that in its state, or its assignment has one moving.
    #[error("{0}")]
    RolloutConflict(String),
    #[error("size mismatch: {expected} bytes were announced but storage holds {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    /// Resumable uploads are not set up.
    #[error("resumable uploads are not enabled")]
    ResumableUnsupported,
    #[error("too many open resumable uploads (at most {limit} per user): finish or delete some")]
    TooManySessions { limit: u64 },
    #[error(
        "too many direct uploads granted and not completed (at most {limit} per user): complete some or let them expire"
    )]
    TooManyGrants { limit: u64 },
    /// The user's unfinished uploads already announce `held` bytes: this one would pass
    /// `limit`.
    #[error(
        "your unfinished uploads already hold {held} of the {limit} bytes allowed per user: finish or delete some"
    )]
    OverQuota { held: u64, limit: u64 },
    #[error("the body goes past the upload's length of {length} bytes")]
    PastLength { length: u64 },
    /// A resumable write starts where the session is not (another request moved it on,
    /// or the client lost count).
    #[error(
        "this request starts at offset {sent}, but the upload is at offset {actual}: ask where it stands (HEAD) and send from there"
    )]
    OffsetMismatch { sent: u64, actual: u64 },
    /// Another request is writing to the session.
    #[error("another request is writing to this upload; try again shortly")]
    UploadLocked,
    /// The checksum of one request's body does not match what the client announced.
    #[error("the request's checksum does not match its body; nothing of it was kept")]
    RequestChecksumMismatch,
    #[error("invalid username or password")]
    BadCredentials,
    /// The credential was valid once: its token was revoked, its user deleted, or the
    /// user's role or password changed since it was issued.
    #[error("this credential is no longer valid")]
    Revoked,
    #[error("the token has expired")]
    TokenExpired,
    /// Authenticated, but not allowed this.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins from this address (for this username): try again after
    /// `retry_after_secs`.
    #[error("too many failed logins; try again in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    /// Too many uploads are streaming at once; try again shortly.
    #[error("too many uploads are in progress")]
    TooManyUploads,
    /// Too many passwords are being checked at once; try again shortly.
    #[error("too many logins are being checked at once")]
    Busy,
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] StoreError),
    #[error("object storage unavailable")]
    StorageUnavailable(#[source] StorageError),
    /// A fault that is nobody's input: a bug, a corrupt row. The text is for the log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => {
                Error::Conflict("a record with the same key already exists".into())
            }
            StoreError::Unavailable(_)
            | StoreError::Task(_)
            | StoreError::Contention(_)
            | StoreError::Busy(_)
            | StoreError::CommitUncertain(_) => Error::DatabaseUnavailable(e),
            StoreError::SameBytes(version) => Error::SameBytes { version },
            StoreError::OverQuota { held, limit } => Error::OverQuota { held, limit },
            StoreError::NotOwner => Error::Forbidden(
                "only the package's owners (or an admin) may publish to or change it".into(),
            ),
            StoreError::Query(_)
            | StoreError::Corrupt(_)
            | StoreError::Migration(_)
            | StoreError::Panicked(_) => Error::Internal(e.to_string()),
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => Error::NotFound(Entity::Package),
            StorageError::Body(io) => Error::Body(io),
            StorageError::AlreadyExists => Error::Internal("object key collision".into()),
            StorageError::Unsupported(what) => Error::Internal(format!("storage cannot do {what}")),
            StorageError::Unavailable(_) | StorageError::Io(_) => Error::StorageUnavailable(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicked_task_is_a_bug_and_a_cancelled_one_an_outage() {
        let panicked = Error::from(StoreError::Panicked("boom".into()));
        assert!(matches!(panicked, Error::Internal(_)), "{panicked:?}");
        let cancelled = Error::from(StoreError::Task("cancelled".into()));
        assert!(
            matches!(cancelled, Error::DatabaseUnavailable(_)),
            "{cancelled:?}"
        );
    }

    #[test]
    fn not_found_names_what_is_missing() {
        assert_eq!(
            Error::NotFound(Entity::Assignment).to_string(),
            "assignment not found"
        );
        assert_eq!(
            Error::from(StorageError::NotFound).to_string(),
            "package not found"
        );
    }
}
