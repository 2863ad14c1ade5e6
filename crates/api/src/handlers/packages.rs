//! Package routes: list, upload, get, latest, download, delete.

use std::io;

use actix_multipart::{Field, Multipart};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_model::{
    Activity, Arch, Checksum, Coordinates, Description, FileName, ListQuery, Package, PackageName,
    PackagePatch, PageRequest, Platform, ValidationError, Version, VersionRequirement,
};
use agentpkg_packagemgr::{PackageManager, StagedUpload, UploadMeta, body_channel};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::download::{CHECKSUM_HEADER, DownloadAnswers, PackageBytes, serve};
use crate::error::ErrorBody;
use crate::{Admin, ApiError, ApiState, Publisher, Viewer};
/// Room for the form's text fields and boundaries around the file itself.
const FORM_OVERHEAD: u64 = 1024 * 1024;
/// Largest text field: a 4096-character description in UTF-8, with margin.
const MAX_TEXT_FIELD: usize = 20 * 1024;
/// Chunks of the file in flight between the HTTP connection and the storage upload.
const BODY_CHANNEL_CHUNKS: usize = 16;

#[derive(Deserialize, Serialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only packages of this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<PackageName>)]
    name: Option<String>,
    /// Only packages for this platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<Platform>)]
    platform: Option<String>,
    /// Only packages for this architecture.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<Arch>)]
    arch: Option<String>,
    /// A SemVer requirement (`^1.4`); needs `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<VersionRequirement>)]
    version: Option<String>,
    /// `true`: only active packages (the default); `false`: only yanked ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<bool>,
    /// `true`: yanked packages too.
    #[serde(skip_serializing_if = "Option::is_none")]
    include_inactive: Option<bool>,
    /// Packages per page, 1 to 100 (default 20; out-of-range values are clamped).
    #[serde(skip_serializing_if = "Option::is_none")]
    per_page: Option<u32>,
    /// Page number, from 1 (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<u32>,
}

/// List packages
///
/// Active packages, by name then newest version first. The body is the array of packages
/// (as in the system this one replaces); the total is in `X-Total-Count` and the
/// neighbouring pages in an RFC 8288 `Link` header. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/packages",
    tag = "packages",
    params(ListParams),
    responses(
        (status = 200, description = "One page of packages", body = Vec<Package>, headers(
            ("X-Total-Count" = u64, description = "Packages matching the filters, on all pages"),
            ("Link" = String, description = "RFC 8288 links to the first, last, previous and next pages"),
        )),
        (status = 400, description = "Invalid filter", body = ErrorBody),
    ),
)]
pub(crate) async fn list(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    req: HttpRequest,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let name = params.name.as_deref().map(PackageName::parse).transpose()?;
    let version = params
        .version
        .as_deref()
        .map(VersionRequirement::parse)
        .transpose()?;
    if version.is_some() && name.is_none() {
        return Err(ValidationError::new("version", "a version requirement needs a name").into());
    }
    let query = ListQuery {
        name,
        platform: params.platform.as_deref().map(str::parse).transpose()?,
        arch: params.arch.as_deref().map(str::parse).transpose()?,
        version,
        activity: match (params.active, params.include_inactive) {
            (Some(true), _) => Activity::ActiveOnly,
            (Some(false), _) => Activity::InactiveOnly,
            (None, Some(true)) => Activity::All,
            (None, _) => Activity::ActiveOnly,
        },
        page: PageRequest::new(params.page, params.per_page),
    };
    let page = state.packages.list(&query).await?;
    let mut response = HttpResponse::Ok();
    response.insert_header(("X-Total-Count", page.total.to_string()));
    response.insert_header((
        header::LINK,
        link_header(req.path(), &params, &query, page.total)?,
    ));
    Ok(response.json(page.items))
}

