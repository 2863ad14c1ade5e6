//! The verified mirror against a local release server laid out as GitHub serves releases
//! (a release list, assets, `.sigstore.json` bundles, a checksums file), built from the
//! conformance vectors: a good asset, a tampered one, one without its bundle and one whose
//! download breaks off; an old version and a prerelease it must not fetch. Two replicas
//! (`agentpkg-server mirror --once`, two processes over one database and one bucket) run at
//! the same moment.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpResponse, HttpServer, web};
use agentpkg_store::testing::Backend;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::TestApp;
use crate::signing::json_of;
use crate::sigstore::{BEACON, GITHUB, artifact, vector};

/// What the release server serves, and what it was asked for.
#[derive(Default)]
struct Releases {
    files: BTreeMap<String, Vec<u8>>,
    /// Paths whose body breaks off after a few bytes.
    interrupted: Vec<String>,
    requests: Mutex<Vec<String>>,
}

async fn serve(releases: web::Data<Arc<Releases>>, path: web::Path<String>) -> HttpResponse {
    let path = path.into_inner();
    releases.requests.lock().unwrap().push(path.clone());
    if path == "releases" {
        // Slow enough that a replica started at the same moment finds the lease held.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        return HttpResponse::Ok().json(json!([
            {"tag_name": "v2.0.0-rc.1", "draft": false},
            {"tag_name": "v1.0.0"},
            {"tag_name": "v0.9.0"},
        ]));
    }
    if releases.interrupted.contains(&path) {
        let head = artifact()[..10].to_vec();
        let body = futures_util::stream::iter([
            Ok::<_, std::io::Error>(web::Bytes::from(head)),
            Err(std::io::Error::other("the connection dropped")),
        ]);
        return HttpResponse::Ok().streaming(body);
    }
    match releases.files.get(&path) {
        Some(bytes) => HttpResponse::Ok().body(bytes.clone()),
        None => HttpResponse::NotFound().finish(),
    }
}

/// Starts the release server; its base URL.
fn release_server(releases: Arc<Releases>) -> String {
    let data = web::Data::new(releases);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/{path:.*}", web::get().to(serve))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    format!("http://127.0.0.1:{port}")
}

fn layout() -> Releases {
    let a = artifact();
    let sum = hex::encode(Sha256::digest(&a));
    let file = |platform: &str| format!("conformance_1.0.0_{platform}.txt");
    let mut files = BTreeMap::new();
    let dir = "download/v1.0.0";
    // Good: the bytes the bundle signs, listed in the checksums file.
    files.insert(format!("{dir}/{}", file("linux_amd64")), a.clone());
    // Tampered: other bytes under a listed name (the checksums file has the real sum).
    files.insert(
        format!("{dir}/{}", file("linux_arm64")),
        b"DO NOT MODIFY ME! (modified by a mirror in the middle)".to_vec(),
    );
    // Without its bundle.
    files.insert(format!("{dir}/{}", file("windows_amd64")), a.clone());
    for platform in ["linux_amd64", "linux_arm64", "darwin_arm64"] {
        files.insert(
            format!("{dir}/{}.sigstore.json", file(platform)),
            vector("happy-path-v0.3"),
        );
    }
    let checksums: String = [
        "linux_amd64",
        "linux_arm64",
        "windows_amd64",
        "darwin_arm64",
    ]
    .iter()
    .map(|p| format!("{sum}  {}\n", file(p)))
    .collect();
    files.insert(format!("{dir}/checksums.txt"), checksums.into_bytes());
    // An older release, complete: the mirror follows only the newest one.
    for (name, bytes) in &files.clone() {
        files.insert(name.replace("1.0.0", "0.9.0"), bytes.clone());
    }
    Releases {
        files,
        interrupted: vec![format!("{dir}/{}", file("darwin_arm64"))],
        requests: Mutex::default(),
    }
}

/// The configuration of a mirror of the local release server.
fn source(base: &str) -> agentpkg_mirror::SourceSettings {
    agentpkg_mirror::SourceSettings {
        name: "conformance".into(),
        releases_url: format!("{base}/releases"),
        asset_url: format!(
            "{base}/download/v{{version}}/conformance_{{version}}_{{os}}_{{arch}}.txt"
        ),
        bundle_url: None,
        checksums_url: format!("{base}/download/v{{version}}/checksums.txt"),
        versions: None,
        newest: Some(1),
        platforms: [
            "linux/amd64",
            "linux/arm64",
            "windows/amd64",
            "darwin/arm64",
        ]
        .map(String::from)
        .to_vec(),
        issuer: GITHUB.into(),
        san_regex: format!("^{}$", BEACON.replace('.', "\\.")),
    }
}

