//! Teams: users who own package names together.

use actix_web::{HttpResponse, web};
use agentpkg_packagemgr::Team;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use crate::{ApiError, ApiState, Publisher, Viewer};

/// A team and its members.
#[derive(Serialize, ToSchema)]
pub(crate) struct TeamView {
    id: i64,
    #[schema(example = "platform")]
    name: String,
    /// Members' usernames.
    members: Vec<String>,
}

impl From<Team> for TeamView {
    fn from(t: Team) -> Self {
        Self {
            id: t.id,
            name: t.name,
            members: t.members.into_iter().map(|(_, name)| name).collect(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTeam {
    /// 1 to 64 lowercase letters, digits, '.', '_' or '-'.
    #[schema(example = "platform")]
    name: String,
}

/// Create a team
///
/// Its creator is its first member. Name a team as a package owner with
/// `PUT /packages/{name}/owners/team:{team}`. Needs the publisher role.
#[utoipa::path(
    post,
    path = "/api/v1/teams",
    tag = "teams",
    request_body = NewTeam,
    responses(
        (status = 201, description = "Created", body = TeamView),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
    ),
)]
pub(crate) async fn create(
    publisher: Publisher,
    state: web::Data<ApiState>,
    body: web::Json<NewTeam>,
) -> Result<HttpResponse, ApiError> {
    let team = state
        .packages
        .gate(&publisher.caller)
        .create_team(&body.name)
        .await?;
    Ok(HttpResponse::Created().json(TeamView::from(team)))
}

/// List teams
///
/// Every team and its members. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/teams",
    tag = "teams",
    responses((status = 200, description = "Teams", body = Vec<TeamView>)),
)]
pub(crate) async fn list(
    _viewer: Viewer,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let teams: Vec<TeamView> = state
        .packages
        .teams()
        .await?
        .into_iter()
        .map(TeamView::from)
        .collect();
    Ok(HttpResponse::Ok().json(teams))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct MemberPath {
    /// Team name.
    team: String,
    username: String,
}

async fn change(
    publisher: &Publisher,
    state: &ApiState,
    path: &MemberPath,
    add: bool,
) -> Result<HttpResponse, ApiError> {
    let user = state.accounts.find_user(&path.username).await?;
    let team = state
        .packages
        .gate(&publisher.caller)
        .change_member(&path.team, &user, add)
        .await?;
    Ok(HttpResponse::Ok().json(TeamView::from(team)))
}

/// Add a team member
///
/// Needs the publisher role, as a member of the team, or the admin role.
#[utoipa::path(
    put,
    path = "/api/v1/teams/{team}/members/{username}",
    tag = "teams",
    params(MemberPath),
    responses(
        (status = 200, description = "The team", body = TeamView),
        (status = 404, description = "No such team or user", body = ErrorBody),
    ),
)]
pub(crate) async fn add_member(
    publisher: Publisher,
    state: web::Data<ApiState>,
    path: web::Path<MemberPath>,
) -> Result<HttpResponse, ApiError> {
    change(&publisher, &state, &path, true).await
}

/// Remove a team member
///
/// A team keeps at least one member. Needs the publisher role, as a member of the team,
/// or the admin role.
#[utoipa::path(
    delete,
    path = "/api/v1/teams/{team}/members/{username}",
    tag = "teams",
    params(MemberPath),
    responses(
        (status = 200, description = "The team", body = TeamView),
        (status = 404, description = "No such team, user or member", body = ErrorBody),
        (status = 409, description = "That is the last member", body = ErrorBody),
    ),
)]
pub(crate) async fn remove_member(
    publisher: Publisher,
    state: web::Data<ApiState>,
    path: web::Path<MemberPath>,
) -> Result<HttpResponse, ApiError> {
    change(&publisher, &state, &path, false).await
}
