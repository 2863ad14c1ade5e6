use actix_web::{HttpResponse, web};
use agentpkg_model::{Password, Role, User, Username};
use agentpkg_packagemgr::Caller;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{Admin, ApiError, ApiState, Viewer};

/// A new account.
#[derive(Deserialize, ToSchema)]
pub(crate) struct NewUser {
    /// 1 to 64 characters of lowercase letters, digits, '.', '_' or '-', starting with a
    /// letter or digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", example = "ci-bot")]
    username: String,
    /// At least 12 characters.
    #[schema(value_type = String, format = Password, min_length = 12)]
    password: SecretString,
    #[schema(value_type = Role)]
    role: String,
}

/// Create a user
///
/// Needs the admin role.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = User, headers(
            ("Location" = String, description = "The new user's URL"),
        )),
        (status = 400, description = "Invalid username, password or role", body = ErrorBody),
        (status = 409, description = "The username is taken", body = ErrorBody),
    ),
)]
pub(crate) async fn create(
    admin: Admin,
    state: web::Data<ApiState>,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let username = Username::parse(&body.username)?;
    let password = Password::parse(body.password.expose_secret())?;
    let role: Role = body.role.parse()?;
    let user = state
        .accounts
        .gate(&admin.caller)
        .create_user(&username, &password, role)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/users/{}", user.id)))
        .json(user))
}

/// List users
///
/// Needs the admin role.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    responses((status = 200, description = "Every account", body = Vec<User>)),
)]
pub(crate) async fn list(
    _admin: Admin,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.accounts.list_users().await?))
}

/// Delete a user
///
/// An admin cannot delete their own account, so the last admin cannot lock everyone out
/// by accident. Tokens already issued to the user stay valid until they expire. Needs the
/// admin role.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    tag = "users",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "That is your own account", body = ErrorBody),
    ),
)]
pub(crate) async fn delete(
    admin: Admin,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.accounts.gate(&admin.caller).delete_user(*id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A change to a user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserPatch {
    #[schema(value_type = Role)]
    role: String,
}

/// Change a user's role
///
/// Every session of the user ends at once (on every replica within a second); their API
/// tokens act with at most the new role. Nobody changes their own role. Needs the admin
/// role.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{id}",
    tag = "users",
    params(("id" = i64, Path, description = "User id")),
    request_body = UserPatch,
    responses(
        (status = 200, description = "The user", body = User),
        (status = 400, description = "Invalid role or id", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "That is your own account", body = ErrorBody),
    ),
)]
pub(crate) async fn patch(
    admin: Admin,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
    body: web::Json<UserPatch>,
) -> Result<HttpResponse, ApiError> {
    let role: Role = body.role.parse()?;
    let user = state
        .accounts
        .gate(&admin.caller)
        .change_role(*id, role)
        .await?;
    Ok(HttpResponse::Ok().json(user))
}

/// A new password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordChange {
    /// Required to change your own password.
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<SecretString>,
    /// At least 12 characters.
    #[schema(value_type = String, format = Password, min_length = 12)]
    new_password: SecretString,
}

async fn set_password(
    caller: &Caller,
    state: &ApiState,
    id: i64,
    body: PasswordChange,
) -> Result<HttpResponse, ApiError> {
    let new = Password::parse(body.new_password.expose_secret())?;
    state
        .accounts
        .gate(caller)
        .change_password(id, body.current_password, &new)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Change your password
///
/// The current password is required. Every session of yours ends (sign in again); your
/// API tokens stay.
#[utoipa::path(
    put,
    path = "/api/v1/users/me/password",
    tag = "users",
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Missing or wrong current password, or a weak new one", body = ErrorBody),
    ),
)]
pub(crate) async fn change_own_password(
    caller: Viewer,
    state: web::Data<ApiState>,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let id = caller.caller.credential.user_id;
    set_password(&caller.caller, &state, id, body.into_inner()).await
}

/// Reset a user's password
///
/// Every session of the user ends. Needs the admin role.
#[utoipa::path(
    put,
    path = "/api/v1/users/{id}/password",
    tag = "users",
    params(("id" = i64, Path, description = "User id")),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "A weak new password, or an invalid id", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
)]
pub(crate) async fn reset_password(
    admin: Admin,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    set_password(&admin.caller, &state, *id, body.into_inner()).await
}
