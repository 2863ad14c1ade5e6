use std::io;

/// Errors of object storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found")]
    NotFound,
    #[error("object already exists")]
    AlreadyExists,
    /// Reading the body failed: the fault is the caller's stream (client gone, limit
    /// crossed), not the store's.
    #[error("reading the upload body failed: {0}")]
    Body(#[source] io::Error),
    /// The store cannot be reached or refused the operation.
    #[error("object storage unavailable: {0}")]
    Unavailable(String),
    /// The backend cannot do this (a directory has no presigned URLs, a test store no
    /// writes in parts).
    #[error("object storage cannot do {0}")]
    Unsupported(&'static str),
    #[error("object storage I/O error: {0}")]
    Io(#[from] io::Error),
}
