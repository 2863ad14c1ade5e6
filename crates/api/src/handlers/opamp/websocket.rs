//! OpAMP over WebSocket: the upgrade, the connection's task, and the count of open
//! connections per replica and per credential.

use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_fleet::proto::AgentToServer;
use agentpkg_fleet::{Refusal, owner_of};
use agentpkg_model::ErrorCode;
use futures_util::StreamExt;
use prost::Message;

use super::base_url;
use crate::{ApiError, ApiState, RequestContext, Viewer};

/// OpAMP WebSocket connections open on this replica, in all and per credential.
#[derive(Debug, Default)]
pub struct Connections {
    open: std::sync::Mutex<(
        usize,
        std::collections::HashMap<agentpkg_model::AgentOwner, usize>,
    )>,
}

/// How many OpAMP WebSocket connections one replica holds, in all and per credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub per_replica: usize,
    pub per_credential: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            per_replica: 20_000,
            per_credential: 5_000,
        }
    }
}

/// One open connection, counted until dropped.
struct Open {
    connections: std::sync::Arc<Connections>,
    owner: agentpkg_model::AgentOwner,
}

impl Connections {
    fn open(
        self: &std::sync::Arc<Self>,
        owner: agentpkg_model::AgentOwner,
        limits: ConnectionLimits,
    ) -> Result<Open, String> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.0 >= limits.per_replica {
            return Err(format!(
                "this replica holds {} OpAMP WebSocket connections (fleet.max_websockets)",
                limits.per_replica
            ));
        }
        let mine = open.1.entry(owner).or_default();
        if *mine >= limits.per_credential {
            return Err(format!(
                "this credential holds {} OpAMP WebSocket connections here (fleet.max_websockets_per_credential)",
                limits.per_credential
            ));
        }
        *mine += 1;
        open.0 += 1;
        Ok(Open {
            connections: self.clone(),
            owner,
        })
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&self.owner);
            }
        }
    }
}

