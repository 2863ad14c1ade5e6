//! One pass over the upload: hash, count and bound it while it streams to storage.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use agentpkg_model::Checksum;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::openpgp::Hasher;
use crate::signing::StreamDigests;

/// Wraps the body: every byte read is hashed and counted; crossing `limit` fails the read
/// at once, so the rest of an oversize body is never read.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    /// A second digest, for a signature that hashes with another algorithm.
    extra: Option<Hasher>,
    bytes: u64,
    limit: u64,
    exceeded: bool,
}

impl<R> HashingReader<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            extra: None,
            bytes: 0,
            limit,
            exceeded: false,
        }
    }

    /// Also feeds every byte to `extra`.
    pub(crate) fn with_extra(mut self, extra: Option<Hasher>) -> Self {
        self.extra = extra;
        self
    }

    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// The size and SHA-256, and the digests a signature can be completed from.
    pub(crate) fn finish(self) -> (u64, Checksum, StreamDigests) {
        let digests = StreamDigests {
            sha256: self.hasher.clone(),
            extra: self.extra,
        };
        let digest: [u8; 32] = self.hasher.finalize().into();
        (self.bytes, Checksum::from_digest(&digest), digests)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.exceeded {
            return Poll::Ready(Err(too_large()));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                this.bytes += new.len() as u64;
                if this.bytes > this.limit {
                    this.exceeded = true;
                    // An error must come with no bytes.
                    buf.set_filled(before);
                    return Poll::Ready(Err(too_large()));
                }
                this.hasher.update(new);
                if let Some(extra) = &mut this.extra {
                    extra.update(new);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::FileTooLarge, "upload size limit exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn hashes_and_counts_what_passes_through() {
        let data = b"hello agent\n".repeat(10_000);
        let mut r = HashingReader::new(&data[..], u64::MAX);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        let (n, sum, _) = r.finish();
        assert_eq!(n, data.len() as u64);
        let expected: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(sum, Checksum::from_digest(&expected));
    }

    #[tokio::test]
    async fn stops_as_soon_as_the_limit_is_crossed() {
        let data = vec![0u8; 10_000];
        let mut r = HashingReader::new(&data[..], 100);
        let mut buf = [0u8; 64];
        assert_eq!(r.read(&mut buf).await.unwrap(), 64);
        let err = r.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(r.exceeded());
        assert!(r.bytes <= 128, "read {} bytes, far past the limit", r.bytes);
    }

    #[tokio::test]
    async fn exactly_the_limit_is_allowed() {
        let data = [1u8; 100];
        let mut r = HashingReader::new(&data[..], 100);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert!(!r.exceeded());
    }
}
