//! Resumable uploads over tus 1.0.0: the protocol and its hostile inputs over plain HTTP,
//! restarts and a second replica, expiry and termination leaving nothing, and two clients
//! nobody here wrote — tuspy (Python) killed part-way and resumed, and tus-js-client
//! (Node) sending four partial uploads side by side.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use agentpkg_server::Application;
use base64::Engine;
use diesel::{Connection, RunQueryDsl};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{Backend, TestApp, expect_error};
use agentpkg_store::on_both_backends;

pub(crate) const MIB: usize = 1024 * 1024;

on_both_backends!(
    the_protocol_is_spoken_and_hostile_requests_are_refused_keeping_the_offset,
    a_refusal_at_the_last_byte_leaves_no_object_no_row_and_no_session,
    the_sha256_named_with_the_last_bytes_guards_the_package,
    termination_and_expiry_leave_no_object_no_part_and_no_row,
    tuspy_killed_part_way_resumes_with_a_new_process,
);

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Bytes that differ from part to part, so a part in the wrong place shows.
pub(crate) fn file_of(len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    let mut x: u32 = 0x1234_5678;
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

pub(crate) fn metadata(name: &str, version: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        format!("name {}", b64(name)),
        format!("version {}", b64(version)),
        format!("platform {}", b64("linux")),
        format!("arch {}", b64("amd64")),
    ];
    pairs.extend(extra.iter().map(|(k, v)| format!("{k} {}", b64(v))));
    pairs.join(",")
}

pub(crate) async fn create(
    app: &TestApp,
    base: &str,
    token: &str,
    headers: &[(&str, String)],
) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{base}/api/v1/uploads"))
        .bearer_auth(token);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    req.send().await.unwrap()
}