/// The same configuration as a file, for `agentpkg-server mirror --once`.
fn config_file(app: &TestApp, base: &str, dir: &std::path::Path) -> std::path::PathBuf {
    use secrecy::ExposeSecret;
    let s = &app.settings;
    let s3 = &s.storage.s3;
    let src = source(base);
    let text = format!(
        r#"
[database]
url = {db:?}
[storage]
backend = "s3"
[storage.s3]
endpoint = {endpoint:?}
region = {region:?}
access_key = {access:?}
secret_key = {secret:?}
bucket = {bucket:?}
[mirror]
interval_secs = 0
[[mirror.sources]]
name = "conformance"
releases_url = {releases:?}
asset_url = {asset:?}
checksums_url = {checksums:?}
newest = 1
platforms = ["linux/amd64", "linux/arm64", "windows/amd64", "darwin/arm64"]
issuer = {issuer:?}
san_regex = {san:?}
"#,
        db = s.database.url.expose_secret(),
        endpoint = s3.endpoint,
        region = s3.region,
        access = s3.access_key,
        secret = s3.secret_key.as_ref().unwrap().expose_secret(),
        bucket = s3.bucket,
        releases = src.releases_url,
        asset = src.asset_url,
        checksums = src.checksums_url,
        issuer = src.issuer,
        san = src.san_regex,
    );
    let path = dir.join("mirror.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_publishes_only_verified_assets_once_even_with_two_replicas() {
    let releases = Arc::new(layout());
    let base = release_server(releases.clone());
    let app = TestApp::spawn(Backend::Production).await;
    let admin = app.admin_token().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&app, &base, dir.path());

    // Two replicas at the same moment: one mirrors, the other sees the lease and waits.
    let run = || {
        crate::cli::command(dir.path())
            .arg("--config")
            .arg(&config)
            .args(["mirror", "--once"])
            .output()
            .unwrap()
    };
    let (one, two) = std::thread::scope(|s| {
        let one = s.spawn(run);
        let two = s.spawn(run);
        (one.join().unwrap(), two.join().unwrap())
    });
    let reports: Vec<Value> = [&one, &two]
        .iter()
        .map(|out| {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let ran: Vec<&Value> = reports.iter().filter(|r| r["ran"] == true).collect();
    assert_eq!(ran.len(), 1, "exactly one replica mirrors: {reports:?}");
    let report = ran[0];
    assert_eq!(
        report["published"],
        json!(["conformance 1.0.0 linux/amd64"]),
        "{report}"
    );
    let failed: Vec<&str> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(failed.len(), 3, "{report}");
    assert!(
        failed
            .iter()
            .any(|f| f.starts_with("conformance 1.0.0 linux/arm64") && f.contains("checksum")),
        "{report}"
    );
    assert!(
        failed
            .iter()
            .any(|f| f.starts_with("conformance 1.0.0 windows/amd64") && f.contains("404")),
        "{report}"
    );
    assert!(
        failed
            .iter()
            .any(|f| f.starts_with("conformance 1.0.0 darwin/arm64") && f.contains("broke off")),
        "{report}"
    );
    // Nothing of the older release or the prerelease was fetched.
    let asked = releases.requests.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .all(|p| !p.contains("0.9.0") && !p.contains("2.0.0")),
        "{asked:?}"
    );

    // Only the verified asset is a package: signed, verified, owned by the mirror user;
    // the bucket holds its object and nothing else.
    let res = app.get("/api/v1/packages?name=conformance", &admin).await;
    let list = json_of(res, 200).await;
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let package = &items[0];
    assert_eq!(package["platform"], "linux");
    assert_eq!(package["arch"], "amd64");
    assert_eq!(package["signature"]["verified"], true, "{package}");
    assert_eq!(package["signature"]["signer"], BEACON);
    let (objects, rows) = app.stored().await;
    assert_eq!((objects.len(), rows), (1, 1), "{objects:?}");
    let res = app.get("/api/v1/packages/conformance/owners", &admin).await;
    let owners = json_of(res, 200).await;
    assert!(owners.to_string().contains("\"mirror\""), "{owners}");

    // The status says the same, shared by every replica.
    let res = app.get("/api/v1/mirrors/status", &admin).await;
    let status = json_of(res, 200).await;
    let states: BTreeMap<String, String> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                format!(
                    "{}/{}",
                    a["platform"].as_str().unwrap(),
                    a["arch"].as_str().unwrap()
                ),
                a["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(states["linux/amd64"], "published", "{status}");
    for failed in ["linux/arm64", "windows/amd64", "darwin/arm64"] {
        assert_eq!(states[failed], "failed", "{status}");
    }
    // Audited: the publish and each failure, as the mirror user.
    let res = app.get("/api/v1/audit?action=mirror_publish", &admin).await;
    let events = json_of(res, 200).await;
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events[0]["actor"], "mirror");
    let res = app.get("/api/v1/audit?action=mirror_failure", &admin).await;
    assert_eq!(json_of(res, 200).await.as_array().unwrap().len(), 3);

    // A second run is idempotent: the published asset is not fetched again; the failed
    // ones are retried (and fail again: the release server has not changed).
    releases.requests.lock().unwrap().clear();
    let again = run();
    assert!(again.status.success());
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["present"], 1, "{report}");
    assert_eq!(report["published"], json!([]), "{report}");
    let asked = releases.requests.lock().unwrap().clone();
    assert!(
        !asked
            .iter()
            .any(|p| p.ends_with("conformance_1.0.0_linux_amd64.txt")),
        "{asked:?}"
    );
    let res = app.get("/api/v1/mirrors/status", &admin).await;
    let status = json_of(res, 200).await;
    let arm = status
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["arch"] == "arm64" && a["platform"] == "linux")
        .unwrap();
    assert_eq!(arm["attempts"], 2, "{status}");
}

