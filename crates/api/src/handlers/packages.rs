//! Package routes: list, upload, get, latest, download, delete.

use std::io;

use actix_multipart::{Field, Multipart};
use actix_web::body::SizedStream;
use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_model::{
    Arch, Checksum, Coordinates, Description, FileName, ListQuery, PackageName, PageRequest,
    Platform, ValidationError, Version,
};
use agentpkg_packagemgr::{PackageManager, StagedUpload, UploadMeta, body_channel};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;

use crate::{Admin, ApiError, ApiState, Publisher, Viewer};

/// Header a client may send with the SHA-256 it expects the upload to have.
const CHECKSUM_HEADER: &str = "X-Checksum-Sha256";
/// Room for the form's text fields and boundaries around the file itself.
const FORM_OVERHEAD: u64 = 1024 * 1024;
/// Largest text field: a 4096-character description in UTF-8, with margin.
const MAX_TEXT_FIELD: usize = 20 * 1024;
/// Chunks of the file in flight between the HTTP connection and the storage upload.
const BODY_CHANNEL_CHUNKS: usize = 16;

#[derive(Deserialize)]
pub(crate) struct ListParams {
    name: Option<String>,
    platform: Option<String>,
    arch: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

/// `GET /api/v1/packages`: active packages, by name then newest version first.
/// The body is the array of packages (as in the system this one replaces); the total is
/// in `X-Total-Count` and the neighbouring pages in an RFC 8288 `Link` header.
pub(crate) async fn list(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    req: HttpRequest,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let query = ListQuery {
        name: params.name.as_deref().map(PackageName::parse).transpose()?,
        platform: params.platform.as_deref().map(str::parse).transpose()?,
        arch: params.arch.as_deref().map(str::parse).transpose()?,
        page: PageRequest::new(params.page, params.per_page),
    };
    let page = state.packages.list(&query).await?;
    let mut response = HttpResponse::Ok();
    response.insert_header(("X-Total-Count", page.total.to_string()));
    if let Some(link) = link_header(req.path(), &query, page.total) {
        response.insert_header((header::LINK, link));
    }
    Ok(response.json(page.items))
}

fn link_header(path: &str, q: &ListQuery, total: u64) -> Option<String> {
    let per_page = u64::from(q.page.per_page);
    let last = total.div_ceil(per_page).max(1);
    let current = u64::from(q.page.page);
    // Filter values are validated names and closed sets: nothing to escape.
    let mut base = format!("{path}?per_page={per_page}");
    if let Some(n) = &q.name {
        base.push_str(&format!("&name={}", n.as_str()));
    }
    if let Some(p) = q.platform {
        base.push_str(&format!("&platform={p}"));
    }
    if let Some(a) = q.arch {
        base.push_str(&format!("&arch={a}"));
    }
    let mut links = vec![
        format!("<{base}&page=1>; rel=\"first\""),
        format!("<{base}&page={last}>; rel=\"last\""),
    ];
    if current > 1 {
        links.push(format!(
            "<{base}&page={}>; rel=\"prev\"",
            (current - 1).min(last)
        ));
    }
    if current < last {
        links.push(format!("<{base}&page={}>; rel=\"next\"", current + 1));
    }
    Some(links.join(", "))
}

/// `GET /api/v1/packages/{id}`.
pub(crate) async fn get(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.packages.get(id.into_inner()).await?))
}

#[derive(Deserialize)]
pub(crate) struct LatestParams {
    name: Option<String>,
    platform: Option<String>,
    arch: Option<String>,
    #[serde(default)]
    prerelease: bool,
}

/// `GET /api/v1/packages/latest?name=&platform=&arch=[&prerelease=true]`: the active
/// package of highest SemVer precedence.
pub(crate) async fn latest(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    params: web::Query<LatestParams>,
) -> Result<HttpResponse, ApiError> {
    let name = PackageName::parse(required(params.name.as_deref(), "name")?)?;
    let platform: Platform = required(params.platform.as_deref(), "platform")?.parse()?;
    let arch: Arch = required(params.arch.as_deref(), "arch")?.parse()?;
    let package = state
        .packages
        .latest(&name, platform, arch, params.prerelease)
        .await?;
    Ok(HttpResponse::Ok().json(package))
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

/// `GET /api/v1/packages/{id}/download`: the bytes, streamed from storage.
pub(crate) async fn download(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let download = state.packages.download(id.into_inner()).await?;
    let p = &download.package;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(p.filename.clone())],
        })
        .insert_header((header::ETAG, format!("\"{}\"", p.checksum)))
        .insert_header((CHECKSUM_HEADER, p.checksum.clone()))
        .body(SizedStream::new(p.file_size, download.body)))
}

/// `DELETE /api/v1/packages/{id}` (admin).
pub(crate) async fn delete(
    _admin: Admin,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.packages.delete(id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/v1/packages` (publisher): a `multipart/form-data` upload with the fields
/// `file`, `name`, `version`, `platform`, `arch`, and optionally `description` and
/// `sha256`, in any order.
///
/// The file streams to storage as it arrives. Text fields are checked as soon as they
/// arrive; if all coordinates come before the file, a duplicate is refused before the file
/// is read. Whatever fails, the staged bytes are deleted.
pub(crate) async fn upload(
    _publisher: Publisher,
    state: web::Data<ApiState>,
    req: HttpRequest,
    mut multipart: Multipart,
) -> Result<HttpResponse, ApiError> {
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
    if let Some(length) = content_length(&req)
        && length > limit.saturating_add(FORM_OVERHEAD)
    {
        return Err(ApiError::too_large(limit));
    }
    let header_sha256 = req
        .headers()
        .get(CHECKSUM_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| ValidationError::new("sha256", "is not valid text"))
                .and_then(Checksum::parse)
        })
        .transpose()?;

    let mut form = Form::default();
    let read = form.read(&state.packages, &mut multipart).await;
    let meta = read.and_then(|()| form.meta(header_sha256));
    let staged = form.staged.take();
    match (meta, staged) {
        (Ok(meta), Some(staged)) => {
            let package = state.packages.publish(staged, meta).await?;
            Ok(HttpResponse::Created()
                .insert_header((header::LOCATION, format!("/api/v1/packages/{}", package.id)))
                .json(package))
        }
        (Ok(_), None) => Err(missing("file")),
        (Err(e), staged) => {
            if let Some(staged) = staged {
                staged.discard().await;
            }
            Err(e)
        }
    }
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
                    self.staged = Some(stream_file(mgr, field).await?);
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

/// Streams the file field into storage through the package manager.
///
/// The connection's chunks are passed through a bounded channel to the upload, which runs
/// in a task of its own; the channel is only closed cleanly at the field's real end, so a
/// client that disconnects mid-file leaves a failed upload, never a truncated package.
async fn stream_file(mgr: &PackageManager, mut field: Field) -> Result<StagedUpload, ApiError> {
    let (tx, rx) = body_channel(BODY_CHANNEL_CHUNKS);
    let pump = async move {
        while let Some(chunk) = field.next().await {
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
