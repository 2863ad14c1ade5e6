//! What the bench and the soak share: the release server started on PostgreSQL + Garage,
//! and a raw handle on its bucket.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub const MIB: u64 = 1024 * 1024;

pub struct Server {
    child: Child,
    pub base: String,
    /// The last errors and warnings (a client's 4xx aside) the server logged.
    problems: Arc<Mutex<VecDeque<String>>>,
}

/// Warning and error lines kept from the server's log.
const KEPT_PROBLEMS: usize = 50;

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The last warnings and errors the server logged (at most [`KEPT_PROBLEMS`]).
    #[allow(dead_code)] // the bench does not look
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, and the process's peak since it started, in bytes.
    #[allow(dead_code)] // the soak does not measure memory
    pub fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

pub fn s3_env(root: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(root.join(".garage/env"))
        .map_err(|e| format!(".garage/env: {e}; run scripts/s3-up.sh first"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

pub fn get<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The settings `--tuned` adds to the server as the README starts it: a quieter log, a
/// larger pool, and glibc's mmap threshold fixed (as `deploy/` sets it).
pub const TUNED: &[(&str, &str)] = &[
    ("AGENTPKG__LOG__LEVEL", "warn,agentpkg_server=info"),
    ("AGENTPKG__DATABASE__MAX_CONNECTIONS", "32"),
    ("MALLOC_MMAP_THRESHOLD_", "1048576"),
];

pub fn start_server(
    bin: &Path,
    db_url: &str,
    s3: &[(String, String)],
    bucket: &str,
    extra_env: &[(&str, &str)],
) -> Result<Server> {
    let mut child = Command::new(bin)
        .env("AGENTPKG__SERVER__BIND", "127.0.0.1:0")
        .env("AGENTPKG__DATABASE__URL", db_url)
        .env("AGENTPKG__STORAGE__BACKEND", "s3")
        .env(
            "AGENTPKG__STORAGE__S3__ENDPOINT",
            get(s3, "AGENTPKG_TEST_S3_ENDPOINT"),
        )
        .env(
            "AGENTPKG__STORAGE__S3__REGION",
            get(s3, "AGENTPKG_TEST_S3_REGION"),
        )
        .env(
            "AGENTPKG__STORAGE__S3__ACCESS_KEY",
            get(s3, "AGENTPKG_TEST_S3_ACCESS_KEY"),
        )
        .env(
            "AGENTPKG__STORAGE__S3__SECRET_KEY",
            get(s3, "AGENTPKG_TEST_S3_SECRET_KEY"),
        )
        .env("AGENTPKG__STORAGE__S3__BUCKET", bucket)
        .env(
            "AGENTPKG__AUTH__JWT_SECRET",
            "bench-signing-secret-of-at-least-32-bytes",
        )
        .env("AGENTPKG__AUTH__ADMIN_PASSWORD", "bench-admin-password")
        .env(
            "AGENTPKG__UPLOAD__MAX_SIZE_BYTES",
            (2 * 1024 * MIB).to_string(),
        )
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let problems = Arc::new(Mutex::new(VecDeque::new()));
    let kept = problems.clone();
    // `BENCH_SERVER_LOG=FILE` keeps the server's whole log (`AGENTPKG__LOG__LEVEL` in the
    // bench's environment sets its level), to see where a figure comes from.
    let mut copy = std::env::var_os("BENCH_SERVER_LOG")
        .map(std::fs::File::create)
        .transpose()?;
    std::thread::spawn(move || {
        for line in BufReader::new(stderr)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if let Some(file) = copy.as_mut() {
                use std::io::Write;
                let _ = writeln!(file, "{line}");
            }
            // Errors, and warnings other than a client's 4xx (which the soak provokes).
            let client_error = line.contains("tracing_actix_web") && line.contains("status: 4");
            if (line.contains("ERROR") || (line.contains("WARN") && !client_error))
                && let Ok(mut kept) = kept.lock()
            {
                if kept.len() == KEPT_PROBLEMS {
                    kept.pop_front();
                }
                kept.push_back(line.clone());
            }
            // After the start nobody listens; the log is still drained.
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if let Some(port) = line
                    .split("port=")
                    .nth(1)
                    .and_then(|p| p.split_whitespace().next())
                {
                    return Ok(Server {
                        child,
                        base: format!("http://127.0.0.1:{port}"),
                        problems,
                    });
                }
                log.push(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // Its log closed: the server exited.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("the server did not start:\n{}", log.join("\n")).into())
}

/// A rust-s3 handle on `name`, with the local Garage's credentials.
pub fn raw_bucket(s3env: &[(String, String)], name: &str) -> Result<Box<s3::Bucket>> {
    let region = s3::Region::Custom {
        region: get(s3env, "AGENTPKG_TEST_S3_REGION").to_owned(),
        endpoint: get(s3env, "AGENTPKG_TEST_S3_ENDPOINT").to_owned(),
    };
    let creds = s3::creds::Credentials::new(
        Some(get(s3env, "AGENTPKG_TEST_S3_ACCESS_KEY")),
        Some(get(s3env, "AGENTPKG_TEST_S3_SECRET_KEY")),
        None,
        None,
        None,
    )?;
    Ok(s3::Bucket::new(name, region, creds)?.with_path_style())
}

/// Empties and deletes a bucket.
pub async fn remove_bucket(bucket: &s3::Bucket) -> Result<()> {
    // NOTE: a single-node Garage under load answers 503 ("database is locked") now and
    // then; cleaning up is worth a few tries, each failure logged.
    async fn retried<T, F, Fut>(what: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, s3::error::S3Error>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    eprintln!("cleanup: {what} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    for page in retried("listing", || bucket.list(String::new(), None)).await? {
        for object in page.contents {
            retried("a delete", || bucket.delete_object(&object.key)).await?;
        }
    }
    retried("removing the bucket", || bucket.delete()).await?;
    Ok(())
}