/// A whole upload of `length` bytes; its URL (absolute, on `base`).
async fn created(app: &TestApp, base: &str, token: &str, length: usize, meta: String) -> String {
    let res = create(
        app,
        base,
        token,
        &[
            ("Tus-Resumable", "1.0.0".into()),
            ("Upload-Length", length.to_string()),
            ("Upload-Metadata", meta),
        ],
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert_eq!(res.headers()["tus-resumable"], "1.0.0");
    assert!(res.headers().contains_key("upload-expires"));
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/api/v1/uploads/"), "{location}");
    format!("{base}{location}")
}

pub(crate) async fn patch(
    app: &TestApp,
    url: &str,
    token: &str,
    offset: usize,
    body: Vec<u8>,
    extra: &[(&str, String)],
) -> reqwest::Response {
    let mut req = app
        .client
        .patch(url)
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream");
    for (name, value) in extra {
        req = req.header(*name, value);
    }
    req.body(body).send().await.unwrap()
}

/// tus termination; the response.
pub(crate) async fn terminate(app: &TestApp, url: &str, token: &str) -> reqwest::Response {
    app.client
        .delete(url)
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap()
}

/// A partial upload of `length` bytes; its URL.
pub(crate) async fn created_partial(app: &TestApp, token: &str, length: usize) -> String {
    let res = create(
        app,
        &app.base,
        token,
        &[
            ("Tus-Resumable", "1.0.0".into()),
            ("Upload-Length", length.to_string()),
            ("Upload-Concat", "partial".into()),
        ],
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(header(&res, "upload-concat"), "partial");
    format!("{}{}", app.base, header(&res, "location"))
}

pub(crate) async fn offset_of(app: &TestApp, url: &str, token: &str) -> reqwest::Response {
    app.client
        .head(url)
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap()
}

pub(crate) fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", res.headers()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Runs one SQL statement on the test's database (either backend).
pub(crate) fn sql(app: &TestApp, statement: &str) -> usize {
    match app.backend {
        Backend::Production => {
            let mut c = diesel::PgConnection::establish(&app.db_url()).unwrap();
            diesel::sql_query(statement).execute(&mut c).unwrap()
        }
        Backend::Embedded => {
            let mut c = diesel::SqliteConnection::establish(&app.db_url()).unwrap();
            diesel::sql_query(statement).execute(&mut c).unwrap()
        }
    }
}

pub(crate) fn session_rows(app: &TestApp) -> usize {
    // An UPDATE that changes nothing counts the rows on both databases.
    sql(
        app,
        "UPDATE upload_sessions SET upload_offset = upload_offset",
    )
}

/// Writes in parts that never finished, whatever their age.
pub(crate) async fn unfinished_writes(app: &TestApp) -> Vec<String> {
    app.storage
        .list_incomplete(SystemTime::now() + Duration::from_secs(3600))
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.description)
        .collect()
}

/// The packages of one name, active or not.
pub(crate) async fn listed(app: &TestApp, token: &str, name: &str) -> Vec<Value> {
    app.get(&format!("/api/v1/packages?name={name}"), token)
        .await
        .json()
        .await
        .unwrap()
}

pub(crate) async fn download(app: &TestApp, token: &str, id: &Value) -> Vec<u8> {
    let res = app
        .get(&format!("/api/v1/packages/{id}/download"), token)
        .await;
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap().to_vec()
}

async fn the_protocol_is_spoken_and_hostile_requests_are_refused_keeping_the_offset(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |s| {
        s.upload.max_size_bytes = 64 * MIB as u64;
        s.upload.max_sessions_per_user = 4;
    })
    .await;
    let token = app.token_for("publisher").await;
    let base = app.base.clone();

    // OPTIONS says exactly what is supported, without credentials.
    let res = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/uploads"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, "tus-version"), "1.0.0");
    assert_eq!(
        header(&res, "tus-extension"),
        "creation,creation-with-upload,expiration,checksum,termination,concatenation"
    );
    assert_eq!(header(&res, "tus-max-size"), (64 * MIB).to_string());
    assert_eq!(header(&res, "tus-checksum-algorithm"), "sha1,sha256");

    // Refused before a byte: protocol version, bad fields, taken coordinates, size.
    let meta = metadata("tus-agent", "1.0.0", &[]);
    let res = create(&app, &base, &token, &[("Upload-Length", "10".into())]).await;
    assert_eq!(header(&res, "tus-version"), "1.0.0");
    expect_error(res, 412, "unsupported_tus_version").await;
    let res = create(
        &app,
        &base,
        &token,
        &[
            ("Tus-Resumable", "0.2.2".into()),
            ("Upload-Length", "10".into()),
        ],
    )
    .await;
    expect_error(res, 412, "unsupported_tus_version").await;
    let tus = ("Tus-Resumable", "1.0.0".to_owned());
    let res = create(
        &app,
        &base,
        &token,
        &[
            tus.clone(),
            ("Upload-Length", "10".into()),
            ("Upload-Metadata", metadata("tus-agent", "not-semver", &[])),
        ],
    )
    .await;
    let body = expect_error(res, 400, "invalid_field").await;
    assert_eq!(body["error"]["field"], "version");
    let res = create(
        &app,
        &base,
        &token,
        &[tus.clone(), ("Upload-Metadata", meta.clone())],
    )
    .await;
    expect_error(res, 400, "invalid_field").await;
    let res = create(
        &app,
        &base,
        &token,
        &[
            tus.clone(),
            ("Upload-Length", (64 * MIB + 1).to_string()),
            ("Upload-Metadata", meta.clone()),
        ],
    )
    .await;
    expect_error(res, 413, "payload_too_large").await;
    let res = app
        .upload(
            &token,
            b"taken".to_vec(),
            &[
                ("name", "tus-agent"),
                ("version", "0.9.0"),
                ("platform", "linux"),
                ("arch", "amd64"),
            ],
        )
        .await;
    assert_eq!(res.status(), 201);
    let res = create(
        &app,
        &base,
        &token,
        &[
            tus.clone(),
            ("Upload-Length", "10".into()),
            ("Upload-Metadata", metadata("tus-agent", "0.9.0", &[])),
        ],
    )
    .await;
    expect_error(res, 409, "conflict").await;
    let viewer = app.token_for("viewer").await;
    let res = create(
        &app,
        &base,
        &viewer,
        &[
            tus.clone(),
            ("Upload-Length", "10".into()),
            ("Upload-Metadata", meta.clone()),
        ],
    )
    .await;
    assert_eq!(res.status(), 403);

    // 12 MiB: a part, then small requests kept as a tail, then the rest.
    let file = file_of(12 * MIB);
    let url = created(
        &app,
        &base,
        &token,
        file.len(),
        metadata(
            "tus-agent",
            "1.0.0",
            &[("sha256", &sha256_hex(&file)), ("filetype", "x")],
        ),
    )
    .await;
    let res = offset_of(&app, &url, &token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "upload-offset"), "0");
    assert_eq!(header(&res, "upload-length"), file.len().to_string());
    assert_eq!(header(&res, "cache-control"), "no-store");
    assert!(header(&res, "upload-metadata").contains(&b64("tus-agent")));
    // Another publisher does not see it.
    let stranger = app.token_for("publisher").await;
    let res = offset_of(&app, &url, &stranger).await;
    assert_eq!(res.status(), 404);
    let res = patch(&app, &url, &stranger, 0, vec![1; 10], &[]).await;
    expect_error(res, 404, "not_found").await;

    let res = app
        .client
        .patch(&url)
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/octet-stream")
        .body(file[..10].to_vec())
        .send()
        .await
        .unwrap();
    expect_error(res, 415, "unsupported_media_type").await;
    let res = patch(&app, &url, &token, 5, file[..10].to_vec(), &[]).await;
    expect_error(res, 409, "offset_mismatch").await;
    let res = patch(&app, &url, &token, usize::MAX, file[..10].to_vec(), &[]).await;
    expect_error(res, 409, "offset_mismatch").await;
    let res = patch(&app, &url, &token, 0, vec![0; 12 * MIB + 1], &[]).await;
    expect_error(res, 413, "past_upload_length").await;

    let first = &file[..6 * MIB];
    let wrong = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"other"));
    let res = patch(
        &app,
        &url,
        &token,
        0,
        first.to_vec(),
        &[("Upload-Checksum", format!("sha256 {wrong}"))],
    )
    .await;
    assert_eq!(res.status(), 460);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "request_checksum_mismatch"
    );
    let res = offset_of(&app, &url, &token).await;
    assert_eq!(
        header(&res, "upload-offset"),
        "0",
        "nothing of a refused request is kept"
    );
    let res = patch(
        &app,
        &url,
        &token,
        0,
        first.to_vec(),
        &[("Upload-Checksum", "md5 AAAA".into())],
    )
    .await;
    expect_error(res, 400, "invalid_field").await;

    let right = base64::engine::general_purpose::STANDARD.encode(sha1_of(first));
    let res = patch(
        &app,
        &url,
        &token,
        0,
        first.to_vec(),
        &[("Upload-Checksum", format!("sha1 {right}"))],
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, "upload-offset"), (6 * MIB).to_string());
    assert!(res.headers().contains_key("upload-expires"));
    let mut offset = 6 * MIB;
    for step in [100_000, 1, 2 * MIB] {
        let res = patch(
            &app,
            &url,
            &token,
            offset,
            file[offset..offset + step].to_vec(),
            &[],
        )
        .await;
        assert_eq!(res.status(), 204);
        offset += step;
        assert_eq!(header(&res, "upload-offset"), offset.to_string());
    }
    // Not visible before the last byte.
    assert_eq!(listed(&app, &token, "tus-agent").await.len(), 1);
    let res = patch(&app, &url, &token, offset, file[offset..].to_vec(), &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "upload-offset"), file.len().to_string());
    let package: Value = res.json().await.unwrap();
    assert_eq!(package["checksum"], sha256_hex(&file));
    assert_eq!(package["file_size"], file.len());
    assert_eq!(download(&app, &token, &package["id"]).await, file);
    // Asked again, the upload says it is complete; it takes no more bytes.
    let res = offset_of(&app, &url, &token).await;
    assert_eq!(header(&res, "upload-offset"), file.len().to_string());
    let res = patch(&app, &url, &token, file.len(), vec![1], &[]).await;
    let body = expect_error(res, 409, "conflict").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("complete") && m.contains("nothing more to send")),
        "{body}"
    );
    // Behind the upload's offset: said with both offsets and what to do.
    let res = patch(&app, &url, &token, 0, vec![1], &[]).await;
    let body = expect_error(res, 409, "offset_mismatch").await;
    let said = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        said.contains("offset 0") && said.contains(&format!("offset {}", file.len())),
        "{body}"
    );
    // Only the two packages' objects are left: no tail, no part.
    assert_eq!(app.stored().await.0.len(), 2);
    assert!(unfinished_writes(&app).await.is_empty());

    // One user's open sessions are capped.
    let mut open = Vec::new();
    for n in 0..4 {
        open.push(
            created(
                &app,
                &base,
                &token,
                10,
                metadata("capped", &format!("1.0.{n}"), &[]),
            )
            .await,
        );
    }
    let res = create(
        &app,
        &base,
        &token,
        &[
            tus.clone(),
            ("Upload-Length", "10".into()),
            ("Upload-Metadata", metadata("capped", "2.0.0", &[])),
        ],
    )
    .await;
    expect_error(res, 429, "too_many_sessions").await;
    // Another user is not.
    created(&app, &base, &stranger, 10, metadata("other", "1.0.0", &[])).await;
    // Ending one makes room.
    assert_eq!(terminate(&app, &open[0], &token).await.status(), 204);
    created(&app, &base, &token, 10, metadata("capped", "2.0.0", &[])).await;
}

