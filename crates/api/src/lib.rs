//! The REST API of agentpkg, on actix-web. Handlers are thin: they parse the request,
//! call [`agentpkg_packagemgr`], and map the result.

mod auth;
mod deadlines;
mod extractors;
mod handlers;
mod metrics;
mod openapi;
mod views;

use actix_web::web;
use agentpkg_model::RetentionPolicy;
use agentpkg_packagemgr::{Accounts, AuditLog, PackageManager};
use agentpkg_stats::{DownloadCounter, Retention, Statistics};

pub(crate) use agentpkg_http::error;
pub use agentpkg_http::{
    ApiError, CSRF_HEADER, JwtSecret, RequestContext, SESSION_COOKIE, TokenIssuer, TrustedProxies,
    csrf_matches, csrf_token,
};
pub use auth::{Admin, DownloadTokens, Principal, Publisher, Reader, Viewer};
pub use deadlines::{BodyDeadlines, enforce_body_deadlines};
pub use handlers::download::DownloadOptions;
pub use handlers::opamp::{ConnectionLimits, Connections};
pub use metrics::{ApiMetrics, track_requests};
pub use openapi::{ApiDoc, OPENAPI_PATH};

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub packages: PackageManager,
    pub accounts: Accounts,
    pub tokens: TokenIssuer,
    pub downloads: DownloadOptions,
    pub metrics: std::sync::Arc<ApiMetrics>,
    /// The limits every request body is read under.
    pub body_deadlines: BodyDeadlines,
    pub audit: AuditLog,
    pub trusted_proxies: TrustedProxies,
    pub stats: StatsApi,
    /// The agents that speak OpAMP to the registry.
    pub fleet: agentpkg_fleet::Fleet,
    /// The registry's address as agents reach it (`server.public_url`), for the download
    /// URLs of OpAMP offers; without it, the address each request came to.
    pub public_url: Option<String>,
    /// The OpAMP WebSocket transport's pings and connection limits.
    pub opamp: OpampTransport,
    /// The verified mirror of upstream releases (its status; it runs on its own).
    pub mirror: agentpkg_mirror::Mirror,
}

/// How the OpAMP WebSocket transport treats its connections.
#[derive(Clone)]
pub struct OpampTransport {
    /// How often it pings a connected agent; three intervals without a word from it close
    /// the connection.
    pub ping: std::time::Duration,
    pub limits: handlers::opamp::ConnectionLimits,
    /// Largest `AgentToServer` message, on either transport.
    pub max_message_bytes: usize,
    /// The connections open on this replica.
    pub connections: std::sync::Arc<handlers::opamp::Connections>,
}

impl OpampTransport {
    pub fn new(ping: std::time::Duration, limits: handlers::opamp::ConnectionLimits) -> Self {
        Self {
            ping,
            limits,
            max_message_bytes: agentpkg_fleet::DEFAULT_MAX_MESSAGE_BYTES,
            connections: std::sync::Arc::default(),
        }
    }
}

/// Download statistics and retention, as the API uses them.
#[derive(Clone)]
pub struct StatsApi {
    /// Counts downloads; `None` when counting is off (`stats.count_downloads`).
    pub counter: Option<DownloadCounter>,
    pub reports: Statistics,
    pub retention: Retention,
    /// The configured policies: what `POST /retention/run` applies when its body names
    /// none.
    pub policies: std::sync::Arc<Vec<RetentionPolicy>>,
}

/// Mounts only `GET /metrics`, without authentication, for a separate listener
/// (`metrics.bind`) that only the scraper can reach.
pub fn configure_metrics_only(state: ApiState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        // Read by every face's `RequestContext` (the web interface's too).
        cfg.app_data(web::Data::new(state.trusted_proxies.clone()))
            .app_data(web::Data::new(state))
            .route("/metrics", web::get().to(metrics::metrics_unauthenticated))
            .default_service(web::to(handlers::not_found));
    }
}