/// RFC 8288 links to the first, previous, next and last pages, with the same filters.
fn link_header(
    path: &str,
    params: &ListParams,
    q: &ListQuery,
    total: u64,
) -> Result<String, ApiError> {
    let per_page = u64::from(q.page.per_page);
    let last = total.div_ceil(per_page).max(1);
    let current = u64::from(q.page.page);
    let link = |page: u64, rel: &str| -> Result<String, ApiError> {
        let query = serde_urlencoded::to_string(ListParams {
            per_page: Some(q.page.per_page),
            page: Some(u32::try_from(page).unwrap_or(u32::MAX)),
            name: params.name.clone(),
            platform: params.platform.clone(),
            arch: params.arch.clone(),
            version: params.version.clone(),
            active: params.active,
            include_inactive: params.include_inactive,
        })
        .map_err(ApiError::internal)?;
        Ok(format!("<{path}?{query}>; rel=\"{rel}\""))
    };
    let mut links = vec![link(1, "first")?, link(last, "last")?];
    if current > 1 {
        links.push(link((current - 1).min(last), "prev")?);
    }
    if current < last {
        links.push(link(current + 1, "next")?);
    }
    Ok(links.join(", "))
}

/// Get a package
///
/// Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{id}",
    tag = "packages",
    params(("id" = i64, Path, description = "Package id")),
    responses(
        (status = 200, description = "The package", body = Package),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn get(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.packages.get(id.into_inner()).await?))
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
        (status = 200, description = "The latest package", body = Package),
        (status = 400, description = "A parameter is missing or invalid", body = ErrorBody),
        (status = 404, description = "No active package matches", body = ErrorBody),
    ),
)]
pub(crate) async fn latest(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    params: web::Query<LatestParams>,
) -> Result<HttpResponse, ApiError> {
    let name = PackageName::parse(required(params.name.as_deref(), "name")?)?;
    let platform: Platform = required(params.platform.as_deref(), "platform")?.parse()?;
    let arch: Arch = required(params.arch.as_deref(), "arch")?.parse()?;
    let package = find_latest(
        &state,
        &name,
        platform,
        arch,
        params.version.as_deref(),
        params.prerelease,
    )
    .await?;
    Ok(HttpResponse::Ok().json(package))
}

async fn find_latest(
    state: &ApiState,
    name: &PackageName,
    platform: Platform,
    arch: Arch,
    requirement: Option<&str>,
    prerelease: bool,
) -> Result<Package, ApiError> {
    let requirement = requirement.map(VersionRequirement::parse).transpose()?;
    Ok(state
        .packages
        .latest(name, platform, arch, requirement.as_ref(), prerelease)
        .await?)
}

fn required<'a>(value: Option<&'a str>, field: &'static str) -> Result<&'a str, ApiError> {
    value.ok_or_else(|| missing(field))
}

fn missing(field: &'static str) -> ApiError {
    ApiError {
        field: Some(field),
        ..ApiError::bad_request("missing_field", format!("{field} is required"))
    }
}

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
    _viewer: Viewer,
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    params: web::Query<DownloadParams>,
) -> Result<HttpResponse, ApiError> {
    let package = state.packages.get(id.into_inner()).await?;
    serve(&req, &state, package, params.redirect).await
}

fn coordinates(
    name: &str,
    version: &str,
    platform: &str,
    arch: &str,
) -> Result<Coordinates, ApiError> {
    Ok(Coordinates {
        name: PackageName::parse(name)?,
        version: Version::parse(version)?,
        platform: platform.parse()?,
        arch: arch.parse()?,
    })
}

