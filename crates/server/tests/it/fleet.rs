//! The registry as an OpAMP server: OpenTelemetry's Python OpAMP client connects with a
//! token and is recorded; sequence gaps ask for the full state; hostile requests are
//! refused and store nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use agentpkg_fleet::proto::{
    AgentDescription, AgentToServer, AnyValue, KeyValue, ServerToAgent, ServerToAgentFlags,
    any_value,
};
use agentpkg_store::on_both_backends;
use agentpkg_store::testing::Backend;
use prost::Message;
use serde_json::Value;

use crate::common::{TestApp, expect_error};

on_both_backends!(
    the_python_opamp_client_is_recorded_its_heartbeat_seen_and_its_disconnect_kept,
    sequence_gaps_ask_for_the_full_state_and_hostile_requests_store_nothing,
    assigned_builds_are_offered_per_platform_downloaded_checked_and_reported,
    a_partial_rollout_grows_by_adding_agents_and_pauses_itself_on_failures,
    the_node_opamp_client_is_recorded_and_its_heartbeats_seen,
    the_websocket_transport_frames_messages_and_records_a_lost_connection,
);

fn tools() -> PathBuf {
    let tools = crate::common::tools_dir();
    assert!(
        tools.join("venv/bin/python").exists(),
        "the OpAMP clients are missing from {}: run ./scripts/tools.sh",
        tools.display()
    );
    tools
}

async fn agents(app: &TestApp, token: &str) -> Vec<Value> {
    let res = app.get("/api/v1/agents", token).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn the_python_opamp_client_is_recorded_its_heartbeat_seen_and_its_disconnect_kept(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let viewer = app.token_for("viewer").await;
    let out = Command::new(tools().join("venv/bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opamp/python_agent.py"))
        .arg(app.url("/v1/opamp"))
        .arg(&viewer)
        .arg("otelcol")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 3, "{answers:?}");
    let uid = answers[0]["sent_uid"].as_str().unwrap().to_owned();
    for answer in &answers {
        // Echoed, AcceptsStatus | OffersPackages | AcceptsPackagesStatus, nothing asked.
        assert_eq!(answer["instance_uid"], uid.as_str(), "{answer}");
        assert_eq!(answer["capabilities"], 0x01 | 0x08 | 0x10, "{answer}");
        assert_eq!(answer["flags"], 0, "{answer}");
        assert_eq!(answer["error"], Value::Null, "{answer}");
    }

    let listed = agents(&app, &viewer).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let agent = &listed[0];
    assert_eq!(agent["instance_uid"], uid.as_str());
    assert_eq!(agent["identifying_attributes"]["service.name"], "otelcol");
    assert_eq!(
        agent["identifying_attributes"]["service.instance.id"],
        "i-1"
    );
    assert_eq!(agent["non_identifying_attributes"]["os.type"], "linux");
    // ReportsStatus | AcceptsPackages | ReportsPackageStatuses.
    assert_eq!(agent["capabilities"], 0x01 | 0x08 | 0x10);
    assert_eq!(agent["sequence_num"], 2);
    // The heartbeat came 1.2 s after the first message: last_seen moved.
    let at =
        |field: &str| chrono::DateTime::parse_from_rfc3339(agent[field].as_str().unwrap()).unwrap();
    assert!(
        at("last_seen") - at("first_seen") >= chrono::Duration::milliseconds(1000),
        "{agent}"
    );
    assert_eq!(agent["connected"], false);
    assert_eq!(agent["disconnects"], 1);
    assert!(agent["disconnected_at"].is_string());
    let one = app.get(&format!("/api/v1/agents/{uid}"), &viewer).await;
    assert_eq!(one.status(), 200);
    assert_eq!(
        one.json::<Value>().await.unwrap()["instance_uid"],
        uid.as_str()
    );
}

