//! `agentpkg-server`: the agent package registry.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use agentpkg_model::{Password, Role, Username};
use agentpkg_server::settings::LogFormat;
use agentpkg_server::{Application, Settings, migrate_only, reconcile_once};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(version, about = "agentpkg: a registry for OpAMP agent packages")]
struct Cli {
    /// TOML configuration file (default: ./agentpkg.toml when it exists).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate {
        /// Revert every migration instead (drops all data).
        #[arg(long)]
        revert_all: bool,
    },
    /// Reconcile storage with the database once: delete orphaned objects older than the
    /// grace period, report packages whose object is missing. Prints a JSON report.
    Gc {
        /// Report only; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Seconds an unreferenced object without an in-flight marker must be old to count
        /// as orphaned (default: gc.grace_secs).
        #[arg(long)]
        grace_secs: Option<u64>,
        /// Seconds an upload's in-flight marker must be untouched for its upload to count
        /// as abandoned (default: gc.stale_upload_secs). Lower it only when no server can
        /// be uploading, e.g. all are stopped.
        #[arg(long)]
        stale_upload_secs: Option<u64>,
    },
    /// Mirror the configured upstream releases (`[[mirror.sources]]`): download what is
    /// new, verify it against the release's checksums and Sigstore bundles, publish only
    /// then. Prints a JSON report. Skips the run when another replica holds the mirror's
    /// lease.
    Mirror {
        /// One run, then exit; without it, one run every `mirror.interval_secs` until
        /// stopped (the server itself also runs it so).
        #[arg(long)]
        once: bool,
    },
    /// Apply the configured retention policies (`[[retention.policies]]`) once. Prints a
    /// JSON report: every package deleted (or, with --dry-run, that would be) and the
    /// bytes freed.
    Retention {
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create a user. The password is read from standard input with --password-stdin,
    /// or generated and printed once.
    CreateUser {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create an API token for a user (bootstrap: a pipeline's first token). The secret is
    /// printed once on standard output.
    CreateToken {
        /// The user the token acts for.
        user: String,
        /// `read`, `publish` or `admin`, at most the user's role.
        #[arg(long)]
        scope: String,
        /// Name patterns the token is limited to, comma-separated (`otelcol*,opamp-*`).
        #[arg(long, value_delimiter = ',')]
        packages: Vec<String>,
        /// What the token is for.
        #[arg(long, default_value = "bootstrap")]
        name: String,
        /// Days until the token expires; without it, never.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
}

/// Large allocations (an 8 MiB multipart part, a 19 MiB Argon2 area) are mapped and
/// unmapped, never kept on the heap: glibc otherwise raises its mmap threshold after the
/// first large block is freed, and from then on keeps every such buffer resident (peak
/// 74–85 MiB instead of ~50 MiB; see docs/performance.md). The same as
/// `MALLOC_MMAP_THRESHOLD_=1048576`, which, when set, wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    // SAFETY: mallopt only changes glibc's allocation policy; it is called first thing in
    // main, before any other thread exists, with a documented parameter and value.
    let applied = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    debug_assert_eq!(applied, 1, "mallopt(M_MMAP_THRESHOLD) refused");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("agentpkg-server: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&settings);
    for (name, hint) in agentpkg_server::settings::misspelt_variables(std::env::vars_os()) {
        tracing::warn!("{name} is not read: {hint}");
    }
    let result =
        actix_web::rt::System::new().block_on(run(cli.command.unwrap_or(Command::Serve), settings));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("agentpkg-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await?
        }
        Command::Migrate { revert_all } => {
            let n = migrate_only(&settings, revert_all).await?;
            let verb = if revert_all { "reverted" } else { "applied" };
            tracing::info!("{n} migration(s) {verb}");
        }
        Command::Gc {
            dry_run,
            grace_secs,
            stale_upload_secs,
        } => {
            let secs = std::time::Duration::from_secs;
            let options = agentpkg_packagemgr::ReconcileOptions {
                grace: secs(grace_secs.unwrap_or(settings.gc.grace_secs)),
                stale_uploads: secs(stale_upload_secs.unwrap_or(settings.gc.stale_upload_secs)),
                dry_run,
                now: std::time::SystemTime::now(),
            };
            let report = reconcile_once(&settings, options).await?;
            #[allow(clippy::print_stdout)]
            {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            if !report.missing_objects.is_empty() {
                return Err(format!(
                    "{} object(s) referenced by packages are missing from storage",
                    report.missing_objects.len()
                )
                .into());
            }
        }
        Command::Mirror { once } => loop {
            let report = agentpkg_server::mirror_once(&settings).await?;
            // The report is the command's output, for the operator or a script.
            #[allow(clippy::print_stdout)]
            {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            if once || settings.mirror.interval_secs == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(
                settings.mirror.interval_secs,
            ))
            .await;
        },
        Command::Retention { dry_run } => {
            let report = agentpkg_server::retention_once(&settings, dry_run).await?;
            let deletions: Vec<serde_json::Value> = report
                .deletions
                .iter()
                .map(|d| {
                    let p = &d.package;
                    serde_json::json!({
                        "id": p.id,
                        "name": p.name.as_str(),
                        "version": p.version.to_string(),
                        "platform": p.platform,
                        "arch": p.arch,
                        "file_size": p.file_size,
                        "is_active": p.is_active,
                        "policy": d.policy,
                        "reason": d.reason,
                    })
                })
                .collect();
            let skipped: Vec<serde_json::Value> = report
                .skipped
                .iter()
                .map(|(id, reason)| serde_json::json!({ "id": id, "reason": reason }))
                .collect();
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "dry_run": report.dry_run,
                        "deletions": deletions,
                        "bytes_referenced": report.bytes_referenced,
                        "bytes_freed": report.bytes_freed,
                        "skipped": skipped,
                    }))?
                );
            }
        }
        Command::CreateToken {
            user,
            scope,
            packages,
            name,
            expires_in_days,
        } => {
            let packages = if packages.is_empty() {
                agentpkg_model::NameScope::All
            } else {
                agentpkg_model::NameScope::matching(&packages)?
            };
            let request = agentpkg_packagemgr::TokenRequest {
                name,
                scope: scope.parse()?,
                packages,
                expires_at: expires_in_days
                    .map(|d| chrono::Utc::now() + chrono::Duration::days(i64::from(d))),
            };
            let (token, secret) = agentpkg_server::create_token(&settings, &user, request).await?;
            #[allow(clippy::print_stdout)]
            {
                println!("{}", secrecy::ExposeSecret::expose_secret(&secret));
            }
            tracing::info!(token_id = token.id, user = %user, scope = %token.scope, "API token created");
        }
        Command::CreateUser {
            name,
            role,
            password_stdin,
        } => {
            let username = Username::parse(&name)?;
            let role: Role = role.parse()?;
            let (password, generated) = if password_stdin {
                let mut input = String::new();
                std::io::stdin().read_to_string(&mut input)?;
                (
                    Password::parse(input.trim_end_matches(['\r', '\n']))?,
                    false,
                )
            } else {
                (agentpkg_packagemgr::generate_password()?, true)
            };
            let accounts = agentpkg_server::accounts(&settings).await?;
            let user = accounts.create_user(&username, &password, role).await?;
            #[allow(clippy::print_stdout)]
            if generated {
                println!(
                    "created {} ({}) with password: {}",
                    user.username,
                    user.role,
                    password.expose()
                );
            } else {
                println!("created {} ({})", user.username, user.role);
            }
        }
    }
    Ok(())
}

fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Logs go to stderr, so that a command's output on stdout (gc's report) stays clean.
        .with_writer(std::io::stderr)
        // NOTE: when stderr is gone (a closed pipe), dropping log lines is right; the
        // default reports the failure with eprintln!, which panics and kills the server.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
