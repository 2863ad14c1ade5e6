//! Package routes, a file per job: listing, reading, changing, downloading and uploading,
//! with the upload form's parser and the body pump beside them.

pub(crate) mod body;
pub(crate) mod change;
pub(crate) mod downloads;
pub(crate) mod form;
pub(crate) mod list;
pub(crate) mod owners;
pub(crate) mod read;
pub(crate) mod signature;
pub(crate) mod upload;

use actix_web::HttpRequest;
use actix_web::http::header;
use agentpkg_model::{
    Arch, Checksum, Coordinates, ErrorCode, LatestQuery, PackageName, Platform, ValidationError,
    Version, VersionRequirement,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiError;
use crate::handlers::download::CHECKSUM_HEADER;

/// A package's coordinates in the path: the exact-version download and the raw upload.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct CoordinatesPath {
    /// Package name.
    #[param(value_type = PackageName)]
    name: String,
    /// SemVer version.
    #[param(value_type = Version)]
    version: String,
    #[param(value_type = Platform)]
    platform: String,
    #[param(value_type = Arch)]
    arch: String,
}

impl CoordinatesPath {
    pub(crate) fn parse(&self) -> Result<Coordinates, ApiError> {
        Ok(Coordinates {
            name: PackageName::parse(&self.name)?,
            version: Version::parse(&self.version)?,
            platform: self.platform.parse()?,
            arch: self.arch.parse()?,
        })
    }
}

/// The coordinates without a version, for the latest version's download.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct LatestPath {
    /// Package name.
    #[param(value_type = PackageName)]
    name: String,
    #[param(value_type = Platform)]
    platform: String,
    #[param(value_type = Arch)]
    arch: String,
}

/// The query of `latest`, from parts parsed as they come.
fn latest_query(
    name: &str,
    platform: &str,
    arch: &str,
    requirement: Option<&str>,
    include_prerelease: bool,
) -> Result<LatestQuery, ApiError> {
    Ok(LatestQuery {
        name: PackageName::parse(name)?,
        platform: platform.parse()?,
        arch: arch.parse()?,
        requirement: requirement.map(VersionRequirement::parse).transpose()?,
        include_prerelease,
    })
}

fn required<'a>(value: Option<&'a str>, field: &'static str) -> Result<&'a str, ApiError> {
    value.ok_or_else(|| missing(field))
}

fn missing(field: &'static str) -> ApiError {
    ApiError {
        field: Some(field),
        ..ApiError::new(ErrorCode::MissingField, format!("{field} is required"))
    }
}

/// The checksum a client announces in `X-Checksum-Sha256`, if any.
pub(crate) fn checksum_header(req: &HttpRequest) -> Result<Option<Checksum>, ApiError> {
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

pub(crate) fn content_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
