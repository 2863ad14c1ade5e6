//! Starts the real server on port 0 against real PostgreSQL and a real S3 server
//! (Garage), or against the embedded default (SQLite + a directory), with a database and a
//! bucket of its own per test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use agentpkg_model::ListQuery;
use agentpkg_server::Settings;
use agentpkg_server::settings::StorageBackend;
use agentpkg_storage::{DynObjectStore, FsStore, S3Config, S3Store};
use agentpkg_store::testing::TestDatabase;
use agentpkg_store::{DatabaseUrl, DieselStore, PackageStore, PoolOptions};
use reqwest::multipart::{Form, Part};
use secrecy::SecretString;
use serde_json::Value;

pub const ADMIN_PASSWORD: &str = "test-admin-password-1234";
pub const JWT_SECRET: &str = "test-signing-secret-of-at-least-32-bytes!";

/// `Production`: PostgreSQL + S3 (Garage); `Embedded`: SQLite + a directory.
pub use agentpkg_store::testing::Backend;

/// S3 settings of the test server, from `AGENTPKG_TEST_S3_*` or the file that
/// `scripts/s3-up.sh` writes.
pub fn s3_env() -> S3Env {
    let file = workspace_root().join(".garage/env");
    let from_file: Vec<(String, String)> = std::fs::read_to_string(&file)
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let get = |key: &str| {
        std::env::var(key)
            .ok()
            .or_else(|| from_file.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
            .unwrap_or_else(|| {
                panic!("{key} is not set and {} has no value: run scripts/s3-up.sh (or `just s3-up`) first", file.display())
            })
    };
    S3Env {
        endpoint: get("AGENTPKG_TEST_S3_ENDPOINT"),
        region: get("AGENTPKG_TEST_S3_REGION"),
        access_key: get("AGENTPKG_TEST_S3_ACCESS_KEY"),
        secret_key: get("AGENTPKG_TEST_S3_SECRET_KEY"),
    }
}

#[derive(Clone)]
pub struct S3Env {
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub struct TestApp {
    pub backend: Backend,
    pub base: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    /// The same store and storage the server uses, opened separately to inspect them.
    pub store: DieselStore,
    pub storage: DynObjectStore,
    /// The separate metrics listener's port, when `metrics.bind` was set.
    pub metrics_port: Option<u16>,
    handle: ServerHandle,
    bucket: Option<String>,
    db: Option<TestDatabase>,
    dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::default();
        settings.server.bind = "127.0.0.1:0".into();
        settings.server.workers = 2;
        settings.server.shutdown_timeout_secs = 1;
        settings.auth.jwt_secret = Some(SecretString::from(JWT_SECRET));
        settings.auth.admin_password = Some(SecretString::from(ADMIN_PASSWORD));
        let (db, bucket) = match backend {
            Backend::Production => {
                let db = TestDatabase::create();
                settings.database.url = SecretString::from(db.url().to_owned());
                let s3 = s3_env();
                let bucket = format!("agentpkg-test-{}", uuid::Uuid::new_v4().simple());
                settings.storage.backend = StorageBackend::S3;
                settings.storage.s3.endpoint = s3.endpoint;
                settings.storage.s3.region = s3.region;
                settings.storage.s3.access_key = s3.access_key;
                settings.storage.s3.secret_key = Some(SecretString::from(s3.secret_key));
                settings.storage.s3.bucket = bucket.clone();
                settings.storage.s3.request_timeout_secs = 10;
                (Some(db), Some(bucket))
            }
            Backend::Embedded => {
                settings.database.url =
                    SecretString::from(dir.path().join("agentpkg.db").display().to_string());
                settings.storage.backend = StorageBackend::Fs;
                settings.storage.fs.root = dir.path().join("packages");
                (None, None)
            }
        };
        tweak(&mut settings);

        let app = agentpkg_server::Application::build(settings.clone())
            .await
            .expect("the server starts");
        let port = app.port();
        let metrics_port = app.metrics_port();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());

        let store = DieselStore::connect(
            &DatabaseUrl::parse(secrecy::ExposeSecret::expose_secret(&settings.database.url))
                .unwrap(),
            &PoolOptions::default(),
        )
        .unwrap();
        let storage = open_storage(&settings).await;
        Self {
            backend,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            settings,
            store,
            storage,
            metrics_port,
            handle,
            bucket,
            db,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn db_url(&self) -> String {
        secrecy::ExposeSecret::expose_secret(&self.settings.database.url).to_owned()
    }

    /// `GET path` with a bearer token.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// The value of one series of `/metrics` (e.g.
    /// `agentpkg_db_operation_duration_seconds_count{operation="get",outcome="ok"}`), read
    /// with an admin's token; 0 while the series does not exist yet.
    pub async fn metric(&self, admin: &str, series: &str) -> u64 {
        let text = self.get("/metrics", admin).await.text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    /// `DELETE path` with a bearer token.
    pub async fn delete(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    pub async fn admin_token(&self) -> String {
        let res = self.login("admin", ADMIN_PASSWORD).await;
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a user with `role` through the API and returns a token for them.
    pub async fn token_for(&self, role: &str) -> String {
        if role == "admin" {
            return self.admin_token().await;
        }
        let admin = self.admin_token().await;
        let username = format!("{role}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let password = "a long enough password";
        let res = self
            .client
            .post(self.url("/api/v1/users"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "username": username, "password": password, "role": role }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        let res = self.login(&username, password).await;
        res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `PUT /packages/{coords}` with `body` as the package's bytes.
    pub async fn put_package(
        &self,
        token: &str,
        coords: &str,
        body: impl AsRef<[u8]>,
    ) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/api/v1/packages/{coords}")))
            .bearer_auth(token)
            .body(body.as_ref().to_vec())
            .send()
            .await
            .unwrap()
    }

    /// [`TestApp::put_package`] that must publish: the package's JSON.
    pub async fn publish(&self, token: &str, coords: &str, body: impl AsRef<[u8]>) -> Value {
        let res = self.put_package(token, coords, body).await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        res.json().await.unwrap()
    }

    /// Uploads the seed's way: the file field first, then the metadata.
    pub async fn upload(
        &self,
        token: &str,
        file: Vec<u8>,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut form = Form::new().part("file", Part::bytes(file).file_name("agent-binary"));
        for (k, v) in fields {
            form = form.text((*k).to_owned(), (*v).to_owned());
        }
        self.client
            .post(self.url("/api/v1/packages"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Object keys in the bucket (or directory), and package rows in the table.
    pub async fn stored(&self) -> (Vec<String>, u64) {
        let keys = self.storage.list_keys().await.unwrap();
        let rows = self
            .store
            .list_packages(&ListQuery::default())
            .await
            .unwrap()
            .total;
        (keys, rows)
    }

    /// Waits (bounded) until storage and table are both empty, and fails if they are not.
    pub async fn assert_nothing_stored(&self) {
        let mut last = (vec![], 0);
        for _ in 0..50 {
            last = self.stored().await;
            if last.0.is_empty() && last.1 == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("left behind: objects {:?}, rows {}", last.0, last.1);
    }

    pub fn fs_root(&self) -> PathBuf {
        self.dir.path().join("packages")
    }

    pub fn bucket_name(&self) -> Option<&str> {
        self.bucket.as_deref()
    }
}

async fn open_storage(settings: &Settings) -> DynObjectStore {
    match settings.storage.backend {
        StorageBackend::Fs => Arc::new(FsStore::open(&settings.storage.fs.root).await.unwrap()),
        StorageBackend::S3 => Arc::new(S3Store::connect(&s3_config(settings)).await.unwrap()),
    }
}

pub fn s3_config(settings: &Settings) -> S3Config {
    let s3 = &settings.storage.s3;
    S3Config {
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        bucket: s3.bucket.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone().unwrap(),
        path_style: true,
        max_concurrent_parts: 2,
        request_timeout: Duration::from_secs(10),
    }
}

/// A rust-s3 handle on the test's bucket, for what the store trait does not do.
pub fn raw_bucket(settings: &Settings) -> Box<s3::Bucket> {
    let s3env = &settings.storage.s3;
    let region = s3::Region::Custom {
        region: s3env.region.clone(),
        endpoint: s3env.endpoint.clone(),
    };
    let creds = s3::creds::Credentials::new(
        Some(&s3env.access_key),
        Some(secrecy::ExposeSecret::expose_secret(
            s3env.secret_key.as_ref().unwrap(),
        )),
        None,
        None,
        None,
    )
    .unwrap();
    s3::Bucket::new(&s3env.bucket, region, creds)
        .unwrap()
        .with_path_style()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        let storage = self.storage.clone();
        let bucket = self.bucket.take().map(|_| raw_bucket(&self.settings));
        // Stop the server and empty and remove the bucket, on a runtime of our own: the
        // test's runtime may be shutting down.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                handle.stop(false).await;
                if let Some(bucket) = bucket {
                    for key in storage.list_keys().await.unwrap_or_default() {
                        let _ = bucket.delete_object(&key).await;
                    }
                    let _ = bucket.delete().await;
                }
            });
        })
        .join()
        .ok();
        drop(self.db.take());
    }
}

/// Asserts an error answer's status and stable code, and returns its body for further
/// checks.
pub async fn expect_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    let got = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    body
}

/// Where `scripts/tools.sh` installs the test peers (`.tools/`, or `AGENTPKG_TOOLS_DIR`).
pub fn tools_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::var_os("AGENTPKG_TOOLS_DIR").map_or(root.join(".tools"), PathBuf::from)
}

/// Creates a token with `body` as `session`, asserting 201; returns (id, secret).
pub async fn create_token(app: &TestApp, session: &str, body: Value) -> (i64, String) {
    let res = app
        .client
        .post(app.url("/api/v1/tokens"))
        .bearer_auth(session)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let created: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("apk_") && secret.len() == 36, "{secret}");
    (created["id"].as_i64().unwrap(), secret)
}

/// A lock the test holds, until dropped, so that the server's next write waits behind it:
/// `LOCK TABLE …` on PostgreSQL (`tables_mode`, say `packages IN EXCLUSIVE MODE`), a
/// `BEGIN IMMEDIATE` transaction on SQLite.
pub struct WriteLock {
    db_url: String,
    release: Option<std::sync::mpsc::Sender<()>>,
    done: Option<std::thread::JoinHandle<()>>,
}

impl WriteLock {
    pub fn take(db_url: &str, tables_mode: &'static str) -> Self {
        use diesel::{Connection, RunQueryDsl};
        let url = DatabaseUrl::parse(db_url).unwrap();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let done = std::thread::spawn(move || match url {
            DatabaseUrl::Postgres(u) => {
                let mut c = diesel::PgConnection::establish(&u).unwrap();
                diesel::sql_query("BEGIN").execute(&mut c).unwrap();
                diesel::sql_query(format!("LOCK TABLE {tables_mode}"))
                    .execute(&mut c)
                    .unwrap();
                locked_tx.send(()).unwrap();
                let _ = released.recv();
                diesel::sql_query("ROLLBACK").execute(&mut c).unwrap();
            }
            DatabaseUrl::Sqlite(p) => {
                let mut c = diesel::SqliteConnection::establish(p.to_str().unwrap()).unwrap();
                diesel::sql_query("BEGIN IMMEDIATE")
                    .execute(&mut c)
                    .unwrap();
                locked_tx.send(()).unwrap();
                let _ = released.recv();
                diesel::sql_query("ROLLBACK").execute(&mut c).unwrap();
            }
        });
        locked_rx.recv().unwrap();
        Self {
            db_url: db_url.to_owned(),
            release: Some(release),
            done: Some(done),
        }
    }

    /// Waits (bounded) until one of the server's statements waits behind the lock, as
    /// PostgreSQL's `pg_stat_activity` shows. SQLite's busy handler retries inside the
    /// server and shows nowhere: there this returns at once, and the caller knows only
    /// what it checked before (the bytes stored, so the insert is the next statement).
    pub async fn wait_for_waiter(&self) {
        use diesel::{Connection, RunQueryDsl};
        #[derive(diesel::QueryableByName)]
        struct Waiting {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let DatabaseUrl::Postgres(url) = DatabaseUrl::parse(&self.db_url).unwrap() else {
            return;
        };
        let mut c = diesel::PgConnection::establish(&url).unwrap();
        for _ in 0..500 {
            let waiting: Waiting = diesel::sql_query(
                "SELECT count(*) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .get_result(&mut c)
            .unwrap();
            if waiting.n > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no statement waited behind the lock within 10 s");
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(done) = self.done.take() {
            let _ = done.join();
        }
    }
}
