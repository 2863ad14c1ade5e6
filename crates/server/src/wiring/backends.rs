//! Opening what the server stands on: the database (and its migrations), object storage,
//! and the session signing secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentpkg_api::JwtSecret;
use agentpkg_storage::{DynObjectStore, FsStore, S3Config, S3Store};
use agentpkg_store::{CallObserver, DatabaseUrl, DieselStore, PoolOptions};
use rand::distr::{Alphanumeric, SampleString};
use secrecy::{ExposeSecret, SecretString};

use super::BuildError;
use crate::settings::{Settings, StorageBackend};

/// The configured database URL, or an error naming the key.
fn database_url(settings: &Settings) -> Result<DatabaseUrl, BuildError> {
    DatabaseUrl::parse(settings.database.url.expose_secret())
        .map_err(|e| BuildError::Config(format!("database.url: {e}")))
}

pub(super) async fn open_store(settings: &Settings) -> Result<DieselStore, BuildError> {
    let url = database_url(settings)?;
    let db = &settings.database;
    let options = PoolOptions {
        max_connections: db.max_connections.max(1),
        acquire_timeout: Duration::from_secs(db.acquire_timeout_secs.max(1)),
        lock_timeout: Duration::from_secs(db.lock_timeout_secs.max(1)),
        statement_timeout: Duration::from_secs(db.statement_timeout_secs.max(1)),
    };
    // r2d2 connects eagerly and blocks: keep that off the async threads.
    let store = tokio::task::spawn_blocking(move || DieselStore::connect(&url, &options))
        .await
        .map_err(|e| BuildError::Config(format!("database connect task failed: {e}")))??;
    tracing::info!(backend = store.backend(), "database connected");
    Ok(store)
}

/// `agentpkg-server migrate`: applies (or reverts) migrations and nothing else.
pub async fn migrate_only(settings: &Settings, revert_all: bool) -> Result<usize, BuildError> {
    let store = open_store(settings).await?;
    Ok(if revert_all {
        store.revert_all_migrations().await?
    } else {
        store.run_migrations().await?
    })
}

pub(super) async fn open_storage(
    settings: &Settings,
    observer: Arc<dyn CallObserver>,
) -> Result<DynObjectStore, BuildError> {
    let storage: DynObjectStore = match settings.storage.backend {
        StorageBackend::Fs => Arc::new(
            FsStore::open(&settings.storage.fs.root)
                .await?
                .observed_by(observer),
        ),
        StorageBackend::S3 => {
            let s3 = &settings.storage.s3;
            let secret_key = s3.secret_key.clone().ok_or_else(|| {
                BuildError::Config("storage.s3.secret_key is required with the s3 backend".into())
            })?;
            for (value, key) in [
                (&s3.endpoint, "endpoint"),
                (&s3.access_key, "access_key"),
                (&s3.bucket, "bucket"),
            ] {
                if value.is_empty() {
                    return Err(BuildError::Config(format!(
                        "storage.s3.{key} is required with the s3 backend"
                    )));
                }
            }
            Arc::new(
                S3Store::connect(&S3Config {
                    endpoint: s3.endpoint.clone(),
                    region: s3.region.clone(),
                    bucket: s3.bucket.clone(),
                    access_key: s3.access_key.clone(),
                    secret_key,
                    path_style: s3.path_style,
                    max_concurrent_parts: s3.max_concurrent_parts,
                    request_timeout: Duration::from_secs(s3.request_timeout_secs.max(1)),
                })
                .await?
                .observed_by(observer),
            )
        }
    };
    tracing::info!(backend = storage.kind(), "object storage connected");
    Ok(storage)
}

/// The signing secret: configured, or — on the embedded SQLite default only — generated
/// once and kept beside the database file, so tokens survive a restart.
pub(super) fn jwt_secret(settings: &Settings) -> Result<JwtSecret, BuildError> {
    if let Some(secret) = &settings.auth.jwt_secret {
        return JwtSecret::new(secret.clone()).map_err(BuildError::Config);
    }
    match database_url(settings)? {
        DatabaseUrl::Postgres(_) => Err(BuildError::Config(
            "auth.jwt_secret is required with PostgreSQL: every replica must share it \
             (set AGENTPKG__AUTH__JWT_SECRET to at least 32 random bytes)"
                .into(),
        )),
        DatabaseUrl::Sqlite(db) => {
            let dir = db
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let path = dir.join("jwt-secret");
            let secret = std::fs::create_dir_all(&dir)
                .and_then(|()| load_or_create_secret(&path))
                .map_err(|e| {
                    BuildError::Config(format!("JWT secret file {}: {e}", path.display()))
                })?;
            JwtSecret::new(secret).map_err(BuildError::Config)
        }
    }
}

fn load_or_create_secret(path: &Path) -> std::io::Result<SecretString> {
    use std::io::Write;
    match std::fs::read_to_string(path) {
        Ok(s) => return Ok(SecretString::from(s.trim().to_owned())),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let secret = Alphanumeric.sample_string(&mut rand::rng(), 64);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "generated a JWT signing secret");
            Ok(SecretString::from(secret))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(SecretString::from(
            std::fs::read_to_string(path)?.trim().to_owned(),
        )),
        Err(e) => Err(e),
    }
}
