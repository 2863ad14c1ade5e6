//! Resumable (tus) uploads against the one-request upload: one connection sending 8 MiB
//! chunks, and four partial uploads side by side joined by a final one.

use std::io::SeekFrom;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::measure::{RssSampler, file_body, make_file, mb_per_s};
use agentpkg_bench::{MIB, Result};

const CHUNK: u64 = 8 * MIB;

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `len` bytes of the file from `offset`, streamed (as a client sending a file slice does).
async fn chunk_of(path: &Path, offset: u64, len: u64) -> Result<reqwest::Body> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(offset)).await?;
    Ok(reqwest::Body::wrap_stream(
        tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024),
    ))
}

/// Creates an upload; its URL.
async fn create(
    client: &reqwest::Client,
    server: &agentpkg_bench::Server,
    token: &str,
    headers: &[(&str, String)],
) -> Result<(String, reqwest::Response)> {
    let mut req = client
        .post(format!("{}/api/v1/uploads", server.base))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0");
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let res = req.send().await?;
    if res.status() != 201 {
        return Err(format!(
            "tus create answered {}: {}",
            res.status(),
            res.text().await?
        )
        .into());
    }
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Location")?
        .to_owned();
    Ok((format!("{}{location}", server.base), res))
}

/// Sends `[start, end)` of the file to an upload in 8 MiB PATCHes, one after the other.
async fn send_range(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    path: &Path,
    start: u64,
    end: u64,
) -> Result<reqwest::StatusCode> {
    let mut offset = 0;
    let mut status = reqwest::StatusCode::NO_CONTENT;
    while start + offset < end {
        let len = CHUNK.min(end - start - offset);
        let body = chunk_of(path, start + offset, len).await?;
        let res = client
            .patch(url)
            .bearer_auth(token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .header("Content-Length", len)
            .body(body)
            .send()
            .await?;
        status = res.status();
        if !status.is_success() {
            return Err(format!("PATCH answered {status}: {}", res.text().await?).into());
        }
        offset += len;
    }
    Ok(status)
}

fn metadata(version: &str) -> String {
    format!(
        "name {},version {},platform {},arch {}",
        b64("tus-bench"),
        b64(version),
        b64("linux"),
        b64("amd64")
    )
}

pub(crate) async fn resumable_uploads(
    client: &reqwest::Client,
    server: &agentpkg_bench::Server,
    token: &str,
    dir: &Path,
    size: u64,
) -> Result<Value> {
    let path = make_file(dir, size, 91)?;
    let rounds: u64 = if size <= 100 * MIB { 3 } else { 2 };
    let (mut single, mut one, mut four) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut rss_single, mut rss_one, mut rss_four) = (0u64, 0u64, 0u64);
    for r in 0..rounds {
        // Other bytes each time (dedup would make later uploads free); the order turns.
        for way in 0..3u64 {
            let way = (way + r) % 3;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| {
                    std::io::Write::write_all(&mut f, &[(r * 3 + way) as u8 + 1; 8])
                })?;
            let version = format!("{}.{r}.{way}", size / MIB);
            let sampler = RssSampler::start(server.pid());
            let started = Instant::now();
            match way {
                0 => {
                    let res = client
                        .put(format!(
                            "{}/api/v1/packages/tus-bench/{version}/linux/amd64",
                            server.base
                        ))
                        .bearer_auth(token)
                        .header("content-length", size)
                        .body(file_body(&path).await?)
                        .send()
                        .await?;
                    if res.status() != 201 {
                        return Err(format!("upload answered {}", res.status()).into());
                    }
                    single += started.elapsed();
                    rss_single = rss_single.max(sampler.finish());
                }
                1 => {
                    let (url, _) = create(
                        client,
                        server,
                        token,
                        &[
                            ("Upload-Length", size.to_string()),
                            ("Upload-Metadata", metadata(&version)),
                        ],
                    )
                    .await?;
                    let status = send_range(client, &url, token, &path, 0, size).await?;
                    if status != 200 {
                        return Err(format!("the last PATCH answered {status}").into());
                    }
                    one += started.elapsed();
                    rss_one = rss_one.max(sampler.finish());
                }
                _ => {
                    let quarter = size.div_ceil(4);
                    let mut tasks = Vec::new();
                    for p in 0..4 {
                        let (start, end) = (p * quarter, ((p + 1) * quarter).min(size));
                        let (client, token, path) =
                            (client.clone(), token.to_owned(), path.clone());
                        let (url, _) = create(
                            &client,
                            server,
                            &token,
                            &[
                                ("Upload-Length", (end - start).to_string()),
                                ("Upload-Concat", "partial".to_owned()),
                            ],
                        )
                        .await?;
                        tasks.push(tokio::spawn(async move {
                            send_range(&client, &url, &token, &path, start, end)
                                .await
                                .map(|_| url)
                                .map_err(|e| e.to_string())
                        }));
                    }
                    let mut urls = Vec::new();
                    for task in tasks {
                        urls.push(task.await??);
                    }
                    create(
                        client,
                        server,
                        token,
                        &[
                            ("Upload-Concat", format!("final;{}", urls.join(" "))),
                            ("Upload-Metadata", metadata(&version)),
                        ],
                    )
                    .await?;
                    four += started.elapsed();
                    rss_four = rss_four.max(sampler.finish());
                }
            }
        }
    }
    // Where a PATCH's time goes, from the server's own latency histograms.
    if std::env::var_os("BENCH_TUS_METRICS").is_some() {
        let text = client
            .get(format!("{}/metrics", server.base))
            .bearer_auth(token)
            .send()
            .await?
            .text()
            .await?;
        for line in text.lines().filter(|l| {
            (l.contains("_sum") || l.contains("_count"))
                && [
                    "put_part",
                    "session",
                    "complete_parts",
                    "begin_parts",
                    "\"put\"",
                ]
                .iter()
                .any(|k| l.contains(k))
        }) {
            println!("{line}");
        }
    }
    let total = size * rounds;
    let (s, o, f) = (
        mb_per_s(total, single),
        mb_per_s(total, one),
        mb_per_s(total, four),
    );
    println!(
        "\nresumable uploads of {} MiB ({rounds} rounds): one request {s:.0} MB/s (peak RSS \
         {:.1} MiB); tus, 8 MiB chunks on one connection {o:.0} MB/s ({:.2}x, peak RSS {:.1} \
         MiB); tus, 4 partial uploads + final {f:.0} MB/s ({:.2}x, peak RSS {:.1} MiB)",
        size / MIB,
        rss_single as f64 / MIB as f64,
        o / s,
        rss_one as f64 / MIB as f64,
        f / s,
        rss_four as f64 / MIB as f64,
    );
    Ok(json!({
        "size_bytes": size,
        "rounds": rounds,
        "single_request_mb_s": s,
        "tus_one_connection_mb_s": o,
        "tus_one_connection_ratio": o / s,
        "tus_four_partial_mb_s": f,
        "tus_four_partial_ratio": f / s,
        "peak_rss_single_bytes": rss_single,
        "peak_rss_tus_one_bytes": rss_one,
        "peak_rss_tus_four_bytes": rss_four,
    }))
}
