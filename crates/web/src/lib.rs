//! agentpkg's web interface, served by the same binary at `/`: server-rendered pages
//! (askama templates compiled into the binary) over the package manager and the accounts,
//! with the small script and style sheet they need embedded too. Nothing is fetched from
//! elsewhere, nothing needs Node to build.
//!
//! Signing in sets the session (the API's session token) in an `HttpOnly`,
//! `SameSite=Strict` cookie; every form that changes something carries the session's CSRF
//! token, and the upload script sends it as `X-CSRF-Token` to the API's tus endpoint,
//! which accepts the cookie only with it.
//!
//! The pages stand on the same gate as the API (`PackageManager::gate`,
//! `Accounts::gate`) and on what the two faces share about a request (`agentpkg_http`):
//! not on the API crate.

mod chart;
mod error;
mod format;
mod pages;
mod session;

use actix_web::http::header;
use actix_web::{HttpResponse, web};

pub use error::WebError;
pub use pages::{CSP, not_found};

/// What the pages need: the package manager and accounts (behind the gate), the session
/// tokens they sign in with, and the address agents and clients reach the registry at.
#[derive(Clone)]
pub struct WebState {
    pub packages: agentpkg_packagemgr::PackageManager,
    pub accounts: agentpkg_packagemgr::Accounts,
    pub sessions: agentpkg_http::TokenIssuer,
    /// `server.public_url`, for the pages' `curl` lines; without it, the address each
    /// request came to.
    pub public_url: Option<String>,
    /// The OpAMP fleet, for the assignment and rollout pages (none: those pages are 404).
    pub fleet: Option<agentpkg_fleet::Fleet>,
    /// The audit log, for its page (admins; none: the page is 404).
    pub audit: Option<agentpkg_packagemgr::AuditLog>,
    /// The mirror of upstream releases, for its status page (none: the page is 404).
    pub mirror: Option<agentpkg_mirror::Mirror>,
    /// Download counts and storage usage, for the statistics page and the package pages'
    /// charts (none: no statistics shown).
    pub stats: Option<agentpkg_stats::Statistics>,
    /// Retention and the configured policies, for the admins' dry run and run (none: the
    /// page is 404).
    pub retention: Option<(
        agentpkg_stats::Retention,
        std::sync::Arc<Vec<agentpkg_model::RetentionPolicy>>,
    )>,
}

const STYLE: &str = include_str!("../assets/app.css");
const SCRIPT: &str = include_str!("../assets/app.js");

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// The pages' routes, which share no path with the API's (`/api/v1`, the health and OpAMP
/// routes): register them beside it, then set [`not_found`] as the default service (a page
/// for browsers, JSON for the rest).
pub fn configure(state: WebState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| configure_with(cfg, state)
}

fn configure_with(cfg: &mut web::ServiceConfig, state: WebState) {
    cfg.app_data(web::Data::new(state))
        .route(
            "/",
            web::get().to(|| async {
                HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, "/packages"))
                    .finish()
            }),
        )
        // The seed report's address for the API documentation.
        .route(
            "/swagger/index.html",
            web::get().to(|| async {
                HttpResponse::Found()
                    .insert_header((header::LOCATION, "/swagger-ui/"))
                    .finish()
            }),
        )
        .route(
            "/static/app.css",
            web::get().to(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/static/app.js",
            web::get().to(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route("/login", web::get().to(pages::login_form))
        .route("/login", web::post().to(pages::login))
        .route("/logout", web::post().to(pages::logout))
        .route("/packages", web::get().to(pages::packages))
        .route("/packages/{name}", web::get().to(pages::name))
        .route(
            "/packages/{name}/owners/{action}",
            web::post().to(pages::change_owner),
        )
        .route(
            "/packages/{name}/{version}/{platform}/{arch}",
            web::get().to(pages::package),
        )
        .route("/upload", web::get().to(pages::upload))
        .route("/manage/{id}/delete", web::get().to(pages::confirm_delete))
        .route("/manage/{id}/delete", web::post().to(pages::delete))
        .route("/manage/{id}/{action}", web::post().to(pages::change))
        .route("/audit", web::get().to(pages::audit))
        .route("/keys", web::get().to(pages::keys))
        .route("/keys", web::post().to(pages::add_key))
        .route(
            "/keys/{fingerprint}/remove",
            web::post().to(pages::remove_key),
        )
        .route("/mirror", web::get().to(pages::mirror))
        .route("/stats", web::get().to(pages::statistics))
        .route("/stats/retention", web::get().to(pages::retention))
        .route("/stats/retention", web::post().to(pages::run_retention))
        .route("/teams", web::get().to(pages::teams))
        .route("/teams", web::post().to(pages::create_team))
        .route("/teams/{team}/members", web::post().to(pages::add_member))
        .route(
            "/teams/{team}/members/{username}/remove",
            web::post().to(pages::remove_member),
        )
        .route("/keys/sigstore", web::post().to(pages::add_signer))
        .route(
            "/keys/sigstore/{id}/remove",
            web::post().to(pages::remove_signer),
        )
        .route("/tokens", web::get().to(pages::tokens))
        .route("/tokens", web::post().to(pages::create_token))
        .route("/tokens/{id}/revoke", web::post().to(pages::revoke_token))
        .route("/agents", web::get().to(pages::agents))
        .route("/agents/{uid}", web::get().to(pages::agent))
        .route("/assignments", web::get().to(pages::assignments))
        .route("/assignments", web::post().to(pages::create_assignment))
        .route("/assignments/{id}", web::get().to(pages::assignment))
        .route(
            "/assignments/{id}/rollouts",
            web::post().to(pages::start_rollout),
        )
        .route(
            "/assignments/{id}/rollouts/{rollout}",
            web::get().to(pages::rollout),
        )
        .route(
            "/assignments/{id}/rollouts/{rollout}/abort",
            web::get().to(pages::confirm_abort),
        )
        .route(
            "/assignments/{id}/rollouts/{rollout}/{action}",
            web::post().to(pages::rollout_step),
        )
        .route("/users", web::get().to(pages::users))
        .route("/users", web::post().to(pages::create_user))
        .route("/users/{id}/delete", web::post().to(pages::delete_user));
}
