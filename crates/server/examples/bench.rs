//! `just bench`: the release server on PostgreSQL + Garage, measured side by side with
//! direct S3 in one run, so that ratios hold on a noisy machine.
//!
//! - upload and download of 1 MiB, 100 MiB and 1 GiB through the API versus rust-s3
//!   directly (and versus the presigned redirect), with the server's peak resident memory;
//! - metadata latency (`get`, `latest`, a filtered list) at N packages with 1, 8 and 64
//!   concurrent clients;
//! - 200 concurrent downloads of a 10 MiB package versus 200 direct S3 GETs.
//!
//! Loopback only; every loop is bounded in count and time. Needs `scripts/s3-up.sh` and the
//! local PostgreSQL. Flags: `--quick` (small sizes, 2 000 packages), `--packages N`,
//! `--sizes 1,1024` (package sizes in MiB),
//! `--out PATH` (JSON, default target/bench/results.json).

// A benchmark reports on standard output.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentpkg_store::testing::TestDatabase;
use diesel::{Connection, PgConnection, RunQueryDsl};
use futures_util::StreamExt;
use serde_json::{Value, json};

mod support;

use support::{MIB, Result, raw_bucket, remove_bucket, s3_env, start_server};

/// Samples the server's resident memory until stopped; returns the highest sample.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kb) = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
                {
                    p.fetch_max(kb * 1024, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            peak,
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// A file of `size` bytes that does not compress or deduplicate.
fn make_file(dir: &Path, size: u64, seed: u8) -> Result<PathBuf> {
    let path = dir.join(format!("pkg-{size}-{seed}"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut block = vec![0u8; MIB as usize];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(seed) ^ size;
    let mut written = 0;
    while written < size {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = (size - written).min(MIB) as usize;
        file.write_all(&block[..n])?;
        written += n as u64;
    }
    file.flush()?;
    Ok(path)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

async fn file_body(path: &Path) -> Result<reqwest::Body> {
    let file = tokio::fs::File::open(path).await?;
    Ok(reqwest::Body::wrap_stream(
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024),
    ))
}

async fn drain(res: reqwest::Response) -> Result<u64> {
    let status = res.status();
    if !status.is_success() {
        return Err(format!("status {status}").into());
    }
    let mut n = 0;
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        n += chunk?.len() as u64;
    }
    Ok(n)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

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
        .and_then(Path::parent)
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
    let server = start_server(
        &bin,
        db.url(),
        &s3env,
        &bucket_name,
        if tuned { support::TUNED } else { &[] },
    )?;
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

    // --- 200 concurrent downloads of 10 MiB -----------------------------------------------
    let path = make_file(tmp.path(), 10 * MIB, 200)?;
    let res = client
        .put(format!(
            "{}/api/v1/packages/concurrent/1.0.0/linux/amd64",
            server.base
        ))
        .bearer_auth(&token)
        .body(file_body(&path).await?)
        .send()
        .await?;
    let id = res.json::<Value>().await?["id"].as_i64().ok_or("no id")?;
    let mut file = tokio::fs::File::open(&path).await?;
    bucket
        .put_object_stream_builder("direct/concurrent")
        .execute_stream(&mut file)
        .await?;
    let sampler = RssSampler::start(server.pid());
    let started = Instant::now();
    let api = futures_util::future::join_all((0..200).map(|_| {
        let req = client
            .get(format!("{}/api/v1/packages/{id}/download", server.base))
            .bearer_auth(&token);
        async move { drain(req.send().await?).await }
    }))
    .await;
    let api_time = started.elapsed();
    let rss_concurrent = sampler.finish();
    let api_errors = api
        .iter()
        .filter(|r| !matches!(r, Ok(n) if *n == 10 * MIB))
        .count();
    let started = Instant::now();
    let direct = futures_util::future::join_all((0..200).map(|_| {
        let bucket = bucket.clone();
        async move {
            let mut stream = bucket.get_object_stream("direct/concurrent").await?;
            let mut n = 0u64;
            while let Some(chunk) = stream.bytes().next().await {
                n += chunk?.len() as u64;
            }
            Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(n)
        }
    }))
    .await;
    let direct_time = started.elapsed();
    let direct_errors = direct
        .iter()
        .filter(|r| !matches!(r, Ok(n) if *n == 10 * MIB))
        .count();
    results["concurrent_downloads"] = json!({
        "clients": 200, "size_bytes": 10 * MIB,
        "api_aggregate_mb_s": mb_per_s(200 * 10 * MIB, api_time),
        "s3_aggregate_mb_s": mb_per_s(200 * 10 * MIB, direct_time),
        "api_errors": api_errors, "s3_errors": direct_errors,
        "server_peak_rss_bytes": rss_concurrent,
    });
    println!(
        "\n200 concurrent downloads of 10 MiB: API {:.1} MB/s ({} errors, peak RSS {:.1} MiB), direct S3 {:.1} MB/s ({} errors)",
        mb_per_s(200 * 10 * MIB, api_time),
        api_errors,
        rss_concurrent as f64 / MIB as f64,
        mb_per_s(200 * 10 * MIB, direct_time),
        direct_errors
    );

    // --- metadata at scale ------------------------------------------------------------------
    let started = Instant::now();
    populate(db.url(), packages)?;
    println!(
        "\ninserted {packages} packages in {:.1}s",
        started.elapsed().as_secs_f64()
    );
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
            token.clone(),
        ),
        ("get-apitok", Box::new(get_url), api_token.clone()),
        (
            "latest",
            Box::new(move |i: u64| {
                format!(
                    "/api/v1/packages/latest?name=pkg-{}&platform=linux&arch=amd64",
                    i % names
                )
            }),
            token.clone(),
        ),
        (
            "list",
            Box::new(move |i: u64| {
                format!(
                    "/api/v1/packages?name=pkg-{}&platform=linux&per_page=20",
                    i % names
                )
            }),
            token.clone(),
        ),
    ] {
        let make_url = Arc::new(make_url);
        for clients in [1u64, 8, 64] {
            let deadline = Instant::now() + Duration::from_secs(if quick { 2 } else { 4 });
            let workers = (0..clients).map(|c| {
                let client = client.clone();
                let token = bearer.clone();
                let base = server.base.clone();
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
            results["metadata"].as_array_mut().ok_or("json")?.push(row);
        }
    }

    let (_, hwm) = server.memory();
    results["server_peak_rss_bytes"] = json!(hwm);
    results["packages"] = json!(packages);
    println!(
        "\nserver peak resident memory over the whole run: {:.1} MiB",
        hwm as f64 / MIB as f64
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&results)?)?;
    println!("results written to {}", out.display());

    // Empty and remove the bucket.
    drop(server);
    remove_bucket(&bucket).await?;
    Ok(())
}

/// `curl` with `args`, its output discarded; the time it took. Fails unless it answers 2xx.
fn curl(args: &[&str]) -> Result<Duration> {
    let started = Instant::now();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-f", "-o", "/dev/null"])
        .args(args)
        .output()?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(took)
}

/// A user's choices with `curl`, alternating, for `size` bytes: straight to S3 with a
/// presigned URL (single `PUT`, plain `GET`), through the API (`curl -T`, download), and a
/// direct upload (its two API calls plus the `curl -T` to S3).
#[allow(clippy::too_many_arguments)]
async fn curl_comparison(
    client: &reqwest::Client,
    server: &support::Server,
    token: &str,
    bucket: &s3::Bucket,
    dir: &Path,
    size: u64,
    seed: u8,
) -> Result<Value> {
    use sha2::Digest;
    let rounds: u32 = match size {
        s if s <= MIB => 10,
        s if s <= 100 * MIB => 3,
        _ => 2,
    };
    let path = make_file(dir, size, seed.wrapping_add(100))?;
    let file = path.to_str().ok_or("path")?.to_owned();
    let auth = format!("Authorization: Bearer {token}");
    let (mut s3_up, mut api_up, mut direct_up, mut s3_dn, mut api_dn) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut rss = 0u64;
    for r in 0..rounds {
        let mut order = [0u8, 1, 2];
        order.rotate_left((r % 3) as usize);
        for which in order {
            // Other bytes for every upload: the registry deduplicates identical ones.
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(&(r * 3 + u32::from(which)).to_le_bytes()))?;
            let version = format!("{}.{r}.{which}", size / MIB + 1);
            match which {
                0 => {
                    let key = format!("curl/{size}-{r}");
                    let url = bucket.presign_put(&key, 600, None, None).await?;
                    s3_up += curl(&["-T", &file, &url])?;
                    let url = bucket.presign_get(&key, 600, None).await?;
                    s3_dn += curl(&[&url])?;
                    bucket.delete_object(&key).await?;
                }
                1 => {
                    let url = format!(
                        "{}/api/v1/packages/curl-bench/{version}/linux/amd64",
                        server.base
                    );
                    let sampler = RssSampler::start(server.pid());
                    api_up += curl(&["-T", &file, "-H", &auth, &url])?;
                    rss = rss.max(sampler.finish());
                    let sampler = RssSampler::start(server.pid());
                    api_dn += curl(&["-H", &auth, &format!("{url}/download")])?;
                    rss = rss.max(sampler.finish());
                }
                _ => {
                    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&path)?));
                    let started = Instant::now();
                    let grant: Value = client
                        .post(format!("{}/api/v1/uploads/direct", server.base))
                        .bearer_auth(token)
                        .json(&json!({"name": "direct-bench", "version": version,
                            "platform": "linux", "arch": "amd64", "size": size, "sha256": digest}))
                        .send()
                        .await?
                        .json()
                        .await?;
                    let url = grant["url"].as_str().ok_or("no grant")?;
                    let mut args = vec!["-T".to_owned(), file.clone()];
                    for (name, value) in grant["headers"].as_object().ok_or("no headers")? {
                        args.push("-H".into());
                        args.push(format!("{name}: {}", value.as_str().unwrap_or_default()));
                    }
                    args.push(url.to_owned());
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    curl(&args)?;
                    let res = client
                        .post(format!(
                            "{}{}",
                            server.base,
                            grant["complete_url"].as_str().ok_or("no complete_url")?
                        ))
                        .bearer_auth(token)
                        .send()
                        .await?;
                    direct_up += started.elapsed();
                    if res.status() != 201 {
                        return Err(format!("completion answered {}", res.status()).into());
                    }
                }
            }
        }
    }
    std::fs::remove_file(&path)?;
    let total = size * u64::from(rounds);
    let row = json!({
        "size_bytes": size,
        "rounds": rounds,
        "curl_s3_upload_mb_s": mb_per_s(total, s3_up),
        "curl_api_upload_mb_s": mb_per_s(total, api_up),
        "direct_upload_mb_s": mb_per_s(total, direct_up),
        "curl_s3_download_mb_s": mb_per_s(total, s3_dn),
        "curl_api_download_mb_s": mb_per_s(total, api_dn),
        "api_upload_ratio": s3_up.as_secs_f64() / api_up.as_secs_f64(),
        "direct_upload_ratio": s3_up.as_secs_f64() / direct_up.as_secs_f64(),
        "api_download_ratio": s3_dn.as_secs_f64() / api_dn.as_secs_f64(),
        "server_peak_rss_bytes": rss,
    });
    println!(
        "curl {:>5} MiB: up S3 {:.1} / API {:.1} ({:.2}x) / direct {:.1} MB/s ({:.2}x); \
         down S3 {:.1} / API {:.1} MB/s ({:.2}x); peak RSS {:.1} MiB",
        size / MIB,
        row["curl_s3_upload_mb_s"].as_f64().unwrap_or(0.0),
        row["curl_api_upload_mb_s"].as_f64().unwrap_or(0.0),
        row["api_upload_ratio"].as_f64().unwrap_or(0.0),
        row["direct_upload_mb_s"].as_f64().unwrap_or(0.0),
        row["direct_upload_ratio"].as_f64().unwrap_or(0.0),
        row["curl_s3_download_mb_s"].as_f64().unwrap_or(0.0),
        row["curl_api_download_mb_s"].as_f64().unwrap_or(0.0),
        row["api_download_ratio"].as_f64().unwrap_or(0.0),
        rss as f64 / MIB as f64,
    );
    Ok(row)
}

