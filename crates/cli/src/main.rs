//! `agentpkg`: publish and fetch agent packages from the command line, over the registry's
//! REST API (through `agentpkg-client`).
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict, 5 checksum (or signature)
//! mismatch.

// A command line reports on standard output and standard error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod config;
mod progress;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agentpkg_client::{
    Client, Error, NewUser, PackageQuery, PullOptions, Target, Upload, UploadProgress,
};
use args::{Cli, Command, TokensCommand, UsersCommand};
use clap::{CommandFactory, Parser};
use serde_json::json;

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Failure with its exit code.
struct Failure(String, u8);

/// The exit code of a client error (see the README).
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Api { status, .. } if status.as_u16() == 404 => 3,
        Error::Api { status, .. } if status.as_u16() == 409 => 4,
        Error::Checksum { .. } | Error::Signature(_) => 5,
        Error::NotRemoved { reason, .. } => exit_code(reason),
        _ => 1,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(e.to_string(), exit_code(&e))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure(e.to_string(), 1)
    }
}

/// A transfer's pieces are allocated on one thread and freed on another, a few hundred KiB
/// each. With glibc's defaults that memory goes back to the kernel and is faulted in again
/// (some 40 000 page faults per GiB pulled, 0.1 s of CPU); with pieces up to 4 MiB taken
/// from the heap and freed memory under 64 MiB kept, it is used again. The price is a few
/// MiB kept for reuse: peak memory 16–22 MiB instead of 14–16 (docs/performance.md).
/// `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_`, when set, win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
    {
        return;
    }
    // SAFETY: mallopt only changes glibc's allocation policy; it is called first thing in
    // main, before any other thread exists, with documented parameters and values.
    let applied = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20)
            + libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20)
    };
    debug_assert_eq!(applied, 2, "mallopt refused a setting");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message, code)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

struct Ctx {
    json: bool,
    quiet: bool,
}

