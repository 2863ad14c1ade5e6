//! What the `agentpkg` binary does before it reaches a server: usage errors, completions, and
//! a registry that cannot be reached. The server's own tests
//! (`crates/server/tests/it/client_cli.rs`) drive this same binary against a real registry;
//! having a test here also makes `cargo test --workspace` build it for them.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

fn agentpkg(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentpkg"))
        .args(args)
        .env("AGENTPKG_CONFIG_DIR", config)
        .env_remove("AGENTPKG_SERVER")
        .env_remove("AGENTPKG_TOKEN")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the agentpkg binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An address where nothing listens: a port bound, then released.
fn closed_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

#[test]
fn the_version_is_the_crate_version() {
    let config = tempfile::tempdir().unwrap();
    let out = agentpkg(config.path(), &["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("agentpkg {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_with_2_and_say_what_is_wrong() {
    let config = tempfile::tempdir().unwrap();
    for (args, words) in [
        (&["fly"][..], "unrecognized subcommand"),
        (&["push", "file.bin"][..], "--name"),
        (
            &[
                "push",
                "f",
                "--name",
                "n",
                "--version",
                "1.0.0",
                "--platform",
                "linux",
                "--arch",
                "amd64",
                "--parallel",
                "17",
            ][..],
            "17",
        ),
        (&["info", "not/a/package"][..], "name/version/platform/arch"),
        (&["completions", "powershell-9"][..], "invalid value"),
    ] {
        let out = agentpkg(config.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(words),
            "{args:?}: {:?} lacks {words:?}",
            text(&out.stderr)
        );
    }
}

#[test]
fn completions_name_every_command_for_each_shell() {
    let config = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = agentpkg(config.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for command in [
            "login",
            "push",
            "pull",
            "yank",
            "unyank",
            "tokens",
            "completions",
        ] {
            assert!(
                script.contains(command),
                "{shell} completions lack {command}"
            );
        }
    }
}

#[test]
fn an_unreachable_registry_is_exit_1_with_its_address_and_no_backtrace() {
    let config = tempfile::tempdir().unwrap();
    let server = closed_address();
    for args in [
        &["whoami"][..],
        &["ls"][..],
        &["pull", "otelcol", "--platform", "linux", "--arch", "amd64"][..],
    ] {
        let mut all = vec!["--server", server.as_str()];
        all.extend_from_slice(args);
        let out = agentpkg(config.path(), &all);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(&server), "{args:?}: {stderr}");
        assert!(stderr.contains("refused"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_push_of_a_missing_file_says_so_and_sends_nothing() {
    let config = tempfile::tempdir().unwrap();
    // Nothing listens there, so a request would fail differently from the missing file.
    let server = closed_address();
    let missing = config.path().join("no-such-file.bin");
    let out = agentpkg(
        config.path(),
        &[
            "--server",
            &server,
            "push",
            missing.to_str().unwrap(),
            "--name",
            "otelcol",
            "--version",
            "1.0.0",
            "--platform",
            "linux",
            "--arch",
            "amd64",
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-file.bin"), "{stderr}");
}
