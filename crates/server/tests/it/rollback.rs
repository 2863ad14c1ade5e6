//! One test per way an upload can fail, each proving that afterwards the bucket (or
//! directory) and the table hold nothing from that upload.

use std::time::Duration;

use diesel::{Connection, RunQueryDsl};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Backend, TestApp, expect_error};
use agentpkg_store::on_both_backends;

pub(crate) const FIELDS: [(&str, &str); 4] = [
    ("name", "opamp-agent"),
    ("version", "1.0.0"),
    ("platform", "linux"),
    ("arch", "amd64"),
];

on_both_backends!(
    a_duplicate_is_a_409_and_leaves_only_the_first,
    a_checksum_mismatch_is_a_422_and_leaves_nothing,
    an_upload_over_the_limit_is_a_413_and_leaves_nothing,
    a_body_cut_short_leaves_nothing,
    a_form_without_its_closing_boundary_is_a_400_not_a_request_that_never_ends,
    a_storage_failure_is_a_503_and_leaves_nothing,
    a_database_failure_is_a_500_without_internals_and_leaves_nothing,
    after_a_crash_gc_removes_the_orphan_and_reports_missing_objects,
);

async fn a_duplicate_is_a_409_and_leaves_only_the_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let first = app.upload(&token, b"first".to_vec(), &FIELDS).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    // File first: the duplicate is only found after its bytes are stored, and rolled back.
    let res = app
        .upload(&token, vec![7u8; 3 * 1024 * 1024], &FIELDS)
        .await;
    expect_error(res, 409, "conflict").await;
    let (keys, rows) = app.stored().await;
    assert_eq!(
        keys,
        vec![first["storage_path"].as_str().unwrap().to_owned()]
    );
    assert_eq!(rows, 1);
    // Never an overwrite: the first package's bytes are intact.
    let res = app
        .get(
            &format!("/api/v1/packages/{}/download", first["id"]),
            &token,
        )
        .await;
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"first");
}

async fn a_checksum_mismatch_is_a_422_and_leaves_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let wrong = hex::encode(Sha256::digest(b"something else"));
    // Announced in the form...
    let mut fields = FIELDS.to_vec();
    fields.push(("sha256", &wrong));
    let res = app.upload(&token, vec![1u8; 100_000], &fields).await;
    let body = expect_error(res, 422, "checksum_mismatch").await;
    assert!(body["error"]["message"].as_str().unwrap().contains(&wrong));
    app.assert_nothing_stored().await;
    // ...or in the header.
    let res = upload_announcing(&app, &token, vec![1u8; 100_000], &wrong).await;
    assert_eq!(res.status(), 422);
    app.assert_nothing_stored().await;
    // The right checksum in the header is accepted.
    let data = vec![1u8; 100_000];
    let right = hex::encode(Sha256::digest(&data));
    let res = upload_announcing(&app, &token, data, &right).await;
    assert_eq!(res.status(), 201);
}

/// A form upload (file first) whose SHA-256 is announced in `X-Checksum-Sha256`.
async fn upload_announcing(
    app: &TestApp,
    token: &str,
    data: Vec<u8>,
    sha256: &str,
) -> reqwest::Response {
    let mut form =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(data));
    for (k, v) in FIELDS {
        form = form.text(k, v);
    }
    app.client
        .post(app.url("/api/v1/packages"))
        .bearer_auth(token)
        .header("X-Checksum-Sha256", sha256)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// Sends a raw HTTP request and returns the status line's code, if the server answered
/// before closing.
async fn raw_request(app: &TestApp, head: &str, body: &[u8], half_close: bool) -> Option<u16> {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and stop reading) before the whole body is sent.
    let _ = stream.write_all(body).await;
    if half_close {
        let _ = stream.shutdown().await;
    }
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    if read.is_err() {
        return None;
    }
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
}

fn multipart_head(app: &TestApp, token: &str, boundary: &str, content_length: usize) -> String {
    format!(
        "POST /api/v1/packages HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {content_length}\r\n\
         Connection: close\r\n\r\n",
        app.base.trim_start_matches("http://")
    )
}

fn form_prefix(boundary: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in FIELDS {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"agent\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body
}

async fn an_upload_over_the_limit_is_a_413_and_leaves_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.upload.max_size_bytes = 256 * 1024).await;
    let token = app.token_for("publisher").await;
    // Just over the limit: found while streaming.
    let res = app.upload(&token, vec![3u8; 256 * 1024 + 1], &FIELDS).await;
    expect_error(res, 413, "payload_too_large").await;
    app.assert_nothing_stored().await;
    // Far over: refused from Content-Length, before any of the body is read.
    let boundary = "agentpkgboundary";
    let head = multipart_head(&app, &token, boundary, 50 * 1024 * 1024);
    let status = raw_request(&app, &head, &form_prefix(boundary), false).await;
    assert_eq!(status, Some(413));
    app.assert_nothing_stored().await;
    // Exactly the limit is accepted.
    let res = app.upload(&token, vec![3u8; 256 * 1024], &FIELDS).await;
    assert_eq!(res.status(), 201);
}

