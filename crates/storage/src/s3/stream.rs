//! Streaming a body of known length into S3 through a presigned `PUT`, with no buffer of
//! the whole and no MD5: the one request both whole objects and multipart parts use.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::{PUT_CHUNK, S3Store, unavailable_msg};
use crate::{Body, StorageError};

/// Remembers the body's own error, so that a failure of the client's stream is told
/// apart from a failure of S3 (rust-s3 reports both as I/O errors).
pub(super) struct TrackedBody<'a, 'b> {
    pub(super) inner: &'a mut Body<'b>,
    pub(super) error: Option<io::Error>,
}

impl AsyncRead for TrackedBody<'_, '_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut **self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Poll::Ready(Err(copy))
            }
            other => other,
        }
    }
}

impl S3Store {
    /// One streamed `PUT` of exactly `size` bytes of `body` to a presigned `url`: the body
    /// is read in this task and handed to the request as it comes. Returns S3's answer,
    /// once it is a success.
    pub(super) async fn stream_put(
        &self,
        url: String,
        body: Body<'_>,
        size: u64,
    ) -> Result<reqwest::Response, StorageError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let request = self
            .http
            .put(url)
            .header(http::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(stream))
            .send();
        let pump = async move {
            use tokio::io::AsyncReadExt;
            let mut sent = 0u64;
            loop {
                if sent == size {
                    return Ok(sent);
                }
                // Never a byte past `size`: the body may go on with the next part.
                let mut buf = bytes::BytesMut::with_capacity(PUT_CHUNK);
                match (&mut *body).take(size - sent).read_buf(&mut buf).await {
                    Ok(0) => return Ok(sent),
                    Ok(n) => {
                        sent += n as u64;
                        if tx.send(Ok(buf.freeze())).await.is_err() {
                            // The request ended early; its own error says why.
                            return Ok(sent);
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string()))).await;
                        return Err(e);
                    }
                }
            }
        };
        let (sent, response) = futures_util::future::join(pump, request).await;
        // The client's body failing is the client's fault, whatever S3 then said.
        let sent = sent.map_err(StorageError::Body)?;
        // A request that failed stopped the reading: S3's fault, not the body's.
        let response = response.map_err(unavailable_msg)?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(StorageError::Unavailable(format!(
                "PUT answered {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        if sent != size {
            return Err(StorageError::Body(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the body had {sent} bytes, not the {size} announced"),
            )));
        }
        Ok(response)
    }
}
