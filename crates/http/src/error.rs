//! The one HTTP error type: a status, a stable machine code and a human message, sent as
//! `{"error":{"code":"…","message":"…"}}`. A 500 says "internal error"; the detail goes
//! to the log only.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use agentpkg_model::ValidationError;
use agentpkg_packagemgr::Error as MgrError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
    /// Sent as `Retry-After`; a 503 without one says 5 seconds.
    pub retry_after_secs: Option<u64>,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable machine-readable code: `invalid_field`, `missing_field`, `duplicate_field`,
    /// `unknown_field`, `invalid_json`, `invalid_query`, `invalid_path`,
    /// `invalid_multipart`, `incomplete_body`, `missing_token`, `invalid_token`,
    /// `token_expired`, `token_revoked`, `invalid_credentials`, `too_many_attempts`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `body_timeout`, `too_many_uploads`, `unsupported_media_type`, `checksum_mismatch`,
    /// `range_not_satisfiable`, `offset_mismatch`, `upload_locked`, `too_many_sessions`,
    /// `too_many_grants`, `upload_quota`, `same_bytes`, `rollout_conflict`,
    /// `past_upload_length`, `request_checksum_mismatch`, `unsupported_tus_version`, `cross_origin`,
    /// `too_many_connections`, `busy`, `database_unavailable`, `storage_unavailable`, `internal`.
    #[schema(example = "invalid_field")]
    code: &'a str,
    /// What went wrong, for a person.
    message: &'a str,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the package is larger than the limit of {limit} bytes"),
        )
    }

    /// The request body missed its deadline (see `deadlines`).
    pub fn body_timeout(why: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", why)
    }

    /// A 500 that tells the client nothing about internals; `detail` goes to the log.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            message: e.to_string(),
            field: Some(e.field),
            retry_after_secs: None,
        }
    }
}

impl ApiError {
    /// The answer to `e`, without the log line that [`From`] writes for an unavailable
    /// backend: for callers whose failures are logged elsewhere, once.
    pub fn quiet(e: MgrError) -> Self {
        match e {
            MgrError::DatabaseUnavailable(_) => Self::database_unavailable(),
            MgrError::StorageUnavailable(_) => Self::storage_unavailable(),
            other => other.into(),
        }
    }

    /// Retryable (as every 503, with `Retry-After`): an outage, or a statement that waited
    /// too long behind a lock.
    fn database_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable or busy; try again shortly",
        )
    }

    fn storage_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "object storage is unavailable; try again later",
        )
    }
}

impl From<MgrError> for ApiError {
    fn from(e: MgrError) -> Self {
        match e {
            MgrError::Invalid(v) => v.into(),
            MgrError::NotFound => Self::not_found("package not found"),
            MgrError::UserNotFound => Self::not_found("user not found"),
            MgrError::TeamNotFound => Self::not_found("team not found"),
            MgrError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            MgrError::SameBytes { .. } => {
                Self::new(StatusCode::CONFLICT, "same_bytes", e.to_string())
            }
            MgrError::TooLarge { limit } => Self::too_large(limit),
            MgrError::ChecksumMismatch { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "checksum_mismatch",
                e.to_string(),
            ),
            MgrError::DirectUnsupported => Self::new(
                StatusCode::NOT_IMPLEMENTED,
                "direct_upload_unsupported",
                e.to_string(),
            ),
            MgrError::UploadNotFound => Self::not_found(e.to_string()),
            MgrError::ResumableUnsupported => Self::new(
                StatusCode::NOT_IMPLEMENTED,
                "resumable_upload_unsupported",
                e.to_string(),
            ),
            MgrError::TooManySessions { .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_sessions",
                e.to_string(),
            ),
            MgrError::TooManyGrants { .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_grants",
                e.to_string(),
            ),
            MgrError::OverQuota { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "upload_quota", e.to_string())
            }
            MgrError::PastLength { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "past_upload_length",
                e.to_string(),
            ),
            MgrError::OffsetMismatch { .. } => {
                Self::new(StatusCode::CONFLICT, "offset_mismatch", e.to_string())
            }
            MgrError::UploadLocked => Self {
                retry_after_secs: Some(1),
                ..Self::new(StatusCode::LOCKED, "upload_locked", e.to_string())
            },
            // tus's own status for a checksum that does not match.
            MgrError::RequestChecksumMismatch => Self::new(
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                "request_checksum_mismatch",
                e.to_string(),
            ),
            MgrError::RolloutConflict(m) => Self::new(StatusCode::CONFLICT, "rollout_conflict", m),
            MgrError::UploadIncomplete(m) => {
                Self::new(StatusCode::CONFLICT, "upload_incomplete", m)
            }
            MgrError::SizeMismatch { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "size_mismatch",
                e.to_string(),
            ),
            MgrError::SignatureRequired(m) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "signature_required", m)
            }
            MgrError::SignatureInvalid(m) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "signature_invalid", m)
            }
            MgrError::SignatureMalformed(m) => Self {
                field: Some("signature"),
                ..Self::bad_request("malformed_signature", m)
            },
            MgrError::NoSignature => Self::not_found("the package has no signature"),
            MgrError::KeyNotFound => Self::not_found("signing key not found"),
            MgrError::IdentityNotFound => Self::not_found("sigstore identity not found"),
            MgrError::InvalidKey(m) => Self {
                field: Some("key"),
                ..Self::bad_request("invalid_key", m)
            },
            MgrError::Body(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Self::body_timeout(io.to_string())
            }
            MgrError::Body(io) => Self::bad_request(
                "incomplete_body",
                format!("the upload body could not be read to its end: {io}"),
            ),
            MgrError::Revoked => Self::unauthorized(
                "token_revoked",
                "this token is no longer valid (revoked, or its user changed); sign in again",
            ),
            MgrError::TokenExpired => Self::unauthorized("token_expired", "the token has expired"),
            MgrError::TokenNotFound => Self::not_found("token not found"),
            MgrError::Forbidden(m) => Self::forbidden(m),
            MgrError::BadCredentials => {
                Self::unauthorized("invalid_credentials", "invalid username or password")
            }
            MgrError::Throttled { retry_after_secs } => Self {
                retry_after_secs: Some(retry_after_secs),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    format!("too many failed logins; try again in {retry_after_secs} seconds"),
                )
            },
            MgrError::TooManyUploads => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_uploads",
                "too many uploads are in progress; try again shortly",
            ),
            MgrError::Busy => Self {
                retry_after_secs: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many logins are being checked at once; try again in a second",
                )
            },
            MgrError::DatabaseUnavailable(source) => {
                tracing::error!(error = %source, "database unavailable");
                Self::database_unavailable()
            }
            MgrError::StorageUnavailable(source) => {
                tracing::error!(error = %source, "object storage unavailable");
                Self::storage_unavailable()
            }
            MgrError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl ApiError {
    fn error_response_builder(&self) -> actix_web::HttpResponseBuilder {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        match self.retry_after_secs {
            Some(secs) => {
                response.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            None if self.status == StatusCode::SERVICE_UNAVAILABLE => {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
            None => {}
        }
        response
    }

    fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field,
            },
        })
        .unwrap_or_default()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        self.error_response_builder().json(self.body())
    }
}
