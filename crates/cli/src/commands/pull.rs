//! `agentpkg pull NAME`: fetch a package, resuming a partial file and checking its SHA-256
//! (and signature) before it takes its name.

use std::path::{Path, PathBuf};

use agentpkg_client::{PullOptions, Target};
use agentpkg_model::{Arch, Platform, Version};
use serde_json::json;

use super::Ctx;
use crate::args::one_of;
use crate::exit::{Exit, Failure};

#[derive(clap::Args)]
pub struct Args {
    name: String,
    /// An exact version, or a SemVer requirement (`^1.4`) for the newest matching.
    #[arg(long, conflicts_with = "latest")]
    version: Option<String>,
    /// The newest active version (the default).
    #[arg(long)]
    latest: bool,
    #[arg(long, value_parser = one_of::<Platform>())]
    platform: Platform,
    #[arg(long, value_parser = one_of::<Arch>())]
    arch: Arch,
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
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let client = ctx.client()?;
    let target = match args.version {
        Some(v) if Version::parse(&v).is_ok() => Target::Exact {
            name: args.name,
            version: v,
            platform: args.platform,
            arch: args.arch,
        },
        requirement => Target::Latest {
            name: args.name,
            platform: args.platform,
            arch: args.arch,
            requirement,
        },
    };
    let package = client.resolve(&target).await?;
    let dest = match args.output {
        Some(path) => path,
        // The file's own name, here: never a path the server could choose.
        None => Path::new(&package.filename)
            .file_name()
            .map(PathBuf::from)
            .ok_or_else(|| {
                Failure::new(
                    Exit::Error,
                    format!(
                        "{:?}: not a file name; choose one with --output",
                        package.filename
                    ),
                )
            })?,
    };
    let key = match &args.key {
        Some(path) => Some(std::fs::read(path).map_err(|e| Failure::file(path, e))?),
        None => None,
    };
    let pulled = client
        .pull_package(
            package,
            &dest,
            PullOptions {
                key: key.as_deref(),
                fsync: args.fsync,
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
            format!(
                "Fetched {} to {}, sha256{signed} verified{how}",
                p.coordinates(),
                pulled.path.display()
            )
        },
    );
    Ok(())
}
