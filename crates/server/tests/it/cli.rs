//! The binary as a newcomer and an operator use it: no configuration at all, a config file,
//! `migrate`, `create-user`, and start-up errors that say what to fix.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agentpkg-server");

pub(crate) fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .env("AGENTPKG__SERVER__BIND", "127.0.0.1:0")
        .env("AGENTPKG__SERVER__WORKERS", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("AGENTPKG__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub(crate) struct Running {
    child: Child,
    pub(crate) port: u16,
    log: Vec<String>,
    /// Log lines after start-up.
    later: Option<std::sync::mpsc::Receiver<String>>,
}

impl Running {
    /// Every log line so far.
    pub(crate) fn all_log(&mut self) -> Vec<String> {
        if let Some(rx) = &self.later {
            self.log.extend(rx.try_iter());
        }
        self.log.clone()
    }

    pub(crate) fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// The most memory the process has had resident so far (`VmHWM`), in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in {status}"))
    }

    /// Waits (bounded) for the process to exit.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server and reads its log (on stderr) until it says where it listens.
pub(crate) fn start(mut cmd: Command) -> Running {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Owned by `Running` from here, so the process is killed and reaped on every path.
    let mut server = Running {
        child,
        port: 0,
        log: Vec::new(),
        later: None,
    };
    let stderr = server.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the test stops listening: a closed pipe would fail the
        // server's log writes.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("server exited with {status}: {:#?}", server.log);
            }
            continue;
        };
        server.log.push(line.clone());
        // Text logs say port=N; JSON logs "port":N.
        if line.contains("listening")
            && let Some(port) = line
                .split("port=")
                .nth(1)
                .or_else(|| line.split("\"port\":").nth(1))
        {
            let digits: String = port.chars().take_while(char::is_ascii_digit).collect();
            server.port = digits.parse().unwrap();
            server.later = Some(rx);
            return server;
        }
    }
    panic!("server did not start: {:#?}", server.log);
}

fn generated_password(log: &[String]) -> Option<String> {
    log.iter().find_map(|l| {
        let rest = l.split("generated password: ").nth(1)?;
        Some(rest.split_whitespace().next()?.to_owned())
    })
}

/// A token for `user`, or a panic.
pub(crate) async fn token(port: u16, user: &str, password: &str) -> String {
    let res = login(port, user, password).await;
    assert_eq!(res.status(), 200, "login as {user}");
    res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Starts the server with a known admin password and a shutdown grace period, and logs in.
async fn start_for_shutdown(dir: &Path, grace_secs: u64) -> (Running, String) {
    let mut cmd = command(dir);
    cmd.env("AGENTPKG__AUTH__ADMIN_PASSWORD", "a long admin password")
        .env(
            "AGENTPKG__SERVER__SHUTDOWN_TIMEOUT_SECS",
            grace_secs.to_string(),
        );
    let server = start(cmd);
    let token = token(server.port, "admin", "a long admin password").await;
    (server, token)
}

/// A form upload of `name` 1.0.0 for linux/amd64, the file field first (as the seed's
/// client sends it).
pub(crate) async fn upload_file_first(
    port: u16,
    token: &str,
    name: &str,
    file: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(file).file_name("agent"),
        )
        .text("name", name.to_owned())
        .text("version", "1.0.0")
        .text("platform", "linux")
        .text("arch", "amd64");
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/packages"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
}

