//! A progressive rollout at scale: N simulated agents over HTTP poll every `interval`
//! (spread evenly) and report a new offer installed and healthy at once; a four-wave
//! rollout runs to completion on the server's fast rollout clock. Measured: the engine's
//! evaluation time per tick and the database rows it read per tick (from the server's
//! `/metrics` histograms), the server's peak memory, the answer times, and the time to
//! complete.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpkg_fleet::proto::{
    AgentDescription, AgentToServer, AnyValue, ComponentHealth, KeyValue, PackageStatus,
    PackageStatuses, ServerToAgent, any_value,
};
use prost::Message;
use serde_json::{Value, json};

use crate::measure::{RssSampler, percentile};
use agentpkg_bench::{MIB, Result, Server};

/// The rollout clock's speed in this bench (the server is started with it).
pub(crate) const SCALE: &str = "600";

#[derive(Default, Clone)]
struct Agent {
    seq: u64,
    has: String,
    has_hash: Vec<u8>,
    all_hash: Vec<u8>,
}

fn message(i: u64, a: &mut Agent, full: bool, report: bool) -> AgentToServer {
    let mut uid = [0u8; 16];
    uid[..8].copy_from_slice(b"rollout!");
    uid[8..].copy_from_slice(&i.to_be_bytes());
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    };
    let seq = a.seq;
    a.seq += 1;
    let mut statuses = PackageStatuses {
        server_provided_all_packages_hash: a.all_hash.clone(),
        ..PackageStatuses::default()
    };
    if !a.has.is_empty() {
        statuses.packages.insert(
            String::new(),
            PackageStatus {
                agent_has_version: a.has.clone(),
                agent_has_hash: a.has_hash.clone(),
                server_offered_version: a.has.clone(),
                server_offered_hash: a.has_hash.clone(),
                status: 1, // Installed
                ..PackageStatus::default()
            },
        );
    }
    AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: seq,
        // ReportsStatus | AcceptsPackages | ReportsPackageStatuses | ReportsHealth | ReportsHeartbeat
        capabilities: 0x01 | 0x08 | 0x10 | 0x800 | 0x2000,
        agent_description: full.then(|| AgentDescription {
            identifying_attributes: vec![kv("service.name", "bench-rollout")],
            non_identifying_attributes: vec![kv("os.type", "linux"), kv("host.arch", "amd64")],
        }),
        health: (full || report).then(|| ComponentHealth {
            healthy: true,
            status: "ok".into(),
            ..ComponentHealth::default()
        }),
        package_statuses: (full || report).then_some(statuses),
        ..AgentToServer::default()
    }
}

/// Applies an answer; whether the agent now has a new version to report.
fn answered(a: &mut Agent, answer: &ServerToAgent) -> bool {
    let Some(available) = &answer.packages_available else {
        return false;
    };
    a.all_hash.clone_from(&available.all_packages_hash);
    match available.packages.get("") {
        Some(p) if p.hash != a.has_hash => {
            a.has.clone_from(&p.version);
            a.has_hash.clone_from(&p.hash);
            true
        }
        _ => false,
    }
}

/// The histogram `name` from a `/metrics` text: (upper bound, cumulative count) pairs,
/// the sum and the count.
fn histogram(text: &str, name: &str) -> (Vec<(f64, u64)>, f64, u64) {
    let mut buckets = Vec::new();
    let (mut sum, mut count) = (0.0, 0);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = line.rsplit(' ').next().unwrap_or("0");
        if let Some(le) = rest.strip_prefix("_bucket{le=\"") {
            let bound = le.split('"').next().unwrap_or("+Inf");
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().unwrap_or(f64::INFINITY)
            };
            buckets.push((bound, value.parse().unwrap_or(0)));
        } else if rest.starts_with("_sum") {
            sum = value.parse().unwrap_or(0.0);
        } else if rest.starts_with("_count") {
            count = value.parse().unwrap_or(0);
        }
    }
    (buckets, sum, count)
}

