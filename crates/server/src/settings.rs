//! Configuration, layered: built-in defaults → a TOML file → environment variables
//! `AGENTPKG__SECTION__KEY` (e.g. `AGENTPKG__AUTH__ADMIN_PASSWORD`).
//!
//! Secrets are [`SecretString`]s: they never appear in `Debug` output or logs.

mod load;
mod signing;
mod stats;
pub use load::{DEFAULT_CONFIG_FILE, misspelt_variables};
pub use signing::{SigningSettings, SigstoreSettings};
pub use stats::{FleetSettings, RetentionSettings, StatsSettings};

use std::path::PathBuf;

use std::time::Duration;

use agentpkg_api::BodyDeadlines;
use agentpkg_packagemgr::{HashingLimits, ManagerConfig, ResumableConfig};
use agentpkg_store::PoolOptions;
use secrecy::SecretString;
use serde::Deserialize;

/// Everything the server can be told. With no configuration at all it serves
/// `127.0.0.1:8080` from a SQLite file and a directory under `./data`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub storage: StorageSettings,
    pub auth: AuthSettings,
    pub upload: UploadSettings,
    pub download: DownloadSettings,
    pub signing: SigningSettings,
    pub gc: GcSettings,
    pub stats: StatsSettings,
    pub retention: RetentionSettings,
    pub fleet: FleetSettings,
    /// The verified mirror of upstream releases (`[[mirror.sources]]`).
    pub mirror: agentpkg_mirror::MirrorSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port.
    pub bind: String,
    /// The address agents and clients reach the registry at (`https://pkg.example.com`),
    /// for the absolute download URLs of OpAMP offers. Empty: the address each request
    /// came to.
    pub public_url: String,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_timeout_secs: u64,
    /// Connections open at once, over all workers; past it new ones wait in the backlog.
    pub max_connections: usize,
    /// Threads each worker may run blocking work on (every database call, file storage);
    /// work past it waits in a queue rather than in a thread of its own. 0: twice the
    /// database pool and 16 more.
    pub max_blocking_threads: usize,
    /// Longest gap, in seconds, between two chunks of a request body: past it the request
    /// ends with 408 `body_timeout` (and an upload stores nothing).
    pub body_idle_timeout_secs: u64,
    /// Least average rate of a request body, in bytes a second, once
    /// `body_rate_grace_secs` have passed since it started (0: no minimum).
    pub body_min_rate_bytes: u64,
    pub body_rate_grace_secs: u64,
    /// Addresses of reverse proxies whose `X-Forwarded-For` names the client (for the
    /// audit log and login throttling); from any other peer the header is ignored.
    pub trusted_proxies: Vec<String>,
}