pub(crate) fn message(uid: &[u8], seq: u64, described: bool) -> AgentToServer {
    AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: seq,
        capabilities: 1,
        agent_description: described.then(|| AgentDescription {
            identifying_attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("scripted".into())),
                }),
            }],
            non_identifying_attributes: vec![],
        }),
        ..AgentToServer::default()
    }
}

async fn post(
    app: &TestApp,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/v1/opamp"))
        .header("Content-Type", content_type)
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

pub(crate) async fn send(app: &TestApp, token: &str, m: &AgentToServer) -> ServerToAgent {
    let res = post(
        app,
        Some(token),
        "application/x-protobuf",
        m.encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/x-protobuf"
    );
    ServerToAgent::decode(res.bytes().await.unwrap()).unwrap()
}

async fn sequence_gaps_ask_for_the_full_state_and_hostile_requests_store_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let viewer = app.token_for("viewer").await;
    let protobuf = "application/x-protobuf";
    let valid = message(&[7; 16], 0, true).encode_to_vec();

    // Refused before anything is read or stored.
    expect_error(
        post(&app, None, protobuf, valid.clone()).await,
        401,
        "missing_token",
    )
    .await;
    expect_error(
        post(&app, Some(&viewer), "application/json", valid.clone()).await,
        415,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        post(
            &app,
            Some(&viewer),
            protobuf,
            b"\xff\xff\xff not protobuf".to_vec(),
        )
        .await,
        400,
        "invalid_protobuf",
    )
    .await;
    expect_error(
        post(&app, Some(&viewer), protobuf, vec![0u8; 2 * 1024 * 1024]).await,
        413,
        "payload_too_large",
    )
    .await;
    // A bad instance uid: an error_response, as the protocol answers it.
    let answer = send(&app, &viewer, &message(&[1, 2, 3], 0, true)).await;
    let error = answer.error_response.expect("an error_response");
    assert_eq!(error.r#type, 1, "BadRequest");
    assert!(
        error.error_message.contains("instance_uid"),
        "{}",
        error.error_message
    );
    assert!(agents(&app, &viewer).await.is_empty(), "nothing is stored");

    // An agent the server does not know, without its description: report it all.
    let full = ServerToAgentFlags::ReportFullState as u64;
    let uid = [9u8; 16];
    assert_eq!(
        send(&app, &viewer, &message(&uid, 5, false)).await.flags & full,
        full
    );
    assert_eq!(
        send(&app, &viewer, &message(&uid, 6, true)).await.flags & full,
        0
    );
    // The next number, or the same again (a retry): nothing asked.
    assert_eq!(
        send(&app, &viewer, &message(&uid, 7, false)).await.flags & full,
        0
    );
    assert_eq!(
        send(&app, &viewer, &message(&uid, 7, false)).await.flags & full,
        0
    );
    // Those were heartbeats that changed nothing: not written yet (they are, in a batch,
    // every fleet.seen_flush_secs), so the row still holds the message before them.
    assert_eq!(agents(&app, &viewer).await[0]["sequence_num"], 6);
    // A gap: report it all.
    assert_eq!(
        send(&app, &viewer, &message(&uid, 10, false)).await.flags & full,
        full
    );
    let listed = agents(&app, &viewer).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["instance_uid"], "09".repeat(16));
    assert_eq!(
        listed[0]["identifying_attributes"]["service.name"],
        "scripted"
    );
    assert_eq!(listed[0]["sequence_num"], 10);

    // A status whose strings carry NUL (valid in protobuf, not in PostgreSQL's text) is
    // kept, the NUL replaced.
    let mut statuses = message(&uid, 11, false);
    statuses.package_statuses = Some(agentpkg_fleet::proto::PackageStatuses {
        packages: [(
            "a\0b".to_owned(),
            agentpkg_fleet::proto::PackageStatus {
                name: "a\0b".into(),
                error_message: "bad\0byte".into(),
                status: 3,
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    });
    assert!(
        send(&app, &viewer, &statuses)
            .await
            .error_response
            .is_none()
    );
    let failing = app
        .get("/api/v1/agents?package_status=install_failed", &viewer)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        failing[0]["package_statuses"][0]["error_message"],
        "bad\0byte"
    );

    // The fleet API's own refusals.
    expect_error(
        app.get("/api/v1/agents/not-a-uid", &viewer).await,
        400,
        "invalid_field",
    )
    .await;
    expect_error(
        app.get(&format!("/api/v1/agents/{}", "ab".repeat(16)), &viewer)
            .await,
        404,
        "not_found",
    )
    .await;
}

/// Runs the scripted agent and returns its report.
fn scripted(app_base: &str, token: &str, uid: &str, os: &str, arch: &str, fail: bool) -> Value {
    scripted_with(app_base, token, uid, os, arch, fail, None)
}

fn scripted_with(
    app_base: &str,
    token: &str,
    uid: &str,
    os: &str,
    arch: &str,
    fail: bool,
    keyring: Option<&Path>,
) -> Value {
    let keyring = keyring.map(|k| k.display().to_string());
    let env: Vec<(&str, &str)> = keyring
        .iter()
        .map(|k| ("AGENT_KEYRING", k.as_str()))
        .collect();
    scripted_env(app_base, token, uid, os, arch, fail, &env)
}

/// The scripted agent with `env` set (its checks: `AGENT_KEYRING`, `AGENT_SIGSTORE_*`).
pub(crate) fn scripted_env(
    app_base: &str,
    token: &str,
    uid: &str,
    os: &str,
    arch: &str,
    fail: bool,
    env: &[(&str, &str)],
) -> Value {
    let mut cmd = Command::new(tools().join("venv/bin/python"));
    cmd.envs(env.iter().copied());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opamp/scripted_agent.py"))
        .arg(format!("{app_base}/v1/opamp"))
        .arg(token)
        .arg(uid)
        .arg(os)
        .arg(arch)
        .arg("otelcol");
    if fail {
        cmd.arg("fail");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn assigned_builds_are_offered_per_platform_downloaded_checked_and_reported(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let viewer = app.token_for("viewer").await;
    // The linux/amd64 build is signed by a key the registry trusts; the agent checks it.
    let gpg = crate::signing::Gpg::new();
    let fingerprint = gpg.generate("Builds <builds@example.com>", "ed25519", "never", None);
    let res = crate::signing::trust(&app, &admin, &gpg.export(&fingerprint), &["otelcol"]).await;
    assert_eq!(res.status(), 201);
    let dir = tempfile::tempdir().unwrap();
    let signed = b"collector 1.0.0 linux amd64";
    let file = dir.path().join("otelcol");
    std::fs::write(&file, signed).unwrap();
    let signature = gpg.sign(&fingerprint, &file, false, &[]);
    let keyring = gpg.keyring_for_gpgv(&fingerprint);
    let res = app
        .client
        .put(app.url("/api/v1/packages/otelcol/1.0.0/linux/amd64"))
        .bearer_auth(&admin)
        .header(
            "X-Signature",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &signature),
        )
        .body(signed.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    for (coords, body) in [
        (
            "otelcol/1.0.0/linux/arm64",
            &b"collector 1.0.0 linux arm64"[..],
        ),
        (
            "otelcol/1.0.0/windows/amd64",
            b"collector 1.0.0 windows amd64",
        ),
        ("otelcol/1.1.0/linux/amd64", b"collector 1.1.0 linux amd64"),
    ] {
        app.publish(&admin, coords, body).await;
    }
    let res = app
        .client
        .post(app.url("/api/v1/assignments"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({
            "package": "otelcol", "version": "1.0.0", "v_prefix": true,
            "selector": {"service.name": "otelcol"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let assignment: Value = res.json().await.unwrap();
    let id = assignment["id"].as_i64().unwrap();
    assert_eq!(assignment["rollout_percent"], 100);

    let mut hashes = std::collections::HashMap::new();
    for (n, (os, arch)) in [
        ("linux", "amd64"),
        ("linux", "arm64"),
        ("windows", "x86_64"),
    ]
    .into_iter()
    .enumerate()
    {
        let uid = format!("{:032x}", n + 1);
        let report = scripted_with(&app.base, &viewer, &uid, os, arch, false, Some(&keyring));
        let top = &report["offered"][""];
        assert_eq!(top["type"], 0, "top-level: {report}");
        assert_eq!(top["version"], "v1.0.0");
        let build = if arch == "x86_64" { "amd64" } else { arch };
        assert!(
            top["url"].as_str().unwrap().ends_with(&format!(
                "/api/v1/packages/otelcol/1.0.0/{os}/{build}/download"
            )),
            "{report}"
        );
        assert_eq!(top["download_status"], 200, "{report}");
        assert_eq!(top["content_hash_ok"], true, "{report}");
        assert_eq!(top["header_keys"], serde_json::json!(["Authorization"]));
        // The signed build's signature comes with the offer and gpgv accepts it.
        let signed_build = (os, build) == ("linux", "amd64");
        assert_eq!(top["has_signature"], signed_build, "{report}");
        assert_eq!(
            top["signature_ok"],
            if signed_build {
                Value::Bool(true)
            } else {
                Value::Null
            },
            "{report}"
        );
        // The offer's credential opens that file and nothing else.
        assert_eq!(top["credential_elsewhere"], 401, "{report}");
        assert_eq!(report["offered_again"], false, "{report}");
        hashes.insert(uid, report["all_hash"].as_str().unwrap().to_owned());
    }
    let amd64 = format!("{:032x}", 1);
    let agent: Value = app
        .get(&format!("/api/v1/agents/{amd64}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        agent["package_statuses"][0]["status"], "installed",
        "{agent}"
    );
    assert_eq!(agent["package_statuses"][0]["agent_has_version"], "v1.0.0");
    assert_eq!(agent["offered_hash"], hashes[&amd64].as_str());

    // Unchanged: the same hashes for an agent asking afresh, here and on a second replica.
    let again = scripted(
        &app.base,
        &viewer,
        &format!("{:032x}", 11),
        "linux",
        "amd64",
        false,
    );
    assert_eq!(again["all_hash"], hashes[&amd64].as_str());
    let second = agentpkg_server::Application::build(app.settings.clone())
        .await
        .unwrap();
    let other = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    tokio::spawn(second.run_until_stopped());
    let there = scripted(
        &other,
        &viewer,
        &format!("{:032x}", 12),
        "linux",
        "amd64",
        false,
    );
    assert_eq!(there["all_hash"], hashes[&amd64].as_str());
    handle.stop(true).await;

    // No build for the architecture: nothing offered, and the agent's record says why.
    let odd = format!("{:032x}", 20);
    let report = scripted(&app.base, &viewer, &odd, "linux", "s390x", false);
    assert_eq!(report["offered"], serde_json::json!({}), "{report}");
    let agent: Value = app
        .get(&format!("/api/v1/agents/{odd}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        agent["offer_note"].as_str().unwrap().contains("host.arch"),
        "{agent}"
    );

    // A new version: a new offer with a new hash.
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/assignments/{id}")))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "version": "^1.1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let report = scripted(&app.base, &viewer, &amd64, "linux", "amd64", false);
    assert_eq!(report["offered"][""]["version"], "v1.1.0", "{report}");
    assert_ne!(report["all_hash"], hashes[&amd64].as_str());
    // arm64 has no 1.1.0: it is offered nothing, and told so.
    let arm = scripted(
        &app.base,
        &viewer,
        &format!("{:032x}", 2),
        "linux",
        "arm64",
        false,
    );
    assert_eq!(arm["offered"], serde_json::json!({}), "{arm}");

    // A failed install shows in the agent's record.
    let failing = format!("{:032x}", 30);
    scripted(&app.base, &viewer, &failing, "linux", "amd64", true);
    let agent: Value = app
        .get(&format!("/api/v1/agents/{failing}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(agent["package_statuses"][0]["status"], "install_failed");
    assert_eq!(
        agent["package_statuses"][0]["error_message"],
        "scripted failure"
    );

    // Viewers read assignments; only admins write them.
    assert_eq!(app.get("/api/v1/assignments", &viewer).await.status(), 200);
    let res = app
        .client
        .post(app.url("/api/v1/assignments"))
        .bearer_auth(&viewer)
        .json(&serde_json::json!({ "package": "otelcol" }))
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;
    for (body, field) in [
        (
            serde_json::json!({ "package": "otelcol", "version": "newest" }),
            "version",
        ),
        (
            serde_json::json!({ "package": "otelcol", "rollout_percent": 101 }),
            "rollout_percent",
        ),
        (
            serde_json::json!({ "package": "otelcol", "offer_as": "a b" }),
            "offer_as",
        ),
    ] {
        let res = app
            .client
            .post(app.url("/api/v1/assignments"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let error = expect_error(res, 400, "invalid_field").await;
        assert_eq!(error["error"]["field"], field, "{body}");
    }
    let res = app
        .client
        .post(app.url("/api/v1/assignments"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "package": "no-such-package" }))
        .send()
        .await
        .unwrap();
    expect_error(res, 404, "not_found").await;
}

/// Runs the 50 agents once; their uid → the version offered in this run.
fn fleet_run(
    app: &TestApp,
    token: &str,
    state: &Path,
    mode: &str,
) -> BTreeMap<String, Option<String>> {
    let out = Command::new(tools().join("venv/bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opamp/many_agents.py"))
        .arg(app.url("/v1/opamp"))
        .arg(token)
        .arg("50")
        .arg(state)
        .arg(mode)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn offered(run: &BTreeMap<String, Option<String>>, version: &str) -> BTreeSet<String> {
    run.iter()
        .filter(|(_, v)| v.as_deref() == Some(version))
        .map(|(uid, _)| uid.clone())
        .collect()
}

async fn patch_assignment(app: &TestApp, token: &str, id: i64, body: Value) -> Value {
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/assignments/{id}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn a_partial_rollout_grows_by_adding_agents_and_pauses_itself_on_failures(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let viewer = app.token_for("viewer").await;
    app.publish(&admin, "collector/1.0.0/linux/amd64", b"collector 1.0.0")
        .await;
    app.publish(&admin, "collector/1.1.0/linux/amd64", b"collector 1.1.0")
        .await;
    let res = app
        .client
        .post(app.url("/api/v1/assignments"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({
            "package": "collector", "version": "1.0.0",
            "selector": {"service.name": "fleet"}, "max_failure_ratio": 0.2,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("agents.json");

    // Everyone installs 1.0.0.
    let run = fleet_run(&app, &viewer, &state, "install");
    assert_eq!(offered(&run, "1.0.0").len(), 50, "{run:?}");

    // 1.1.0 to 20 %: about 10 of 50 are offered it, the others keep 1.0.0 untouched.
    patch_assignment(
        &app,
        &admin,
        id,
        serde_json::json!({"version": "1.1.0", "rollout_percent": 20}),
    )
    .await;
    let run = fleet_run(&app, &viewer, &state, "install");
    let first = offered(&run, "1.1.0");
    assert!(
        (4..=18).contains(&first.len()),
        "20 % reached {}: {run:?}",
        first.len()
    );
    assert_eq!(
        offered(&run, "1.0.0").len(),
        0,
        "the others are not offered anything new"
    );

    // Raising it to 50 % adds agents and keeps every earlier one (they already have it).
    patch_assignment(&app, &admin, id, serde_json::json!({"rollout_percent": 50})).await;
    let run = fleet_run(&app, &viewer, &state, "install");
    let added = offered(&run, "1.1.0");
    assert!(added.is_disjoint(&first), "the first ones already have it");
    assert!((12..=38).contains(&(first.len() + added.len())), "{run:?}");

    // To everyone, and all but 2 of the newly offered fail: past 20 % the rollout pauses.
    patch_assignment(
        &app,
        &admin,
        id,
        serde_json::json!({"rollout_percent": 100}),
    )
    .await;
    let run = fleet_run(&app, &viewer, &state, "fail:2");
    let last = offered(&run, "1.1.0");
    assert!(!last.is_empty());
    let assignment: Value = app
        .get(&format!("/api/v1/assignments/{id}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    let Some(why) = assignment["paused"].as_str() else {
        let status = app
            .get(&format!("/api/v1/assignments/{id}/status"), &viewer)
            .await
            .text()
            .await
            .unwrap();
        panic!("not paused: {assignment}; {status}; offered {last:?}");
    };
    assert!(why.starts_with("paused automatically"), "{why}");
    // Not every agent was offered it once paused: the ones after the pause kept 1.0.0.
    assert!(
        last.len() < 50 - first.len() - added.len(),
        "{} offered after {why}",
        last.len()
    );

    let status: Value = app
        .get(&format!("/api/v1/assignments/{id}/status"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    let count = |version: &str, state: &str| {
        status["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["version"] == version && e["status"] == state)
            .map_or(0, |e| e["agents"].as_u64().unwrap())
    };
    let failed = count("1.1.0", "install_failed");
    assert_eq!(failed as usize, last.len() - 2, "{status}");
    assert_eq!(
        count("1.1.0", "installed") as usize,
        first.len() + added.len() + 2,
        "{status}"
    );
    assert_eq!(status["failures"].as_array().unwrap().len() as u64, failed);
    assert!(
        status["failures"][0]["error_message"]
            .as_str()
            .unwrap()
            .contains("exit status 3")
    );

    // The fleet view filters by package status and attributes.
    let total = |query: &str| {
        let app = &app;
        let viewer = &viewer;
        let query = query.to_owned();
        async move {
            let res = app.get(&format!("/api/v1/agents?{query}"), viewer).await;
            assert_eq!(res.status(), 200, "{query}");
            res.headers()["x-total-count"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        }
    };
    assert_eq!(total("package_status=install_failed").await, failed);
    assert_eq!(
        total("attributes=service.name=fleet,os.type=linux").await,
        50
    );
    assert_eq!(total("attributes=service.name=nope").await, 0);
    assert_eq!(
        total("connected=true&package_status=installed").await,
        50 - failed
    );
    assert_eq!(total("healthy=true").await, 0, "none reported health");
    let res = app
        .get("/api/v1/agents?package_status=broken", &viewer)
        .await;
    let error = expect_error(res, 400, "invalid_field").await;
    assert_eq!(error["error"]["field"], "package_status");

    // Paused: nobody new is offered 1.1.0, those who have it keep it (no new offer), and
    // resuming offers it again.
    let run = fleet_run(&app, &viewer, &state, "install");
    assert!(offered(&run, "1.1.0").is_empty(), "{run:?}");
    let resumed = patch_assignment(&app, &admin, id, serde_json::json!({"paused": false})).await;
    assert_eq!(resumed["paused"], Value::Null);
}

async fn the_node_opamp_client_is_recorded_and_its_heartbeats_seen(backend: Backend) {
    // Heartbeats that change nothing are written in batches: every second here.
    let app = TestApp::spawn_with(backend, |s| {
        s.fleet.seen_flush_secs = 1;
        s.fleet.last_seen_precision_secs = 1;
    })
    .await;
    let viewer = app.token_for("viewer").await;
    let node_modules = tools().join("node/node_modules");
    assert!(
        node_modules.join("@elastic/opamp-client-node").exists(),
        "the Node OpAMP client is missing: run ./scripts/tools.sh"
    );
    let mut node = Command::new("node");
    node.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opamp/node_agent.js"))
        .args([&app.url("/v1/opamp"), &viewer, "node-service"])
        .env("NODE_PATH", &node_modules);
    let out = tokio::task::spawn_blocking(move || node.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The client read every answer: no warning, no error.
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let uid = report["instance_uid"].as_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let agent = loop {
        let agent: Value = app
            .get(&format!("/api/v1/agents/{uid}"), &viewer)
            .await
            .json()
            .await
            .unwrap();
        let moved = |a: &Value| {
            let at =
                |f: &str| chrono::DateTime::parse_from_rfc3339(a[f].as_str().unwrap()).unwrap();
            at("last_seen") - at("first_seen") >= chrono::Duration::milliseconds(900)
        };
        if moved(&agent) || std::time::Instant::now() > deadline {
            break agent;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        agent["identifying_attributes"]["service.name"],
        "node-service"
    );
    assert_eq!(agent["non_identifying_attributes"]["host.arch"], "arm64");
    // A heartbeat every 300 ms for 1.5 s: several messages, last_seen moved on (written
    // by the batch of quiet heartbeats).
    assert!(agent["sequence_num"].as_u64().unwrap() >= 3, "{agent}");
    let at =
        |field: &str| chrono::DateTime::parse_from_rfc3339(agent[field].as_str().unwrap()).unwrap();
    assert!(
        at("last_seen") - at("first_seen") >= chrono::Duration::milliseconds(900),
        "{agent}"
    );
    assert_eq!(agent["connected"], true);
}

fn ws_agent(app: &TestApp, token: &str, uid: &str, bad: bool) -> Vec<Value> {
    let mut cmd = Command::new(tools().join("venv/bin/python"));
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opamp/ws_agent.py"))
        .arg(format!("{}/v1/opamp", app.base.replacen("http", "ws", 1)))
        .arg(token)
        .arg(uid);
    if bad {
        cmd.arg("bad");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn the_websocket_transport_frames_messages_and_records_a_lost_connection(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let viewer = app.token_for("viewer").await;
    let uid = "aa".repeat(16);
    let frames = ws_agent(&app, &viewer, &uid, false);
    assert_eq!(frames.len(), 3, "{frames:?}");
    for f in &frames {
        assert_eq!(f["header"], 0, "{f}");
        assert_eq!(f["instance_uid"], uid.as_str(), "{f}");
        assert_eq!(f["capabilities"], 0x01 | 0x08 | 0x10, "{f}");
        assert_eq!(f["error"], Value::Null, "{f}");
    }
    let agent: Value = app
        .get(&format!("/api/v1/agents/{uid}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(agent["identifying_attributes"]["service.name"], "ws-agent");
    assert_eq!(
        (agent["connected"].as_bool(), agent["disconnects"].as_u64()),
        (Some(false), Some(1))
    );

    // A frame that is not OpAMP closes the connection with a protocol error, and the
    // connection ending without a goodbye is recorded as a disconnect.
    let other = "bb".repeat(16);
    let frames = ws_agent(&app, &viewer, &other, true);
    assert_eq!(frames.last().unwrap()["closed"], 1002, "{frames:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let agent: Value = app
            .get(&format!("/api/v1/agents/{other}"), &viewer)
            .await
            .json()
            .await
            .unwrap();
        if agent["disconnects"] == 1 {
            assert_eq!(agent["connected"], false);
            assert_eq!(
                agent["sequence_num"], 1,
                "the heartbeat before it was kept: {agent}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recorded: {agent}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The upgrade needs a token like every other request.
    let res = app
        .client
        .get(app.url("/v1/opamp"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "missing_token").await;
}
