//! Direct uploads: the bytes go from the client (`curl`, which nobody here wrote) straight
//! to Garage through a presigned `PUT` that Garage checks against the announced SHA-256,
//! then the registry publishes them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agentpkg_server::Application;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{Backend, TestApp, expect_error, raw_bucket};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn begin(app: &TestApp, token: &str, version: &str, file: &[u8]) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/uploads/direct"))
        .bearer_auth(token)
        .json(&json!({
            "name": "direct-agent", "version": version, "platform": "linux", "arch": "amd64",
            "size": file.len(), "sha256": sha256_hex(file), "filename": "direct-agent.tar.gz",
        }))
        .send()
        .await
        .unwrap()
}

async fn granted(app: &TestApp, token: &str, version: &str, file: &[u8]) -> Value {
    let res = begin(app, token, version, file).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["method"], "PUT");
    body
}

/// `curl -T FILE URL -H …` with the grant's headers (or some of them); the HTTP status.
fn curl_put(grant: &Value, file: &Path, skip_header: Option<&str>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(file);
    for (name, value) in grant["headers"].as_object().unwrap() {
        if Some(name.as_str()) != skip_header {
            cmd.arg("-H")
                .arg(format!("{name}: {}", value.as_str().unwrap()));
        }
    }
    cmd.arg(grant["url"].as_str().unwrap());
    let out = cmd.output().expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

async fn complete(app: &TestApp, base: &str, token: &str, grant: &Value) -> reqwest::Response {
    app.client
        .post(format!("{base}{}", grant["complete_url"].as_str().unwrap()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The grant's object key, as its URL names it.
fn object_key(grant: &Value) -> String {
    let url = grant["url"].as_str().unwrap();
    let path = url.split('?').next().unwrap();
    let at = path.find("/packages/").unwrap();
    path[at + 1..].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_upload_goes_straight_to_s3_and_completes_once_on_any_replica() {
    let app = TestApp::spawn(Backend::Production).await;
    // A second replica over the same database and bucket completes what the first granted.
    let second = Application::build(app.settings.clone()).await.unwrap();
    let other = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    tokio::spawn(second.run_until_stopped());

    let publisher = app.token_for("publisher").await;
    let dir = tempfile::tempdir().unwrap();
    let file: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let path = dir.path().join("agent.tar.gz");
    std::fs::write(&path, &file).unwrap();

    let grant = granted(&app, &publisher, "1.0.0", &file).await;
    assert_eq!(grant["headers"]["content-length"], file.len().to_string());
    assert!(grant["headers"]["x-amz-checksum-sha256"].is_string());
    // Nothing stored yet: completing is refused, and can be asked again later.
    let res = complete(&app, &other, &publisher, &grant).await;
    expect_error(res, 409, "upload_incomplete").await;

    assert_eq!(curl_put(&grant, &path, None), 200);
    // Another publisher cannot complete it: to them it does not exist.
    let stranger = app.token_for("publisher").await;
    let res = complete(&app, &other, &stranger, &grant).await;
    expect_error(res, 404, "not_found").await;

    let res = complete(&app, &other, &publisher, &grant).await;
    let status = res.status();
    let package: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{package}");
    assert_eq!(package["checksum"], sha256_hex(&file));
    assert_eq!(package["file_size"], file.len());
    assert_eq!(package["filename"], "direct-agent.tar.gz");
    assert_eq!(package["storage_path"], object_key(&grant));
    // Once.
    let res = complete(&app, &app.base, &publisher, &grant).await;
    expect_error(res, 404, "not_found").await;

    let res = app
        .get(
            &format!("/api/v1/packages/{}/download", package["id"]),
            &publisher,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(&res.bytes().await.unwrap()[..], &file[..]);
    // The same coordinates cannot be granted again.
    let res = begin(&app, &publisher, "1.0.0", &file).await;
    expect_error(res, 409, "conflict").await;
    handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_refuses_what_was_not_announced_and_nothing_is_published() {
    let app = TestApp::spawn(Backend::Production).await;
    let publisher = app.token_for("publisher").await;
    let dir = tempfile::tempdir().unwrap();
    let file = b"the announced bytes".repeat(1000);
    let path = dir.path().join("agent");
    std::fs::write(&path, &file).unwrap();
    let grant = granted(&app, &publisher, "1.0.0", &file).await;

    // One byte changed: Garage checks the signed checksum and refuses it.
    let mut tampered = file.clone();
    tampered[7] ^= 1;
    let tampered_path = dir.path().join("tampered");
    std::fs::write(&tampered_path, &tampered).unwrap();
    let status = curl_put(&grant, &tampered_path, None);
    assert!(
        (400..500).contains(&status),
        "a tampered body answered {status}"
    );
    // Without the checksum header the signature does not match.
    let status = curl_put(&grant, &path, Some("x-amz-checksum-sha256"));
    assert!(
        (400..500).contains(&status),
        "a PUT without the checksum answered {status}"
    );
    let res = complete(&app, &app.base, &publisher, &grant).await;
    expect_error(res, 409, "upload_incomplete").await;
    assert_eq!(app.stored().await, (vec![], 0));

    // Bytes that got there some other way (here: with the server's own credentials, so
    // without the checksum) are checked at completion, refused, and removed: the same
    // size with other bytes, and another size.
    raw_bucket(&app.settings)
        .put_object(object_key(&grant), &tampered)
        .await
        .unwrap();
    let res = complete(&app, &app.base, &publisher, &grant).await;
    expect_error(res, 422, "checksum_mismatch").await;
    app.assert_nothing_stored().await;
    let res = complete(&app, &app.base, &publisher, &grant).await;
    expect_error(res, 404, "not_found").await;

    let grant = granted(&app, &publisher, "1.0.1", &file).await;
    raw_bucket(&app.settings)
        .put_object(object_key(&grant), b"other bytes, other size")
        .await
        .unwrap();
    let res = complete(&app, &app.base, &publisher, &grant).await;
    let body = expect_error(res, 422, "size_mismatch").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("announced")
    );
    app.assert_nothing_stored().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_direct_upload_is_kept_until_it_expires_then_removed() {
    let app = TestApp::spawn_with(Backend::Production, |s| s.upload.direct_ttl_secs = 3).await;
    let publisher = app.token_for("publisher").await;
    let dir = tempfile::tempdir().unwrap();
    let file = b"never completed".repeat(100);
    let path = dir.path().join("agent");
    std::fs::write(&path, &file).unwrap();
    let grant = granted(&app, &publisher, "1.0.0", &file).await;
    assert_eq!(curl_put(&grant, &path, None), 200);
    let key = object_key(&grant);

    // In flight until it expires, however eager the reconciliation.
    let (ok, report) =
        crate::rollback::gc(&app, &["--grace-secs", "0", "--stale-upload-secs", "0"]);
    assert!(ok, "{report}");
    assert_eq!(report["uploads_in_flight"], json!([key]));
    assert_eq!(app.stored().await.0, vec![key.clone()]);

    tokio::time::sleep(Duration::from_secs(4)).await;
    let (ok, report) = crate::rollback::gc(&app, &["--grace-secs", "0"]);
    assert!(ok, "{report}");
    assert_eq!(report["orphans_removed"], json!([key]));
    app.assert_nothing_stored().await;
    let res = complete(&app, &app.base, &publisher, &grant).await;
    expect_error(res, 404, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_upload_racing_a_proxied_one_ends_with_one_package() {
    let app = TestApp::spawn(Backend::Production).await;
    let publisher = app.token_for("publisher").await;
    let dir = tempfile::tempdir().unwrap();
    let file = b"direct bytes".repeat(500);
    let path = dir.path().join("agent");
    std::fs::write(&path, &file).unwrap();
    let grant = granted(&app, &publisher, "1.0.0", &file).await;
    assert_eq!(curl_put(&grant, &path, None), 200);
    // Meanwhile the same coordinates arrive through the API.
    let res = app
        .client
        .put(app.url("/api/v1/packages/direct-agent/1.0.0/linux/amd64"))
        .bearer_auth(&publisher)
        .body(b"proxied bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let proxied: Value = res.json().await.unwrap();
    let res = complete(&app, &app.base, &publisher, &grant).await;
    expect_error(res, 409, "conflict").await;
    // One package, and only its object.
    let mut last = (vec![], 0);
    for _ in 0..50 {
        last = app.stored().await;
        if last.0.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last,
        (
            vec![proxied["storage_path"].as_str().unwrap().to_owned()],
            1
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_uploads_say_they_need_s3_on_the_embedded_default() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let publisher = app.token_for("publisher").await;
    let res = begin(&app, &publisher, "1.0.0", b"bytes").await;
    let body = expect_error(res, 501, "direct_upload_unsupported").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("s3"),
        "{body}"
    );
    // A viewer is refused before that.
    let viewer = app.token_for("viewer").await;
    let res = begin(&app, &viewer, "1.0.0", b"bytes").await;
    expect_error(res, 403, "forbidden").await;
}
