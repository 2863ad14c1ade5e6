//! Progressive rollouts against a simulated fleet over real OpAMP: a harness of scripted
//! agents (the PyPI OpAMP client's protobuf classes, HTTP and WebSocket mixed) with a
//! behaviour each, and the server's rollout clock 600 times as fast as the wall clock, so
//! a bake time of ten minutes passes in a second.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentpkg_store::on_both_backends;
use agentpkg_store::testing::Backend;
use chrono::{DateTime, Timelike, Utc};
use serde_json::{Value, json};

use crate::common::{TestApp, expect_error};

on_both_backends!(
    a_healthy_rollout_completes_wave_by_wave_with_its_bake_times,
    agents_unhealthy_after_install_in_wave_2_trip_it_and_every_agent_moved_is_reverted,
    a_closed_window_holds_each_wave_until_it_opens,
    approval_holds_each_wave_until_an_admin_approves_it,
    failed_installs_are_retried_with_backoff_before_they_count,
);

/// The rollout clock's speed in these tests.
const SCALE: u32 = 600;

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, tweak).await
}

fn tweak(s: &mut agentpkg_server::Settings) {
    s.fleet.rollout_time_scale = SCALE;
    s.fleet.rollout_tick_ms = 100;
    s.fleet.offer_watch_ms = 100;
}

/// The scripted fleet, running until [`Harness::finish`].
struct Harness {
    child: Child,
    dir: tempfile::TempDir,
}

impl Harness {
    /// `n` agents; agent `i` (uid `i + 1`) speaks WebSocket when `i % 3 == 0`, HTTP
    /// otherwise, and behaves as `behaviour(i)` when offered `target`.
    fn start(
        app: &TestApp,
        token: &str,
        n: usize,
        target: &str,
        behaviour: impl Fn(usize) -> &'static str,
    ) -> Self {
        Self::start_at(&app.base, token, n, target, behaviour)
    }

