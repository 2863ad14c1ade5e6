//! Bearer credentials and the role extractors. A bearer is either a session token (a JWT,
//! HS256 via jwt-simple, issued at login) or an API token (`apk_…`, made by a user for a
//! machine). Both are checked against the current state of their user (and token) through
//! [`Accounts`], which trusts what it read for at most a second: a deleted user, a changed
//! role or password, or a revoked token stops working on every replica within that.
//!
//! A handler that needs a publisher takes a [`Publisher`] parameter; the extractor answers
//! 401 for a missing, malformed, forged, expired or revoked credential and 403 for a role
//! too small.
//!
//! The web interface keeps the session token in an `HttpOnly` cookie ([`SESSION_COOKIE`]).
//! A request without an `Authorization` header may use that cookie: a read (`GET`, `HEAD`,
//! `OPTIONS`) as it is, anything else only with the session's CSRF token in
//! [`CSRF_HEADER`] (which a page of another site cannot know), else 403 `csrf_failed`.

use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use agentpkg_model::{Actor, ErrorCode, NameScope, Role};
use agentpkg_packagemgr::{Caller, Credential, Holder, TOKEN_PREFIX};
use chrono::{DateTime, Utc};
use futures_util::future::LocalBoxFuture;

use jwt_simple::prelude::Duration;

use crate::{
    ApiError, ApiState, CSRF_HEADER, RequestContext, SESSION_COOKIE, TokenIssuer, csrf_matches,
    csrf_token,
};

/// Download headers for OpAMP offers: `Authorization: Bearer <credential>` good for one
/// package only, for `ttl`.
pub struct DownloadTokens {
    issuer: TokenIssuer,
    ttl: Duration,
}

impl DownloadTokens {
    pub fn new(issuer: TokenIssuer, ttl: std::time::Duration) -> Self {
        Self {
            issuer,
            ttl: Duration::from_secs(ttl.as_secs().max(1)),
        }
    }
}

impl agentpkg_fleet::DownloadCredentials for DownloadTokens {
    fn headers(&self, package_id: i64, holder: Holder) -> Vec<(String, String)> {
        match self.issuer.issue_download(package_id, holder, self.ttl) {
            Ok(token) => vec![("Authorization".to_owned(), format!("Bearer {token}"))],
            Err(e) => {
                tracing::error!(error = %e, "no download credential could be made");
                Vec::new()
            }
        }
    }
}

/// Who may read a package's bytes: a viewer (within its token's names, as the gate
/// decides), or the holder of a download credential for exactly that package (what
/// OpAMP offers carry).
pub enum Reader {
    Viewer(Caller),
    File(i64),
}

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        let file = match (&state, bearer(req)) {
            (Some(state), Ok(bearer)) if state.tokens.says_download(&bearer) => {
                state.tokens.verify_download(&bearer)
            }
            _ => None,
        };
        if let (Some((id, holder)), Some(state)) = (file, state) {
            return Box::pin(async move {
                // Revoking the agent's token (or deleting its user) ends the downloads
                // offered to it, within the credential cache's freshness.
                if let Some(holder) = holder
                    && !state.accounts.holds(holder).await?
                {
                    return Err(ApiError::new(
                        ErrorCode::TokenRevoked,
                        "the credential this download was offered to is no longer valid",
                    ));
                }
                Ok(Reader::File(id))
            });
        }
        let viewer = Viewer::from_request(req, payload);
        Box::pin(async move { Ok(Reader::Viewer(viewer.await?.caller)) })
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal(pub Credential);

impl Principal {
    pub fn user_id(&self) -> i64 {
        self.0.user_id
    }

    /// The caller as an actor on packages (for ownership).
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.0.user_id,
            admin: self.0.role == Role::Admin,
            names: self.0.names.clone(),
        }
    }

    /// Which names the caller may see, for lists.
    pub fn names(&self) -> &NameScope {
        &self.0.names
    }
}

/// A role a route requires.
pub trait RequiredRole {
    const ROLE: Role;
}

pub struct ViewerRole;
pub struct PublisherRole;
pub struct AdminRole;

impl RequiredRole for ViewerRole {
    const ROLE: Role = Role::Viewer;
}
impl RequiredRole for PublisherRole {
    const ROLE: Role = Role::Publisher;
}
impl RequiredRole for AdminRole {
    const ROLE: Role = Role::Admin;
}

/// An authenticated caller holding at least role `R` (as the gate decides: a refused
/// request that would change something is recorded), calling from this request.
pub struct Authorized<R> {
    pub principal: Principal,
    pub caller: Caller,
    _role: PhantomData<R>,
}

pub type Viewer = Authorized<ViewerRole>;
pub type Publisher = Authorized<PublisherRole>;
pub type Admin = Authorized<AdminRole>;

impl<R: RequiredRole> FromRequest for Authorized<R> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        let bearer = bearer(req);
        let ctx = RequestContext::from_request(req, payload).into_inner();
        let changes = !matches!(
            *req.method(),
            actix_web::http::Method::GET
                | actix_web::http::Method::HEAD
                | actix_web::http::Method::OPTIONS
        );
        let what = format!(
            "{} {}",
            req.method(),
            req.match_pattern().unwrap_or_else(|| req.path().to_owned())
        );
        let early = req.extensions_mut().remove::<Authenticated>();
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("API state missing"))?;
            let credential = match early {
                Some(Authenticated(result)) => result?,
                None => authenticate(&state, &bearer?).await?,
            };
            let caller = ctx?.caller(&credential);
            state
                .accounts
                .gate(&caller)
                .require(R::ROLE, &what, changes)?;
            Ok(Authorized {
                principal: Principal(credential),
                caller,
                _role: PhantomData,
            })
        })
    }
}

