//! `agentpkg latest NAME`: the newest active build for a platform.

use agentpkg_model::{Arch, Platform};
use serde_json::json;

use super::{Ctx, line};
use crate::args::one_of;
use crate::exit::Failure;

#[derive(clap::Args)]
pub struct Args {
    name: String,
    #[arg(long, value_parser = one_of::<Platform>())]
    platform: Platform,
    #[arg(long, value_parser = one_of::<Arch>())]
    arch: Arch,
    /// Within a SemVer requirement.
    #[arg(long)]
    version: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let p = ctx
        .client()?
        .latest(
            &args.name,
            args.platform,
            args.arch,
            args.version.as_deref(),
        )
        .await?;
    ctx.out(json!(p), || line(&p));
    Ok(())
}
