//! A body fed chunk by chunk from elsewhere (an HTTP handler, a message consumer) and read
//! as one `AsyncRead` by the upload.
//!
//! The end must be declared with [`BodySender::finish`]: a sender dropped without it is a
//! body cut short, and the reader fails instead of reporting a clean end of file. That is
//! what keeps a client that hangs up mid-upload from publishing a truncated package.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;

enum Item {
    Data(Bytes),
    Fail(io::Error),
    End,
}

/// Creates a body channel holding at most `capacity` chunks in flight.
pub fn body_channel(capacity: usize) -> (BodySender, BodyReader) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        BodySender { tx },
        BodyReader {
            inner: StreamReader::new(ItemStream { rx, ended: false }),
        },
    )
}

/// The writing end.
pub struct BodySender {
    tx: mpsc::Sender<Item>,
}

impl BodySender {
    /// Sends one chunk; fails when the reader is gone (the upload stopped reading).
    pub async fn send(&self, chunk: Bytes) -> Result<(), Bytes> {
        self.tx
            .send(Item::Data(chunk))
            .await
            .map_err(|e| match e.0 {
                Item::Data(b) => b,
                _ => Bytes::new(),
            })
    }

    /// Ends the body cleanly.
    pub async fn finish(self) {
        let _ignored_when_reader_gone = self.tx.send(Item::End).await;
    }

    /// Ends the body with an error that the reader will return.
    pub async fn fail(self, error: io::Error) {
        let _ignored_when_reader_gone = self.tx.send(Item::Fail(error)).await;
    }
}

/// The reading end.
pub struct BodyReader {
    inner: StreamReader<ItemStream, Bytes>,
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

struct ItemStream {
    rx: mpsc::Receiver<Item>,
    ended: bool,
}

impl Stream for ItemStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Item::Data(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Item::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Item::Fail(e))) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the body ended before it was complete",
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_finished_body_reads_to_its_end() {
        let (tx, mut rx) = body_channel(2);
        let writer = tokio::spawn(async move {
            tx.send(Bytes::from_static(b"hello ")).await.unwrap();
            tx.send(Bytes::from_static(b"agent")).await.unwrap();
            tx.finish().await;
        });
        let mut out = String::new();
        rx.read_to_string(&mut out).await.unwrap();
        writer.await.unwrap();
        assert_eq!(out, "hello agent");
    }

    #[tokio::test]
    async fn a_sender_dropped_without_finish_is_a_truncated_body() {
        let (tx, mut rx) = body_channel(2);
        tokio::spawn(async move {
            tx.send(Bytes::from_static(b"partial")).await.unwrap();
            drop(tx);
        });
        let mut out = Vec::new();
        let err = rx.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
