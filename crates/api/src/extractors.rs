//! How the API answers a JSON body, a query string or a path it cannot read: a `400` with
//! its stable code (or `408` for a body that missed its deadline).

use actix_web::web;
use agentpkg_model::ErrorCode;

use crate::ApiError;

pub(crate) fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(64 * 1024)
        .error_handler(|err, _| {
            if let actix_web::error::JsonPayloadError::Payload(p) = &err
                && let Some(why) = crate::deadlines::timed_out(p)
            {
                return ApiError::body_timeout(why).into();
            }
            ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON body: {err}")).into()
        })
}

pub(crate) fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| {
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("invalid query string: {err}"),
        )
        .into()
    })
}

pub(crate) fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _| {
        ApiError::new(
            ErrorCode::InvalidPath,
            format!("invalid path parameter: {err}"),
        )
        .into()
    })
}

/// A JSON body that may be left out (then `T::default()`); one that is sent must parse,
/// or the request is refused as any bad JSON body is.
pub(crate) fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON body: {e}")))
}
