use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{ApiError, ApiState};

#[derive(Serialize, ToSchema)]
pub(crate) struct Status {
    /// `ok` (healthz) or `ready` (readyz).
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness
///
/// The process is up. Also served at `/healthz`.
#[utoipa::path(
    get,
    path = "/api/v1/healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "Up", body = Status)),
)]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

/// Readiness
///
/// The database and object storage both answer. Also served at `/readyz`.
#[utoipa::path(
    get,
    path = "/api/v1/readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "The database or object storage does not answer", body = ErrorBody),
    ),
)]
pub(crate) async fn readyz(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    // NOTE: the manager logs a change of readiness once; a probe (or a flood of them)
    // must not write a line per request.
    state.packages.ready().await.map_err(ApiError::quiet)?;
    Ok(HttpResponse::Ok().json(Status { status: "ready" }))
}

/// Liveness (root)
///
/// As `/api/v1/healthz`, where probes usually look.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "Up", body = Status)),
)]
pub(crate) async fn healthz_root() -> HttpResponse {
    healthz().await
}

/// Readiness (root)
///
/// As `/api/v1/readyz`, where probes usually look.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "The database or object storage does not answer", body = ErrorBody),
    ),
)]
pub(crate) async fn readyz_root(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    readyz(state).await
}
