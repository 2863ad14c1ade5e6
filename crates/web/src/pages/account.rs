//! Signing in and out.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_api::{ApiState, RequestContext};
use askama::Template;
use serde::Deserialize;

use super::{CsrfForm, Layout, page, secured};
use crate::error::WebError;
use crate::session::{SignedIn, cleared_cookie, safe_next, session_cookie};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct NextParam {
    next: Option<String>,
}

pub async fn login_form(query: web::Query<NextParam>) -> Result<HttpResponse, WebError> {
    page(&LoginPage {
        layout: Layout::anonymous("Sign in"),
        next: safe_next(query.next.as_deref()),
        username: String::new(),
        error: None,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, WebError> {
    let LoginForm {
        username,
        password,
        next,
    } = form.into_inner();
    let next = safe_next(next.as_deref());
    let refused = |status: StatusCode, error: String| -> Result<HttpResponse, WebError> {
        let html = LoginPage {
            layout: Layout::anonymous("Sign in"),
            next: next.clone(),
            username: username.clone(),
            error: Some(error),
        }
        .render()?;
        Ok(secured(HttpResponse::build(status), html))
    };
    let signed_in = match state
        .accounts
        .login_from(&username, password.into(), ctx.address)
        .await
    {
        Ok(s) => s,
        Err(agentpkg_packagemgr::Error::BadCredentials) => {
            let mut event = ctx.event(agentpkg_model::AuditAction::LoginFailed, None);
            event.actor = Some(username.chars().take(64).collect());
            state.audit.record(event).await;
            return refused(
                StatusCode::UNAUTHORIZED,
                "Wrong username or password.".into(),
            );
        }
        Err(e) => {
            let e = agentpkg_api::ApiError::from(e);
            return refused(e.status, e.message);
        }
    };
    let (token, _) = state
        .tokens
        .issue(&signed_in.user, signed_in.credentials_version)?;
    tracing::info!(username = %signed_in.user.username, "signed in to the web interface");
    Ok(HttpResponse::SeeOther()
        .cookie(session_cookie(&req, token))
        .insert_header((header::LOCATION, next))
        .finish())
}

pub async fn logout(
    req: HttpRequest,
    who: SignedIn,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    Ok(HttpResponse::SeeOther()
        .cookie(cleared_cookie(&req))
        .insert_header((header::LOCATION, "/login"))
        .finish())
}
