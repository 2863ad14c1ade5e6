use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_model::ErrorCode;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{ApiError, ApiState, RequestContext};

#[derive(Deserialize, ToSchema)]
pub(crate) struct LoginRequest {
    #[schema(example = "admin")]
    username: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct LoginResponse {
    /// A bearer token for the `Authorization` header.
    token: String,
    expires_at: DateTime<Utc>,
}

/// Log in
///
/// A bearer token for a username and password.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A token", body = LoginResponse),
        (status = 400, description = "Invalid JSON body", body = ErrorBody),
        (status = 401, description = "Invalid username or password", body = ErrorBody),
        (status = 429, description = "Too many failed logins from this address (for this \
            username); `Retry-After` says when to try again", body = ErrorBody),
        (status = 503, description = "Too many logins are being checked at once (`busy`, \
            `Retry-After: 1`), or the database is unavailable", body = ErrorBody),
    ),
)]
pub(crate) async fn login(
    state: web::Data<ApiState>,
    ctx: RequestContext,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let LoginRequest { username, password } = body.into_inner();
    let signed_in = state
        .accounts
        .sign_in(&username, password, ctx.address, ctx.request_id.clone())
        .await?;
    let (token, expires_at) = state
        .tokens
        .issue(&signed_in.user, signed_in.credentials_version)?;
    tracing::info!(username = %signed_in.user.username, "login");
    Ok(HttpResponse::Ok().json(LoginResponse { token, expires_at }))
}

/// Who a credential is.
#[derive(Serialize, ToSchema)]
pub(crate) struct MeView {
    username: String,
    /// What the credential may do: the user's role, or for a token the lesser of its scope
    /// and its owner's role.
    role: agentpkg_model::Role,
    /// The API token's name, when the credential is one.
    token: Option<String>,
}

/// Who am I
///
/// The signed-in user (or the API token's owner, with the token's name) and what the
/// credential may do. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    responses(
        (status = 200, description = "The credential's user and role", body = MeView),
        (status = 401, description = "No valid credential", body = ErrorBody),
    ),
)]
pub(crate) async fn me(viewer: crate::Viewer) -> HttpResponse {
    let credential = &viewer.principal.0;
    HttpResponse::Ok().json(MeView {
        username: credential.username.clone(),
        role: credential.role,
        token: credential.token.as_ref().map(|(_, name)| name.clone()),
    })
}

/// Log out
///
/// Ends the session whose token is the bearer (or the session cookie, with its CSRF
/// token), on every replica within `auth.credential_freshness_ms`: from then on the token
/// is refused, though it has not expired. An API token is revoked with
/// `DELETE /api/v1/tokens/{id}` instead. Needs the viewer role.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    responses(
        (status = 204, description = "Signed out"),
        (status = 400, description = "The credential is an API token", body = ErrorBody),
        (status = 401, description = "No valid credential", body = ErrorBody),
    ),
)]
pub(crate) async fn logout(
    viewer: crate::Viewer,
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    if viewer.principal.0.token.is_some() {
        return Err(ApiError::new(
            ErrorCode::NotASession,
            "this is an API token: revoke it with DELETE /api/v1/tokens/{id}",
        ));
    }
    crate::auth::end_session(&state, &viewer.caller, &crate::auth::bearer(&req)?).await?;
    Ok(HttpResponse::NoContent().finish())
}
