//! Resumable uploads over tus 1.0.0 (<https://tus.io/protocols/resumable-upload>), with the
//! extensions creation, creation-with-upload, expiration, checksum, termination and
//! concatenation. The protocol is read and written here; sessions, parts and publishing
//! are the package manager's (`resumable/`). The protocol's headers are read and written
//! in `protocol.rs`.
//!
//! - `OPTIONS /api/v1/uploads` says what is supported (no credentials needed).
//! - `POST /api/v1/uploads` creates an upload (`Upload-Length`, `Upload-Metadata` with
//!   `name`, `version`, `platform`, `arch`, optional `filename`, `description`, `sha256`,
//!   `signature`, `signature_format`), or a partial one (`Upload-Concat: partial`), or
//!   joins partial ones (`Upload-Concat: final;<url> <url>…`) and publishes them.
//! - `HEAD /api/v1/uploads/{id}` says how far it got; `PATCH` adds bytes at
//!   `Upload-Offset`; `DELETE` ends it and removes what it stored.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_model::{ErrorCode, SessionKind, UploadSessionId, ValidationError};
use agentpkg_packagemgr::{Append, Appended, NewSession, RequestChecksum, body_channel};

use crate::error::ErrorBody;
use crate::handlers::packages::body::{BODY_CHANNEL_CHUNKS, pump};
use crate::handlers::packages::upload::counted;
use crate::handlers::packages::{checksum_header, content_length};
use crate::views::PackageView;
use crate::{ApiError, ApiState, Principal, Publisher, RequestContext};

mod protocol;

use protocol::{
    answer, offset_content_type, request_checksum, session_of_url, set_session_headers, target_of,
    text_header, tus_version,
};

pub(crate) const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str =
    "creation,creation-with-upload,expiration,checksum,termination,concatenation";
const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// The longest `Upload-Metadata` taken (room for a signature in it: a Sigstore bundle of up
/// to about 24 KiB as itself, or an OpenPGP signature base64'd twice).
const MAX_METADATA: usize = 32 * 1024;
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
/// `platform`, `arch`, optional `filename`, `description`, `sha256`, `signature` (itself
/// base64; a `sigstore-bundle` may instead be the bundle's JSON), `signature_format`)
/// describe the package and are checked now (400, 409, 413). With
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
    if checksum_header(req)?.is_some() {
        return Err(ValidationError::new(
            "X-Checksum-Sha256",
            "belongs on the PATCH that completes the upload; a new upload takes `sha256` in Upload-Metadata",
        )
        .into());
    }
    let concat = text_header(req, "Upload-Concat")?;
    if let Some(urls) = concat.as_deref().and_then(|c| c.strip_prefix("final;")) {
        return create_final(principal, state, ctx, urls, metadata).await;
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
            // The session's creation checks the publisher's rights to the target.
            target_of(&metadata)?
        }
        _ => None,
    };
    let session = state
        .packages
        .gate(&ctx.caller(&principal.0))
        .open_session(NewSession {
            kind,
            target,
            metadata,
            length,
        })
        .await?;
    let session_id = session.id.clone();
    // creation-with-upload: bytes in the creating request go at offset 0.
    let has_body = content_length(req).is_some_and(|n| n > 0)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let (status, appended) = if has_body {
        offset_content_type(req)?;
        let append = Append {
            offset: 0,
            content_length: content_length(req),
            checksum: request_checksum(req)?,
            package_sha256: None,
        };
        match write(state, ctx, &session.id, principal, append, body).await {
            Ok(appended) => (StatusCode::CREATED, appended),
            // A body cut short: the upload exists with what arrived; the client learns
            // where it got with HEAD. Any other error (a refusal, a checksum) is the answer.
            Err(e) if matches!(e.code, ErrorCode::IncompleteBody | ErrorCode::BodyTimeout) => (
                StatusCode::CREATED,
                Appended {
                    session: state.packages.session(&session.id, Some(&actor)).await?,
                    package: None,
                },
            ),
            Err(e) => return Err(e),
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
    set_location(&mut response, &session_id)?;
    Ok(response)
}

/// `Upload-Concat: final;<url> …`: joins the partial uploads and publishes the package.
async fn create_final(
    principal: &Principal,
    state: &ApiState,
    ctx: &RequestContext,
    urls: &str,
    metadata: String,
) -> Result<HttpResponse, ApiError> {
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
    let joined = state
        .packages
        .concatenate(&parts, target, metadata, Some(&principal.actor()))
        .await;
    let (session, package) = match joined {
        Ok(joined) => joined,
        Err(e) => return Err(refusal(state, ctx, principal, e).await),
    };
    let mut response = counted(state, ctx, principal, Ok(package)).await?;
    set_session_headers(&mut response, &session);
    set_location(&mut response, &session.id)?;
    Ok(response)
}

fn set_location(response: &mut HttpResponse, id: &UploadSessionId) -> Result<(), ApiError> {
    response.headers_mut().insert(
        header::LOCATION,
        header::HeaderValue::from_str(&format!("{URL_PREFIX}{id}")).map_err(ApiError::internal)?,
    );
    Ok(())
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
/// byte publishes the package (200 with it) or refuses it, leaving nothing. The request
/// that completes the upload may name the whole package's SHA-256 in `X-Checksum-Sha256`
/// (a client that hashed the file while sending it): the package is published only if
/// its bytes have it.
#[utoipa::path(
    patch,
    path = "/api/v1/uploads/{id}",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "The upload's id"),
        ("Tus-Resumable" = String, Header, description = "`1.0.0`"),
        ("Upload-Offset" = u64, Header, description = "Where these bytes start"),
        ("Upload-Checksum" = Option<String>, Header, description = "`sha1|sha256 <base64>` of this body"),
        ("X-Checksum-Sha256" = Option<String>, Header, description = "The whole package's SHA-256 (hex), on the request that completes the upload: for a client that hashes the file while sending it. The package is published only if its bytes have it"),
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
        package_sha256: checksum_header(req)?,
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
            .gate(&publisher.caller)
            .cancel_session(&id)
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
        Err(e) => Err(refusal(state, ctx, principal, e).await),
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

/// The answer to an error; a refusal of the package at publishing (not a protocol error)
/// is counted and audited as any upload's.
async fn refusal(
    state: &ApiState,
    ctx: &RequestContext,
    principal: &Principal,
    e: agentpkg_packagemgr::Error,
) -> ApiError {
    use agentpkg_packagemgr::Error as E;
    let audited = matches!(
        e,
        E::Conflict(_)
            | E::ChecksumMismatch { .. }
            | E::SignatureInvalid(_)
            | E::SignatureRequired(_)
    );
    let e = ApiError::from(e);
    if !audited {
        return e;
    }
    counted(state, ctx, principal, Err(e.clone()))
        .await
        .err()
        .unwrap_or(e)
}