/// Mounts the API (and its health endpoints) on an actix-web app.
pub fn configure(state: ApiState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        // Read by every face's `RequestContext` (the web interface's too).
        cfg.app_data(web::Data::new(state.trusted_proxies.clone()))
            .app_data(web::Data::new(state))
            .app_data(extractors::json_config())
            .app_data(extractors::query_config())
            .app_data(extractors::path_config())
            .route("/healthz", web::get().to(handlers::health::healthz_root))
            .route("/readyz", web::get().to(handlers::health::readyz_root))
            .route("/metrics", web::get().to(metrics::metrics))
            // OpAMP's HTTP transport, at the path OpAMP clients use by default.
            .route(
                deadlines::WEBSOCKET_ROUTE,
                web::post().to(handlers::opamp::http),
            )
            .route(
                deadlines::WEBSOCKET_ROUTE,
                web::get().to(handlers::opamp::websocket),
            )
            // Before the /api/v1 scope, which would otherwise claim the document's path.
            .configure(openapi::configure)
            .service(
                web::scope("/api/v1")
                    .wrap(actix_web::middleware::from_fn(auth::authenticate_first))
                    .route("/healthz", web::get().to(handlers::health::healthz))
                    .route("/readyz", web::get().to(handlers::health::readyz))
                    .route("/auth/login", web::post().to(handlers::login::login))
                    .route("/auth/me", web::get().to(handlers::login::me))
                    .route("/auth/logout", web::post().to(handlers::login::logout))
                    .service(
                        web::resource("/packages")
                            .route(web::get().to(handlers::packages::list::list))
                            .route(web::post().to(handlers::packages::upload::upload)),
                    )
                    // Before /packages/{id}, which would otherwise claim "latest".
                    .route(
                        "/packages/latest",
                        web::get().to(handlers::packages::read::latest),
                    )
                    .service(
                        web::resource("/packages/{id}")
                            .route(web::get().to(handlers::packages::read::get))
                            .route(web::patch().to(handlers::packages::change::patch))
                            .route(web::delete().to(handlers::packages::change::delete)),
                    )
                    .route(
                        "/packages/{id}/download",
                        web::get().to(handlers::packages::downloads::download),
                    )
                    .service(
                        web::resource("/packages/{id}/signature")
                            .route(web::get().to(handlers::packages::signature::get))
                            .route(web::put().to(handlers::packages::signature::attach)),
                    )
                    .route(
                        "/packages/{name}/owners",
                        web::get().to(handlers::packages::owners::list),
                    )
                    .service(
                        web::resource("/packages/{name}/owners/{username}")
                            .route(web::put().to(handlers::packages::owners::add))
                            .route(web::delete().to(handlers::packages::owners::remove)),
                    )
                    .route(
                        "/packages/{name}/versions",
                        web::get().to(handlers::packages::read::versions),
                    )
                    // Before the exact-version route: "latest" is never a SemVer version.
                    .route(
                        "/packages/{name}/latest/{platform}/{arch}/download",
                        web::get().to(handlers::packages::downloads::download_latest),
                    )
                    .route(
                        "/packages/{name}/{version}/{platform}/{arch}/download",
                        web::get().to(handlers::packages::downloads::download_by_coordinates),
                    )
                    .route(
                        "/packages/{name}/{version}/{platform}/{arch}/signature",
                        web::get().to(handlers::packages::signature::get_by_coordinates),
                    )
                    .service(
                        web::resource("/packages/{name}/{version}/{platform}/{arch}")
                            .route(web::get().to(handlers::packages::read::by_coordinates))
                            .route(web::put().to(handlers::packages::upload::put)),
                    )
                    .service(
                        web::resource("/keys")
                            .route(web::get().to(handlers::keys::list))
                            .route(web::post().to(handlers::keys::add)),
                    )
                    .service(
                        web::resource("/keys/{fingerprint}")
                            .route(web::get().to(handlers::keys::get))
                            .route(web::delete().to(handlers::keys::remove)),
                    )
                    .service(
                        web::resource("/mirrors/status")
                            .route(web::get().to(handlers::mirrors::status)),
                    )
                    .service(
                        web::resource("/sigstore-identities")
                            .route(web::get().to(handlers::sigstore::list))
                            .route(web::post().to(handlers::sigstore::add)),
                    )
                    .service(
                        web::resource("/sigstore-identities/{id}")
                            .route(web::get().to(handlers::sigstore::get))
                            .route(web::delete().to(handlers::sigstore::remove)),
                    )
                    .service(
                        web::resource("/users")
                            .route(web::get().to(handlers::users::list))
                            .route(web::post().to(handlers::users::create)),
                    )
                    // Before /users/{id}/password, which would otherwise claim "me".
                    .route(
                        "/users/me/password",
                        web::put().to(handlers::users::change_own_password),
                    )
                    .service(
                        web::resource("/users/{id}")
                            .route(web::delete().to(handlers::users::delete))
                            .route(web::patch().to(handlers::users::patch)),
                    )
                    .route(
                        "/users/{id}/password",
                        web::put().to(handlers::users::reset_password),
                    )
                    .service(
                        web::resource("/tokens")
                            .route(web::get().to(handlers::tokens::list))
                            .route(web::post().to(handlers::tokens::create)),
                    )
                    .route("/tokens/{id}", web::delete().to(handlers::tokens::revoke))
                    .route("/audit", web::get().to(handlers::audit::list))
                    .route(
                        "/packages/{id}/stats",
                        web::get().to(handlers::stats::package),
                    )
                    .route("/stats/top", web::get().to(handlers::stats::top))
                    .route("/agents", web::get().to(handlers::agents::list))
                    .route("/agents/{uid}", web::get().to(handlers::agents::get))
                    .route("/agents/{uid}", web::delete().to(handlers::agents::forget))
                    .service(
                        web::resource("/assignments")
                            .route(web::get().to(handlers::assignments::list))
                            .route(web::post().to(handlers::assignments::create)),
                    )
                    .route(
                        "/assignments/{id}/status",
                        web::get().to(handlers::assignments::status),
                    )
                    .service(
                        web::resource("/assignments/{id}/rollouts")
                            .route(web::get().to(handlers::rollouts::list))
                            .route(web::post().to(handlers::rollouts::create)),
                    )
                    .route(
                        "/assignments/{id}/rollouts/{rollout}",
                        web::get().to(handlers::rollouts::get),
                    )
                    .route(
                        "/assignments/{id}/rollouts/{rollout}/approve",
                        web::post().to(handlers::rollouts::approve),
                    )
                    .route(
                        "/assignments/{id}/rollouts/{rollout}/pause",
                        web::post().to(handlers::rollouts::pause),
                    )
                    .route(
                        "/assignments/{id}/rollouts/{rollout}/resume",
                        web::post().to(handlers::rollouts::resume),
                    )
                    .route(
                        "/assignments/{id}/rollouts/{rollout}/abort",
                        web::post().to(handlers::rollouts::abort),
                    )
                    .service(
                        web::resource("/assignments/{id}")
                            .route(web::get().to(handlers::assignments::get))
                            .route(web::patch().to(handlers::assignments::patch))
                            .route(web::delete().to(handlers::assignments::delete)),
                    )
                    .route("/stats/storage", web::get().to(handlers::stats::storage))
                    .route("/retention/run", web::post().to(handlers::stats::run))
                    .service(
                        web::resource("/uploads")
                            .route(
                                web::method(actix_web::http::Method::OPTIONS)
                                    .to(handlers::tus::options),
                            )
                            .route(web::post().to(handlers::tus::create)),
                    )
                    .route("/uploads/direct", web::post().to(handlers::direct::begin))
                    .route(
                        "/uploads/direct/{id}/complete",
                        web::post().to(handlers::direct::complete),
                    )
                    .service(
                        web::resource("/uploads/{id}")
                            .route(web::head().to(handlers::tus::head))
                            .route(web::patch().to(handlers::tus::patch))
                            .route(web::delete().to(handlers::tus::delete)),
                    )
                    .service(
                        web::resource("/teams")
                            .route(web::get().to(handlers::teams::list))
                            .route(web::post().to(handlers::teams::create)),
                    )
                    .service(
                        web::resource("/teams/{team}/members/{username}")
                            .route(web::put().to(handlers::teams::add_member))
                            .route(web::delete().to(handlers::teams::remove_member)),
                    ),
            )
            .default_service(web::to(handlers::not_found));
    }
}
