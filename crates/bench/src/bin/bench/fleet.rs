//! OpAMP agents at scale over HTTP: N simulated agents register, then each sends a
//! heartbeat every `interval` (spread evenly), for a steady phase, while agents over
//! WebSocket do the same (`fleet_ws`). Measured: the answer
//! time, the server's peak memory, and the rows PostgreSQL wrote to the fleet's tables
//! during the steady phase, per heartbeat (its own statistics counters).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentpkg_fleet::proto::{AgentDescription, AgentToServer, AnyValue, KeyValue, any_value};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use prost::Message;
use serde_json::{Value, json};

use crate::fleet_ws::WsFleet;
use crate::measure::{RssSampler, percentile};
use agentpkg_bench::{MIB, Result, Server};

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Rows inserted, updated or deleted in the fleet's tables so far.
fn rows_written(url: &str) -> Result<i64> {
    let mut conn = PgConnection::establish(url)?;
    // The counters are reported with a small delay: ask for fresh ones.
    diesel::sql_query("SELECT pg_stat_clear_snapshot()").execute(&mut conn)?;
    let w: Written = diesel::sql_query(
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint AS n
         FROM pg_stat_user_tables WHERE relname IN ('agents', 'agent_packages')",
    )
    .get_result(&mut conn)?;
    Ok(w.n)
}

/// Agent `i`'s message number `seq`: its full state when `described`, else a heartbeat.
pub(crate) fn message(i: u64, seq: u64, described: bool) -> AgentToServer {
    let mut uid = [0u8; 16];
    uid[8..].copy_from_slice(&i.to_be_bytes());
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    };
    AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: seq,
        // ReportsStatus | AcceptsPackages | ReportsPackageStatuses | ReportsHeartbeat
        capabilities: 0x01 | 0x08 | 0x10 | 0x2000,
        agent_description: described.then(|| AgentDescription {
            identifying_attributes: vec![kv("service.name", "bench-agent")],
            non_identifying_attributes: vec![kv("os.type", "linux"), kv("host.arch", "amd64")],
        }),
        ..AgentToServer::default()
    }
}

/// How many agents, how often each sends a heartbeat, and for how long.
pub(crate) struct Load {
    /// Agents over HTTP.
    pub(crate) agents: u64,
    /// Agents over WebSocket, at the same time.
    pub(crate) ws_agents: u64,
    pub(crate) interval: Duration,
    pub(crate) steady: Duration,
}

/// Registers agents `0..agents` with their full state over OpAMP's HTTP transport, 64 at a
/// time; how long it took.
pub(crate) async fn register(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    agents: u64,
) -> Result<Duration> {
    let url = format!("{}/v1/opamp", server.base);
    let started = Instant::now();
    let ids: Vec<u64> = (0..agents).collect();
    for chunk in ids.chunks(64) {
        let answers = futures_util::future::join_all(chunk.iter().map(|&i| {
            client
                .post(&url)
                .bearer_auth(token)
                .header("Content-Type", "application/x-protobuf")
                .body(message(i, 0, true).encode_to_vec())
                .send()
        }))
        .await;
        for a in answers {
            if !a?.status().is_success() {
                return Err("an agent was refused".into());
            }
        }
    }
    Ok(started.elapsed())
}

