//! One request's body, cut into pieces and stored: each a part of the session's multipart
//! write, the whole object when one piece holds it all, or a tail; hashed on the way into
//! the session's SHA-256 (whose state is kept between requests) and the request's own
//! checksum.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use agentpkg_model::{SessionProgress, SessionTail, StoredPart, UploadSession, ValidationError};
use agentpkg_storage::{DynObjectStore, MIN_PART_BYTES, StorageError};
use bytes::BytesMut;
use sha2_resumable::Digest as _;
use sha2_resumable::digest::common::hazmat::SerializableState;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::Error;

pub(super) type SessionHasher = sha2_resumable::Sha256;

/// A checksum of one request's body, as the client announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestChecksum {
    Sha1([u8; 20]),
    Sha256([u8; 32]),
}

impl RequestChecksum {
    /// The algorithms a request may name.
    pub const ALGORITHMS: &'static [&'static str] = &["sha1", "sha256"];

    /// From an algorithm name and the digest's bytes.
    pub fn new(algorithm: &str, digest: &[u8]) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new("checksum", "has the wrong length for its algorithm");
        match algorithm {
            "sha1" => Ok(Self::Sha1(digest.try_into().map_err(|_| bad())?)),
            "sha256" => Ok(Self::Sha256(digest.try_into().map_err(|_| bad())?)),
            other => Err(ValidationError::new(
                "checksum",
                format!("algorithm {other:?} is not supported (sha1, sha256)"),
            )),
        }
    }

    pub(super) fn hasher(&self) -> RequestHasher {
        match self {
            Self::Sha1(_) => RequestHasher::Sha1(sha1::Sha1::default()),
            Self::Sha256(_) => RequestHasher::Sha256(sha2::Sha256::default()),
        }
    }
}

#[derive(Clone)]
pub(super) enum RequestHasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl RequestHasher {
    fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        match self {
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    pub(super) fn matches(self, expected: &RequestChecksum) -> bool {
        use sha2::Digest;
        match (self, expected) {
            (Self::Sha1(h), RequestChecksum::Sha1(d)) => h.finalize().as_slice() == d,
            (Self::Sha256(h), RequestChecksum::Sha256(d)) => h.finalize().as_slice() == d,
            _ => false,
        }
    }
}

pub(super) fn restore(state: &[u8]) -> Result<SessionHasher, Error> {
    let state = state
        .try_into()
        .map_err(|_| Error::Internal("a session's SHA-256 state has the wrong size".into()))?;
    SessionHasher::deserialize(state)
        .map_err(|_| Error::Internal("a session's SHA-256 state does not load".into()))
}

/// The body of one request: hashed into the session's SHA-256 (and the request's own
/// checksum), counted, and refused past the session's length.
pub(super) struct SessionReader<R> {
    pub(super) inner: R,
    pub(super) hasher: SessionHasher,
    pub(super) request: Option<RequestHasher>,
    pub(super) count: u64,
    pub(super) limit: u64,
    pub(super) past_length: bool,
}

impl<R: AsyncRead + Unpin> AsyncRead for SessionReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let data = &buf.filled()[before..];
                if this.count + data.len() as u64 > this.limit {
                    this.past_length = true;
                    buf.set_filled(before);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the body goes past the upload's length",
                    )));
                }
                this.count += data.len() as u64;
                this.hasher.update(data);
                if let Some(request) = &mut this.request {
                    request.update(data);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// What a request stored that completes its session.
pub(super) struct Written {
    pub(super) progress: SessionProgress,
    pub(super) hasher: SessionHasher,
    /// The session's tail went into a piece: delete it.
    pub(super) old_tail_consumed: bool,
}

/// The session's SHA-256 state and body bytes as of the last piece stored.
pub(super) struct Kept {
    pub(super) hasher: SessionHasher,
    pub(super) body_bytes: u64,
}

/// Cuts one request's body (after the session's tail) into pieces and stores each: a part
/// of the multipart write, the whole object when one piece holds it all, or a new tail.
pub(super) struct PieceWriter<'a> {
    pub(super) storage: &'a DynObjectStore,
    pub(super) session: &'a UploadSession,
    pub(super) progress: SessionProgress,
    pub(super) part_bytes: u64,
    pub(super) kept: Kept,
    /// A tail this request stored (not yet committed).
    pub(super) new_tail: Option<agentpkg_model::ObjectKey>,
    /// The session's tail went into a piece: delete it once committed.
    pub(super) old_tail_consumed: bool,
}

