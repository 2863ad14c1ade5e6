//! Offers pushed over WebSocket: an agent connected to one replica, sending nothing, gets
//! its new desired set when an assignment is made there, when a version is published or
//! yanked through another replica, and nothing when nothing it is offered changed. The
//! server pings, keeps a peer that answers, and disconnects one that went silent.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use agentpkg_store::on_both_backends;
use agentpkg_store::testing::Backend;
use serde_json::Value;

use crate::common::{TestApp, tools_dir};

on_both_backends!(
    offers_are_pushed_to_websocket_agents_when_their_desired_set_changes,
    a_websocket_peer_that_stops_answering_is_disconnected,
);

/// The push agent's printed frames, one JSON value each, as they come.
struct Frames {
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
    child: std::process::Child,
}

impl Frames {
    fn start(app: &TestApp, token: &str, uid: &str, pushes: u32) -> Self {
        let python = tools_dir().join("venv/bin/python");
        assert!(python.exists(), "run ./scripts/tools.sh first");
        let mut child = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opamp/ws_push_agent.py"))
            .arg(format!("{}/v1/opamp", app.base.replacen("http", "ws", 1)))
            .arg(token)
            .arg(uid)
            .arg(pushes.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        Self { lines, child }
    }

    async fn next(&mut self, what: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(30), self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no frame for {what} within 30 s"))
            .unwrap_or_else(|| panic!("the agent ended before {what}"))
    }

    /// The next frame, which must be a pushed offer; then the answer to the agent's
    /// report that it installed it. Returns (versions offered, all-packages hash).
    async fn pushed(&mut self, what: &str) -> (Value, String) {
        let frame = self.next(what).await;
        assert_eq!(frame["pushed"], true, "{what}: {frame}");
        assert_eq!(frame["header"], 0, "{frame}");
        let answer = self.next(&format!("the answer after {what}")).await;
        assert_eq!(answer["pushed"], false, "{answer}");
        assert_eq!(
            answer["offered"],
            Value::Null,
            "installed as offered: {answer}"
        );
        (
            frame["offered"].clone(),
            frame["all_hash"].as_str().unwrap().to_owned(),
        )
    }
}

async fn offers_are_pushed_to_websocket_agents_when_their_desired_set_changes(backend: Backend) {
    // Pings every second: the agent (whose library answers them) stays connected through
    // a test longer than three intervals. Request bodies must keep up 1 MiB/s after one
    // second: a WebSocket, quiet between messages, is not held to that.
    let app = TestApp::spawn_with(backend, |s| {
        s.fleet.offer_watch_ms = 100;
        s.fleet.websocket_ping_secs = 1;
        s.server.body_rate_grace_secs = 1;
        s.server.body_min_rate_bytes = 1 << 20;
    })
    .await;
    let admin = app.admin_token().await;
    let viewer = app.token_for("viewer").await;
    app.publish(&admin, "wsagent/1.0.0/linux/amd64", b"ws agent 1.0.0")
        .await;
    let uid = "c0".repeat(16);
    let mut frames = Frames::start(&app, &viewer, &uid, 3);

    // Nothing selects it yet: its first answer offers nothing.
    let first = frames.next("the answer to the full state").await;
    assert_eq!(
        (
            &first["pushed"],
            &first["offered"],
            first["instance_uid"].as_str()
        ),
        (&Value::Bool(false), &Value::Null, Some(uid.as_str())),
        "{first}"
    );

    // An assignment made on this replica reaches it at once.
    let res = app
        .client
        .post(app.url("/api/v1/assignments"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({
            "package": "wsagent", "version": "latest",
            "selector": {"service.name": "ws-push"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (offered, first_hash) = frames.pushed("the assignment").await;
    assert_eq!(offered, serde_json::json!({"": "1.0.0"}));

    // A version published through another replica: this one reads the fleet revision and
    // pushes it. A description edited there changes no offer, so pushes nothing.
    let second = agentpkg_server::Application::build(app.settings.clone())
        .await
        .unwrap();
    let other = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    tokio::spawn(second.run_until_stopped());
    let res = app
        .client
        .put(format!("{other}/api/v1/packages/wsagent/1.1.0/linux/amd64"))
        .bearer_auth(&admin)
        .body(&b"ws agent 1.1.0"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let newer: Value = res.json().await.unwrap();
    let (offered, newer_hash) = frames.pushed("the new version").await;
    assert_eq!(offered, serde_json::json!({"": "1.1.0"}));
    assert_ne!(newer_hash, first_hash);
    let edit = |body: Value| {
        app.client
            .patch(format!("{other}/api/v1/packages/{}", newer["id"]))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    assert_eq!(
        edit(serde_json::json!({"description": "renamed"}))
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Yanked there: back to 1.0.0, with the very hash first offered.
    assert_eq!(
        edit(serde_json::json!({"is_active": false}))
            .await
            .unwrap()
            .status(),
        200
    );
    let (offered, hash) = frames.pushed("the yank").await;
    assert_eq!(offered, serde_json::json!({"": "1.0.0"}));
    assert_eq!(hash, first_hash);
    let status = frames.child.wait().unwrap();
    assert!(status.success());
    assert!(frames.lines.recv().await.is_none(), "nothing else was sent");
    handle.stop(true).await;

    let agent: Value = app
        .get(&format!("/api/v1/agents/{uid}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(agent["offered_hash"], first_hash.as_str(), "{agent}");
    assert_eq!(agent["package_statuses"][0]["status"], "installed");
    assert_eq!(agent["package_statuses"][0]["agent_has_version"], "1.0.0");
    assert_eq!(agent["connected"], false);
}

/// Opens an OpAMP WebSocket by hand, sends one message, reads its answer, then answers
/// nothing (no pongs): a peer whose end went away without closing.
fn silent_peer(addr: &str, token: &str, uid: &[u8]) -> std::net::TcpStream {
    use prost::Message;
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET /v1/opamp HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut payload = vec![0u8];
    agentpkg_fleet::proto::AgentToServer {
        instance_uid: uid.to_vec(),
        capabilities: 1,
        ..Default::default()
    }
    .encode(&mut payload)
    .unwrap();
    assert!(payload.len() < 126);
    // A final binary frame, masked (as a client must) with the key 0: bytes unchanged.
    let mut frame = vec![0x82, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(&payload);
    tcp.write_all(&frame).unwrap();
    let mut answer = [0u8; 2];
    tcp.read_exact(&mut answer).unwrap();
    assert_eq!(answer[0], 0x82, "a binary frame answers");
    assert!(answer[1] < 126);
    let mut message = vec![0u8; usize::from(answer[1])];
    tcp.read_exact(&mut message).unwrap();
    tcp
}

async fn a_websocket_peer_that_stops_answering_is_disconnected(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.fleet.websocket_ping_secs = 1).await;
    let viewer = app.token_for("viewer").await;
    let uid = [0xd0u8; 16];
    let addr = app.base.trim_start_matches("http://").to_owned();
    let token = viewer.clone();
    let tcp = tokio::task::spawn_blocking(move || silent_peer(&addr, &token, &uid))
        .await
        .unwrap();
    let path = format!("/api/v1/agents/{}", hex::encode(uid));
    let agent: Value = app.get(&path, &viewer).await.json().await.unwrap();
    assert_eq!(agent["connected"], true, "{agent}");
    let started = std::time::Instant::now();
    loop {
        let agent: Value = app.get(&path, &viewer).await.json().await.unwrap();
        if agent["connected"] == false {
            assert_eq!(agent["disconnects"], 1, "{agent}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still connected: {agent}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Not before three silent intervals (pings every second).
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // The server's last frames: pings, then a close with "going away" (1001).
    let frames = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut tcp = tcp;
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest);
        rest
    })
    .await
    .unwrap();
    let close = frames
        .windows(4)
        .position(|w| w[0] == 0x88 && w[1] == 2)
        .map(|i| u16::from_be_bytes([frames[i + 2], frames[i + 3]]));
    assert_eq!(close, Some(1001), "{frames:?}");
    assert!(frames.starts_with(&[0x89, 0]), "pinged first: {frames:?}");
}
