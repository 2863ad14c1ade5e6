//! `agentpkg push FILE`: publish a file, resumably, over one or several connections.

use std::path::PathBuf;

use agentpkg_client::Upload;
use agentpkg_model::{Arch, Platform, SignatureFormat};
use serde_json::json;

use super::Ctx;
use crate::args::one_of;
use crate::config;
use crate::exit::Failure;

#[derive(clap::Args)]
pub struct Args {
    file: PathBuf,
    #[arg(long)]
    name: String,
    #[arg(long)]
    version: String,
    #[arg(long, value_parser = one_of::<Platform>())]
    platform: Platform,
    #[arg(long, value_parser = one_of::<Arch>())]
    arch: Arch,
    #[arg(long)]
    description: Option<String>,
    /// A detached signature of the file.
    #[arg(long)]
    signature: Option<PathBuf>,
    /// The signature's format: openpgp (default), sigstore-bundle (a `.sigstore.json`,
    /// verified by the registry like OpenPGP), minisign or cosign (kept unverified).
    #[arg(long, requires = "signature", value_parser = one_of::<SignatureFormat>())]
    signature_format: Option<SignatureFormat>,
    /// Send a large file over this many connections at once (resumable parts joined by
    /// the server).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    parallel: u64,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let client = ctx.client()?;
    let signature = match &args.signature {
        Some(path) => Some(std::fs::read(path).map_err(|e| Failure::file(path, e))?),
        None => None,
    };
    let upload = Upload {
        path: args.file,
        name: args.name,
        version: args.version,
        platform: args.platform,
        arch: args.arch,
        description: args.description,
        signature,
        signature_format: args.signature_format,
        parallel: args.parallel,
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
    Ok(())
}
