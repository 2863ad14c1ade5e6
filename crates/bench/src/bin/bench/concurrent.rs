//! 200 concurrent downloads of one 10 MiB package through the API, against 200 direct S3
//! GETs of the same bytes: aggregate throughput, errors, and the server's peak memory.

use std::path::Path;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::measure::{RssSampler, drain, file_body, make_file, mb_per_s};
use agentpkg_bench::{MIB, Result, Server};

pub(crate) async fn downloads(
    client: &reqwest::Client,
    server: &Server,
    bucket: &s3::bucket::Bucket,
    token: &str,
    dir: &Path,
) -> Result<Value> {
    let path = make_file(dir, 10 * MIB, 200)?;
    let res = client
        .put(format!(
            "{}/api/v1/packages/concurrent/1.0.0/linux/amd64",
            server.base
        ))
        .bearer_auth(token)
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
            .bearer_auth(token);
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
    let result = json!({
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
    Ok(result)
}
