//! Streams a request body (a form's file field, or a raw body) into the package manager.
//!
//! The connection's chunks are passed through a bounded channel to the upload, which runs
//! in a task of its own; the channel is only closed cleanly at the body's real end, so a
//! client that disconnects mid-file leaves a failed upload, never a truncated package.

use std::io;

use agentpkg_model::Package;
use agentpkg_packagemgr::{BodySender, PackageManager, UploadMeta, body_channel};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::ApiError;
use crate::deadlines::into_io;

/// A request body's error, as the `io::Error` the upload fails with; a missed body
/// deadline stays `TimedOut`, anything else is `InvalidData`.
pub(crate) trait BodyError {
    fn into_io(self) -> io::Error;
}

impl BodyError for actix_web::error::PayloadError {
    fn into_io(self) -> io::Error {
        into_io(self)
    }
}

impl BodyError for actix_multipart::MultipartError {
    fn into_io(self) -> io::Error {
        match self {
            Self::Payload(e) => into_io(e),
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// Chunks of the file in flight between the HTTP connection and the storage upload.
pub(crate) const BODY_CHANNEL_CHUNKS: usize = 16;

/// Uploads `body` as the package that `meta` describes ([`PackageManager::upload`]).
pub(super) async fn upload_stream<S, E>(
    mgr: &PackageManager,
    meta: UploadMeta,
    body: S,
) -> Result<Package, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: BodyError,
{
    let (tx, rx) = body_channel(BODY_CHANNEL_CHUNKS);
    let ((), package) = futures_util::future::join(pump(body, tx), mgr.upload(meta, rx)).await;
    Ok(package?)
}

/// Feeds the chunks to the upload until the body ends (cleanly, or with the error that
/// the upload will fail with), or the upload stops reading.
pub(crate) async fn pump<S, E>(mut body: S, tx: BodySender)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: BodyError,
{
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => {
                if tx.send(bytes).await.is_err() {
                    // The upload stopped reading (limit crossed, storage failed).
                    return;
                }
            }
            Err(e) => {
                tx.fail(e.into_io()).await;
                return;
            }
        }
    }
    tx.finish().await;
}
