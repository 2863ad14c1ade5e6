//! A package's detached signature: fetched by id or by coordinates, and attached to a
//! package that was published without one.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_model::{
    DetachedSignature, ErrorCode, MAX_SIGNATURE_BYTES, Package, SignatureBytes, SignatureFormat,
};
use base64::Engine;
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::CoordinatesPath;
use crate::error::ErrorBody;
use crate::handlers::download::SIGNATURE_KEY_HEADER;
use crate::views::PackageView;
use crate::{ApiError, ApiState, Publisher, Viewer};

/// The header of a raw `PUT` upload carrying its detached signature, base64-encoded.
pub(crate) const SIGNATURE_HEADER: &str = "X-Signature";
/// The signature's format, on uploads and on the signature's own answers.
pub(crate) const SIGNATURE_FORMAT_HEADER: &str = "X-Signature-Format";

/// Signature bytes, as sent.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Documentation only.
pub(crate) struct SignatureBody(Vec<u8>);

/// The signature a raw `PUT` carries in its headers, if any.
pub(super) fn from_headers(req: &HttpRequest) -> Result<Option<DetachedSignature>, ApiError> {
    let Some(value) = req.headers().get(SIGNATURE_HEADER) else {
        return Ok(None);
    };
    let format = format_header(req)?.unwrap_or(SignatureFormat::Openpgp);
    let encoded = value
        .to_str()
        .map_err(|_| malformed(format!("{SIGNATURE_HEADER} is not base64 text")))?;
    from_base64(encoded, format, SIGNATURE_HEADER).map(Some)
}

/// A signature sent as base64 text (a header, a JSON field named `what`).
/// A signature whose bytes came as they are.
pub(crate) fn as_sent(
    bytes: Vec<u8>,
    format: SignatureFormat,
) -> Result<DetachedSignature, ApiError> {
    Ok(DetachedSignature {
        format,
        bytes: signature_bytes(bytes)?,
    })
}

pub(crate) fn from_base64(
    encoded: &str,
    format: SignatureFormat,
    what: &str,
) -> Result<DetachedSignature, ApiError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed(format!("{what} is not base64 (standard alphabet, padded)")))?;
    Ok(DetachedSignature {
        format,
        bytes: signature_bytes(bytes)?,
    })
}

fn format_header(req: &HttpRequest) -> Result<Option<SignatureFormat>, ApiError> {
    req.headers()
        .get(SIGNATURE_FORMAT_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| {
                    agentpkg_model::ValidationError::new("signature_format", "is not valid text")
                })
                .and_then(str::parse)
        })
        .transpose()
        .map_err(ApiError::from)
}

/// Signature bytes within the limit, or a 400 `malformed_signature`.
pub(super) fn signature_bytes(bytes: Vec<u8>) -> Result<SignatureBytes, ApiError> {
    SignatureBytes::new(bytes).map_err(|e| malformed(e.to_string()))
}

pub(super) fn malformed(message: String) -> ApiError {
    ApiError {
        field: Some("signature"),
        ..ApiError::new(ErrorCode::MalformedSignature, message)
    }
}

pub(super) fn too_large() -> ApiError {
    malformed(format!(
        "signature is larger than {MAX_SIGNATURE_BYTES} bytes"
    ))
}

/// Get a package's signature
///
/// The detached signature as its publisher sent it (`application/pgp-signature` for
/// OpenPGP), with its format and, when a trusted key verified it, that key's fingerprint.
/// Verify it with `gpgv --keyring KEY.gpg SIG FILE`. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{id}/signature",
    tag = "signing",
    params(("id" = i64, Path, description = "Package id")),
    responses(
        (status = 200, description = "The signature: `application/pgp-signature` for OpenPGP, `text/plain` for minisign, `application/json` for a Sigstore bundle, `application/octet-stream` for cosign", content(
            (SignatureBody = "application/pgp-signature"),
            (SignatureBody = "text/plain"),
            (SignatureBody = "application/json"),
            (SignatureBody = "application/octet-stream"),
        ), headers(
            ("X-Signature-Format" = SignatureFormat, description = "The signature's format"),
            ("X-Signature-Key" = Option<String>, description = "The verifying key's fingerprint"),
        )),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such package, or it has no signature", body = ErrorBody),
    ),
)]
pub(crate) async fn get(
    viewer: Viewer,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let package = state.packages.gate(&viewer.caller).get(*id).await?;
    serve(&state, &package).await
}

