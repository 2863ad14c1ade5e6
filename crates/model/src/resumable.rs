//! Resumable uploads (tus): a package's bytes sent over several requests, each continuing
//! where the last stopped, possibly as partial uploads sent side by side and joined at the
//! end. What a session is and how far it got; the protocol itself lives in the API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::closed_set::closed_set;
use crate::direct::random_id;
use crate::{
    Checksum, Coordinates, Description, DetachedSignature, FileName, ObjectKey, ValidationError,
};

random_id!(
    /// The id of a resumable upload session.
    UploadSessionId
);

closed_set!(
    /// How a session takes part in a concatenation.
    SessionKind, "kind", {
        /// A whole package, published when its last byte arrives.
        Whole => "whole",
        /// A piece of a package, kept until a final upload joins it with others.
        Partial => "partial",
        /// The join of partial uploads, published when it is created.
        Final => "final",
    }
);

/// What a session publishes once complete: everything of an upload but its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTarget {
    pub coordinates: Coordinates,
    pub filename: Option<FileName>,
    pub description: Description,
    pub expected_sha256: Option<Checksum>,
    pub signature: Option<DetachedSignature>,
}

/// One part of an object assembled in object storage (an S3 multipart part, a part
/// file): its number, from 1, what the store named it by, and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPart {
    pub number: u32,
    pub etag: String,
    pub size: u64,
}

/// Bytes received but too few for a part of their own (object stores want parts of at
/// least 5 MiB): kept as a small object, and sent again at the front of the next part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTail {
    pub key: ObjectKey,
    pub size: u64,
}

/// How far a session got: what every request that adds bytes commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionProgress {
    /// Bytes received and kept: the parts' sizes and the tail's.
    pub offset: u64,
    /// The store's handle of the multipart write, once the first part was written.
    pub multipart: Option<String>,
    pub parts: Vec<StoredPart>,
    pub tail: Option<SessionTail>,
    /// The SHA-256 of the first `offset` bytes, as a resumable hasher state.
    pub hash_state: Vec<u8>,
    /// The package it became, once published.
    pub package_id: Option<i64>,
}

/// A resumable upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    pub id: UploadSessionId,
    /// Who created it: only they (or an admin) see it.
    pub user_id: Option<i64>,
    pub kind: SessionKind,
    /// What it publishes; `None` for a partial upload (its final upload says).
    pub target: Option<SessionTarget>,
    /// The metadata as the client sent it (`Upload-Metadata`), returned on request.
    pub metadata: String,
    /// A final upload's partial uploads, in order.
    pub parts_of: Vec<UploadSessionId>,
    /// The size of the whole upload.
    pub length: u64,
    /// Where the assembled bytes go.
    pub storage_key: ObjectKey,
    pub progress: SessionProgress,
    /// Idle sessions end at this time (by the database's clock); every write moves it on.
    pub expires_at: DateTime<Utc>,
}

impl UploadSession {
    /// Every byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.progress.offset == self.length
    }

    /// The objects it holds in storage besides a multipart write: a tail, and the assembled
    /// object once complete (unless a package owns it now).
    pub fn objects(&self) -> Vec<ObjectKey> {
        let mut keys: Vec<ObjectKey> = self.progress.tail.iter().map(|t| t.key.clone()).collect();
        if self.progress.package_id.is_none() {
            keys.push(self.storage_key.clone());
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_nothing_else_parses() {
        for kind in [SessionKind::Whole, SessionKind::Partial, SessionKind::Final] {
            assert_eq!(kind.as_str().parse::<SessionKind>().unwrap(), kind);
        }
        assert!("Whole".parse::<SessionKind>().is_err());
        assert!("".parse::<SessionKind>().is_err());
    }

    #[test]
    fn session_ids_are_hex_only() {
        let id = UploadSessionId::new([7; 16]);
        assert_eq!(UploadSessionId::parse(id.as_str()).unwrap(), id);
        assert!(UploadSessionId::parse("../x").is_err());
    }
}
