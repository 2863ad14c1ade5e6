//! Fleet trust, tried as an attacker holding nothing more than a read credential: an
//! agent's instance uid belongs to the credential that registered it, offers stay within a
//! credential's names, reports about offers the server never made steer no rollout, and
//! every bound is refused with nothing stored.

use agentpkg_fleet::proto::{
    AgentDescription, AgentToServer, AnyValue, KeyValue, PackageStatus, PackageStatuses,
    ServerToAgent, any_value,
};
use agentpkg_store::on_both_backends;
use agentpkg_store::testing::Backend;
use prost::Message;
use serde_json::Value;

use crate::common::{TestApp, create_token, expect_error};

on_both_backends!(
    a_second_credential_cannot_speak_for_a_bound_agent_until_an_admin_releases_it,
    a_limited_token_is_never_offered_a_package_outside_its_names,
    reports_about_offers_the_server_never_made_do_not_pause_a_rollout,
    every_bound_on_agents_is_refused_and_stores_nothing,
    a_cross_site_websocket_upgrade_is_refused,
    revoking_an_agents_token_ends_its_offered_downloads_and_its_websocket,
    a_hundred_thousand_agents_are_filtered_and_paged_by_the_database,
);

const ACCEPTS_PACKAGES: u64 = 0x01 | 0x08 | 0x10;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

/// A first message: the agent describes itself as `service` on linux/amd64.
fn described(uid: [u8; 16], seq: u64, service: &str) -> AgentToServer {
    AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: seq,
        capabilities: ACCEPTS_PACKAGES,
        agent_description: Some(AgentDescription {
            identifying_attributes: vec![kv("service.name", service)],
            non_identifying_attributes: vec![kv("os.type", "linux"), kv("host.arch", "amd64")],
        }),
        ..AgentToServer::default()
    }
}

fn heartbeat(uid: [u8; 16], seq: u64) -> AgentToServer {
    AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: seq,
        capabilities: ACCEPTS_PACKAGES,
        ..AgentToServer::default()
    }
}

/// Sends one message; the HTTP status and the decoded answer.
async fn send(app: &TestApp, token: &str, m: &AgentToServer) -> (u16, ServerToAgent) {
    let res = app
        .client
        .post(app.url("/v1/opamp"))
        .bearer_auth(token)
        .header("Content-Type", "application/x-protobuf")
        .body(m.encode_to_vec())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let answer = ServerToAgent::decode(res.bytes().await.unwrap()).unwrap();
    (status, answer)
}

