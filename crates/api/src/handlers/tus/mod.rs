//! Resumable uploads over tus 1.0.0 (<https://tus.io/protocols/resumable-upload>), with the
//! extensions creation, creation-with-upload, expiration, checksum, termination and
//! concatenation. The protocol is read and written here; sessions, parts and publishing
//! are the package manager's (`resumable.rs`).
//!
//! - `OPTIONS /api/v1/uploads` says what is supported (no credentials needed).
//! - `POST /api/v1/uploads` creates an upload (`Upload-Length`, `Upload-Metadata` with
//!   `name`, `version`, `platform`, `arch`, optional `filename`, `description`, `sha256`,
//!   `signature`, `signature_format`), or a partial one (`Upload-Concat: partial`), or
//!   joins partial ones (`Upload-Concat: final;<url> <url>…`) and publishes them.
//! - `HEAD /api/v1/uploads/{id}` says how far it got; `PATCH` adds bytes at
//!   `Upload-Offset`; `DELETE` ends it and removes what it stored.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use agentpkg_model::{
    Arch, Checksum, Coordinates, Description, FileName, PackageName, Platform, SessionKind,
    SessionTarget, SignatureFormat, UploadSession, UploadSessionId, ValidationError, Version,
};
use agentpkg_packagemgr::{Append, Appended, NewSession, RequestChecksum, body_channel};
use base64::Engine;

use crate::error::ErrorBody;
use crate::handlers::packages::body::{BODY_CHANNEL_CHUNKS, pump};
use crate::handlers::packages::content_length;
use crate::handlers::packages::upload::counted;
use crate::views::PackageView;
use crate::{ApiError, ApiState, Principal, Publisher, RequestContext};

pub(crate) const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str =
    "creation,creation-with-upload,expiration,checksum,termination,concatenation";
const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// The longest `Upload-Metadata` taken (room for a signature in it).
const MAX_METADATA: usize = 16 * 1024;
const URL_PREFIX: &str = "/api/v1/uploads/";

/// Resumable upload: what is supported
///
/// tus 1.0.0 discovery: the protocol's version, its extensions, the largest upload and the
/// checksum algorithms. No credentials needed.
#[utoipa::path(
    options,
    path = "/api/v1/uploads",
    tag = "uploads",
    security(()),
    responses((status = 204, description = "Supported", headers(
        ("Tus-Version" = String, description = "`1.0.0`"),
        ("Tus-Extension" = String, description = "creation,creation-with-upload,expiration,checksum,termination,concatenation"),
        ("Tus-Max-Size" = u64, description = "The largest upload, in bytes"),
        ("Tus-Checksum-Algorithm" = String, description = "`sha1,sha256`"),
    ))),
)]
pub(crate) async fn options(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header(("Tus-Resumable", TUS_VERSION))
        .insert_header(("Tus-Version", TUS_VERSION))
        .insert_header(("Tus-Extension", EXTENSIONS))
        .insert_header((
            "Tus-Max-Size",
            state.packages.config().max_upload_bytes.to_string(),
        ))
        .insert_header((
            "Tus-Checksum-Algorithm",
            RequestChecksum::ALGORITHMS.join(","),
        ))
        .finish()
}

