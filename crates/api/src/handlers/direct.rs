//! Direct uploads: a presigned `PUT` straight to object storage, then a completion that
//! publishes what the store verified.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use agentpkg_model::{
    Arch, Checksum, Coordinates, Description, DirectUploadId, FileName, PackageName, Platform,
    SignatureFormat, Version,
};
use agentpkg_packagemgr::UploadMeta;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::views::PackageView;
use crate::{ApiError, ApiState, Publisher, RequestContext};

/// A direct upload to ask for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewDirectUpload {
    #[schema(value_type = PackageName)]
    name: String,
    #[schema(value_type = Version)]
    version: String,
    #[schema(value_type = Platform)]
    platform: String,
    #[schema(value_type = Arch)]
    arch: String,
    /// The file's exact size in bytes (at most 5 GiB, S3's single-PUT limit, and the
    /// upload limit).
    size: u64,
    /// The file's SHA-256: the store refuses any other bytes.
    #[schema(value_type = Checksum)]
    sha256: String,
    #[schema(value_type = Option<FileName>)]
    filename: Option<String>,
    #[schema(value_type = Option<Description>)]
    description: Option<String>,
    /// A detached signature of the file, base64; verified at completion.
    signature: Option<String>,
    /// Its format (default `openpgp`).
    signature_format: Option<SignatureFormat>,
}

/// Where and how to send the file.
#[derive(Serialize, ToSchema)]
pub(crate) struct DirectUploadView {
    #[schema(example = "3f2a9c0e5b7d4e1f8a6b2c3d4e5f6a7b")]
    id: String,
    /// Always `PUT`.
    method: &'static str,
    /// The presigned URL of the object store.
    url: String,
    /// Headers the request must carry exactly (the checksum and the length are signed).
    headers: BTreeMap<String, String>,
    /// After this the URL no longer works and the upload cannot be completed.
    expires_at: DateTime<Utc>,
    /// `POST` here once the `PUT` succeeded.
    #[schema(example = "/api/v1/uploads/direct/3f2a9c0e5b7d4e1f8a6b2c3d4e5f6a7b/complete")]
    complete_url: String,
}

/// Start a direct upload
///
/// For large files on S3-backed registries: answers a presigned `PUT` URL for a fresh
/// object, which the store accepts only with exactly `size` bytes whose SHA-256 is
/// `sha256` (the headers given are signed), so the bytes go from the client to object
/// storage without passing through the registry. Everything a proxied upload checks before
/// its body is checked now: ownership, coordinates already taken (409), a signature and its
/// key. Complete it with `POST …/complete`. Needs the publisher role.
#[utoipa::path(
    post,
    path = "/api/v1/uploads/direct",
    tag = "packages",
    request_body = NewDirectUpload,
    responses(
        (status = 201, description = "Granted: PUT the file to `url` with `headers`", body = DirectUploadView),
        (status = 400, description = "An invalid field or signature", body = ErrorBody),
        (status = 409, description = "A package with these coordinates exists", body = ErrorBody),
        (status = 413, description = "Larger than the upload limit or 5 GiB", body = ErrorBody),
        (status = 422, description = "A required signature is missing, or it cannot verify", body = ErrorBody),
        (status = 501, description = "The registry stores bytes on a backend without presigned uploads (fs)", body = ErrorBody),
    ),
)]
pub(crate) async fn begin(
    publisher: Publisher,
    state: web::Data<ApiState>,
    body: web::Json<NewDirectUpload>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let coordinates = Coordinates {
        name: PackageName::parse(&body.name)?,
        version: Version::parse(&body.version)?,
        platform: body.platform.parse()?,
        arch: body.arch.parse()?,
    };
    let signature = body
        .signature
        .as_deref()
        .map(|encoded| {
            let format = body.signature_format.unwrap_or(SignatureFormat::Openpgp);
            crate::handlers::packages::signature::from_base64(encoded, format, "signature")
        })
        .transpose()?;
    let meta = UploadMeta {
        coordinates,
        filename: body.filename.as_deref().map(FileName::parse).transpose()?,
        description: body
            .description
            .as_deref()
            .map(Description::parse)
            .transpose()?
            .unwrap_or_default(),
        expected_sha256: Some(Checksum::parse(body.sha256.trim())?),
        publisher: Some(publisher.principal.actor()),
        signature,
        size: Some(body.size),
        republish: false,
    };
    let grant = state
        .packages
        .gate(&publisher.caller)
        .begin_direct(meta, body.size)
        .await?;
    let id = grant.upload.id.to_string();
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/uploads/direct/{id}")))
        .json(DirectUploadView {
            complete_url: format!("/api/v1/uploads/direct/{id}/complete"),
            id,
            method: "PUT",
            url: grant.put.url,
            headers: grant.put.headers.into_iter().collect(),
            expires_at: grant.upload.expires_at,
        }))
}

/// Complete a direct upload
///
/// Publishes the object the client stored: its size (and SHA-256, where the store reports
/// it) must be what was announced, and the coordinates still free; a refusal removes the
/// object. Only the user who started it (or an admin) completes it, once. Needs the
/// publisher role.
#[utoipa::path(
    post,
    path = "/api/v1/uploads/direct/{id}/complete",
    tag = "packages",
    params(("id" = String, Path, description = "The direct upload's id")),
    responses(
        (status = 201, description = "Published", body = PackageView, headers(
            ("Location" = String, description = "The new package's URL"),
        )),
        (status = 400, description = "Not an upload id", body = ErrorBody),
        (status = 404, description = "No such direct upload: completed, expired or another user's", body = ErrorBody),
        (status = 409, description = "The file has not been stored yet, or the coordinates were taken meanwhile", body = ErrorBody),
        (status = 422, description = "The stored object differs from what was announced, or the signature does not verify", body = ErrorBody),
        (status = 501, description = "The registry stores bytes on a backend without presigned uploads (fs)", body = ErrorBody),
    ),
)]
pub(crate) async fn complete(
    publisher: Publisher,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = DirectUploadId::parse(&id)?;
    let actor = publisher.principal.actor();
    let result = state.packages.complete_direct(&id, Some(&actor)).await;
    let result = result.map_err(ApiError::from);
    crate::handlers::packages::upload::counted(&state, &ctx, &publisher.principal, result).await
}
