//! Metadata at scale: packages inserted straight into PostgreSQL, and their reads' latency
//! from clients of this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{Value, json};

use crate::measure::percentile;
use agentpkg_bench::Result;

/// Inserts `n` packages (10 versions of n/10 names) straight into PostgreSQL.
pub(crate) fn populate(url: &str, n: u64) -> Result<()> {
    let mut conn = PgConnection::establish(url)?;
    // Every row needs a blob; these name objects that do not exist, which metadata reads
    // never touch.
    diesel::sql_query(format!(
        "INSERT INTO blobs (checksum, storage_path, file_size, created_at)
         SELECT lpad(to_hex(g), 64, '0'), 'packages/' || lpad(to_hex(g), 32, '0'), 1, now()
         FROM generate_series(1, {n}) AS g"
    ))
    .execute(&mut conn)?;
    diesel::sql_query(format!(
        "INSERT INTO packages (name, version, version_sort, prerelease, platform, arch, file_size,
                               checksum, storage_path, filename, description, is_active, created_at, updated_at)
         SELECT 'pkg-' || (g / 10), '1.' || (g % 10) || '.0',
                lpad('1', 20, '0') || '.' || lpad((g % 10)::text, 20, '0') || '.' || lpad('0', 20, '0') || '~',
                false, 'linux', 'amd64', 1, lpad(to_hex(g), 64, '0'), 'packages/' || lpad(to_hex(g), 32, '0'),
                'agent', '', true, now(), now()
         FROM generate_series(1, {n}) AS g"
    ))
    .execute(&mut conn)?;
    diesel::sql_query("ANALYZE").execute(&mut conn)?;
    Ok(())
}

/// `get` (with a session and with an API token), `latest` and a filtered list at 1, 8 and 64
/// clients of this process, over the `packages` that [`populate`] inserted: each row's
/// p50, p99 and rate.
pub(crate) async fn latencies(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    api_token: &str,
    packages: u64,
    quick: bool,
) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    println!(
        "{:<10} {:>8} {:>10} {:>10} {:>10}",
        "query", "clients", "p50 ms", "p99 ms", "req/s"
    );
    let names = (packages / 10).max(1);
    let get_url = move |i: u64| format!("/api/v1/packages/{}", 1 + i % packages);
    for (label, make_url, bearer) in [
        (
            "get",
            Box::new(get_url) as Box<dyn Fn(u64) -> String + Send + Sync>,
            token.to_owned(),
        ),
        ("get-apitok", Box::new(get_url), api_token.to_owned()),
        (
            "latest",
            Box::new(move |i: u64| {
                format!(
                    "/api/v1/packages/latest?name=pkg-{}&platform=linux&arch=amd64",
                    i % names
                )
            }),
            token.to_owned(),
        ),
        (
            "list",
            Box::new(move |i: u64| {
                format!(
                    "/api/v1/packages?name=pkg-{}&platform=linux&per_page=20",
                    i % names
                )
            }),
            token.to_owned(),
        ),
    ] {
        let make_url = Arc::new(make_url);
        for clients in [1u64, 8, 64] {
            let deadline = Instant::now() + Duration::from_secs(if quick { 2 } else { 4 });
            let workers = (0..clients).map(|c| {
                let client = client.clone();
                let token = bearer.clone();
                let base = base.to_owned();
                let make_url = make_url.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut errors = 0u64;
                    let mut i = c * 7919;
                    while Instant::now() < deadline && latencies.len() < 200_000 {
                        i += 1;
                        let started = Instant::now();
                        match client
                            .get(format!("{base}{}", make_url(i)))
                            .bearer_auth(&token)
                            .send()
                            .await
                        {
                            Ok(res) if res.status().is_success() => {
                                let _ = res.bytes().await;
                                latencies.push(started.elapsed());
                            }
                            _ => errors += 1,
                        }
                    }
                    (latencies, errors)
                })
            });
            let mut all = Vec::new();
            let mut errors = 0;
            let started = Instant::now();
            for w in futures_util::future::join_all(workers).await {
                let (l, e) = w?;
                all.extend(l);
                errors += e;
            }
            let elapsed = started.elapsed();
            all.sort();
            let row = json!({
                "query": label, "packages": packages, "clients": clients,
                "p50_ms": percentile(&all, 0.50), "p99_ms": percentile(&all, 0.99),
                "requests_per_s": all.len() as f64 / elapsed.as_secs_f64(), "errors": errors,
            });
            println!(
                "{:<10} {:>8} {:>10.2} {:>10.2} {:>10.0}{}",
                label,
                clients,
                percentile(&all, 0.5),
                percentile(&all, 0.99),
                all.len() as f64 / elapsed.as_secs_f64(),
                if errors > 0 {
                    format!("  ({errors} errors)")
                } else {
                    String::new()
                }
            );
            rows.push(row);
        }
    }
    Ok(rows)
}
