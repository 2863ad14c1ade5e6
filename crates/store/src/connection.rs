use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::{CallObserver, StoreError};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// One connection to either backend; queries are written once against it.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

/// Where the metadata lives: a `postgres://` (or `postgresql://`) URL, or a SQLite file.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// A `postgres://` or `postgresql://` URL selects PostgreSQL; a `sqlite://` URL or a
    /// plain path (no scheme) selects a SQLite file. Any other scheme is an error, not a
    /// file of that name: `postgress://…` or `mysql://…` is a mistake to report.
    pub fn parse(s: &str) -> Result<Self, UnsupportedDatabaseUrl> {
        match s.split_once("://") {
            Some(("postgres" | "postgresql", _)) => Ok(Self::Postgres(s.to_owned())),
            Some(("sqlite", path)) => Ok(Self::Sqlite(PathBuf::from(path))),
            Some((scheme, _)) => Err(UnsupportedDatabaseUrl {
                scheme: scheme.chars().take(32).collect(),
            }),
            None => Ok(Self::Sqlite(PathBuf::from(s))),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }
}

/// A database URL whose scheme is none of `postgres`, `postgresql` and `sqlite`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported scheme {scheme:?}: use postgres://, postgresql://, sqlite:// or a SQLite file path"
)]
pub struct UnsupportedDatabaseUrl {
    /// Only the scheme: the rest may hold a password.
    pub scheme: String,
}

// NOTE: the URL may carry a password, so Debug shows the backend only.
impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres(_) => f.write_str("Postgres(<redacted>)"),
            Self::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
        }
    }
}

/// Opens connections of the configured backend only. (Diesel's generic manager would try
/// each backend in turn, and SQLite accepts any string as a path: a PostgreSQL outage would
/// silently create a file named after the URL.)
struct Manager {
    url: DatabaseUrl,
    lock_timeout: Duration,
    statement_timeout: Duration,
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                let mut conn =
                    PgConnection::establish(url).map_err(r2d2::Error::ConnectionError)?;
                // UTC, so that timestamps the database makes (upload markers) read the same
                // in every session; and no statement waits forever on a lock or runs without
                // end: a waiting insert fails (503, rolled back) instead of hanging.
                conn.batch_execute(&format!(
                    "SET TIME ZONE 'UTC'; SET lock_timeout = {}; SET statement_timeout = {};",
                    self.lock_timeout.as_millis().max(1),
                    self.statement_timeout.as_millis().max(1),
                ))
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Pg(conn))
            }
            DatabaseUrl::Sqlite(path) => {
                let path = path.to_str().ok_or_else(|| {
                    r2d2::Error::ConnectionError(diesel::ConnectionError::BadConnection(
                        "the SQLite path is not valid UTF-8".into(),
                    ))
                })?;
                let mut conn =
                    SqliteConnection::establish(path).map_err(r2d2::Error::ConnectionError)?;
                // WAL lets readers run beside the one writer; busy_timeout makes writers
                // queue instead of failing with SQLITE_BUSY.
                // NOTE: synchronous = FULL, not NORMAL: with NORMAL a power loss may undo a
                // committed transaction, and a package delete commits the row's removal
                // before deleting the object — undone, the row would point at nothing.
                conn.batch_execute(
                    "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA foreign_keys = ON;",
                )
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        // A connection whose last call failed at the connection level goes, instead of
        // back to the pool (see `DieselStore::with_conn_read`).
        CONNECTION_FAILED.with(|failed| failed.replace(false)) || conn.is_broken()
    }
}

thread_local! {
    /// Set on the blocking thread that ran a call which failed at the connection level,
    /// just before its connection is dropped; read (and cleared) by `has_broken` on the
    /// same thread as r2d2 takes the connection back.
    static CONNECTION_FAILED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether `result` failed because the connection itself is gone (killed, failed over).
fn connection_lost<T>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Unavailable(_)))
}

/// The advisory lock key under which PostgreSQL migrations run ("agentpkg" in ASCII).
const MIGRATION_LOCK: i64 = 0x6167_656e_7470_6b67;