/// The upper bound of the bucket holding quantile `q` of the observations between two
/// scrapes.
fn quantile(
    before: &(Vec<(f64, u64)>, f64, u64),
    after: &(Vec<(f64, u64)>, f64, u64),
    q: f64,
) -> f64 {
    let n = after.2.saturating_sub(before.2);
    if n == 0 {
        return 0.0;
    }
    let want = (n as f64 * q).ceil() as u64;
    for (i, (bound, cumulative)) in after.0.iter().enumerate() {
        let earlier = before.0.get(i).map_or(0, |b| b.1);
        if cumulative - earlier >= want {
            return *bound;
        }
    }
    f64::INFINITY
}

async fn scrape(client: &reqwest::Client, server: &Server, token: &str) -> Result<String> {
    Ok(client
        .get(format!("{}/metrics", server.base))
        .bearer_auth(token)
        .send()
        .await?
        .text()
        .await?)
}

pub(crate) async fn rollout_bench(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    agents: u64,
    interval: Duration,
) -> Result<Value> {
    for version in ["1.0.0", "2.0.0"] {
        let res = client
            .put(format!(
                "{}/api/v1/packages/bench-rollout/{version}/linux/amd64",
                server.base
            ))
            .bearer_auth(token)
            .body(format!("bench rollout {version}"))
            .send()
            .await?;
        if !res.status().is_success() {
            return Err("the rollout's package was refused".into());
        }
    }
    let assignment: Value = client
        .post(format!("{}/api/v1/assignments", server.base))
        .bearer_auth(token)
        .json(&json!({"package": "bench-rollout", "version": "1.0.0",
                       "selector": {"service.name": "bench-rollout"}}))
        .send()
        .await?
        .json()
        .await?;
    let id = assignment["id"].as_i64().ok_or("assignment refused")?;
    let url = format!("{}/v1/opamp", server.base);
    let fleet: Arc<Vec<Mutex<Agent>>> = Arc::new((0..agents).map(|_| Mutex::default()).collect());
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // One exchange: the message, then at once a report when it brought a new version.
    let exchange = {
        let (client, url, token) = (client.clone(), url.clone(), token.to_owned());
        let (fleet, latencies, errors) = (fleet.clone(), latencies.clone(), errors.clone());
        move |i: u64, full: bool| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            let (fleet, latencies, errors) = (fleet.clone(), latencies.clone(), errors.clone());
            async move {
                let mut report = false;
                for _ in 0..2 {
                    let body = {
                        let mut a = fleet[i as usize].lock().unwrap();
                        message(i, &mut a, full, report).encode_to_vec()
                    };
                    let sent = Instant::now();
                    let res = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("Content-Type", "application/x-protobuf")
                        .body(body)
                        .send()
                        .await;
                    let Ok(res) = res else {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    };
                    if !res.status().is_success() {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                    let Ok(bytes) = res.bytes().await else {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    };
                    latencies.lock().unwrap().push(sent.elapsed());
                    let answer = ServerToAgent::decode(bytes).unwrap_or_default();
                    report = answered(&mut fleet[i as usize].lock().unwrap(), &answer);
                    if !report {
                        return;
                    }
                }
            }
        }
    };
    // Every agent registers and installs 1.0.0.
    let started = Instant::now();
    let ids: Vec<u64> = (0..agents).collect();
    for chunk in ids.chunks(64) {
        futures_util::future::join_all(chunk.iter().map(|&i| exchange(i, true))).await;
    }
    println!(
        "\n{agents} agents registered on 1.0.0 in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    latencies.lock().unwrap().clear();

    let before = scrape(client, server, token).await?;
    let sampler = RssSampler::start(server.pid());
    let plan = json!({
        "version": "2.0.0",
        "waves": [{"agents": 50}, {"percent": 10}, {"percent": 50}, {"percent": 100}],
        "success": {"healthy_for_secs": 600, "min_ratio": 0.95},
        "failure": {"max_ratio": 0.05, "count": ["install_failed", "unhealthy_after_install"]},
    });
    let created: Value = client
        .post(format!("{}/api/v1/assignments/{id}/rollouts", server.base))
        .bearer_auth(token)
        .json(&plan)
        .send()
        .await?
        .json()
        .await?;
    let rid = created["id"]
        .as_i64()
        .ok_or_else(|| format!("rollout refused: {created}"))?;
    let rate = agents as f64 / interval.as_secs_f64();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(900);
    let mut tasks = Vec::new();
    let mut k = 0u64;
    let mut last_step = 0;
    // Where the rollout stands is read about once a second.
    let every = (rate as u64).max(1);
    let state = loop {
        if k.is_multiple_of(every) {
            let r: Value = client
                .get(format!(
                    "{}/api/v1/assignments/{id}/rollouts/{rid}",
                    server.base
                ))
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            let state = r["state"].as_str().unwrap_or_default().to_owned();
            let steps = r["transitions"].as_array().map_or(0, Vec::len);
            if steps != last_step {
                last_step = steps;
                println!(
                    "  {:>5.1}s: {state}, wave {} — {}",
                    t0.elapsed().as_secs_f64(),
                    r["wave"],
                    r["cause"].as_str().unwrap_or_default()
                );
            }
            if !matches!(
                state.as_str(),
                "scheduled" | "rolling" | "baking" | "waiting_for_window" | "waiting_for_approval"
            ) || Instant::now() > deadline
            {
                break r;
            }
        }
        let due = t0 + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        tasks.push(tokio::spawn(exchange(k % agents, false)));
        k += 1;
        if tasks.len() > 4096 {
            for t in tasks.drain(..2048) {
                t.await?;
            }
        }
    };
    for t in tasks {
        t.await?;
    }
    let took = t0.elapsed();
    let peak = sampler.finish();
    let after = scrape(client, server, token).await?;
    let name_secs = "agentpkg_rollout_tick_seconds";
    let name_rows = "agentpkg_rollout_tick_rows";
    let (secs_before, secs_after) = (histogram(&before, name_secs), histogram(&after, name_secs));
    let (rows_before, rows_after) = (histogram(&before, name_rows), histogram(&after, name_rows));
    let ticks = secs_after.2.saturating_sub(secs_before.2);
    // Ticks over 48.7 ms, the bucket bound nearest under 50 ms.
    let under = |bound: f64| {
        let at = |h: &(Vec<(f64, u64)>, f64, u64)| {
            h.0.iter()
                .filter(|(b, _)| *b <= bound)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0)
        };
        at(&secs_after).saturating_sub(at(&secs_before))
    };
    let slow = ticks.saturating_sub(under(0.05));
    let mean_ms = (secs_after.1 - secs_before.1) / ticks.max(1) as f64 * 1000.0;
    let mean_rows = (rows_after.1 - rows_before.1) / ticks.max(1) as f64;
    let mut all = latencies.lock().unwrap().clone();
    all.sort();
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    let row = json!({
        "agents": agents,
        "poll_interval_secs": interval.as_secs(),
        "rollout_time_scale": SCALE,
        "state": state["state"],
        "transitions": state["transitions"].as_array().map_or(0, Vec::len),
        "seconds_to_complete": took.as_secs_f64(),
        "ticks": ticks,
        "tick_mean_ms": mean_ms,
        "ticks_over_48_7_ms": slow,
        "tick_p50_ms_at_most": quantile(&secs_before, &secs_after, 0.5) * 1000.0,
        "tick_p99_ms_at_most": quantile(&secs_before, &secs_after, 0.99) * 1000.0,
        "tick_rows_mean": mean_rows,
        "tick_rows_p99_at_most": quantile(&rows_before, &rows_after, 0.99),
        "messages": all.len(),
        "p50_ms": percentile(&all, 0.5),
        "p99_ms": percentile(&all, 0.99),
        "errors": errors,
        "server_peak_rss_bytes": peak,
    });
    println!(
        "a 4-wave rollout to {agents} agents (polling every {}s, rollout clock ×{SCALE}): {} in {:.0}s; {ticks} ticks, mean {mean_ms:.2} ms, p99 ≤ {:.1} ms, {slow} over 48.7 ms (4 start a wave); rows read per tick: mean {mean_rows:.1}, p99 ≤ {}; answers p50 {:.2} ms, p99 {:.2} ms, {errors} errors; server peak RSS {:.1} MiB",
        interval.as_secs(),
        row["state"],
        took.as_secs_f64(),
        row["tick_p99_ms_at_most"].as_f64().unwrap_or_default(),
        row["tick_rows_p99_at_most"],
        row["p50_ms"].as_f64().unwrap_or_default(),
        row["p99_ms"].as_f64().unwrap_or_default(),
        peak as f64 / MIB as f64,
    );
    Ok(row)
}
