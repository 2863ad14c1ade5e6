//! Builds each layer from the settings and hands them to the next: store and storage to
//! the package manager, the manager to the API, the API to the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer};
use agentpkg_api::{ApiMetrics, ApiState, DownloadOptions, DownloadTokens, StatsApi, TokenIssuer};
use agentpkg_fleet::Fleet;
use agentpkg_packagemgr::{
    Accounts, AuditLog, ManagerConfig, ManagerMetrics, PackageManager, ReadCacheConfig,
    SigningPolicy,
};
use agentpkg_stats::{DownloadCounter, Retention, Statistics};
use agentpkg_storage::DynObjectStore;
use agentpkg_store::DieselStore;
use secrecy::ExposeSecret;
use tracing_actix_web::TracingLogger;

use crate::settings::{Settings, StorageBackend};

mod backends;

pub use backends::migrate_only;
use backends::{jwt_secret, open_storage, open_store};

/// Why the server could not start. Each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] agentpkg_store::StoreError),
    #[error("object storage: {0}")]
    Storage(#[from] agentpkg_storage::StorageError),
    #[error("accounts: {0}")]
    Accounts(#[from] agentpkg_packagemgr::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The connected layers (each reporting the duration of its calls into `metrics`), and the
/// Sigstore trust root.
pub struct Components {
    pub store: DieselStore,
    pub storage: DynObjectStore,
    pub sigstore: agentpkg_packagemgr::SigstoreTrust,
    pub metrics: ManagerMetrics,
}

/// Connects the database (running pending migrations) and object storage.
pub async fn connect(settings: &Settings) -> Result<Components, BuildError> {
    let store = open_store(settings).await?;
    let applied = store.run_migrations().await?;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    let metrics = ManagerMetrics::default();
    let store = store.observed_by(metrics.database_observer());
    let storage = open_storage(settings, metrics.storage_observer()).await?;
    let sigstore = settings
        .signing
        .sigstore
        .trust()
        .map_err(BuildError::Config)?;
    tracing::info!(
        trust_root = sigstore.source(),
        "sigstore bundles verified offline"
    );
    Ok(Components {
        store,
        storage,
        sigstore,
        metrics,
    })
}

/// A built server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    reconciler: Option<tokio::task::JoinHandle<()>>,
    /// Gauge refreshes and periodic retention, stopped with the server.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// The download counter and its periodic flush: flushed once more at shutdown.
    flusher: Option<agentpkg_stats::Flusher>,
    /// The fleet's heartbeat writer: stopped, then flushed once more, at shutdown.
    fleet_flusher: Option<(tokio::task::JoinHandle<()>, Fleet)>,
    /// The separate `/metrics` listener and its port, when `metrics.bind` is set.
    metrics_server: Option<(Server, u16)>,
}

fn metrics_listener(
    settings: &Settings,
    state: &ApiState,
) -> Result<Option<(Server, u16)>, BuildError> {
    if settings.metrics.bind.is_empty() {
        return Ok(None);
    }
    let listener =
        TcpListener::bind(&settings.metrics.bind).map_err(|source| BuildError::Bind {
            addr: settings.metrics.bind.clone(),
            source,
        })?;
    let port = listener.local_addr()?.port();
    let state = state.clone();
    let server = HttpServer::new(move || {
        App::new().configure(agentpkg_api::configure_metrics_only(state.clone()))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    tracing::info!(addr = %settings.metrics.bind, port, "metrics listening");
    Ok(Some((server, port)))
}

/// The package manager and the accounts over one store, counting into the metrics the
/// backends already report to.
pub(crate) fn manager(settings: &Settings, components: Components) -> Wired {
    let metrics = components.metrics;
    let store = Arc::new(components.store);
    let audit = AuditLog::new(store.clone());
    let packages = PackageManager::with_metrics(
        store.clone(),
        components.storage,
        ManagerConfig {
            max_upload_bytes: settings.upload.max_size_bytes,
            stale_upload_after: Duration::from_secs(settings.gc.stale_upload_secs),
            max_concurrent_uploads: settings.upload.max_concurrent.max(1),
            storage_read_timeout: Duration::from_secs(settings.storage.read_timeout_secs.max(1)),
            max_bytes_in_flight_per_user: settings.upload.max_bytes_in_flight_per_user,
            max_direct_grants_per_user: settings.upload.max_direct_grants_per_user,
        },
        metrics,
    )
    .with_ownership(store.clone())
    .with_audit(audit.clone())
    .with_signing(
        store.clone(),
        SigningPolicy {
            required: settings.signing.required,
        },
    )
    .with_sigstore(components.sigstore)
    .with_resumable_uploads(store.clone(), settings.upload.resumable());
    let packages = match settings.database.read_cache {
        true => packages.with_read_cache(ReadCacheConfig {
            max_age: Duration::from_millis(settings.database.read_cache_max_age_ms.max(1)),
            watch_every: Duration::from_millis(settings.database.read_cache_watch_ms.max(10)),
            ..ReadCacheConfig::default()
        }),
        false => packages,
    };
    // Direct uploads need presigned PUTs: S3 only (elsewhere the route says so).
    let packages = match settings.storage.backend {
        StorageBackend::S3 => packages.with_direct_uploads(
            store.clone(),
            Duration::from_secs(settings.upload.direct_ttl_secs),
        ),
        StorageBackend::Fs => packages,
    };
    let mut accounts = Accounts::new(store.clone(), settings.auth.hashing_limits())
        .with_tokens(
            store.clone(),
            Duration::from_millis(settings.auth.credential_freshness_ms),
        )
        .with_audit(audit.clone());
    if let Some(throttle) = settings.auth.login_throttle() {
        accounts = accounts.with_throttle(throttle);
    }
    let store_for_fleet = store.clone();
    let counter = settings
        .stats
        .count_downloads
        .then(|| DownloadCounter::new(store.clone()));
    let stats = StatsApi {
        counter,
        reports: Statistics::new(
            store.clone(),
            Duration::from_secs(settings.stats.cache_secs),
        ),
        retention: Retention::new(store.clone(), packages.clone(), audit.clone()),
        // Checked by Settings::check before anything is wired.
        policies: Arc::new(settings.retention.policies().unwrap_or_default()),
    };
    Wired {
        packages,
        accounts,
        audit,
        stats,
        fleet_store: store_for_fleet.clone(),
        rollout_store: store_for_fleet.clone(),
        mirror_store: store_for_fleet,
    }
}

/// The layers over one store.
pub(crate) struct Wired {
    pub(crate) packages: PackageManager,
    pub(crate) accounts: Accounts,
    pub(crate) audit: AuditLog,
    pub(crate) stats: StatsApi,
    pub(crate) fleet_store: agentpkg_store::DynFleetStore,
    pub(crate) rollout_store: agentpkg_store::DynRolloutStore,
    pub(crate) mirror_store: Arc<dyn agentpkg_store::MirrorStore>,
}

/// Runs a reconciliation pass every `gc.interval_secs` (the first one interval after start).
/// Replicas may all run it: deleting an orphan twice is harmless.
fn spawn_reconciler(
    settings: &Settings,
    packages: PackageManager,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = Duration::from_secs(settings.gc.interval_secs);
    if every.is_zero() {
        return None;
    }
    let grace = Duration::from_secs(settings.gc.grace_secs);
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match packages.reconcile(grace, false).await {
                Ok(report) => tracing::info!(
                    orphans_removed = report.orphans_removed.len(),
                    missing_objects = report.missing_objects.len(),
                    "reconciliation pass"
                ),
                Err(e) => tracing::warn!(error = %e, "reconciliation pass failed; will retry"),
            }
        }
    }))
}

