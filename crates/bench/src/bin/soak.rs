//! `just soak`: mixed uploads, downloads, lists and deletes from 64 concurrent clients
//! against the server on PostgreSQL + Garage, for 2 minutes. It fails on any 5xx other
//! than a retryable 503, any download whose bytes do not hash to the package's checksum,
//! any request that gets no answer, and — afterwards — on any disagreement between the
//! bucket and the table.
//!
//! A `503` with `Retry-After` is the API's promise that trying again is safe (a
//! single-node Garage on its SQLite engine answers 503 "database is locked" now and then
//! under this load, and the server passes that on as `storage_unavailable`). The clients
//! retry it as the promise says, at most [`RETRIES`] times; each one is printed with its
//! code, and more than one in [`MAX_RETRIED_SHARE`] of the requests fails the soak.
//!
//! Loopback only; bounded in time (`--secs`, default 120) and in requests per client
//! (`--max-requests`, default 20 000). `--clients N` (default 64). Needs
//! `scripts/s3-up.sh` and the local PostgreSQL. Writes `target/bench/soak.json`.

// A load generator reports on standard output.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentpkg_bench::{MIB, Result, raw_bucket, remove_bucket, s3_env, start_server};
use agentpkg_store::testing::TestDatabase;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// Retries of one request answered `503` with `Retry-After`.
const RETRIES: u32 = 3;

/// The share of requests that may have needed a retry.
const MAX_RETRIED_SHARE: f64 = 0.005;

