//! The verified mirror of upstream releases: where each asset it follows stands.

use actix_web::{HttpResponse, web};
use agentpkg_model::{Arch, MirrorAsset, Platform};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{ApiError, ApiState, Viewer};

/// One asset of a mirrored release.
#[derive(Serialize, ToSchema)]
pub(crate) struct MirrorAssetView {
    /// The source (the package name it publishes under).
    source: String,
    version: String,
    platform: Platform,
    arch: Arch,
    /// Where it was downloaded from.
    url: String,
    /// `published` (downloaded, checked against the checksums file and the Sigstore
    /// bundle, published) or `failed` (nothing published; retried on the next run).
    state: String,
    /// What happened, in words: the reason for a failure.
    detail: String,
    /// The package it became.
    package_id: Option<i64>,
    attempts: u32,
    updated_at: DateTime<Utc>,
}

impl From<MirrorAsset> for MirrorAssetView {
    fn from(a: MirrorAsset) -> Self {
        Self {
            source: a.source,
            version: a.version.to_string(),
            platform: a.platform,
            arch: a.arch,
            url: a.url,
            state: a.state.as_str().to_owned(),
            detail: a.detail,
            package_id: a.package_id,
            attempts: a.attempts,
            updated_at: a.updated_at,
        }
    }
}

/// The mirror's status
///
/// Every asset the mirror (`[[mirror.sources]]`) has tried, by source, newest version
/// first: published, or failed with the reason. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/mirrors/status",
    tag = "mirror",
    responses((status = 200, description = "Assets tried", body = Vec<MirrorAssetView>)),
)]
pub(crate) async fn status(
    _viewer: Viewer,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let assets = state.mirror.status().await?;
    Ok(HttpResponse::Ok().json(
        assets
            .into_iter()
            .map(MirrorAssetView::from)
            .collect::<Vec<_>>(),
    ))
}