async fn login(port: u16, user: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/auth/login"))
        .json(&serde_json::json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn with_no_configuration_it_runs_on_sqlite_and_a_directory_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(command(dir.path()));
    let password =
        generated_password(&server.log).expect("a generated admin password is printed once");
    let res = login(server.port, "admin", &password).await;
    assert_eq!(res.status(), 200);
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let client = reqwest::Client::new();
    let res = upload_file_first(server.port, &token, "opamp-agent", b"agent".to_vec())
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let data = dir.path().join("data");
    assert!(data.join("agentpkg.db").is_file());
    assert!(data.join("packages").is_dir());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("jwt-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the signing secret is readable by others");
    }
    drop(server);

    // Restarted: no new admin, the same password, and the old token still valid because
    // the signing secret was kept.
    let server = start(command(dir.path()));
    assert!(generated_password(&server.log).is_none());
    assert_eq!(login(server.port, "admin", &password).await.status(), 200);
    let res = client
        .get(format!("http://127.0.0.1:{}/api/v1/packages", server.port))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Vec<Value>>().await.unwrap().len(), 1);
    drop(server);

    // A password configured after the first start changes nothing, and says so; the right
    // one, nothing. A variable with one underscore is named, with the spelling that works.
    let warned = |log: &[String]| {
        log.iter()
            .any(|l| l.contains("auth.admin_password is set, but the user 'admin'"))
    };
    let mut cmd = command(dir.path());
    cmd.env(
        "AGENTPKG__AUTH__ADMIN_PASSWORD",
        "another-password-of-24-chars",
    )
    .env("AGENTPKG_SERVER_BIND", "127.0.0.1:1");
    let server = start(cmd);
    assert!(warned(&server.log), "{:?}", server.log);
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains("AGENTPKG_SERVER_BIND is not read")
                && l.contains("AGENTPKG__SERVER__BIND")),
        "{:?}",
        server.log
    );
    assert_eq!(login(server.port, "admin", &password).await.status(), 200);
    drop(server);
    let mut cmd = command(dir.path());
    cmd.env("AGENTPKG__AUTH__ADMIN_PASSWORD", &password);
    let server = start(cmd);
    assert!(!warned(&server.log), "{:?}", server.log);
}