/// Runs GnuPG in `home` (no passphrase); its standard output.
fn gpg(home: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = std::process::Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--yes", "--quiet", "--pinentry-mode", "loopback"])
        .args(["--passphrase", ""])
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!("gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(out.stdout)
}

/// Uploads of `size` bytes through the raw `PUT`, unsigned and with a GnuPG signature in
/// `X-Signature` (SHA-256: the upload's own digest completes it), alternating; then one
/// form upload whose SHA-512 signature comes after the file, which costs a second read of
/// the stored object. Times and the server's peak memory.
async fn signed_uploads(
    client: &reqwest::Client,
    server: &support::Server,
    token: &str,
    dir: &Path,
    size: u64,
) -> Result<Value> {
    use base64::Engine;
    let home = tempfile::tempdir()?;
    gpg(
        home.path(),
        &[
            "--quick-gen-key",
            "Bench <bench@example.com>",
            "ed25519",
            "sign",
            "never",
        ],
    )?;
    let key = String::from_utf8(gpg(
        home.path(),
        &["--armor", "--export", "bench@example.com"],
    )?)?;
    let res = client
        .post(format!("{}/api/v1/keys", server.base))
        .bearer_auth(token)
        .json(&json!({"key": key, "patterns": ["signed-bench"]}))
        .send()
        .await?;
    if res.status() != 201 {
        return Err(format!("key registration answered {}", res.status()).into());
    }
    let path = make_file(dir, size, 77)?;
    let sign = |digest: &str| -> Result<Vec<u8>> {
        gpg(
            home.path(),
            &[
                "--digest-algo",
                digest,
                "--output",
                "-",
                "--detach-sign",
                path.to_str().ok_or("path")?,
            ],
        )
    };
    let rounds: u64 = if size <= 100 * MIB { 3 } else { 2 };
    let (mut plain, mut signed, mut rss) = (Duration::ZERO, Duration::ZERO, 0u64);
    for r in 0..rounds {
        for signed_first in [r % 2 == 0, r % 2 != 0] {
            // Other bytes each time (dedup would make later uploads free).
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(&[(2 * r) as u8 + u8::from(signed_first); 8]))?;
            let version = format!("1.{r}.{}", u8::from(signed_first));
            let url = format!(
                "{}/api/v1/packages/signed-bench/{version}/linux/amd64",
                server.base
            );
            let mut req = client.put(&url).bearer_auth(token);
            if signed_first {
                let sig = sign("SHA256")?;
                req = req.header(
                    "X-Signature",
                    base64::engine::general_purpose::STANDARD.encode(sig),
                );
            }
            let sampler = RssSampler::start(server.pid());
            let started = Instant::now();
            let res = req
                .header("content-length", size)
                .body(file_body(&path).await?)
                .send()
                .await?;
            let took = started.elapsed();
            rss = rss.max(sampler.finish());
            if res.status() != 201 {
                return Err(
                    format!("upload answered {}: {}", res.status(), res.text().await?).into(),
                );
            }
            let body: Value = res.json().await?;
            if signed_first {
                if body["signature"]["verified"] != true {
                    return Err("the signed upload was not verified".into());
                }
                signed += took;
            } else {
                plain += took;
            }
        }
    }
    // The signature after the file, with another hash than the upload's own: read back.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&[0xee; 8]))?;
    let sig = sign("SHA512")?;
    let file = reqwest::multipart::Part::stream_with_length(file_body(&path).await?, size)
        .file_name("signed-bench");
    let form = reqwest::multipart::Form::new()
        .text("name", "signed-bench")
        .text("version", "9.0.0")
        .text("platform", "linux")
        .text("arch", "amd64")
        .part("file", file)
        .part("signature", reqwest::multipart::Part::bytes(sig));
    let sampler = RssSampler::start(server.pid());
    let started = Instant::now();
    let res = client
        .post(format!("{}/api/v1/packages", server.base))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await?;
    let reread = started.elapsed();
    rss = rss.max(sampler.finish());
    if res.status() != 201 {
        return Err(format!(
            "form upload answered {}: {}",
            res.status(),
            res.text().await?
        )
        .into());
    }
    std::fs::remove_file(&path)?;
    let total = size * rounds;
    let row = json!({
        "size_bytes": size,
        "rounds": rounds,
        "unsigned_mb_s": mb_per_s(total, plain),
        "signed_mb_s": mb_per_s(total, signed),
        "signed_ratio": plain.as_secs_f64() / signed.as_secs_f64(),
        "signature_after_file_sha512_mb_s": mb_per_s(size, reread),
        "server_peak_rss_bytes": rss,
    });
    println!(
        "\nsigned uploads ({} MiB, {rounds} rounds each): unsigned {:.1} MB/s, signed {:.1} MB/s \
         ({:.2}x); SHA-512 signature after the file (read back once) {:.1} MB/s; peak RSS {:.1} MiB",
        size / MIB,
        row["unsigned_mb_s"].as_f64().unwrap_or(0.0),
        row["signed_mb_s"].as_f64().unwrap_or(0.0),
        row["signed_ratio"].as_f64().unwrap_or(0.0),
        row["signature_after_file_sha512_mb_s"]
            .as_f64()
            .unwrap_or(0.0),
        rss as f64 / MIB as f64,
    );
    Ok(row)
}

/// Inserts `n` packages (10 versions of n/10 names) straight into PostgreSQL.
fn populate(url: &str, n: u64) -> Result<()> {
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