async fn a_body_cut_short_leaves_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let boundary = "agentpkgboundary";
    // Every byte of the file arrives, but the closing boundary never does: the client went
    // away. Treating that end of stream as the end of the file would publish a package
    // nobody finished uploading.
    let mut body = form_prefix(boundary);
    body.extend_from_slice(&vec![9u8; 2 * 1024 * 1024]);
    let declared = body.len() + 1024;
    let head = multipart_head(&app, &token, boundary, declared);
    let status = raw_request(&app, &head, &body, true).await;
    assert!(matches!(status, None | Some(400)), "answered {status:?}");
    app.assert_nothing_stored().await;
    // The server keeps serving.
    let res = app.upload(&token, b"complete".to_vec(), &FIELDS).await;
    assert_eq!(res.status(), 201);
}

/// Found by the fuzz test: actix-multipart 0.7 waited forever on a body that ends, at its
/// declared length, right after a part's data and its CRLF, with no boundary to follow.
async fn a_form_without_its_closing_boundary_is_a_400_not_a_request_that_never_ends(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let boundary = "S";
    let mut body = form_prefix(boundary);
    body.extend_from_slice(&vec![9u8; 64 * 1024]);
    body.extend_from_slice(b"\r\n");
    // The whole declared body arrives, and the connection stays open.
    let head = multipart_head(&app, &token, boundary, body.len());
    let status = raw_request(&app, &head, &body, false).await;
    assert_eq!(
        status,
        Some(400),
        "no answer within 10 s means the request hangs"
    );
    app.assert_nothing_stored().await;
}

async fn a_storage_failure_is_a_503_and_leaves_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    // Take the storage away under the running server.
    match backend {
        Backend::Production => {
            let bucket = crate::common::raw_bucket(&app.settings);
            bucket.delete().await.expect("delete the (empty) bucket");
        }
        Backend::Embedded => std::fs::remove_dir_all(app.fs_root()).unwrap(),
    }
    let res = app
        .upload(&token, vec![5u8; 10 * 1024 * 1024], &FIELDS)
        .await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable");
    assert!(res_has_no_internals(&body));
    let readiness = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(readiness.status(), 503);
    // Bring the storage back: it holds nothing, and no row was written.
    match backend {
        Backend::Production => {
            agentpkg_storage::S3Store::connect(&crate::common::s3_config(&app.settings))
                .await
                .expect("recreate the bucket");
        }
        Backend::Embedded => std::fs::create_dir_all(app.fs_root().join(".tmp")).unwrap(),
    }
    app.assert_nothing_stored().await;
    let res = app
        .upload(&token, b"after recovery".to_vec(), &FIELDS)
        .await;
    assert_eq!(res.status(), 201, "the server recovers by itself");
}

async fn a_database_failure_is_a_500_without_internals_and_leaves_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    // Break the table under the running server; the file comes first, so its bytes are
    // stored before the insert fails.
    let db_url = app.db_url();
    let sql = |statement: &'static str| {
        let url = db_url.clone();
        move || match agentpkg_store::DatabaseUrl::parse(&url).unwrap() {
            agentpkg_store::DatabaseUrl::Postgres(u) => {
                let mut c = diesel::PgConnection::establish(&u).unwrap();
                diesel::sql_query(statement).execute(&mut c).unwrap();
            }
            agentpkg_store::DatabaseUrl::Sqlite(p) => {
                let mut c = diesel::SqliteConnection::establish(p.to_str().unwrap()).unwrap();
                diesel::sql_query(statement).execute(&mut c).unwrap();
            }
        }
    };
    tokio::task::spawn_blocking(sql("ALTER TABLE packages RENAME TO packages_moved"))
        .await
        .unwrap();
    let res = app
        .upload(&token, vec![4u8; 9 * 1024 * 1024], &FIELDS)
        .await;
    let body = expect_error(res, 500, "internal").await;
    assert_eq!(body["error"]["message"], "internal error");
    assert!(res_has_no_internals(&body));
    tokio::task::spawn_blocking(sql("ALTER TABLE packages_moved RENAME TO packages"))
        .await
        .unwrap();
    app.assert_nothing_stored().await;
}

fn res_has_no_internals(body: &Value) -> bool {
    let text = body.to_string().to_lowercase();
    [
        "packages_moved",
        "relation",
        "sqlite",
        "postgres",
        "s3error",
        "os error",
        "/tmp/",
    ]
    .iter()
    .all(|needle| !text.contains(needle))
}