async fn json(app: &TestApp, path: &str, token: &str) -> Value {
    let res = app.get(path, token).await;
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

async fn assign(app: &TestApp, admin: &str, body: Value) -> i64 {
    let res = app
        .client
        .post(app.url("/api/v1/assignments"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

/// The names offered, in order.
fn offered_names(answer: &ServerToAgent) -> Option<Vec<String>> {
    answer.packages_available.as_ref().map(|p| {
        let mut names: Vec<String> = p.packages.keys().cloned().collect();
        names.sort();
        names
    })
}

async fn a_second_credential_cannot_speak_for_a_bound_agent_until_an_admin_releases_it(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let victim = app.token_for("viewer").await;
    let attacker = app.token_for("viewer").await;
    app.publish(&admin, "collector/1.0.0/linux/amd64", b"collector 1.0.0")
        .await;
    assign(
        &app,
        &admin,
        serde_json::json!({"package": "collector", "selector": {"service.name": "victim"}}),
    )
    .await;
    let uid = [0x42; 16];
    let hex_uid = "42".repeat(16);

    let (status, first) = send(&app, &victim, &described(uid, 0, "victim")).await;
    assert_eq!(status, 200);
    assert!(first.error_response.is_none());
    assert_eq!(offered_names(&first), Some(vec![String::new()]));
    let offered_hash = first.packages_available.unwrap().all_packages_hash;

    // The attacker claims the uid with other attributes: refused, nothing of it stored.
    let (status, refused) = send(&app, &attacker, &described(uid, 1, "nobody")).await;
    assert_eq!(status, 403);
    let error = refused.error_response.expect("an error_response");
    assert!(
        error.error_message.contains("another credential"),
        "{}",
        error.error_message
    );
    assert!(refused.packages_available.is_none());
    // Nor a heartbeat, nor a report.
    let (status, _) = send(&app, &attacker, &heartbeat(uid, 2)).await;
    assert_eq!(status, 403);
    let agent = json(&app, &format!("/api/v1/agents/{hex_uid}"), &admin).await;
    assert_eq!(agent["identifying_attributes"]["service.name"], "victim");
    assert_eq!(agent["sequence_num"], 0);

    // The real agent's next heartbeat, without a description: its offer is unchanged (a
    // full state is asked only for a gap; the set it has is not sent again).
    let (status, next) = send(&app, &victim, &heartbeat(uid, 1)).await;
    assert_eq!(status, 200);
    assert!(next.error_response.is_none());
    let mut report = heartbeat(uid, 2);
    report.package_statuses = Some(PackageStatuses {
        server_provided_all_packages_hash: offered_hash.clone(),
        ..PackageStatuses::default()
    });
    let (_, after) = send(&app, &victim, &report).await;
    assert!(after.packages_available.is_none(), "{after:?}");

    // Audited, naming who tried.
    let refusals = json(&app, "/api/v1/audit?action=agent_refused", &admin).await;
    let refusals = refusals.as_array().unwrap();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(
        refusals[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("viewer-")
    );
    assert_eq!(refusals[0]["subject"], format!("agent {hex_uid}"));
    assert_eq!(refusals[0]["address"], "127.0.0.1", "{refusals:?}");

    // Only an admin releases the binding; then the uid registers anew under whoever sends
    // its full state next.
    expect_error(
        app.delete(&format!("/api/v1/agents/{hex_uid}"), &attacker)
            .await,
        403,
        "forbidden",
    )
    .await;
    let res = app
        .delete(&format!("/api/v1/agents/{hex_uid}"), &admin)
        .await;
    assert_eq!(res.status(), 204);
    expect_error(
        app.get(&format!("/api/v1/agents/{hex_uid}"), &admin).await,
        404,
        "not_found",
    )
    .await;
    let forgotten = json(&app, "/api/v1/audit?action=agent_forget", &admin).await;
    assert_eq!(forgotten.as_array().unwrap().len(), 1, "{forgotten}");
    let (status, moved) = send(&app, &attacker, &described(uid, 0, "victim")).await;
    assert_eq!(status, 200);
    assert!(moved.error_response.is_none());
    // And now the first credential is the stranger.
    let (status, _) = send(&app, &victim, &heartbeat(uid, 1)).await;
    assert_eq!(status, 403);
}

async fn a_limited_token_is_never_offered_a_package_outside_its_names(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    app.publish(&admin, "secret-agent/1.0.0/linux/amd64", b"secret 1.0.0")
        .await;
    app.publish(&admin, "public-agent/1.0.0/linux/amd64", b"public 1.0.0")
        .await;
    let secret = assign(
        &app,
        &admin,
        serde_json::json!({"package": "secret-agent", "selector": {"service.name": "edge"}}),
    )
    .await;
    assign(
        &app,
        &admin,
        serde_json::json!({"package": "public-agent", "offer_as": "addon", "selector": {"service.name": "edge"}}),
    )
    .await;
    let viewer = app.token_for("viewer").await;
    let (_, limited) = create_token(
        &app,
        &viewer,
        serde_json::json!({"name": "limited", "scope": "read", "packages": ["public-*"]}),
    )
    .await;
    // The API hides the package from the token.
    expect_error(
        app.get("/api/v1/packages/secret-agent/versions", &limited)
            .await,
        404,
        "not_found",
    )
    .await;

    // Over OpAMP, claiming the selector's attributes gets only what the token may read.
    let uid = [0x51; 16];
    let (status, answer) = send(&app, &limited, &described(uid, 0, "edge")).await;
    assert_eq!(status, 200);
    assert_eq!(offered_names(&answer), Some(vec!["addon".to_owned()]));
    let file = answer.packages_available.unwrap().packages["addon"]
        .file
        .clone()
        .unwrap();
    assert!(
        file.download_url.contains("/public-agent/"),
        "{}",
        file.download_url
    );
    let agent = json(&app, &format!("/api/v1/agents/{}", "51".repeat(16)), &admin).await;
    let note = agent["offer_note"].as_str().unwrap();
    assert!(
        note.contains(&format!("assignment {secret}"))
            && note.contains("may not read secret-agent"),
        "{note}"
    );

    // An unlimited credential under the same attributes is offered both.
    let (_, answer) = send(&app, &viewer, &described([0x52; 16], 0, "edge")).await;
    assert_eq!(
        offered_names(&answer),
        Some(vec![String::new(), "addon".to_owned()])
    );
}

/// The six real agents (uids 0x60…) report that installing 1.0.0 failed, naming
/// `hash(i)` as the offered package's hash; each message is accepted.
async fn report_failures(app: &TestApp, token: &str, seq: u64, hash: impl Fn(usize) -> Vec<u8>) {
    for i in 0..6u8 {
        let uid = [0x60 + i; 16];
        let report = reporting(uid, seq, "1.0.0", &hash(usize::from(i)), 3);
        let (status, _) = send(app, token, &report).await;
        assert_eq!(status, 200);
    }
}

async fn paused(app: &TestApp, admin: &str, id: i64) -> Value {
    json(app, &format!("/api/v1/assignments/{id}"), admin).await["paused"].clone()
}

async fn agent_count(app: &TestApp, admin: &str) -> usize {
    json(app, "/api/v1/agents", admin)
        .await
        .as_array()
        .unwrap()
        .len()
}

/// A report of `status` for the top-level package, naming `version` and `hash` as offered.
fn reporting(uid: [u8; 16], seq: u64, version: &str, hash: &[u8], status: i32) -> AgentToServer {
    let mut m = heartbeat(uid, seq);
    m.package_statuses = Some(PackageStatuses {
        packages: [(
            String::new(),
            PackageStatus {
                server_offered_version: version.into(),
                server_offered_hash: hash.to_vec(),
                status,
                error_message: if status == 3 {
                    "exit status 3".into()
                } else {
                    String::new()
                },
                ..PackageStatus::default()
            },
        )]
        .into(),
        ..PackageStatuses::default()
    });
    m
}

async fn reports_about_offers_the_server_never_made_do_not_pause_a_rollout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    app.publish(&admin, "collector/1.0.0/linux/amd64", b"collector 1.0.0")
        .await;
    let id = assign(
        &app,
        &admin,
        serde_json::json!({"package": "collector", "version": "1.0.0", "selector": {"service.name": "fleet"}, "max_failure_ratio": 0.2}),
    )
    .await;

    // Six real agents are offered 1.0.0 and install it.
    let real = app.token_for("viewer").await;
    let mut hashes = Vec::new();
    for i in 0..6u8 {
        let uid = [0x60 + i; 16];
        let (_, answer) = send(&app, &real, &described(uid, 0, "fleet")).await;
        let package = answer.packages_available.expect("an offer").packages[""].clone();
        let (status, _) = send(
            &app,
            &real,
            &reporting(uid, 1, &package.version, &package.hash, 0),
        )
        .await;
        assert_eq!(status, 200);
        hashes.push(package.hash);
    }

    // Twenty invented agents under another credential report that 1.0.0 failed, naming the
    // real offer's hash — but the server never offered them anything (they do not accept
    // packages, or are not selected).
    let attacker = app.token_for("viewer").await;
    for i in 0..20u8 {
        let uid = [0x80 + i; 16];
        let mut first = described(uid, 0, if i % 2 == 0 { "fleet" } else { "other" });
        if i % 2 == 0 {
            first.capabilities = 0x01 | 0x10; // reports statuses, accepts no packages
        }
        let (status, answer) = send(&app, &attacker, &first).await;
        assert_eq!(status, 200);
        assert!(answer.packages_available.is_none());
        let mut report = reporting(uid, 1, "1.0.0", &hashes[0], 3);
        report.capabilities = first.capabilities;
        let (status, _) = send(&app, &attacker, &report).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        paused(&app, &admin, id).await,
        Value::Null,
        "invented failures paused it"
    );

    // Real agents reporting failures of a hash the server did not send count for nothing
    // either.
    report_failures(&app, &real, 2, |_| b"forged".to_vec()).await;
    assert_eq!(
        paused(&app, &admin, id).await,
        Value::Null,
        "forged hashes paused it"
    );

    // Real failures of the real offer still pause it, and the pause is audited with the
    // ratio and sample that tripped it.
    report_failures(&app, &real, 3, |i| hashes[i].clone()).await;
    let why = paused(&app, &admin, id).await;
    assert!(
        why.as_str()
            .is_some_and(|w| w.starts_with("paused automatically")),
        "{why}"
    );
    let pauses = json(&app, "/api/v1/audit?action=rollout_pause", &admin).await;
    let pauses = pauses.as_array().unwrap();
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    assert_eq!(pauses[0]["subject"], format!("assignment {id}"));
    assert!(
        pauses[0]["detail"].as_str().unwrap().contains("sample"),
        "{}",
        pauses[0]["detail"]
    );
    // Assignment changes are audited too.
    let created = json(&app, "/api/v1/audit?action=assignment_create", &admin).await;
    assert_eq!(created.as_array().unwrap().len(), 1, "{created}");
    assert_eq!(created[0]["actor"], "admin");
    assert_eq!(created[0]["address"], "127.0.0.1");
    // A resume says so in words.
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/assignments/{id}")))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"paused": false, "rollout_percent": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let changed = json(&app, "/api/v1/audit?action=assignment_change", &admin).await;
    assert_eq!(changed[0]["detail"], "rollout 50 %; resumed", "{changed}");
}

async fn every_bound_on_agents_is_refused_and_stores_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.fleet.max_agents_per_credential = 3;
        s.fleet.max_attributes = 16;
        s.fleet.max_attribute_bytes = 1024;
        s.fleet.max_statuses = 4;
        s.fleet.max_websockets_per_credential = 1;
        s.fleet.max_websockets = 2;
        s.fleet.max_message_bytes = 4096;
    })
    .await;
    let admin = app.admin_token().await;
    let viewer = app.token_for("viewer").await;

    // Too many attributes, too many bytes of them, too many statuses: 413, nothing kept.
    let mut many = described([1; 16], 0, "x");
    many.agent_description
        .as_mut()
        .unwrap()
        .non_identifying_attributes
        .extend((0..20).map(|i| kv(&format!("k{i}"), "v")));
    let (status, answer) = send(&app, &viewer, &many).await;
    assert_eq!(status, 413);
    assert!(
        answer
            .error_response
            .unwrap()
            .error_message
            .contains("fleet.max_attributes")
    );
    let mut large = described([1; 16], 0, "x");
    large
        .agent_description
        .as_mut()
        .unwrap()
        .identifying_attributes[0] = kv("service.name", &"x".repeat(2000));
    let (status, answer) = send(&app, &viewer, &large).await;
    assert_eq!(status, 413);
    assert!(
        answer
            .error_response
            .unwrap()
            .error_message
            .contains("fleet.max_attribute_bytes")
    );
    let mut statuses = reporting([1; 16], 0, "1.0.0", b"h", 0);
    for i in 0..5 {
        statuses
            .package_statuses
            .as_mut()
            .unwrap()
            .packages
            .insert(format!("p{i}"), PackageStatus::default());
    }
    let (status, _) = send(&app, &viewer, &statuses).await;
    assert_eq!(status, 413);
    // A message past fleet.max_message_bytes is refused before it is decoded.
    let mut long = reporting([1; 16], 0, "1.0.0", b"h", 3);
    long.package_statuses
        .as_mut()
        .unwrap()
        .packages
        .get_mut("")
        .unwrap()
        .error_message = "e".repeat(5000);
    let res = app
        .client
        .post(app.url("/v1/opamp"))
        .bearer_auth(&viewer)
        .header("Content-Type", "application/x-protobuf")
        .body(long.encode_to_vec())
        .send()
        .await
        .unwrap();
    let refused = expect_error(res, 413, "payload_too_large").await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4096 bytes"),
        "{refused}"
    );
    assert_eq!(
        agent_count(&app, &admin).await,
        0,
        "nothing of a refused message is kept"
    );

    // Three agents per credential: the fourth is refused (429), the three go on, and
    // another credential has its own three.
    for i in 1..=3u8 {
        let (status, _) = send(&app, &viewer, &described([i; 16], 0, "x")).await;
        assert_eq!(status, 200);
    }
    let (status, answer) = send(&app, &viewer, &described([4; 16], 0, "x")).await;
    assert_eq!(status, 429);
    assert!(
        answer
            .error_response
            .unwrap()
            .error_message
            .contains("fleet.max_agents_per_credential")
    );
    let (status, _) = send(&app, &viewer, &heartbeat([1; 16], 1)).await;
    assert_eq!(status, 200);
    let other = app.token_for("viewer").await;
    let (status, _) = send(&app, &other, &described([4; 16], 0, "x")).await;
    assert_eq!(status, 200);
    assert_eq!(agent_count(&app, &admin).await, 4);

    // One WebSocket per credential here: a second upgrade is refused.
    let addr = app.url("/v1/opamp").replace("http://", "");
    let first = upgrade(&addr, &[format!("Authorization: Bearer {viewer}")]);
    assert!(first.0.starts_with("HTTP/1.1 101"), "{}", first.0);
    let second = upgrade(&addr, &[format!("Authorization: Bearer {viewer}")]);
    assert!(second.0.starts_with("HTTP/1.1 429"), "{}", second.0);
    assert!(second.0.contains("too_many_connections"), "{}", second.0);
    drop(first);
    // Once the first is closed its place is free again.
    let mut again = upgrade(&addr, &[format!("Authorization: Bearer {viewer}")]);
    for _ in 0..50 {
        if again.0.starts_with("HTTP/1.1 101") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        again = upgrade(&addr, &[format!("Authorization: Bearer {viewer}")]);
    }
    assert!(again.0.starts_with("HTTP/1.1 101"), "{}", again.0);
    // Two on this replica in all: another credential's is the second, a third's is refused.
    let theirs = upgrade(&addr, &[format!("Authorization: Bearer {other}")]);
    assert!(theirs.0.starts_with("HTTP/1.1 101"), "{}", theirs.0);
    let third = app.token_for("viewer").await;
    let refused = upgrade(&addr, &[format!("Authorization: Bearer {third}")]);
    assert!(refused.0.starts_with("HTTP/1.1 429"), "{}", refused.0);
    assert!(refused.0.contains("fleet.max_websockets)"), "{}", refused.0);
}

