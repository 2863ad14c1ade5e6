//! The tus protocol's headers: read from requests (version, offsets, checksums, metadata,
//! concatenation URLs) and written to answers.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use agentpkg_model::{
    Arch, Checksum, Coordinates, Description, ErrorCode, FileName, PackageName, Platform,
    SessionKind, SessionTarget, SignatureFormat, UploadSession, UploadSessionId, ValidationError,
    Version,
};
use agentpkg_packagemgr::RequestChecksum;
use base64::Engine;

use super::{OFFSET_CONTENT_TYPE, TUS_VERSION, URL_PREFIX};
use crate::ApiError;

pub(super) fn set_session_headers(response: &mut HttpResponse, session: &UploadSession) {
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
pub(super) fn answer(result: Result<HttpResponse, ApiError>) -> HttpResponse {
    let mut response = match result {
        Ok(response) => response,
        Err(e) => {
            let unsupported = e.code == ErrorCode::UnsupportedTusVersion;
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

pub(super) fn tus_version(req: &HttpRequest) -> Result<(), ApiError> {
    match text_header(req, "Tus-Resumable")? {
        Some(v) if v == TUS_VERSION => Ok(()),
        other => Err(ApiError::new(
            ErrorCode::UnsupportedTusVersion,
            match other {
                Some(v) => {
                    format!("tus version {v:?} is not supported; this server speaks {TUS_VERSION}")
                }
                None => format!("the Tus-Resumable header is required ({TUS_VERSION})"),
            },
        )),
    }
}

pub(super) fn offset_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    crate::handlers::require_media_type(req, OFFSET_CONTENT_TYPE)
}

pub(super) fn text_header(
    req: &HttpRequest,
    name: &'static str,
) -> Result<Option<String>, ApiError> {
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
pub(super) fn request_checksum(req: &HttpRequest) -> Result<Option<RequestChecksum>, ApiError> {
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
pub(super) fn session_of_url(url: &str) -> Result<UploadSessionId, ApiError> {
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
pub(super) fn target_of(metadata: &str) -> Result<Option<SessionTarget>, ApiError> {
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
        .map(|value| {
            let format = signature_format
                .as_deref()
                .map(str::parse::<SignatureFormat>)
                .transpose()?
                .unwrap_or(SignatureFormat::Openpgp);
            // A Sigstore bundle is text already: it may come as itself (what a tus client
            // does with a string), which keeps a 10 KiB bundle inside the metadata's bound.
            // JSON is never base64 ('{' is not in its alphabet), so the two cannot be
            // confused.
            if format == SignatureFormat::SigstoreBundle && value.trim_start().starts_with('{') {
                return crate::handlers::packages::signature::as_sent(value.into_bytes(), format);
            }
            crate::handlers::packages::signature::from_base64(&value, format, "signature")
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
