//! The three download routes: by id, by exact coordinates, and the latest version. Each
//! finds the package and hands it to [`serve`].

use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_model::VersionRequirement;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{CoordinatesPath, LatestPath, latest_query};
use crate::error::ErrorBody;
use crate::handlers::download::{DownloadAnswers, serve};
use crate::{ApiError, ApiState, Reader, Viewer};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DownloadParams {
    /// `true`: answer with a redirect to object storage when it can; `false`: stream.
    /// Default: the server's `download.redirect` setting.
    redirect: Option<bool>,
}

/// Download a package by id
///
/// The bytes, streamed from storage, with single byte ranges (`Range`, `If-Range`),
/// conditional requests (`If-None-Match` against the checksum ETag) and, for S3 storage,
/// a redirect to a presigned URL. Yanked packages stay downloadable. Needs the viewer
/// role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{id}/download",
    tag = "downloads",
    params(("id" = i64, Path, description = "Package id"), DownloadParams),
    responses(
        DownloadAnswers,
        (status = 400, description = "Invalid id or parameter", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn download(
    viewer: Viewer,
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    params: web::Query<DownloadParams>,
) -> Result<HttpResponse, ApiError> {
    let package = state.packages.gate(&viewer.caller).get(*id).await?;
    serve(&req, &state, package, params.redirect).await
}

/// Download an exact version
///
/// By name, version, platform and architecture, active or yanked, so an agent's URL never
/// needs a database id. Answers as the download by id does. Needs the viewer role, or the
/// download credential of an OpAMP offer for this package.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{name}/{version}/{platform}/{arch}/download",
    tag = "downloads",
    params(CoordinatesPath, DownloadParams),
    responses(
        DownloadAnswers,
        (status = 400, description = "Invalid coordinates", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn download_by_coordinates(
    reader: Reader,
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<CoordinatesPath>,
    params: web::Query<DownloadParams>,
) -> Result<HttpResponse, ApiError> {
    let coordinates = path.parse()?;
    let package = match &reader {
        Reader::Viewer(caller) => state.packages.gate(caller).find(&coordinates).await?,
        Reader::File(granted) => state.packages.offered(*granted, &coordinates).await?,
    };
    serve(&req, &state, package, params.redirect).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LatestDownloadParams {
    /// A SemVer requirement the version must match (`^1.4`).
    #[param(value_type = Option<VersionRequirement>)]
    version: Option<String>,
    /// Whether pre-release versions may be chosen.
    #[serde(default)]
    prerelease: bool,
    /// `true`: answer with a redirect to object storage when it can; `false`: stream.
    redirect: Option<bool>,
}

/// Download the latest version
///
/// The active package of highest SemVer precedence for one name, platform and
/// architecture (optionally matching a requirement): the URL an agent can always fetch.
/// Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{name}/latest/{platform}/{arch}/download",
    tag = "downloads",
    params(LatestPath, LatestDownloadParams),
    responses(
        DownloadAnswers,
        (status = 400, description = "Invalid name, platform, arch or requirement", body = ErrorBody),
        (status = 404, description = "No active package matches", body = ErrorBody),
    ),
)]
pub(crate) async fn download_latest(
    viewer: Viewer,
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<LatestPath>,
    params: web::Query<LatestDownloadParams>,
) -> Result<HttpResponse, ApiError> {
    let query = latest_query(
        &path.name,
        &path.platform,
        &path.arch,
        params.version.as_deref(),
        params.prerelease,
    )?;
    let package = state.packages.gate(&viewer.caller).latest(&query).await?;
    serve(&req, &state, package, params.redirect).await
}