/// A request's credential, checked before its handler's arguments are read.
struct Authenticated(Result<Credential, ApiError>);

/// Checks the request's credential (when it brings one) before anything else of it is
/// read, for [`Authorized`] to decide on.
///
/// NOTE: actix-web reads a handler's arguments concurrently and answers the first
/// failure: without this, a body that does not parse (quick) would be answered before a
/// missing role (a credential lookup), telling a caller without the role how to shape a
/// request, and leaving the refusal unrecorded.
pub async fn authenticate_first(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if let Some(state) = req.app_data::<web::Data<ApiState>>().cloned()
        && let Ok(bearer) = bearer(req.request())
        && (state.tokens.known_session(&bearer)
            || !(state.tokens.says_download(&bearer)
                && state.tokens.verify_download(&bearer).is_some()))
    {
        let result = authenticate(&state, &bearer).await;
        req.extensions_mut().insert(Authenticated(result));
    }
    next.call(req).await
}

/// The user of a session token (never an API token), unless it was signed out.
pub async fn session_credential(state: &ApiState, token: &str) -> Result<Credential, ApiError> {
    let session = state.tokens.verify(token)?;
    Ok(state
        .accounts
        .signed_in(token, session.user_id, session.version)
        .await?)
}

/// A credential checked once in full, checked again cheaply (an OpAMP WebSocket's, every
/// second): its token's or session's current state through the credential cache, the
/// session's expiry and sign-out, without verifying the token's signature again.
pub(crate) struct Recheck {
    holder: Holder,
    /// A session's token and expiry.
    session: Option<(String, DateTime<Utc>)>,
}

impl Recheck {
    /// For `credential`, just authenticated with `bearer`.
    pub(crate) fn new(
        state: &ApiState,
        credential: &Credential,
        bearer: &str,
    ) -> Result<Self, ApiError> {
        let session = if credential.token.is_some() {
            None
        } else {
            Some((bearer.to_owned(), state.tokens.verify(bearer)?.expires_at))
        };
        Ok(Self {
            holder: credential.holder(),
            session,
        })
    }

    /// Whether the credential still holds; an error when that cannot be told now.
    pub(crate) async fn holds(&self, state: &ApiState) -> Result<bool, agentpkg_packagemgr::Error> {
        if let Some((token, expires_at)) = &self.session
            && (*expires_at <= Utc::now() || state.accounts.session_ended(token).await?)
        {
            return Ok(false);
        }
        state.accounts.holds(self.holder).await
    }
}

/// Signs the session `token` out on every replica (a genuine one; anything else is
/// refused as a credential would be).
pub async fn end_session(state: &ApiState, caller: &Caller, token: &str) -> Result<(), ApiError> {
    let session = state.tokens.verify(token)?;
    Ok(state
        .accounts
        .gate(caller)
        .sign_out(token, session.expires_at)
        .await?)
}

/// The session cookie's token, when the request may use it (see the module's notes).
fn cookie_bearer(req: &HttpRequest) -> Option<Result<String, ApiError>> {
    let token = req.cookie(SESSION_COOKIE)?.value().to_owned();
    if token.is_empty() || token.starts_with(TOKEN_PREFIX) {
        return None;
    }
    let safe = matches!(
        *req.method(),
        actix_web::http::Method::GET
            | actix_web::http::Method::HEAD
            | actix_web::http::Method::OPTIONS
    );
    // NOTE: a WebSocket upgrade is a GET, but it opens a channel both ways, and a page of
    // any site may open one with our cookie; the browser's WebSocket API cannot send a
    // CSRF header, but always sends `Origin`, which a page cannot forge.
    if is_websocket_upgrade(req) {
        return Some(if same_origin(req) {
            Ok(token)
        } else {
            Err(ApiError::new(
                ErrorCode::CrossOrigin,
                "a WebSocket signed in by cookie must come from this site's own pages (Origin); agents send a bearer token",
            ))
        });
    }
    let given = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if safe || csrf_matches(&csrf_token(&token), given) {
        Some(Ok(token))
    } else {
        Some(Err(ApiError::new(
            ErrorCode::CsrfFailed,
            "a request signed in by cookie must carry the page's X-CSRF-Token header",
        )))
    }
}

/// Whether the request asks to become a WebSocket.
pub(crate) fn is_websocket_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether the request's `Origin` is this site (as the request reached it).
fn same_origin(req: &HttpRequest) -> bool {
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    req.headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.eq_ignore_ascii_case(&own))
}

/// The bearer credential of a request.
pub(crate) fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return cookie_bearer(req).unwrap_or_else(|| {
            Err(ApiError::new(
                ErrorCode::MissingToken,
                "not signed in: log in (POST /api/v1/auth/login, or `agentpkg login`) and send the token as Authorization: Bearer <token>",
            ))
        });
    };
    value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidToken,
                "the Authorization header must be 'Bearer <token>'",
            )
        })
}

pub(crate) async fn authenticate(state: &ApiState, bearer: &str) -> Result<Credential, ApiError> {
    if bearer.starts_with(TOKEN_PREFIX) {
        Ok(state.accounts.authenticate_token(bearer).await?)
    } else {
        session_credential(state, bearer).await
    }
}
