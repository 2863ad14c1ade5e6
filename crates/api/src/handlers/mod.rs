pub(crate) mod assignments;
pub(crate) mod audit;
pub(crate) mod direct;
pub(crate) mod download;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod login;
pub(crate) mod opamp;
pub(crate) mod packages;
pub(crate) mod stats;
pub(crate) mod teams;
pub(crate) mod tokens;
pub(crate) mod tus;
pub(crate) mod users;

use crate::ApiError;

pub(crate) async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found("no such route"))
}
