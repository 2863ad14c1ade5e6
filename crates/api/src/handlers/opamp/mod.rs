//! OpAMP's transports: HTTP (`POST /v1/opamp`, here) and WebSocket (`GET /v1/opamp`,
//! [`websocket`]). The fleet's agents, as the API shows them, are in `handlers::agents`.

mod websocket;

pub(crate) use websocket::websocket;
pub use websocket::{ConnectionLimits, Connections};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_fleet::Refusal;
use agentpkg_fleet::proto::AgentToServer;
use agentpkg_model::ErrorCode;
use futures_util::StreamExt;
use prost::Message;

use crate::error::ErrorBody;
use crate::{ApiError, ApiState, RequestContext, Viewer};

const PROTOBUF: &str = "application/x-protobuf";

/// OpAMP over HTTP
///
/// One `AgentToServer` message (protobuf, at most `fleet.max_message_bytes`, 1 MiB by
/// default) in, one `ServerToAgent` out. The
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
        (status = 413, description = "Larger than fleet.max_message_bytes (1 MiB by default), or past a bound on attributes or statuses (then the body is a ServerToAgent, application/x-protobuf, with an error_response)", body = ErrorBody),
        (status = 415, description = "Not application/x-protobuf", body = ErrorBody),
        (status = 429, description = "The credential has as many agents as it may (the body is a ServerToAgent, application/x-protobuf, with an error_response)", body = ErrorBody),
    ),
)]
pub(crate) async fn http(
    viewer: Viewer,
    ctx: RequestContext,
    req: HttpRequest,
    state: web::Data<ApiState>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    super::require_media_type(&req, PROTOBUF)?;
    let max = state.opamp.max_message_bytes;
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("an OpAMP message is at most {max} bytes (fleet.max_message_bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::IncompleteBody,
                format!("the body could not be read: {e}"),
            )
        })?;
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let message = AgentToServer::decode(body.freeze()).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidProtobuf,
            format!("not an OpAMP AgentToServer message: {e}"),
        )
    })?;
    let reply = state
        .fleet
        .handle(
            message,
            &ctx.caller(&viewer.principal.0),
            &base_url(&req, &state),
        )
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