/// Resumable upload: create
///
/// tus creation. `Upload-Length` and `Upload-Metadata` (base64 values: `name`, `version`,
/// `platform`, `arch`, optional `filename`, `description`, `sha256`, `signature`,
/// `signature_format`) describe the package and are checked now (400, 409, 413). With
/// `Upload-Concat: partial`, a piece of a file (no metadata needed); with `Upload-Concat:
/// final;<url> …`, the join of complete partial uploads, published at once (201 with the
/// package). A body (`application/offset+octet-stream`) is the first bytes. Needs the
/// publisher role.
#[utoipa::path(
    post,
    path = "/api/v1/uploads",
    tag = "uploads",
    params(
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
        ("Upload-Length" = Option<u64>, Header, description = "The file's size (not with a final upload)"),
        ("Upload-Metadata" = Option<String>, Header, description = "`key base64,key base64`"),
        ("Upload-Concat" = Option<String>, Header, description = "`partial`, or `final;<upload URL> …`"),
    ),
    responses(
        (status = 201, description = "Created (a final upload: published, with the package)", headers(
            ("Location" = String, description = "The upload's URL"),
            ("Upload-Expires" = String, description = "When it expires unless written to"),
        )),
        (status = 400, description = "A missing or invalid header or metadata field", body = ErrorBody),
        (status = 404, description = "A partial upload named by a final one does not exist (or is not yours)", body = ErrorBody),
        (status = 409, description = "The package exists, or a partial upload is not complete", body = ErrorBody),
        (status = 412, description = "No or another `Tus-Resumable`", body = ErrorBody),
        (status = 413, description = "Larger than the upload limit", body = ErrorBody),
        (status = 415, description = "A body that is not application/offset+octet-stream", body = ErrorBody),
        (status = 422, description = "A final upload whose bytes do not match its sha256 or signature", body = ErrorBody),
        (status = 423, description = "A partial upload is being written to", body = ErrorBody),
        (status = 429, description = "Too many open uploads for this user", body = ErrorBody),
        (status = 460, description = "The body's Upload-Checksum does not match", body = ErrorBody),
    ),
)]
pub(crate) async fn create(
    publisher: Publisher,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    answer(create_inner(&publisher.principal, &state, &ctx, &req, body).await)
}

async fn create_inner(
    principal: &Principal,
    state: &ApiState,
    ctx: &RequestContext,
    req: &HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    tus_version(req)?;
    let actor = principal.actor();
    let metadata = text_header(req, "Upload-Metadata")?.unwrap_or_default();
    if metadata.len() > MAX_METADATA {
        return Err(ValidationError::new(
            "Upload-Metadata",
            format!("is longer than {MAX_METADATA} bytes"),
        )
        .into());
    }
    let concat = text_header(req, "Upload-Concat")?;
    if let Some(urls) = concat.as_deref().and_then(|c| c.strip_prefix("final;")) {
        let parts = urls
            .split_whitespace()
            .map(session_of_url)
            .collect::<Result<Vec<_>, _>>()?;
        let target = target_of(&metadata)?.ok_or_else(|| {
            ValidationError::new(
                "Upload-Metadata",
                "must name the package: name, version, platform and arch",
            )
        })?;
        principal.may_write(&target.coordinates.name)?;
        let result = state
            .packages
            .concatenate(&parts, target, metadata, Some(&actor))
            .await;
        let (session, package) = match result {
            Ok(done) => done,
            Err(e) => {
                let refused = counted_refusal(&e);
                let e = ApiError::from(e);
                if refused {
                    return counted(state, ctx, principal, Err(e)).await;
                }
                return Err(e);
            }
        };
        let mut response = counted(state, ctx, principal, Ok(package.clone())).await?;
        set_session_headers(&mut response, &session);
        response.headers_mut().insert(
            header::LOCATION,
            header::HeaderValue::from_str(&format!("{URL_PREFIX}{}", session.id))
                .map_err(ApiError::internal)?,
        );
        return Ok(response);
    }
    let kind = match concat.as_deref() {
        None => SessionKind::Whole,
        Some("partial") => SessionKind::Partial,
        Some(_) => {
            return Err(ValidationError::new(
                "Upload-Concat",
                "must be `partial` or `final;<upload URL> …`",
            )
            .into());
        }
    };
    let length = match text_header(req, "Upload-Length")? {
        Some(value) => value
            .parse::<u64>()
            .map_err(|_| ValidationError::new("Upload-Length", "must be a whole number"))?,
        None if req.headers().contains_key("Upload-Defer-Length") => {
            return Err(ValidationError::new(
                "Upload-Defer-Length",
                "is not supported: send Upload-Length",
            )
            .into());
        }
        None => return Err(ValidationError::new("Upload-Length", "is required").into()),
    };
    let target = match kind {
        SessionKind::Whole => {
            let target = target_of(&metadata)?;
            if let Some(target) = &target {
                principal.may_write(&target.coordinates.name)?;
            }
            target
        }
        _ => None,
    };
    let session = state
        .packages
        .create_session(
            NewSession {
                kind,
                target,
                metadata,
                length,
            },
            Some(&actor),
        )
        .await?;
    let location = format!("{URL_PREFIX}{}", session.id);
    // creation-with-upload: bytes in the creating request go at offset 0.
    let has_body = content_length(req).is_some_and(|n| n > 0)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let (status, appended) = if has_body {
        offset_content_type(req)?;
        let append = Append {
            offset: 0,
            content_length: content_length(req),
            checksum: request_checksum(req)?,
        };
        match write(state, ctx, &session.id, principal, append, body).await {
            Ok(appended) => (StatusCode::CREATED, appended),
            // The upload exists; the client learns where it got with HEAD.
            Err(e) if e.status.is_server_error() => return Err(e),
            Err(_) => (
                StatusCode::CREATED,
                Appended {
                    session: state.packages.session(&session.id, Some(&actor)).await?,
                    package: None,
                },
            ),
        }
    } else {
        (
            StatusCode::CREATED,
            Appended {
                session,
                package: None,
            },
        )
    };
    let mut response = completed(state, ctx, principal, status, appended).await?;
    response.headers_mut().insert(
        header::LOCATION,
        header::HeaderValue::from_str(&location).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// Resumable upload: how far it got
///
/// tus `HEAD`: the offset to continue from. Only its creator (or an admin) sees an upload.
#[utoipa::path(
    head,
    path = "/api/v1/uploads/{id}",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "The upload's id"),
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
    ),
    responses(
        (status = 200, description = "Where it stands", headers(
            ("Upload-Offset" = u64, description = "Bytes received and kept"),
            ("Upload-Length" = u64, description = "The file's size"),
            ("Upload-Expires" = String, description = "When it expires unless written to"),
        )),
        (status = 404, description = "No such upload (expired, ended, or not yours); a HEAD answer has no body", body = ErrorBody),
        (status = 412, description = "No or another `Tus-Resumable`", body = ErrorBody),
    ),
)]
pub(crate) async fn head(
    publisher: Publisher,
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    answer(head_inner(&publisher.principal, &state, &req, &id).await)
}

