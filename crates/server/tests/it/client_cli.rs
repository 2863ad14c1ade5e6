//! `agentpkg`, the command line, against the real server on both backends: sign in, push,
//! list, pull to identical bytes; a pull and a push killed half-way (a real `SIGKILL`)
//! resumed; a corrupted partial file fetched again; bytes that do not match refused with
//! exit code 5; `--json`, exit codes, completions; the progress bar on a terminal only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use agentpkg_store::on_both_backends;
use agentpkg_store::testing::Backend;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{ADMIN_PASSWORD, TestApp, expect_error};

on_both_backends!(
    sign_in_push_list_pull_and_every_command_answers_with_its_exit_code,
    a_pull_killed_half_way_resumes_and_wrong_bytes_never_take_the_name,
    a_pull_that_cannot_write_stops_with_the_reason_and_resumes_once_it_can,
    a_killed_push_resumes_where_the_server_got_to_or_checks_what_it_published,
    a_parallel_push_killed_half_way_resumes_every_part,
    a_signed_package_is_kept_only_when_its_signature_verifies_with_the_given_key,
);

/// The `agentpkg` binary, built by `cargo test --workspace` beside this test.
pub(crate) fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("agentpkg");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p agentpkg-cli` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// A user of the CLI: its own configuration directory, talking to `app`.
struct User {
    config: tempfile::TempDir,
    base: String,
}

impl User {
    fn new(app: &TestApp) -> Self {
        Self {
            config: tempfile::tempdir().unwrap(),
            base: app.base.clone(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.environment(Command::new(binary()));
        cmd.args(args);
        cmd
    }

    /// `cmd` with this user's configuration and server, and no token from outside.
    fn environment(&self, mut cmd: Command) -> Command {
        cmd.env("AGENTPKG_CONFIG_DIR", self.config.path())
            .env_remove("AGENTPKG_TOKEN")
            .env("AGENTPKG_SERVER", &self.base);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `--json` and returns its output, asserting success.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = if args.contains(&"--json") {
            vec![]
        } else {
            vec!["--json"]
        };
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn sign_in(&self) {
        let out = self.run_with_stdin(
            &["login", "-u", "admin", "--password-stdin"],
            ADMIN_PASSWORD,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn random_file(dir: &Path, name: &str, size: usize) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = vec![0u8; size];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ size as u64;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `pull NAME --platform linux --arch amd64 -o DEST`; callers add what else they need.
fn pull_args<'a>(name: &'a str, dest: &'a Path) -> Vec<&'a str> {
    let dest = dest.to_str().unwrap();
    vec![
        "pull",
        name,
        "--platform",
        "linux",
        "--arch",
        "amd64",
        "-o",
        dest,
    ]
}

/// A user signed in to `app`, an admin's token, and a file of `size` random bytes in `dir`,
/// published by the admin at `coords`.
async fn signed_in_with_published(
    app: &TestApp,
    coords: &str,
    size: usize,
    dir: &Path,
) -> (User, String, PathBuf) {
    let admin = app.admin_token().await;
    let user = User::new(app);
    user.sign_in();
    let file = random_file(dir, "package.bin", size);
    app.publish(&admin, coords, std::fs::read(&file).unwrap())
        .await;
    (user, admin, file)
}

async fn sign_in_push_list_pull_and_every_command_answers_with_its_exit_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = User::new(&app);
    let work = tempfile::tempdir().unwrap();

    // Not signed in: the server's word, exit 1.
    let out = user.run(&["whoami"]);
    assert_eq!(code(&out), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: "),
        "no stack trace"
    );

    user.sign_in();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(user.config.path().join("credentials.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the credential is the user's only");
    }
    let me = user.json(&["whoami"]);
    assert_eq!(
        (me["username"].as_str(), me["role"].as_str()),
        (Some("admin"), Some("admin"))
    );
    let wrong = user.run_with_stdin(&["login", "-u", "admin", "--password-stdin"], "wrong");
    assert_eq!(code(&wrong), 1);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("error: "));

    let file = random_file(work.path(), "agent.tar.gz", 1024 * 1024 + 7);
    let pushed = user.json(&[
        "push",
        file.to_str().unwrap(),
        "--name",
        "cli-agent",
        "--version",
        "1.0.0",
        "--platform",
        "linux",
        "--arch",
        "amd64",
        "--description",
        "from the CLI",
    ]);
    assert_eq!(pushed["via"], "put");
    assert_eq!(pushed["package"]["checksum"], sha256(&file).as_str());
    assert_eq!(pushed["package"]["filename"], "agent.tar.gz");
    let again = user.run(&[
        "push",
        file.to_str().unwrap(),
        "--name",
        "cli-agent",
        "--version",
        "1.0.0",
        "--platform",
        "linux",
        "--arch",
        "amd64",
    ]);
    assert_eq!(code(&again), 4, "a conflict");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let listed = user.json(&["ls"]);
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["packages"][0]["name"], "cli-agent");
    assert_eq!(user.json(&["ls", "nothing-like-it"])["total"], 0);
    let out_path = work.path().join("fetched");
    let mut args = pull_args("cli-agent", &out_path);
    args.extend(["--version", "1.0.0"]);
    let pulled = user.json(&args);
    assert_eq!(pulled["resumed_at"], 0);
    assert_eq!(sha256(&out_path), sha256(&file));
    assert!(!work.path().join("fetched.part").exists());
    // Without -o: the package's file name, in the current directory.
    let here = tempfile::tempdir().unwrap();
    let named = user
        .command(&[
            "pull",
            "cli-agent",
            "--latest",
            "--platform",
            "linux",
            "--arch",
            "amd64",
        ])
        .current_dir(here.path())
        .output()
        .unwrap();
    assert!(
        named.status.success(),
        "{}",
        String::from_utf8_lossy(&named.stderr)
    );
    assert_eq!(sha256(&here.path().join("agent.tar.gz")), sha256(&file));
    let latest = user.json(&[
        "latest",
        "cli-agent",
        "--platform",
        "linux",
        "--arch",
        "amd64",
    ]);
    assert_eq!(latest["version"], "1.0.0");
    let info = user.json(&["info", "cli-agent/1.0.0/linux/amd64"]);
    assert_eq!(info["description"], "from the CLI");
    assert_eq!(user.json(&["versions", "cli-agent"])[0]["version"], "1.0.0");

    // Exit codes: not found 3, usage 2.
    let missing = user.run(&pull_args("no-such", Path::new("x")));
    assert_eq!(
        code(&missing),
        3,
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert!(!Path::new("x").exists() && !Path::new("x.part").exists());
    assert_eq!(code(&user.run(&["info", "999999"])), 3);
    assert_eq!(
        code(&user.run(&["push", file.to_str().unwrap(), "--name", "x"])),
        2
    );
    assert_eq!(code(&user.run(&["info", "not/coordinates"])), 2);

    let yanked = user.json(&["yank", "cli-agent/1.0.0/linux/amd64"]);
    assert_eq!(yanked["is_active"], false);
    assert_eq!(user.json(&["ls"])["total"], 0);
    assert_eq!(user.json(&["ls", "--include-yanked"])["total"], 1);
    assert_eq!(user.json(&["ls", "--all"])["total"], 1);
    assert_eq!(
        user.json(&["restore", &info["id"].to_string()])["is_active"],
        true
    );
    user.json(&["yank", &info["id"].to_string()]);
    assert_eq!(
        user.json(&["unyank", &info["id"].to_string()])["is_active"],
        true
    );
    // A word the server does not take is refused before anything is sent, naming the
    // words it does take.
    let out = user.run(&[
        "latest",
        "cli-agent",
        "--platform",
        "Linux",
        "--arch",
        "amd64",
    ]);
    assert_eq!(code(&out), 2);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("linux") && said.contains("darwin"), "{said}");

    let token = user.json(&[
        "tokens",
        "create",
        "ci",
        "--scope",
        "publish",
        "--package",
        "cli-*",
    ]);
    let secret = token["secret"].as_str().unwrap().to_owned();
    assert!(user.json(&["tokens", "ls"]).to_string().contains("\"ci\""));
    let with_token = user
        .command(&["--json", "whoami"])
        .env("AGENTPKG_TOKEN", &secret)
        .output()
        .unwrap();
    let who: Value = serde_json::from_slice(&with_token.stdout).unwrap();
    assert_eq!(who["token"], "ci");
    let created = user.run_with_stdin(
        &[
            "--json",
            "users",
            "create",
            "cli-viewer",
            "--role",
            "viewer",
        ],
        "a long enough password\n",
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let users = user.json(&["users", "ls"]);
    assert!(users.to_string().contains("cli-viewer"));

    assert!(user.json(&["rm", "cli-agent/1.0.0/linux/amd64"])["deleted"]["id"].is_i64());
    assert_eq!(user.json(&["ls", "--all"])["total"], 0);

    for shell in ["bash", "zsh", "fish"] {
        let out = user.run(&["completions", shell]);
        assert!(out.status.success());
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("agentpkg") && script.contains("pull"),
            "{shell}"
        );
    }

    let stored: Value = serde_json::from_slice(
        &std::fs::read(user.config.path().join("credentials.json")).unwrap(),
    )
    .unwrap();
    let session = stored["token"].as_str().unwrap().to_owned();
    let out = user.run(&["--json", "logout"]);
    assert!(out.status.success());
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["session_ended"], true, "{said}");
    assert!(!user.config.path().join("credentials.json").exists());
    // The session itself is over, not only forgotten here.
    expect_error(
        app.get("/api/v1/auth/me", &session).await,
        401,
        "token_revoked",
    )
    .await;
    assert_eq!(code(&user.run(&["whoami"])), 1);
}

/// Waits until `path` holds at least `bytes`, or the process ended.
fn wait_for_size(child: &mut std::process::Child, path: &Path, bytes: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::fs::metadata(path).is_ok_and(|m| m.len() >= bytes) {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

async fn a_pull_killed_half_way_resumes_and_wrong_bytes_never_take_the_name(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let work = tempfile::tempdir().unwrap();
    let size = 160 * 1024 * 1024;
    let (user, admin, file) =
        signed_in_with_published(&app, "big-agent/1.0.0/linux/amd64", size, work.path()).await;
    let dest = work.path().join("big.out");
    let part = work.path().join("big.out.part");
    let mut args = pull_args("big-agent", &dest);
    args.push("--json");

    // A real kill, half-way.
    let mut killed = false;
    for _ in 0..3 {
        let _ = std::fs::remove_file(&part);
        let mut child = user.command(&args).stdout(Stdio::null()).spawn().unwrap();
        if wait_for_size(&mut child, &part, 8 * 1024 * 1024) {
            child.kill().unwrap();
            child.wait().unwrap();
            killed = std::fs::metadata(&part).unwrap().len() < size as u64;
            if killed {
                break;
            }
        } else {
            child.wait().unwrap();
        }
        let _ = std::fs::remove_file(&dest);
    }
    assert!(killed, "the pull was never caught half-way");
    assert!(!dest.exists(), "a killed pull leaves only the partial file");
    let had = std::fs::metadata(&part).unwrap().len();
    let resumed = user.json(&args);
    assert_eq!(resumed["resumed_at"], had, "{resumed}");
    assert_eq!(sha256(&dest), sha256(&file));
    assert!(!part.exists());

    // A partial file whose bytes are wrong is noticed, and the package fetched whole.
    std::fs::remove_file(&dest).unwrap();
    std::fs::write(&part, vec![0xAAu8; 4 * 1024 * 1024]).unwrap();
    let again = user.json(&args);
    assert_eq!(again["restarted"], true, "{again}");
    assert_eq!(sha256(&dest), sha256(&file));

    // Bytes in storage that are not the package's: refused, exit 5, no file left.
    let small = app
        .publish(&admin, "bent-agent/1.0.0/linux/amd64", b"the right bytes")
        .await;
    let key = agentpkg_model::ObjectKey::parse(small["storage_path"].as_str().unwrap()).unwrap();
    app.storage.delete(&key).await.unwrap();
    app.storage
        .put(&key, &mut &b"the wrong bytes"[..])
        .await
        .unwrap();
    let bent = work.path().join("bent");
    let mut bent_args = pull_args("bent-agent", &bent);
    bent_args.extend(["--version", "1.0.0"]);
    let out = user.run(&bent_args);
    assert_eq!(code(&out), 5, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
    assert!(!bent.exists() && !work.path().join("bent.part").exists());

    // Refused bytes that cannot be removed are reported, with their file, still as exit 5.
    // An immutable directory (`chattr +i`, which binds root too) keeps its files; the
    // partial file is there beforehand, as an immutable directory refuses new ones.
    let locked = work.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let kept = locked.join("bent.part");
    std::fs::write(&kept, b"").unwrap();
    let chattr = |flag: &str| {
        let status = Command::new("chattr").arg(flag).arg(&locked).status();
        assert!(
            status.unwrap().success(),
            "chattr {flag} {}",
            locked.display()
        );
    };
    chattr("+i");
    let locked_dest = locked.join("bent");
    let mut locked_args = pull_args("bent-agent", &locked_dest);
    locked_args.extend(["--version", "1.0.0"]);
    let out = user.run(&locked_args);
    chattr("-i");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 5, "{stderr}");
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(
        stderr.contains(&format!("{} could not be removed", kept.display())),
        "{stderr}"
    );
    assert!(!locked_dest.exists());

    // The progress bar shows on a terminal, and not when piped.
    std::fs::remove_file(&dest).unwrap();
    let cmd = format!(
        "AGENTPKG_CONFIG_DIR={} AGENTPKG_SERVER={} {} pull big-agent --platform linux --arch amd64 -o {}",
        user.config.path().display(),
        app.base,
        binary().display(),
        dest.display()
    );
    let tty = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(
        shown.contains("transfer") && shown.contains("MiB"),
        "{shown}"
    );
    std::fs::remove_file(&dest).unwrap();
    let piped = user.run(&pull_args("big-agent", &dest));
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains("transfer") && !stderr.contains("MiB"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&piped.stdout).contains("sha256 verified"));
}

async fn a_pull_that_cannot_write_stops_with_the_reason_and_resumes_once_it_can(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let work = tempfile::tempdir().unwrap();
    let size = 24 * 1024 * 1024;
    let (user, _, file) =
        signed_in_with_published(&app, "full-agent/1.0.0/linux/amd64", size, work.path()).await;
    let dest = work.path().join("agent.out");
    let part = work.path().join("agent.out.part");
    let mut args = pull_args("full-agent", &dest);
    args.push("--json");

    // Files of at most 4 MiB, with the signal ignored: past that, a write fails as on a
    // full disk, half-way through the download, on the thread that writes.
    let out = user
        .environment(Command::new("bash"))
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 4096; exec \"$0\" \"$@\"")
        .arg(binary())
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !dest.exists(),
        "a pull that failed leaves only the partial file"
    );
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept < size as u64, "kept {kept} bytes");

    // With room again, the next run goes on from what was written.
    let resumed = user.json(&args);
    assert_eq!(resumed["resumed_at"], kept, "{resumed}");
    assert_eq!(sha256(&dest), sha256(&file));
    assert!(!part.exists());
}

/// Bytes a process has read (from files and sockets alike), from `/proc`.
fn bytes_read(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("rchar: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// How many bytes of the tus upload at `url` the server holds (its `Upload-Offset`, asked
/// as any client would), 0 when it does not say.
async fn held_by_server(app: &TestApp, token: &str, url: &str) -> u64 {
    let url = url.trim();
    let url = if url.starts_with("http") {
        url.to_owned()
    } else {
        app.url(url)
    };
    let head = app
        .client
        .head(url)
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    head.headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0)
}

async fn a_killed_push_resumes_where_the_server_got_to_or_checks_what_it_published(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let user = User::new(&app);
    user.sign_in();
    let work = tempfile::tempdir().unwrap();
    let file = random_file(work.path(), "pushed.bin", 200 * 1024 * 1024);
    let args = [
        "--json",
        "push",
        file.to_str().unwrap(),
        "--name",
        "pushed-agent",
        "--version",
        "3.0.0",
        "--platform",
        "linux",
        "--arch",
        "arm64",
    ];
    let uploads = user.config.path().join("uploads");
    // Killed once it has read a quarter of the file: the server has received most of
    // that, in the one request the push sends all but its last chunk in.
    let mut child = user.command(&args).stdout(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed = false;
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        if bytes_read(child.id()) >= 50 * 1024 * 1024 {
            child.kill().unwrap();
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.wait().unwrap();
    assert!(killed, "the push was never caught half-way");
    // The server keeps every part the dropped connection delivered (its tus offset, asked
    // as any client would, once it has seen the connection go).
    let remembered = std::fs::read_dir(&uploads)
        .unwrap()
        .next()
        .and_then(|e| Some(e.ok()?.path()))
        .expect("the push remembers its upload");
    let url = std::fs::read_to_string(&remembered).unwrap();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got == 0 && Instant::now() < deadline {
        got = held_by_server(&app, &admin, &url).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(got > 0, "the server kept nothing of the dropped push");
    let pushed = user.json(&args);
    assert_eq!(pushed["via"], "tus");
    let resumed_at = pushed["resumed_at"].as_u64().unwrap();
    assert!(resumed_at >= got, "{pushed} after {got}");
    assert!(resumed_at < 200 * 1024 * 1024);
    assert_eq!(pushed["package"]["checksum"], sha256(&file).as_str());
    let res = app
        .get(
            "/api/v1/packages/pushed-agent/3.0.0/linux/arm64/download",
            &admin,
        )
        .await;
    let body = res.bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&body)), sha256(&file));
    assert_eq!(
        std::fs::read_dir(&uploads).unwrap().count(),
        0,
        "the finished upload is forgotten"
    );

    // A run stopped after its last byte left still remembers an upload the server then
    // completed: the next run finds the published package and checks it against the file.
    std::fs::write(&remembered, &url).unwrap();
    let again = user.json(&args);
    assert_eq!(again["resumed_at"], 200 * 1024 * 1024, "{again}");
    assert_eq!(again["package"]["checksum"], sha256(&file).as_str());
    assert!(!remembered.exists(), "the completed upload is forgotten");

    // If other bytes have since been published at those coordinates, it says so (exit 5).
    let id = &again["package"]["id"];
    let gone = app.delete(&format!("/api/v1/packages/{id}"), &admin).await;
    assert_eq!(gone.status(), 204);
    app.publish(&admin, "pushed-agent/3.0.0/linux/arm64", b"other bytes")
        .await;
    std::fs::write(&remembered, &url).unwrap();
    let out = user.run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 5, "{stderr}");
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
}

async fn a_parallel_push_killed_half_way_resumes_every_part(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let user = User::new(&app);
    user.sign_in();
    let work = tempfile::tempdir().unwrap();
    let size = 192 * 1024 * 1024;
    let file = random_file(work.path(), "parallel.bin", size);
    let args = [
        "--json",
        "push",
        file.to_str().unwrap(),
        "--name",
        "parallel-agent",
        "--version",
        "1.0.0",
        "--platform",
        "linux",
        "--arch",
        "amd64",
        "--parallel",
        "3",
    ];
    let uploads = user.config.path().join("uploads");
    let mut child = user.command(&args).stdout(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = 0;
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        let parts: Vec<Value> = std::fs::read_dir(&uploads)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let mut sum = 0;
        for part in &parts {
            sum += held_by_server(&app, &admin, part["url"].as_str().unwrap()).await;
        }
        if parts.len() == 3 && sum > 0 {
            child.kill().unwrap();
            got = sum;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.wait().unwrap();
    assert!(got > 0, "the parallel push was never caught half-way");
    let pushed = user.json(&args);
    assert_eq!(pushed["via"], "tus-parallel", "{pushed}");
    let resumed_at = pushed["resumed_at"].as_u64().unwrap();
    assert!(
        resumed_at >= got && resumed_at < size as u64,
        "{pushed} after {got}"
    );
    assert_eq!(pushed["package"]["checksum"], sha256(&file).as_str());
    let dest = work.path().join("back");
    user.json(&pull_args("parallel-agent", &dest));
    assert_eq!(sha256(&dest), sha256(&file));
    assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 0);
}

async fn a_signed_package_is_kept_only_when_its_signature_verifies_with_the_given_key(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let user = User::new(&app);
    user.sign_in();
    let work = tempfile::tempdir().unwrap();
    let gpg = crate::signing::Gpg::new();
    let signer = gpg.generate("Build <build@example.com>", "ed25519", "never", None);
    let stranger = crate::signing::Gpg::new();
    let other = stranger.generate("Other <other@example.com>", "ed25519", "never", None);
    let (key, wrong_key) = (work.path().join("build.asc"), work.path().join("other.asc"));
    std::fs::write(&key, gpg.export(&signer)).unwrap();
    std::fs::write(&wrong_key, stranger.export(&other)).unwrap();
    // The registry takes OpenPGP signatures by keys it trusts.
    let admin = app.admin_token().await;
    let trusted = crate::signing::trust(&app, &admin, &gpg.export(&signer), &["signed-*"]).await;
    assert_eq!(trusted.status(), 201);
    let file = random_file(work.path(), "signed.bin", 300_000);
    let signature = work.path().join("signed.bin.asc");
    std::fs::write(&signature, gpg.sign(&signer, &file, true, &[])).unwrap();
    user.json(&[
        "push",
        file.to_str().unwrap(),
        "--name",
        "signed-agent",
        "--version",
        "1.0.0",
        "--platform",
        "linux",
        "--arch",
        "amd64",
        "--signature",
        signature.to_str().unwrap(),
    ]);
    user.json(&[
        "push",
        file.to_str().unwrap(),
        "--name",
        "unsigned-agent",
        "--version",
        "1.0.0",
        "--platform",
        "linux",
        "--arch",
        "amd64",
    ]);
    let dest = work.path().join("got");
    let pull = |name: &str, key: &Path| {
        let mut args = pull_args(name, &dest);
        args.extend(["--json", "--key", key.to_str().unwrap()]);
        user.run(&args)
    };
    let good = pull("signed-agent", &key);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let report: Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(report["signature_verified"], true);
    assert_eq!(sha256(&dest), sha256(&file));
    std::fs::remove_file(&dest).unwrap();
    for (name, with, why) in [
        ("signed-agent", &wrong_key, "does not verify"),
        ("unsigned-agent", &key, "no signature"),
    ] {
        let out = pull(name, with);
        assert_eq!(code(&out), 5, "{name}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !dest.exists() && !work.path().join("got.part").exists(),
            "{name}: nothing kept"
        );
    }
}
