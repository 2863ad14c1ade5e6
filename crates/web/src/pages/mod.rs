//! The pages: each a thin handler that asks the package manager or the accounts and renders
//! a template. Every value shown is escaped by the templates (askama's HTML escaping).

mod account;
mod agents;
mod audit;
mod browse;
mod fleet;
mod keys;
mod manage;
mod mirror;
mod rollouts;
mod stats;
mod teams;
mod tokens;
mod users;

pub use account::{login, login_form, logout};
pub use agents::{agent, agents};
pub use audit::audit;
pub use browse::{change_owner, name, package, packages};
pub use fleet::{assignment, assignments, create_assignment, start_rollout};
pub use keys::{add_key, add_signer, keys, remove_key, remove_signer};
pub use manage::{change, confirm_delete, delete, upload};
pub use mirror::mirror;
pub use rollouts::{confirm_abort, rollout, rollout_step};
pub use stats::{retention, run_retention, statistics};
pub use teams::{add_member, create_team, remove_member, teams};
pub use tokens::{create_token, revoke_token, tokens};
pub use users::{create_user, delete_user, users};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use agentpkg_model::{Package, Role};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use crate::error::WebError;
use crate::format;
use crate::session::SignedIn;

/// The page's content security policy: scripts and styles from this site only (no inline
/// script may run), no frames, forms post here only.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// An HTML answer with the headers every page carries.
pub fn secured(mut builder: HttpResponseBuilder, html: String) -> HttpResponse {
    builder
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

fn page(template: &impl Template) -> Result<HttpResponse, WebError> {
    Ok(secured(HttpResponse::Ok(), template.render()?))
}

/// The fleet, for its pages; a registry without one has none of them.
fn fleet(state: &crate::WebState) -> Result<&agentpkg_fleet::Fleet, WebError> {
    state
        .fleet
        .as_ref()
        .ok_or_else(|| WebError::NotFound("this registry has no fleet".into()))
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_owned()))
        .finish()
}

/// What every page's frame needs: its title and who is signed in.
pub struct Layout {
    pub title: String,
    pub user: Option<UserNav>,
}

pub struct UserNav {
    pub username: String,
    pub role: String,
    pub csrf: String,
    pub publisher: bool,
    pub admin: bool,
}

impl Layout {
    pub fn anonymous(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            user: None,
        }
    }

    fn of(title: impl Into<String>, who: &SignedIn) -> Self {
        Self {
            title: title.into(),
            user: Some(UserNav {
                username: who.credential.username.clone(),
                role: who.credential.role.to_string(),
                csrf: who.csrf.clone(),
                publisher: who.is(Role::Publisher),
                admin: who.is(Role::Admin),
            }),
        }
    }
}

/// A package as the pages show it.
pub struct Row {
    pub id: i64,
    pub name: String,
    pub version: String,
    pub platform: &'static str,
    pub arch: &'static str,
    pub size: String,
    pub bytes: u64,
    pub ago: String,
    pub exact: String,
    pub iso: String,
    pub yanked: bool,
    pub prerelease: bool,
    pub href: String,
}

impl Row {
    fn of(p: &Package) -> Self {
        let now = Utc::now();
        Self {
            id: p.id,
            name: p.name.to_string(),
            version: p.version.to_string(),
            platform: p.platform.as_str(),
            arch: p.arch.as_str(),
            size: format::size(p.file_size),
            bytes: p.file_size,
            ago: format::ago(p.created_at, now),
            exact: format::exact(p.created_at),
            iso: p.created_at.to_rfc3339(),
            yanked: !p.is_active,
            prerelease: !p.version.as_semver().pre.is_empty(),
            href: package_href(p),
        }
    }
}

fn package_href(p: &Package) -> String {
    format!(
        "/packages/{}/{}/{}/{}",
        p.name,
        p.version,
        p.platform.as_str(),
        p.arch.as_str()
    )
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub struct DoneParam {
    done: Option<String>,
}

fn notice(done: Option<&str>) -> Option<String> {
    Some(
        match done? {
            "deleted" => "The package was deleted.",
            "uploaded" => "The package was uploaded.",
            "yanked" => "The package was yanked: hidden from lists and latest, still downloadable.",
            "restored" => "The package was restored.",
            "described" => "The description was saved.",
            "user-created" => "The user was created.",
            "user-deleted" => "The user was deleted.",
            _ => return None,
        }
        .to_owned(),
    )
}

#[derive(Template)]
#[template(path = "error.html")]
struct NotFoundPage {
    layout: Layout,
    status: u16,
    heading: String,
    message: String,
}

/// Paths nobody serves: the API's JSON 404 under `/api/` or for a client that does not
/// ask for HTML, a page otherwise.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if req.path().starts_with("/api/") || !wants_html {
        return actix_web::ResponseError::error_response(&agentpkg_http::ApiError::not_found(
            "no such route",
        ));
    }
    let html = NotFoundPage {
        layout: Layout::anonymous("Not found"),
        status: 404,
        heading: "Not found".into(),
        message:
            "There is no page here. The package may have been deleted, or the address mistyped."
                .into(),
    }
    .render()
    .unwrap_or_default();
    secured(HttpResponse::NotFound(), html)
}