async fn head_inner(
    principal: &Principal,
    state: &ApiState,
    req: &HttpRequest,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    tus_version(req)?;
    let id = UploadSessionId::parse(id).map_err(|_| ApiError::not_found("no such upload"))?;
    let session = state
        .packages
        .session(&id, Some(&principal.actor()))
        .await?;
    let mut response = HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish();
    set_session_headers(&mut response, &session);
    if !session.metadata.is_empty()
        && let Ok(value) = header::HeaderValue::from_str(&session.metadata)
    {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("upload-metadata"), value);
    }
    Ok(response)
}

/// Resumable upload: send bytes
///
/// tus `PATCH`: the body's bytes at `Upload-Offset`. A connection that drops keeps every
/// part stored; with `Upload-Checksum` the request is kept whole or not at all. The last
/// byte publishes the package (200 with it) or refuses it, leaving nothing.
#[utoipa::path(
    patch,
    path = "/api/v1/uploads/{id}",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "The upload's id"),
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
        ("Upload-Offset" = u64, Header, description = "Where these bytes start"),
        ("Upload-Checksum" = Option<String>, Header, description = "`sha1|sha256 <base64>` of this body"),
    ),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses(
        (status = 200, description = "The last byte: published", body = PackageView),
        (status = 204, description = "Kept", headers(
            ("Upload-Offset" = u64, description = "Bytes received and kept"),
        )),
        (status = 400, description = "A missing or invalid header, or a body cut short", body = ErrorBody),
        (status = 404, description = "No such upload (expired, ended, or not yours)", body = ErrorBody),
        (status = 409, description = "Another offset than the upload's, or the package was published meanwhile", body = ErrorBody),
        (status = 412, description = "No or another `Tus-Resumable`", body = ErrorBody),
        (status = 413, description = "Bytes past Upload-Length", body = ErrorBody),
        (status = 415, description = "Not application/offset+octet-stream", body = ErrorBody),
        (status = 422, description = "The file does not match its sha256 or signature", body = ErrorBody),
        (status = 423, description = "Another request is writing to it", body = ErrorBody),
        (status = 460, description = "The body's Upload-Checksum does not match; nothing kept", body = ErrorBody),
    ),
)]
pub(crate) async fn patch(
    publisher: Publisher,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Payload,
) -> HttpResponse {
    answer(patch_inner(&publisher.principal, &state, &ctx, &req, &id, body).await)
}

