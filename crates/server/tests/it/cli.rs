//! The binary as a newcomer and an operator use it: no configuration at all, a config file,
//! `migrate`, `create-user`, and start-up errors that say what to fix.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agentpkg-server");

fn command(dir: &Path) -> Command {
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

struct Running {
    child: Child,
    port: u16,
    log: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server and reads its log (on stderr) until it says where it listens.
fn start(mut cmd: Command) -> Running {
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
        if line.contains("listening")
            && let Some(port) = line.split("port=").nth(1)
        {
            server.port = port.split_whitespace().next().unwrap().parse().unwrap();
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
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"agent".to_vec()).file_name("agent"),
        )
        .text("name", "opamp-agent")
        .text("version", "1.0.0")
        .text("platform", "linux")
        .text("arch", "amd64");
    let res = client
        .post(format!("http://127.0.0.1:{}/api/v1/packages", server.port))
        .bearer_auth(&token)
        .multipart(form)
        .send()
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
