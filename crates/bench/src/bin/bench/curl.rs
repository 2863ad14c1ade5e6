//! What a user would do with `curl`: straight to S3, through the API, or direct.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::measure::{RssSampler, make_file, mb_per_s};
use agentpkg_bench::{MIB, Result};

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
pub(crate) async fn curl_comparison(
    client: &reqwest::Client,
    server: &agentpkg_bench::Server,
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