/// Sends a WebSocket upgrade for `/v1/opamp` to `addr` (host:port/v1/opamp) with `headers`;
/// the answer's head (and the body, for a refusal), and the open connection.
fn upgrade(addr: &str, headers: &[String]) -> (String, std::net::TcpStream) {
    use std::io::{Read, Write};
    let (host, path) = addr.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut request = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The head, and for a refusal its short JSON body.
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if text.starts_with("HTTP/1.1 101") && text.contains("\r\n\r\n") {
            break;
        }
        if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
            break;
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), stream)
}

async fn a_cross_site_websocket_upgrade_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = app.token_for("viewer").await;
    let addr = app.url("/v1/opamp").replace("http://", "");
    let host = addr.split_once('/').unwrap().0.to_owned();
    let cookie = format!("Cookie: agentpkg_session={session}");

    // The session cookie from another site's page: refused before the upgrade.
    let (head, _) = upgrade(
        &addr,
        &[cookie.clone(), "Origin: https://evil.example".into()],
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("cross_origin"), "{head}");
    // The cookie with no Origin at all: refused as well.
    let (head, _) = upgrade(&addr, std::slice::from_ref(&cookie));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // From this site's own page: accepted.
    let (head, _) = upgrade(&addr, &[cookie, format!("Origin: http://{host}")]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A bearer credential needs no Origin (agents are not browsers).
    let (head, _) = upgrade(&addr, &[format!("Authorization: Bearer {session}")]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

async fn revoking_an_agents_token_ends_its_offered_downloads_and_its_websocket(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    app.publish(&admin, "collector/1.0.0/linux/amd64", b"collector 1.0.0")
        .await;
    assign(
        &app,
        &admin,
        serde_json::json!({"package": "collector", "selector": {"service.name": "edge"}}),
    )
    .await;
    let viewer = app.token_for("viewer").await;
    let (token_id, token) = create_token(
        &app,
        &viewer,
        serde_json::json!({"name": "fleet", "scope": "read"}),
    )
    .await;
    let (_, answer) = send(&app, &token, &described([0x71; 16], 0, "edge")).await;
    let file = answer.packages_available.expect("an offer").packages[""]
        .file
        .clone()
        .unwrap();
    let header = file.headers.unwrap().headers.remove(0);
    assert_eq!(header.key, "Authorization");
    let download = |app: &TestApp| {
        app.client
            .get(&file.download_url)
            .header("Authorization", header.value.clone())
            .send()
    };
    let res = download(&app).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"collector 1.0.0");
    let addr = app.url("/v1/opamp").replace("http://", "");
    let (head, mut socket) = upgrade(&addr, &[format!("Authorization: Bearer {token}")]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    let res = app
        .delete(&format!("/api/v1/tokens/{token_id}"), &viewer)
        .await;
    assert_eq!(res.status(), 204);
    // Within the credential cache's freshness (1 s), not after fleet.download_ttl_secs.
    let mut last = None;
    for _ in 0..50 {
        let res = download(&app).await.unwrap();
        if res.status() == 401 {
            last = Some(res);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    expect_error(
        last.expect("the download still works"),
        401,
        "token_revoked",
    )
    .await;
    // The WebSocket is closed by the server with 1008 (policy): a close frame, its code
    // first in the payload.
    let frame = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut frame = [0u8; 4];
        socket.read_exact(&mut frame).map(|()| frame)
    })
    .await
    .unwrap()
    .expect("a close frame within the read timeout");
    assert_eq!(frame[0], 0x88, "{frame:?}");
    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1008, "{frame:?}");
}

/// Inserts `n` agents straight into the database: agent `g` (1..=n) has the uid `g` in hex,
/// `service.name` = `s<g % 1000>`, is healthy when `g` is even, and was last seen `g`
/// seconds ago.
fn insert_agents(db_url: &str, n: u32) {
    use diesel::{Connection, RunQueryDsl};
    match agentpkg_store::DatabaseUrl::parse(db_url).unwrap() {
        agentpkg_store::DatabaseUrl::Postgres(url) => {
            let mut c = diesel::PgConnection::establish(&url).unwrap();
            diesel::sql_query(format!(
                "INSERT INTO agents (instance_uid, sequence_num, capabilities, identifying, \
                 non_identifying, health, package_statuses, first_seen, last_seen, connected, \
                 disconnects, offered, owner) \
                 SELECT lpad(to_hex(g), 32, '0'), 0, 0, \
                 '{{\"service.name\":\"s' || (g % 1000) || '\"}}', '{{}}', \
                 '{{\"healthy\":' || (g % 2 = 0) || ',\"status\":\"\",\"last_error\":\"\"}}', \
                 '[]', now() AT TIME ZONE 'UTC', (now() AT TIME ZONE 'UTC') - g * interval '1 second', \
                 true, 0, '{{}}', 'user:1' FROM generate_series(1, {n}) AS g"
            ))
            .execute(&mut c)
            .unwrap();
        }
        agentpkg_store::DatabaseUrl::Sqlite(path) => {
            let mut c = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            diesel::sql_query(format!(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {n}) \
                 INSERT INTO agents (instance_uid, sequence_num, capabilities, identifying, \
                 non_identifying, health, package_statuses, first_seen, last_seen, connected, \
                 disconnects, offered, owner) \
                 SELECT printf('%032x', n), 0, 0, '{{\"service.name\":\"s' || (n % 1000) || '\"}}', \
                 '{{}}', '{{\"healthy\":' || iif(n % 2 = 0, 'true', 'false') || \
                 ',\"status\":\"\",\"last_error\":\"\"}}', '[]', datetime('now'), \
                 datetime('now', '-' || n || ' seconds'), 1, 0, '{{}}', 'user:1' FROM g"
            ))
            .execute(&mut c)
            .unwrap();
        }
    }
}

