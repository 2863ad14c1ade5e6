//! Faults injected into the real parts while uploads are in flight: S3 or PostgreSQL
//! going away (a TCP proxy in front of each that the test can cut), database connections
//! killed with `pg_terminate_backend`, and the server itself killed with SIGKILL. After
//! each, the bucket and the table agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::{Connection, RunQueryDsl};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common::{Backend, TestApp, WriteLock, expect_error};

/// A TCP proxy to a real server that the test can cut (every open connection closed, new
/// ones dropped as soon as they are accepted) and restore.
struct FaultProxy {
    addr: String,
    up: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
}

impl FaultProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let (accept_up, accept_cuts) = (up.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees its connection closed
                }
                let mut cut = accept_cuts.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { addr, up, cuts }
    }

    /// In front of the local Garage.
    async fn to_s3() -> Self {
        let endpoint = crate::common::s3_env().endpoint;
        Self::start(endpoint.trim_start_matches("http://").to_owned()).await
    }

    /// In front of the PostgreSQL server that test databases are made on.
    async fn to_postgres() -> Self {
        Self::start(pg_host_port(&agentpkg_store::testing::admin_url()).to_owned()).await
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL.
pub(crate) fn pg_host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap()
}

/// What the server answered: status and JSON body, if it answered at all.
type Answer = Option<(u16, Value)>;

/// A raw `PUT` upload of `total` bytes: sends `before` bytes, injects `fault`, then sends
/// up to `after` more (ignoring write errors: the server may stop reading) and reads the
/// answer.
async fn put_with_fault(
    app: &TestApp,
    token: &str,
    version: &str,
    (total, before, after): (usize, usize, usize),
    fault: impl std::future::Future<Output = ()>,
) -> Answer {
    put_framed_with_fault(app, token, version, (total, before, after), false, fault).await
}

