//! Serving a package's bytes: whole, as a single range (`206`), conditionally (`304`), or
//! as a redirect to a presigned object-storage URL (`307`).

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, ByteRangeSpec, EntityTag, IfNoneMatch, IfRange, Range};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use agentpkg_model::{ErrorCode, Package};
use agentpkg_stats::Answer;

type ByteStream = agentpkg_packagemgr::ByteStream;

use crate::{ApiError, ApiState};

pub(crate) const CHECKSUM_HEADER: &str = "X-Checksum-Sha256";
/// On downloads of a package whose signature a trusted key verified: that key's
/// fingerprint.
pub(crate) const SIGNATURE_KEY_HEADER: &str = "X-Signature-Key";

/// A package's bytes, as the API description shows them (the bytes themselves stream).
pub(crate) struct PackageBytes;

impl utoipa::PartialSchema for PackageBytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for PackageBytes {}

/// What every download route answers besides its own 400 and 404, as [`serve`] does.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Documentation only.
pub(crate) enum DownloadAnswers {
    #[response(
        status = 200,
        description = "The package's bytes",
        content_type = "application/octet-stream",
        headers(
            ("ETag" = String, description = "The SHA-256 checksum, quoted"),
            ("X-Checksum-Sha256" = String, description = "The SHA-256 checksum"),
            ("Content-Disposition" = String, description = "attachment; filename=…"),
            ("X-Signature-Key" = Option<String>, description = "Fingerprint of the trusted OpenPGP key that verified the package's signature, when one did"),
        )
    )]
    Whole(#[to_schema] PackageBytes),
    #[response(
        status = 206,
        description = "The requested byte range",
        content_type = "application/octet-stream",
        headers(("Content-Range" = String, description = "bytes START-END/SIZE"))
    )]
    Range(#[to_schema] PackageBytes),
    #[response(
        status = 304,
        description = "Not modified: If-None-Match matched the checksum"
    )]
    NotModified,
    #[response(
        status = 307,
        description = "Redirect to a presigned object-storage URL",
        headers(("Location" = String, description = "The presigned URL"))
    )]
    Redirect,
    #[response(status = 416, description = "The range is outside the package")]
    RangeNotSatisfiable(crate::error::ErrorBody<'static>),
}

/// How downloads are answered.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Answer S3-backed downloads with a `307` to a presigned URL instead of streaming
    /// through the server (a request can ask with `?redirect=true|false`).
    pub redirect: bool,
    /// Lifetime of a presigned URL.
    pub presign_ttl: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            redirect: false,
            presign_ttl: Duration::from_secs(300),
        }
    }
}

/// Answers a download of `package` as the request's headers and `redirect` ask.
pub(crate) async fn serve(
    req: &HttpRequest,
    state: &ApiState,
    package: Package,
    redirect: Option<bool>,
) -> Result<HttpResponse, ApiError> {
    let etag = EntityTag::new_strong(package.checksum.to_string());

    if let Some(condition) = req.get_header::<IfNoneMatch>() {
        let matched = match condition {
            IfNoneMatch::Any => true,
            IfNoneMatch::Items(tags) => tags.iter().any(|t| t.weak_eq(&etag)),
        };
        if matched {
            return Ok(identity(HttpResponse::NotModified(), &package, &etag).finish());
        }
    }

    if redirect.unwrap_or(state.downloads.redirect)
        && let Some(url) = state
            .packages
            .presigned_url(&package, state.downloads.presign_ttl)
            .await?
    {
        if let Some(counter) = &state.stats.counter {
            counter.answered(
                package.id,
                Answer::Redirect {
                    size: package.file_size,
                },
            );
        }
        return Ok(identity(HttpResponse::TemporaryRedirect(), &package, &etag)
            .insert_header((header::LOCATION, url))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish());
    }

    let size = package.file_size;
    match requested_range(req, &package, &etag) {
        RangeAsk::None => {
            let body = state.packages.open(&package, None).await?;
            state.metrics.downloaded(size);
            Ok(identity(HttpResponse::Ok(), &package, &etag)
                .content_type("application/octet-stream")
                .insert_header(disposition(&package))
                .body(counted(state, &package, Answer::FromStart, size, body)))
        }
        RangeAsk::Satisfiable(start, end) => {
            let body = state.packages.open(&package, Some((start, end))).await?;
            state.metrics.downloaded(end - start + 1);
            // A range from the first byte is a download; a later one resumes one.
            let answer = if start == 0 {
                Answer::FromStart
            } else {
                Answer::Resumed
            };
            Ok(identity(HttpResponse::PartialContent(), &package, &etag)
                .content_type("application/octet-stream")
                .insert_header(disposition(&package))
                .insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")))
                .body(counted(state, &package, answer, end - start + 1, body)))
        }
        RangeAsk::Unsatisfiable => {
            let error = ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                format!("the range is outside the package's {size} bytes"),
            );
            let mut response = error.error_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header::HeaderValue::from_str(&format!("bytes */{size}"))
                    .map_err(ApiError::internal)?,
            );
            Ok(response)
        }
    }
}