impl Application {
    /// Connects every layer, creates the first admin when there are no users, binds the
    /// listener and builds the HTTP server.
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        settings.check().map_err(BuildError::Config)?;
        let secret = jwt_secret(&settings)?;
        let trusted_proxies = settings
            .server
            .trusted_proxies()
            .map_err(BuildError::Config)?;
        let wired = manager(&settings, connect(&settings).await?);
        let mirror = crate::commands::mirror(&settings, &wired)?;
        let Wired {
            packages,
            accounts,
            audit,
            stats,
            fleet_store,
            rollout_store,
            mirror_store: _,
        } = wired;
        if let Some(first) = accounts
            .ensure_admin(settings.auth.admin_password.as_ref())
            .await?
        {
            match &first.generated_password {
                // NOTE: the one place a secret is logged, on purpose and once: with no
                // configured password this is how the operator learns it.
                Some(password) => tracing::warn!(
                    "created user 'admin' with generated password: {} (shown once; set \
                     AGENTPKG__AUTH__ADMIN_PASSWORD to choose it)",
                    password.expose_secret()
                ),
                None => tracing::info!("created user 'admin' with the configured password"),
            }
        } else if let Some(configured) = &settings.auth.admin_password {
            // Users exist: the configured password applied to the first start only. Say so
            // when it is not (or no longer) admin's, rather than let the first login fail
            // without a word.
            if let Err(agentpkg_packagemgr::Error::BadCredentials) =
                accounts.login("admin", configured.clone()).await
            {
                tracing::warn!(
                    "auth.admin_password is set, but the user 'admin' does not exist or has \
                     another password: it applies to the first start only and was not changed; \
                     sign in with the current password and change it (the web interface's \
                     Users page, or PUT /api/v1/users/me/password)"
                );
            }
        }
        let reconciler = spawn_reconciler(&settings, packages.clone());
        let mut background = Vec::new();
        background.extend(packages.spawn_read_cache_watcher());
        background.push(
            stats
                .reports
                .spawn_gauge_refresher(Duration::from_secs(settings.stats.gauge_refresh_secs)),
        );
        if settings.retention.interval_secs > 0 {
            background.push(stats.retention.spawn_periodic(
                stats.policies.as_ref().clone(),
                Duration::from_secs(settings.retention.interval_secs),
            ));
        }
        let flusher = stats
            .counter
            .as_ref()
            .map(|counter| counter.spawn_flusher(Duration::from_secs(settings.stats.flush_secs)));
        let metrics = Arc::new(ApiMetrics::new(
            packages.metrics(),
            &stats.reports,
            mirror.metrics(),
        ));
        let tokens = TokenIssuer::new(
            &secret,
            settings.auth.token_ttl_secs,
            settings.auth.clock_skew_secs,
        );
        let fleet = Fleet::new(
            fleet_store,
            packages.clone(),
            Arc::new(DownloadTokens::new(
                tokens.clone(),
                Duration::from_secs(settings.fleet.download_ttl_secs),
            )),
            audit.clone(),
        )
        .with_limits(settings.fleet.limits())
        .with_rollout_min_sample(settings.fleet.rollout_min_sample)
        .with_last_seen_precision(Duration::from_secs(settings.fleet.last_seen_precision_secs))
        .with_rollouts(rollout_store, settings.fleet.rollout_time_scale)
        .with_wave_step(settings.fleet.rollout_wave_step_agents)
        .with_tick_observer(metrics.rollout_tick_observer());
        background
            .push(fleet.spawn_offer_watcher(Duration::from_millis(settings.fleet.offer_watch_ms)));
        if settings.fleet.rollout_engine {
            background.push(
                fleet.spawn_rollout_engine(Duration::from_millis(settings.fleet.rollout_tick_ms)),
            );
        }
        if settings.fleet.forget_after_days > 0 {
            background.push(fleet.spawn_forgetter(
                Duration::from_secs(settings.fleet.forget_after_days * 86_400),
                Duration::from_secs(3600),
            ));
        }
        background.extend(mirror.clone().spawn_periodic());
        let fleet_for_shutdown = fleet.clone();
        let fleet_flusher =
            fleet.spawn_flusher(Duration::from_secs(settings.fleet.seen_flush_secs.max(1)));
        let state = ApiState {
            metrics,
            packages,
            accounts,
            tokens,
            body_deadlines: settings.server.body_deadlines(),
            audit,
            trusted_proxies,
            stats,
            fleet,
            opamp: settings.fleet.transport(),
            public_url: (!settings.server.public_url.is_empty())
                .then(|| settings.server.public_url.trim_end_matches('/').to_owned()),
            downloads: DownloadOptions {
                redirect: settings.download.redirect,
                presign_ttl: Duration::from_secs(settings.download.presign_ttl_secs.max(1)),
            },
            mirror,
        };