/// Get a package's signature by coordinates
///
/// As `GET /packages/{id}/signature`, for the package at exactly these coordinates.
/// Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{name}/{version}/{platform}/{arch}/signature",
    tag = "signing",
    params(CoordinatesPath),
    responses(
        (status = 200, description = "The signature: `application/pgp-signature` for OpenPGP, `text/plain` for minisign, `application/json` for a Sigstore bundle, `application/octet-stream` for cosign", content(
            (SignatureBody = "application/pgp-signature"),
            (SignatureBody = "text/plain"),
            (SignatureBody = "application/json"),
            (SignatureBody = "application/octet-stream"),
        ), headers(
            ("X-Signature-Format" = SignatureFormat, description = "The signature's format"),
            ("X-Signature-Key" = Option<String>, description = "The verifying key's fingerprint"),
        )),
        (status = 400, description = "Invalid coordinates", body = ErrorBody),
        (status = 404, description = "No such package, or it has no signature", body = ErrorBody),
    ),
)]
pub(crate) async fn get_by_coordinates(
    viewer: Viewer,
    state: web::Data<ApiState>,
    path: web::Path<CoordinatesPath>,
) -> Result<HttpResponse, ApiError> {
    let coordinates = path.parse()?;
    let package = state
        .packages
        .gate(&viewer.caller)
        .find(&coordinates)
        .await?;
    serve(&state, &package).await
}

async fn serve(state: &ApiState, package: &Package) -> Result<HttpResponse, ApiError> {
    let (format, bytes) = state.packages.signature(package).await?;
    let armored = bytes.starts_with(b"-----BEGIN");
    let (content_type, extension) = match format {
        SignatureFormat::Openpgp if armored => ("application/pgp-signature", "asc"),
        SignatureFormat::Openpgp => ("application/pgp-signature", "sig"),
        SignatureFormat::Minisign => ("text/plain", "minisig"),
        SignatureFormat::Cosign => ("application/octet-stream", "sig"),
        SignatureFormat::SigstoreBundle => ("application/json", "sigstore.json"),
    };
    let filename = format!("{}.{extension}", package.filename.as_str());
    let mut answer = HttpResponse::Ok();
    answer
        .content_type(content_type)
        .insert_header((SIGNATURE_FORMAT_HEADER, format.as_str()))
        .insert_header((
            header::CONTENT_DISPOSITION,
            agentpkg_model::FileName::parse(&filename)
                .map(|f| f.content_disposition())
                .unwrap_or_else(|_| package.filename.content_disposition()),
        ));
    if let Some(key) = package
        .signature
        .as_ref()
        .and_then(|s| s.verified_by.as_ref())
        .and_then(|v| v.key())
    {
        answer.insert_header((SIGNATURE_KEY_HEADER, key.as_str()));
    }
    Ok(answer.body(bytes))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AttachParams {
    /// The signature's format (default `openpgp`; also the `X-Signature-Format` header).
    #[param(value_type = Option<SignatureFormat>)]
    format: Option<String>,
}

/// Sign a package
///
/// Attaches a detached signature (the request body, at most 64 KiB) to a package that has
/// none, verified over the stored bytes exactly as at upload: an OpenPGP signature must be
/// made by a key trusted for the package's name, a Sigstore bundle (`sigstore-bundle`)
/// by a signer a Sigstore identity policy for the name allows. Other formats are kept
/// unverified.
/// Replacing a signature that a trusted key verified needs an admin; otherwise the
/// package's owners (publisher role) may.
#[utoipa::path(
    put,
    path = "/api/v1/packages/{id}/signature",
    tag = "signing",
    params(
        ("id" = i64, Path, description = "Package id"),
        AttachParams,
        ("X-Signature-Format" = Option<SignatureFormat>, Header, description = "The signature's format (as `format`)"),
    ),
    request_body(content = SignatureBody, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Signed", body = PackageView),
        (status = 400, description = "Not a signature, empty, or larger than 64 KiB", body = ErrorBody),
        (status = 403, description = "Not an owner, or a verified signature would be replaced by a non-admin", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
        (status = 422, description = "The signature does not verify, or its key is not trusted for this name, expired or revoked", body = ErrorBody),
    ),
)]
pub(crate) async fn attach(
    publisher: Publisher,
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<i64>,
    params: web::Query<AttachParams>,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let format = match params.format.as_deref() {
        Some(f) => f.parse()?,
        None => format_header(&req)?.unwrap_or(SignatureFormat::Openpgp),
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::IncompleteBody,
                format!("the signature could not be read: {e}"),
            )
        })?;
        if bytes.len() + chunk.len() > MAX_SIGNATURE_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let signature = DetachedSignature {
        format,
        bytes: signature_bytes(bytes)?,
    };
    let package = state
        .packages
        .gate(&publisher.caller)
        .attach_signature(id, signature)
        .await?;
    Ok(HttpResponse::Ok().json(PackageView::from(&package)))
}