/// The environment that points the binary at the test's database and storage.
pub(crate) fn backend_env(app: &TestApp) -> Vec<(&'static str, String)> {
    use agentpkg_server::settings::StorageBackend;
    let s = &app.settings;
    let mut env = vec![("AGENTPKG__DATABASE__URL", app.db_url())];
    match s.storage.backend {
        StorageBackend::Fs => {
            env.push(("AGENTPKG__STORAGE__BACKEND", "fs".into()));
            env.push((
                "AGENTPKG__STORAGE__FS__ROOT",
                s.storage.fs.root.display().to_string(),
            ));
        }
        StorageBackend::S3 => {
            let s3 = &s.storage.s3;
            env.extend([
                ("AGENTPKG__STORAGE__BACKEND", "s3".into()),
                ("AGENTPKG__STORAGE__S3__ENDPOINT", s3.endpoint.clone()),
                ("AGENTPKG__STORAGE__S3__REGION", s3.region.clone()),
                ("AGENTPKG__STORAGE__S3__BUCKET", s3.bucket.clone()),
                ("AGENTPKG__STORAGE__S3__ACCESS_KEY", s3.access_key.clone()),
                (
                    "AGENTPKG__STORAGE__S3__SECRET_KEY",
                    secrecy::ExposeSecret::expose_secret(s3.secret_key.as_ref().unwrap())
                        .to_owned(),
                ),
            ]);
        }
    }
    env
}

/// Runs `agentpkg-server gc` against the test's database and storage.
pub(crate) fn gc(app: &TestApp, args: &[&str]) -> (bool, Value) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agentpkg-server"));
    cmd.arg("gc").args(args).envs(backend_env(app));
    let out = cmd.output().unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    // Shown with a failing test's output: a crash at exit is told apart from a report.
    #[allow(clippy::print_stdout)]
    {
        println!(
            "gc {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), report)
}

async fn after_a_crash_gc_removes_the_orphan_and_reports_missing_objects(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("admin").await;
    let res = app.upload(&token, b"kept".to_vec(), &FIELDS).await;
    let kept: Value = res.json().await.unwrap();
    // What a SIGKILL between storing an upload's bytes and committing its row leaves: an
    // object that no row names.
    let orphan = agentpkg_model::ObjectKey::for_new_package(*uuid::Uuid::new_v4().as_bytes());
    app.storage
        .put(&orphan, &mut &b"orphaned bytes"[..])
        .await
        .unwrap();

    // Within the grace period (default 15 minutes) it may be an upload still committing.
    let (ok, report) = gc(&app, &[]);
    assert!(ok, "{report}");
    assert_eq!(
        report["orphans_in_grace"],
        serde_json::json!([orphan.as_str()])
    );
    assert_eq!(report["orphans_removed"], serde_json::json!([]));
    // On the directory backend, a process killed mid-write also leaves a temporary file.
    let expected_incomplete = match backend {
        Backend::Embedded => {
            std::fs::write(app.fs_root().join(".tmp/leftover"), b"partial").unwrap();
            serde_json::json!([".tmp/leftover"])
        }
        Backend::Production => serde_json::json!([]),
    };
    // A dry run says what it would remove.
    let (ok, report) = gc(&app, &["--dry-run", "--grace-secs", "0"]);
    assert!(ok, "{report}");
    assert_eq!(
        report["orphans_removed"],
        serde_json::json!([orphan.as_str()])
    );
    assert!(app.storage.exists(&orphan).await.unwrap());
    assert_eq!(report["incomplete_removed"], expected_incomplete);
    // The real pass removes them and nothing else.
    let (ok, report) = gc(&app, &["--grace-secs", "0"]);
    assert!(ok, "{report}");
    assert_eq!(
        report["orphans_removed"],
        serde_json::json!([orphan.as_str()])
    );
    assert_eq!(report["incomplete_removed"], expected_incomplete);
    assert!(!app.fs_root().join(".tmp/leftover").exists());
    assert_eq!(
        app.stored().await,
        (vec![kept["storage_path"].as_str().unwrap().to_owned()], 1)
    );
    // A package whose object vanished is reported (and gc fails), never silently dropped.
    let kept_key =
        agentpkg_model::ObjectKey::parse(kept["storage_path"].as_str().unwrap()).unwrap();
    app.storage.delete(&kept_key).await.unwrap();
    let (ok, report) = gc(&app, &["--grace-secs", "0"]);
    assert!(!ok);
    assert_eq!(report["missing_objects"][0]["key"], kept["storage_path"]);
    assert_eq!(
        report["missing_objects"][0]["package_ids"],
        serde_json::json!([kept["id"]])
    );
    assert_eq!(app.stored().await.1, 1);
}

/// PostgreSQL only: its connections can be killed from outside, as a failover or an
/// administrator would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_s3_the_server_recovers_by_itself_when_database_connections_are_killed() {
    let app = TestApp::spawn(Backend::Production).await;
    let token = app.token_for("publisher").await;
    assert_eq!(
        app.upload(&token, b"before".to_vec(), &FIELDS)
            .await
            .status(),
        201
    );
    let killed = crate::faults::terminate_backends(&app).await;
    assert!(killed > 0, "no connection was killed");
    // Broken connections are found on check-out and replaced: no request fails for it.
    for _ in 0..5 {
        assert_eq!(app.get("/api/v1/packages", &token).await.status(), 200);
    }
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut fields = FIELDS.to_vec();
    fields[1] = ("version", "1.0.1");
    assert_eq!(
        app.upload(&token, b"after".to_vec(), &fields)
            .await
            .status(),
        201
    );
}
