//! OpAMP over HTTP (`POST /v1/opamp`) and the fleet's agents.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_fleet::proto::AgentToServer;
use agentpkg_fleet::{AgentFilter, MAX_MESSAGE_BYTES, Refusal, owner_of};
use agentpkg_model::{Agent, AgentUid, PageRequest, ValidationError};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use crate::{Admin, ApiError, ApiState, Viewer};

const PROTOBUF: &str = "application/x-protobuf";

/// OpAMP over HTTP
///
/// One `AgentToServer` message (protobuf, at most 1 MiB) in, one `ServerToAgent` out. The
/// agent authenticates with a bearer token in the request's headers (a viewer, or a token
/// of read scope); the first message of an `instance_uid` binds it to that credential. A
/// message the server cannot accept is answered with an `error_response` and changes
/// nothing: `200` for a bad `instance_uid`, `403` for a uid bound to another credential,
/// `413` past a bound on attributes or statuses, `429` for a new agent past the
/// credential's number of agents.
#[utoipa::path(
    post,
    path = "/v1/opamp",
    tag = "fleet",
    request_body(content = Vec<u8>, description = "An OpAMP AgentToServer message", content_type = "application/x-protobuf"),
    responses(
        (status = 200, description = "An OpAMP ServerToAgent message", content_type = "application/x-protobuf", body = Vec<u8>),
        (status = 400, description = "Not an AgentToServer message", body = ErrorBody),
        (status = 403, description = "The instance uid belongs to another credential (then the body is a ServerToAgent, application/x-protobuf, with an error_response)", body = ErrorBody),
        (status = 413, description = "Larger than 1 MiB, or past a bound on attributes or statuses (then the body is a ServerToAgent, application/x-protobuf, with an error_response)", body = ErrorBody),
        (status = 415, description = "Not application/x-protobuf", body = ErrorBody),
        (status = 429, description = "The credential has as many agents as it may (the body is a ServerToAgent, application/x-protobuf, with an error_response)", body = ErrorBody),
    ),
)]
pub(crate) async fn http(
    viewer: Viewer,
    req: HttpRequest,
    state: web::Data<ApiState>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    super::require_media_type(&req, PROTOBUF)?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("an OpAMP message is at most {MAX_MESSAGE_BYTES} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_MESSAGE_BYTES) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "incomplete_body",
                format!("the body could not be read: {e}"),
            )
        })?;
        if body.len() + chunk.len() > MAX_MESSAGE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let message = AgentToServer::decode(body.freeze()).map_err(|e| {
        ApiError::bad_request(
            "invalid_protobuf",
            format!("not an OpAMP AgentToServer message: {e}"),
        )
    })?;
    let reply = state
        .fleet
        .handle(message, &viewer.principal.0, &base_url(&req, &state))
        .await?;
    let status = match reply.refusal {
        None | Some(Refusal::Malformed) => StatusCode::OK,
        Some(Refusal::NotYours) => StatusCode::FORBIDDEN,
        Some(Refusal::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
        Some(Refusal::TooManyAgents) => StatusCode::TOO_MANY_REQUESTS,
    };
    Ok(HttpResponse::build(status)
        .content_type(PROTOBUF)
        .body(reply.message.encode_to_vec()))
}

