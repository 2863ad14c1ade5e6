//! Where a request comes from, for the audit log and login throttling: the client's
//! address (through trusted proxies only) and the request's id.

use std::future::{Ready, ready};
use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use agentpkg_packagemgr::{Caller, Credential};

use crate::ApiError;

/// The proxies whose `X-Forwarded-For` is believed. From any other peer the header is
/// ignored, so that a client cannot pick its own address.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpAddr>);

/// The client's address and the request's id.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub address: Option<IpAddr>,
    pub request_id: Option<String>,
}

impl RequestContext {
    /// `credential`, calling from this request: what the operations it calls decide on
    /// and record.
    pub fn caller(&self, credential: &Credential) -> Caller {
        Caller {
            credential: credential.clone(),
            address: self.address.map(|a| a.to_string()),
            request_id: self.request_id.clone(),
        }
    }
}

/// The client's address: the peer's, or — when the peer is a trusted proxy — the nearest
/// address in `X-Forwarded-For` that is not one.
pub fn client_address(req: &HttpRequest, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.0.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|a| !trusted.0.contains(a))
            .unwrap_or(peer),
    )
}

impl FromRequest for RequestContext {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let trusted = req
            .app_data::<web::Data<TrustedProxies>>()
            .map(|t| t.get_ref().clone())
            .unwrap_or_default();
        ready(Ok(RequestContext {
            address: client_address(req, &trusted),
            request_id: req
                .extensions()
                .get::<tracing_actix_web::RequestId>()
                .map(|id| id.to_string()),
        }))
    }
}
