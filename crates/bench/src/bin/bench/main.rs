//! `just bench`: the release server on PostgreSQL + Garage, measured side by side with
//! direct S3 in one run, so that ratios hold on a noisy machine.
//!
//! - upload and download of 1 MiB, 100 MiB and 1 GiB through the API versus rust-s3
//!   directly (and versus the presigned redirect), with the server's peak resident memory;
//! - metadata latency (`get`, `latest`, a filtered list) at N packages with 1, 8 and 64
//!   concurrent clients;
//! - 200 concurrent downloads of a 10 MiB package versus 200 direct S3 GETs;
//! - resumable (tus) uploads, 8 MiB chunks on one connection and four partial uploads,
//!   against the one-request upload;
//! - metadata reads with wrk against `/healthz`, read cache on and off (when wrk is
//!   installed);
//! - downloads with counting on against off, and `/stats/top` and `/stats/storage` at N
//!   packages with 100 downloads per package (10 million at 100 000) over 90 days;
//! - last, a login flood: an authenticated list's answer times while 64 connections send
//!   wrong passwords (on a second server whose per-address block is off).
//!
//! Loopback only; every loop is bounded in count and time. Needs `scripts/s3-up.sh` and the
//! local PostgreSQL. Flags: `--quick` (small sizes, 2 000 packages), `--packages N`,
//! `--sizes 1,1024` (package sizes in MiB), `--only resumable` (the tus comparison alone),
//! `--only stats` (the statistics section alone), `--only fleet [--agents N] [--ws-agents N]`
//! (OpAMP agents over HTTP and over WebSocket, a heartbeat each every 30 s, then offers
//! pushed to the WebSocket ones), `--only cli` (`agentpkg push` and `pull` against curl,
//! for `--sizes`, `--rounds N`; with `--client-core`, the clients get one core and the
//! server and Garage the other, as if the client ran on a machine of its own),
//! `--only pages [--packages N] [--agents N]` (every page of the web interface, p50 and
//! p99, at N packages and N agents), `--only flood` (wrong passwords on 64 connections for
//! 15 s, the login throttle off: an authenticated list's answer times before and during),
//! `--only rollout [--agents N]` (a four-wave progressive rollout to N agents polling
//! over HTTP, on a rollout clock 600 times as fast: the engine's time and rows per tick),
//! `--only reads [--packages N]` (`wrk` against `/healthz`, a package by id and `latest`,
//! at 8 and 64 connections, with package reads kept in memory and without),
//! `--out PATH` (JSON, default target/bench/results.json).

// A benchmark reports on standard output.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentpkg_store::testing::TestDatabase;

use futures_util::StreamExt;
use serde_json::{Value, json};

mod cli;
mod concurrent;
mod curl;
mod fleet;
mod fleet_ws;
mod flood;
mod measure;
mod metadata;
mod pages;
mod reads;
mod resumable;
mod rollout;
mod signed;
mod stats;

