//! One file per command: each takes its parsed arguments and the context, calls the
//! client, and prints through [`Ctx::out`].

pub mod completions;
pub mod info;
pub mod latest;
pub mod login;
pub mod logout;
pub mod ls;
pub mod pull;
pub mod push;
pub mod rm;
pub mod tokens;
pub mod users;
pub mod versions;
pub mod whoami;
pub mod yank;

use std::io::IsTerminal;
use std::sync::Arc;

use agentpkg_client::{Client, Package, UploadProgress};

use crate::args::{Cli, Command};
use crate::config;
use crate::exit::{Exit, Failure};
use crate::progress;

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// What every command shares: the global options.
pub struct Ctx {
    json: bool,
    quiet: bool,
    server: Option<String>,
    token: Option<String>,
}

impl Ctx {
    /// Prints `value` as JSON, or `human` unless quiet.
    pub fn out(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else if !self.quiet {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }

    /// A progress bar on a terminal; nothing for scripts.
    pub fn progress(&self) -> Arc<dyn UploadProgress> {
        if self.json || self.quiet || !std::io::stderr().is_terminal() {
            Arc::new(())
        } else {
            Arc::new(progress::Bar::new())
        }
    }

    /// The registry to talk to (`--server`, else the one signed in to, else the local
    /// default) with the credential for it (`--token`, else the stored one for that server).
    pub fn client(&self) -> Result<Client, Failure> {
        let stored = config::load();
        let server = self
            .server
            .clone()
            .or_else(|| stored.as_ref().map(|s| s.server.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let token = self
            .token
            .clone()
            .or_else(|| stored.filter(|s| s.server == server).map(|s| s.token));
        Ok(Client::new(&server, token)?)
    }
}

/// Runs the command the line names.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let ctx = Ctx {
        json: cli.json,
        quiet: cli.quiet,
        server: cli.server,
        token: cli.token,
    };
    match cli.command {
        Command::Completions(args) => completions::run(args),
        Command::Login(args) => login::run(&ctx, args).await,
        Command::Logout => logout::run(&ctx).await,
        Command::Whoami => whoami::run(&ctx).await,
        Command::Push(args) => push::run(&ctx, args).await,
        Command::Pull(args) => pull::run(&ctx, args).await,
        Command::Ls(args) => ls::run(&ctx, args).await,
        Command::Info(args) => info::run(&ctx, args).await,
        Command::Versions(args) => versions::run(&ctx, args).await,
        Command::Latest(args) => latest::run(&ctx, args).await,
        Command::Yank(args) => yank::run(&ctx, args, false).await,
        Command::Restore(args) => yank::run(&ctx, args, true).await,
        Command::Rm(args) => rm::run(&ctx, args).await,
        Command::Users(command) => users::run(&ctx, command).await,
        Command::Tokens(command) => tokens::run(&ctx, command).await,
    }
}

/// A package named by id or by `name/version/platform/arch`.
pub async fn package(client: &Client, which: &str) -> Result<Package, Failure> {
    if let Ok(id) = which.parse::<i64>() {
        return Ok(client.get(id).await?);
    }
    let parts: Vec<&str> = which.split('/').collect();
    let usage = |why: String| {
        Failure::new(
            Exit::Usage,
            format!("{which:?}: {why}; give a package id or name/version/platform/arch"),
        )
    };
    match parts.as_slice() {
        [name, version, platform, arch] => {
            let platform = platform.parse().map_err(|e| usage(format!("{e}")))?;
            let arch = arch.parse().map_err(|e| usage(format!("{e}")))?;
            Ok(client.find(name, version, platform, arch).await?)
        }
        _ => Err(usage("not a package".to_owned())),
    }
}

/// One package on one line: coordinates, size, the start of its SHA-256, yanked or not.
pub fn line(p: &Package) -> String {
    format!(
        "{:<40} {:>12}  {}{}",
        p.coordinates(),
        p.file_size,
        p.checksum.short(),
        if p.is_active { "" } else { "  (yanked)" }
    )
}

/// A secret from standard input (when asked to, or when it is not a terminal), else
/// asked for without echo.
pub fn read_secret(prompt: &str, from_stdin: bool) -> Result<String, Failure> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    Ok(rpassword::prompt_password(prompt)?)
}