/// Runs `f` holding the migration lock; the lock is released however `f` ends.
fn with_migration_lock<T>(
    conn: &mut PgConnection,
    statement_timeout: Duration,
    f: impl FnOnce(&mut PgConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // NOTE: the statement timeout would cancel a replica waiting its turn behind a long
    // migration; waiting here is what it is for.
    conn.batch_execute(&format!(
        "SET statement_timeout = 0; SELECT pg_advisory_lock({MIGRATION_LOCK});"
    ))?;
    let result = f(conn);
    let unlocked = conn.batch_execute(&format!(
        "SELECT pg_advisory_unlock({MIGRATION_LOCK}); SET statement_timeout = {};",
        statement_timeout.as_millis().max(1)
    ));
    let value = result?;
    unlocked?;
    Ok(value)
}

/// A transaction that holds the write lock from its first statement.
///
/// NOTE: on SQLite, a transaction that reads and then writes fails at once (it cannot
/// upgrade a stale snapshot) if another writer committed in between. A write first takes
/// the lock up front, so writers queue under `busy_timeout` instead. PostgreSQL needs
/// nothing: its row locks and constraints serialise the writers that conflict.
pub(crate) fn write_transaction<T, F>(conn: &mut DbConnection, f: F) -> Result<T, StoreError>
where
    F: FnOnce(&mut DbConnection) -> Result<T, StoreError>,
{
    use diesel::RunQueryDsl;
    let mut body_succeeded = false;
    let result = conn.transaction(|conn| {
        if matches!(conn, DbConnection::Sqlite(_)) {
            diesel::sql_query("UPDATE blobs SET file_size = file_size WHERE 0 = 1")
                .execute(conn)?;
        }
        let result = f(conn);
        body_succeeded = result.is_ok();
        result
    });
    match result {
        // Everything ran and only the commit failed: it may have landed all the same.
        Err(e) if body_succeeded => Err(StoreError::CommitUncertain(e.to_string())),
        other => other,
    }
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
    /// PostgreSQL: how long a statement waits for a lock before it fails.
    pub lock_timeout: Duration,
    /// PostgreSQL: how long a statement may run before it is cancelled.
    pub statement_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
        }
    }
}

/// The Diesel-backed [`crate::PackageStore`] and [`crate::AccountStore`].
#[derive(Clone)]
pub struct DieselStore {
    pool: r2d2::Pool<Manager>,
    backend: &'static str,
    statement_timeout: Duration,
    observer: Option<Arc<dyn CallObserver>>,
    /// Package list totals by filter (see `packages::Totals`).
    pub(crate) totals: crate::packages::Totals,
}

impl DieselStore {
    /// Opens a pool. For SQLite, the file's directory is created when missing.
    pub fn connect(url: &DatabaseUrl, options: &PoolOptions) -> Result<Self, StoreError> {
        if let DatabaseUrl::Sqlite(path) = url
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        // libpq uses OpenSSL, which by default registers a cleanup that runs at process
        // exit and frees what a pool thread still opening a TLS connection is using: a
        // one-shot command (`gc`, `migrate`) then ends in SIGSEGV about one run in twenty.
        // Initialising OpenSSL first, the way the openssl crate does, leaves that cleanup
        // out (OPENSSL_INIT_NO_ATEXIT); the operating system reclaims the memory anyway.
        openssl_sys::init();
        let pool = r2d2::Pool::builder()
            .max_size(options.max_connections)
            .min_idle(Some(1))
            .connection_timeout(options.acquire_timeout)
            // NOTE: no `SELECT 1` on every check-out (it was a second round trip on every
            // read): reads find a dead connection by failing, drop it and retry on another;
            // writes still check theirs first, because a write is never replayed.
            .test_on_check_out(false)
            .build(Manager {
                url: url.clone(),
                lock_timeout: options.lock_timeout,
                statement_timeout: options.statement_timeout,
            })
            .map_err(StoreError::from)?;
        Ok(Self {
            pool,
            backend: url.backend_name(),
            statement_timeout: options.statement_timeout,
            observer: None,
            totals: crate::packages::totals(),
        })
    }

    /// The same store, telling `observer` how long each call took (the wait for a pooled
    /// connection included).
    pub fn observed_by(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// How busy the pool is.
    pub fn pool_status(&self) -> crate::PoolStatus {
        let state = self.pool.state();
        crate::PoolStatus {
            connections: state.connections,
            idle: state.idle_connections,
            max: self.pool.max_size(),
        }
    }

    /// Applies every pending migration; returns how many ran.
    ///
    /// Replicas started together would race their migrations on PostgreSQL (and one would
    /// fail on a duplicate type), so they take turns under an advisory lock: the first
    /// migrates, the others wait, then find nothing left to do. SQLite's write lock does
    /// the same for the embedded default.
    pub async fn run_migrations(&self) -> Result<usize, StoreError> {
        let statement_timeout = self.statement_timeout;
        self.with_conn("run_migrations", move |conn| {
            let applied = match conn {
                DbConnection::Pg(c) => with_migration_lock(c, statement_timeout, |c| {
                    c.run_pending_migrations(PG_MIGRATIONS)
                        .map(|v| v.len())
                        .map_err(|e| StoreError::Migration(e.to_string()))
                })?,
                DbConnection::Sqlite(c) => c
                    .run_pending_migrations(SQLITE_MIGRATIONS)
                    .map(|v| v.len())
                    .map_err(|e| StoreError::Migration(e.to_string()))?,
            };
            Ok(applied)
        })
        .await
    }

    /// Reverts every applied migration (used by `migrate --revert-all` and tests).
    pub async fn revert_all_migrations(&self) -> Result<usize, StoreError> {
        self.with_conn("revert_all_migrations", |conn| {
            let reverted = match conn {
                DbConnection::Pg(c) => c.revert_all_migrations(PG_MIGRATIONS),
                DbConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS),
            }
            .map_err(|e| StoreError::Migration(e.to_string()))?;
            Ok(reverted.len())
        })
        .await
    }

