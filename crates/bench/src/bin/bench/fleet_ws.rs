//! OpAMP agents over WebSocket, beside the HTTP ones: each holds one connection, sends a
//! heartbeat every `interval` (spread evenly) and times the answer; then, with heartbeats
//! stopped, how long a change takes to reach every agent as a pushed offer: an assignment
//! made on the server they are connected to (pushed at once), and a version published
//! (learnt from the fleet revision, read every `fleet.offer_watch_ms`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpkg_fleet::proto::{AgentToServer, ServerToAgent};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::fleet::message;
use crate::measure::percentile;
use agentpkg_bench::{Result, Server};

/// Agent numbers of the WebSocket agents start here, apart from the HTTP ones.
const FIRST: u64 = 1 << 40;

#[derive(Default)]
struct Shared {
    heartbeats_on: AtomicBool,
    latencies: Mutex<Vec<Duration>>,
    /// (agent, when, version offered) of each pushed offer.
    offers: Mutex<Vec<(u64, Instant, String)>>,
    errors: AtomicU64,
}

pub(crate) struct WsFleet {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    agents: u64,
}

fn frame(message: &AgentToServer) -> Message {
    let mut out = vec![0u8];
    message.encode(&mut out).unwrap_or_default();
    Message::binary(out)
}

impl WsFleet {
    /// Connects `agents` agents, each sending its full state; heartbeats start with
    /// [`WsFleet::start_heartbeats`].
    pub(crate) async fn connect(
        server: &Server,
        token: &str,
        agents: u64,
        interval: Duration,
    ) -> Result<Self> {
        let url = format!("{}/v1/opamp", server.base.replacen("http", "ws", 1));
        let shared = Arc::new(Shared::default());
        let started = Instant::now();
        let (ready_tx, mut ready) = tokio::sync::mpsc::channel::<Result<()>>(agents as usize);
        let mut tasks = Vec::new();
        for n in 0..agents {
            let mut request = url.as_str().into_client_request()?;
            request
                .headers_mut()
                .insert("Authorization", format!("Bearer {token}").parse()?);
            let (shared, ready_tx) = (shared.clone(), ready_tx.clone());
            let offset = interval.mul_f64(n as f64 / agents as f64);
            tasks.push(tokio::spawn(async move {
                let ws = match tokio_tungstenite::connect_async(request).await {
                    Ok((ws, _)) => ws,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let (mut tx, mut rx) = ws.split();
                let agent = FIRST + n;
                let mut hello = message(agent, 0, true);
                if let Some(d) = hello.agent_description.as_mut() {
                    d.identifying_attributes[0].value = Some(agentpkg_fleet::proto::AnyValue {
                        value: Some(agentpkg_fleet::proto::any_value::Value::StringValue(
                            "bench-ws-agent".into(),
                        )),
                    });
                }
                if tx.send(frame(&hello)).await.is_err() || rx.next().await.is_none() {
                    let _ = ready_tx
                        .send(Err("no answer to the full state".into()))
                        .await;
                    return;
                }
                let _ = ready_tx.send(Ok(())).await;
                drop(ready_tx);
                run(agent, tx, rx, shared, offset, interval).await;
            }));
        }
        drop(ready_tx);
        for _ in 0..agents {
            ready.recv().await.ok_or("an agent task ended")??;
        }
        let took = started.elapsed();
        println!(
            "{agents} WebSocket agents connected in {:.1}s",
            took.as_secs_f64()
        );
        Ok(Self {
            shared,
            tasks,
            agents,
        })
    }

    pub(crate) fn start_heartbeats(&self) {
        self.shared.heartbeats_on.store(true, Ordering::SeqCst);
    }

    /// Stops the heartbeats and returns their figures, once the answers in flight came.
    pub(crate) async fn stop_heartbeats(&self) -> Value {
        self.shared.heartbeats_on.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut all = self.shared.latencies.lock().unwrap().clone();
        all.sort();
        json!({
            "agents": self.agents,
            "heartbeats": all.len(),
            "p50_ms": percentile(&all, 0.5),
            "p99_ms": percentile(&all, 0.99),
            "errors": self.shared.errors.load(Ordering::Relaxed),
        })
    }

    /// Waits until every agent was pushed `version` and returns how long after `since`
    /// the offers came (p50, p99, last), in milliseconds.
    pub(crate) async fn pushed(&self, version: &str, since: Instant) -> Result<Value> {
        let deadline = since + Duration::from_secs(120);
        loop {
            let arrivals: Vec<Duration> = self
                .shared
                .offers
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, at, v)| v == version && *at >= since)
                .map(|(_, at, _)| *at - since)
                .collect();
            if arrivals.len() as u64 >= self.agents {
                let mut sorted = arrivals;
                sorted.sort();
                return Ok(json!({
                    "agents": sorted.len(),
                    "p50_ms": percentile(&sorted, 0.5),
                    "p99_ms": percentile(&sorted, 0.99),
                    "last_ms": percentile(&sorted, 1.0),
                }));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {} agents were pushed {version} in 120 s",
                    arrivals.len(),
                    self.agents
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WsFleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn run(
    agent: u64,
    mut tx: impl SinkExt<Message> + Unpin,
    mut rx: impl StreamExt<Item = std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>
    + Unpin,
    shared: Arc<Shared>,
    offset: Duration,
    interval: Duration,
) {
    let mut seq = 1;
    let mut outstanding = VecDeque::new();
    let mut next = tokio::time::Instant::now() + offset;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {
                next += interval;
                if !shared.heartbeats_on.load(Ordering::Relaxed) {
                    continue;
                }
                outstanding.push_back(Instant::now());
                if tx.send(frame(&message(agent, seq, false))).await.is_err() {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                seq += 1;
            }
            received = rx.next() => {
                let now = Instant::now();
                let Some(Ok(Message::Binary(bytes))) = received else {
                    if !matches!(received, Some(Ok(_))) {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    continue;
                };
                let Ok(answer) = ServerToAgent::decode(&bytes[1..]) else {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match answer.packages_available {
                    Some(available) => {
                        let version = available
                            .packages
                            .values()
                            .next()
                            .map(|p| p.version.clone())
                            .unwrap_or_default();
                        shared.offers.lock().unwrap().push((agent, now, version));
                    }
                    None => {
                        if let Some(sent) = outstanding.pop_front() {
                            shared.latencies.lock().unwrap().push(now - sent);
                        }
                    }
                }
            }
        }
    }
}