impl Ctx {
    /// Prints `value` as JSON, or `human` unless quiet.
    fn out(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else if !self.quiet {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }

    fn progress(&self) -> Arc<dyn UploadProgress> {
        if self.json || self.quiet || !std::io::stderr().is_terminal() {
            Arc::new(())
        } else {
            Arc::new(progress::Bar::new())
        }
    }
}

fn client(cli: &Cli) -> Result<Client, Failure> {
    let stored = config::load();
    let server = cli
        .server
        .clone()
        .or_else(|| stored.as_ref().map(|s| s.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = cli
        .token
        .clone()
        .or_else(|| stored.filter(|s| s.server == server).map(|s| s.token));
    Ok(Client::new(&server, token)?)
}

fn read_secret(prompt: &str, from_stdin: bool) -> Result<String, Failure> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    Ok(rpassword::prompt_password(prompt)?)
}

/// A package named by id or by `name/version/platform/arch`.
async fn package(client: &Client, which: &str) -> Result<agentpkg_client::Package, Failure> {
    if let Ok(id) = which.parse::<i64>() {
        return Ok(client.get(id).await?);
    }
    let parts: Vec<&str> = which.split('/').collect();
    match parts.as_slice() {
        [name, version, platform, arch] => Ok(client.find(name, version, platform, arch).await?),
        _ => Err(Failure(
            format!("{which:?}: give a package id or name/version/platform/arch"),
            2,
        )),
    }
}

fn line(p: &agentpkg_client::Package) -> String {
    format!(
        "{:<40} {:>12}  {}{}",
        p.coordinates(),
        p.file_size,
        &p.checksum[..12.min(p.checksum.len())],
        if p.is_active { "" } else { "  (yanked)" }
    )
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let ctx = Ctx {
        json: cli.json,
        quiet: cli.quiet,
    };
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "agentpkg",
                &mut std::io::stdout(),
            );
        }
        Command::Login {
            username,
            password_stdin,
        } => {
            let client = client(&cli)?;
            let (token, who) = match &cli.token {
                Some(token) => (token.clone(), None),
                None => {
                    let username = match username {
                        Some(u) => u.clone(),
                        None => {
                            eprint!("Username: ");
                            let mut u = String::new();
                            std::io::stdin().read_line(&mut u)?;
                            u.trim().to_owned()
                        }
                    };
                    let password = read_secret("Password: ", *password_stdin)?;
                    (client.login(&username, &password).await?, Some(username))
                }
            };
            let checked = Client::new(client.base(), Some(token.clone()))?;
            let me = checked.me().await?;
            let path = config::save(&config::Stored {
                server: client.base().to_owned(),
                token,
                username: who.or(Some(me.username.clone())),
            })?;
            ctx.out(
                json!({"server": client.base(), "username": me.username, "role": me.role}),
                || {
                    format!(
                        "Signed in to {} as {} ({}); credential in {}",
                        client.base(),
                        me.username,
                        me.role,
                        path.display()
                    )
                },
            );
        }
        Command::Logout => {
            // A password sign-in's session ends on the server too; an API token stays valid
            // until it is revoked (`tokens revoke`).
            let mut ended = None;
            if let Some(stored) = config::load().filter(|s| !s.token.starts_with("apk_")) {
                let client = Client::new(&stored.server, Some(stored.token))?;
                ended = Some(match client.logout().await {
                    Ok(()) => true,
                    Err(e) => {
                        eprintln!(
                            "agentpkg: the session was not ended on the server ({e}); it works until it expires"
                        );
                        false
                    }
                });
            }
            let removed = config::remove()?;
            ctx.out(json!({"removed": removed, "session_ended": ended}), || {
                match (removed, ended) {
                    (false, _) => "Not signed in.",
                    (true, Some(true)) => "Signed out; the session is ended on the server.",
                    (true, _) => "Signed out on this machine.",
                }
                .to_owned()
            });
        }
        Command::Whoami => {
            let client = client(&cli)?;
            let me = client.me().await?;
            ctx.out(
                json!({"server": client.base(), "username": me.username, "role": me.role, "token": me.token}),
                || match &me.token {
                    Some(t) => format!("{} ({}) with the token {t:?} at {}", me.username, me.role, client.base()),
                    None => format!("{} ({}) at {}", me.username, me.role, client.base()),
                },
            );
        }
        Command::Push {
            file,
            name,
            version,
            platform,
            arch,
            description,
            signature,
            signature_format,
            parallel,
        } => {
            let client = client(&cli)?;
            let signature = match signature {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| Failure(format!("{}: {e}", path.display()), 1))?,
                ),
                None => None,
            };
            let upload = Upload {
                path: file.clone(),
                name: name.clone(),
                version: version.clone(),
                platform: platform.clone(),
                arch: arch.clone(),
                description: description.clone(),
                signature,
                signature_format: signature_format.clone(),
                parallel: *parallel,
            };
            let published = client
                .push(&upload, &config::uploads_dir(), ctx.progress())
                .await?;
            let p = &published.package;
            ctx.out(
                json!({"package": p, "via": published.via, "resumed_at": published.resumed_at}),
                || {
                    let resumed = if published.resumed_at > 0 {
                        format!(" (resumed at byte {})", published.resumed_at)
                    } else {
                        String::new()
                    };
                    format!(
                        "Published {} (id {}, sha256 {}){resumed}",
                        p.coordinates(),
                        p.id,
                        p.checksum
                    )
                },
            );
        }
        Command::Pull {
            name,
            version,
            latest: _,
            platform,
            arch,
            output,
            key,
            fsync,
        } => {
            let client = client(&cli)?;
            let target = match version {
                Some(v) if agentpkg_model::Version::parse(v).is_ok() => Target::Exact {
                    name: name.clone(),
                    version: v.clone(),
                    platform: platform.clone(),
                    arch: arch.clone(),
                },
                requirement => Target::Latest {
                    name: name.clone(),
                    platform: platform.clone(),
                    arch: arch.clone(),
                    requirement: requirement.clone(),
                },
            };
            let package = client.resolve(&target).await?;
            let dest = match output {
                Some(path) => path.clone(),
                // The file's own name, here: never a path the server could choose.
                None => std::path::Path::new(&package.filename)
                    .file_name()
                    .map(PathBuf::from)
                    .ok_or_else(|| {
                        Failure(format!("{:?}: not a file name", package.filename), 1)
                    })?,
            };
            let key = match key {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| Failure(format!("{}: {e}", path.display()), 1))?,
                ),
                None => None,
            };
            let pulled = client
                .pull_package(
                    package,
                    &dest,
                    PullOptions {
                        key: key.as_deref(),
                        fsync: *fsync,
                    },
                    ctx.progress(),
                )
                .await?;
            let p = &pulled.package;
            ctx.out(
                json!({"package": p, "path": pulled.path, "resumed_at": pulled.resumed_at, "restarted": pulled.restarted, "signature_verified": key.is_some()}),
                || {
                    let how = if pulled.restarted {
                        " (the partial file was wrong: fetched again)".to_owned()
                    } else if pulled.resumed_at > 0 {
                        format!(" (resumed at byte {})", pulled.resumed_at)
                    } else {
                        String::new()
                    };
                    let signed = if key.is_some() { " and signature" } else { "" };
                    format!("Fetched {} to {}, sha256{signed} verified{how}", p.coordinates(), pulled.path.display())
                },
            );
        }
        Command::Ls {
            search,
            platform,
            arch,
            all,
            page,
        } => {
            let client = client(&cli)?;
            let (packages, total) = client
                .list(&PackageQuery {
                    q: search.clone(),
                    platform: platform.clone(),
                    arch: arch.clone(),
                    include_inactive: all.then_some(true),
                    page: Some(*page),
                    per_page: Some(100),
                    ..PackageQuery::default()
                })
                .await?;
            ctx.out(json!({"packages": packages, "total": total}), || {
                let mut text: Vec<String> = packages.iter().map(line).collect();
                text.push(format!("{} of {total} packages", packages.len()));
                text.join("\n")
            });
        }
        Command::Info { package: which } => {
            let p = package(&client(&cli)?, which).await?;
            ctx.out(json!(p), || {
                format!(
                    "{}\n  id          {}\n  size        {} bytes\n  sha256      {}\n  file        {}\n  description {}\n  active      {}\n  signature   {}\n  uploaded    {}\n  downloads   {}",
                    p.coordinates(),
                    p.id,
                    p.file_size,
                    p.checksum,
                    p.filename,
                    p.description,
                    p.is_active,
                    p.signature.as_ref().map_or("none".to_owned(), |s| format!("{}{}", s.format, if s.verified { ", verified" } else { "" })),
                    p.created_at,
                    p.download_count
                )
            });
        }
        Command::Versions { name } => {
            let versions = client(&cli)?.versions(name).await?;
            ctx.out(json!(versions), || {
                versions
                    .iter()
                    .map(|v| {
                        let builds: Vec<String> = v
                            .packages
                            .iter()
                            .map(|p| {
                                format!(
                                    "{}/{}{}",
                                    p.platform,
                                    p.arch,
                                    if p.is_active { "" } else { " (yanked)" }
                                )
                            })
                            .collect();
                        format!("{:<20} {}", v.version, builds.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Latest {
            name,
            platform,
            arch,
            version,
        } => {
            let p = client(&cli)?
                .latest(name, platform, arch, version.as_deref())
                .await?;
            ctx.out(json!(p), || line(&p));
        }
        Command::Yank { package: which } | Command::Unyank { package: which } => {
            let client = client(&cli)?;
            let p = package(&client, which).await?;
            let active = matches!(cli.command, Command::Unyank { .. });
            let p = client.set_active(p.id, active).await?;
            ctx.out(json!(p), || {
                format!(
                    "{} {}",
                    if active { "Restored" } else { "Yanked" },
                    p.coordinates()
                )
            });
        }
        Command::Rm { package: which } => {
            let client = client(&cli)?;
            let p = package(&client, which).await?;
            client.delete(p.id).await?;
            ctx.out(json!({"deleted": p}), || {
                format!("Deleted {}", p.coordinates())
            });
        }
        Command::Users(command) => {
            let client = client(&cli)?;
            match command {
                UsersCommand::Ls => {
                    let users = client.users().await?;
                    ctx.out(json!(users), || {
                        users
                            .iter()
                            .map(|u| format!("{:>5}  {:<24} {}", u.id, u.username, u.role))
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                }
                UsersCommand::Create { username, role } => {
                    let password = read_secret("Password for the new user: ", false)?;
                    let user = client
                        .create_user(&NewUser {
                            username: username.clone(),
                            password,
                            role: role.clone(),
                        })
                        .await?;
                    ctx.out(json!(user), || {
                        format!("Created {} ({}), id {}", user.username, user.role, user.id)
                    });
                }
                UsersCommand::Rm { id } => {
                    client.delete_user(*id).await?;
                    ctx.out(json!({"deleted": id}), || format!("Deleted user {id}"));
                }
            }
        }
        Command::Tokens(command) => {
            let client = client(&cli)?;
            match command {
                TokensCommand::Ls => {
                    let tokens = client.tokens().await?;
                    ctx.out(json!(tokens), || {
                        tokens
                            .iter()
                            .map(|t| format!("{:>5}  {:<24} {}", t.id, t.name, t.scope))
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                }
                TokensCommand::Create {
                    name,
                    scope,
                    packages,
                } => {
                    let created = client.create_token(name, scope, packages).await?;
                    ctx.out(json!(created), || {
                        format!(
                            "Created token {} ({}), id {}. Its secret, shown once:\n{}",
                            created.token.name,
                            created.token.scope,
                            created.token.id,
                            created.secret
                        )
                    });
                }
                TokensCommand::Revoke { id } => {
                    client.revoke_token(*id).await?;
                    ctx.out(json!({"revoked": id}), || format!("Revoked token {id}"));
                }
            }
        }
    }
    Ok(())
}