async fn patch_inner(
    principal: &Principal,
    state: &ApiState,
    ctx: &RequestContext,
    req: &HttpRequest,
    id: &str,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    tus_version(req)?;
    offset_content_type(req)?;
    let id = UploadSessionId::parse(id).map_err(|_| ApiError::not_found("no such upload"))?;
    let offset = text_header(req, "Upload-Offset")?
        .ok_or_else(|| ValidationError::new("Upload-Offset", "is required"))?
        .parse::<u64>()
        .map_err(|_| ValidationError::new("Upload-Offset", "must be a whole number"))?;
    let append = Append {
        offset,
        content_length: content_length(req),
        checksum: request_checksum(req)?,
    };
    match write(state, ctx, &id, principal, append, body).await {
        Ok(appended) => completed(state, ctx, principal, StatusCode::NO_CONTENT, appended).await,
        Err(e) => Err(e),
    }
}

/// Resumable upload: end it
///
/// tus termination: the upload and everything it stored are removed.
#[utoipa::path(
    delete,
    path = "/api/v1/uploads/{id}",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "The upload's id"),
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
    ),
    responses(
        (status = 204, description = "Ended"),
        (status = 404, description = "No such upload (expired, ended, or not yours)", body = ErrorBody),
        (status = 412, description = "No or another `Tus-Resumable`", body = ErrorBody),
    ),
)]
pub(crate) async fn delete(
    publisher: Publisher,
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let result = async {
        tus_version(&req)?;
        let id = UploadSessionId::parse(&id).map_err(|_| ApiError::not_found("no such upload"))?;
        state
            .packages
            .terminate(&id, Some(&publisher.principal.actor()))
            .await?;
        Ok(HttpResponse::NoContent().finish())
    };
    answer(result.await)
}

