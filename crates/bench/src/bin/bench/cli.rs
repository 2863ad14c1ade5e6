//! `agentpkg push` and `pull` against `curl` doing the same, alternating, for one size:
//! wall time (throughput) and the client's peak resident memory. For the push, `curl -T`
//! alone, and `sha256sum` then `curl -T` with the checksum header (what the CLI does: the
//! server checks the SHA-256 it is sent); for the pull, `curl -o`, and `curl -o` then
//! `sha256sum` (what the CLI does in one pass). `agentpkg pull --fsync` is timed too: it
//! waits for the disk, which `curl -o` does not.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::measure::{RssSampler, make_file, mb_per_s};
use agentpkg_bench::{MIB, Result, Server};

/// Runs a command to its end; its time and its peak resident memory. The page cache's
/// dirty pages (the last run's file, the object store's writes) are flushed first, so that
/// no run pays for the one before it.
fn timed(cmd: &mut Command) -> Result<(Duration, u64)> {
    Command::new("sync").status()?;
    let started = Instant::now();
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let sampler = RssSampler::start(child.id());
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    let peak = sampler.finish();
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok((took, peak))
}

/// Writes `n` and the run's `nonce` at the start of every MiB of the file, so that each
/// upload is new to the object store as well as to the registry. Garage keeps 1 MiB blocks
/// once, by content: a file changed only in its first bytes was written whole by the
/// run's first push and only hashed by every later one.
fn mark(path: &Path, n: u32, nonce: u64) -> Result<()> {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = f.metadata()?.len();
    let mut stamp = [0u8; 12];
    stamp[..4].copy_from_slice(&n.to_le_bytes());
    stamp[4..].copy_from_slice(&nonce.to_le_bytes());
    for at in (0..len).step_by(MIB as usize) {
        f.seek(std::io::SeekFrom::Start(at))?;
        let end = usize::try_from(len - at).map_or(stamp.len(), |left| left.min(stamp.len()));
        f.write_all(&stamp[..end])?;
    }
    Ok(())
}

/// `sha256sum` (`cmd`) of the file: its time and the digest.
fn sha256sum(mut cmd: Command, path: &Path) -> Result<(Duration, String)> {
    let started = Instant::now();
    let out = cmd.arg(path).output()?;
    let digest = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok((started.elapsed(), digest))
}

/// Moves every thread of a process (and those it starts later) to the CPUs in `mask`.
fn pin(pid: u32, mask: &str) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", mask, &pid.to_string()])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("taskset -a -p {mask} {pid} failed").into());
    }
    Ok(())
}

/// The server and Garage on the first core, the clients on the second, for as long as it
/// lives: a client on a machine of its own, whose work takes nothing from the server's.
struct ClientCore {
    garage: Option<u32>,
}

impl ClientCore {
    fn take(server: &Server) -> Result<Self> {
        if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
            return Err("--client-core needs two cores".into());
        }
        let garage = Command::new("pgrep")
            .args(["-x", "garage"])
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
        pin(server.pid(), "0x1")?;
        if let Some(garage) = garage {
            pin(garage, "0x1")?;
        }
        Ok(Self { garage })
    }

    /// `program`, run on the clients' core.
    fn command(program: &Path) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.arg("0x2").arg(program);
        cmd
    }
}

impl Drop for ClientCore {
    fn drop(&mut self) {
        if let Some(garage) = self.garage {
            let all = format!(
                "0x{:x}",
                (1u64
                    << std::thread::available_parallelism()
                        .map_or(1, usize::from)
                        .min(63))
                    - 1
            );
            if let Err(e) = pin(garage, &all) {
                eprintln!("bench: Garage (pid {garage}) keeps only the first core: {e}");
            }
        }
    }
}

