//! Partial uploads joined by a final upload: inside the store where it copies parts (S3's
//! `UploadPartCopy`: no byte written through the server), through the server elsewhere or
//! when a partial is too small to be a part; the whole file's SHA-256 and signature
//! checked either way, and a refusal leaving nothing. And a client nobody here wrote,
//! tus-js-client (Node), sending four partial uploads side by side.

use std::process::Command;

use serde_json::json;

use crate::common::{Backend, TestApp, expect_error};
use crate::signing::{Gpg, json_of, trust};
use crate::tus::{
    MIB, b64, client_script, create, created_partial, download, file_of, header, listed, metadata,
    offset_of, patch, session_rows, sha256_hex, terminate, tools, unfinished_writes,
};
use agentpkg_store::on_both_backends;

on_both_backends!(
    partial_uploads_are_joined_in_the_store_and_checked_whole,
    tus_js_client_sends_four_partial_uploads_side_by_side,
);

/// Complete partial uploads of `pieces`, in order; their URLs.
async fn sent_partials(app: &TestApp, token: &str, pieces: &[&[u8]]) -> Vec<String> {
    let mut urls = Vec::new();
    for piece in pieces {
        let url = created_partial(app, token, piece.len()).await;
        let res = patch(app, &url, token, 0, piece.to_vec(), &[]).await;
        assert_eq!(res.status(), 204);
        urls.push(url);
    }
    urls
}

/// The final upload of `partials`, described by `metadata`.
async fn final_upload(
    app: &TestApp,
    token: &str,
    partials: &[String],
    metadata: String,
) -> reqwest::Response {
    create(
        app,
        &app.base,
        token,
        &[
            ("Tus-Resumable", "1.0.0".into()),
            ("Upload-Concat", format!("final;{}", partials.join(" "))),
            ("Upload-Metadata", metadata),
        ],
    )
    .await
}

/// What the server wrote or copied into storage so far: (objects and parts written
/// through it, parts copied inside the store).
async fn writes(app: &TestApp, admin: &str) -> (u64, u64) {
    let ok = |operation: &str| {
        format!(
            "agentpkg_storage_operation_duration_seconds_count{{operation=\"{operation}\",outcome=\"ok\"}}"
        )
    };
    let mut through = 0;
    for operation in ["put", "put_sized", "put_part"] {
        through += app.metric(admin, &ok(operation)).await;
    }
    (through, app.metric(admin, &ok("copy_part")).await)
}

/// The final upload of `partials`, and what it wrote: (objects and parts written through
/// the server, parts copied inside the store).
async fn final_counted(
    app: &TestApp,
    admin: &str,
    token: &str,
    partials: &[String],
    metadata: String,
) -> (reqwest::Response, (u64, u64)) {
    let before = writes(app, admin).await;
    let res = final_upload(app, token, partials, metadata).await;
    let after = writes(app, admin).await;
    (res, (after.0 - before.0, after.1 - before.1))
}

/// A join of `parts` partial uploads went the backend's way: copied inside S3 with no byte
/// written through the server; on a directory, nothing copied.
fn assert_joined_as_the_store_can(backend: Backend, written: (u64, u64), parts: u64) {
    if backend == Backend::Production {
        assert_eq!(
            written,
            (0, parts),
            "each partial copied as a part, no byte written through the server"
        );
    } else {
        assert_eq!(written.1, 0, "the directory store copies no parts");
    }
}