/// Streams the body into the session; a refusal by publish is counted and audited as
/// any upload's.
async fn write(
    state: &ApiState,
    ctx: &RequestContext,
    id: &UploadSessionId,
    principal: &Principal,
    append: Append,
    body: web::Payload,
) -> Result<Appended, ApiError> {
    let actor = principal.actor();
    let (tx, rx) = body_channel(BODY_CHANNEL_CHUNKS);
    let ((), result) = futures_util::future::join(
        pump(body, tx),
        state.packages.append(id, Some(&actor), append, rx),
    )
    .await;
    match result {
        Ok(appended) => Ok(appended),
        Err(e) if counted_refusal(&e) => {
            let e = ApiError::from(e);
            match counted(state, ctx, principal, Err(e.clone())).await {
                Ok(_) => Err(e),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The answer to a request that added bytes: the package when they completed it.
async fn completed(
    state: &ApiState,
    ctx: &RequestContext,
    principal: &Principal,
    status: StatusCode,
    appended: Appended,
) -> Result<HttpResponse, ApiError> {
    let mut response = match appended.package {
        Some(package) => {
            let mut response = counted(state, ctx, principal, Ok(package.clone())).await?;
            // The package is in the body; tus clients only need a success.
            if status != StatusCode::CREATED {
                *response.status_mut() = StatusCode::OK;
            }
            response
        }
        None => HttpResponse::build(status).finish(),
    };
    set_session_headers(&mut response, &appended.session);
    Ok(response)
}

/// Refusals of a package at publishing (not protocol errors): counted and audited.
fn counted_refusal(e: &agentpkg_packagemgr::Error) -> bool {
    use agentpkg_packagemgr::Error as E;
    matches!(
        e,
        E::Conflict(_)
            | E::ChecksumMismatch { .. }
            | E::SignatureInvalid(_)
            | E::SignatureRequired(_)
    )
}

fn set_session_headers(response: &mut HttpResponse, session: &UploadSession) {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            headers.insert(header::HeaderName::from_static(name), value);
        }
    };
    set("tus-resumable", TUS_VERSION.to_owned());
    set("upload-offset", session.progress.offset.to_string());
    set("upload-length", session.length.to_string());
    set(
        "upload-expires",
        session
            .expires_at
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string(),
    );
    match session.kind {
        SessionKind::Whole => {}
        SessionKind::Partial => set("upload-concat", "partial".to_owned()),
        SessionKind::Final => set(
            "upload-concat",
            format!(
                "final;{}",
                session
                    .parts_of
                    .iter()
                    .map(|id| format!("{URL_PREFIX}{id}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
    }
}

/// Every tus answer carries `Tus-Resumable`, errors included (with their JSON body).
fn answer(result: Result<HttpResponse, ApiError>) -> HttpResponse {
    let mut response = match result {
        Ok(response) => response,
        Err(e) => {
            let unsupported = e.code == "unsupported_tus_version";
            let mut response = e.error_response();
            if unsupported {
                response.headers_mut().insert(
                    header::HeaderName::from_static("tus-version"),
                    header::HeaderValue::from_static(TUS_VERSION),
                );
            }
            response
        }
    };
    response.headers_mut().insert(
        header::HeaderName::from_static("tus-resumable"),
        header::HeaderValue::from_static(TUS_VERSION),
    );
    response
}

fn tus_version(req: &HttpRequest) -> Result<(), ApiError> {
    match text_header(req, "Tus-Resumable")? {
        Some(v) if v == TUS_VERSION => Ok(()),
        other => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "unsupported_tus_version",
            match other {
                Some(v) => {
                    format!("tus version {v:?} is not supported; this server speaks {TUS_VERSION}")
                }
                None => format!("the Tus-Resumable header is required ({TUS_VERSION})"),
            },
        )),
    }
}

fn offset_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.split(';').next().map(str::trim) == Some(OFFSET_CONTENT_TYPE) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the body must be sent as {OFFSET_CONTENT_TYPE}"),
        ))
    }
}

fn text_header(req: &HttpRequest, name: &'static str) -> Result<Option<String>, ApiError> {
    req.headers()
        .get(name)
        .map(|v| {
            v.to_str()
                .map(|s| s.trim().to_owned())
                .map_err(|_| ValidationError::new(name, "is not valid text").into())
        })
        .transpose()
}

/// `Upload-Checksum: <algorithm> <base64 digest>`.
fn request_checksum(req: &HttpRequest) -> Result<Option<RequestChecksum>, ApiError> {
    let Some(value) = text_header(req, "Upload-Checksum")? else {
        return Ok(None);
    };
    let invalid = || ValidationError::new("Upload-Checksum", "must be `<algorithm> <base64>`");
    let (algorithm, digest) = value.split_once(' ').ok_or_else(invalid)?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| invalid())?;
    Ok(Some(RequestChecksum::new(algorithm, &digest)?))
}

/// The upload an `Upload-Concat` URL names: an absolute URL or a path, ending in an id.
fn session_of_url(url: &str) -> Result<UploadSessionId, ApiError> {
    let path = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
    path.strip_prefix(URL_PREFIX)
        .and_then(|id| UploadSessionId::parse(id).ok())
        .ok_or_else(|| {
            ValidationError::new(
                "Upload-Concat",
                format!("{url:?} is not the URL of an upload here"),
            )
            .into()
        })
}