/// The body, counted as `answer` (when counting is on).
fn counted(
    state: &ApiState,
    package: &Package,
    answer: Answer,
    len: u64,
    body: ByteStream,
) -> SizedStream<ByteStream> {
    match &state.stats.counter {
        Some(counter) => {
            let body = counter.answered(package.id, answer).count(body);
            SizedStream::new(len, Box::pin(body) as ByteStream)
        }
        None => SizedStream::new(len, body),
    }
}

/// Headers every answer about a package carries: its checksum, twice, and range support.
fn identity(
    mut builder: HttpResponseBuilder,
    package: &Package,
    etag: &EntityTag,
) -> HttpResponseBuilder {
    builder
        .insert_header((header::ETAG, etag.to_string()))
        .insert_header((CHECKSUM_HEADER, package.checksum.as_str()))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    if let Some(key) = package
        .signature
        .as_ref()
        .and_then(|s| s.verified_by.as_ref())
        .and_then(|v| v.key())
    {
        builder.insert_header((SIGNATURE_KEY_HEADER, key.as_str()));
    }
    builder
}

fn disposition(package: &Package) -> (header::HeaderName, String) {
    (
        header::CONTENT_DISPOSITION,
        package.filename.content_disposition(),
    )
}

enum RangeAsk {
    /// Serve everything with 200: no Range, an unparsable one, several ranges, or an
    /// If-Range that no longer holds.
    None,
    Satisfiable(u64, u64),
    Unsatisfiable,
}

fn requested_range(req: &HttpRequest, package: &Package, etag: &EntityTag) -> RangeAsk {
    if !req.headers().contains_key(header::RANGE) {
        return RangeAsk::None;
    }
    let Some(Range::Bytes(specs)) = req.get_header::<Range>() else {
        return RangeAsk::None;
    };
    if let Some(condition) = req.get_header::<IfRange>() {
        let still_valid = match condition {
            IfRange::EntityTag(tag) => tag.strong_eq(etag),
            // A package's bytes never change, so any date since its creation is current.
            IfRange::Date(date) => {
                let since: std::time::SystemTime = date.into();
                since >= std::time::SystemTime::from(package.created_at) - Duration::from_secs(1)
            }
        };
        if !still_valid {
            return RangeAsk::None;
        }
    }
    let [spec] = specs.as_slice() else {
        return RangeAsk::None;
    };
    match spec_range(spec, package.file_size) {
        Some((start, end)) => RangeAsk::Satisfiable(start, end),
        None => RangeAsk::Unsatisfiable,
    }
}

fn spec_range(spec: &ByteRangeSpec, size: u64) -> Option<(u64, u64)> {
    spec.to_satisfiable_range(size)
}