async fn partial_uploads_are_joined_in_the_store_and_checked_whole(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let token = app.token_for("publisher").await;
    // Three pieces: two that may be parts (at least 5 MiB), and a short last one.
    let file = file_of(12 * MIB + 1_001);
    let pieces = [
        &file[..6 * MIB],
        &file[6 * MIB..11 * MIB],
        &file[11 * MIB..],
    ];
    let meta = |version: &str, extra: &[(&str, &str)]| metadata("joined", version, extra);

    // The whole file's SHA-256 is checked as when it is sent in one request: named wrong,
    // the package is refused, and the partial uploads, the join and its write in parts go.
    let partials = sent_partials(&app, &token, &pieces).await;
    let wrong = "ab".repeat(32);
    let (res, written) = final_counted(
        &app,
        &admin,
        &token,
        &partials,
        meta("1.0.0", &[("sha256", wrong.as_str())]),
    )
    .await;
    let body = expect_error(res, 422, "checksum_mismatch").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&sha256_hex(&file)),
        "{body}"
    );
    assert_joined_as_the_store_can(backend, written, 3);
    app.assert_nothing_stored().await;
    assert!(unfinished_writes(&app).await.is_empty());
    assert_eq!(session_rows(&app), 0);
    assert!(listed(&app, &token, "joined").await.is_empty());

    // A partial upload's object lost by the store: the final upload fails as an outage
    // (503), keeping the partial uploads for a retry and leaving no join behind.
    let partials = sent_partials(&app, &token, &pieces).await;
    let objects = app.stored().await.0;
    assert_eq!(objects.len(), 3, "{objects:?}");
    let lost = agentpkg_model::ObjectKey::parse(&objects[1]).unwrap();
    app.storage.delete(&lost).await.unwrap();
    let res = final_upload(&app, &token, &partials, meta("1.0.0", &[])).await;
    expect_error(res, 503, "storage_unavailable").await;
    assert_eq!(
        app.stored().await.0.len(),
        2,
        "the other partial uploads' objects"
    );
    assert!(unfinished_writes(&app).await.is_empty());
    assert_eq!(session_rows(&app), 3, "kept for a retry");
    for url in &partials {
        assert_eq!(terminate(&app, url, &token).await.status(), 204);
    }
    app.assert_nothing_stored().await;

    // Named right and signed: published, its signature verified over the joined bytes.
    let gpg = Gpg::new();
    let key = gpg.generate(
        "Joined Builds <joined@example.com>",
        "ed25519",
        "never",
        None,
    );
    json_of(
        trust(&app, &admin, &gpg.export(&key), &["joined"]).await,
        201,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.bin");
    std::fs::write(&path, &file).unwrap();
    let signature = b64(gpg.sign(&key, &path, false, &[]));
    let partials = sent_partials(&app, &token, &pieces).await;
    let sha256 = sha256_hex(&file);
    let (res, written) = final_counted(
        &app,
        &admin,
        &token,
        &partials,
        meta("1.0.0", &[("sha256", &sha256), ("signature", &signature)]),
    )
    .await;
    let package = json_of(res, 201).await;
    assert_eq!(package["checksum"], sha256_hex(&file));
    assert_eq!(package["file_size"], file.len());
    assert_eq!(package["signature"]["verified"], true, "{package}");
    assert_eq!(package["signature"]["key_fingerprint"], key.as_str());
    assert_joined_as_the_store_can(backend, written, 3);
    assert_eq!(download(&app, &token, &package["id"]).await, file);
    // A signature of other bytes is refused over the joined bytes too.
    let other = dir.path().join("other.bin");
    std::fs::write(&other, b"not the package").unwrap();
    let forged = b64(gpg.sign(&key, &other, false, &[]));
    let partials = sent_partials(&app, &token, &pieces).await;
    let res = final_upload(
        &app,
        &token,
        &partials,
        meta("1.0.1", &[("signature", &forged)]),
    )
    .await;
    expect_error(res, 422, "signature_invalid").await;
    assert_eq!(app.stored().await.0.len(), 1, "only the published package");
    assert!(unfinished_writes(&app).await.is_empty());

    // A short partial before the last cannot be a part: joined through the server.
    let small = file_of(MIB + 17);
    let mixed = [&small[..MIB], &small[MIB..]];
    let partials = sent_partials(&app, &token, &mixed).await;
    let (res, (through, copied)) =
        final_counted(&app, &admin, &token, &partials, meta("2.0.0", &[])).await;
    let package = json_of(res, 201).await;
    assert_eq!(package["checksum"], sha256_hex(&small));
    assert_eq!(copied, 0, "nothing copied");
    assert!(through > 0, "written through the server");
    assert_eq!(download(&app, &token, &package["id"]).await, small);
    // The partial uploads' objects are gone: the two packages' are all.
    assert_eq!(app.stored().await.0.len(), 2);
    assert!(unfinished_writes(&app).await.is_empty());
}
async fn tus_js_client_sends_four_partial_uploads_side_by_side(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let node_modules = tools().join("node/node_modules");
    let dir = tempfile::tempdir().unwrap();
    let file = file_of(64 * MIB + 12_345);
    let path = dir.path().join("agent.bin");
    std::fs::write(&path, &file).unwrap();
    let meta = json!({
        "name": "js-agent", "version": "2.0.0", "platform": "linux", "arch": "arm64",
        "sha256": sha256_hex(&file),
    });
    let mut node = Command::new("node");
    node.arg(client_script("tus_js_client.js"))
        .args([&app.url("/api/v1/uploads"), &token])
        .arg(&path)
        .args(["4", &meta.to_string()])
        .env("NODE_PATH", &node_modules);
    let out = tokio::task::spawn_blocking(move || node.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = stdout.trim().strip_prefix("url ").unwrap().to_owned();

    let listed = listed(&app, &token, "js-agent").await;
    assert_eq!(listed.len(), 1, "published once");
    let package = &listed[0];
    assert_eq!(package["checksum"], sha256_hex(&file));
    assert_eq!(package["arch"], "arm64");
    assert_eq!(download(&app, &token, &package["id"]).await, file);
    // The final upload answers as complete, and names its four parts.
    let res = offset_of(&app, &url, &token).await;
    assert_eq!(header(&res, "upload-offset"), file.len().to_string());
    let concat = header(&res, "upload-concat");
    assert_eq!(concat.matches("/api/v1/uploads/").count(), 4, "{concat}");
    // The partial uploads are gone with their objects; the package's object is all.
    assert_eq!(session_rows(&app), 1);
    assert_eq!(app.stored().await.0.len(), 1);
    assert!(unfinished_writes(&app).await.is_empty());
}