/// As [`put_with_fault`]; `chunked`: without a length (`Transfer-Encoding: chunked`), which
/// storage takes as a multipart upload rather than one streamed request.
async fn put_framed_with_fault(
    app: &TestApp,
    token: &str,
    version: &str,
    (total, before, after): (usize, usize, usize),
    chunked: bool,
    fault: impl std::future::Future<Output = ()>,
) -> Answer {
    let host = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&host).await.unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {total}")
    };
    let head = format!(
        "PUT /api/v1/packages/opamp-agent/{version}/linux/amd64 HTTP/1.1\r\nHost: {host}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n\
         {framing}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut chunk = vec![7u8; 1024 * 1024];
    if chunked {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.append(&mut chunk);
        framed.extend_from_slice(b"\r\n");
        chunk = framed;
    }
    let chunk_payload = 1024 * 1024;
    let mut sent = 0;
    while sent < before {
        stream.write_all(&chunk).await.unwrap();
        sent += chunk_payload;
    }
    // Let the server push what it has to storage before the fault.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fault.await;
    let rest = async {
        let mut more = 0;
        while more < after && sent + more < total {
            if stream.write_all(&chunk).await.is_err() {
                break;
            }
            more += chunk_payload;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), rest).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

async fn rows(app: &TestApp) -> u64 {
    use agentpkg_store::PackageStore;
    app.store
        .list_packages(&agentpkg_model::ListQuery::default())
        .await
        .unwrap()
        .total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_mid_upload_is_a_503_with_no_row_and_no_object_once_it_is_back() {
    let s3 = FaultProxy::to_s3().await;
    let endpoint = format!("http://{}", s3.addr);
    let app = TestApp::spawn_with(Backend::Production, |s| s.storage.s3.endpoint = endpoint).await;
    let token = app.token_for("publisher").await;

    // With a length, the body streams to S3 as one PUT; without one (chunked), as 8 MiB
    // multipart parts. Either way 24 MiB reach storage, then S3 goes away mid-upload.
    for (version, chunked) in [("1.0.0", false), ("1.0.1", true)] {
        let answer = put_framed_with_fault(
            &app,
            &token,
            version,
            (64 << 20, 24 << 20, 24 << 20),
            chunked,
            async { s3.cut() },
        )
        .await;
        let (status, body) = answer.expect("the server answers");
        assert_eq!(status, 503, "chunked: {chunked}: {body}");
        assert_eq!(body["error"]["code"], "storage_unavailable");
        assert_eq!(rows(&app).await, 0, "no row");
        assert_eq!(
            app.client
                .get(app.url("/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            503
        );

        // S3 is back: there is no object; a single PUT cut short leaves nothing at all,
        // and the parts of a multipart upload that could not be aborted while S3 was away
        // are swept by reconciliation.
        s3.restore();
        app.assert_nothing_stored().await;
        let (ok, report) = crate::rollback::gc(&app, &["--grace-secs", "0"]);
        assert!(ok, "{report}");
        assert_eq!(report["orphans_removed"], serde_json::json!([]));
        let swept = report["incomplete_removed"].as_array().unwrap();
        assert_eq!(swept.len(), usize::from(chunked), "{report}");
        let (_, again) = crate::rollback::gc(&app, &["--grace-secs", "0"]);
        assert_eq!(again["incomplete_removed"], serde_json::json!([]));
    }

    // And the server recovered by itself.
    let res = app
        .upload(&token, b"after".to_vec(), &crate::rollback::FIELDS)
        .await;
    assert_eq!(res.status(), 201);
}

/// Kills every connection of the test's database from outside, as a failover or an
/// administrator would.
pub(crate) async fn terminate_backends(app: &TestApp) -> usize {
    let db = app.db_url().rsplit('/').next().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        let admin = agentpkg_store::testing::admin_url();
        let mut c = diesel::PgConnection::establish(&admin).unwrap();
        diesel::sql_query(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        ))
        .execute(&mut c)
        .unwrap()
    })
    .await
    .unwrap()
}

async fn spawn_behind_pg_proxy() -> (TestApp, FaultProxy) {
    let pg = FaultProxy::to_postgres().await;
    let proxy = pg.addr.clone();
    let app = TestApp::spawn_with(Backend::Production, |s| {
        let url = secrecy::ExposeSecret::expose_secret(&s.database.url).to_owned();
        let direct = pg_host_port(&url).to_owned();
        s.database.url = secrecy::SecretString::from(url.replacen(&direct, &proxy, 1));
        s.database.acquire_timeout_secs = 1;
    })
    .await;
    (app, pg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_connections_killed_mid_upload_leave_no_object() {
    let (app, pg) = spawn_behind_pg_proxy().await;
    let token = app.token_for("publisher").await;

    // Mid-body, every database connection is killed and new ones are refused: the bytes
    // are stored, the row cannot be written, and the stored bytes are deleted again.
    let answer = put_with_fault(&app, &token, "1.0.0", (12 << 20, 6 << 20, 6 << 20), async {
        assert!(
            terminate_backends(&app).await > 0,
            "no connection was killed"
        );
        pg.cut();
    })
    .await;
    let (status, body) = answer.expect("the server answers");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable");
    let keys = app.storage.list_keys().await.unwrap();
    assert!(keys.is_empty(), "objects left behind: {keys:?}");

    // Back: no row was written, the same upload goes through, and the server never
    // needed a restart.
    pg.restore();
    app.assert_nothing_stored().await;
    let res = app
        .upload(&token, vec![7u8; 3 << 20], &crate::rollback::FIELDS)
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(app.stored().await.0.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_or_s3_is_away_readiness_and_reads_answer_503_and_recover_by_themselves() {
    let s3 = FaultProxy::to_s3().await;
    let pg = FaultProxy::to_postgres().await;
    let (s3_proxy, pg_proxy) = (s3.addr.clone(), pg.addr.clone());
    let app = TestApp::spawn_with(Backend::Production, |s| {
        s.storage.s3.endpoint = format!("http://{s3_proxy}");
        let url = secrecy::ExposeSecret::expose_secret(&s.database.url).to_owned();
        let direct = pg_host_port(&url).to_owned();
        s.database.url = secrecy::SecretString::from(url.replacen(&direct, &pg_proxy, 1));
        s.database.acquire_timeout_secs = 1;
    })
    .await;
    let token = app.token_for("viewer").await;
    let admin_token = app.admin_token().await;
    let res = app
        .upload(&admin_token, b"bytes".to_vec(), &crate::rollback::FIELDS)
        .await;
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let download = format!("/api/v1/packages/{id}/download");
    let ready = || async { app.client.get(app.url("/readyz")).send().await.unwrap() };

    for (proxy, code, read) in [
        (&s3, "storage_unavailable", download.as_str()),
        (&pg, "database_unavailable", "/api/v1/packages"),
    ] {
        proxy.cut();
        // Readiness is checked at most once a second; the next check sees the cut.
        let mut res = ready().await;
        for _ in 0..30 {
            if res.status() == 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            res = ready().await;
        }
        expect_error(res, 503, code).await;
        let res = app.get(read, &token).await;
        assert_eq!(res.status(), 503, "{read}");
        assert_eq!(res.headers()["retry-after"], "5");
        assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], code);

        proxy.restore();
        let mut status = ready().await.status();
        for _ in 0..30 {
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            status = ready().await.status();
        }
        assert_eq!(status, 200);
        let res = app.get(read, &token).await;
        assert_eq!(res.status(), 200, "{read}");
    }
    let res = app.get(&download, &token).await;
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"bytes");
}

fn server_binary(app: &TestApp, dir: &std::path::Path) -> std::process::Command {
    let mut cmd = crate::cli::command(dir);
    cmd.envs(crate::rollback::backend_env(app))
        .env("AGENTPKG__AUTH__JWT_SECRET", crate::common::JWT_SECRET)
        .env("AGENTPKG__GC__INTERVAL_SECS", "0");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_between_storing_and_recording_leaves_an_orphan_that_reconciliation_removes()
 {
    // The test's database and bucket; the server under test is the real binary.
    let app = TestApp::spawn(Backend::Production).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = crate::cli::start(server_binary(&app, dir.path()));
    let token = crate::cli::token(server.port, "admin", crate::common::ADMIN_PASSWORD).await;

    // The insert will wait on the lock once the bytes are stored: kill the server there.
    let lock = WriteLock::take(&app.db_url(), "packages, blobs IN ACCESS EXCLUSIVE MODE");
    let port = server.port;
    let upload = tokio::spawn(async move {
        crate::cli::upload_file_first(port, &token, "opamp-agent", vec![9u8; 10 << 20]).await
    });
    let mut keys = Vec::new();
    for _ in 0..100 {
        keys = app.storage.list_keys().await.unwrap();
        if !keys.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(keys.len(), 1, "the bytes were stored");
    lock.wait_for_waiter().await;
    server.signal("KILL");
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    assert!(
        upload.await.unwrap().is_err(),
        "the client saw the server die"
    );
    drop(lock);

    // What the crash left: an object that no row names, and its upload's in-flight marker,
    // which the dead process no longer touches.
    assert_eq!(rows(&app).await, 0);
    let (ok, report) = crate::rollback::gc(&app, &["--dry-run", "--grace-secs", "0"]);
    assert!(ok, "{report}");
    assert_eq!(
        report["uploads_in_flight"],
        serde_json::json!(keys),
        "until the marker is stale, the upload may be another replica's, still committing"
    );
    let stale = ["--dry-run", "--grace-secs", "0", "--stale-upload-secs", "0"];
    let (ok, report) = crate::rollback::gc(&app, &stale);
    assert!(ok, "{report}");
    assert_eq!(report["orphans_removed"], serde_json::json!(keys));
    assert_eq!(
        app.storage.list_keys().await.unwrap(),
        keys,
        "a dry run deletes nothing"
    );

    // After a restart, the periodic reconciliation leaves it while its marker is fresh…
    let mut cmd = server_binary(&app, dir.path());
    cmd.env("AGENTPKG__GC__INTERVAL_SECS", "1");
    let mut restarted = crate::cli::start(cmd);
    // Two passes are in its log (not a guess at how long two take) before the bucket is
    // looked at.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let passes = restarted
            .all_log()
            .iter()
            .filter(|l| l.contains("reconciliation pass"))
            .count();
        if passes >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no two reconciliation passes within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.storage.list_keys().await.unwrap(), keys);
    // …and once it is stale (here: told so), the object and the marker go.
    let (ok, report) =
        crate::rollback::gc(&app, &["--grace-secs", "0", "--stale-upload-secs", "0"]);
    assert!(ok, "{report}");
    assert_eq!(report["orphans_removed"], serde_json::json!(keys));
    assert!(app.storage.list_keys().await.unwrap().is_empty());
    let (_, again) = crate::rollback::gc(&app, &["--dry-run", "--grace-secs", "0"]);
    assert_eq!(again["uploads_in_flight"], serde_json::json!([]), "{again}");
    assert_eq!(rows(&app).await, 0);
}

/// A tus upload's one long `PATCH` is stored as 16 MiB parts, the next part sent while S3
/// answers for the last. S3 goes away in the middle: the answer is a 503, the parts S3
/// acknowledged before are kept (in order, none past a failed one), and the upload
/// completes from there once S3 is back, to exactly the bytes sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_mid_patch_keeps_the_parts_before_it_and_the_upload_goes_on() {
    use sha2::Digest;
    const MIB: usize = 1024 * 1024;
    let s3 = FaultProxy::to_s3().await;
    let endpoint = format!("http://{}", s3.addr);
    let app = TestApp::spawn_with(Backend::Production, |s| s.storage.s3.endpoint = endpoint).await;
    let token = app.token_for("publisher").await;
    let mut x: u32 = 0x9e37_79b9;
    let file: Vec<u8> = (0..64 * MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let sha = hex::encode(sha2::Sha256::digest(&file));
    let metadata = format!(
        "name {},version {},platform {},arch {},sha256 {}",
        b64("cut-agent"),
        b64("1.0.0"),
        b64("linux"),
        b64("amd64"),
        b64(&sha)
    );
    let res = app
        .client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", file.len())
        .header("Upload-Metadata", metadata)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();

    // 40 MiB go, S3 answers for what it got, then S3 goes away and the rest follows.
    let host = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        file.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&file[..40 * MIB]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    s3.cut();
    let _ =
        tokio::time::timeout(Duration::from_secs(20), stream.write_all(&file[40 * MIB..])).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("storage_unavailable"), "{text}");

    s3.restore();
    let offset_now = || async {
        let res = app
            .client
            .head(app.url(&location))
            .bearer_auth(&token)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.headers()["upload-offset"]
            .to_str()
            .unwrap()
            .parse::<usize>()
            .unwrap()
    };
    let kept = offset_now().await;
    assert!(
        (16 * MIB..=40 * MIB).contains(&kept) && kept % (16 * MIB) == 0,
        "kept {kept} bytes: whole parts acknowledged before the cut"
    );
    let res = app
        .client
        .patch(app.url(&location))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", kept)
        .header("Content-Type", "application/offset+octet-stream")
        .body(file[kept..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let package: Value = res.json().await.unwrap();
    assert_eq!(package["checksum"], sha.as_str());
    let back = app
        .get(
            &format!("/api/v1/packages/{}/download", package["id"]),
            &token,
        )
        .await
        .bytes()
        .await
        .unwrap();
    assert!(back == file, "the bytes downloaded are the bytes sent");
    let (ok, report) = crate::rollback::gc(&app, &["--grace-secs", "0", "--dry-run"]);
    assert!(ok, "{report}");
    assert_eq!(report["orphans_removed"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["incomplete_removed"],
        serde_json::json!([]),
        "{report}"
    );
}
