//! Signed against unsigned uploads.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::measure::{RssSampler, file_body, make_file, mb_per_s};
use agentpkg_bench::{MIB, Result};

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
pub(crate) async fn signed_uploads(
    client: &reqwest::Client,
    server: &agentpkg_bench::Server,
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
