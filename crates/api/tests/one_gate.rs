//! The API and the web interface decide nothing and record nothing on their own: every
//! "may this caller…?" and every audit event is the gate's, in `packagemgr`
//! (`PackageManager::gate`, `Accounts::gate`, the fleet's and statistics' operations).
//! A handler that checks a name scope, reads or changes a package around the gate, or
//! writes the audit log itself fails this test.

use std::path::{Path, PathBuf};

/// What a handler must not call, and what to call instead.
const FORBIDDEN: &[(&str, &str)] = &[
    (".may_read(", "read through state.packages.gate(&caller)"),
    (".may_write(", "change through state.packages.gate(&caller)"),
    (
        ".may_touch(",
        "ask the gate (Caller::permits for what a page shows)",
    ),
    (
        ".allows(",
        "ask the gate: name scopes are decided in packagemgr",
    ),
    ("audit.record(", "let the gate's operation record its event"),
    (".record(event", "let the gate's operation record its event"),
    ("packages.get(", "state.packages.gate(&caller).get"),
    ("packages.find(", "state.packages.gate(&caller).find"),
    ("packages.latest(", "state.packages.gate(&caller).latest"),
    ("packages.history(", "state.packages.gate(&caller).history"),
    ("packages.list(", "state.packages.gate(&caller).list"),
    ("packages.update(", "state.packages.gate(&caller).change"),
    ("packages.delete(", "state.packages.gate(&caller).delete"),
    ("packages.attach_signature(", "the gate's attach_signature"),
    ("packages.add_owner(", "the gate's change_owner"),
    ("packages.remove_owner(", "the gate's change_owner"),
    ("packages.create_team(", "the gate's create_team"),
    ("packages.change_member(", "the gate's change_member"),
    (
        "accounts.create_user(",
        "state.accounts.gate(&caller).create_user",
    ),
    (
        "accounts.delete_user(",
        "state.accounts.gate(&caller).delete_user",
    ),
    (
        "accounts.change_role(",
        "state.accounts.gate(&caller).change_role",
    ),
    ("accounts.change_password(", "the gate's change_password"),
    ("accounts.create_token(", "the gate's create_token"),
    ("accounts.revoke_token(", "the gate's revoke_token"),
    ("accounts.end_session(", "the gate's sign_out"),
    (
        "accounts.login_from(",
        "Accounts::sign_in, which records the outcome",
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every forbidden call in the sources under `dirs`, as `file:line: call (instead)`.
fn violations(dirs: &[PathBuf]) -> Vec<String> {
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(dir, &mut files);
    }
    assert!(files.len() > 10, "found only {} source files", files.len());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // The gate's own callers are named in comments and docs; only code counts.
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for (call, instead) in FORBIDDEN {
                if code.contains(call) {
                    found.push(format!("{}:{}: {call} ({instead})", file.display(), n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn no_handler_decides_or_records_on_its_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = violations(&[root.join("src"), root.join("../web/src")]);
    assert!(
        found.is_empty(),
        "decisions and audit events belong to the gate:\n{}",
        found.join("\n")
    );
}

/// The web interface is a sibling face of the API, not built on it: both stand on the
/// gate and on what they share about a request (`agentpkg-http`).
#[test]
fn the_web_interface_does_not_build_on_the_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("../web/Cargo.toml")).unwrap();
    assert!(manifest.contains("agentpkg-http"), "{manifest}");
    assert!(!manifest.contains("agentpkg-api"), "{manifest}");
}

#[test]
fn the_check_finds_what_it_forbids() {
    let dir = std::env::temp_dir().join(format!("agentpkg-one-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..11 {
        std::fs::write(dir.join(format!("ok{i}.rs")), "fn f() {}\n").unwrap();
    }
    std::fs::write(
        dir.join("bad.rs"),
        "fn h() {\n    // principal.may_write(&name) in a comment is fine\n    principal.may_write(&name)?;\n    state.audit.record(event).await;\n}\n",
    )
    .unwrap();
    let found = violations(std::slice::from_ref(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
    let lines: Vec<&str> = found
        .iter()
        .map(|f| f.rsplit_once('/').map_or(f.as_str(), |(_, l)| l))
        .collect();
    assert_eq!(
        lines,
        [
            "bad.rs:3: .may_write( (change through state.packages.gate(&caller))",
            "bad.rs:4: audit.record( (let the gate's operation record its event)",
            "bad.rs:4: .record(event (let the gate's operation record its event)",
        ]
    );
}
