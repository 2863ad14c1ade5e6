//! The command line's arguments (clap): the global options and the list of commands;
//! each command's own arguments are in its file under `commands/`.

use agentpkg_model::ClosedSet;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

use crate::commands;

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
    Login(commands::login::Args),
    /// Forget the stored credential.
    Logout,
    /// Who the credential is.
    Whoami,
    /// Publish a file.
    Push(commands::push::Args),
    /// Fetch a package, resuming a partial file and checking its SHA-256.
    Pull(commands::pull::Args),
    /// List packages.
    Ls(commands::ls::Args),
    /// Show one package: by id, or name/version/platform/arch.
    Info(commands::info::Args),
    /// Every version of a name, newest first.
    Versions(commands::versions::Args),
    /// The newest build for a platform.
    Latest(commands::latest::Args),
    /// Yank a package (hidden from lists and latest, still downloadable when pinned).
    Yank(commands::yank::Args),
    /// Restore a yanked package (`unyank` is the same command).
    #[command(visible_alias = "unyank")]
    Restore(commands::yank::Args),
    /// Delete a package (admin).
    Rm(commands::rm::Args),
    /// Users (admin).
    #[command(subcommand)]
    Users(commands::users::Command),
    /// API tokens.
    #[command(subcommand)]
    Tokens(commands::tokens::Command),
    /// Print a shell completion script.
    Completions(commands::completions::Args),
}

/// A value of one of the model's closed sets (platform, arch, role, scope, signature
/// format): the help and the shell completions list exactly the words the server takes.
pub fn one_of<T: ClosedSet + Clone + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::all().iter().map(|v| v.name())).try_map(|s| s.parse::<T>())
}

#[cfg(test)]
mod tests {
    use agentpkg_model::{Arch, Platform, Role, SignatureFormat, TokenScope};
    use clap::CommandFactory;

    use super::*;

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

    fn push(platform: &str, arch: &str, format: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([
            "agentpkg",
            "push",
            "f",
            "--name",
            "a",
            "--version",
            "1.0.0",
            "--platform",
            platform,
            "--arch",
            arch,
            "--signature",
            "f.sig",
            "--signature-format",
            format,
        ])
    }

    #[test]
    fn push_takes_exactly_the_words_the_server_takes() {
        for format in SignatureFormat::ALL {
            assert!(push("linux", "amd64", format.as_str()).is_ok(), "{format}");
        }
        for platform in Platform::ALL {
            assert!(push(platform.as_str(), "arm64", "openpgp").is_ok());
        }
        for arch in Arch::ALL {
            assert!(push("darwin", arch.as_str(), "openpgp").is_ok());
        }
        let refused = push("linux", "amd64", "sigstore")
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("sigstore-bundle"), "{refused}");
        assert!(push("Linux", "amd64", "openpgp").is_err());
        assert!(push("linux", "x86_64", "openpgp").is_err());
    }

    #[test]
    fn roles_and_scopes_are_the_models() {
        for role in Role::ALL {
            let cli =
                Cli::try_parse_from(["agentpkg", "users", "create", "u", "--role", role.as_str()]);
            assert!(cli.is_ok(), "{role}");
        }
        for scope in TokenScope::ALL {
            let cli = Cli::try_parse_from([
                "agentpkg",
                "tokens",
                "create",
                "t",
                "--scope",
                scope.as_str(),
            ]);
            assert!(cli.is_ok(), "{scope}");
        }
        assert!(
            Cli::try_parse_from(["agentpkg", "tokens", "create", "t", "--scope", "write"]).is_err()
        );
    }

    #[test]
    fn restore_is_also_unyank_and_ls_all_is_include_yanked() {
        for verb in ["restore", "unyank"] {
            let cli = Cli::try_parse_from(["agentpkg", verb, "7"]).unwrap();
            assert!(matches!(cli.command, Command::Restore(_)), "{verb}");
        }
        for flag in ["--include-yanked", "--all"] {
            assert!(
                Cli::try_parse_from(["agentpkg", "ls", flag]).is_ok(),
                "{flag}"
            );
        }
    }
}