/// How often a WebSocket connection checks that its credential still holds: a revoked
/// token or a deleted user ends it within this and the credential cache's freshness.
const CREDENTIAL_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// OpAMP over WebSocket (`GET /v1/opamp` with an upgrade): each binary frame is the
/// OpAMP header (a varint, 0) and an `AgentToServer`; each answer the same with a
/// `ServerToAgent`. Between messages, the server pushes a new offer when the agent's
/// desired set changes (an assignment, an upload, a yank, on any replica). The upgrade
/// needs a bearer credential, or the session cookie from this site's own pages (`Origin`,
/// checked with the cookie in [`crate::auth`]);
/// the credential is checked again every second, and the connection closed (policy) once
/// it is revoked. A message refused by the fleet (another credential's agent, past a
/// bound) is answered with its `error_response`, then the connection closes (policy). A
/// frame the server cannot read closes the connection with a protocol error; a connection
/// that ends without the agent's disconnect message is recorded as a disconnect all the
/// same. The server pings every `fleet.websocket_ping_secs` and closes a connection silent
/// for three times that.
pub(crate) async fn websocket(
    viewer: Viewer,
    ctx: RequestContext,
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    // Who speaks on this connection, from where (the upgrade's address and request id).
    let caller = ctx.caller(&viewer.principal.0);
    let recheck_credential =
        crate::auth::Recheck::new(&state, &caller.credential, &crate::auth::bearer(&req)?)?;
    let open = state
        .opamp
        .connections
        .open(owner_of(&caller.credential), state.opamp.limits)
        .map_err(|why| ApiError::new(ErrorCode::TooManyConnections, why))?;
    let (response, mut session, frames) = actix_ws::handle(&req, body)?;
    let base = base_url(&req, &state);
    let fleet = state.fleet.clone();
    let state = state.into_inner();
    let mut frames = frames
        .max_frame_size(state.opamp.max_message_bytes + 16)
        .aggregate_continuations()
        .max_continuation_size(state.opamp.max_message_bytes + 16);
    let mut changes = fleet.offer_changes();
    let ping_every = state.opamp.ping;
    actix_web::rt::spawn(async move {
        let _open = open;
        let mut recheck = tokio::time::interval_at(
            tokio::time::Instant::now() + CREDENTIAL_RECHECK,
            CREDENTIAL_RECHECK,
        );
        let mut last_uid: Option<Vec<u8>> = None;
        let mut said_goodbye = false;
        // A peer that answers neither messages nor pings for three intervals is gone
        // (a half-open TCP connection would otherwise hold its task for ever).
        let mut pings =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut last_heard = tokio::time::Instant::now();
        let close = loop {
            let frame = tokio::select! {
                frame = frames.next() => frame,
                _ = recheck.tick() => {
                    match recheck_credential.holds(&state).await {
                        Ok(true) => continue,
                        // The database away: the connection goes on, checked again later.
                        Err(e) => {
                            tracing::debug!(error = %e, "OpAMP WebSocket credential not rechecked");
                            continue;
                        }
                        Ok(false) => {
                            tracing::info!("OpAMP WebSocket credential no longer valid: connection closed");
                            break Some(actix_ws::CloseCode::Policy);
                        }
                    }
                }
                _ = pings.tick() => {
                    if last_heard.elapsed() >= ping_every * 3 {
                        tracing::info!("OpAMP WebSocket peer silent: connection closed");
                        break Some(actix_ws::CloseCode::Away);
                    }
                    if session.ping(b"").await.is_err() {
                        break None;
                    }
                    continue;
                }
                Ok(()) = changes.changed() => {
                    let assignments = changes.borrow_and_update().clone();
                    let (Some(uid), Some(assignments)) = (&last_uid, assignments) else {
                        continue;
                    };
                    if said_goodbye {
                        continue;
                    }
                    match fleet.refresh_offer(uid, &caller.credential, &assignments, &base).await {
                        Ok(Some(offer)) => {
                            if session.binary(encode_frame(&offer)).await.is_err() {
                                break None;
                            }
                        }
                        Ok(None) => {}
                        // The agent's next message gets the offer instead.
                        Err(e) => tracing::warn!(error = %e, "a new offer was not pushed"),
                    }
                    continue;
                }
            };
            let Some(frame) = frame else {
                break None;
            };
            last_heard = tokio::time::Instant::now();
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::debug!(error = %e, "OpAMP WebSocket frame refused");
                    break Some(actix_ws::CloseCode::Protocol);
                }
            };
            match frame {
                actix_ws::AggregatedMessage::Binary(bytes) => {
                    let Some(message) = decode_frame(&bytes) else {
                        break Some(actix_ws::CloseCode::Protocol);
                    };
                    let uid = message.instance_uid.clone();
                    let goodbye = message.agent_disconnect.is_some();
                    let reply = match fleet.handle(message, &caller, &base).await {
                        Ok(reply) => reply,
                        Err(e) => {
                            tracing::warn!(error = %e, "OpAMP message not handled");
                            break Some(actix_ws::CloseCode::Error);
                        }
                    };
                    if session.binary(encode_frame(&reply.message)).await.is_err() {
                        break None;
                    }
                    match reply.refusal {
                        None => {
                            last_uid = Some(uid);
                            said_goodbye = goodbye;
                        }
                        // A bad uid is answered and the connection goes on, as before.
                        Some(Refusal::Malformed) => {}
                        Some(_) => break Some(actix_ws::CloseCode::Policy),
                    }
                }
                actix_ws::AggregatedMessage::Ping(bytes) => {
                    if session.pong(&bytes).await.is_err() {
                        break None;
                    }
                }
                actix_ws::AggregatedMessage::Close(_) => break Some(actix_ws::CloseCode::Normal),
                actix_ws::AggregatedMessage::Text(_) => {
                    break Some(actix_ws::CloseCode::Unsupported);
                }
                actix_ws::AggregatedMessage::Pong(_) => {}
            }
        };
        if !said_goodbye && let Some(uid) = last_uid {
            fleet.connection_lost(&uid).await;
        }
        let _ = session.close(close.map(actix_ws::CloseReason::from)).await;
    });
    Ok(response)
}

/// One WebSocket frame: header 0, then the message.
fn encode_frame(message: &agentpkg_fleet::proto::ServerToAgent) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.encoded_len() + 1);
    out.push(0);
    message.encode(&mut out).unwrap_or_default();
    out
}

/// The message of one WebSocket frame: header 0, then an `AgentToServer`.
fn decode_frame(frame: &[u8]) -> Option<AgentToServer> {
    let (&header, message) = frame.split_first()?;
    // The header is a varint; 0, the only one defined, is one byte.
    if header != 0 {
        return None;
    }
    AgentToServer::decode(message).ok()
}
