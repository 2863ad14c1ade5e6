//! Who is signed in: the session token (the same JWT `POST /api/v1/auth/login` gives) in
//! an `HttpOnly`, `SameSite=Strict` cookie, and the CSRF token derived from it that every
//! state-changing request must carry.

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use agentpkg_http::{SESSION_COOKIE, csrf_token};

use crate::WebState;
use agentpkg_model::Role;
use agentpkg_packagemgr::Credential;

use crate::error::WebError;

/// A signed-in user, from the session cookie; without a valid one, the page answers with
/// a redirect to the sign-in page, back here after.
pub struct SignedIn {
    pub credential: Credential,
    /// The session token itself, to sign it out.
    pub(crate) token: String,
    /// The CSRF token of this session, for forms and the upload script.
    pub csrf: String,
}

impl SignedIn {
    /// The signed-in user as the gate sees a caller (for reads: changes are made with
    /// the request's address and id, `RequestContext::caller`).
    pub fn caller(&self) -> agentpkg_packagemgr::Caller {
        agentpkg_packagemgr::Caller::new(self.credential.clone())
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, given: &str) -> Result<(), WebError> {
        if agentpkg_http::csrf_matches(&self.csrf, given) {
            Ok(())
        } else {
            Err(WebError::Forbidden(
                "the form's security token is missing or stale: reload the page and try again"
                    .into(),
            ))
        }
    }

    pub fn is(&self, role: Role) -> bool {
        self.credential.role.includes(role)
    }

    /// Refuses a user without `role`.
    pub fn require(&self, role: Role) -> Result<(), WebError> {
        if self.is(role) {
            Ok(())
        } else {
            Err(WebError::Forbidden(format!(
                "this needs the {role} role; you have {}",
                self.credential.role
            )))
        }
    }
}

impl FromRequest for SignedIn {
    type Error = WebError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, WebError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<WebState>>().cloned();
        let token = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        let here = req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), ToString::to_string);
        Box::pin(async move {
            let state = state.ok_or_else(|| WebError::Internal("state missing".into()))?;
            let token = token.ok_or_else(|| WebError::SignIn(here.clone()))?;
            let credential = async {
                let session = state.sessions.verify(&token).ok()?;
                state
                    .accounts
                    .signed_in(&token, session.user_id, session.version)
                    .await
                    .ok()
            }
            .await
            .ok_or(WebError::SignIn(here))?;
            Ok(SignedIn {
                credential,
                csrf: csrf_token(&token),
                token,
            })
        })
    }
}

/// The session cookie: script-proof, same-site only, `Secure` over TLS.
pub fn session_cookie(req: &HttpRequest, token: String) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(req.connection_info().scheme() == "https")
        .finish()
}

/// The cookie holding the sign-in form's CSRF token. The form carries the same value, and
/// the sign-in is refused unless both match: a page of another site can neither read this
/// cookie nor set it, so it cannot sign a visitor in to an account of its choosing.
pub const LOGIN_CSRF_COOKIE: &str = "agentpkg_login_csrf";

/// A new sign-in form token, and the cookie that holds it.
pub fn login_csrf(req: &HttpRequest) -> (String, Cookie<'static>) {
    use rand::distr::{Alphanumeric, SampleString};
    let token = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let cookie = Cookie::build(LOGIN_CSRF_COOKIE, token.clone())
        .path("/login")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(req.connection_info().scheme() == "https")
        .finish();
    (token, cookie)
}

/// Whether a sign-in form's `token` is the one its cookie holds.
pub fn login_csrf_matches(req: &HttpRequest, token: &str) -> bool {
    req.cookie(LOGIN_CSRF_COOKIE)
        .is_some_and(|c| !token.is_empty() && agentpkg_http::csrf_matches(c.value(), token))
}

/// The cookie that removes the session cookie.
pub fn cleared_cookie(req: &HttpRequest) -> Cookie<'static> {
    let mut cookie = session_cookie(req, String::new());
    cookie.make_removal();
    cookie
}

/// Where to go after signing in: a path on this site only (never `//host` or a URL).
// NOTE: browsers drop tabs and newlines from a URL and read `\` as `/`, so `/\t/evil.example/`
// is `//evil.example/` to them: a path with any control character, space or backslash is
// refused whole rather than cleaned.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n
                    .chars()
                    .any(|c| c == '\\' || c.is_control() || c.is_whitespace()) =>
        {
            n.to_owned()
        }
        _ => "/packages".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/packages/x")), "/packages/x");
        assert_eq!(safe_next(Some("//evil.example/")), "/packages");
        assert_eq!(safe_next(Some("https://evil.example/")), "/packages");
        assert_eq!(safe_next(Some("/\\evil.example")), "/packages");
        // Browsers drop the tab and the newline: these are `//evil.example/` to them.
        assert_eq!(safe_next(Some("/\t/evil.example/")), "/packages");
        assert_eq!(safe_next(Some("/\n/evil.example/")), "/packages");
        assert_eq!(safe_next(Some("/ /evil.example/")), "/packages");
        assert_eq!(safe_next(Some("/\u{0}/evil.example/")), "/packages");
        assert_eq!(safe_next(None), "/packages");
    }
}
