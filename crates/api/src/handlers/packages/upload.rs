//! The two upload routes: a multipart form (`POST /packages`) and a raw body
//! (`PUT /packages/{name}/{version}/{platform}/{arch}`).

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_model::{
    Arch, Checksum, Description, ErrorCode, FileName, Package, PackageName, Platform,
    SignatureFormat, Version,
};
use agentpkg_packagemgr::UploadMeta;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::body::upload_stream;
use super::{CoordinatesPath, checksum_header, content_length};
use crate::error::ErrorBody;
use crate::handlers::download::PackageBytes;
use crate::views::PackageView;
use crate::{ApiError, ApiState, Principal, Publisher, RequestContext};

/// Room for the form's text fields and boundaries around the file itself.
const FORM_OVERHEAD: u64 = 1024 * 1024;

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
    /// A detached signature of the file (armoured or binary, at most 64 KiB), verified
    /// before the package becomes visible. Sent before `file`, it is checked before the
    /// file is read.
    #[schema(value_type = Option<String>, format = Binary)]
    signature: Option<Vec<u8>>,
    /// The signature's format: `openpgp` (default, verified), or `minisign`, `cosign`,
    /// `sigstore-bundle` (kept unverified).
    signature_format: Option<SignatureFormat>,
    /// `true`: publish even though another version of this name already has these bytes
    /// (admins only; otherwise such an upload is refused with `409 same_bytes`).
    republish: Option<bool>,
}

/// Upload a package (form)
///
/// A `multipart/form-data` upload with the fields `file`, `name`, `version`, `platform`,
/// `arch`, and optionally `description`, `sha256`, `signature` and `signature_format`, in
/// any order. The file streams to storage as it arrives. Text fields are checked as soon
/// as they arrive; if all coordinates come before the file, a duplicate is refused before
/// the file is read, and so is a signature that cannot verify. An OpenPGP signature is
/// verified before the package becomes visible. Whatever fails, nothing is stored. Needs
/// the publisher role.
#[utoipa::path(
    post,
    path = "/api/v1/packages",
    tag = "packages",
    params(("X-Checksum-Sha256" = Option<Checksum>, Header, description = "Expected SHA-256 of the file (as the sha256 field)")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored", body = PackageView, headers(
            ("Location" = String, description = "The new package's URL"),
        )),
        (status = 400, description = "A field is missing, duplicated, unknown or invalid, or the body is malformed or truncated", body = ErrorBody),
        (status = 409, description = "A package with these coordinates exists", body = ErrorBody),
        (status = 413, description = "The package is larger than the limit", body = ErrorBody),
        (status = 415, description = "The body is not multipart/form-data", body = ErrorBody),
        (status = 422, description = "The bytes do not match the announced SHA-256, the signature does not verify, or a required signature is missing", body = ErrorBody),
    ),
)]
pub(crate) async fn upload(
    publisher: Publisher,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    req: HttpRequest,
    multipart: Multipart,
) -> Result<HttpResponse, ApiError> {
    let result = upload_form(&state, &publisher.principal, &req, multipart).await;
    counted(&state, &ctx, &publisher.principal, result).await
}

/// Counts and audits an upload's outcome (any route: form, raw body, direct): bytes
/// published, or the reason it was refused.
pub(crate) async fn counted(
    state: &ApiState,
    ctx: &RequestContext,
    principal: &Principal,
    result: Result<Package, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let caller = ctx.caller(&principal.0);
    let gate = state.packages.gate(&caller);
    match result {
        Ok(package) => {
            state.metrics.uploaded(package.file_size);
            gate.settle_upload(Ok(&package)).await;
            created(package)
        }
        Err(e) => {
            state.metrics.rejected(e.code);
            tracing::info!(code = %e.code, status = e.status().as_u16(), "upload refused");
            gate.settle_upload(Err(e.code)).await;
            Err(e)
        }
    }
}

async fn upload_form(
    state: &ApiState,
    principal: &Principal,
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
            ErrorCode::UnsupportedMediaType,
            "the upload must be multipart/form-data",
        ));
    }
    if let Some(length) = content_length(req)
        && length > limit.saturating_add(FORM_OVERHEAD)
    {
        return Err(ApiError::too_large(limit));
    }
    let header_sha256 = checksum_header(req)?;

    let mut upload = state.packages.form_upload(principal.actor());
    match super::form::read(&mut upload, &mut multipart).await {
        Ok(()) => Ok(upload.finish(header_sha256).await?),
        Err(e) => {
            upload.abandon().await;
            Err(e)
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PutParams {
    /// File name for downloads (default: the package name).
    #[param(value_type = Option<FileName>)]
    filename: Option<String>,
    #[param(value_type = Option<Description>)]
    description: Option<String>,
    /// `true`: publish even though another version of this name already has these bytes
    /// (admins only; otherwise such an upload is refused with `409 same_bytes`).
    #[serde(default)]
    republish: bool,
}

/// Upload a package (raw body)
///
/// The request body is the file (`curl -T file URL`). `X-Checksum-Sha256` is verified
/// when sent; `X-Signature` (base64) carries a detached signature, checked against the
/// trusted keys before the body is read and over the bytes before the package becomes
/// visible. Same guarantees as the form upload: a duplicate is refused before the body is
/// read, and any failure leaves nothing behind. Needs the publisher role.
#[utoipa::path(
    put,
    path = "/api/v1/packages/{name}/{version}/{platform}/{arch}",
    tag = "packages",
    params(
        CoordinatesPath,
        PutParams,
        ("X-Checksum-Sha256" = Option<Checksum>, Header, description = "Expected SHA-256 of the body"),
        ("X-Signature" = Option<String>, Header, description = "A detached signature of the body, base64"),
        ("X-Signature-Format" = Option<SignatureFormat>, Header, description = "The signature's format (default openpgp)"),
    ),
    request_body(content = PackageBytes, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored", body = PackageView, headers(
            ("Location" = String, description = "The new package's URL"),
        )),
        (status = 400, description = "Invalid coordinates or parameters, or a truncated body", body = ErrorBody),
        (status = 404, description = "No such route (a coordinate with '/')", body = ErrorBody),
        (status = 409, description = "A package with these coordinates exists", body = ErrorBody),
        (status = 413, description = "The package is larger than the limit", body = ErrorBody),
        (status = 422, description = "The bytes do not match the announced SHA-256, the signature does not verify, or a required signature is missing", body = ErrorBody),
    ),
)]
pub(crate) async fn put(
    publisher: Publisher,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<CoordinatesPath>,
    params: web::Query<PutParams>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let put = put_body(&state, &publisher.principal, &req, &path, &params, body);
    counted(&state, &ctx, &publisher.principal, put.await).await
}

async fn put_body(
    state: &ApiState,
    principal: &Principal,
    req: &HttpRequest,
    path: &CoordinatesPath,
    params: &PutParams,
    body: web::Payload,
) -> Result<Package, ApiError> {
    let coordinates = path.parse()?;
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
        publisher: Some(principal.actor()),
        signature: super::signature::from_headers(req)?,
        size: content_length(req),
        republish: params.republish,
        coordinates,
    };
    upload_stream(&state.packages, meta, body).await
}

fn created(package: Package) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/packages/{}", package.id)))
        .json(PackageView::from(&package)))
}