/// The mirror's source settings are checked at start, naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_mirror_source_stops_the_server_with_the_setting_named() {
    let mut settings = agentpkg_server::Settings::default();
    let dir = tempfile::tempdir().unwrap();
    settings.database.url =
        secrecy::SecretString::from(dir.path().join("db").display().to_string());
    settings.storage.fs.root = dir.path().join("packages");
    settings.auth.jwt_secret = Some(secrecy::SecretString::from(
        "a-test-secret-of-at-least-32-bytes!!",
    ));
    settings.auth.admin_password = Some(secrecy::SecretString::from("a long admin password"));
    settings.server.bind = "127.0.0.1:0".into();
    let mut bad = source("http://127.0.0.1:9");
    bad.san_regex = "github.com/acme".into();
    settings.mirror.sources = vec![bad];
    let error = agentpkg_server::Application::build(settings)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("mirror.sources[0] (conformance)") && error.contains("san_regex"),
        "{error}"
    );
}

/// The server runs the mirror itself every `mirror.interval_secs` (the first run at once),
/// and counts what it did in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_mirrors_on_its_interval_and_counts_it() {
    let releases = Arc::new(layout());
    let base = release_server(releases.clone());
    // A second source whose release list is not there: reported, audited and counted.
    let mut unlisted = source(&base);
    unlisted.name = "unlisted".into();
    unlisted.releases_url = format!("{base}/no-such-list");
    let app = TestApp::spawn_with(Backend::Embedded, |s| {
        s.mirror.interval_secs = 3600;
        // First, so that it is done by the time the other's assets are recorded.
        s.mirror.sources = vec![unlisted, source(&base)];
    })
    .await;
    let admin = app.admin_token().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        let res = app.get("/api/v1/mirrors/status", &admin).await;
        let status = json_of(res, 200).await;
        if status.as_array().unwrap().len() == 4 {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror did not run: {status}"
        );
        // Waiting on the server's own schedule: nothing to poll but its state.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let published: Vec<&Value> = status
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "published")
        .collect();
    assert_eq!(published.len(), 1, "{status}");
    // The console's page says the same, linking the published package.
    let (_, session) = crate::web::sign_in(&app, "admin", crate::common::ADMIN_PASSWORD).await;
    let html = crate::web::client()
        .get(app.url("/mirror"))
        .header("Cookie", &session.expect("signed in").cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("href=\"/packages/conformance/1.0.0/linux/amd64\">published</a>"),
        "{html}"
    );
    assert!(html.contains("<strong>3 failed</strong>"), "{html}");
    assert!(html.contains("broke off"), "{html}");
    let metrics = app.get("/metrics", &admin).await.text().await.unwrap();
    for line in [
        "agentpkg_mirror_assets_total{source=\"conformance\",outcome=\"published\"} 1",
        "agentpkg_mirror_assets_total{source=\"conformance\",outcome=\"failed\"} 3",
        "agentpkg_mirror_assets_total{source=\"unlisted\",outcome=\"unlisted\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    let res = app
        .get(
            "/api/v1/audit?action=mirror_failure&package=unlisted",
            &admin,
        )
        .await;
    let events = json_of(res, 200).await;
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    assert!(
        events[0]["detail"]
            .as_str()
            .unwrap()
            .contains("the release list"),
        "{events}"
    );
}