pub(crate) fn cli_comparison(
    server: &Server,
    token: &str,
    dir: &Path,
    size: u64,
    rounds: u32,
    client_core: bool,
) -> Result<Value> {
    let pinned = client_core.then(|| ClientCore::take(server)).transpose()?;
    let client = |program: &Path| match pinned {
        Some(_) => ClientCore::command(program),
        None => Command::new(program),
    };
    let agentpkg = std::env::current_exe()?
        .parent()
        .map(|d| d.join("agentpkg"))
        .filter(|p| p.exists())
        .ok_or("build the CLI first: cargo build --release -p agentpkg-cli")?;
    let config = tempfile::tempdir()?;
    let auth = format!("Authorization: Bearer {token}");
    let path = make_file(dir, size, 77)?;
    // Other bytes from one run to the next: Garage may still hold the last run's blocks.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let out = dir.join("pulled");
    let (mut cli_push, mut curl_push, mut sum_push) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut cli_pull, mut curl_pull, mut sum_pull) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut cli_rss, mut curl_rss) = (0u64, 0u64);
    let mut cli_pull_fsync = Duration::ZERO;
    let cli = |args: &[&str]| {
        let mut cmd = client(&agentpkg);
        cmd.env("AGENTPKG_CONFIG_DIR", config.path())
            .env("AGENTPKG_SERVER", &server.base)
            .env("AGENTPKG_TOKEN", token)
            .arg("--quiet")
            .args(args);
        cmd
    };
    let coordinates = ["--platform", "linux", "--arch", "amd64"];
    // Round 0 warms both up (a fresh bucket, the first connections) and is not counted.
    for r in 0..=rounds {
        let counted = u32::from(r > 0);
        let (mine, theirs) = (format!("1.{r}.0"), format!("2.{r}.0"));
        // Runs `cmd`, prints its time, and counts it (after the warm-up) into `total` and
        // its peak RSS into `peak`.
        let run = |what: &str, cmd: &mut Command, total: &mut Duration, peak: &mut u64| {
            let (took, rss) = timed(cmd)?;
            let warm_up = if r == 0 { " (warm-up)" } else { "" };
            eprintln!("round {r}{warm_up}: {what} {took:.2?}");
            *total += took * counted;
            *peak = (*peak).max(rss);
            Result::Ok(took)
        };
        let url = format!(
            "{}/api/v1/packages/cli-bench/{theirs}/linux/amd64",
            server.base
        );
        // Who pushes first alternates too. Other bytes for every upload: the registry
        // deduplicates identical packages, and Garage identical blocks (see `mark`).
        for turn in 0..2 {
            if (turn + r) % 2 == 0 {
                mark(&path, r * 2, nonce)?;
                run(
                    "agentpkg push",
                    cli(&["push", path.to_str().ok_or("path")?])
                        .args(["--name", "cli-bench", "--version", &mine])
                        .args(coordinates),
                    &mut cli_push,
                    &mut cli_rss,
                )?;
            } else {
                mark(&path, r * 2 + 1, nonce)?;
                let (hashed, digest) = sha256sum(client(Path::new("sha256sum")), &path)?;
                let took = run(
                    "curl -T",
                    client(Path::new("curl"))
                        .args(["-sS", "-f", "-o", "/dev/null", "-T"])
                        .arg(&path)
                        .args([
                            "-H",
                            &auth,
                            "-H",
                            &format!("X-Checksum-Sha256: {digest}"),
                            &url,
                        ]),
                    &mut curl_push,
                    &mut curl_rss,
                )?;
                sum_push += (took + hashed) * counted;
            }
            // Garage works on for a moment after a large write: the next command waits.
            std::thread::sleep(Duration::from_secs(3));
        }

        // Both packages are stored before either is fetched. Both fetch the same one, the
        // CLI's upload in one round and curl's in the next: Garage reads an object written
        // in parts some 6 % slower than one written whole. The first read of a fresh
        // object is slower too (0.2–0.6 s per GiB here), so who goes first changes every
        // other round: over four rounds each goes first once on each kind of object.
        let fetched = if r % 2 == 1 { &mine } else { &theirs };
        let cli_first = (r / 2) % 2 == 1;
        let fetched_url = format!(
            "{}/api/v1/packages/cli-bench/{fetched}/linux/amd64/download",
            server.base
        );
        for turn in 0..2 {
            let _ = std::fs::remove_file(&out);
            if (turn == 0) == cli_first {
                run(
                    "agentpkg pull",
                    cli(&["pull", "cli-bench", "--version", fetched, "-o"])
                        .arg(&out)
                        .args(coordinates),
                    &mut cli_pull,
                    &mut cli_rss,
                )?;
            } else {
                let took = run(
                    "curl -o",
                    client(Path::new("curl"))
                        .args(["-sS", "-f", "-o"])
                        .arg(&out)
                        .args(["-H", &auth, &fetched_url]),
                    &mut curl_pull,
                    &mut curl_rss,
                )?;
                let (hashed, _) = sha256sum(client(Path::new("sha256sum")), &out)?;
                sum_pull += (took + hashed) * counted;
            }
        }
        let _ = std::fs::remove_file(&out);
        run(
            "agentpkg pull --fsync",
            cli(&["pull", "cli-bench", "--version", fetched, "--fsync", "-o"])
                .arg(&out)
                .args(coordinates),
            &mut cli_pull_fsync,
            &mut cli_rss,
        )?;
    }
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&path);
    let bytes = size * u64::from(rounds);
    let row = json!({
        "size_mib": size / MIB,
        "rounds": rounds,
        "client_core": client_core,
        "push_mb_s": {"agentpkg": mb_per_s(bytes, cli_push), "curl": mb_per_s(bytes, curl_push), "sha256sum_then_curl": mb_per_s(bytes, sum_push)},
        "pull_mb_s": {"agentpkg": mb_per_s(bytes, cli_pull), "agentpkg_fsync": mb_per_s(bytes, cli_pull_fsync), "curl": mb_per_s(bytes, curl_pull), "curl_then_sha256sum": mb_per_s(bytes, sum_pull)},
        "push_ratio_to_curl": curl_push.as_secs_f64() / cli_push.as_secs_f64(),
        "push_ratio_to_sha256sum_then_curl": sum_push.as_secs_f64() / cli_push.as_secs_f64(),
        "pull_ratio_to_curl": curl_pull.as_secs_f64() / cli_pull.as_secs_f64(),
        "pull_ratio_to_curl_then_sha256sum": sum_pull.as_secs_f64() / cli_pull.as_secs_f64(),
        "client_peak_rss_bytes": {"agentpkg": cli_rss, "curl": curl_rss},
    });
    println!(
        "\nagentpkg CLI{}, {} MiB × {rounds}: push {:.0} MB/s (curl -T {:.0}, sha256sum + curl {:.0}: {:.2}× / {:.2}×); pull {:.0} MB/s (curl {:.0}, curl + sha256sum {:.0}: {:.2}× / {:.2}×; with --fsync {:.0}); peak RSS agentpkg {:.1} MiB, curl {:.1} MiB",
        if client_core {
            " (clients on a core of their own)"
        } else {
            ""
        },
        size / MIB,
        mb_per_s(bytes, cli_push),
        mb_per_s(bytes, curl_push),
        mb_per_s(bytes, sum_push),
        row["push_ratio_to_curl"].as_f64().unwrap_or_default(),
        row["push_ratio_to_sha256sum_then_curl"]
            .as_f64()
            .unwrap_or_default(),
        mb_per_s(bytes, cli_pull),
        mb_per_s(bytes, curl_pull),
        mb_per_s(bytes, sum_pull),
        row["pull_ratio_to_curl"].as_f64().unwrap_or_default(),
        row["pull_ratio_to_curl_then_sha256sum"]
            .as_f64()
            .unwrap_or_default(),
        mb_per_s(bytes, cli_pull_fsync),
        cli_rss as f64 / MIB as f64,
        curl_rss as f64 / MIB as f64,
    );
    Ok(row)
}
