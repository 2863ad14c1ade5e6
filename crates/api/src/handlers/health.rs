use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::{ApiError, ApiState};

/// The process is up.
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The database and object storage both answer.
pub(crate) async fn readyz(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    state.packages.ready().await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}