/// Download an exact version
///
/// By name, version, platform and architecture, active or yanked, so an agent's URL never
/// needs a database id. Answers as the download by id does. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{name}/{version}/{platform}/{arch}/download",
    tag = "downloads",
    params(
        ("name" = PackageName, Path, description = "Package name"),
        ("version" = Version, Path, description = "SemVer version"),
        ("platform" = Platform, Path),
        ("arch" = Arch, Path),
        DownloadParams,
    ),
    responses(
        DownloadAnswers,
        (status = 400, description = "Invalid coordinates", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn download_by_coordinates(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    params: web::Query<DownloadParams>,
) -> Result<HttpResponse, ApiError> {
    let (name, version, platform, arch) = path.into_inner();
    let package = state
        .packages
        .find(&coordinates(&name, &version, &platform, &arch)?)
        .await?;
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
    params(
        ("name" = PackageName, Path, description = "Package name"),
        ("platform" = Platform, Path),
        ("arch" = Arch, Path),
        LatestDownloadParams,
    ),
    responses(
        DownloadAnswers,
        (status = 400, description = "Invalid name, platform, arch or requirement", body = ErrorBody),
        (status = 404, description = "No active package matches", body = ErrorBody),
    ),
)]
pub(crate) async fn download_latest(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    params: web::Query<LatestDownloadParams>,
) -> Result<HttpResponse, ApiError> {
    let (name, platform, arch) = path.into_inner();
    let name = PackageName::parse(&name)?;
    let package = find_latest(
        &state,
        &name,
        platform.parse()?,
        arch.parse()?,
        params.version.as_deref(),
        params.prerelease,
    )
    .await?;
    serve(&req, &state, package, params.redirect).await
}

/// One version of a package and its builds, for `GET /packages/{name}/versions`.
#[derive(Serialize, ToSchema)]
pub(crate) struct VersionEntry {
    #[schema(example = "1.4.2")]
    version: String,
    prerelease: bool,
    /// The builds of this version, one per platform and architecture.
    packages: Vec<Package>,
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
        (status = 200, description = "Versions, newest first (empty when the name is unknown)", body = Vec<VersionEntry>),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 404, description = "No such route (a name with '/')", body = ErrorBody),
    ),
)]
pub(crate) async fn versions(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = PackageName::parse(&name)?;
    let mut entries: Vec<VersionEntry> = Vec::new();
    for package in state.packages.versions(&name).await? {
        let version = Version::parse(&package.version).map_err(ApiError::internal)?;
        let same = entries.last().is_some_and(|e| {
            Version::parse(&e.version).is_ok_and(|v| v.precedence(&version).is_eq())
        });
        if same && let Some(entry) = entries.last_mut() {
            entry.packages.push(package);
        } else {
            entries.push(VersionEntry {
                version: package.version.clone(),
                prerelease: version.is_prerelease(),
                packages: vec![package],
            });
        }
    }
    Ok(HttpResponse::Ok().json(entries))
}

/// A change to a package; absent fields are left as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchBody {
    /// `false` yanks the package, `true` restores it.
    is_active: Option<bool>,
    /// A new description.
    #[schema(value_type = Option<Description>)]
    description: Option<String>,
}

