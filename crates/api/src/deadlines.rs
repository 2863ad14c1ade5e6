//! Deadlines on request bodies, so that a client that trickles (or stalls) cannot hold a
//! connection, a worker's attention or an upload's resources for ever.
//!
//! Every body is read under two limits: no gap between chunks longer than `idle`, and,
//! after a `grace` period from the first read, at least `min_rate` bytes a second on
//! average. Both are one deadline: the next chunk must arrive before
//! `min(last chunk + idle, first read + grace + bytes so far / min_rate)`. A body that
//! misses it fails with an `io::ErrorKind::TimedOut` error, which the handlers answer
//! with `408` `body_timeout`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, web};
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::ApiState;

/// The limits every request body is read under.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadlines {
    /// Longest wait for the next chunk.
    pub idle: Duration,
    /// Least average rate, in bytes a second, once `grace` has passed.
    pub min_rate: u64,
    pub grace: Duration,
}

impl Default for BodyDeadlines {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            min_rate: 1024,
            grace: Duration::from_secs(30),
        }
    }
}

/// The one route whose upgraded connection is a WebSocket.
pub(crate) const WEBSOCKET_ROUTE: &str = "/v1/opamp";

/// Middleware: reads every request body under the state's [`BodyDeadlines`], except the
/// OpAMP WebSocket's (a `GET` of [`WEBSOCKET_ROUTE`] asking for the upgrade): its frames
/// come when there is something to say (an agent's heartbeat every 30 s or more), and its
/// handler checks the peer is alive with pings.
// NOTE: the header alone exempts nothing: `Upgrade: websocket` on a login or an upload
// would otherwise hold a connection for ever with a body that never comes.
pub async fn enforce_body_deadlines(
    mut req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, Error> {
    let websocket = req.method() == actix_web::http::Method::GET
        && req.path() == WEBSOCKET_ROUTE
        && crate::auth::is_websocket_upgrade(req.request());
    if let Some(limits) = req
        .app_data::<web::Data<ApiState>>()
        .map(|s| s.body_deadlines)
        .filter(|_| !websocket)
    {
        let inner = req.take_payload();
        let guarded: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
            Box::pin(Deadlined::new(inner, limits));
        req.set_payload(Payload::from(guarded));
    }
    next.call(req).await
}

struct Deadlined {
    inner: Payload,
    limits: BodyDeadlines,
    /// Set at the first read: a body nobody reads costs nothing and times nothing.
    started: Option<Instant>,
    last: Instant,
    bytes: u64,
    timer: Pin<Box<Sleep>>,
    failed: bool,
}

impl Deadlined {
    fn new(inner: Payload, limits: BodyDeadlines) -> Self {
        let now = Instant::now();
        Self {
            inner,
            limits,
            started: None,
            last: now,
            bytes: 0,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle)),
            failed: false,
        }
    }

    fn deadline(&self, started: Instant) -> Instant {
        let idle = self.last + self.limits.idle;
        if self.limits.min_rate == 0 {
            return idle;
        }
        let earned = Duration::from_secs_f64(self.bytes as f64 / self.limits.min_rate as f64);
        idle.min(started + self.limits.grace + earned)
    }
}

impl Stream for Deadlined {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        let started = match this.started {
            Some(at) => at,
            None => {
                let now = Instant::now();
                this.started = Some(now);
                this.last = now;
                let deadline = this.deadline(now);
                this.timer.as_mut().reset(deadline);
                now
            }
        };
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.bytes += chunk.len() as u64;
                this.last = Instant::now();
                let deadline = this.deadline(started);
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.failed = true;
                    let why = if Instant::now() >= this.last + this.limits.idle {
                        format!(
                            "the request body stalled: nothing for {} s",
                            this.limits.idle.as_secs()
                        )
                    } else {
                        format!(
                            "the request body arrives slower than {} bytes a second",
                            this.limits.min_rate
                        )
                    };
                    Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        why,
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

/// Whether a body error is a missed deadline, and its message.
pub(crate) fn timed_out(e: &PayloadError) -> Option<String> {
    match e {
        PayloadError::Io(io) if io.kind() == io::ErrorKind::TimedOut => Some(io.to_string()),
        _ => None,
    }
}

/// A body error as an `io::Error`, keeping a missed deadline recognisable.
pub(crate) fn into_io(e: PayloadError) -> io::Error {
    match e {
        PayloadError::Io(io) => io,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}
