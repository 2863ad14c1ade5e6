//! Yank, restore, describe, delete, and the upload page.

use actix_web::{HttpResponse, web};
use agentpkg_http::RequestContext;

use crate::WebState;
use agentpkg_model::{Arch, Description, PackagePatch, Platform, Role};
use askama::Template;
use serde::Deserialize;

use super::{CsrfForm, Layout, Row, package_href, page, see_other};
use crate::error::WebError;
use crate::session::SignedIn;

#[derive(Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    csrf: String,
    description: Option<String>,
}

/// Yank, restore or describe: `action` from the path.
pub async fn change(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<(i64, String)>,
    form: web::Form<ChangeForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    who.require(Role::Publisher)?;
    let (id, action) = path.into_inner();
    let (patch, done) = match action.as_str() {
        "yank" => (
            PackagePatch {
                is_active: Some(false),
                description: None,
            },
            "yanked",
        ),
        "restore" => (
            PackagePatch {
                is_active: Some(true),
                description: None,
            },
            "restored",
        ),
        "describe" => (
            PackagePatch {
                is_active: None,
                description: Some(Description::parse(
                    form.description.as_deref().unwrap_or_default(),
                )?),
            },
            "described",
        ),
        _ => return Err(WebError::NotFound("no such action".into())),
    };
    let p = state
        .packages
        .gate(&ctx.caller(&who.credential))
        .change(id, patch)
        .await?;
    Ok(see_other(&format!("{}?done={done}", package_href(&p))))
}

#[derive(Template)]
#[template(path = "delete.html")]
struct DeletePage {
    layout: Layout,
    p: Row,
}

pub async fn confirm_delete(
    who: SignedIn,
    state: web::Data<WebState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Admin)?;
    let p = state.packages.gate(&who.caller()).get(*path).await?;
    page(&DeletePage {
        layout: Layout::of("Delete a package", &who),
        p: Row::of(&p),
    })
}

pub async fn delete(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    who.require(Role::Admin)?;
    let id = path.into_inner();
    state
        .packages
        .gate(&ctx.caller(&who.credential))
        .delete(id)
        .await?;
    tracing::info!(package = id, user = %who.credential.username, "package deleted from the web interface");
    Ok(see_other("/packages?done=deleted"))
}

#[derive(Template)]
#[template(path = "upload.html")]
struct UploadPage {
    layout: Layout,
    platforms: Vec<&'static str>,
    arches: Vec<&'static str>,
}

pub async fn upload(who: SignedIn) -> Result<HttpResponse, WebError> {
    who.require(Role::Publisher)?;
    page(&UploadPage {
        layout: Layout::of("Upload", &who),
        platforms: Platform::ALL.iter().map(|p| p.as_str()).collect(),
        arches: Arch::ALL.iter().map(|a| a.as_str()).collect(),
    })
}
