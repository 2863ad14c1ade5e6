//! Who owns a package name: listed to readers, changed by its owners (and admins).

use actix_web::{HttpResponse, web};
use agentpkg_model::PackageName;
use agentpkg_packagemgr::{Caller, Owner, OwnerRef};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use crate::{ApiError, ApiState, Publisher, Viewer};

/// An owner of a package name: a user, or a team (every member acts as an owner).
#[derive(Serialize, ToSchema)]
pub(crate) struct OwnerView {
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "ci-bot")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    team_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "platform-team")]
    team: Option<String>,
}

impl From<Owner> for OwnerView {
    fn from(o: Owner) -> Self {
        match o {
            Owner::User { user_id, username } => Self {
                user_id: Some(user_id),
                username: Some(username),
                team_id: None,
                team: None,
            },
            Owner::Team { team_id, name } => Self {
                user_id: None,
                username: None,
                team_id: Some(team_id),
                team: Some(name),
            },
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct OwnerPath {
    /// Package name.
    #[param(value_type = PackageName)]
    name: String,
    /// The user to add or remove, or `team:` and a team's name.
    #[param(example = "team:platform")]
    username: String,
}

/// Owners of a package name
///
/// The users who may publish new versions of the name, yank, restore or describe them, and
/// change this list (admins may too). Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{name}/owners",
    tag = "packages",
    params(("name" = PackageName, Path, description = "Package name")),
    responses(
        (status = 200, description = "The owners, by username", body = Vec<OwnerView>),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 404, description = "Nobody has published this name", body = ErrorBody),
    ),
)]
pub(crate) async fn list(
    viewer: Viewer,
    state: web::Data<ApiState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = PackageName::parse(&name)?;
    let owners: Vec<OwnerView> = state
        .packages
        .gate(&viewer.caller)
        .owners(&name)
        .await?
        .into_iter()
        .map(OwnerView::from)
        .collect();
    Ok(HttpResponse::Ok().json(owners))
}

async fn change(
    caller: &Caller,
    state: &ApiState,
    path: OwnerPath,
    add: bool,
) -> Result<HttpResponse, ApiError> {
    let name = PackageName::parse(&path.name)?;
    let owner = match path.username.strip_prefix("team:") {
        Some(team) => OwnerRef::Team(team.to_owned()),
        None => OwnerRef::User(state.accounts.find_user(&path.username).await?),
    };
    state
        .packages
        .gate(caller)
        .change_owner(&name, &owner, add)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Add an owner
///
/// A user by username, or a team as `team:NAME`. Needs the publisher role, as an owner of
/// the name, or the admin role.
#[utoipa::path(
    put,
    path = "/api/v1/packages/{name}/owners/{username}",
    tag = "packages",
    params(OwnerPath),
    responses(
        (status = 204, description = "The user is an owner"),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 404, description = "No such user, or nobody has published this name", body = ErrorBody),
    ),
)]
pub(crate) async fn add(
    publisher: Publisher,
    state: web::Data<ApiState>,
    path: web::Path<OwnerPath>,
) -> Result<HttpResponse, ApiError> {
    change(&publisher.caller, &state, path.into_inner(), true).await
}

/// Remove an owner
///
/// The last owner cannot be removed. Needs the publisher role, as an owner of the name, or
/// the admin role (who transfers a name by adding the new owner, then removing the old).
#[utoipa::path(
    delete,
    path = "/api/v1/packages/{name}/owners/{username}",
    tag = "packages",
    params(OwnerPath),
    responses(
        (status = 204, description = "The user is no longer an owner"),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 404, description = "No such user or owner, or nobody has published this name", body = ErrorBody),
        (status = 409, description = "That is the last owner", body = ErrorBody),
    ),
)]
pub(crate) async fn remove(
    publisher: Publisher,
    state: web::Data<ApiState>,
    path: web::Path<OwnerPath>,
) -> Result<HttpResponse, ApiError> {
    change(&publisher.caller, &state, path.into_inner(), false).await
}
