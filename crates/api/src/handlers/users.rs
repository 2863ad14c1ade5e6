use actix_web::{HttpResponse, web};
use agentpkg_model::{Password, Role, User, Username};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{Admin, ApiError, ApiState};

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
    _admin: Admin,
    state: web::Data<ApiState>,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let username = Username::parse(&body.username)?;
    let password = Password::parse(body.password.expose_secret())?;
    let role: Role = body.role.parse()?;
    let user = state
        .accounts
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
    state
        .accounts
        .delete_user(admin.principal.user_id, id.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
