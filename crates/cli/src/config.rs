//! Where the CLI keeps the server and credential it signed in with (mode 0600), and the
//! addresses of resumable pushes in progress.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stored {
    pub server: String,
    pub token: String,
    pub username: Option<String>,
}

/// `$AGENTPKG_CONFIG_DIR`, else the user's configuration directory's `agentpkg/`.
pub fn dir() -> PathBuf {
    std::env::var_os("AGENTPKG_CONFIG_DIR").map_or_else(
        || {
            dirs::config_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("agentpkg")
        },
        PathBuf::from,
    )
}

fn file() -> PathBuf {
    dir().join("credentials.json")
}

/// Resumable pushes in progress.
pub fn uploads_dir() -> PathBuf {
    dir().join("uploads")
}

pub fn load() -> Option<Stored> {
    let text = std::fs::read_to_string(file()).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the credential readable by its owner only (0600, in a 0700 directory).
pub fn save(stored: &Stored) -> std::io::Result<PathBuf> {
    let dir = dir();
    std::fs::create_dir_all(&dir)?;
    let path = file();
    let text = serde_json::to_string_pretty(stored).map_err(std::io::Error::other)?;
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let tmp = dir.join(".credentials.json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    #[cfg(not(unix))]
    std::fs::write(&path, text)?;
    Ok(path)
}

pub fn remove() -> std::io::Result<bool> {
    match std::fs::remove_file(file()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