fn sha1_of(bytes: &[u8]) -> Vec<u8> {
    // No sha1 crate in the tests: the client's own tool computes it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunk");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("sha1sum").arg(&path).output().unwrap();
    hex::decode(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap(),
    )
    .unwrap()
}

async fn a_refusal_at_the_last_byte_leaves_no_object_no_row_and_no_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let file = file_of(7 * MIB);
    // Announces another SHA-256: refused when the last byte arrives.
    let url = created(
        &app,
        &app.base,
        &token,
        file.len(),
        metadata("refused", "1.0.0", &[("sha256", &"ab".repeat(32))]),
    )
    .await;
    let res = patch(&app, &url, &token, 0, file[..6 * MIB].to_vec(), &[]).await;
    assert_eq!(res.status(), 204);
    let res = patch(&app, &url, &token, 6 * MIB, file[6 * MIB..].to_vec(), &[]).await;
    expect_error(res, 422, "checksum_mismatch").await;
    app.assert_nothing_stored().await;
    assert_eq!(session_rows(&app), 0);
    assert!(unfinished_writes(&app).await.is_empty());
    assert_eq!(offset_of(&app, &url, &token).await.status(), 404);

    // Coordinates taken meanwhile (by a one-request upload): 409 at the last byte.
    let url = created(
        &app,
        &app.base,
        &token,
        file.len(),
        metadata("raced", "1.0.0", &[]),
    )
    .await;
    let res = patch(&app, &url, &token, 0, file[..MIB].to_vec(), &[]).await;
    assert_eq!(res.status(), 204);
    let res = app
        .upload(
            &token,
            b"first".to_vec(),
            &[
                ("name", "raced"),
                ("version", "1.0.0"),
                ("platform", "linux"),
                ("arch", "amd64"),
            ],
        )
        .await;
    assert_eq!(res.status(), 201);
    let res = patch(&app, &url, &token, MIB, file[MIB..].to_vec(), &[]).await;
    expect_error(res, 409, "conflict").await;
    assert_eq!(
        app.stored().await.0.len(),
        1,
        "only the first package's object"
    );
    assert_eq!(session_rows(&app), 0);
    assert!(unfinished_writes(&app).await.is_empty());
}