        // The web interface's pages stand on the same parts, not on the API's state.
        let pages = agentpkg_web::WebState {
            packages: state.packages.clone(),
            accounts: state.accounts.clone(),
            sessions: state.tokens.clone(),
            public_url: state.public_url.clone(),
            fleet: Some(state.fleet.clone()),
            audit: Some(state.audit.clone()),
            mirror: Some(state.mirror.clone()),
            stats: Some(state.stats.reports.clone()),
            retention: Some((state.stats.retention.clone(), state.stats.policies.clone())),
        };

        let listener =
            TcpListener::bind(&settings.server.bind).map_err(|source| BuildError::Bind {
                addr: settings.server.bind.clone(),
                source,
            })?;
        let port = listener.local_addr()?.port();
        let metrics_server = metrics_listener(&settings, &state)?;
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(
                    agentpkg_api::enforce_body_deadlines,
                ))
                .wrap(actix_web::middleware::from_fn(agentpkg_api::track_requests))
                .wrap(actix_web::middleware::from_fn(
                    crate::request_span::request_id_header,
                ))
                // Outermost: opens the request's span and gives it its id.
                .wrap(TracingLogger::<crate::request_span::RequestSpan>::new())
                // The API first: its paths sit under a few fixed prefixes (`/api/v1`, the
                // health and OpAMP routes), so a request to it is not tried against every
                // page's pattern (each dynamic one a regex); then the web interface's pages.
                // The pages' 404 answers browsers with a page and everyone else with the
                // API's JSON.
                .configure(agentpkg_api::configure(state.clone()))
                .configure(agentpkg_web::configure(pages.clone()))
                .default_service(actix_web::web::to(agentpkg_web::not_found))
        })
        .shutdown_timeout(settings.server.shutdown_timeout_secs);
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        server = server
            .workers(workers)
            .worker_max_blocking_threads(settings.blocking_threads())
            .max_connections(settings.server.max_connections.div_ceil(workers).max(1));
        let server = server.listen(listener)?.run();
        tracing::info!(addr = %settings.server.bind, port, "listening");
        Ok(Self {
            port,
            server,
            reconciler,
            background,
            flusher,
            fleet_flusher: Some((fleet_flusher, fleet_for_shutdown)),
            metrics_server,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the separate `/metrics` listener, when configured.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(_, port)| *port)
    }

    /// Serves until the process is told to stop (SIGINT/SIGTERM).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics_server.map(|(server, _)| {
            let handle = server.handle();
            (tokio::spawn(server), handle)
        });
        let result = self.server.await;
        if let Some((task, handle)) = metrics {
            handle.stop(true).await;
            let _ = task.await;
        }
        if let Some(reconciler) = self.reconciler {
            reconciler.abort();
        }
        for task in self.background {
            task.abort();
        }
        if let Some((task, fleet)) = self.fleet_flusher {
            task.abort();
            if let Err(e) = fleet.flush_all_seen().await {
                tracing::warn!(error = %e, "agents' last-seen times not written at shutdown");
            }
            // Another replica takes the rollouts over at once.
            fleet.release_rollout_lease().await;
        }
        // The server has stopped: every download has been answered and its bytes counted.
        if let Some(flusher) = self.flusher {
            match flusher.stop().await {
                Ok(flushed) => tracing::info!(
                    downloads = flushed.downloads,
                    "download counts written at shutdown"
                ),
                Err(e) => tracing::error!(error = %e, "download counts lost at shutdown"),
            }
        }
        result
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }
}