async fn a_hundred_thousand_agents_are_filtered_and_paged_by_the_database(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    insert_agents(&app.db_url(), 100_000);
    let page = |query: &'static str| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let res = app.get(&format!("/api/v1/agents?{query}"), &admin).await;
            assert_eq!(res.status(), 200, "{query}");
            let total: u64 = res.headers()["x-total-count"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let items: Vec<Value> = res.json().await.unwrap();
            let uids: Vec<String> = items
                .iter()
                .map(|a| a["instance_uid"].as_str().unwrap().to_owned())
                .collect();
            (total, uids)
        }
    };
    let uid = |g: u32| format!("{g:032x}");
    // One name in a thousand: 100 agents, most recently seen first.
    let (total, uids) = page("attributes=service.name=s7&per_page=3").await;
    assert_eq!(total, 100);
    assert_eq!(uids, [uid(7), uid(1007), uid(2007)]);
    // With health: the odd ones of those are unhealthy.
    let (total, uids) = page("attributes=service.name=s7&healthy=false&per_page=2&page=2").await;
    assert_eq!(total, 100);
    assert_eq!(uids, [uid(2007), uid(3007)]);
    let (total, _) = page("attributes=service.name=s8&healthy=false").await;
    assert_eq!(total, 0);
    // A value is matched exactly: not case-blind, not a prefix.
    assert_eq!(page("attributes=service.name=S7").await.0, 0);
    assert_eq!(page("attributes=service.name=s").await.0, 0);
    // The last page of everything.
    let (total, uids) = page("per_page=100&page=1000").await;
    assert_eq!(total, 100_000);
    assert_eq!(uids.len(), 100);
    assert_eq!(uids.last(), Some(&uid(100_000)));
}