use agentpkg_bench::{MIB, Result, raw_bucket, remove_bucket, s3_env, start_server};
use curl::curl_comparison;
use measure::{RssSampler, drain, file_body, make_file, mb_per_s};
use metadata::populate;
use resumable::resumable_uploads;
use signed::signed_uploads;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let packages: u64 = flag("--packages").map_or(if quick { 2_000 } else { 100_000 }, |v| {
        v.parse().unwrap_or(10_000)
    });
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = flag("--out").map_or_else(|| root.join("target/bench/results.json"), PathBuf::from);
    let bin = std::env::current_exe()?
        .parent()
        .map(|d| d.join("agentpkg-server"))
        .ok_or("cannot find agentpkg-server next to the bench")?;
    let sizes: Vec<u64> = match flag("--sizes") {
        // `--sizes 1,1024`: package sizes in MiB.
        Some(list) => list
            .split(',')
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .map(|m| m * MIB)
            .collect(),
        None if quick => vec![MIB, 20 * MIB],
        None => vec![MIB, 100 * MIB, 1024 * MIB],
    };

    let s3env = s3_env(&root)?;
    let db = TestDatabase::create();
    let bucket_name = format!(
        "agentpkg-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    // As the README starts it, unless `--tuned`.
    let tuned = args.iter().any(|a| a == "--tuned");
    let mut extra: Vec<(&str, &str)> = if tuned {
        agentpkg_bench::TUNED.to_vec()
    } else {
        Vec::new()
    };
    if flag("--only").as_deref() == Some("flood") {
        extra.push(flood::FROM_MANY_ADDRESSES);
    }
    if flag("--only").as_deref() == Some("rollout") {
        // The rollout clock runs fast, so that a four-wave rollout ends in minutes.
        extra.push(("AGENTPKG__FLEET__ROLLOUT_TIME_SCALE", rollout::SCALE));
    }
    let server = start_server(&bin, db.url(), &s3env, &bucket_name, &extra)?;
    // The same server with package reads from memory off, to compare reads with.
    let start_uncached = || {
        start_server(
            &bin,
            db.url(),
            &s3env,
            &bucket_name,
            &[extra.as_slice(), &[reads::UNCACHED]].concat(),
        )
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()?;
    let login: Value = client
        .post(format!("{}/api/v1/auth/login", server.base))
        .json(&json!({"username": "admin", "password": "bench-admin-password"}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"].as_str().ok_or("login failed")?.to_owned();
    // An API token too, to compare the per-request cost of checking one with a session's.
    let created: Value = client
        .post(format!("{}/api/v1/tokens", server.base))
        .bearer_auth(&token)
        .json(&json!({"name": "bench", "scope": "read"}))
        .send()
        .await?
        .json()
        .await?;
    let api_token = created["secret"]
        .as_str()
        .ok_or("token creation failed")?
        .to_owned();
    let bucket = raw_bucket(&s3env, &bucket_name)?;
    let tmp = tempfile::tempdir()?;
    let (_, hwm_start) = server.memory();
    println!(
        "server pid {} on {}; resident at start {:.1} MiB",
        server.pid(),
        server.base,
        hwm_start as f64 / MIB as f64
    );
    let mut results = json!({ "transfers": [], "metadata": [], "concurrent_downloads": {} });

    // `--only resumable`: the tus comparison alone, at each size.
    if flag("--only").as_deref() == Some("resumable") {
        let mut rows = Vec::new();
        for &size in &sizes {
            rows.push(resumable_uploads(&client, &server, &token, tmp.path(), size).await?);
        }
        results["resumable_uploads"] = json!(rows);
        return finish(&out, &results, server, &bucket).await;
    }

    // `--only cli`: `agentpkg push` and `pull` against curl.
    if flag("--only").as_deref() == Some("cli") {
        let dir = tempfile::tempdir_in(root.join("target"))?;
        let mut rows = Vec::new();
        for &size in &sizes {
            rows.push(cli::cli_comparison(
                &server,
                &token,
                dir.path(),
                size,
                flag("--rounds")
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(if quick { 1 } else { 3 }),
                args.iter().any(|a| a == "--client-core"),
            )?);
        }
        results["cli"] = json!(rows);
        return finish(&out, &results, server, &bucket).await;
    }

    // `--only fleet`: OpAMP agents over HTTP.
    if flag("--only").as_deref() == Some("fleet") {
        let agents: u64 = flag("--agents").map_or(if quick { 1_000 } else { 10_000 }, |v| {
            v.parse().unwrap_or(10_000)
        });
        let ws_agents: u64 = flag("--ws-agents").map_or(if quick { 100 } else { 1_000 }, |v| {
            v.parse().unwrap_or(1_000)
        });
        results["fleet"] = fleet::fleet_bench(
            &client,
            &server,
            db.url(),
            &token,
            fleet::Load {
                agents,
                ws_agents,
                interval: Duration::from_secs(30),
                steady: Duration::from_secs(if quick { 30 } else { 60 }),
            },
        )
        .await?;
        return finish(&out, &results, server, &bucket).await;
    }

    // `--only pages`: the web interface's pages at scale.
    if flag("--only").as_deref() == Some("pages") {
        let agents: u64 = flag("--agents").map_or(if quick { 1_000 } else { 10_000 }, |v| {
            v.parse().unwrap_or(10_000)
        });
        results["pages"] =
            pages::pages_bench(&client, &server, db.url(), &token, packages, agents).await?;
        return finish(&out, &results, server, &bucket).await;
    }

    // `--only flood`: wrong passwords on 64 connections while a client lists packages.
    if flag("--only").as_deref() == Some("flood") {
        results["login_flood"] = flood::flood_bench(&client, &server, &token).await?;
        return finish(&out, &results, server, &bucket).await;
    }

    // `--only reads`: metadata reads with wrk, with and without the read cache.
    if flag("--only").as_deref() == Some("reads") {
        let packages = packages.max(10_000);
        populate(db.url(), packages)?;
        let uncached = start_uncached()?;
        results["reads"] = reads::reads_bench(&server, &uncached, &token, tmp.path(), packages)?;
        drop(uncached);
        return finish(&out, &results, server, &bucket).await;
    }

    // `--only rollout`: a progressive rollout at scale.
    if flag("--only").as_deref() == Some("rollout") {
        let agents: u64 = flag("--agents").map_or(if quick { 1_000 } else { 10_000 }, |v| {
            v.parse().unwrap_or(10_000)
        });
        results["rollout"] = rollout::rollout_bench(
            &client,
            &server,
            &token,
            agents,
            Duration::from_secs(if quick { 10 } else { 30 }),
        )
        .await?;
        return finish(&out, &results, server, &bucket).await;
    }

    // `--only stats`: counting on and off, then the reports at scale.
    if flag("--only").as_deref() == Some("stats") {
        results["statistics"] = stats::statistics_section(
            &client,
            &server,
            &bin,
            &db,
            &s3env,
            &bucket_name,
            &token,
            tmp.path(),
            packages,
            *sizes.last().ok_or("no sizes")?,
            quick,
            true,
        )
        .await?;
        return finish(&out, &results, server, &bucket).await;
    }

    // --- uploads and downloads ------------------------------------------------------------
    println!(
        "\n{:<8} {:>12} {:>12} {:>7} {:>12} {:>12} {:>12} {:>7} {:>14} {:>14}",
        "size",
        "API up MB/s",
        "S3 up MB/s",
        "ratio",
        "API dn MB/s",
        "S3 dn MB/s",
        "redir MB/s",
        "ratio",
        "peak RSS up",
        "peak RSS dn"
    );
    for (i, &size) in sizes.iter().enumerate() {
        let rounds = match size {
            s if s <= MIB => 10,
            s if s <= 100 * MIB => 2,
            _ => 1,
        };
        let path = make_file(tmp.path(), size, i as u8)?;
        let (mut api_up, mut s3_up, mut api_dn, mut s3_dn, mut redir_dn) = (
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        let (mut rss_up, mut rss_dn) = (0u64, 0u64);
        for r in 0..rounds {
            // Alternate who goes first, so neither always gets the warmer cache.
            let version = format!("{}.{}.{r}", i + 1, size / MIB);
            let url = format!(
                "{}/api/v1/packages/bench/{version}/linux/amd64",
                server.base
            );
            let direct_key = format!("direct/{size}-{r}");
            for api_first in [r % 2 == 0, r % 2 != 0] {
                if api_first {
                    // Each round uploads other bytes: the registry deduplicates identical ones.
                    let sampler = RssSampler::start(server.pid());
                    let started = Instant::now();
                    // With its length, as curl -T sends it.
                    let res = client
                        .put(&url)
                        .bearer_auth(&token)
                        .header("content-length", size)
                        .body(file_body(&path).await?)
                        .send()
                        .await?;
                    api_up += started.elapsed();
                    rss_up = rss_up.max(sampler.finish());
                    if res.status() != 201 {
                        return Err(format!(
                            "upload answered {}: {}",
                            res.status(),
                            res.text().await?
                        )
                        .into());
                    }
                    let id = res.json::<Value>().await?["id"].as_i64().ok_or("no id")?;
                    // Make the next round's bytes differ.
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(&[r as u8 + 1; 8]))?;
                    let sampler = RssSampler::start(server.pid());
                    let started = Instant::now();
                    let n = drain(
                        client
                            .get(format!("{}/api/v1/packages/{id}/download", server.base))
                            .bearer_auth(&token)
                            .send()
                            .await?,
                    )
                    .await?;
                    api_dn += started.elapsed();
                    rss_dn = rss_dn.max(sampler.finish());
                    assert_eq!(n, size);
                    let started = Instant::now();
                    let res = client
                        .get(format!(
                            "{}/api/v1/packages/{id}/download?redirect=true",
                            server.base
                        ))
                        .bearer_auth(&token)
                        .send()
                        .await?;
                    let location = res
                        .headers()
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .ok_or("no redirect")?
                        .to_owned();
                    let n = drain(client.get(location).send().await?).await?;
                    redir_dn += started.elapsed();
                    assert_eq!(n, size);
                } else {
                    let mut file = tokio::fs::File::open(&path).await?;
                    let started = Instant::now();
                    bucket
                        .put_object_stream_builder(&direct_key)
                        .with_max_concurrent_chunks(2)
                        .execute_stream(&mut file)
                        .await?;
                    s3_up += started.elapsed();
                    let started = Instant::now();
                    let mut stream = bucket.get_object_stream(&direct_key).await?;
                    let mut n = 0u64;
                    while let Some(chunk) = stream.bytes().next().await {
                        n += chunk?.len() as u64;
                    }
                    s3_dn += started.elapsed();
                    assert_eq!(n, size);
                    bucket.delete_object(&direct_key).await?;
                }
            }
        }
        let total = size * rounds;
        let row = json!({
            "size_bytes": size,
            "rounds": rounds,
            "api_upload_mb_s": mb_per_s(total, api_up),
            "s3_upload_mb_s": mb_per_s(total, s3_up),
            "upload_ratio": s3_up.as_secs_f64() / api_up.as_secs_f64(),
            "api_download_mb_s": mb_per_s(total, api_dn),
            "s3_download_mb_s": mb_per_s(total, s3_dn),
            "redirect_download_mb_s": mb_per_s(total, redir_dn),
            "download_ratio": s3_dn.as_secs_f64() / api_dn.as_secs_f64(),
            "server_peak_rss_upload_bytes": rss_up,
            "server_peak_rss_download_bytes": rss_dn,
        });
        println!(
            "{:<8} {:>12.1} {:>12.1} {:>7.2} {:>12.1} {:>12.1} {:>12.1} {:>7.2} {:>11.1} MiB {:>11.1} MiB",
            format!("{} MiB", size / MIB),
            row["api_upload_mb_s"].as_f64().unwrap_or(0.0),
            row["s3_upload_mb_s"].as_f64().unwrap_or(0.0),
            row["upload_ratio"].as_f64().unwrap_or(0.0),
            row["api_download_mb_s"].as_f64().unwrap_or(0.0),
            row["s3_download_mb_s"].as_f64().unwrap_or(0.0),
            row["redirect_download_mb_s"].as_f64().unwrap_or(0.0),
            row["download_ratio"].as_f64().unwrap_or(0.0),
            rss_up as f64 / MIB as f64,
            rss_dn as f64 / MIB as f64,
        );
        results["transfers"].as_array_mut().ok_or("json")?.push(row);
        std::fs::remove_file(&path)?;
    }

    // --- what a user would do with curl: straight to S3, through the API, direct ----------
    let mut curl_rows = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        curl_rows.push(
            curl_comparison(&client, &server, &token, &bucket, tmp.path(), size, i as u8).await?,
        );
    }
    results["curl"] = json!(curl_rows);

    // --- signed against unsigned uploads ---------------------------------------------------
    let signed_size = *sizes.last().ok_or("no sizes")?;
    results["signed_uploads"] =
        signed_uploads(&client, &server, &token, tmp.path(), signed_size).await?;

    // --- resumable (tus) uploads against the one-request upload ---------------------------
    results["resumable_uploads"] =
        resumable_uploads(&client, &server, &token, tmp.path(), signed_size).await?;

    // --- 200 concurrent downloads of 10 MiB -----------------------------------------------
    results["concurrent_downloads"] =
        concurrent::downloads(&client, &server, &bucket, &token, tmp.path()).await?;

    // --- metadata at scale ------------------------------------------------------------------
    let started = Instant::now();
    populate(db.url(), packages)?;
    println!(
        "\ninserted {packages} packages in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    results["metadata"] = json!(
        metadata::latencies(&client, &server.base, &token, &api_token, packages, quick).await?
    );

    // --- the same reads with wrk, against /healthz, with the read cache and without --------
    if reads::wrk_installed() {
        let uncached = start_uncached()?;
        results["reads"] = reads::reads_bench(&server, &uncached, &token, tmp.path(), packages)?;
    } else {
        println!("\nwrk is not installed (apt-get install wrk): the wrk reads are skipped");
    }

    // --- download counting and the statistics reports --------------------------------------
    results["statistics"] = stats::statistics_section(
        &client,
        &server,
        &bin,
        &db,
        &s3env,
        &bucket_name,
        &token,
        tmp.path(),
        packages,
        *sizes.last().ok_or("no sizes")?,
        quick,
        false,
    )
    .await?;

    // --- a login flood, last: the wrong passwords throttle the account it names ---------------
    let flooded = start_server(
        &bin,
        db.url(),
        &s3env,
        &bucket_name,
        &[extra.as_slice(), &[flood::FROM_MANY_ADDRESSES]].concat(),
    )?;
    results["login_flood"] = flood::flood_bench(&client, &flooded, &token).await?;
    drop(flooded);

    let (_, hwm) = server.memory();
    results["server_peak_rss_bytes"] = json!(hwm);
    results["packages"] = json!(packages);
    println!(
        "\nserver peak resident memory over the whole run: {:.1} MiB",
        hwm as f64 / MIB as f64
    );
    finish(&out, &results, server, &bucket).await
}

/// Writes the results, stops the server, and empties and removes the bucket.
async fn finish(
    out: &Path,
    results: &Value,
    server: agentpkg_bench::Server,
    bucket: &s3::Bucket,
) -> Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(results)?)?;
    println!("results written to {}", out.display());
    drop(server);
    remove_bucket(bucket).await
}