/// Yank, restore or describe a package
///
/// `{"is_active": false}` yanks a package, `true` restores it; `description` edits it.
/// Needs the publisher role.
#[utoipa::path(
    patch,
    path = "/api/v1/packages/{id}",
    tag = "packages",
    params(("id" = i64, Path, description = "Package id")),
    request_body = PatchBody,
    responses(
        (status = 200, description = "The updated package", body = Package),
        (status = 400, description = "Invalid body or id", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn patch(
    _publisher: Publisher,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
    body: web::Json<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let patch = PackagePatch {
        is_active: body.is_active,
        description: body
            .description
            .as_deref()
            .map(Description::parse)
            .transpose()?,
    };
    Ok(HttpResponse::Ok().json(state.packages.update(id.into_inner(), patch).await?))
}

/// Delete a package
///
/// Removes the package and, when no other package shares them, its bytes. Needs the admin
/// role.
#[utoipa::path(
    delete,
    path = "/api/v1/packages/{id}",
    tag = "packages",
    params(("id" = i64, Path, description = "Package id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn delete(
    _admin: Admin,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.packages.delete(id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The fields of an upload form (`multipart/form-data`), in any order.
#[derive(ToSchema)]
#[allow(dead_code)] // Documentation only: the form is read field by field as it streams.
pub(crate) struct UploadForm {
    /// The package file. Its form file name becomes the download's file name.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    name: PackageName,
    version: Version,
    platform: Platform,
    arch: Arch,
    description: Option<Description>,
    /// Expected SHA-256 of the file; the upload is refused when the bytes differ.
    sha256: Option<Checksum>,
}

/// Upload a package (form)
///
/// A `multipart/form-data` upload with the fields `file`, `name`, `version`, `platform`,
/// `arch`, and optionally `description` and `sha256`, in any order. The file streams to
/// storage as it arrives. Text fields are checked as soon as they arrive; if all
/// coordinates come before the file, a duplicate is refused before the file is read.
/// Whatever fails, nothing is stored. Needs the publisher role.
#[utoipa::path(
    post,
    path = "/api/v1/packages",
    tag = "packages",
    params(("X-Checksum-Sha256" = Option<Checksum>, Header, description = "Expected SHA-256 of the file (as the sha256 field)")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored", body = Package, headers(
            ("Location" = String, description = "The new package's URL"),
        )),
        (status = 400, description = "A field is missing, duplicated, unknown or invalid, or the body is malformed or truncated", body = ErrorBody),
        (status = 409, description = "A package with these coordinates exists", body = ErrorBody),
        (status = 413, description = "The package is larger than the limit", body = ErrorBody),
        (status = 415, description = "The body is not multipart/form-data", body = ErrorBody),
        (status = 422, description = "The bytes do not match the announced SHA-256", body = ErrorBody),
    ),
)]
pub(crate) async fn upload(
    _publisher: Publisher,
    state: web::Data<ApiState>,
    req: HttpRequest,
    multipart: Multipart,
) -> Result<HttpResponse, ApiError> {
    counted(&state, upload_form(&state, &req, multipart).await)
}

/// Counts an upload's outcome: bytes published, or the reason it was refused.
fn counted(state: &ApiState, result: Result<Package, ApiError>) -> Result<HttpResponse, ApiError> {
    match result {
        Ok(package) => {
            state.metrics.uploaded(package.file_size);
            created(package)
        }
        Err(e) => {
            state.metrics.rejected(e.code);
            tracing::info!(code = e.code, status = e.status.as_u16(), "upload refused");
            Err(e)
        }
    }
}

async fn upload_form(
    state: &ApiState,
    req: &HttpRequest,
    mut multipart: Multipart,
) -> Result<Package, ApiError> {
    let limit = state.packages.config().max_upload_bytes;
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_form {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the upload must be multipart/form-data",
        ));
    }
    if let Some(length) = content_length(req)
        && length > limit.saturating_add(FORM_OVERHEAD)
    {
        return Err(ApiError::too_large(limit));
    }
    let header_sha256 = checksum_header(req)?;

    let mut form = Form::default();
    let read = form.read(&state.packages, &mut multipart).await;
    let meta = read.and_then(|()| form.meta(header_sha256));
    let staged = form.staged.take();
    match (meta, staged) {
        (Ok(meta), Some(staged)) => Ok(state.packages.publish(staged, meta).await?),
        (Ok(_), None) => Err(missing("file")),
        (Err(e), staged) => {
            if let Some(staged) = staged {
                staged.discard().await;
            }
            Err(e)
        }
    }
}

fn checksum_header(req: &HttpRequest) -> Result<Option<Checksum>, ApiError> {
    Ok(req
        .headers()
        .get(CHECKSUM_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| ValidationError::new("sha256", "is not valid text"))
                .and_then(Checksum::parse)
        })
        .transpose()?)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PutParams {
    /// File name for downloads (default: the package name).
    #[param(value_type = Option<FileName>)]
    filename: Option<String>,
    #[param(value_type = Option<Description>)]
    description: Option<String>,
}

