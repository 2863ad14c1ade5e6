use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{ApiError, ApiState};

#[derive(Deserialize)]
pub(crate) struct LoginRequest {
    username: String,
    password: SecretString,
}

#[derive(Serialize)]
struct LoginResponse {
    token: String,
    expires_at: DateTime<Utc>,
}

/// `POST /api/v1/auth/login`: a token for a username and password.
pub(crate) async fn login(
    state: web::Data<ApiState>,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let LoginRequest { username, password } = body.into_inner();
    let user = state.accounts.login(&username, password).await?;
    let (token, expires_at) = state.tokens.issue(&user)?;
    tracing::info!(username = %user.username, "login");
    Ok(HttpResponse::Ok().json(LoginResponse { token, expires_at }))
}
