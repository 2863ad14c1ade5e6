//! `--only pages`: the web interface at scale — N packages (inserted straight into
//! PostgreSQL) and M agents (registered over OpAMP), an assignment and a few downloads —
//! each page asked one request after another, as one person browsing, by p50 and p99.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fleet::register;
use crate::measure::percentile;
use crate::metadata::populate;
use agentpkg_bench::{Result, Server};

/// Requests per page, after as many again to warm up.
const ROUNDS: usize = 200;

pub(crate) async fn pages_bench(
    client: &reqwest::Client,
    server: &Server,
    db_url: &str,
    token: &str,
    packages: u64,
    agents: u64,
) -> Result<Value> {
    populate(db_url, packages)?;
    let took = register(client, server, token, agents).await?;
    println!(
        "\n{packages} packages inserted, {agents} agents registered in {:.1}s",
        took.as_secs_f64()
    );
    // One name published as a person would (the inserted ones have no owner, which a
    // name's page shows), for the name and package pages and the assignment.
    let res = client
        .put(format!(
            "{}/api/v1/packages/web-agent/1.0.0/linux/amd64",
            server.base
        ))
        .bearer_auth(token)
        .body("a build the pages show")
        .send()
        .await?;
    if !res.status().is_success() {
        return Err(format!("publish: {}", res.status()).into());
    }
    let res = client
        .post(format!("{}/api/v1/assignments", server.base))
        .bearer_auth(token)
        .json(&json!({"package": "web-agent"}))
        .send()
        .await?;
    if !res.status().is_success() {
        return Err(format!("assignment: {}", res.status()).into());
    }
    let cookie = sign_in(client, server).await?;
    let pages = [
        "/packages".to_owned(),
        "/packages?q=pkg-77".to_owned(),
        format!("/packages?page={}", packages / 100),
        // The pager's own links: by place, as cheap at the end as at the start.
        "/packages?after=pkg-5000%2F1.0.0%2Flinux%2Famd64".to_owned(),
        "/packages?last=on".to_owned(),
        "/packages/web-agent".to_owned(),
        "/packages/web-agent/1.0.0/linux/amd64".to_owned(),
        "/agents".to_owned(),
        "/agents?health=healthy&connected=yes".to_owned(),
        format!("/agents?page={}", agents / 100),
        "/agents/0000000000000000000000000000002a".to_owned(),
        "/assignments".to_owned(),
        "/assignments/1".to_owned(),
        "/stats".to_owned(),
        "/stats?days=90&platform=linux".to_owned(),
        "/audit".to_owned(),
        "/tokens".to_owned(),
        "/keys".to_owned(),
        "/teams".to_owned(),
        "/users".to_owned(),
    ];
    println!("page (one request at a time, {ROUNDS} each)            p50 ms   p99 ms");
    let mut rows = Vec::new();
    let mut worst: f64 = 0.0;
    for path in &pages {
        let url = format!("{}{path}", server.base);
        let mut times = Vec::with_capacity(ROUNDS);
        for round in 0..2 * ROUNDS {
            let sent = Instant::now();
            let res = client
                .get(&url)
                .header("Cookie", &cookie)
                .header("Accept", "text/html")
                .send()
                .await?;
            let status = res.status();
            res.bytes().await?;
            if !status.is_success() {
                return Err(format!("{path}: {status}").into());
            }
            if round >= ROUNDS {
                times.push(sent.elapsed());
            }
        }
        times.sort();
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        worst = worst.max(p99);
        println!("{path:<52} {p50:>7.2}  {p99:>7.2}");
        rows.push(json!({"page": path, "p50_ms": p50, "p99_ms": p99}));
    }
    println!("slowest page p99: {worst:.2} ms (target < 50 ms)");
    Ok(json!({
        "packages": packages,
        "agents": agents,
        "rounds": ROUNDS,
        "pages": rows,
        "worst_p99_ms": worst,
    }))
}

/// Signs in as the bench's admin through the sign-in form, as a browser does, and returns
/// the session cookie.
async fn sign_in(client: &reqwest::Client, server: &Server) -> Result<String> {
    let res = client.get(format!("{}/login", server.base)).send().await?;
    let csrf_cookie = cookie_named(&res, "agentpkg_login_csrf=").ok_or("no login cookie")?;
    let html = res.text().await?;
    let marker = "name=\"csrf\" value=\"";
    let at = html.find(marker).ok_or("no login form")? + marker.len();
    let csrf = html[at..].split('"').next().unwrap_or_default().to_owned();
    let res = client
        .post(format!("{}/login", server.base))
        .header("Cookie", csrf_cookie)
        .form(&[
            ("username", "admin"),
            ("password", "bench-admin-password"),
            ("next", "/packages"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await?;
    let session = cookie_named(&res, "agentpkg_session=").ok_or("sign-in refused")?;
    // Let the sign-in's own writes settle before timing anything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(session)
}

fn cookie_named(res: &reqwest::Response, prefix: &str) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(prefix))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}