#[tokio::test]
async fn operators_migrate_and_create_users_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("custom.toml");
    std::fs::write(
        &config,
        "[database]\nurl = \"meta/registry.db\"\n[storage.fs]\nroot = \"blobs\"\n",
    )
    .unwrap();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = command(dir.path())
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let out = run(&["migrate"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("meta/registry.db").is_file());

    let out = run(
        &[
            "create-user",
            "ci-bot",
            "--role",
            "publisher",
            "--password-stdin",
        ],
        Some("a long enough password\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created ci-bot (publisher)"));

    let out = run(
        &[
            "create-user",
            "ci-bot",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        Some("a long enough password\n"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let out = run(&["create-user", "fleet", "--role", "root"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("role"));

    let out = run(&["create-user", "fleet", "--role", "viewer"], None);
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let fleet_password = printed
        .rsplit("password: ")
        .next()
        .unwrap()
        .trim()
        .to_owned();

    let mut cmd = command(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .env("AGENTPKG__AUTH__ADMIN_PASSWORD", "not used: users exist");
    let server = start(cmd);
    assert!(
        generated_password(&server.log).is_none(),
        "users exist, so no admin is created"
    );
    assert_eq!(
        login(server.port, "ci-bot", "a long enough password")
            .await
            .status(),
        200
    );
    assert_eq!(
        login(server.port, "fleet", &fleet_password).await.status(),
        200
    );

    // A pipeline's first token, made without signing in; its secret alone on stdout.
    let out = run(&["create-token", "ci-bot", "--scope", "admin"], None);
    assert!(!out.status.success(), "a token above the user's role");
    let out = run(
        &[
            "create-token",
            "ci-bot",
            "--scope",
            "publish",
            "--packages",
            "opamp-*,otelcol",
            "--name",
            "pipeline",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(secret.starts_with("apk_") && secret.len() == 36, "{secret}");
    let client = reqwest::Client::new();
    let put = |name: &str| {
        client
            .put(format!(
                "http://127.0.0.1:{}/api/v1/packages/{name}/1.0.0/linux/amd64",
                server.port
            ))
            .bearer_auth(&secret)
            .body("agent")
            .send()
    };
    assert_eq!(put("opamp-agent").await.unwrap().status(), 201);
    assert_eq!(put("nginx").await.unwrap().status(), 403);
    let tokens: Vec<Value> = client
        .get(format!("http://127.0.0.1:{}/api/v1/tokens", server.port))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["name"], "pipeline");
    assert_eq!(
        tokens[0]["packages"],
        serde_json::json!(["opamp-*", "otelcol"])
    );
    drop(server);

    let out = run(&["migrate", "--revert-all"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn start_up_errors_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .env(
            "AGENTPKG__DATABASE__URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.jwt_secret is required"));

    let out = command(dir.path())
        .env("AGENTPKG__AUTH__JWT_SECRET", "too short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32 bytes"));

    std::fs::write(
        dir.path().join("agentpkg.toml"),
        "[upload]\nmax_bytes = 1\n",
    )
    .unwrap();
    let out = command(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_bytes"));
    std::fs::remove_file(dir.path().join("agentpkg.toml")).unwrap();

    // A grace below the safe minimum would let gc take an upload's bytes.
    let out = command(dir.path())
        .env("AGENTPKG__GC__GRACE_SECS", "5")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gc.grace_secs must be at least 60"));

    for url in ["postgress://u:hunter2@db/agentpkg", "mysql://db/agentpkg"] {
        let out = command(dir.path())
            .env("AGENTPKG__DATABASE__URL", url)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("database.url: unsupported scheme"),
            "{stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
        let name = url.split("://").nth(1).unwrap().rsplit('/').next().unwrap();
        assert!(
            !dir.path().join(url).exists() && !dir.path().join(name).exists(),
            "{url} became a SQLite file"
        );
    }

    let out = command(dir.path())
        .env("AGENTPKG__STORAGE__BACKEND", "s3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage.s3."));
}

#[tokio::test]
async fn the_server_survives_its_log_pipe_closing() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .env("AGENTPKG__AUTH__ADMIN_PASSWORD", "a long admin password")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read up to the "listening" line, then close the pipe, as a log collector that
    // restarts would.
    let port = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(port) = line.split("port=").nth(1) {
                return port.split_whitespace().next()?.parse::<u16>().ok();
            }
        }
        None
    })
    .join()
    .unwrap();
    let mut server = Running {
        child,
        port: port.expect("the server started"),
        log: Vec::new(),
        later: None,
    };
    // A login writes a log line into the closed pipe.
    assert_eq!(
        login(server.port, "admin", "a long admin password")
            .await
            .status(),
        200
    );
    for _ in 0..3 {
        let res = reqwest::get(format!("http://127.0.0.1:{}/healthz", server.port))
            .await
            .expect("the server still answers after its log pipe closed");
        assert_eq!(res.status(), 200);
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
}

#[tokio::test]
async fn no_secret_token_or_password_ever_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let admin_password = "admin-secret-password-123";
    let jwt_secret = "jwt-secret-value-which-is-long-enough-1234";
    let mut cmd = command(dir.path());
    cmd.env("AGENTPKG__AUTH__ADMIN_PASSWORD", admin_password)
        .env("AGENTPKG__AUTH__JWT_SECRET", jwt_secret)
        .env("AGENTPKG__LOG__LEVEL", "trace")
        .env("AGENTPKG__LOG__FORMAT", "json");
    let mut server = start(cmd);
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::new();
    let admin_token = token(server.port, "admin", admin_password).await;
    let user_password = "user-secret-password-456";
    let res = client
        .post(format!("{base}/api/v1/users"))
        .bearer_auth(&admin_token)
        .json(
            &serde_json::json!({"username": "ci", "password": user_password, "role": "publisher"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let user_token = token(server.port, "ci", user_password).await;
    assert_eq!(
        login(server.port, "ci", "wrong-secret-password-789")
            .await
            .status(),
        401
    );
    let res = client
        .put(format!("{base}/api/v1/packages/a/1.0.0/linux/amd64"))
        .bearer_auth(&user_token)
        .body("bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // The same coordinates again, file first: stored, then refused and deleted.
    let res = upload_file_first(server.port, &user_token, "a", b"other bytes".to_vec())
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let res = client
        .get(format!("{base}/api/v1/packages"))
        .header("Authorization", format!("Bearer {admin_token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    server.signal("TERM");
    server
        .wait_exit(Duration::from_secs(10))
        .expect("the server stops");
    std::thread::sleep(Duration::from_millis(200));
    let log = server.all_log().join("\n");
    assert!(
        log.contains("package published"),
        "the log was captured: {log}"
    );
    // Every upload's coordinates, size, checksum and outcome are in the log.
    let events: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let event = |message: &str| {
        events
            .iter()
            .find(|e| e["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} in {log}"))["fields"]
            .clone()
    };
    let published = event("package published");
    assert_eq!(
        (published["name"].as_str(), published["version"].as_str()),
        (Some("a"), Some("1.0.0"))
    );
    assert_eq!(published["size"], 5);
    assert_eq!(published["sha256"], sha256_hex(b"bytes"));
    let refused = event("package refused; its bytes are deleted");
    assert_eq!(refused["platform"], "linux");
    assert_eq!(refused["size"], 11);
    assert_eq!(refused["sha256"], sha256_hex(b"other bytes"));
    assert!(
        refused["outcome"].as_str().unwrap().contains("exists"),
        "{refused}"
    );
    for secret in [
        admin_password,
        jwt_secret,
        user_password,
        "wrong-secret-password-789",
        &admin_token,
        &user_token,
    ] {
        assert!(
            !log.contains(secret),
            "the log contains a secret ({}…)",
            &secret[..8]
        );
    }
    // Nor the signature part of a token on its own.
    for token in [&admin_token, &user_token] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature));
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sends the head and the first half of a raw PUT upload of `total` bytes.
async fn start_slow_upload(port: u16, token: &str, total: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "PUT /api/v1/packages/slow/1.0.0/linux/amd64 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![7u8; total / 2]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

#[tokio::test]
async fn sigterm_lets_an_upload_in_flight_finish_and_refuses_new_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (mut server, token) = start_for_shutdown(dir.path(), 20).await;
    let total = 4 * 1024 * 1024;
    let mut upload = start_slow_upload(server.port, &token, total).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .is_err(),
        "a stopping server still accepts connections"
    );
    upload
        .write_all(&vec![7u8; total - total / 2])
        .await
        .unwrap();
    let mut response = Vec::new();
    upload.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("the server stops");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn an_upload_cut_off_by_shutdown_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, token) = start_for_shutdown(dir.path(), 1).await;
    // Half an upload, then the client stalls past the grace period.
    let _stalled = start_slow_upload(server.port, &token, 4 * 1024 * 1024).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    server
        .wait_exit(Duration::from_secs(15))
        .expect("the server stops after its grace period");
    let packages = dir.path().join("data/packages");
    let mut left = Vec::new();
    for sub in ["packages", ".tmp"] {
        if let Ok(entries) = std::fs::read_dir(packages.join(sub)) {
            left.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    // And no row: a restarted server lists nothing.
    let mut cmd = command(dir.path());
    cmd.env("AGENTPKG__AUTH__ADMIN_PASSWORD", "a long admin password");
    let server = start(cmd);
    let res = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/api/v1/packages", server.port))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Vec<Value>>().await.unwrap().len(), 0);
}

#[tokio::test]
async fn the_example_configuration_starts_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/agentpkg.toml");
    let mut cmd = command(dir.path());
    // Every key in the file must be a real one (unknown keys stop the server).
    cmd.arg("--config").arg(&example);
    let server = start(cmd);
    let res = reqwest::get(format!("http://127.0.0.1:{}/readyz", server.port))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
