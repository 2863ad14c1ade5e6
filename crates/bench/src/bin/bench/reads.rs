//! `--only reads`: metadata reads against the HTTP ceiling, measured as a user would, with
//! `wrk` (Debian's package) on the same machine: `/healthz`, then `GET /api/v1/packages/{id}`
//! over 1 000 ids and `GET /api/v1/packages/latest` over 1 000 names, each at 8 and 64
//! connections, on the server as the README starts it (package reads kept in memory) and
//! on a second server over the same database with `database.read_cache = false`.

use std::io::Write;
use std::process::Command;

use serde_json::{Value, json};

use agentpkg_bench::{Result, Server};

/// The setting the second server runs with: package reads from memory off.
pub(crate) const UNCACHED: (&str, &str) = ("AGENTPKG__DATABASE__READ_CACHE", "false");

/// Whether `wrk` is on this machine.
pub(crate) fn wrk_installed() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

/// Seconds each measurement runs.
const SECS: u64 = 10;
/// Distinct ids, and names, the reads cycle over (fewer when there are fewer names).
const HOT: u64 = 1_000;

/// What `wrk --latency` printed: requests a second, p50 and p99 in milliseconds.
fn parse(out: &str) -> Result<(f64, f64, f64)> {
    let millis = |v: &str| -> Option<f64> {
        let (number, factor) = if let Some(n) = v.strip_suffix("us") {
            (n, 0.001)
        } else if let Some(n) = v.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1000.0)
        } else {
            return None;
        };
        number.parse::<f64>().ok().map(|n| n * factor)
    };
    let field = |label: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(label))
            .map(str::trim)
    };
    let rate = field("Requests/sec:")
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("no rate in wrk's output:\n{out}"))?;
    let p50 = field("50%").and_then(millis).ok_or("no p50 from wrk")?;
    let p99 = field("99%").and_then(millis).ok_or("no p99 from wrk")?;
    if let Some(errors) = field("Non-2xx or 3xx responses:") {
        return Err(format!("{errors} requests failed:\n{out}").into());
    }
    Ok((rate, p50, p99))
}

/// One wrk run of `script` against `base`.
fn wrk(base: &str, script: &std::path::Path, connections: u32) -> Result<(f64, f64, f64)> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{SECS}s")])
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(base)
        .output()
        .map_err(|e| format!("wrk: {e} (install it: apt-get install wrk)"))?;
    if !out.status.success() {
        return Err(format!("wrk failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// A wrk script asking for `path(i)` with the token, cycling over `hot` values of `i`.
fn script(
    dir: &std::path::Path,
    name: &str,
    token: &str,
    path: &str,
    hot: u64,
) -> Result<std::path::PathBuf> {
    let file = dir.join(format!("{name}.lua"));
    let mut f = std::fs::File::create(&file)?;
    write!(
        f,
        r#"local n = 0
request = function()
  n = n + 1
  local i = (n * 7919) % {hot}
  return wrk.format("GET", {path}, {{["Authorization"] = "Bearer {token}"}})
end
"#
    )?;
    Ok(file)
}

/// Every read at 8 and 64 connections against `cached` (the default server) and
/// `uncached`, over the `packages` that `metadata::populate` inserted (`pkg-N` 1.x for
/// linux/amd64, ids from 1).
pub(crate) fn reads_bench(
    cached: &Server,
    uncached: &Server,
    token: &str,
    dir: &std::path::Path,
    packages: u64,
) -> Result<Value> {
    let hot = HOT.min(packages / 10).max(1);
    let scripts = [
        (
            "healthz",
            script(dir, "healthz", token, r#""/healthz""#, hot)?,
        ),
        (
            "get",
            script(dir, "get", token, r#""/api/v1/packages/" .. (i + 1)"#, hot)?,
        ),
        (
            "latest",
            script(
                dir,
                "latest",
                token,
                r#""/api/v1/packages/latest?name=pkg-" .. i .. "&platform=linux&arch=amd64""#,
                hot,
            )?,
        ),
    ];
    println!("\nmetadata reads with wrk -t2, {SECS} s each, over {hot} ids or names:");
    println!(
        "{:<10} {:<10} {:>6} {:>10} {:>9} {:>9}",
        "server", "read", "conns", "req/s", "p50 ms", "p99 ms"
    );
    let mut rows = Vec::new();
    for (label, server) in [("cached", cached), ("uncached", uncached)] {
        for (read, script) in &scripts {
            for connections in [8u32, 64] {
                let (rate, p50, p99) = wrk(&server.base, script, connections)?;
                println!(
                    "{label:<10} {read:<10} {connections:>6} {rate:>10.0} {p50:>9.2} {p99:>9.2}"
                );
                rows.push(json!({
                    "server": label, "read": read, "connections": connections,
                    "requests_per_s": rate, "p50_ms": p50, "p99_ms": p99,
                }));
            }
        }
    }
    // The targets: reads at 64 connections at least half of /healthz on the same server,
    // p99 at 8 connections at most 2 ms.
    let find = |server: &str, read: &str, c: u32| {
        rows.iter()
            .find(|r| r["server"] == server && r["read"] == read && r["connections"] == c)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let healthz = find("cached", "healthz", 64)["requests_per_s"]
        .as_f64()
        .unwrap_or(f64::NAN);
    for read in ["get", "latest"] {
        let at64 = find("cached", read, 64)["requests_per_s"]
            .as_f64()
            .unwrap_or(0.0);
        let p99 = find("cached", read, 8)["p99_ms"]
            .as_f64()
            .unwrap_or(f64::NAN);
        println!(
            "  {read}: {:.2}× /healthz at 64 connections (target ≥ 0.5), p99 {p99:.2} ms at 8 (target ≤ 2)",
            at64 / healthz
        );
    }
    Ok(json!({ "seconds": SECS, "hot": hot, "rows": rows }))
}