/// The package an upload's metadata describes; `None` when it names none.
fn target_of(metadata: &str) -> Result<Option<SessionTarget>, ApiError> {
    let mut name = None;
    let mut version = None;
    let mut platform = None;
    let mut arch = None;
    let mut filename = None;
    let mut description = None;
    let mut sha256 = None;
    let mut signature = None;
    let mut signature_format = None;
    for pair in metadata.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let value = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| {
                ValidationError::new(
                    "Upload-Metadata",
                    format!("{key}: not base64 of UTF-8 text"),
                )
            })?;
        let slot = match key {
            "name" => &mut name,
            "version" => &mut version,
            "platform" => &mut platform,
            "arch" => &mut arch,
            "filename" => &mut filename,
            "description" => &mut description,
            "sha256" => &mut sha256,
            "signature" => &mut signature,
            "signature_format" => &mut signature_format,
            // Clients add their own (filetype, …): kept as sent, not used.
            _ => continue,
        };
        *slot = Some(value);
    }
    if name.is_none() && version.is_none() && platform.is_none() && arch.is_none() {
        return Ok(None);
    }
    let missing =
        |field: &'static str| ValidationError::new(field, "is required in Upload-Metadata");
    let coordinates = Coordinates {
        name: PackageName::parse(&name.ok_or_else(|| missing("name"))?)?,
        version: Version::parse(&version.ok_or_else(|| missing("version"))?)?,
        platform: platform
            .ok_or_else(|| missing("platform"))?
            .parse::<Platform>()?,
        arch: arch.ok_or_else(|| missing("arch"))?.parse::<Arch>()?,
    };
    let signature = signature
        .map(|encoded| {
            let format = signature_format
                .as_deref()
                .map(str::parse::<SignatureFormat>)
                .transpose()?
                .unwrap_or(SignatureFormat::Openpgp);
            crate::handlers::packages::signature::from_base64(&encoded, format, "signature")
        })
        .transpose()?;
    Ok(Some(SessionTarget {
        coordinates,
        filename: filename.as_deref().map(FileName::parse).transpose()?,
        description: description
            .as_deref()
            .map(Description::parse)
            .transpose()?
            .unwrap_or_default(),
        expected_sha256: sha256
            .as_deref()
            .map(|s| Checksum::parse(s.trim()))
            .transpose()?,
        signature,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn metadata_names_the_package_and_ignores_other_keys() {
        let metadata = format!(
            "name {},version {},platform {},arch {},filetype {},sha256 {}",
            b64("agent"),
            b64("1.2.3"),
            b64("linux"),
            b64("amd64"),
            b64("application/gzip"),
            b64(&"ab".repeat(32)),
        );
        let target = target_of(&metadata).unwrap().unwrap();
        assert_eq!(target.coordinates.name.as_str(), "agent");
        assert_eq!(target.coordinates.version.to_string(), "1.2.3");
        assert!(target.expected_sha256.is_some());
        assert!(target_of("").unwrap().is_none());
        assert!(
            target_of(&format!("filename {}", b64("x")))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_metadata_is_refused_with_the_field() {
        let partial = format!("name {}", b64("agent"));
        assert!(target_of(&partial).is_err());
        let bad_version = format!(
            "name {},version {},platform {},arch {}",
            b64("agent"),
            b64("not-semver"),
            b64("linux"),
            b64("amd64")
        );
        assert_eq!(target_of(&bad_version).unwrap_err().field, Some("version"));
        assert!(target_of("name ***").is_err());
    }

    #[test]
    fn concat_urls_may_be_absolute_or_paths() {
        let id = "ab".repeat(16);
        for url in [
            format!("http://localhost:8080/api/v1/uploads/{id}"),
            format!("/api/v1/uploads/{id}"),
        ] {
            assert_eq!(session_of_url(&url).unwrap().as_str(), id);
        }
        for bad in [
            "/api/v1/packages/1".to_owned(),
            format!("/api/v1/uploads/{id}/../x"),
            "http://host".to_owned(),
        ] {
            assert!(session_of_url(&bad).is_err(), "{bad}");
        }
    }
}