/// Whether a WebSocket upgrade may go ahead: a bearer credential always; the session
/// cookie only from a page of this origin (a page elsewhere cannot set `Origin`, and the
/// cookie would otherwise open the connection for it).
fn upgrade_allowed(req: &HttpRequest) -> Result<(), ApiError> {
    if req
        .headers()
        .contains_key(actix_web::http::header::AUTHORIZATION)
    {
        return Ok(());
    }
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    let origin = req
        .headers()
        .get(actix_web::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if origin.is_some_and(|o| o.eq_ignore_ascii_case(&own)) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "an OpAMP WebSocket signed in by cookie must come from this site (Origin); agents send a bearer token",
        ))
    }
}

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
/// needs a bearer credential, or the session cookie from this site's own pages (`Origin`);
/// the credential is checked again every second, and the connection closed (policy) once
/// it is revoked. A message refused by the fleet (another credential's agent, past a
/// bound) is answered with its `error_response`, then the connection closes (policy). A
/// frame the server cannot read closes the connection with a protocol error; a connection
/// that ends without the agent's disconnect message is recorded as a disconnect all the
/// same. The server pings every `fleet.websocket_ping_secs` and closes a connection silent
/// for three times that.
pub(crate) async fn websocket(
    viewer: Viewer,
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    upgrade_allowed(&req)?;
    let credential = viewer.principal.0;
    let bearer = crate::auth::bearer(&req)?;
    let open = state
        .opamp
        .connections
        .open(owner_of(&credential), state.opamp.limits)
        .map_err(|why| ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", why))?;
    let (response, mut session, frames) = actix_ws::handle(&req, body)?;
    let base = base_url(&req, &state);
    let fleet = state.fleet.clone();
    let state = state.into_inner();
    let mut frames = frames
        .max_frame_size(MAX_MESSAGE_BYTES + 16)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES + 16);
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
                    match crate::auth::authenticate(&state, &bearer).await {
                        Ok(_) => continue,
                        Err(e) if actix_web::ResponseError::status_code(&e).is_server_error() => continue,
                        Err(_) => {
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
                    match fleet.refresh_offer(uid, &credential, &assignments, &base).await {
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
                    let reply = match fleet.handle(message, &credential, &base).await {
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

/// Where offers point downloads: `server.public_url`, or the address the request came to.
fn base_url(req: &HttpRequest, state: &ApiState) -> String {
    match &state.public_url {
        Some(url) => url.clone(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AgentsParams {
    /// Only agents with these attributes (identifying or not): `key=value`, several
    /// separated by commas.
    attributes: Option<String>,
    /// Only agents that last reported themselves healthy (`true`) or not (`false`).
    healthy: Option<bool>,
    /// Only agents connected (`true`) or that said they disconnect (`false`).
    connected: Option<bool>,
    /// Only agents that reported this status for some package: `installed`,
    /// `install_pending`, `installing`, `install_failed`, `downloading`.
    package_status: Option<String>,
    /// Agents per page, 1 to 100 (default 50; out of range: clamped).
    per_page: Option<u32>,
    /// Page number, from 1.
    page: Option<u32>,
}

/// An agent's reported health.
#[derive(Serialize, ToSchema)]
pub(crate) struct HealthView {
    healthy: bool,
    status: String,
    last_error: String,
}

/// One package status an agent reported.
#[derive(Serialize, ToSchema)]
pub(crate) struct PackageStatusView {
    name: String,
    agent_has_version: String,
    /// Hex.
    agent_has_hash: String,
    server_offered_version: String,
    /// Hex.
    server_offered_hash: String,
    /// `installed`, `install_pending`, `installing`, `install_failed`, `downloading`.
    status: String,
    error_message: String,
    download_percent: Option<f64>,
}

/// An agent, as it last reported itself.
#[derive(Serialize, ToSchema)]
pub(crate) struct AgentView {
    /// The instance uid, 32 hex digits.
    instance_uid: String,
    sequence_num: u64,
    /// OpAMP `AgentCapabilities` bits.
    capabilities: u64,
    identifying_attributes: BTreeMap<String, String>,
    non_identifying_attributes: BTreeMap<String, String>,
    health: Option<HealthView>,
    package_statuses: Vec<PackageStatusView>,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    /// `false` after the agent said it disconnects.
    connected: bool,
    disconnects: u64,
    disconnected_at: Option<DateTime<Utc>>,
    /// The `all_packages_hash` last offered (hex), once any set was offered.
    offered_hash: Option<String>,
    /// Why assignments that select the agent offer it nothing (no `host.arch`, no build
    /// for its platform).
    offer_note: Option<String>,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        Self {
            instance_uid: a.uid.to_string(),
            sequence_num: a.sequence_num,
            capabilities: a.capabilities,
            identifying_attributes: a.identifying.clone(),
            non_identifying_attributes: a.non_identifying.clone(),
            health: a.health.as_ref().map(|h| HealthView {
                healthy: h.healthy,
                status: h.status.clone(),
                last_error: h.last_error.clone(),
            }),
            package_statuses: a
                .package_statuses
                .iter()
                .map(|s| PackageStatusView {
                    name: s.name.clone(),
                    agent_has_version: s.agent_has_version.clone(),
                    agent_has_hash: s.agent_has_hash.clone(),
                    server_offered_version: s.server_offered_version.clone(),
                    server_offered_hash: s.server_offered_hash.clone(),
                    status: s.status.clone(),
                    error_message: s.error_message.clone(),
                    download_percent: s.download_percent,
                })
                .collect(),
            first_seen: a.first_seen,
            last_seen: a.last_seen,
            connected: a.connected,
            disconnects: a.disconnects,
            disconnected_at: a.disconnected_at,
            offered_hash: a.offered_hash.clone(),
            offer_note: a.offer_note.clone(),
        }
    }
}

/// List agents
///
/// Agents that spoke OpAMP to any replica, most recently seen first, optionally only those
/// with some attributes, health, connection or package status; the total is in
/// `X-Total-Count`. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "fleet",
    params(AgentsParams),
    responses(
        (status = 200, description = "One page of agents", body = Vec<AgentView>, headers(
            ("X-Total-Count" = u64, description = "Agents on all pages"),
        )),
        (status = 400, description = "Invalid paging", body = ErrorBody),
    ),
)]
pub(crate) async fn list(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    params: web::Query<AgentsParams>,
) -> Result<HttpResponse, ApiError> {
    let page = PageRequest::new(params.page, params.per_page);
    let mut filter = AgentFilter {
        healthy: params.healthy,
        connected: params.connected,
        ..AgentFilter::default()
    };
    for pair in params.attributes.iter().flat_map(|a| a.split(',')) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            ValidationError::new("attributes", "each is key=value, separated by commas")
        })?;
        filter
            .attributes
            .push((key.trim().to_owned(), value.trim().to_owned()));
    }
    if let Some(status) = &params.package_status {
        const KNOWN: [&str; 5] = [
            "installed",
            "install_pending",
            "installing",
            "install_failed",
            "downloading",
        ];
        if !KNOWN.contains(&status.as_str()) {
            return Err(ValidationError::new(
                "package_status",
                format!("must be one of: {}", KNOWN.join(", ")),
            )
            .into());
        }
        filter.package_status = Some(status.clone());
    }
    let agents = state.fleet.agents(page, &filter).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("X-Total-Count", agents.total.to_string()))
        .json(agents.items.iter().map(AgentView::from).collect::<Vec<_>>()))
}

