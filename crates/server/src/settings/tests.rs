//! Loading and checking the settings.

use std::collections::HashMap;
use std::path::Path;

use secrecy::ExposeSecret;

use super::*;

fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("jwt");
    std::fs::write(&jwt, "a-signing-secret-read-from-a-file-000\n").unwrap();
    let path = jwt.display().to_string();
    let s = Settings::load_from(None, env(&[("AGENTPKG__AUTH__JWT_SECRET_FILE", &path)])).unwrap();
    assert_eq!(
        s.auth
            .jwt_secret
            .as_ref()
            .map(|v| v.expose_secret().to_owned()),
        Some("a-signing-secret-read-from-a-file-000".to_owned())
    );
    let both = env(&[
        ("AGENTPKG__AUTH__JWT_SECRET_FILE", &path),
        ("AGENTPKG__AUTH__JWT_SECRET", "another"),
    ]);
    assert!(Settings::load_from(None, both).is_err());
    let missing = env(&[("AGENTPKG__AUTH__JWT_SECRET_FILE", "/nonexistent/jwt")]);
    let err = Settings::load_from(None, missing).unwrap_err().to_string();
    assert!(err.contains("AGENTPKG__AUTH__JWT_SECRET_FILE"), "{err}");
}

#[test]
fn no_configuration_means_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.toml");
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(s.server.bind, "127.0.0.1:8080");
    assert_eq!(s.database.url.expose_secret(), "./data/agentpkg.db");
    assert_eq!(s.storage.backend, StorageBackend::Fs);
    assert_eq!(s.storage.fs.root, PathBuf::from("./data/packages"));
    assert!(s.auth.admin_password.is_none());
    assert!(
        Settings::load_from(Some(&missing), env(&[])).is_err(),
        "an explicit file must exist"
    );
}

#[test]
fn the_environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentpkg.toml");
    std::fs::write(
        &path,
        "[server]\nbind = \"0.0.0.0:9000\"\n[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"from-file\"\n[upload]\nmax_size_bytes = 10\n",
    )
    .unwrap();
    let s = Settings::load_from(
        Some(&path),
        env(&[
            ("AGENTPKG__STORAGE__S3__BUCKET", "from-env"),
            ("AGENTPKG__AUTH__ADMIN_PASSWORD", "123456789012345"),
            ("AGENTPKG__UPLOAD__MAX_SIZE_BYTES", "2048"),
        ]),
    )
    .unwrap();
    assert_eq!(s.server.bind, "0.0.0.0:9000");
    assert_eq!(s.storage.backend, StorageBackend::S3);
    assert_eq!(s.storage.s3.bucket, "from-env");
    assert_eq!(s.upload.max_size_bytes, 2048);
    assert_eq!(
        s.auth
            .admin_password
            .as_ref()
            .map(|p| p.expose_secret().to_owned()),
        Some("123456789012345".to_owned())
    );
}

#[test]
fn a_misspelt_key_is_an_error_not_a_silent_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentpkg.toml");
    std::fs::write(&path, "[upload]\nmax_size = 10\n").unwrap();
    assert!(Settings::load_from(Some(&path), env(&[])).is_err());
}

#[test]
fn secrets_do_not_print() {
    let s = Settings::load_from(
        None,
        env(&[
            (
                "AGENTPKG__AUTH__JWT_SECRET",
                "super-secret-signing-key-0123456789",
            ),
            (
                "AGENTPKG__DATABASE__URL",
                "postgres://u:hunter2hunter2@db/agentpkg",
            ),
        ]),
    )
    .unwrap();
    let printed = format!("{s:?}");
    assert!(!printed.contains("super-secret"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
}

#[test]
fn variables_with_one_underscore_are_named_with_the_spelling_that_works() {
    let vars = [
        "AGENTPKG_SERVER_BIND",
        "AGENTPKG__SERVER__BIND",
        "AGENTPKG_TOKEN",
        "AGENTPKG_TEST_S3_ENDPOINT",
        "PATH",
        "AGENTPKG_DEBUG",
    ]
    .map(|n| (std::ffi::OsString::from(n), std::ffi::OsString::from("x")));
    let found = super::misspelt_variables(vars);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["AGENTPKG_DEBUG", "AGENTPKG_SERVER_BIND"]);
    assert!(
        found[1].1.contains("AGENTPKG__SERVER__BIND"),
        "{}",
        found[1].1
    );
}

/// Every key the settings take, found by asking the loader itself: a probe field in a
/// section is refused with the list of the section's fields, and a field that is a section
/// of its own refuses a probe the same way.
fn setting_keys(dir: &Path, section: &[&str]) -> Vec<String> {
    const PROBE: &str = "agentpkg_probe";
    let refusal = |path: &[&str]| -> String {
        let file = dir.join("probe.toml");
        let text = if path.is_empty() {
            format!("{PROBE} = 1\n")
        } else {
            format!("[{}]\n{PROBE} = 1\n", path.join("."))
        };
        std::fs::write(&file, text).unwrap();
        match Settings::load_from(Some(&file), HashMap::new()) {
            Ok(_) => panic!("a probe in [{}] was accepted", path.join(".")),
            Err(e) => e.to_string(),
        }
    };
    let said = refusal(section);
    let Some(list) = said
        .split_once(&format!("unknown field `{PROBE}`, expected "))
        .map(|(_, rest)| rest)
    else {
        panic!("[{}]: {said}", section.join("."));
    };
    // The loader names the key after the list ("… for key `server.…`").
    let list = list.split(" for key ").next().unwrap_or(list);
    let fields: Vec<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(!fields.is_empty(), "[{}]: {said}", section.join("."));
    let mut keys = Vec::new();
    for field in fields {
        let mut path: Vec<&str> = section.to_vec();
        path.push(&field);
        if refusal(&path).contains(&format!("unknown field `{PROBE}`")) {
            keys.extend(setting_keys(dir, &path));
        } else {
            keys.push(path.join("."));
        }
    }
    keys
}

/// `docs/configuration.md`'s table names every key the server takes, and no other.
#[test]
fn the_configuration_reference_is_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = setting_keys(dir.path(), &[]);
    taken.sort();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .unwrap();
    // Rows: `| `key`, `key` | defaults | meaning |`.
    let mut documented: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned))
        .collect();
    documented.sort();
    let missing: Vec<_> = taken.iter().filter(|k| !documented.contains(k)).collect();
    let unknown: Vec<_> = documented.iter().filter(|k| !taken.contains(k)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "settings not in docs/configuration.md: {missing:?}\nin docs/configuration.md, not settings: {unknown:?}"
    );
}