pub(crate) async fn fleet_bench(
    client: &reqwest::Client,
    server: &Server,
    db_url: &str,
    token: &str,
    load: Load,
) -> Result<Value> {
    let Load {
        agents,
        ws_agents,
        interval,
        steady,
    } = load;
    let url = format!("{}/v1/opamp", server.base);
    let post = |body: Vec<u8>| {
        client
            .post(&url)
            .bearer_auth(token)
            .header("Content-Type", "application/x-protobuf")
            .body(body)
            .send()
    };
    let registered = register(client, server, token, agents).await?;
    println!(
        "\n{agents} agents registered in {:.1}s ({:.0}/s)",
        registered.as_secs_f64(),
        agents as f64 / registered.as_secs_f64()
    );

    // Steady phase: every agent sends a heartbeat once per interval, spread evenly.
    // PostgreSQL's backends report their row counts up to 10 s after going idle: let the
    // registration's be counted first.
    let ws = WsFleet::connect(server, token, ws_agents, interval).await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = rows_written(db_url)?;
    let sampler = RssSampler::start(server.pid());
    ws.start_heartbeats();
    let rate = agents as f64 / interval.as_secs_f64();
    let total = (rate * steady.as_secs_f64()) as u64;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for k in 0..total {
        let due = t0 + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let agent = k % agents;
        let seq = 1 + k / agents;
        let req = post(message(agent, seq, false).encode_to_vec());
        let (latencies, errors) = (latencies.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            match req.await {
                Ok(res) if res.status().is_success() => {
                    let _ = res.bytes().await;
                    latencies.lock().unwrap().push(sent.elapsed());
                }
                _ => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = t0.elapsed();
    let ws_heartbeats = ws.stop_heartbeats().await;
    let peak = sampler.finish();
    // Heartbeats are written in batches (fleet.seen_flush_secs): the batch that covers the
    // end of the phase is included by waiting for it.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let written = rows_written(db_url)? - before;
    let mut all = latencies.lock().unwrap().clone();
    all.sort();
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    let row = json!({
        "agents": agents,
        "interval_secs": interval.as_secs(),
        "heartbeats": all.len(),
        "heartbeats_per_s": all.len() as f64 / elapsed.as_secs_f64(),
        "p50_ms": percentile(&all, 0.5),
        "p99_ms": percentile(&all, 0.99),
        "errors": errors,
        "server_peak_rss_bytes": peak,
        "rows_written": written,
        "rows_written_per_heartbeat": written as f64 / all.len().max(1) as f64,
        "websocket": ws_heartbeats,
    });
    println!(
        "{agents} agents, a heartbeat each every {}s ({:.0}/s) for {}s: p50 {:.2} ms, p99 {:.2} ms, {errors} errors; server peak RSS {:.1} MiB; {written} rows written ({:.4} per heartbeat, the batched last-seen times)",
        interval.as_secs(),
        all.len() as f64 / elapsed.as_secs_f64(),
        steady.as_secs(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        peak as f64 / MIB as f64,
        written as f64 / all.len().max(1) as f64,
    );
    println!(
        "meanwhile {ws_agents} WebSocket agents, a heartbeat each every {}s: p50 {:.2} ms, p99 {:.2} ms, {} errors",
        interval.as_secs(),
        row["websocket"]["p50_ms"].as_f64().unwrap_or_default(),
        row["websocket"]["p99_ms"].as_f64().unwrap_or_default(),
        row["websocket"]["errors"],
    );
    let mut row = row;
    row["push"] = push(client, server, token, &ws).await?;
    Ok(row)
}

/// How long changes take to reach every WebSocket agent as a pushed offer.
async fn push(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    ws: &WsFleet,
) -> Result<Value> {
    let publish = |version: &str| {
        client
            .put(format!(
                "{}/api/v1/packages/bench-ws-agent/{version}/linux/amd64",
                server.base
            ))
            .bearer_auth(token)
            .body(format!("bench agent {version}"))
            .send()
    };
    if !publish("1.0.0").await?.status().is_success() {
        return Err("the pushed package was refused".into());
    }
    let since = Instant::now();
    let res = client
        .post(format!("{}/api/v1/assignments", server.base))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "package": "bench-ws-agent", "version": "latest",
            "selector": {"service.name": "bench-ws-agent"},
        }))
        .send()
        .await?;
    if !res.status().is_success() {
        return Err(format!("assignment refused: {}", res.text().await?).into());
    }
    let assigned = ws.pushed("1.0.0", since).await?;
    let since = Instant::now();
    if !publish("1.1.0").await?.status().is_success() {
        return Err("the pushed package was refused".into());
    }
    let published = ws.pushed("1.1.0", since).await?;
    println!(
        "pushed offers: an assignment reached all {} WebSocket agents in {:.0} ms (p50 {:.0} ms); a new version in {:.0} ms (p50 {:.0} ms, through the fleet revision read every 2 s)",
        assigned["agents"],
        assigned["last_ms"].as_f64().unwrap_or_default(),
        assigned["p50_ms"].as_f64().unwrap_or_default(),
        published["last_ms"].as_f64().unwrap_or_default(),
        published["p50_ms"].as_f64().unwrap_or_default(),
    );
    Ok(json!({ "assignment": assigned, "new_version": published }))
}
