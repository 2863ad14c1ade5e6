//! Hardening: reconciliation never deletes the bytes of an upload in flight (held behind a
//! lock, slower than the grace period, or caught by a lost commit), probes are cheap, file
//! names cannot deceive, replicas start together, and `gc` on a busy directory does not
//! fail.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agentpkg_packagemgr::{ManagerConfig, PackageManager, ReconcileOptions, ReconcileReport};
use agentpkg_store::on_both_backends;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::common::{Backend, TestApp, WriteLock, expect_error};

on_both_backends!(
    an_upload_whose_insert_waits_on_a_lock_survives_gc_with_no_grace_and_a_clock_ahead,
    an_upload_slower_than_the_grace_period_survives_gc_running_throughout,
    file_names_cannot_deceive_and_non_ascii_names_download_as_utf8,
    gc_on_a_busy_registry_never_fails_a_pass,
    a_crowd_on_one_new_credential_costs_one_query,
);

/// A package manager over the test's own view of the server's store and storage, to run
/// reconciliation the way `agentpkg-server gc` does, with any options.
fn manager(app: &TestApp) -> PackageManager {
    PackageManager::new(
        Arc::new(app.store.clone()),
        app.storage.clone(),
        ManagerConfig::default(),
    )
}

async fn gc(app: &TestApp, grace: Duration, now: SystemTime) -> ReconcileReport {
    manager(app)
        .reconcile_with(ReconcileOptions {
            grace,
            stale_uploads: ManagerConfig::default().stale_upload_after,
            dry_run: false,
            now,
        })
        .await
        .unwrap()
}

/// A form upload sent in two halves: the file first, then — when told — the metadata
/// fields and the closing boundary. Between the two the server holds stored bytes that no
/// row names yet.
struct HeldUpload {
    rest: mpsc::Sender<Vec<u8>>,
    trailer: Vec<u8>,
    response: tokio::task::JoinHandle<reqwest::Response>,
}

impl HeldUpload {
    fn start(app: &TestApp, token: &str, file: &[u8], version: &str) -> Self {
        let boundary = "agentpkg-held-upload-boundary";
        let mut head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"agent\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        head.extend_from_slice(file);
        // The next part's start ends the file (so its bytes are stored); the fields that
        // finish the form, and with them the upload, wait for `finish`.
        let mut trailer = Vec::new();
        for (i, (name, value)) in [
            ("name", "opamp-agent"),
            ("version", version),
            ("platform", "linux"),
            ("arch", "amd64"),
        ]
        .into_iter()
        .enumerate()
        {
            let part = format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}"
            );
            if i == 0 {
                head.extend_from_slice(part.as_bytes());
            } else {
                trailer.extend_from_slice(part.as_bytes());
            }
        }
        trailer.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let (rest, chunks) = mpsc::channel::<Vec<u8>>(4);
        let body =
            futures_util::stream::unfold((Some(head), chunks), |(first, mut chunks)| async move {
                match first {
                    Some(head) => Some((Ok::<_, std::io::Error>(head), (None, chunks))),
                    None => chunks.recv().await.map(|c| (Ok(c), (None, chunks))),
                }
            });
        let request = app
            .client
            .post(app.url("/api/v1/packages"))
            .bearer_auth(token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(reqwest::Body::wrap_stream(body));
        let response = tokio::spawn(async move { request.send().await.unwrap() });
        Self {
            rest,
            trailer,
            response,
        }
    }

    async fn finish(self) -> reqwest::Response {
        self.rest.send(self.trailer).await.unwrap();
        drop(self.rest);
        self.response.await.unwrap()
    }
}

