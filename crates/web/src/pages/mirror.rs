//! The verified mirror of upstream releases: where each asset it follows stands — published
//! (with a link to its package) or failed, with the reason and the attempts so far.

use actix_web::{HttpResponse, web};
use agentpkg_model::{MirrorAsset, MirrorState, Role};
use askama::Template;
use chrono::Utc;

use super::{Layout, page};
use crate::WebState;
use crate::error::WebError;
use crate::format;
use crate::session::SignedIn;

struct AssetRow {
    source: String,
    version: String,
    platform: String,
    published: bool,
    detail: String,
    url: String,
    attempts: u32,
    updated: String,
    updated_at: String,
}

impl AssetRow {
    fn of(a: MirrorAsset) -> Self {
        Self {
            platform: format!("{}/{}", a.platform, a.arch),
            version: a.version.to_string(),
            published: a.state == MirrorState::Published,
            updated: format::ago(a.updated_at, Utc::now()),
            updated_at: format::exact(a.updated_at),
            source: a.source,
            detail: a.detail,
            url: a.url,
            attempts: a.attempts,
        }
    }
}

#[derive(Template)]
#[template(path = "mirror.html")]
struct MirrorPage {
    layout: Layout,
    assets: Vec<AssetRow>,
    failed: usize,
}

pub async fn mirror(who: SignedIn, state: web::Data<WebState>) -> Result<HttpResponse, WebError> {
    who.require(Role::Viewer)?;
    let mirror = state
        .mirror
        .as_ref()
        .ok_or_else(|| WebError::NotFound("this registry mirrors nothing".into()))?;
    let assets: Vec<AssetRow> = mirror
        .status()
        .await?
        .into_iter()
        .map(AssetRow::of)
        .collect();
    page(&MirrorPage {
        layout: Layout::of("Mirror", &who),
        failed: assets.iter().filter(|a| !a.published).count(),
        assets,
    })
}
