//! The README, run as a newcomer would: every `bash` block, in order and as written, in one
//! shell, against a fresh server on the embedded default. `cargo` is the one stand-in: its
//! `run` starts the server this test was built with (in the background, once it answers)
//! and its `install` is the `agentpkg` built beside it, already on `PATH`.

use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../../../../README.md");

/// The README's ```bash blocks, in order.
fn bash_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```bash") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

const CARGO_SHIM: &str = r#"#!/usr/bin/env bash
# cargo, for the README test: `run … agentpkg-server` starts the server once it answers;
# `install … crates/cli` has nothing to do (agentpkg is on PATH).
set -euo pipefail
case "$*" in
  *"run"*"agentpkg-server"*)
    "$README_SERVER" >"$README_WORK/server.log" 2>&1 &
    echo $! >"$README_WORK/server.pid"
    for _ in $(seq 1 300); do
      if curl -sf http://127.0.0.1:8080/healthz >/dev/null; then exit 0; fi
      sleep 0.1
    done
    echo "the server did not answer; its log:" >&2
    cat "$README_WORK/server.log" >&2
    exit 1
    ;;
  *"install"*"crates/cli"*) exit 0 ;;
  *) echo "cargo stand-in: unexpected: cargo $*" >&2; exit 1 ;;
esac
"#;

/// Stops the server the README started, whatever happens to the test.
struct StopServer<'a>(&'a Path);

impl Drop for StopServer<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("server.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[test]
fn the_readme_runs_in_order_as_written() {
    let blocks = bash_blocks(README);
    assert!(
        blocks.len() >= 3,
        "the README has {} bash blocks",
        blocks.len()
    );
    if std::net::TcpStream::connect("127.0.0.1:8080").is_ok() {
        panic!("127.0.0.1:8080 is taken: the README's server needs it; stop what listens there");
    }
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let bin = work.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let cargo = bin.join("cargo");
    std::fs::write(&cargo, CARGO_SHIM).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cli = crate::client_cli::binary();
    std::os::unix::fs::symlink(&cli, bin.join("agentpkg")).unwrap();
    let _stop = StopServer(work);

    let mut script = String::from("set -euo pipefail\n");
    for (i, block) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '--- README block {}' >&2\n", i + 1));
        script.push_str(block);
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("timeout")
        .args(["300", "bash", "-c", &script])
        .current_dir(work)
        .env_clear()
        .env("PATH", path)
        .env("HOME", work)
        .env("LANG", "C.UTF-8")
        .env("README_SERVER", env!("CARGO_BIN_EXE_agentpkg-server"))
        .env("README_WORK", work)
        .output()
        .unwrap();
    let log = std::fs::read_to_string(work.join("server.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the README stopped ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- server log\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // What a newcomer reads in the log is not a warning or an error.
    for line in log.lines() {
        assert!(
            !line.contains(" WARN ") && !line.contains(" ERROR "),
            "the server complained while the README ran: {line}"
        );
    }
}
