//! API tokens: created by a signed-in user for a machine, listed without their secrets,
//! revoked by their owner or an admin.

use actix_web::{HttpResponse, web};
use agentpkg_model::{ApiToken, NameScope, TokenScope};
use agentpkg_packagemgr::TokenRequest;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use crate::{ApiError, ApiState, Viewer};

/// A token to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    /// What the token is for, e.g. `ci-publish`.
    #[schema(example = "ci-publish")]
    name: String,
    /// At most the caller's role: `read` (viewer), `publish` (publisher) or `admin`.
    #[schema(value_type = TokenScope)]
    scope: String,
    /// Name patterns (`*` for any run of characters) the token is limited to; absent: every
    /// name.
    #[schema(example = json!(["otelcol*"]))]
    packages: Option<Vec<String>>,
    /// When the token stops working; absent: never.
    expires_at: Option<DateTime<Utc>>,
}

/// A token as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenView {
    id: i64,
    user_id: i64,
    name: String,
    scope: TokenScope,
    /// The name patterns the token is limited to; absent: every name.
    packages: Option<Vec<String>>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

impl From<ApiToken> for TokenView {
    fn from(t: ApiToken) -> Self {
        Self {
            id: t.id,
            user_id: t.user_id,
            name: t.name,
            scope: t.scope,
            packages: match t.packages {
                NameScope::All => None,
                NameScope::Matching(p) => Some(p.iter().map(|p| p.as_str().to_owned()).collect()),
            },
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// A new token and its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedToken {
    #[serde(flatten)]
    token: TokenView,
    /// The secret, `apk_` and 32 letters and digits: send it as `Authorization: Bearer …`.
    /// It is not stored and cannot be shown again.
    secret: String,
}

/// Create an API token
///
/// A credential for a machine (a pipeline, an agent), with a scope no larger than the
/// caller's role, optionally limited to package name patterns and an expiry. The secret is
/// in the answer, once. Needs a signed-in user (not another token).
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = NewToken,
    responses(
        (status = 201, description = "Created; the secret is shown this once", body = CreatedToken),
        (status = 400, description = "Invalid name, scope, pattern or expiry", body = ErrorBody),
    ),
)]
pub(crate) async fn create(
    caller: Viewer,
    state: web::Data<ApiState>,
    body: web::Json<NewToken>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let packages = match body.packages {
        None => NameScope::All,
        Some(patterns) => NameScope::matching(&patterns)?,
    };
    let request = TokenRequest {
        name: body.name,
        scope: body.scope.parse()?,
        packages,
        expires_at: body.expires_at,
    };
    let (token, secret) = state
        .accounts
        .gate(&caller.caller)
        .create_token(request)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/tokens/{}", token.id)))
        .json(CreatedToken {
            token: token.into(),
            secret: secret.expose_secret().to_owned(),
        }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// An admin's `true`: every user's tokens.
    #[serde(default)]
    all: bool,
}

/// List API tokens
///
/// The caller's own tokens (an admin's `?all=true`: everyone's), without their secrets.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    params(ListParams),
    responses(
        (status = 200, description = "Tokens", body = Vec<TokenView>),
        (status = 400, description = "Invalid query", body = ErrorBody),
    ),
)]
pub(crate) async fn list(
    caller: Viewer,
    state: web::Data<ApiState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let tokens = state
        .accounts
        .list_tokens(&caller.principal.0, params.all)
        .await?;
    let views: Vec<TokenView> = tokens.into_iter().map(TokenView::from).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Revoke an API token
///
/// The token stops working on every replica within a second. Its owner or an admin may
/// revoke it; to anyone else it does not exist.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = i64, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such token of yours", body = ErrorBody),
    ),
)]
pub(crate) async fn revoke(
    caller: Viewer,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state
        .accounts
        .gate(&caller.caller)
        .revoke_token(*id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