    fn start_at(
        base: &str,
        token: &str,
        n: usize,
        target: &str,
        behaviour: impl Fn(usize) -> &'static str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let agents: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "uid": uid(i),
                    "transport": if i % 3 == 0 { "ws" } else { "http" },
                    "behaviour": behaviour(i),
                })
            })
            .collect();
        let spec = json!({"target": target, "interval": 1.0, "agents": agents, "max_secs": 600});
        std::fs::write(dir.path().join("spec.json"), spec.to_string()).unwrap();
        let tools = crate::common::tools_dir();
        let child = Command::new(tools.join("venv/bin/python"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opamp/rollout_fleet.py"))
            .arg(format!("{base}/v1/opamp"))
            .arg(format!("{}/v1/opamp", base.replacen("http", "ws", 1)))
            .arg(token)
            .arg(dir.path().join("spec.json"))
            .arg(dir.path().join("state.json"))
            .arg(dir.path().join("stop"))
            .arg(dir.path().join("control.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the OpAMP client is installed: run ./scripts/tools.sh");
        Self { child, dir }
    }

    /// From now on, one agent in `every` offered the target behaves as `behaviour`.
    fn control(&self, behaviour: &str, every: u64) {
        let path = self.dir.path().join("control.json");
        std::fs::write(
            path.with_extension("tmp"),
            json!({"behaviour": behaviour, "every": every}).to_string(),
        )
        .unwrap();
        std::fs::rename(path.with_extension("tmp"), path).unwrap();
    }

    /// Stops the fleet; each agent's state.
    fn finish(mut self) -> serde_json::Map<String, Value> {
        std::fs::write(self.dir.path().join("stop"), b"").unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the scripted fleet failed");
        let state: Value =
            serde_json::from_slice(&std::fs::read(self.state_path()).unwrap()).unwrap();
        state.as_object().unwrap().clone()
    }

    fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn uid(i: usize) -> String {
    format!("{:032x}", i + 1)
}

/// Publishes otelcol 1.0.0 and 2.0.0 for linux/amd64, assigns 1.0.0 to the fleet, and
/// waits for all `n` agents to run it. The admin's token, the agents' token and the
/// assignment's id.
async fn fleet_on_1_0(
    app: &TestApp,
    n: usize,
    behaviour: impl Fn(usize) -> &'static str,
) -> (String, String, i64, Harness) {
    let admin = app.admin_token().await;
    for version in ["1.0.0", "2.0.0"] {
        app.publish(
            &admin,
            &format!("otelcol/{version}/linux/amd64"),
            format!("collector {version}"),
        )
        .await;
    }
    let res = app
        .client
        .post(app.url("/api/v1/assignments"))
        .bearer_auth(&admin)
        .json(&json!({"package": "otelcol", "version": "1.0.0", "selector": {"service.name": "rollout"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let agents = app.token_for("viewer").await;
    let harness = Harness::start(app, &agents, n, "2.0.0", behaviour);
    wait_installed(app, &admin, id, "1.0.0", n as u64).await;
    (admin, agents, id, harness)
}

/// Waits until `n` agents report `version` installed for assignment `id`.
async fn wait_installed(app: &TestApp, token: &str, id: i64, version: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status: Value = app
            .get(&format!("/api/v1/assignments/{id}/status"), token)
            .await
            .json()
            .await
            .unwrap();
        let installed: u64 = status["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["version"] == version && s["status"] == "installed")
            .map(|s| s["agents"].as_u64().unwrap())
            .sum();
        if installed >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{installed} of {n} agents run {version}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn start_rollout(app: &TestApp, admin: &str, id: i64, plan: Value) -> Value {
    let res = app
        .client
        .post(app.url(&format!("/api/v1/assignments/{id}/rollouts")))
        .bearer_auth(admin)
        .json(&plan)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

async fn rollout(app: &TestApp, token: &str, id: i64, rid: i64) -> Value {
    let res = app
        .get(&format!("/api/v1/assignments/{id}/rollouts/{rid}"), token)
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Polls the rollout until `done` holds of it.
async fn wait_for(
    app: &TestApp,
    token: &str,
    id: i64,
    rid: i64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let r = rollout(app, token, id, rid).await;
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "waited for {what}: {r:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_state(app: &TestApp, token: &str, id: i64, rid: i64, state: &str) -> Value {
    wait_for(app, token, id, rid, state, |r| r["state"] == state).await
}

fn at(v: &Value) -> DateTime<Utc> {
    v["at"].as_str().unwrap().parse().unwrap()
}

/// The transitions into `state`, as (wave, time).
fn entered(r: &Value, state: &str) -> Vec<(u64, DateTime<Utc>)> {
    r["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == state)
        .map(|t| (t["wave"].as_u64().unwrap(), at(t)))
        .collect()
}

async fn audit(app: &TestApp, admin: &str, action: &str) -> Vec<Value> {
    let res = app
        .get(
            &format!("/api/v1/audit?action={action}&per_page=100"),
            admin,
        )
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Silence counts after 36 000 s of rollout time, a minute of real time: a scripted agent
/// polls every second, but on a CI machine running every suite at once its answer has
/// been seen to come more than 12 s late.
fn four_waves(on_failure: &str) -> Value {
    json!({
        "version": "2.0.0",
        "waves": [{"agents": 5}, {"percent": 10}, {"percent": 50}, {"percent": 100}],
        "success": {"healthy_for_secs": 600, "min_ratio": 0.95},
        "failure": {"max_ratio": 0.05, "min_sample": 5,
                    "count": ["install_failed", "unhealthy_after_install", "no_report_within_secs:36000"]},
        "on_failure": on_failure,
    })
}

/// Agents a wave offers per step in the tests that watch waves start over several ticks.
const WAVE_STEP: usize = 8;

/// The transitions into `state`, as waves (one entry per wave however many steps it took).
fn waves_entered(r: &Value, state: &str) -> Vec<u64> {
    let mut waves: Vec<u64> = entered(r, state).iter().map(|t| t.0).collect();
    waves.dedup();
    waves
}

/// No wave bakes before all of its agents were offered the version: every step that
/// offered more of wave n comes before wave n bakes, and there were as many such steps
/// as `WAVE_STEP` makes of the wave's new agents.
fn every_wave_offered_whole_before_baking(done: &Value, new_per_wave: &[usize]) {
    let transitions = done["transitions"].as_array().unwrap();
    for (i, new) in new_per_wave.iter().enumerate() {
        let wave = i as u64 + 1;
        let steps_of = |state: &str| -> Vec<u64> {
            transitions
                .iter()
                .filter(|t| t["state"] == state && t["wave"] == wave)
                .map(|t| t["step"].as_u64().unwrap())
                .collect()
        };
        let rolling = steps_of("rolling");
        let baking = steps_of("baking");
        assert_eq!(
            rolling.len(),
            new.div_ceil(WAVE_STEP),
            "wave {wave}: {new} new agents in steps of {WAVE_STEP}: {done:#}"
        );
        assert!(
            rolling.iter().max() < baking.iter().min(),
            "wave {wave} baked before all of it was offered: {done:#}"
        );
    }
}

async fn a_healthy_rollout_completes_wave_by_wave_with_its_bake_times(backend: Backend) {
    // Waves of up to 100 agents start over several ticks, 8 agents a step.
    let app = TestApp::spawn_with(backend, |s| {
        tweak(s);
        s.fleet.rollout_wave_step_agents = WAVE_STEP;
    })
    .await;
    let (admin, viewer, id, harness) = fleet_on_1_0(&app, 200, |_| "ok").await;
    let created = start_rollout(&app, &admin, id, four_waves("pause")).await;
    let rid = created["id"].as_i64().unwrap();
    assert_eq!(created["from_version"], "1.0.0");
    // Others keep being offered 1.0.0 while it moves: the assignment is pinned to it.
    let assignment: Value = app
        .get(&format!("/api/v1/assignments/{id}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            assignment["version"].as_str(),
            assignment["rollout_id"].as_i64()
        ),
        (Some("1.0.0"), Some(rid))
    );
    // One rollout moves an assignment at a time.
    let again = app
        .client
        .post(app.url(&format!("/api/v1/assignments/{id}/rollouts")))
        .bearer_auth(&admin)
        .json(&four_waves("pause"))
        .send()
        .await
        .unwrap();
    expect_error(again, 409, "rollout_conflict").await;

    let done = wait_state(&app, &viewer, id, rid, "completed").await;
    let sizes: Vec<u64> = done["per_wave"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["agents"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sizes,
        [5, 15, 80, 100],
        "each wave adds to the last: {done:#}"
    );
    for w in done["per_wave"].as_array().unwrap() {
        assert!(w["baking_since"].is_string(), "{w}");
        assert_eq!(w["failed"], 0, "{w}");
    }
    assert_eq!(waves_entered(&done, "rolling"), [1, 2, 3, 4], "{done:#}");
    assert_eq!(waves_entered(&done, "baking"), [1, 2, 3, 4], "{done:#}");
    every_wave_offered_whole_before_baking(&done, &[5, 15, 80, 100]);
    // A wave's start is when its first agents were offered.
    let mut rolling = entered(&done, "rolling");
    rolling.dedup_by_key(|r| r.0);
    for pair in rolling.windows(2) {
        // A wave starts only once enough of the last one was healthy for the bake time.
        assert!((pair[1].1 - pair[0].1).num_seconds() >= 600, "{pair:?}");
    }
    assert!(
        done["cause"]
            .as_str()
            .unwrap()
            .contains("now offers 2.0.0 to every agent"),
        "{done}"
    );
    let assignment: Value = app
        .get(&format!("/api/v1/assignments/{id}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(assignment["version"], "2.0.0");
    assert!(assignment["rollout_id"].is_null());

    wait_installed(&app, &viewer, id, "2.0.0", 200).await;
    let agents = harness.finish();
    assert!(
        agents
            .values()
            .all(|a| a["has"] == "2.0.0" && a["healthy"] == true)
    );
    assert!(
        agents.values().any(|a| a["transport"] == "ws")
            && agents.values().any(|a| a["transport"] == "http")
    );
    // Every step audited once, with its cause.
    let steps = audit(&app, &admin, "rollout_step").await;
    assert_eq!(
        steps.len(),
        done["transitions"].as_array().unwrap().len() - 1,
        "{steps:#?}"
    );
    let subject = format!("rollout {rid}");
    assert!(
        steps
            .iter()
            .all(|e| e["subject"] == subject.as_str() && e["package"] == "otelcol"),
        "{steps:#?}"
    );
    assert_eq!(audit(&app, &admin, "rollout_create").await.len(), 1);
}

async fn agents_unhealthy_after_install_in_wave_2_trip_it_and_every_agent_moved_is_reverted(
    backend: Backend,
) {
    let app = spawn(backend).await;
    let (_, viewer, id, harness) = fleet_on_1_0(&app, 200, |_| "ok").await;
    let admin = app.admin_token().await;
    let rid = start_rollout(&app, &admin, id, four_waves("revert")).await["id"]
        .as_i64()
        .unwrap();
    // Wave 1 is healthy; from wave 2 on, one agent in three turns unhealthy after the install.
    wait_for(&app, &viewer, id, rid, "wave 1 baking", |r| {
        r["state"] == "baking" && r["wave"] == 1
    })
    .await;
    harness.control("unhealthy", 3);
    let done = wait_state(&app, &viewer, id, rid, "reverted").await;
    let reverting = entered(&done, "reverting");
    assert_eq!(reverting.len(), 1, "{done:#}");
    assert_eq!(reverting[0].0, 2, "it trips in wave 2: {done:#}");
    let cause = done["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["state"] == "reverting")
        .unwrap()["cause"]
        .clone();
    assert!(
        cause.as_str().unwrap().contains("in wave 2 failed"),
        "{cause}"
    );
    assert!(
        entered(&done, "rolling").iter().all(|(w, _)| *w <= 2),
        "wave 3 never started: {done:#}"
    );
    let moved: u64 = done["per_wave"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["reverted"].as_u64().unwrap())
        .sum();
    assert_eq!(moved, 20, "both waves' agents reverted: {done:#}");
    // The assignment never left 1.0.0: every agent ends there, the unhealthy ones healthy again.
    let assignment: Value = app
        .get(&format!("/api/v1/assignments/{id}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(assignment["version"], "1.0.0");
    wait_installed(&app, &viewer, id, "1.0.0", 200).await;
    let agents = harness.finish();
    let unhealthy: Vec<_> = agents
        .values()
        .filter(|a| {
            a["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e[1] == "unhealthy")
        })
        .collect();
    assert!(!unhealthy.is_empty());
    assert!(
        unhealthy
            .iter()
            .all(|a| a["has"] == "1.0.0" && a["healthy"] == true),
        "{unhealthy:#?}"
    );
    assert!(agents.values().all(|a| a["has"] == "1.0.0"));
}

async fn a_closed_window_holds_each_wave_until_it_opens(backend: Backend) {
    let app = spawn(backend).await;
    let (admin, viewer, id, harness) = fleet_on_1_0(&app, 30, |_| "ok").await;
    // A window of three minutes each hour, half an hour from now: closed at the start, and
    // at the end of the first wave (an hour of the rollout's clock takes six seconds).
    let minute = (Utc::now().minute() + 30) % 60;
    let plan = json!({
        "version": "2.0.0",
        "waves": [{"percent": 50}, {"percent": 100}],
        "success": {"healthy_for_secs": 300, "min_ratio": 0.9},
        "window": {"cron": format!("{minute} * * * *"), "duration_secs": 180, "timezone": "UTC"},
    });
    let rid = start_rollout(&app, &admin, id, plan).await["id"]
        .as_i64()
        .unwrap();
    let done = wait_state(&app, &viewer, id, rid, "completed").await;
    let waiting = entered(&done, "waiting_for_window");
    assert_eq!(
        waiting.iter().map(|w| w.0).collect::<Vec<_>>(),
        [1, 2],
        "{done:#}"
    );
    let started = entered(&done, "rolling");
    assert_eq!(started.len(), 2, "{done:#}");
    for (wave, at) in started {
        let into = (i64::from(at.minute()) - i64::from(minute)).rem_euclid(60) * 60
            + i64::from(at.second());
        assert!(
            into < 180,
            "wave {wave} started at {at}, outside the window at minute {minute}"
        );
    }
    harness.finish();
}

async fn approval_holds_each_wave_until_an_admin_approves_it(backend: Backend) {
    let app = spawn(backend).await;
    let (admin, viewer, id, harness) = fleet_on_1_0(&app, 30, |_| "ok").await;
    let plan = json!({
        "version": "2.0.0",
        "waves": [{"agents": 3}, {"percent": 100}],
        "success": {"healthy_for_secs": 300, "min_ratio": 1.0},
        "approval": "each_wave",
    });
    let rid = start_rollout(&app, &admin, id, plan).await["id"]
        .as_i64()
        .unwrap();
    let waiting = wait_state(&app, &viewer, id, rid, "waiting_for_approval").await;
    // It holds while the rollout's clock moves on by a quarter of an hour.
    let since: DateTime<Utc> = waiting["now"].as_str().unwrap().parse().unwrap();
    let held = wait_for(&app, &viewer, id, rid, "15 minutes", |r| {
        r["now"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap() - since
            > chrono::Duration::minutes(15)
    })
    .await;
    assert_eq!(held["state"], "waiting_for_approval");
    assert_eq!(
        held["per_wave"][0]["agents"], 0,
        "nobody offered 2.0.0: {held:#}"
    );
    // Only an admin approves, and only what waits.
    let path = format!("/api/v1/assignments/{id}/rollouts/{rid}/approve");
    let res = app
        .client
        .post(app.url(&path))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;
    let res = app
        .client
        .post(app.url(&path))
        .bearer_auth(&admin)
        .json(&json!({"reason": "canary build signed off"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    wait_for(&app, &viewer, id, rid, "wave 2 waits", |r| {
        r["state"] == "waiting_for_approval" && r["wave"] == 2
    })
    .await;
    let res = app
        .client
        .post(app.url(&path))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let done = wait_state(&app, &viewer, id, rid, "completed").await;
    let approvals: Vec<_> = done["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["cause"].as_str().unwrap().contains("approved by admin"))
        .collect();
    assert_eq!(approvals.len(), 2, "{done:#}");
    assert!(
        approvals[0]["cause"]
            .as_str()
            .unwrap()
            .contains("canary build signed off")
    );
    assert_eq!(approvals[0]["actor"], "admin");
    let events = audit(&app, &admin, "rollout_approve").await;
    assert_eq!(events.len(), 2);
    let res = app
        .client
        .post(app.url(&path))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(res, 409, "rollout_conflict").await;
    harness.finish();
}

async fn failed_installs_are_retried_with_backoff_before_they_count(backend: Backend) {
    let app = spawn(backend).await;
    let (admin, viewer, id, harness) =
        fleet_on_1_0(&app, 30, |i| if i % 4 == 0 { "fail_once" } else { "ok" }).await;
    let plan = json!({
        "version": "2.0.0",
        "waves": [{"percent": 100}],
        "success": {"healthy_for_secs": 300, "min_ratio": 1.0},
        "failure": {"max_failed": 0, "count": ["install_failed"]},
        "retry": {"attempts": 2, "backoff_secs": 300},
    });
    let rid = start_rollout(&app, &admin, id, plan).await["id"]
        .as_i64()
        .unwrap();
    let done = wait_state(&app, &viewer, id, rid, "completed").await;
    assert!(
        entered(&done, "paused").is_empty(),
        "failures waiting for a retry never count: {done:#}"
    );
    let agents = harness.finish();
    let retried: Vec<_> = agents
        .values()
        .filter(|a| a["behaviour"] == "fail_once")
        .collect();
    assert_eq!(retried.len(), 8);
    for a in retried {
        let events = a["events"].as_array().unwrap();
        let time = |what: &str, nth: usize| {
            events
                .iter()
                .filter(|e| e[1] == what && e[2] == "2.0.0")
                .nth(nth)
                .map(|e| e[0].as_f64().unwrap())
        };
        let failed = time("install_failed", 0).unwrap_or_else(|| panic!("{a}"));
        let offered_again = time("offered", 1).unwrap_or_else(|| panic!("{a}"));
        // 300 s on the rollout's clock, at 600 times the wall clock.
        assert!(
            offered_again - failed >= 0.45,
            "offered again after {} s: {a}",
            offered_again - failed
        );
        assert_eq!(a["has"], "2.0.0");
    }
}

/// Two replicas as separate processes over one database and bucket, both evaluating
/// rollouts; the one holding the engine's lease is killed mid-wave and the other takes
/// over: every step is taken once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_wave_leaves_the_rollout_to_the_other_without_double_steps() {
    let app = TestApp::spawn_with(Backend::Production, |s| {
        tweak(s);
        // This one answers requests only: the engine runs in the two processes below.
        s.fleet.rollout_engine = false;
    })
    .await;
    let mut replicas: Vec<Child> = (0..2).map(|n| replica(&app, n)).collect();
    let (admin, viewer, id, harness) = fleet_on_1_0(&app, 60, |_| "ok").await;
    let rid = start_rollout(&app, &admin, id, four_waves("pause")).await["id"]
        .as_i64()
        .unwrap();
    // Wave 3 (30 agents, 24 of them new) starts in three steps of 8: killed after the
    // first, the other replica finds the rest in the database.
    wait_for(&app, &viewer, id, rid, "wave 3 begun", |r| {
        r["wave"] == 3 && r["state"] == "rolling"
    })
    .await;
    let holder = lease_holder(&app);
    let pid = u32::from_str_radix(holder.split('-').next().unwrap(), 16).unwrap();
    let killed = replicas
        .iter()
        .position(|c| c.id() == pid)
        .unwrap_or_else(|| panic!("the lease {holder} is held by neither replica"));
    replicas[killed].kill().unwrap();
    replicas[killed].wait().unwrap();
    let done = wait_state(&app, &viewer, id, rid, "completed").await;
    assert_ne!(
        lease_holder(&app),
        holder,
        "the other replica took the lease over"
    );
    let steps: Vec<u64> = done["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=steps.len() as u64).collect::<Vec<_>>());
    assert_eq!(waves_entered(&done, "rolling"), [1, 2, 3, 4], "{done:#}");
    let sizes: Vec<u64> = done["per_wave"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["agents"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [5, 1, 24, 30], "{done:#}");
    every_wave_offered_whole_before_baking(&done, &[5, 1, 24, 30]);
    assert_eq!(
        audit(&app, &admin, "rollout_step").await.len(),
        steps.len() - 1
    );
    harness.finish();
    for mut r in replicas {
        let _ = r.kill();
        let _ = r.wait();
    }
}

/// The server binary over the test app's database and bucket, evaluating rollouts.
fn replica(app: &TestApp, n: usize) -> Child {
    use secrecy::ExposeSecret;
    let s = &app.settings;
    let log = std::fs::File::create(
        std::env::temp_dir().join(format!("agentpkg-replica-{}-{n}.log", std::process::id())),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_agentpkg-server"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AGENTPKG__SERVER__BIND", "127.0.0.1:0")
        .env("AGENTPKG__DATABASE__URL", app.db_url())
        .env("AGENTPKG__STORAGE__BACKEND", "s3")
        .env("AGENTPKG__STORAGE__S3__ENDPOINT", &s.storage.s3.endpoint)
        .env("AGENTPKG__STORAGE__S3__REGION", &s.storage.s3.region)
        .env("AGENTPKG__STORAGE__S3__BUCKET", &s.storage.s3.bucket)
        .env(
            "AGENTPKG__STORAGE__S3__ACCESS_KEY",
            &s.storage.s3.access_key,
        )
        .env(
            "AGENTPKG__STORAGE__S3__SECRET_KEY",
            s.storage.s3.secret_key.as_ref().unwrap().expose_secret(),
        )
        .env("AGENTPKG__AUTH__JWT_SECRET", crate::common::JWT_SECRET)
        .env(
            "AGENTPKG__AUTH__ADMIN_PASSWORD",
            crate::common::ADMIN_PASSWORD,
        )
        .env("AGENTPKG__FLEET__ROLLOUT_TIME_SCALE", SCALE.to_string())
        .env("AGENTPKG__FLEET__ROLLOUT_TICK_MS", "100")
        .env(
            "AGENTPKG__FLEET__ROLLOUT_WAVE_STEP_AGENTS",
            WAVE_STEP.to_string(),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Who holds the rollout engine's lease, read with psql.
fn lease_holder(app: &TestApp) -> String {
    let out = Command::new("psql")
        .arg(app.db_url())
        .args([
            "-At",
            "-c",
            "SELECT holder FROM job_leases WHERE name = 'rollout-engine'",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
