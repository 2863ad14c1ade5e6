//! Users (admin).

use actix_web::{HttpResponse, web};
use agentpkg_http::RequestContext;

use crate::WebState;
use agentpkg_model::Role;
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use super::{CsrfForm, DoneParam, Layout, notice, page, secured, see_other};
use crate::error::WebError;
use crate::format;
use crate::session::SignedIn;

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<(i64, String, String, String, String, bool)>,
    notice: Option<String>,
    error: Option<String>,
}

async fn users_page(
    who: &SignedIn,
    state: &WebState,
    notice_of: Option<&str>,
    error: Option<String>,
) -> Result<UsersPage, WebError> {
    let now = Utc::now();
    let users = state
        .accounts
        .list_users()
        .await?
        .into_iter()
        .map(|u| {
            (
                u.id,
                u.username.to_string(),
                u.role.to_string(),
                format::ago(u.created_at, now),
                format::exact(u.created_at),
                u.id == who.credential.user_id,
            )
        })
        .collect();
    Ok(UsersPage {
        layout: Layout::of("Users", who),
        users,
        notice: notice(notice_of),
        error,
    })
}

pub async fn users(
    who: SignedIn,
    state: web::Data<WebState>,
    query: web::Query<DoneParam>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Admin)?;
    page(&users_page(&who, &state, query.done.as_deref(), None).await?)
}

#[derive(Deserialize)]
pub struct NewUserForm {
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
    role: String,
}

pub async fn create_user(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    form: web::Form<NewUserForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    who.require(Role::Admin)?;
    let created = async {
        let username = agentpkg_model::Username::parse(&form.username)?;
        let password = agentpkg_model::Password::parse(&form.password)?;
        let role: Role = form.role.parse()?;
        state
            .accounts
            .gate(&ctx.caller(&who.credential))
            .create_user(&username, &password, role)
            .await
            .map_err(WebError::from)
    }
    .await;
    match created {
        Ok(_) => Ok(see_other("/users?done=user-created")),
        Err(WebError::Refused(status, message)) => {
            let html = users_page(&who, &state, None, Some(message))
                .await?
                .render()?;
            Ok(secured(HttpResponse::build(status), html))
        }
        Err(other) => Err(other),
    }
}

pub async fn delete_user(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    who.require(Role::Admin)?;
    state
        .accounts
        .gate(&ctx.caller(&who.credential))
        .delete_user(*path)
        .await?;
    Ok(see_other("/users?done=user-deleted"))
}
