//! Signing in and out.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_http::RequestContext;

use crate::WebState;
use askama::Template;
use serde::Deserialize;

use super::{CsrfForm, Layout, secured};
use crate::error::WebError;
use crate::session::{
    SignedIn, cleared_cookie, login_csrf, login_csrf_matches, safe_next, session_cookie,
};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    /// The form's CSRF token (its twin is in the `LOGIN_CSRF_COOKIE`).
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct NextParam {
    next: Option<String>,
}

pub async fn login_form(
    req: HttpRequest,
    query: web::Query<NextParam>,
) -> Result<HttpResponse, WebError> {
    let (csrf, cookie) = login_csrf(&req);
    let html = LoginPage {
        layout: Layout::anonymous("Sign in"),
        csrf,
        next: safe_next(query.next.as_deref()),
        username: String::new(),
        error: None,
    }
    .render()?;
    let mut builder = HttpResponse::Ok();
    builder.cookie(cookie);
    Ok(secured(builder, html))
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
    #[serde(default)]
    csrf: String,
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<WebState>,
    ctx: RequestContext,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, WebError> {
    let LoginForm {
        username,
        password,
        next,
        csrf,
    } = form.into_inner();
    let next = safe_next(next.as_deref());
    // Every answer but the sign-in itself shows the form again, with a fresh token.
    let refused = |status: StatusCode, error: String| -> Result<HttpResponse, WebError> {
        let (csrf, cookie) = login_csrf(&req);
        let html = LoginPage {
            layout: Layout::anonymous("Sign in"),
            csrf,
            next: next.clone(),
            username: username.clone(),
            error: Some(error),
        }
        .render()?;
        let mut builder = HttpResponse::build(status);
        builder.cookie(cookie);
        Ok(secured(builder, html))
    };
    if !login_csrf_matches(&req, &csrf) {
        return refused(
            StatusCode::FORBIDDEN,
            "This sign-in form has expired or came from another site; sign in here.".into(),
        );
    }
    let signing_in = state.accounts.sign_in(
        &username,
        password.into(),
        ctx.address,
        ctx.request_id.clone(),
    );
    let signed_in = match signing_in.await {
        Ok(s) => s,
        Err(agentpkg_packagemgr::Error::BadCredentials) => {
            return refused(
                StatusCode::UNAUTHORIZED,
                "Wrong username or password.".into(),
            );
        }
        Err(e) => {
            let e = agentpkg_http::ApiError::from(e);
            return refused(e.status(), e.message);
        }
    };
    let (token, _) = state
        .sessions
        .issue(&signed_in.user, signed_in.credentials_version)?;
    tracing::info!(username = %signed_in.user.username, "signed in to the web interface");
    let mut used = login_csrf(&req).1;
    used.make_removal();
    Ok(HttpResponse::SeeOther()
        .cookie(session_cookie(&req, token))
        .cookie(used)
        .insert_header((header::LOCATION, next))
        .finish())
}

/// Signs out: the session ends on the server (its token is refused everywhere from now
/// on), then the cookie goes.
pub async fn logout(
    req: HttpRequest,
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let session = state.sessions.verify(&who.token)?;
    state
        .accounts
        .gate(&ctx.caller(&who.credential))
        .sign_out(&who.token, session.expires_at)
        .await?;
    Ok(HttpResponse::SeeOther()
        .cookie(cleared_cookie(&req))
        .insert_header((header::LOCATION, "/login"))
        .finish())
}