/// Waits (bounded) until storage holds `n` objects, and returns their keys.
async fn wait_for_objects(app: &TestApp, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for _ in 0..200 {
        keys = app.storage.list_keys().await.unwrap();
        if keys.len() >= n {
            return keys;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("storage holds {keys:?}, expected {n} object(s)");
}

async fn download_matches(app: &TestApp, token: &str, id: i64, expected: &[u8]) {
    let res = app
        .get(
            &format!("/api/v1/packages/{id}/download?redirect=false"),
            token,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), expected);
}

async fn nothing_missing(app: &TestApp) {
    let (ok, report) = crate::rollback::gc(app, &["--dry-run", "--grace-secs", "0"]);
    assert!(ok, "{report}");
    assert_eq!(report["missing_objects"], serde_json::json!([]), "{report}");
}

async fn an_upload_whose_insert_waits_on_a_lock_survives_gc_with_no_grace_and_a_clock_ahead(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let file = vec![5u8; 256 * 1024];
    let held = HeldUpload::start(&app, &token, &file, "1.0.0");
    let keys = wait_for_objects(&app, 1).await;

    // The bytes are stored; the row's insert will now wait behind the lock while gc runs,
    // with no grace at all, and again with a clock 20 minutes ahead.
    let lock = WriteLock::take(&app.db_url(), "packages IN EXCLUSIVE MODE");
    let response = tokio::spawn(held.finish());
    lock.wait_for_waiter().await;
    let (ok, report) = crate::rollback::gc(&app, &["--grace-secs", "0"]);
    assert!(ok, "{report}");
    assert_eq!(report["orphans_removed"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["uploads_in_flight"],
        serde_json::json!(keys),
        "{report}"
    );
    let ahead = SystemTime::now() + Duration::from_secs(20 * 60);
    let report = gc(&app, Duration::from_secs(900), ahead).await;
    assert!(report.orphans_removed.is_empty(), "{report:?}");
    assert_eq!(app.storage.list_keys().await.unwrap(), keys);
    drop(lock);

    let res = response.await.unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    download_matches(&app, &token, id, &file).await;
    nothing_missing(&app).await;
}

async fn an_upload_slower_than_the_grace_period_survives_gc_running_throughout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    // 10 MiB (more than one 8 MiB S3 part, so a multipart upload is open for a while),
    // sent a MiB at a time with pauses longer than the grace period.
    let chunk = vec![3u8; 1 << 20];
    let chunks = 10;
    let body = futures_util::stream::unfold(0, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent == chunks {
                return None;
            }
            if sent > 0 {
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            Some((Ok::<_, std::io::Error>(chunk), sent + 1))
        }
    });
    let request = app
        .client
        .put(app.url("/api/v1/packages/opamp-agent/1.0.0/linux/amd64"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(body));
    let upload = tokio::spawn(async move { request.send().await.unwrap() });

    // gc with no grace every 300 ms for as long as the upload runs.
    let mut passes = 0;
    while !upload.is_finished() {
        let report = gc(&app, Duration::ZERO, SystemTime::now()).await;
        assert!(report.orphans_removed.is_empty(), "{report:?}");
        assert!(report.incomplete_removed.is_empty(), "{report:?}");
        passes += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(passes >= 10, "gc ran only {passes} times during the upload");
    let res = upload.await.unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    download_matches(
        &app,
        &token,
        body["id"].as_i64().unwrap(),
        &vec![3u8; 10 << 20],
    )
    .await;
    nothing_missing(&app).await;
}

async fn file_names_cannot_deceive_and_non_ascii_names_download_as_utf8(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let put = |name: &str, version: &str| {
        app.client
            .put(app.url(&format!(
                "/api/v1/packages/opamp-agent/{version}/linux/amd64"
            )))
            .query(&[("filename", name)])
            .bearer_auth(&token)
            .body(b"agent bytes".to_vec())
            .send()
    };
    let res = put("inv\u{202E}gpj.exe", "1.0.0").await.unwrap();
    let body = expect_error(res, 400, "invalid_field").await;
    assert_eq!(body["error"]["field"], "filename");
    app.assert_nothing_stored().await;

    let res = put("агент.tgz", "1.0.1").await.unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let expected = "attachment; filename=\"_____.tgz\"; \
                    filename*=UTF-8''%D0%B0%D0%B3%D0%B5%D0%BD%D1%82.tgz";
    let res = app
        .get(
            &format!("/api/v1/packages/{id}/download?redirect=false"),
            &token,
        )
        .await;
    assert_eq!(res.headers()["content-disposition"], expected);
    if backend == Backend::Production {
        // The presigned URL asks S3 for the same header.
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let res = no_redirects
            .get(app.url(&format!("/api/v1/packages/{id}/download?redirect=true")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 307);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let url = reqwest::Url::parse(&location).unwrap();
        let asked = url
            .query_pairs()
            .find(|(k, _)| k == "response-content-disposition")
            .map(|(_, v)| v.into_owned());
        assert_eq!(asked.as_deref(), Some(expected));
    }
}

async fn gc_on_a_busy_registry_never_fails_a_pass(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("admin").await;
    let busy = async {
        for n in 0..25 {
            let version = format!("1.0.{n}");
            let fields = [
                ("name", "opamp-agent"),
                ("version", version.as_str()),
                ("platform", "linux"),
                ("arch", "amd64"),
            ];
            let res = app.upload(&token, vec![n as u8; 64 * 1024], &fields).await;
            let status = res.status();
            let body: Value = res.json().await.unwrap();
            assert_eq!(status, 201, "{body}");
            let id = body["id"].as_i64().unwrap();
            let res = app.delete(&format!("/api/v1/packages/{id}"), &token).await;
            assert_eq!(res.status(), 204);
        }
    };
    let passes = async {
        let mgr = manager(&app);
        let mut passes = 0;
        loop {
            let options = ReconcileOptions {
                grace: Duration::ZERO,
                stale_uploads: ManagerConfig::default().stale_upload_after,
                dry_run: false,
                now: SystemTime::now(),
            };
            if let Err(e) = mgr.reconcile_with(options).await {
                panic!("a gc pass failed under traffic after {passes} passes: {e}");
            }
            passes += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        () = busy => {}
        () = passes => {}
    }
    app.assert_nothing_stored().await;
}

/// A proxy to PostgreSQL that, once armed, forwards the next `COMMIT` and then drops the
/// connection, so that the client never learns whether its transaction committed.
struct CommitDropper {
    addr: String,
    armed: Arc<std::sync::atomic::AtomicBool>,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

/// A simple-query `COMMIT` message: 'Q', length 11, "COMMIT\0".
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

impl CommitDropper {
    async fn start(upstream: String) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let armed = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let (armed2, fired2) = (armed.clone(), fired.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (armed, fired) = (armed2.clone(), fired2.clone());
                tokio::spawn(async move {
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let commit = buf[..n].windows(COMMIT.len()).any(|w| w == COMMIT)
                            && armed.swap(false, Ordering::SeqCst);
                        if commit {
                            // No answer reaches the client from here on; the commit
                            // itself does reach the server, which acts on it.
                            down.abort();
                            fired.store(true, Ordering::SeqCst);
                        }
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if commit {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            break;
                        }
                    }
                    down.abort();
                });
            }
        });
        Self { addr, armed, fired }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_never_leaves_a_row_without_its_object() {
    use std::sync::atomic::Ordering;
    let admin = agentpkg_store::testing::admin_url();
    let direct = crate::faults::pg_host_port(&admin).to_owned();
    let proxy = CommitDropper::start(direct.clone()).await;
    let through = proxy.addr.clone();
    let app = TestApp::spawn_with(Backend::Production, |s| {
        let url = secrecy::ExposeSecret::expose_secret(&s.database.url).to_owned();
        // In clear, so that the proxy can see the commit go by.
        let url = format!("{}?sslmode=disable", url.replacen(&direct, &through, 1));
        s.database.url = secrecy::SecretString::from(url);
    })
    .await;
    let token = app.token_for("publisher").await;
    let file = vec![8u8; 128 * 1024];

    proxy.armed.store(true, Ordering::SeqCst);
    let res = app
        .upload(&token, file.clone(), &crate::rollback::FIELDS)
        .await;
    assert!(
        proxy.fired.load(Ordering::SeqCst),
        "the upload's commit was not cut"
    );
    let status = res.status().as_u16();
    let rows = app.stored().await.1;
    match status {
        // The commit landed and the server confirmed it by reading the row back.
        201 => {
            let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
            download_matches(&app, &token, id, &file).await;
        }
        // Unknown to the server: the object stays for gc, whatever the commit did.
        503 => {
            let keys = app.storage.list_keys().await.unwrap();
            assert_eq!(keys.len(), 1, "the object must not be deleted: {keys:?}");
            if rows == 1 {
                let res = app
                    .get(
                        "/api/v1/packages/opamp-agent/1.0.0/linux/amd64/download?redirect=false",
                        &token,
                    )
                    .await;
                assert_eq!(res.bytes().await.unwrap().as_ref(), file.as_slice());
            }
        }
        other => panic!("unexpected answer {other}"),
    }
    nothing_missing(&app).await;
    // Once the upload's marker is stale, gc settles the rest: a row keeps its object, no
    // row means no object.
    let (ok, report) =
        crate::rollback::gc(&app, &["--grace-secs", "0", "--stale-upload-secs", "0"]);
    assert!(ok, "{report}");
    let (keys, rows) = app.stored().await;
    assert_eq!(
        keys.len() as u64,
        rows,
        "objects {keys:?} for {rows} row(s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_floods_cost_a_handful_of_backend_checks() {
    let app = TestApp::spawn(Backend::Production).await;
    let admin = app.admin_token().await;
    let checks = || async {
        let text = app.get("/metrics", &admin).await.text().await.unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("agentpkg_storage_operation_duration_seconds_count")
                    && l.contains("operation=\"check\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let before = checks().await;
    let started = std::time::Instant::now();
    let probes: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/readyz"));
            tokio::spawn(async move {
                for _ in 0..250 {
                    let res = client.get(&url).send().await.unwrap();
                    assert_eq!(res.status(), 200);
                }
            })
        })
        .collect();
    for probe in probes {
        probe.await.unwrap();
    }
    let seconds = started.elapsed().as_secs() + 1;
    let used = checks().await - before;
    assert!(
        used <= seconds + 1,
        "2000 readiness probes over {seconds} s cost {used} storage checks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_on_a_fresh_database_all_become_ready() {
    let db = agentpkg_store::testing::TestDatabase::create();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let starts: Vec<_> = dirs
        .iter()
        .map(|dir| {
            let mut cmd = crate::cli::command(dir.path());
            cmd.env("AGENTPKG__DATABASE__URL", db.url())
                .env("AGENTPKG__AUTH__JWT_SECRET", crate::common::JWT_SECRET)
                .env("AGENTPKG__AUTH__ADMIN_PASSWORD", "a long admin password")
                .env("AGENTPKG__STORAGE__FS__ROOT", dir.path().join("packages"));
            std::thread::spawn(move || crate::cli::start(cmd))
        })
        .collect();
    let servers: Vec<_> = starts.into_iter().map(|s| s.join().unwrap()).collect();
    for server in &servers {
        let res = reqwest::get(format!("http://127.0.0.1:{}/readyz", server.port))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

/// Sends a request head and then the body `trickle` at a time, `every` apart, until the
/// server answers or `total` is sent; returns the status line's code and the body.
async fn trickle(addr: String, head: String, first: Vec<u8>, every: Duration) -> (u16, Value) {
    let (status, body) = trickle_once(&addr, &head, &first, every).await;
    // NOTE: with 550 connections opened at once beside the rest of the suite, the loopback
    // stack now and then resets a fresh connection within its first second, before the
    // server has read anything; that says nothing about slow bodies, so such a connection
    // is opened again, once. Any other ending is the server's answer and is judged.
    let reset_at_once = status == 0
        && body["no_answer"]
            .as_str()
            .is_some_and(|why| why.contains("reset") && body["early"] == true);
    if reset_at_once {
        return trickle_once(&addr, &head, &first, every).await;
    }
    (status, body)
}

async fn trickle_once(addr: &str, head: &str, first: &[u8], every: Duration) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    // One task reads and writes, and never writes once an answer has begun to arrive: a
    // byte sent after the server closed makes it reset the connection, and a reset throws
    // away an answer not yet read (on a loaded machine the reader may be that late).
    let mut response = Vec::new();
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(30);
    let mut next_byte = started + every;
    // How the exchange ended, shown when no answer came.
    let mut ended = "timeout".to_owned();
    loop {
        tokio::select! {
            read = stream.read_buf(&mut response) => match read {
                Ok(0) => {
                    ended = format!("closed after {:?}", started.elapsed());
                    break;
                }
                Err(e) => {
                    ended = format!("{e} after {:?}", started.elapsed());
                    break;
                }
                Ok(_) => {}
            },
            () = tokio::time::sleep_until(next_byte), if response.is_empty() => {
                next_byte += every;
                let mut early = Vec::new();
                match stream.try_read_buf(&mut early) {
                    Ok(0) => break,
                    Ok(_) => response.extend_from_slice(&early),
                    Err(_) => {
                        let _ = stream.write_all(b" ").await;
                    }
                }
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let early = started.elapsed() < Duration::from_secs(1);
    let body = serde_json::from_str(body).unwrap_or_else(
        |_| serde_json::json!({ "no_answer": ended, "received": text, "early": early }),
    );
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickling_and_stalled_clients_time_out_while_others_are_served() {
    let app = TestApp::spawn_with(Backend::Production, |s| {
        s.server.body_idle_timeout_secs = 2;
        s.server.body_min_rate_bytes = 64;
        s.server.body_rate_grace_secs = 2;
        s.upload.max_concurrent = 100;
    })
    .await;
    let token = app.token_for("admin").await;
    let res = app
        .upload(&token, vec![1u8; 64 * 1024], &crate::rollback::FIELDS)
        .await;
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let addr = app.base.trim_start_matches("http://").to_owned();

    // 500 logins whose bodies come a byte every 6 seconds, and 50 uploads that stall
    // part-way.
    let logins: Vec<_> = (0..500)
        .map(|_| {
            let head = format!(
                "POST /api/v1/auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: 200\r\n\r\n"
            );
            tokio::spawn(trickle(addr.clone(), head, b"{".to_vec(), Duration::from_secs(6)))
        })
        .collect();
    let uploads: Vec<_> = (0..50)
        .map(|n| {
            let head = format!(
                "PUT /api/v1/packages/stalled/1.0.{n}/linux/amd64 HTTP/1.1\r\nHost: {addr}\r\n\
                 Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\n\r\n",
                4 << 20
            );
            tokio::spawn(trickle(
                addr.clone(),
                head,
                vec![2u8; 256 * 1024],
                Duration::from_secs(3600),
            ))
        })
        .collect();

    // Meanwhile (once they are all connected) an ordinary client lists and downloads, each
    // within a second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(4) {
        for path in [
            "/api/v1/packages".to_owned(),
            format!("/api/v1/packages/{id}/download?redirect=false"),
        ] {
            let res = quick
                .get(app.url(&path))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{path} did not answer within a second (at {:?}): {e:?}",
                        started.elapsed()
                    )
                });
            assert_eq!(res.status(), 200, "{path}");
            res.bytes().await.unwrap();
            served += 1;
        }
    }
    assert!(served > 4);

    for login in logins {
        let (status, body) = login.await.unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (408, Some("body_timeout")),
            "{body}"
        );
    }
    for upload in uploads {
        let (status, body) = upload.await.unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (408, Some("body_timeout")),
            "{body}"
        );
    }
    // Nothing of the stalled uploads stays: the one package and its object only.
    let mut stored = app.stored().await;
    for _ in 0..50 {
        if stored.0.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = app.stored().await;
    }
    assert_eq!((stored.0.len(), stored.1), (1, 1), "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_concurrency_cap_are_refused_with_retry_after() {
    let app = TestApp::spawn_with(Backend::Embedded, |s| {
        s.upload.max_concurrent = 1;
        s.server.body_idle_timeout_secs = 5;
    })
    .await;
    let token = app.token_for("publisher").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let head = format!(
        "PUT /api/v1/packages/slow/1.0.0/linux/amd64 HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 1000000\r\n\r\n"
    );
    let first = tokio::spawn(trickle(
        addr.clone(),
        head,
        vec![0u8; 1000],
        Duration::from_secs(3600),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let res = app
        .client
        .put(app.url("/api/v1/packages/other/1.0.0/linux/amd64"))
        .bearer_auth(&token)
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "5");
    expect_error(res, 503, "too_many_uploads").await;
    let (status, _) = first.await.unwrap();
    assert_eq!(status, 408);
    // The place is free again.
    let res = app
        .client
        .put(app.url("/api/v1/packages/other/1.0.0/linux/amd64"))
        .bearer_auth(&token)
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_header_does_not_lift_the_body_deadline_off_other_routes() {
    let app = TestApp::spawn_with(Backend::Embedded, |s| {
        s.server.body_idle_timeout_secs = 2;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // A login that says it upgrades to a WebSocket, whose body never comes: cut like any
    // other (it was held for ever).
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    );
    let started = std::time::Instant::now();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(20),
        trickle(addr, head, b"{".to_vec(), Duration::from_secs(3600)),
    )
    .await
    .expect("the stalled login was cut");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (408, Some("body_timeout")),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_that_waits_past_the_lock_timeout_is_a_retryable_503_and_stores_nothing() {
    let app = TestApp::spawn_with(Backend::Production, |s| {
        s.database.lock_timeout_secs = 1;
    })
    .await;
    let token = app.token_for("publisher").await;
    let lock = WriteLock::take(&app.db_url(), "packages IN EXCLUSIVE MODE");
    let res = app
        .put_package(
            &token,
            "opamp-agent/1.0.0/linux/amd64",
            vec![9u8; 64 * 1024],
        )
        .await;
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    // It was `500 internal`: a lock wait is the database being busy, not a fault.
    let body = expect_error(res, 503, "database_unavailable").await;
    assert_eq!(retry_after.as_deref(), Some("5"), "{body}");
    drop(lock);
    app.assert_nothing_stored().await;
    // Once the lock is gone the same upload goes through.
    let res = app
        .put_package(
            &token,
            "opamp-agent/1.0.0/linux/amd64",
            vec![9u8; 64 * 1024],
        )
        .await;
    assert_eq!(res.status(), 201);
}

/// Calls of a database operation so far, from the server's metrics.
async fn db_calls(app: &TestApp, admin: &str, operation: &str) -> u64 {
    app.metric(
        admin,
        &format!(
            "agentpkg_db_operation_duration_seconds_count{{operation=\"{operation}\",outcome=\"ok\"}}"
        ),
    )
    .await
}

/// A thousand agents on one token whose cache entry has just expired (or was never
/// there) wait for one lookup: concurrent misses of one credential are one query, not a
/// query each queued on the blocking pool (threads, memory, and the pool's connections).
async fn a_crowd_on_one_new_credential_costs_one_query(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let (_, secret) = crate::common::create_token(
        &app,
        &admin,
        serde_json::json!({"name": "fleet", "scope": "read"}),
    )
    .await;
    let before = db_calls(&app, &admin, "token_by_secret_hash").await;
    let crowd: Vec<_> = (0..200)
        .map(|_| app.get("/api/v1/auth/me", &secret))
        .collect();
    for res in futures_util::future::join_all(crowd).await {
        assert_eq!(res.status(), 200);
    }
    let after = db_calls(&app, &admin, "token_by_secret_hash").await;
    assert_eq!(after - before, 1, "200 requests at once on one new token");
}