/// Forget an agent
///
/// Deletes what the registry knows of the agent and releases its binding to a credential:
/// its next message, under whichever credential sends it, registers it anew (the way to
/// move an agent to a new token). Audited. Needs the admin role.
#[utoipa::path(
    delete,
    path = "/api/v1/agents/{uid}",
    tag = "fleet",
    params(("uid" = String, Path, description = "Instance uid: 32 hex digits or a UUID")),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 400, description = "Not an instance uid", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub(crate) async fn forget(
    admin: Admin,
    state: web::Data<ApiState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uid = AgentUid::parse(&uid)?;
    state
        .fleet
        .forget(&uid, &admin.principal.0)
        .await
        .map_err(agent_not_found)?;
    Ok(HttpResponse::NoContent().finish())
}

fn agent_not_found(e: agentpkg_packagemgr::Error) -> ApiError {
    match e {
        agentpkg_packagemgr::Error::NotFound => ApiError::not_found("agent not found"),
        other => other.into(),
    }
}

/// Get an agent
///
/// Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{uid}",
    tag = "fleet",
    params(("uid" = String, Path, description = "Instance uid: 32 hex digits or a UUID")),
    responses(
        (status = 200, description = "The agent", body = AgentView),
        (status = 400, description = "Not an instance uid", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub(crate) async fn get(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uid = AgentUid::parse(&uid)?;
    let agent = state.fleet.agent(&uid).await.map_err(agent_not_found)?;
    Ok(HttpResponse::Ok().json(AgentView::from(&agent)))
}