/// Upload a package (raw body)
///
/// The request body is the file (`curl -T file URL`). `X-Checksum-Sha256` is verified
/// when sent. Same guarantees as the form upload: a duplicate is refused before the body
/// is read, and any failure leaves nothing behind. Needs the publisher role.
#[utoipa::path(
    put,
    path = "/api/v1/packages/{name}/{version}/{platform}/{arch}",
    tag = "packages",
    params(
        ("name" = PackageName, Path, description = "Package name"),
        ("version" = Version, Path, description = "SemVer version"),
        ("platform" = Platform, Path),
        ("arch" = Arch, Path),
        PutParams,
        ("X-Checksum-Sha256" = Option<Checksum>, Header, description = "Expected SHA-256 of the body"),
    ),
    request_body(content = PackageBytes, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored", body = Package, headers(
            ("Location" = String, description = "The new package's URL"),
        )),
        (status = 400, description = "Invalid coordinates or parameters, or a truncated body", body = ErrorBody),
        (status = 404, description = "No such route (a coordinate with '/')", body = ErrorBody),
        (status = 409, description = "A package with these coordinates exists", body = ErrorBody),
        (status = 413, description = "The package is larger than the limit", body = ErrorBody),
        (status = 422, description = "The bytes do not match the announced SHA-256", body = ErrorBody),
    ),
)]
pub(crate) async fn put(
    _publisher: Publisher,
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    params: web::Query<PutParams>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    counted(
        &state,
        put_body(&state, &req, path.into_inner(), &params, body).await,
    )
}

async fn put_body(
    state: &ApiState,
    req: &HttpRequest,
    (name, version, platform, arch): (String, String, String, String),
    params: &PutParams,
    body: web::Payload,
) -> Result<Package, ApiError> {
    let coordinates = coordinates(&name, &version, &platform, &arch)?;
    let limit = state.packages.config().max_upload_bytes;
    if content_length(req).is_some_and(|length| length > limit) {
        return Err(ApiError::too_large(limit));
    }
    let meta = UploadMeta {
        filename: params
            .filename
            .as_deref()
            .map(FileName::parse)
            .transpose()?,
        description: params
            .description
            .as_deref()
            .map(Description::parse)
            .transpose()?
            .unwrap_or_default(),
        expected_sha256: checksum_header(req)?,
        coordinates,
    };
    state.packages.ensure_absent(&meta.coordinates).await?;
    let staged = stream_into_storage(&state.packages, body).await?;
    Ok(state.packages.publish(staged, meta).await?)
}

fn created(package: Package) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/packages/{}", package.id)))
        .json(package))
}

fn content_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The fields of an upload form, each checked as it arrives.
#[derive(Default)]
struct Form {
    name: Option<PackageName>,
    version: Option<Version>,
    platform: Option<Platform>,
    arch: Option<Arch>,
    description: Option<Description>,
    sha256: Option<Checksum>,
    filename: Option<FileName>,
    staged: Option<StagedUpload>,
}