/// What every client counts.
#[derive(Default)]
struct Tally {
    by_op_status: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Each retried `503`: the operation and the error body's code and message.
    retried: Mutex<Vec<(&'static str, String)>>,
    server_errors: AtomicU64,
    checksum_mismatches: AtomicU64,
    transport_errors: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl Tally {
    /// Sends a request built by `make`; a `503` with `Retry-After` is recorded and sent
    /// again after the pause it names (at most a second here), up to [`RETRIES`] times.
    /// The final answer is counted.
    async fn send(
        &self,
        op: &'static str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut attempt = 0;
        loop {
            let res = make().send().await?;
            let retry_after = res
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            match retry_after {
                Some(secs) if res.status() == 503 && attempt < RETRIES => {
                    attempt += 1;
                    let body: Value = res.json().await.unwrap_or_default();
                    let why = format!(
                        "{}: {}",
                        body["error"]["code"].as_str().unwrap_or("?"),
                        body["error"]["message"].as_str().unwrap_or("?")
                    );
                    self.retried.lock().await.push((op, why));
                    tokio::time::sleep(Duration::from_millis(secs.clamp(1, 10) * 100)).await;
                }
                _ => {
                    self.count(op, res.status().as_u16()).await;
                    return Ok(res);
                }
            }
        }
    }

    async fn count(&self, op: &'static str, status: u16) {
        *self
            .by_op_status
            .lock()
            .await
            .entry((op, status))
            .or_default() += 1;
        if status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A package some client knows about: its id and the checksum the server reported.
#[derive(Clone)]
struct Known {
    id: i64,
    checksum: String,
}

/// A cheap generator for the clients' choices (not for anything secret).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn payload(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        data.extend_from_slice(&rng.next().to_le_bytes());
    }
    data.truncate(len);
    data
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Client {
    n: u64,
    http: reqwest::Client,
    base: String,
    publisher: String,
    admin: String,
    tally: Arc<Tally>,
    /// Packages every client may read or delete.
    shared: Arc<Mutex<Vec<Known>>>,
    /// Bytes several clients upload under different coordinates, to exercise shared objects.
    common_bytes: Arc<Vec<u8>>,
}

impl Client {
    async fn run(self, deadline: Instant, max_requests: u64) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (self.n + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut version = 0u64;
        for _ in 0..max_requests {
            if Instant::now() >= deadline {
                break;
            }
            let roll = rng.below(100);
            let result = match roll {
                0..=29 => {
                    version += 1;
                    self.upload(&mut rng, version).await
                }
                30..=64 => self.download(&mut rng).await,
                65..=84 => self.list(&mut rng).await,
                _ => self.delete(&mut rng).await,
            };
            if result.is_err() {
                self.tally.transport_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn upload(&self, rng: &mut Rng, version: u64) -> Result<()> {
        // Mostly fresh bytes under fresh coordinates; some shared bytes; some contested
        // coordinates that every client races for.
        let (name, version, data) = match rng.below(10) {
            0 => (
                "soak-contested".to_owned(),
                format!("1.0.{}", rng.below(20)),
                payload(rng, 4096),
            ),
            1 => (
                format!("soak-{}", self.n),
                format!("2.0.{version}"),
                self.common_bytes.to_vec(),
            ),
            _ => {
                let len = 1024 + rng.below(MIB) as usize;
                (
                    format!("soak-{}", self.n),
                    format!("1.{version}.0"),
                    payload(rng, len),
                )
            }
        };
        let checksum = hex_sha256(&data);
        let len = data.len() as u64;
        let url = format!("{}/api/v1/packages/{name}/{version}/linux/amd64", self.base);
        let res = self
            .tally
            .send("upload", || {
                self.http
                    .put(&url)
                    .bearer_auth(&self.publisher)
                    .header("X-Checksum-Sha256", &checksum)
                    .body(data.clone())
            })
            .await?;
        let status = res.status().as_u16();
        if status == 201 {
            self.tally.bytes_up.fetch_add(len, Ordering::Relaxed);
            let package: Value = res.json().await?;
            if package["checksum"] != checksum.as_str() {
                self.tally
                    .checksum_mismatches
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.shared.lock().await.push(Known {
                id: package["id"].as_i64().unwrap_or_default(),
                checksum,
            });
        }
        Ok(())
    }

    async fn pick(&self, rng: &mut Rng) -> Option<Known> {
        let shared = self.shared.lock().await;
        if shared.is_empty() {
            return None;
        }
        let i = rng.below(shared.len() as u64) as usize;
        Some(shared[i].clone())
    }

    async fn download(&self, rng: &mut Rng) -> Result<()> {
        let Some(known) = self.pick(rng).await else {
            return Ok(());
        };
        let url = format!("{}/api/v1/packages/{}/download", self.base, known.id);
        let res = self
            .tally
            .send("download", || {
                self.http.get(&url).bearer_auth(&self.publisher)
            })
            .await?;
        let status = res.status().as_u16();
        if status == 200 {
            let mut hasher = Sha256::new();
            let mut n = 0u64;
            let mut body = res.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                n += chunk.len() as u64;
                hasher.update(&chunk);
            }
            self.tally.bytes_down.fetch_add(n, Ordering::Relaxed);
            let got: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if got != known.checksum {
                self.tally
                    .checksum_mismatches
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn list(&self, rng: &mut Rng) -> Result<()> {
        let name = match rng.below(3) {
            0 => "soak-contested".to_owned(),
            _ => format!("soak-{}", rng.below(64)),
        };
        let url = format!(
            "{}/api/v1/packages?name={name}&per_page=50&page={}",
            self.base,
            1 + rng.below(3)
        );
        let res = self
            .tally
            .send("list", || self.http.get(&url).bearer_auth(&self.publisher))
            .await?;
        let status = res.status().as_u16();
        if status == 200 {
            let _: Value = res.json().await?;
        }
        Ok(())
    }

    async fn delete(&self, rng: &mut Rng) -> Result<()> {
        let Some(known) = self.pick(rng).await else {
            return Ok(());
        };
        let url = format!("{}/api/v1/packages/{}", self.base, known.id);
        let res = self
            .tally
            .send("delete", || self.http.delete(&url).bearer_auth(&self.admin))
            .await?;
        let status = res.status().as_u16();
        if status == 204 {
            self.shared.lock().await.retain(|k| k.id != known.id);
        }
        Ok(())
    }
}

async fn login(http: &reqwest::Client, base: &str, user: &str, password: &str) -> Result<String> {
    let res: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await?
        .json()
        .await?;
    Ok(res["token"].as_str().ok_or("login failed")?.to_owned())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = flag("--secs", 120);
    let clients = flag("--clients", 64);
    let max_requests = flag("--max-requests", 20_000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    let bin = std::env::current_exe()?
        .parent()
        .map(|d| d.join("agentpkg-server"))
        .ok_or("cannot find agentpkg-server next to the soak")?;

    let s3env = s3_env(&root)?;
    let db = TestDatabase::create();
    let bucket_name = format!(
        "agentpkg-soak-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let server = start_server(
        &bin,
        db.url(),
        &s3env,
        &bucket_name,
        &[
            &[("AGENTPKG__GC__INTERVAL_SECS", "0")],
            agentpkg_bench::TUNED,
        ]
        .concat(),
    )?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()?;
    let admin = login(&http, &server.base, "admin", "bench-admin-password").await?;
    let res = http
        .post(format!("{}/api/v1/users", server.base))
        .bearer_auth(&admin)
        .json(&json!({"username": "soak", "password": "soak-publisher-password", "role": "publisher"}))
        .send()
        .await?;
    if res.status() != 201 {
        return Err(format!("creating the publisher: {}", res.status()).into());
    }
    let publisher = login(&http, &server.base, "soak", "soak-publisher-password").await?;
    println!(
        "soak: {clients} clients for {secs} s (at most {max_requests} requests each) against {}",
        server.base
    );

    let tally = Arc::new(Tally::default());
    let shared = Arc::new(Mutex::new(Vec::new()));
    let common_bytes = Arc::new(payload(&mut Rng(42), 64 * 1024));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|n| {
            let client = Client {
                n,
                http: http.clone(),
                base: server.base.clone(),
                publisher: publisher.clone(),
                admin: admin.clone(),
                tally: tally.clone(),
                shared: shared.clone(),
                common_bytes: common_bytes.clone(),
            };
            tokio::spawn(client.run(deadline, max_requests))
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();

    // Afterwards the bucket and the table agree exactly: a reconciliation dry run with no
    // grace period finds no orphan, no missing object and no unfinished upload.
    let out = std::process::Command::new(&bin)
        .arg("gc")
        .args(["--dry-run", "--grace-secs", "0"])
        .env("AGENTPKG__DATABASE__URL", db.url())
        .env("AGENTPKG__STORAGE__BACKEND", "s3")
        .env("AGENTPKG__STORAGE__S3__BUCKET", &bucket_name)
        .envs(s3env.iter().filter_map(|(k, v)| {
            let key = k.strip_prefix("AGENTPKG_TEST_S3_")?;
            Some((format!("AGENTPKG__STORAGE__S3__{key}"), v.clone()))
        }))
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("gc report: {e}: {}", String::from_utf8_lossy(&out.stderr)))?;
    let disagreements = [
        "orphans_removed",
        "orphans_in_grace",
        "missing_objects",
        "incomplete_removed",
    ]
    .iter()
    .map(|k| report[k].as_array().map_or(0, Vec::len))
    .sum::<usize>();
    let bucket = raw_bucket(&s3env, &bucket_name)?;
    let objects: usize = bucket
        .list(String::new(), None)
        .await?
        .iter()
        .map(|p| p.contents.len())
        .sum();

    let by_op = tally.by_op_status.lock().await.clone();
    let total: u64 = by_op.values().sum();
    println!("\n{:<10} {:>6} {:>10}", "operation", "status", "count");
    for ((op, status), n) in &by_op {
        println!("{op:<10} {status:>6} {n:>10}");
    }
    let server_errors = tally.server_errors.load(Ordering::Relaxed);
    let mismatches = tally.checksum_mismatches.load(Ordering::Relaxed);
    let transport = tally.transport_errors.load(Ordering::Relaxed);
    let up = tally.bytes_up.load(Ordering::Relaxed);
    let down = tally.bytes_down.load(Ordering::Relaxed);
    println!(
        "\n{total} requests in {:.1} s ({:.0}/s); {:.0} MiB up, {:.0} MiB down",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        up as f64 / MIB as f64,
        down as f64 / MIB as f64
    );
    let retried = tally.retried.lock().await.clone();
    for (op, why) in &retried {
        println!("retried a 503 ({op}): {why}");
    }
    let too_many_retries = retried.len() as f64 > MAX_RETRIED_SHARE * total.max(1) as f64;
    println!(
        "5xx: {server_errors}; 503s retried: {}{}; checksum mismatches: {mismatches}; \
         requests without an answer: {transport}; objects left: {objects}; \
         bucket/table disagreements: {disagreements}",
        retried.len(),
        if too_many_retries { " (too many)" } else { "" }
    );
    let result = json!({
        "clients": clients,
        "seconds": elapsed.as_secs_f64(),
        "requests": total,
        "by_operation_and_status": by_op.iter().map(|((op, s), n)| json!({"op": op, "status": s, "count": n})).collect::<Vec<_>>(),
        "server_errors": server_errors,
        "retried_503": retried.iter().map(|(op, why)| json!({"op": op, "error": why})).collect::<Vec<_>>(),
        "checksum_mismatches": mismatches,
        "transport_errors": transport,
        "bytes_up": up,
        "bytes_down": down,
        "objects_left": objects,
        "disagreements": disagreements,
        "reconcile_report": report,
    });
    let out = root.join("target/bench/soak.json");
    std::fs::create_dir_all(out.parent().ok_or("no parent")?)?;
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
    println!("wrote {}", out.display());

    for line in server.problems() {
        println!("server: {line}");
    }
    drop(server);
    remove_bucket(&bucket).await?;
    if server_errors + mismatches + transport > 0
        || disagreements > 0
        || too_many_retries
        || !out_ok(&by_op)
    {
        return Err("the soak found losses or errors (see above)".into());
    }
    println!("soak: {total} passed, 0 failed");
    Ok(())
}

/// Every kind of operation ran and some succeeded, so a silent no-op cannot pass.
fn out_ok(by_op: &BTreeMap<(&'static str, u16), u64>) -> bool {
    [
        ("upload", 201),
        ("download", 200),
        ("list", 200),
        ("delete", 204),
    ]
    .iter()
    .all(|key| by_op.get(key).is_some_and(|n| *n > 0))
}
