pub(crate) mod agents;
pub(crate) mod assignments;
pub(crate) mod audit;
pub(crate) mod direct;
pub(crate) mod download;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod login;
pub(crate) mod mirrors;
pub(crate) mod opamp;
pub(crate) mod packages;
pub(crate) mod rollouts;
pub(crate) mod sigstore;
pub(crate) mod stats;
pub(crate) mod teams;
pub(crate) mod tokens;
pub(crate) mod tus;
pub(crate) mod users;

use crate::ApiError;
use agentpkg_model::ErrorCode;

pub(crate) async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found("no such route"))
}

/// Refuses (415 `unsupported_media_type`) a request whose body is not of media type
/// `expected` (parameters such as `charset` aside; media types ignore case).
pub(crate) fn require_media_type(
    req: &actix_web::HttpRequest,
    expected: &str,
) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if given.is_some_and(|g| g.eq_ignore_ascii_case(expected)) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("the body must be sent as {expected}"),
        ))
    }
}
