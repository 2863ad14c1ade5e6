//! Yank, restore, describe, delete, and the upload page.

use actix_web::{HttpResponse, web};
use agentpkg_api::{ApiState, RequestContext};
use agentpkg_model::{Arch, AuditAction, Description, PackagePatch, Platform, Role};
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
    state: web::Data<ApiState>,
    ctx: RequestContext,
    path: web::Path<(i64, String)>,
    form: web::Form<ChangeForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    who.require(Role::Publisher)?;
    let (id, action) = path.into_inner();
    let (patch, done, audited) = match action.as_str() {
        "yank" => (
            PackagePatch {
                is_active: Some(false),
                description: None,
            },
            "yanked",
            AuditAction::Yank,
        ),
        "restore" => (
            PackagePatch {
                is_active: Some(true),
                description: None,
            },
            "restored",
            AuditAction::Restore,
        ),
        "describe" => (
            PackagePatch {
                is_active: None,
                description: Some(Description::parse(
                    form.description.as_deref().unwrap_or_default(),
                )?),
            },
            "described",
            AuditAction::Describe,
        ),
        _ => return Err(WebError::NotFound("no such action".into())),
    };
    let principal = agentpkg_api::Principal(who.credential.clone());
    principal.may_write(&state.packages.get(id).await?.name)?;
    let p = state
        .packages
        .update(id, patch, Some(&principal.actor()))
        .await?;
    state
        .audit
        .record(ctx.package_event(audited, &principal, &p))
        .await;
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
    state: web::Data<ApiState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Admin)?;
    let p = state.packages.get(path.into_inner()).await?;
    if !who.credential.may_touch(&p.name) {
        return Err(WebError::NotFound("package not found".into()));
    }
    page(&DeletePage {
        layout: Layout::of("Delete a package", &who),
        p: Row::of(&p),
    })
}

pub async fn delete(
    who: SignedIn,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    who.require(Role::Admin)?;
    let id = path.into_inner();
    let principal = agentpkg_api::Principal(who.credential.clone());
    principal.may_write(&state.packages.get(id).await?.name)?;
    let p = state.packages.delete(id).await?;
    state
        .audit
        .record(ctx.package_event(AuditAction::Delete, &principal, &p))
        .await;
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