    /// Runs `f` with a pooled connection on the blocking thread pool, and tells the
    /// observer how long `operation` took and whether it succeeded.
    /// Runs a call that may write on a pooled connection, checked with a ping first: a
    /// write is never sent twice, so it must not be sent on a connection that died idle.
    pub(crate) async fn with_conn<T, F>(
        &self,
        operation: &'static str,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.pool.clone();
        self.blocking(operation, move || {
            let mut conn = checked_out(&pool)?;
            flagged(f(&mut conn))
        })
        .await
    }

    /// Runs a read on a pooled connection without checking it first: a connection found
    /// dead by the read is dropped and the read runs again on another, up to once per
    /// connection the pool may hold (after a failover every idle one is dead). Also for a
    /// write that has the same effect when run twice (a session's lease, taken by its
    /// token).
    pub(crate) async fn with_conn_read<T, F>(
        &self,
        operation: &'static str,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut DbConnection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.pool.clone();
        self.blocking(operation, move || {
            let mut attempts = pool.max_size() + 1;
            loop {
                let mut conn = pool.get()?;
                attempts -= 1;
                let result = flagged(f(&mut conn));
                if attempts == 0 || !connection_lost(&result) {
                    return result;
                }
            }
        })
        .await
    }

    /// Runs `job` on Tokio's blocking pool, timed for the observer.
    async fn blocking<T>(
        &self,
        operation: &'static str,
        job: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
    {
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| {
                // A panic is a bug (a 500); a cancelled task means the runtime is stopping.
                if e.is_panic() {
                    StoreError::Panicked(e.to_string())
                } else {
                    StoreError::Task(e.to_string())
                }
            })
            .and_then(|r| r);
        if let Some(observer) = &self.observer {
            observer.observe(operation, result.is_ok(), started.elapsed());
        }
        result
    }
}

/// `result`, having told the pool (through `has_broken`, as the connection goes back on
/// this thread) to drop the connection when the result says it is gone.
fn flagged<T>(result: Result<T, StoreError>) -> Result<T, StoreError> {
    if connection_lost(&result) {
        CONNECTION_FAILED.with(|failed| failed.set(true));
    }
    result
}

/// A pooled connection that answers a ping; dead ones are dropped (and replaced by the
/// pool) until one does, up to the pool's size.
fn checked_out(pool: &r2d2::Pool<Manager>) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
    let mut attempts = pool.max_size() + 1;
    loop {
        let mut conn = pool.get()?;
        attempts -= 1;
        match conn.ping() {
            Ok(_) => return Ok(conn),
            Err(e) if attempts == 0 => return Err(StoreError::Unavailable(e.to_string())),
            Err(_) => {
                CONNECTION_FAILED.with(|failed| failed.set(true));
                drop(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_commits_survive_power_loss() {
        // With synchronous=NORMAL in WAL mode a power loss may undo a committed delete
        // whose object is already gone; FULL syncs the log at every commit.
        use diesel::QueryableByName;
        #[derive(QueryableByName)]
        struct Sync {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            synchronous: i32,
        }
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("t.db"));
        let store = DieselStore::connect(&url, &PoolOptions::default()).unwrap();
        let level = store
            .with_conn("pragma", |c| {
                use diesel::RunQueryDsl;
                Ok(diesel::sql_query("PRAGMA synchronous").get_result::<Sync>(c)?)
            })
            .await
            .unwrap();
        assert_eq!(level.synchronous, 2, "FULL");
    }

    #[test]
    fn only_known_schemes_and_plain_paths_are_database_urls() {
        assert!(matches!(
            DatabaseUrl::parse("postgres://u:p@db/agentpkg"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("postgresql://db/agentpkg"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert_eq!(
            DatabaseUrl::parse("sqlite://./data/a.db"),
            Ok(DatabaseUrl::Sqlite(PathBuf::from("./data/a.db")))
        );
        assert_eq!(
            DatabaseUrl::parse("./data/agentpkg.db"),
            Ok(DatabaseUrl::Sqlite(PathBuf::from("./data/agentpkg.db")))
        );
        for bad in ["postgress://u:secret@db/x", "mysql://db/x", "file://x.db"] {
            let err = DatabaseUrl::parse(bad).unwrap_err();
            assert!(!err.to_string().contains("secret"), "{err}");
            assert_eq!(err.scheme, bad.split("://").next().unwrap());
        }
    }
}
