//! Reading the file to send: its SHA-256 in one pass, or as it is sent (a running hash
//! that survives a resend), and a streamed body read ahead on a thread of its own.

use std::path::Path;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::UploadProgress;
use crate::Error;

/// Bytes read from the file at a time.
const PIECE: usize = 1024 * 1024;

/// The SHA-256 of a file, read in 1 MiB pieces on a thread of its own.
pub async fn sha256_file(
    path: &Path,
    progress: std::sync::Arc<dyn UploadProgress>,
) -> Result<String, Error> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; PIECE];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            progress.advance(n as u64);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))?
}

/// The SHA-256 of a file's first `upto` bytes, computed while they are sent.
pub(super) struct RunningHash {
    hasher: Sha256,
    upto: u64,
}

impl RunningHash {
    pub(super) fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            upto: 0,
        }
    }

    /// Takes in the piece of the file at `[at, at + piece.len())`: the part past what is
    /// hashed already (a piece sent again after a dropped connection is not hashed twice).
    /// Bytes between what is hashed and `at` are read from `file` first.
    fn take(&mut self, file: &Path, at: u64, piece: &[u8]) -> std::io::Result<()> {
        if at > self.upto {
            self.catch_up(file, at)?;
        }
        let end = at + piece.len() as u64;
        if end > self.upto {
            let skip = usize::try_from(self.upto - at).unwrap_or(usize::MAX);
            self.hasher.update(&piece[skip..]);
            self.upto = end;
        }
        Ok(())
    }

    /// Hashes the file's bytes from what is hashed up to `to`.
    pub(super) fn catch_up(&mut self, path: &Path, to: u64) -> std::io::Result<()> {
        use std::io::{Read, Seek};
        if to <= self.upto {
            return Ok(());
        }
        let mut file = std::fs::File::open(path)?;
        file.seek(std::io::SeekFrom::Start(self.upto))?;
        let mut buf = vec![0u8; PIECE];
        while self.upto < to {
            let want = usize::try_from(to - self.upto).map_or(PIECE, |left| left.min(PIECE));
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(shorter());
            }
            self.hasher.update(&buf[..n]);
            self.upto += n as u64;
        }
        Ok(())
    }

    pub(super) fn hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

pub(super) type Running = std::sync::Arc<std::sync::Mutex<RunningHash>>;

fn shorter() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the file got shorter while it was sent",
    )
}

/// Hashing a body as it is read: the running hash, and the offset up to which the reading
/// thread goes on hashing the file once the body's last byte is handed over (the file's
/// end, so that the last chunk is hashed while the server finishes with this request).
pub(super) struct Hashing {
    pub(super) running: Running,
    pub(super) then_to: u64,
}

/// `len` bytes of the file from `offset`, as a streamed body that reports its progress.
/// A thread reads ahead (a few pieces, never the whole file) while the connection sends;
/// with `hashing`, it also hashes them.
pub(super) async fn body(
    path: &Path,
    offset: u64,
    len: u64,
    hashing: Option<Hashing>,
    progress: std::sync::Arc<dyn UploadProgress>,
) -> Result<reqwest::Body, Error> {
    let mut file = std::fs::File::open(path)?;
    {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(offset))?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut left = len;
        let mut at = offset;
        while left > 0 {
            let mut buf = vec![0u8; PIECE.min(usize::try_from(left).unwrap_or(PIECE))];
            let piece = match file.read(&mut buf) {
                Ok(0) => Err(shorter()),
                Ok(n) => {
                    buf.truncate(n);
                    let hashed = match &hashing {
                        Some(Hashing { running, .. }) => running
                            .lock()
                            .map_err(|_| std::io::Error::other("a hashing thread failed"))
                            .and_then(|mut running| running.take(&path, at, &buf)),
                        None => Ok(()),
                    };
                    left -= n as u64;
                    at += n as u64;
                    hashed.map(|()| bytes::Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = piece.is_err();
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
        }
        // The body is complete; hashing on costs the request nothing. A failure here
        // comes again when the hash is asked for.
        drop(tx);
        if let Some(Hashing { running, then_to }) = hashing
            && let Ok(mut running) = running.lock()
        {
            let _ = running.catch_up(&path, then_to);
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let piece = rx.recv().await?;
        Some((piece, rx))
    })
    .map(move |piece| {
        if let Ok(p) = &piece {
            progress.advance(p.len() as u64);
        }
        piece
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        (file, bytes)
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn pieces_in_order_hash_to_the_file() {
        let (file, bytes) = file_of(3 * PIECE + 17);
        let mut running = RunningHash::new();
        for (i, piece) in bytes.chunks(PIECE / 3).enumerate() {
            running
                .take(file.path(), (i * (PIECE / 3)) as u64, piece)
                .unwrap();
        }
        assert_eq!(running.upto, bytes.len() as u64);
        assert_eq!(running.hex(), sha(&bytes));
    }

    #[test]
    fn bytes_sent_again_after_a_dropped_connection_are_hashed_once() {
        let (file, bytes) = file_of(1000);
        let mut running = RunningHash::new();
        running.take(file.path(), 0, &bytes[..600]).unwrap();
        // The server kept 400 bytes: 400.. is sent again, overlapping what is hashed.
        running.take(file.path(), 400, &bytes[400..700]).unwrap();
        running.take(file.path(), 700, &bytes[700..]).unwrap();
        assert_eq!(running.hex(), sha(&bytes));
    }

    #[test]
    fn bytes_the_server_already_has_are_read_from_the_file() {
        let (file, bytes) = file_of(2 * PIECE + 5);
        let mut running = RunningHash::new();
        // A resumed upload starts where the server got to.
        let resumed = PIECE + 3;
        running
            .take(file.path(), resumed as u64, &bytes[resumed..])
            .unwrap();
        assert_eq!(running.hex(), sha(&bytes));
        // The last chunk, hashed before it is sent, then sent: nothing changes.
        let mut running = RunningHash::new();
        running.catch_up(file.path(), bytes.len() as u64).unwrap();
        running.take(file.path(), 10, &bytes[10..]).unwrap();
        assert_eq!(running.hex(), sha(&bytes));
    }

    #[test]
    fn a_file_shorter_than_announced_is_an_error() {
        let (file, bytes) = file_of(100);
        let mut running = RunningHash::new();
        let e = running
            .catch_up(file.path(), bytes.len() as u64 + 1)
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
