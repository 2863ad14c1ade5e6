//! The login flood (`--only flood`, and last in the full run): 64 connections send wrong passwords for 15 s while one client lists
//! packages with a valid token, one request after another. The server runs with the login
//! throttle off (`auth.login_attempts = 0`): a flood from many addresses is not stopped by
//! a per-address block, so what keeps everyone else fast is the bound on hashing. Measured:
//! the list's answer times before and during the flood, how the flood was answered, and the
//! server's peak memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::measure::{RssSampler, percentile};
use agentpkg_bench::{MIB, Result, Server};

/// The server's setting for a flood from many addresses, which a per-address block does not
/// stop.
pub(crate) const FROM_MANY_ADDRESSES: (&str, &str) = ("AGENTPKG__AUTH__LOGIN_ATTEMPTS", "0");

const CONNECTIONS: usize = 64;
const FLOOD: Duration = Duration::from_secs(15);

/// Lists packages one request after another until `stop`; each answer's time.
async fn read_until(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    stop: &AtomicBool,
    at_most: usize,
) -> Result<Vec<Duration>> {
    let mut times = Vec::new();
    while !stop.load(Ordering::Relaxed) && times.len() < at_most {
        let t = Instant::now();
        let res = client.get(url).bearer_auth(token).send().await?;
        let ok = res.status().is_success();
        res.bytes().await?;
        if !ok {
            return Err("an authenticated list was refused".into());
        }
        times.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    times.sort_unstable();
    Ok(times)
}

fn figures(times: &[Duration]) -> Value {
    json!({
        "requests": times.len(),
        "p50_ms": percentile(times, 0.50),
        "p99_ms": percentile(times, 0.99),
        "max_ms": times.last().map_or(0.0, |t| t.as_secs_f64() * 1000.0),
    })
}

pub(crate) async fn flood_bench(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
) -> Result<Value> {
    let list = format!("{}/api/v1/packages", server.base);
    let never = AtomicBool::new(false);
    let before = read_until(client, &list, token, &never, 300).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = RssSampler::start(server.pid());
    let mut flooders = Vec::new();
    for _ in 0..CONNECTIONS {
        // One connection each, as 64 clients would have.
        let flood_client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let (stop, url) = (stop.clone(), format!("{}/api/v1/auth/login", server.base));
        flooders.push(tokio::spawn(async move {
            let mut answers: BTreeMap<u16, u64> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let status = match flood_client
                    .post(&url)
                    .json(&json!({"username": "admin", "password": "not the password"}))
                    .send()
                    .await
                {
                    Ok(res) => res.status().as_u16(),
                    Err(_) => 0,
                };
                *answers.entry(status).or_default() += 1;
            }
            answers
        }));
    }
    // The flood is under way before the reads count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FLOOD).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let during = read_until(client, &list, token, &stop, usize::MAX).await?;
    timer.await?;
    let mut answers: BTreeMap<u16, u64> = BTreeMap::new();
    for f in flooders {
        for (status, n) in f.await? {
            *answers.entry(status).or_default() += n;
        }
    }
    let peak = sampler.finish();
    let (b, d) = (figures(&before), figures(&during));
    println!(
        "\nlogin flood ({CONNECTIONS} connections of wrong passwords for {} s, throttle off):",
        FLOOD.as_secs()
    );
    println!(
        "  authenticated list before: p50 {:.2} ms, p99 {:.2} ms ({} requests)",
        b["p50_ms"].as_f64().unwrap_or(0.0),
        b["p99_ms"].as_f64().unwrap_or(0.0),
        before.len()
    );
    println!(
        "  authenticated list during: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms ({} requests)",
        d["p50_ms"].as_f64().unwrap_or(0.0),
        d["p99_ms"].as_f64().unwrap_or(0.0),
        d["max_ms"].as_f64().unwrap_or(0.0),
        during.len()
    );
    println!(
        "  the flood's answers by status: {answers:?}; server peak RSS {:.1} MiB",
        peak as f64 / MIB as f64
    );
    Ok(json!({
        "before": b,
        "during": d,
        "flood_answers": answers.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "server_peak_rss_mib": peak as f64 / MIB as f64,
    }))
}
