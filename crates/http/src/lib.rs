//! What the REST API and the web interface — two faces of one registry — share about a
//! request, so that neither builds on the other's internals: the error every refusal of
//! `packagemgr` maps to once (status, stable code, message), where a request comes from
//! ([`RequestContext`]), who sends it (session tokens, [`TokenIssuer`]) and the CSRF
//! token of a cookie-signed session. Decisions are not here: they are the gate's, in
//! `packagemgr`.

mod context;
mod csrf;
pub mod error;
mod sessions;

pub use context::{RequestContext, TrustedProxies};
pub use csrf::{CSRF_HEADER, SESSION_COOKIE, csrf_matches, csrf_token};
pub use error::ApiError;
pub use sessions::{JwtSecret, Session, TokenIssuer};
