use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentpkg_model::{Password, Role, Username};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{Admin, ApiError, ApiState};

#[derive(Deserialize)]
pub(crate) struct NewUser {
    username: String,
    password: SecretString,
    role: String,
}

/// `POST /api/v1/users` (admin).
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

/// `GET /api/v1/users` (admin).
pub(crate) async fn list(
    _admin: Admin,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.accounts.list_users().await?))
}

/// `DELETE /api/v1/users/{id}` (admin). An admin cannot delete their own account, so the
/// last admin cannot lock everyone out by accident.
pub(crate) async fn delete(
    admin: Admin,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if id == admin.principal.user_id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "you cannot delete your own account",
        ));
    }
    state.accounts.delete_user(id).await?;
    Ok(HttpResponse::NoContent().finish())
}