impl Form {
    async fn read(
        &mut self,
        mgr: &PackageManager,
        multipart: &mut Multipart,
    ) -> Result<(), ApiError> {
        while let Some(field) = multipart.try_next().await.map_err(malformed)? {
            let name = field.name().unwrap_or_default().to_owned();
            match name.as_str() {
                "file" => {
                    if self.staged.is_some() {
                        return Err(duplicate("file"));
                    }
                    self.filename = field
                        .content_disposition()
                        .and_then(|cd| cd.get_filename())
                        .filter(|f| !f.is_empty())
                        .map(FileName::parse)
                        .transpose()?;
                    if let Some(coordinates) = self.coordinates() {
                        mgr.ensure_absent(&coordinates).await?;
                    }
                    self.staged = Some(stream_into_storage(mgr, field).await?);
                }
                "name" => set(
                    &mut self.name,
                    "name",
                    PackageName::parse(&text(field, "name").await?)?,
                )?,
                "version" => set(
                    &mut self.version,
                    "version",
                    Version::parse(&text(field, "version").await?)?,
                )?,
                "platform" => set(
                    &mut self.platform,
                    "platform",
                    text(field, "platform").await?.parse()?,
                )?,
                "arch" => set(&mut self.arch, "arch", text(field, "arch").await?.parse()?)?,
                "description" => set(
                    &mut self.description,
                    "description",
                    Description::parse(&text(field, "description").await?)?,
                )?,
                "sha256" => set(
                    &mut self.sha256,
                    "sha256",
                    Checksum::parse(text(field, "sha256").await?.trim())?,
                )?,
                _ => {
                    return Err(ApiError::bad_request(
                        "unknown_field",
                        format!(
                            "unknown form field {:?}; expected file, name, version, platform, arch, description, sha256",
                            truncate(&name, 64)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn coordinates(&self) -> Option<Coordinates> {
        Some(Coordinates {
            name: self.name.clone()?,
            version: self.version.clone()?,
            platform: self.platform?,
            arch: self.arch?,
        })
    }

    fn meta(&mut self, header_sha256: Option<Checksum>) -> Result<UploadMeta, ApiError> {
        let expected_sha256 = match (self.sha256.take(), header_sha256) {
            (Some(a), Some(b)) if a != b => {
                return Err(ValidationError::new(
                    "sha256",
                    format!("the sha256 field and the {CHECKSUM_HEADER} header disagree"),
                )
                .into());
            }
            (a, b) => a.or(b),
        };
        Ok(UploadMeta {
            coordinates: Coordinates {
                name: self.name.take().ok_or_else(|| missing("name"))?,
                version: self.version.take().ok_or_else(|| missing("version"))?,
                platform: self.platform.take().ok_or_else(|| missing("platform"))?,
                arch: self.arch.take().ok_or_else(|| missing("arch"))?,
            },
            filename: self.filename.take(),
            description: self.description.take().unwrap_or_default(),
            expected_sha256,
        })
    }
}

fn set<T>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(duplicate(field));
    }
    *slot = Some(value);
    Ok(())
}

fn duplicate(field: &'static str) -> ApiError {
    ApiError {
        field: Some(field),
        ..ApiError::bad_request(
            "duplicate_field",
            format!("{field} was sent more than once"),
        )
    }
}

fn malformed(e: actix_multipart::MultipartError) -> ApiError {
    ApiError::bad_request(
        "invalid_multipart",
        format!("malformed multipart body: {e}"),
    )
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Reads a small text field, refusing more than [`MAX_TEXT_FIELD`] bytes.
async fn text(mut field: Field, name: &'static str) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(malformed)?;
        if buf.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(ValidationError::new(
                name,
                format!("is longer than {MAX_TEXT_FIELD} bytes"),
            )
            .into());
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| ValidationError::new(name, "is not valid UTF-8").into())
}

/// Streams a body (a form's file field, or a raw request body) into storage through the
/// package manager.
///
/// The connection's chunks are passed through a bounded channel to the upload, which runs
/// in a task of its own; the channel is only closed cleanly at the body's real end, so a
/// client that disconnects mid-file leaves a failed upload, never a truncated package.
async fn stream_into_storage<S, E>(
    mgr: &PackageManager,
    mut body: S,
) -> Result<StagedUpload, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (tx, rx) = body_channel(BODY_CHANNEL_CHUNKS);
    let pump = async move {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => {
                    if tx.send(bytes).await.is_err() {
                        // The upload stopped reading (limit crossed, storage failed).
                        return;
                    }
                }
                Err(e) => {
                    tx.fail(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
                        .await;
                    return;
                }
            }
        }
        tx.finish().await;
    };
    let ((), staged) = futures_util::future::join(pump, mgr.stage(rx)).await;
    Ok(staged?)
}