impl Settings {
    /// Threads each HTTP worker may block in: configured, or enough for every pooled
    /// database connection to be busy twice over, and file storage besides.
    ///
    /// NOTE: tokio's default (512 per runtime) let a burst of database calls — 10 000
    /// agents registering — start hundreds of threads that each waited for one of the
    /// pool's connections, and their stacks and allocator arenas stayed resident: peak RSS
    /// 75–84 MiB instead of about 60 in the fleet bench.
    pub fn blocking_threads(&self) -> usize {
        match self.server.max_blocking_threads {
            0 => usize::try_from(self.database.max_connections)
                .unwrap_or(usize::MAX)
                .saturating_mul(2)
                .saturating_add(16),
            n => n,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        let body = BodyDeadlines::default();
        Self {
            bind: "127.0.0.1:8080".into(),
            public_url: String::new(),
            workers: 0,
            shutdown_timeout_secs: 30,
            max_connections: 10_000,
            max_blocking_threads: 0,
            body_idle_timeout_secs: body.idle.as_secs(),
            body_min_rate_bytes: body.min_rate,
            body_rate_grace_secs: body.grace.as_secs(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl ServerSettings {
    pub fn trusted_proxies(&self) -> Result<agentpkg_api::TrustedProxies, String> {
        self.trusted_proxies
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|_| format!("server.trusted_proxies: {a:?} is not an IP address"))
            })
            .collect::<Result<_, _>>()
            .map(agentpkg_api::TrustedProxies)
    }

    pub fn body_deadlines(&self) -> BodyDeadlines {
        BodyDeadlines {
            idle: Duration::from_secs(self.body_idle_timeout_secs.max(1)),
            min_rate: self.body_min_rate_bytes,
            grace: Duration::from_secs(self.body_rate_grace_secs),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// A SQLite file path (or `sqlite://path`), or a
    /// `postgres://user:password@host:port/db` URL. Any other scheme stops the server.
    pub url: SecretString,
    pub max_connections: u32,
    /// Seconds to wait for a pooled connection before answering 503.
    pub acquire_timeout_secs: u64,
    /// PostgreSQL: seconds a statement waits for a lock before it fails (and the request
    /// with it, rolled back), so that nothing waits forever.
    pub lock_timeout_secs: u64,
    /// PostgreSQL: seconds a statement may run before it is cancelled.
    pub statement_timeout_secs: u64,
    /// Keep package reads (by id, by coordinates, latest, versions) in memory: forgotten
    /// at once on this replica's changes, and on others' when the package revision moves.
    pub read_cache: bool,
    /// Milliseconds between reads of the package revision: another replica's publish,
    /// yank or delete is seen within this (twice this when its commit came late).
    pub read_cache_watch_ms: u64,
    /// Milliseconds a kept read is trusted at most, whatever the revision says.
    pub read_cache_max_age_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        let pool = PoolOptions::default();
        let reads = agentpkg_packagemgr::ReadCacheConfig::default();
        Self {
            url: SecretString::from("./data/agentpkg.db"),
            max_connections: pool.max_connections,
            acquire_timeout_secs: pool.acquire_timeout.as_secs(),
            lock_timeout_secs: pool.lock_timeout.as_secs(),
            statement_timeout_secs: pool.statement_timeout.as_secs(),
            read_cache: true,
            read_cache_watch_ms: reads.watch_every.as_millis() as u64,
            read_cache_max_age_ms: reads.max_age.as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Fs,
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    pub backend: StorageBackend,
    /// Longest wait, in seconds, for storage to start a download or deliver its next chunk.
    pub read_timeout_secs: u64,
    pub fs: FsSettings,
    pub s3: S3Settings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            backend: StorageBackend::default(),
            read_timeout_secs: ManagerConfig::default().storage_read_timeout.as_secs(),
            fs: FsSettings::default(),
            s3: S3Settings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsSettings {
    pub root: PathBuf,
}

impl Default for FsSettings {
    fn default() -> Self {
        Self {
            root: PathBuf::from("./data/packages"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: Option<SecretString>,
    /// Path-style URLs (`endpoint/bucket/key`); MinIO and Garage need them.
    pub path_style: bool,
    /// 8 MiB parts in flight per upload (memory per upload ≈ parts × 8 MiB).
    pub max_concurrent_parts: usize,
    pub request_timeout_secs: u64,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: "agent-packages".into(),
            access_key: String::new(),
            secret_key: None,
            path_style: true,
            max_concurrent_parts: 2,
            request_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 signing secret, at least 32 bytes. Required with PostgreSQL (replicas share
    /// it); with SQLite it defaults to a secret generated once into the data directory.
    pub jwt_secret: Option<SecretString>,
    pub token_ttl_secs: u64,
    /// Seconds of clock difference tolerated when checking a token's times, so that a
    /// replica whose clock is behind accepts a token another has just issued.
    pub clock_skew_secs: u64,
    /// How long, in milliseconds, a replica trusts what it read of a user or an API token:
    /// a deleted user, a changed role or password, or a revoked token stops working on
    /// every replica within this.
    pub credential_freshness_ms: u64,
    /// Failed logins allowed per username from one address within `login_window_secs`
    /// before further attempts are answered 429 (0: no throttling).
    pub login_attempts: u32,
    /// Failed logins allowed per address, whatever the username, within the window.
    pub login_attempts_per_address: u32,
    pub login_window_secs: u64,
    /// The first block's length in seconds; each further failure doubles it, up to an hour.
    pub login_backoff_secs: u64,
    /// Password of the `admin` user created on first start. When unset, a random one is
    /// generated and printed once to the log.
    pub admin_password: Option<SecretString>,
    /// Password hashes computed at once (each holds about 19 MiB); 0 means one per two
    /// cores (at least 1, at most 4), so a login flood never takes every core.
    pub password_hash_workers: usize,
    /// Logins that may wait for a hashing thread; one more is answered `503` `busy` at
    /// once. 0 means 16 per worker.
    pub password_hash_queue: usize,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            token_ttl_secs: 3600,
            clock_skew_secs: 60,
            credential_freshness_ms: 1000,
            login_attempts: 5,
            login_attempts_per_address: 20,
            login_window_secs: 60,
            login_backoff_secs: 30,
            admin_password: None,
            password_hash_workers: 0,
            password_hash_queue: 0,
        }
    }
}

impl AuthSettings {
    /// The login throttle, unless turned off (`login_attempts = 0`).
    pub fn login_throttle(&self) -> Option<agentpkg_packagemgr::LoginThrottle> {
        use agentpkg_packagemgr::LoginLimit;
        let limit = |attempts: u32| LoginLimit {
            attempts: attempts.max(1),
            window: Duration::from_secs(self.login_window_secs.max(1)),
            backoff: Duration::from_secs(self.login_backoff_secs.max(1)),
        };
        (self.login_attempts > 0).then(|| agentpkg_packagemgr::LoginThrottle {
            per_user: limit(self.login_attempts),
            per_address: limit(self.login_attempts_per_address.max(self.login_attempts)),
        })
    }

    /// The hashing bound, with 0s replaced by the defaults.
    pub fn hashing_limits(&self) -> HashingLimits {
        let default = HashingLimits::default();
        let workers = match self.password_hash_workers {
            0 => default.workers,
            n => n,
        };
        HashingLimits {
            workers,
            queue: match self.password_hash_queue {
                0 => workers * 16,
                n => n,
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadSettings {
    pub max_size_bytes: u64,
    /// Uploads streaming at once; one more is answered 503 `too_many_uploads`.
    pub max_concurrent: usize,
    /// How long a direct upload's presigned `PUT` URL works (s3 backend): until then its
    /// object is in flight; after it, the upload is gone and reconciliation removes what
    /// it left.
    pub direct_ttl_secs: u64,
    /// A resumable (tus) upload not written to for this long expires (`Upload-Expires`);
    /// reconciliation then removes it and what it stored.
    pub session_ttl_secs: u64,
    /// Resumable uploads one user may have open; one more is answered 429.
    pub max_sessions_per_user: u64,
    /// Bytes one user's unfinished uploads (open resumable sessions and direct grants, by
    /// their announced lengths) may hold together; past it, 429 `upload_quota`.
    pub max_bytes_in_flight_per_user: u64,
    /// Direct-upload grants one user may hold at once; one more is answered 429.
    pub max_direct_grants_per_user: u64,
    /// The largest part a resumable upload's request writes at once, in MiB (at least 5,
    /// S3's smallest part): what a dropped connection can lose.
    pub part_size_mib: u64,
}

impl Default for UploadSettings {
    fn default() -> Self {
        let manager = ManagerConfig::default();
        let resumable = ResumableConfig::default();
        Self {
            max_size_bytes: manager.max_upload_bytes,
            max_concurrent: manager.max_concurrent_uploads,
            direct_ttl_secs: 900,
            session_ttl_secs: resumable.ttl.as_secs(),
            max_sessions_per_user: resumable.max_sessions_per_user,
            max_bytes_in_flight_per_user: manager.max_bytes_in_flight_per_user,
            max_direct_grants_per_user: manager.max_direct_grants_per_user,
            part_size_mib: resumable.part_bytes / (1024 * 1024),
        }
    }
}

impl UploadSettings {
    pub fn resumable(&self) -> ResumableConfig {
        ResumableConfig {
            ttl: Duration::from_secs(self.session_ttl_secs),
            max_sessions_per_user: self.max_sessions_per_user,
            part_bytes: self.part_size_mib * 1024 * 1024,
            ..ResumableConfig::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownloadSettings {
    /// Answer S3-backed downloads with a 307 to a presigned URL, so the bytes flow from
    /// object storage and not through the server (per request: `?redirect=true|false`).
    pub redirect: bool,
    /// Lifetime of a presigned URL, in seconds.
    pub presign_ttl_secs: u64,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        Self {
            redirect: false,
            presign_ttl_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcSettings {
    /// Seconds between reconciliation passes (orphaned objects removed, missing objects
    /// reported); 0 turns the periodic pass off (`agentpkg-server gc` still works).
    pub interval_secs: u64,
    /// Unreferenced objects without an in-flight marker younger than this are left alone
    /// (written by a server without markers, or a spare copy whose delete is pending). At
    /// least 60.
    pub grace_secs: u64,
    /// An upload's in-flight marker untouched for this long (uploads touch theirs every
    /// quarter of it) belongs to a process that died: its object may go. At least 60.
    pub stale_upload_secs: u64,
}

impl Default for GcSettings {
    fn default() -> Self {
        Self {
            interval_secs: 3600,
            grace_secs: 900,
            stale_upload_secs: ManagerConfig::default().stale_upload_after.as_secs(),
        }
    }
}

impl GcSettings {
    /// The least a configured grace or staleness may be: below it a slow database or a
    /// paused client could see its upload taken for abandoned.
    pub const MIN_SECS: u64 = 60;
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// A separate address serving `GET /metrics` without authentication, for a scraper
    /// (e.g. `127.0.0.1:9100`). Empty: only the API port serves `/metrics`, to admins.
    pub bind: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,agentpkg_packagemgr=debug`; `RUST_LOG`
    /// wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Settings {
    /// What deserialising cannot check: limits with a safe minimum.
    pub fn check(&self) -> Result<(), String> {
        for (value, key) in [
            (self.gc.grace_secs, "gc.grace_secs"),
            (self.gc.stale_upload_secs, "gc.stale_upload_secs"),
        ] {
            if value < GcSettings::MIN_SECS {
                return Err(format!(
                    "{key} must be at least {} seconds (is {value}): shorter, reconciliation \
                     could delete the bytes of an upload still in flight",
                    GcSettings::MIN_SECS
                ));
            }
        }
        self.stats.check()?;
        self.retention.policies()?;
        if !(50..=60_000).contains(&self.fleet.offer_watch_ms) {
            return Err(format!(
                "fleet.offer_watch_ms must be 50 to 60000 milliseconds, is {}",
                self.fleet.offer_watch_ms
            ));
        }
        if !(50..=600_000).contains(&self.fleet.rollout_tick_ms) {
            return Err(format!(
                "fleet.rollout_tick_ms must be 50 to 600000 milliseconds, is {}",
                self.fleet.rollout_tick_ms
            ));
        }
        if !(1..=100_000).contains(&self.fleet.rollout_time_scale) {
            return Err(format!(
                "fleet.rollout_time_scale must be 1 to 100000, is {}",
                self.fleet.rollout_time_scale
            ));
        }
        if !(1024..=64 << 20).contains(&self.fleet.max_message_bytes) {
            return Err(format!(
                "fleet.max_message_bytes must be 1024 to 67108864, is {}",
                self.fleet.max_message_bytes
            ));
        }
        if !(1..=3600).contains(&self.fleet.websocket_ping_secs) {
            return Err(format!(
                "fleet.websocket_ping_secs must be 1 to 3600, is {}",
                self.fleet.websocket_ping_secs
            ));
        }
        if self.upload.session_ttl_secs < 60 {
            return Err(format!(
                "upload.session_ttl_secs must be at least 60 seconds, is {}",
                self.upload.session_ttl_secs
            ));
        }
        if !(5..=5 * 1024).contains(&self.upload.part_size_mib) {
            return Err(format!(
                "upload.part_size_mib must be 5 to 5120 (S3's part sizes), is {}",
                self.upload.part_size_mib
            ));
        }
        if !(1..=604_800).contains(&self.upload.direct_ttl_secs) {
            return Err(format!(
                "upload.direct_ttl_secs must be 1 to 604800 seconds (S3's presigned URL limit), \
                 is {}",
                self.upload.direct_ttl_secs
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
