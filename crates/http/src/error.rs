//! The one HTTP error type: a status, a stable machine code and a human message, sent as
//! `{"error":{"code":"…","message":"…"}}`. A 500 says "internal error"; the detail goes
//! to the log only.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use agentpkg_model::{ErrorCode, ValidationError};
use agentpkg_packagemgr::Error as MgrError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Clone, thiserror::Error)]
#[error("{} {code}: {message}", code.status())]
pub struct ApiError {
    /// The code, and through it the status.
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<&'static str>,
    /// Sent as `Retry-After`; a 503 without one says 5 seconds.
    pub retry_after_secs: Option<u64>,
}

/// With its status first: logs (and the soak's filter of a client's 4xx) read it there.
impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.code.status())
            .field("code", &self.code.as_str())
            .field("message", &self.message)
            .field("field", &self.field)
            .finish()
    }
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable machine-readable code; each has one HTTP status (docs/errors.md).
    #[schema(example = "invalid_field")]
    code: ErrorCode,
    /// What went wrong, for a person.
    message: &'a str,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    /// The status every response with this code has.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The same error, blaming one request field.
    pub fn on_field(self, field: &'static str) -> Self {
        Self {
            field: Some(field),
            ..self
        }
    }

    /// The same error, with a `Retry-After` of its own.
    pub fn retry_after(self, secs: u64) -> Self {
        Self {
            retry_after_secs: Some(secs),
            ..self
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("the package is larger than the limit of {limit} bytes"),
        )
    }

    /// The request body missed its deadline (see `deadlines`).
    pub fn body_timeout(why: impl Into<String>) -> Self {
        Self::new(ErrorCode::BodyTimeout, why)
    }

    /// A 500 that tells the client nothing about internals; `detail` goes to the log.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::new(ErrorCode::InvalidField, e.to_string()).on_field(e.field)
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
            ErrorCode::DatabaseUnavailable,
            "the database is unavailable or busy; try again shortly",
        )
    }

    fn storage_unavailable() -> Self {
        Self::new(
            ErrorCode::StorageUnavailable,
            "object storage is unavailable; try again later",
        )
    }
}

impl From<MgrError> for ApiError {
    fn from(e: MgrError) -> Self {
        match e {
            MgrError::Invalid(v) => v.into(),
            MgrError::NotFound(what) => Self::not_found(what.not_found()),
            MgrError::DuplicateField(field) => {
                Self::new(ErrorCode::DuplicateField, e.to_string()).on_field(field)
            }
            MgrError::MissingField(field) => {
                Self::new(ErrorCode::MissingField, e.to_string()).on_field(field)
            }
            MgrError::Conflict(m) => Self::new(ErrorCode::Conflict, m),
            MgrError::SameBytes { .. } => Self::new(ErrorCode::SameBytes, e.to_string()),
            MgrError::TooLarge { limit } => Self::too_large(limit),
            MgrError::ChecksumMismatch { .. } => {
                Self::new(ErrorCode::ChecksumMismatch, e.to_string())
            }
            MgrError::DirectUnsupported => {
                Self::new(ErrorCode::DirectUploadUnsupported, e.to_string())
            }
            MgrError::ResumableUnsupported => {
                Self::new(ErrorCode::ResumableUploadUnsupported, e.to_string())
            }
            MgrError::TooManySessions { .. } => {
                Self::new(ErrorCode::TooManySessions, e.to_string())
            }
            MgrError::TooManyGrants { .. } => Self::new(ErrorCode::TooManyGrants, e.to_string()),
            MgrError::OverQuota { .. } => Self::new(ErrorCode::UploadQuota, e.to_string()),
            MgrError::PastLength { .. } => Self::new(ErrorCode::PastUploadLength, e.to_string()),
            MgrError::OffsetMismatch { .. } => Self::new(ErrorCode::OffsetMismatch, e.to_string()),
            MgrError::UploadLocked => {
                Self::new(ErrorCode::UploadLocked, e.to_string()).retry_after(1)
            }
            // tus's own status for a checksum that does not match.
            MgrError::RequestChecksumMismatch => {
                Self::new(ErrorCode::RequestChecksumMismatch, e.to_string())
            }
            MgrError::RolloutConflict(m) => Self::new(ErrorCode::RolloutConflict, m),
            MgrError::UploadIncomplete(m) => Self::new(ErrorCode::UploadIncomplete, m),
            MgrError::SizeMismatch { .. } => Self::new(ErrorCode::SizeMismatch, e.to_string()),
            MgrError::SignatureRequired(m) => Self::new(ErrorCode::SignatureRequired, m),
            MgrError::SignatureInvalid(m) => Self::new(ErrorCode::SignatureInvalid, m),
            MgrError::SignatureMalformed(m) => {
                Self::new(ErrorCode::MalformedSignature, m).on_field("signature")
            }
            MgrError::InvalidKey(m) => Self::new(ErrorCode::InvalidKey, m).on_field("key"),
            MgrError::Body(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Self::body_timeout(io.to_string())
            }
            MgrError::Body(io) => Self::new(
                ErrorCode::IncompleteBody,
                format!("the upload body could not be read to its end: {io}"),
            ),
            MgrError::Revoked => Self::new(
                ErrorCode::TokenRevoked,
                "this credential is no longer valid (the token was revoked, or its user deleted or changed); log in again",
            ),
            MgrError::TokenExpired => Self::new(
                ErrorCode::TokenExpired,
                "the token has expired; log in again",
            ),
            MgrError::Forbidden(m) => Self::forbidden(m),
            MgrError::BadCredentials => Self::new(
                ErrorCode::InvalidCredentials,
                "invalid username or password",
            ),
            MgrError::Throttled { retry_after_secs } => Self::new(
                ErrorCode::TooManyAttempts,
                format!("too many failed logins; try again in {retry_after_secs} seconds"),
            )
            .retry_after(retry_after_secs),
            MgrError::TooManyUploads => Self::new(
                ErrorCode::TooManyUploads,
                "too many uploads are in progress; try again shortly",
            ),
            MgrError::Busy => Self::new(
                ErrorCode::Busy,
                "too many logins are being checked at once; try again in a second",
            )
            .retry_after(1),
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
        let status = self.status();
        let mut response = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        match self.retry_after_secs {
            Some(secs) => {
                response.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            None if status == StatusCode::SERVICE_UNAVAILABLE => {
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
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.error_response_builder().json(self.body())
    }
}
