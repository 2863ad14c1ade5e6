//! Teams: who is in each (teams own package names together), a new team, members added and
//! removed — through the package manager's gate, as `/api/v1/teams` does.

use actix_web::{HttpResponse, web};
use agentpkg_http::RequestContext;
use agentpkg_model::Role;
use askama::Template;
use serde::Deserialize;

use super::{CsrfForm, DoneParam, Layout, page, see_other};
use crate::WebState;
use crate::error::WebError;
use crate::session::SignedIn;

struct TeamRow {
    name: String,
    members: Vec<String>,
    /// Whether the signed-in user may change its members (a member, or an admin).
    may_change: bool,
}

#[derive(Template)]
#[template(path = "teams.html")]
struct TeamsPage {
    layout: Layout,
    teams: Vec<TeamRow>,
    may_create: bool,
    notice: Option<String>,
}

pub async fn teams(
    who: SignedIn,
    state: web::Data<WebState>,
    query: web::Query<DoneParam>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Viewer)?;
    let role = who.credential.role;
    let admin = role.includes(Role::Admin);
    let publisher = role.includes(Role::Publisher);
    let teams = state
        .packages
        .teams()
        .await?
        .into_iter()
        .map(|t| {
            let members: Vec<String> = t.members.into_iter().map(|(_, name)| name).collect();
            TeamRow {
                may_change: publisher && (admin || members.contains(&who.credential.username)),
                name: t.name,
                members,
            }
        })
        .collect();
    page(&TeamsPage {
        layout: Layout::of("Teams", &who),
        teams,
        may_create: publisher,
        notice: match query.done.as_deref() {
            Some("created") => Some("The team was created, with you as its first member.".into()),
            Some("added") => Some("The member was added.".into()),
            Some("removed") => Some("The member was removed.".into()),
            _ => None,
        },
    })
}

#[derive(Deserialize)]
pub struct NewTeamForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

pub async fn create_team(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    form: web::Form<NewTeamForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    state
        .packages
        .gate(&ctx.caller(&who.credential))
        .create_team(form.name.trim())
        .await?;
    Ok(see_other("/teams?done=created"))
}

#[derive(Deserialize)]
pub struct MemberForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
}

pub async fn add_member(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    team: web::Path<String>,
    form: web::Form<MemberForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let user = state.accounts.find_user(form.username.trim()).await?;
    state
        .packages
        .gate(&ctx.caller(&who.credential))
        .change_member(&team, &user, true)
        .await?;
    Ok(see_other("/teams?done=added"))
}

pub async fn remove_member(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let (team, username) = path.into_inner();
    let user = state.accounts.find_user(&username).await?;
    state
        .packages
        .gate(&ctx.caller(&who.credential))
        .change_member(&team, &user, false)
        .await?;
    Ok(see_other("/teams?done=removed"))
}
