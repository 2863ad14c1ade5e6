//! One package by id, the latest of a name, and a name's version history.

use actix_web::{HttpResponse, web};
use agentpkg_model::{Arch, PackageName, Platform, VersionRequirement};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{latest_query, required};
use crate::error::ErrorBody;
use crate::views::{PackageView, VersionEntry};
use crate::{ApiError, ApiState, Viewer};

/// Get a package
///
/// Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{id}",
    tag = "packages",
    params(("id" = i64, Path, description = "Package id")),
    responses(
        (status = 200, description = "The package", body = PackageView),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn get(
    viewer: Viewer,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let package = state.packages.gate(&viewer.caller).get(*id).await?;
    Ok(HttpResponse::Ok().json(PackageView::from(&package)))
}

/// Get a package by its coordinates
///
/// The package at exactly this name, version (by precedence), platform and architecture,
/// yanked or not. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{name}/{version}/{platform}/{arch}",
    tag = "packages",
    params(super::CoordinatesPath),
    responses(
        (status = 200, description = "The package", body = PackageView),
        (status = 400, description = "Invalid coordinates", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn by_coordinates(
    viewer: Viewer,
    state: web::Data<ApiState>,
    path: web::Path<super::CoordinatesPath>,
) -> Result<HttpResponse, ApiError> {
    let coordinates = path.parse()?;
    let package = state
        .packages
        .gate(&viewer.caller)
        .find(&coordinates)
        .await?;
    Ok(HttpResponse::Ok().json(PackageView::from(&package)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LatestParams {
    /// Package name.
    #[param(required = true, value_type = PackageName)]
    name: Option<String>,
    #[param(required = true, value_type = Platform)]
    platform: Option<String>,
    #[param(required = true, value_type = Arch)]
    arch: Option<String>,
    /// A SemVer requirement the version must match (`^1.4`).
    #[param(value_type = Option<VersionRequirement>)]
    version: Option<String>,
    /// Whether pre-release versions (`2.0.0-rc.1`) may be chosen.
    #[serde(default)]
    prerelease: bool,
}

/// Latest version of a package
///
/// The active package of highest SemVer precedence for one name, platform and
/// architecture, optionally among the versions matching a requirement. Needs the viewer
/// role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/latest",
    tag = "packages",
    params(LatestParams),
    responses(
        (status = 200, description = "The latest package", body = PackageView),
        (status = 400, description = "A parameter is missing or invalid", body = ErrorBody),
        (status = 404, description = "No active package matches", body = ErrorBody),
    ),
)]
pub(crate) async fn latest(
    viewer: Viewer,
    state: web::Data<ApiState>,
    params: web::Query<LatestParams>,
) -> Result<HttpResponse, ApiError> {
    let query = latest_query(
        required(params.name.as_deref(), "name")?,
        required(params.platform.as_deref(), "platform")?,
        required(params.arch.as_deref(), "arch")?,
        params.version.as_deref(),
        params.prerelease,
    )?;
    let package = state.packages.gate(&viewer.caller).latest(&query).await?;
    Ok(HttpResponse::Ok().json(PackageView::from(&package)))
}

/// Versions of a package
///
/// Every version of a package (yanked ones included, marked by `is_active`), newest
/// first, with its builds per platform. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{name}/versions",
    tag = "packages",
    params(("name" = PackageName, Path, description = "Package name")),
    responses(
        (status = 200, description = "Versions, newest first", body = Vec<VersionEntry>),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 404, description = "No package has this name (or the name has a '/')", body = ErrorBody),
    ),
)]
pub(crate) async fn versions(
    viewer: Viewer,
    state: web::Data<ApiState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = PackageName::parse(&name)?;
    let history = state.packages.gate(&viewer.caller).history(&name).await?;
    let entries: Vec<VersionEntry> = history.iter().map(VersionEntry::from).collect();
    Ok(HttpResponse::Ok().json(entries))
}
