//! Loading the settings (defaults, a TOML file, `AGENTPKG__…` variables, `…_FILE` secrets),
//! and naming the variables that look meant for the server but are not read.

use std::path::Path;

use super::Settings;

/// The file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "agentpkg.toml";

/// Variables named `AGENTPKG_…` that other programs read, not the server.
const OTHER_PROGRAMS_VARIABLES: &[&str] = &[
    "AGENTPKG_SERVER",
    "AGENTPKG_TOKEN",
    "AGENTPKG_CONFIG_DIR",
    "AGENTPKG_BLESS",
    "AGENTPKG_FUZZ_CASES",
];
const OTHER_PROGRAMS_PREFIXES: &[&str] = &["AGENTPKG_TEST_", "AGENTPKG_GARAGE_"];

/// Environment variables that look meant for the server but are not read, with what to
/// write instead: settings are `AGENTPKG__SECTION__KEY`, with two underscores between the
/// parts (`AGENTPKG_SERVER_BIND` does nothing; `AGENTPKG__SERVER__BIND` sets `server.bind`).
pub fn misspelt_variables(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (name, _) in vars {
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("AGENTPKG_") else {
            continue;
        };
        if rest.starts_with('_')
            || OTHER_PROGRAMS_VARIABLES.contains(&name)
            || OTHER_PROGRAMS_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            continue;
        }
        let hint = match rest.split_once('_') {
            Some((section, key)) => format!(
                "settings are AGENTPKG__SECTION__KEY, with two underscores between the parts (AGENTPKG__{section}__{key}?)"
            ),
            None => "settings are AGENTPKG__SECTION__KEY, with two underscores between the parts"
                .to_owned(),
        };
        found.push((name.to_owned(), hint));
    }
    found.sort();
    found
}

impl Settings {
    /// Loads defaults, then `file` (required when given; else `agentpkg.toml` if present),
    /// then the environment.
    ///
    /// Any variable may instead name a file holding its value, with `_FILE` appended
    /// (`AGENTPKG__AUTH__JWT_SECRET_FILE=/run/secrets/jwt`), so that secrets need not sit
    /// in the environment: the file's content, less a trailing line break, is the value.
    pub fn load(file: Option<&Path>) -> Result<Self, config::ConfigError> {
        Self::load_from(file, std::env::vars().collect())
    }

    pub(crate) fn load_from(
        file: Option<&Path>,
        vars: std::collections::HashMap<String, String>,
    ) -> Result<Self, config::ConfigError> {
        const PREFIX: &str = "AGENTPKG__";
        let file_source = match file {
            Some(path) => config::File::from(path).required(true),
            None => config::File::with_name(DEFAULT_CONFIG_FILE).required(false),
        };
        let (from_files, plain): (Vec<_>, Vec<_>) = vars
            .into_iter()
            .partition(|(k, _)| k.starts_with(PREFIX) && k.ends_with("_FILE"));
        let plain: std::collections::HashMap<String, String> = plain.into_iter().collect();
        let mut builder = config::Config::builder()
            .add_source(file_source.format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("AGENTPKG")
                    .source(Some(plain.clone()))
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        for (var, path) in from_files {
            let direct = var.trim_end_matches("_FILE");
            if plain.contains_key(direct) {
                return Err(config::ConfigError::Message(format!(
                    "{direct} and {var} are both set: choose one"
                )));
            }
            let key = direct[PREFIX.len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            let value = std::fs::read_to_string(&path).map_err(|e| {
                config::ConfigError::Message(format!("{var}: cannot read {path}: {e}"))
            })?;
            builder = builder.set_override(key, value.trim_end_matches(['\r', '\n']))?;
        }
        builder.build()?.try_deserialize()
    }
}
