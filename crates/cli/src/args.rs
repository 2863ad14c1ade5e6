//! The command line's arguments (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "agentpkg", version, about = "Publish and fetch agent packages")]
pub struct Cli {
    /// The registry (default: the one signed in to, else http://127.0.0.1:8080).
    #[arg(long, global = true, env = "AGENTPKG_SERVER")]
    pub server: Option<String>,
    /// An API token to use instead of the stored credential.
    #[arg(long, global = true, env = "AGENTPKG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Sign in and store the credential (mode 0600) in the configuration directory.
    Login {
        /// The username (asked when not given).
        #[arg(long, short)]
        username: Option<String>,
        /// Read the password from standard input instead of asking for it.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Forget the stored credential.
    Logout,
    /// Who the credential is.
    Whoami,
    /// Publish a file.
    Push {
        file: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        #[arg(long)]
        platform: String,
        #[arg(long)]
        arch: String,
        #[arg(long)]
        description: Option<String>,
        /// A detached signature of the file.
        #[arg(long)]
        signature: Option<PathBuf>,
        /// The signature's format: openpgp (default), sigstore-bundle (a `.sigstore.json`,
        /// verified by the registry like OpenPGP), minisign or cosign (kept unverified).
        #[arg(long, requires = "signature", value_parser = signature_formats())]
        signature_format: Option<String>,
        /// Send a large file over this many connections at once (resumable parts joined by
        /// the server).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
        parallel: u64,
    },
    /// Fetch a package, resuming a partial file and checking its SHA-256.
    Pull {
        name: String,
        /// An exact version, or a SemVer requirement (`^1.4`) for the newest matching.
        #[arg(long, conflicts_with = "latest")]
        version: Option<String>,
        /// The newest active version (the default).
        #[arg(long)]
        latest: bool,
        #[arg(long)]
        platform: String,
        #[arg(long)]
        arch: String,
        /// Where to write it (default: the package's file name, here).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// An OpenPGP public key (armoured or binary): the package's signature must verify
        /// with it, or the file is not kept (exit 5).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Flush the file to the disk before it takes its name, so that it survives a
        /// power cut too (without it, the name still never shows a partial or wrong file
        /// to a reader or after a killed process).
        #[arg(long)]
        fsync: bool,
    },
    /// List packages.
    Ls {
        /// Only names containing this.
        search: Option<String>,
        #[arg(long)]
        platform: Option<String>,
        #[arg(long)]
        arch: Option<String>,
        /// Yanked packages too.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 1)]
        page: u32,
    },
    /// Show one package: by id, or name/version/platform/arch.
    Info { package: String },
    /// Every version of a name, newest first.
    Versions { name: String },
    /// The newest build for a platform.
    Latest {
        name: String,
        #[arg(long)]
        platform: String,
        #[arg(long)]
        arch: String,
        /// Within a SemVer requirement.
        #[arg(long)]
        version: Option<String>,
    },
    /// Yank a package (hidden from lists and latest, still downloadable when pinned).
    Yank { package: String },
    /// Restore a yanked package.
    Unyank { package: String },
    /// Delete a package (admin).
    Rm { package: String },
    /// Users (admin).
    #[command(subcommand)]
    Users(UsersCommand),
    /// API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// List the users: id, name and role.
    Ls,
    /// Create a user; the password is read from standard input.
    Create {
        username: String,
        /// viewer, publisher or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// Delete a user (by the id `users ls` shows); not yourself.
    Rm { id: i64 },
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// List your API tokens: id, name and scope (never the secret).
    Ls,
    /// Create a token; its secret is printed once.
    Create {
        name: String,
        /// read, publish or admin.
        #[arg(long, default_value = "read")]
        scope: String,
        /// Limit it to these name patterns (`opamp-*`).
        #[arg(long = "package")]
        packages: Vec<String>,
    },
    /// Revoke a token (by the id `tokens ls` shows): it stops working on every server.
    Revoke { id: i64 },
}

/// The signature formats the server takes, from the model's own list, so that the help
/// cannot offer one it refuses.
fn signature_formats() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        agentpkg_model::SignatureFormat::ALL
            .iter()
            .map(|f| f.as_str()),
    )
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every command, at every depth, says in `--help` what it does.
    #[test]
    fn every_command_has_a_description() {
        fn undescribed(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    out.push(path.clone());
                }
                undescribed(sub, &path, out);
            }
        }
        let mut missing = Vec::new();
        undescribed(&Cli::command(), "agentpkg", &mut missing);
        assert!(missing.is_empty(), "no description: {missing:?}");
    }

    #[test]
    fn the_arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn push_takes_exactly_the_signature_formats_the_server_takes() {
        use clap::Parser;
        let push = |format: &str| {
            Cli::try_parse_from([
                "agentpkg",
                "push",
                "f",
                "--name",
                "a",
                "--version",
                "1.0.0",
                "--platform",
                "linux",
                "--arch",
                "amd64",
                "--signature",
                "f.sig",
                "--signature-format",
                format,
            ])
        };
        for format in agentpkg_model::SignatureFormat::ALL {
            assert!(push(format.as_str()).is_ok(), "{format}");
        }
        assert!(push("sigstore").is_err());
    }
}
