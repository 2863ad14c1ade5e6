//! What a page says when it cannot be shown: a page in words, with the status code, never
//! a stack trace; or, for a visitor not signed in, the sign-in page.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

use crate::pages::{Layout, secured};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Not signed in (or the session ended): sign in, then back to this path.
    #[error("sign in first")]
    SignIn(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A refusal from the registry, with its status and words.
    #[error("{1}")]
    Refused(StatusCode, String),
    #[error("internal error")]
    Internal(String),
}

impl From<agentpkg_packagemgr::Error> for WebError {
    fn from(e: agentpkg_packagemgr::Error) -> Self {
        agentpkg_http::ApiError::from(e).into()
    }
}

impl From<agentpkg_http::ApiError> for WebError {
    fn from(e: agentpkg_http::ApiError) -> Self {
        match e.status() {
            StatusCode::NOT_FOUND => WebError::NotFound(e.message),
            StatusCode::FORBIDDEN => WebError::Forbidden(e.message),
            s if s.is_server_error() => {
                // The API error already logged the detail of an internal error.
                WebError::Refused(s, e.message)
            }
            s => WebError::Refused(s, e.message),
        }
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        WebError::Internal(format!("template: {e}"))
    }
}

impl From<agentpkg_model::ValidationError> for WebError {
    fn from(e: agentpkg_model::ValidationError) -> Self {
        WebError::Refused(
            StatusCode::BAD_REQUEST,
            format!("{}: {}", e.field, e.message),
        )
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub status: u16,
    pub heading: String,
    pub message: String,
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebError::SignIn(_) => StatusCode::SEE_OTHER,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Refused(s, _) => *s,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let WebError::SignIn(next) = self {
            let to = format!(
                "/login?{}",
                serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default()
            );
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, to))
                .finish();
        }
        if let WebError::Internal(detail) = self {
            tracing::error!(%detail, "a page failed");
        }
        let status = self.status_code();
        let heading = match self {
            WebError::NotFound(_) => "Not found".to_owned(),
            WebError::Forbidden(_) => "Not allowed".to_owned(),
            _ => status.canonical_reason().unwrap_or("Error").to_owned(),
        };
        let message = match self {
            WebError::Internal(_) => {
                "Something went wrong on the server; it has been logged. Try again.".to_owned()
            }
            other => other.to_string(),
        };
        let page = ErrorPage {
            layout: Layout::anonymous(&heading),
            status: status.as_u16(),
            heading,
            message,
        };
        secured(
            HttpResponse::build(status),
            page.render().unwrap_or_default(),
        )
    }
}