/// A client that hashes the file while sending it names its SHA-256 with the request that
/// completes the upload (`X-Checksum-Sha256`): the package is published only if its bytes
/// have it, and the header is refused wherever it could not guard a package.
async fn the_sha256_named_with_the_last_bytes_guards_the_package(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let file = file_of(7 * MIB);
    let right = sha256_hex(&file);
    let wrong = "cd".repeat(32);
    let named = |sha: &str| vec![("X-Checksum-Sha256", sha.to_owned())];

    // Not when creating (the metadata's sha256 is for that), not before the last bytes,
    // not on a partial upload: each a 400 that changes nothing.
    let res = create(
        &app,
        &app.base,
        &token,
        &[
            ("Tus-Resumable", "1.0.0".into()),
            ("Upload-Length", file.len().to_string()),
            ("Upload-Metadata", metadata("named", "1.0.0", &[])),
            ("X-Checksum-Sha256", right.clone()),
        ],
    )
    .await;
    let body = expect_error(res, 400, "invalid_field").await;
    assert_eq!(body["error"]["field"], "X-Checksum-Sha256", "{body}");
    assert_eq!(session_rows(&app), 0);
    let url = created(
        &app,
        &app.base,
        &token,
        file.len(),
        metadata("named", "1.0.0", &[]),
    )
    .await;
    let res = patch(
        &app,
        &url,
        &token,
        0,
        file[..6 * MIB].to_vec(),
        &named(&right),
    )
    .await;
    let body = expect_error(res, 400, "invalid_field").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("completes the upload"),
        "{body}"
    );
    assert_eq!(
        header(&offset_of(&app, &url, &token).await, "upload-offset"),
        "0"
    );
    let partial = created_partial(&app, &token, MIB).await;
    let res = patch(
        &app,
        &partial,
        &token,
        0,
        file[..MIB].to_vec(),
        &named(&right),
    )
    .await;
    expect_error(res, 400, "invalid_field").await;
    assert_eq!(
        header(&offset_of(&app, &partial, &token).await, "upload-offset"),
        "0"
    );
    assert_eq!(terminate(&app, &partial, &token).await.status(), 204);

    // Named wrong with the last bytes: refused at the last byte, leaving nothing.
    let res = patch(&app, &url, &token, 0, file[..6 * MIB].to_vec(), &[]).await;
    assert_eq!(res.status(), 204);
    let res = patch(
        &app,
        &url,
        &token,
        6 * MIB,
        file[6 * MIB..].to_vec(),
        &named(&wrong),
    )
    .await;
    let body = expect_error(res, 422, "checksum_mismatch").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&right),
        "{body}"
    );
    app.assert_nothing_stored().await;
    assert_eq!(session_rows(&app), 0);
    assert!(unfinished_writes(&app).await.is_empty());
    assert!(listed(&app, &token, "named").await.is_empty());

    // Created with a sha256, then named another: refused before the body, offset kept;
    // named right: published.
    let url = created(
        &app,
        &app.base,
        &token,
        file.len(),
        metadata("named", "1.0.0", &[("sha256", &right)]),
    )
    .await;
    let res = patch(&app, &url, &token, 0, file[..6 * MIB].to_vec(), &[]).await;
    assert_eq!(res.status(), 204);
    let res = patch(
        &app,
        &url,
        &token,
        6 * MIB,
        file[6 * MIB..].to_vec(),
        &named(&wrong),
    )
    .await;
    let body = expect_error(res, 400, "invalid_field").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("created with"),
        "{body}"
    );
    assert_eq!(
        header(&offset_of(&app, &url, &token).await, "upload-offset"),
        (6 * MIB).to_string()
    );
    let res = patch(
        &app,
        &url,
        &token,
        6 * MIB,
        file[6 * MIB..].to_vec(),
        &named(&right),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let package: Value = res.json().await.unwrap();
    assert_eq!(package["checksum"], right.as_str());

    // Without a sha256 at creation, named right with the last bytes: published.
    let other = file_of(6 * MIB + 5);
    let url = created(
        &app,
        &app.base,
        &token,
        other.len(),
        metadata("named", "2.0.0", &[]),
    )
    .await;
    let res = patch(&app, &url, &token, 0, other[..6 * MIB].to_vec(), &[]).await;
    assert_eq!(res.status(), 204);
    let res = patch(
        &app,
        &url,
        &token,
        6 * MIB,
        other[6 * MIB..].to_vec(),
        &named(&sha256_hex(&other)),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let package: Value = res.json().await.unwrap();
    assert_eq!(download(&app, &token, &package["id"]).await, other);
    assert_eq!(
        session_rows(&app),
        2,
        "the completed sessions, until they expire"
    );
}

async fn termination_and_expiry_leave_no_object_no_part_and_no_row(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let file = file_of(20 * MIB);
    // A part and a tail, then DELETE.
    let url = created(
        &app,
        &app.base,
        &token,
        file.len(),
        metadata("ended", "1.0.0", &[]),
    )
    .await;
    let res = patch(&app, &url, &token, 0, file[..7 * MIB].to_vec(), &[]).await;
    assert_eq!(res.status(), 204);
    let res = patch(
        &app,
        &url,
        &token,
        7 * MIB,
        file[7 * MIB..8 * MIB].to_vec(),
        &[],
    )
    .await;
    assert_eq!(res.status(), 204);
    assert!(!app.stored().await.0.is_empty() || !unfinished_writes(&app).await.is_empty());
    let res = terminate(&app, &url, &token).await;
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, "tus-resumable"), "1.0.0");
    app.assert_nothing_stored().await;
    assert!(unfinished_writes(&app).await.is_empty());
    assert_eq!(session_rows(&app), 0);
    assert_eq!(offset_of(&app, &url, &token).await.status(), 404);

    // A complete partial upload, and an idle one with a part and a tail: expired.
    let partial = created_partial(&app, &token, MIB).await;
    let res = patch(&app, &partial, &token, 0, file[..MIB].to_vec(), &[]).await;
    assert_eq!(res.status(), 204);
    let url = created(
        &app,
        &app.base,
        &token,
        file.len(),
        metadata("idle", "1.0.0", &[]),
    )
    .await;
    let res = patch(&app, &url, &token, 0, file[..6 * MIB].to_vec(), &[]).await;
    assert_eq!(res.status(), 204);
    let res = patch(
        &app,
        &url,
        &token,
        6 * MIB,
        file[6 * MIB..6 * MIB + 100].to_vec(),
        &[],
    )
    .await;
    assert_eq!(res.status(), 204);
    // Unexpired, reconciliation keeps all of it.
    let (ok, report) = crate::rollback::gc(&app, &["--grace-secs", "0"]);
    assert!(ok, "{report}");
    assert_eq!(report["sessions_expired"], json!([]));
    assert_eq!(report["orphans_removed"], json!([]), "{report}");
    assert_eq!(report["incomplete_removed"], json!([]), "{report}");
    assert_eq!(session_rows(&app), 2);

    // Idle past the expiry (moved into the past rather than waited for).
    sql(
        &app,
        "UPDATE upload_sessions SET expires_at = '2000-01-01 00:00:00'",
    );
    assert_eq!(offset_of(&app, &url, &token).await.status(), 404);
    let (ok, report) = crate::rollback::gc(&app, &["--dry-run", "--grace-secs", "0"]);
    assert!(ok, "{report}");
    assert_eq!(
        report["sessions_expired"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert_eq!(session_rows(&app), 2, "a dry run removes nothing");
    let (ok, report) = crate::rollback::gc(&app, &["--grace-secs", "0"]);
    assert!(ok, "{report}");
    assert_eq!(
        report["sessions_expired"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    app.assert_nothing_stored().await;
    assert!(unfinished_writes(&app).await.is_empty());
    assert_eq!(session_rows(&app), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_s3_an_upload_continues_across_a_restart_and_on_a_second_replica() {
    let app = TestApp::spawn(Backend::Production).await;
    let token = app.token_for("publisher").await;
    let start = |settings: agentpkg_server::Settings| async move {
        let server = Application::build(settings).await.unwrap();
        let base = format!("http://127.0.0.1:{}", server.port());
        let handle = server.handle();
        tokio::spawn(server.run_until_stopped());
        (base, handle)
    };
    let file = file_of(21 * MIB);
    let url = created(
        &app,
        &app.base,
        &token,
        file.len(),
        metadata("replicated", "1.0.0", &[]),
    )
    .await;
    let path = url.trim_start_matches(&app.base).to_owned();
    let res = patch(&app, &url, &token, 0, file[..8 * MIB].to_vec(), &[]).await;
    assert_eq!(res.status(), 204);

    // A second replica over the same database and bucket continues it.
    let (second, second_handle) = start(app.settings.clone()).await;
    let res = offset_of(&app, &format!("{second}{path}"), &token).await;
    assert_eq!(header(&res, "upload-offset"), (8 * MIB).to_string());
    let res = patch(
        &app,
        &format!("{second}{path}"),
        &token,
        8 * MIB,
        file[8 * MIB..10 * MIB].to_vec(),
        &[],
    )
    .await;
    assert_eq!(res.status(), 204);
    // Then it is restarted: the new process knows where the upload stands.
    second_handle.stop(true).await;
    let (restarted, restarted_handle) = start(app.settings.clone()).await;
    let res = offset_of(&app, &format!("{restarted}{path}"), &token).await;
    assert_eq!(header(&res, "upload-offset"), (10 * MIB).to_string());
    let res = patch(
        &app,
        &format!("{restarted}{path}"),
        &token,
        10 * MIB,
        file[10 * MIB..].to_vec(),
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    let package: Value = res.json().await.unwrap();
    assert_eq!(package["checksum"], sha256_hex(&file));
    assert_eq!(download(&app, &token, &package["id"]).await, file);
    restarted_handle.stop(true).await;
}

/// The pinned clients that `scripts/tools.sh` installs.
pub(crate) fn tools() -> PathBuf {
    let tools = crate::common::tools_dir();
    assert!(
        tools.join("venv/bin/python").exists()
            && tools.join("node/node_modules/tus-js-client").exists(),
        "the tus clients are missing from {}: run ./scripts/tools.sh",
        tools.display()
    );
    tools
}

pub(crate) fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tus")
        .join(name)
}

async fn tuspy_killed_part_way_resumes_with_a_new_process(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let python = tools().join("venv/bin/python");
    let dir = tempfile::tempdir().unwrap();
    let file = file_of(64 * MIB);
    let path = dir.path().join("agent.tar.gz");
    std::fs::write(&path, &file).unwrap();
    let meta = json!({
        "name": "tuspy-agent", "version": "1.0.0", "platform": "linux", "arch": "amd64",
        "sha256": sha256_hex(&file), "filename": "agent.tar.gz",
    });

    // Started, then killed after three chunks of 8 MiB.
    let mut child = Command::new(&python)
        .arg(client_script("tuspy_client.py"))
        .args(["start", &app.url("/api/v1/uploads"), &token])
        .arg(&path)
        .arg(meta.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (url, killed_at) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut url = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(u) = line.strip_prefix("url ") {
                url = u.to_owned();
            }
            if let Some(offset) = line.strip_prefix("offset ") {
                let offset: usize = offset.parse().unwrap();
                if offset >= 3 * 8 * MIB {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    return (url, offset);
                }
            }
        }
        let status = child.wait().unwrap();
        panic!("tuspy ended ({status}) before it could be killed");
    })
    .await
    .unwrap();
    assert!(killed_at < file.len());
    let res = offset_of(&app, &url, &token).await;
    let kept: usize = header(&res, "upload-offset").parse().unwrap();
    assert!(kept >= 3 * 8 * MIB && kept < file.len(), "{kept}");
    assert!(listed(&app, &token, "tuspy-agent").await.is_empty());

    // A new process with the stored URL finishes it.
    let out = Command::new(&python)
        .arg(client_script("tuspy_client.py"))
        .args(["resume", &url, &token])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("resumed {kept}")), "{stdout}");
    assert!(stdout.contains(&format!("done {}", file.len())), "{stdout}");

    let listed = listed(&app, &token, "tuspy-agent").await;
    assert_eq!(listed.len(), 1);
    let package = &listed[0];
    assert_eq!(package["checksum"], sha256_hex(&file));
    assert_eq!(package["filename"], "agent.tar.gz");
    assert_eq!(download(&app, &token, &package["id"]).await, file);
}