impl PieceWriter<'_> {
    /// Stores pieces until the body ends or fails; `Err` says why it stopped early
    /// ([`Error::Body`] for the client's side). `progress` and `kept` describe what is
    /// stored either way.
    pub(super) async fn write<R>(
        &mut self,
        reader: &mut SessionReader<R>,
        content_length: Option<u64>,
    ) -> Result<(), Error>
    where
        R: AsyncRead + Send + Unpin,
    {
        loop {
            let front = self.front_bytes();
            let length = self.session.length;
            let stored_before = self.progress.offset - front;
            match content_length {
                Some(announced) => return self.write_sized(reader, announced).await,
                None => {
                    let mut buffer = BytesMut::new();
                    let mut front_reader = self.front_reader().await?;
                    let mut source = (&mut front_reader)
                        .chain(&mut *reader)
                        .take(self.part_bytes);
                    let mut failed = None;
                    loop {
                        buffer.reserve(256 * 1024);
                        match source.read_buf(&mut buffer).await {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    let piece = buffer.len() as u64;
                    if piece == 0 {
                        return failed.map_or(Ok(()), |e| Err(Error::Body(e)));
                    }
                    let full = piece == self.part_bytes && failed.is_none();
                    let mut bytes: &[u8] = &buffer;
                    let result = match self.plan_piece(piece, stored_before, !full, false).await {
                        Ok(plan) => {
                            store_piece(self.storage, self.session, plan, &mut bytes, piece).await
                        }
                        Err(e) => Err(e),
                    };
                    self.after_piece(result, kept_of(reader))?;
                    if let Some(e) = failed {
                        return Err(Error::Body(e));
                    }
                    if stored_before + piece == length {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Bytes of the session's tail still to be sent at the front of the next piece.
    fn front_bytes(&self) -> u64 {
        match (&self.session.progress.tail, self.old_tail_consumed) {
            (Some(tail), false) => tail.size,
            _ => 0,
        }
    }

    async fn front_reader(&self) -> Result<Box<dyn AsyncRead + Send + Unpin>, Error> {
        match (&self.session.progress.tail, self.old_tail_consumed) {
            (Some(tail), false) => {
                let stream = self.storage.get(&tail.key).await?;
                Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
            }
            _ => Ok(Box::new(tokio::io::empty())),
        }
    }

    /// A body of a known length, in pieces of at most `part_bytes`. A part's bytes are
    /// all sent before S3 answers for it: the next part starts then, while that answer is
    /// awaited (two parts in flight at most, applied in order), so the body keeps flowing
    /// across part boundaries.
    async fn write_sized<R>(
        &mut self,
        reader: &mut SessionReader<R>,
        announced: u64,
    ) -> Result<(), Error>
    where
        R: AsyncRead + Send + Unpin,
    {
        let (storage, session) = (self.storage, self.session);
        let mut front = self.front_bytes();
        let mut front_reader = Some(self.front_reader().await?);
        // Where the next piece starts in the upload, and in this request's body.
        let mut at = self.progress.offset - front;
        let mut body_at = reader.count;
        let shared = std::sync::Mutex::new(reader);
        let mut previous: Option<(PieceFuture<'_>, Kept)> = None;
        loop {
            let available = front + announced.saturating_sub(body_at);
            if available == 0 {
                break;
            }
            let piece = available.min(self.part_bytes);
            let ends_request = piece == available;
            let plan = match self
                .plan_piece(piece, at, ends_request, previous.is_some())
                .await
            {
                Ok(plan) => plan,
                Err(e) => {
                    if let Some((earlier, kept)) = previous.take() {
                        let stored = earlier.await;
                        self.after_piece(stored, kept)?;
                    }
                    return Err(e.into());
                }
            };
            let body_end = body_at + (piece - front);
            let source = LockedReader(&shared);
            // The session's tail goes at the front of the first piece only.
            let front_part: Box<dyn AsyncRead + Send + Unpin> = front_reader
                .take()
                .unwrap_or_else(|| Box::new(tokio::io::empty()));
            let current: PieceFuture<'_> = Box::pin(async move {
                let mut body = front_part.chain(source).take(piece);
                store_piece(storage, session, plan, &mut body, piece).await
            });
            let (earlier, current) = send_piece(previous.take(), current, &shared, body_end).await;
            if let Some((stored, kept)) = earlier {
                // On an error `current` is dropped: its part, never recorded, is not the
                // session's (completing the multipart write lists only recorded parts).
                self.after_piece(stored, kept)?;
            }
            match current {
                Sent::Done(stored) => {
                    let kept = kept_of(&**lock(&shared));
                    self.after_piece(stored, kept)?;
                }
                Sent::Awaiting(future) => {
                    let kept = kept_of(&**lock(&shared));
                    previous = Some((future, kept));
                }
            }
            at += piece;
            body_at = body_end;
            front = 0;
        }
        if let Some((earlier, kept)) = previous {
            let stored = earlier.await;
            self.after_piece(stored, kept)?;
        }
        Ok(())
    }

    /// What the piece of `size` bytes that follows `stored_before` bytes of the upload
    /// becomes: the whole object, a tail, or the next part (the multipart write begun
    /// for the first). `in_flight`: a part before it is still awaiting its answer, not
    /// yet recorded.
    async fn plan_piece(
        &mut self,
        size: u64,
        stored_before: u64,
        ends_request: bool,
        in_flight: bool,
    ) -> Result<Plan, StorageError> {
        let ends_upload = stored_before + size == self.session.length;
        if ends_upload && self.progress.multipart.is_none() {
            return Ok(Plan::Whole);
        }
        if ends_request && !ends_upload && size < MIN_PART_BYTES {
            return Ok(Plan::Tail);
        }
        let upload = match &self.progress.multipart {
            Some(upload) => upload.clone(),
            None => {
                let upload = self.storage.begin_parts(&self.session.storage_key).await?;
                self.progress.multipart = Some(upload.clone());
                upload
            }
        };
        // Parts are numbered in the order their bytes arrive.
        let number = u32::try_from(self.progress.parts.len() as u64 + 1 + u64::from(in_flight))
            .map_err(|_| StorageError::Unavailable("too many parts".into()))?;
        Ok(Plan::Part { upload, number })
    }

    /// Records a piece stored (in the order their bytes arrived); `kept` is the session's
    /// SHA-256 state and the body's bytes as of its end.
    fn after_piece(
        &mut self,
        result: Result<PieceStored, StorageError>,
        kept: Kept,
    ) -> Result<(), Error> {
        let stored = result.map_err(Error::from)?;
        // The session's tail, if any, went at the front of the first piece.
        self.old_tail_consumed = self.session.progress.tail.is_some();
        self.progress.offset += kept.body_bytes - self.kept.body_bytes;
        match stored {
            PieceStored::Whole => self.progress.tail = None,
            PieceStored::Tail(tail) => {
                self.new_tail = Some(tail.key.clone());
                self.progress.tail = Some(tail);
            }
            PieceStored::Part(part) => {
                self.progress.tail = None;
                self.progress.parts.push(part);
            }
        }
        self.kept = kept;
        Ok(())
    }
}

/// The session's SHA-256 state and the body's bytes, as the reader stands.
fn kept_of<R>(reader: &SessionReader<R>) -> Kept {
    Kept {
        hasher: reader.hasher.clone(),
        body_bytes: reader.count,
    }
}

/// What a piece becomes (see [`PieceWriter::plan_piece`]).
pub(super) enum Plan {
    Whole,
    Tail,
    Part { upload: String, number: u32 },
}

/// Stores one piece of `size` bytes as planned.
async fn store_piece(
    storage: &DynObjectStore,
    session: &UploadSession,
    plan: Plan,
    source: &mut (dyn AsyncRead + Send + Unpin),
    size: u64,
) -> Result<PieceStored, StorageError> {
    let key = &session.storage_key;
    match plan {
        Plan::Whole => {
            // One piece holds the whole upload: it is the object.
            storage.put_sized(key, source, size).await?;
            Ok(PieceStored::Whole)
        }
        Plan::Tail => {
            let tail = agentpkg_model::ObjectKey::for_new_package(*uuid::Uuid::new_v4().as_bytes());
            storage.put_sized(&tail, source, size).await?;
            Ok(PieceStored::Tail(SessionTail { key: tail, size }))
        }
        Plan::Part { upload, number } => {
            let etag = storage.put_part(key, &upload, number, source, size).await?;
            Ok(PieceStored::Part(StoredPart { number, etag, size }))
        }
    }
}

type PieceFuture<'a> =
    Pin<Box<dyn std::future::Future<Output = Result<PieceStored, StorageError>> + Send + 'a>>;

/// A piece whose bytes are all sent: stored (or failed), or awaiting S3's answer.
enum Sent<'a> {
    Done(Result<PieceStored, StorageError>),
    Awaiting(PieceFuture<'a>),
}

/// Drives `current` until its bytes are all read from the body (the reader's count at
/// `body_end`) or it ends, and `previous` until it ends. Returns `previous`'s outcome
/// with its state, and where `current` stands.
async fn send_piece<'a, R>(
    mut previous: Option<(PieceFuture<'a>, Kept)>,
    current: PieceFuture<'a>,
    shared: &std::sync::Mutex<&mut SessionReader<R>>,
    body_end: u64,
) -> (Option<(Result<PieceStored, StorageError>, Kept)>, Sent<'a>) {
    let mut current = Some(current);
    let mut earlier = None;
    let mut done = None;
    std::future::poll_fn(|cx| {
        if let Some((future, _)) = &mut previous
            && let Poll::Ready(stored) = future.as_mut().poll(cx)
        {
            let (_, kept) = previous.take().expect("polled above");
            earlier = Some((stored, kept));
        }
        if let Some(future) = &mut current
            && let Poll::Ready(stored) = future.as_mut().poll(cx)
        {
            current = None;
            done = Some(stored);
        }
        let sent = done.is_some() || lock(shared).count >= body_end;
        if previous.is_none() && sent {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    let current = match (done, current) {
        (Some(stored), _) => Sent::Done(stored),
        (None, Some(future)) => Sent::Awaiting(future),
        (None, None) => unreachable!("a piece is either done or still in flight"),
    };
    (earlier, current)
}

fn lock<'m, T>(m: &'m std::sync::Mutex<T>) -> std::sync::MutexGuard<'m, T> {
    // A panic while the reader was polled poisons nothing we rely on: its counts stand.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The body's reader, shared by the piece being sent and the one awaiting its answer
/// (which reads no more).
struct LockedReader<'m, 'r, R>(&'m std::sync::Mutex<&'r mut SessionReader<R>>);

impl<R: AsyncRead + Unpin> AsyncRead for LockedReader<'_, '_, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut reader = lock(self.0);
        Pin::new(&mut **reader).poll_read(cx, buf)
    }
}

enum PieceStored {
    Whole,
    Tail(SessionTail),
    Part(StoredPart),
}
