//! `agentpkg info PACKAGE`: one package, by id or `name/version/platform/arch`.

use serde_json::json;

use super::{Ctx, package};
use crate::exit::Failure;

#[derive(clap::Args)]
pub struct Args {
    package: String,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let p = package(&ctx.client()?, &args.package).await?;
    ctx.out(json!(p), || {
        let signature = p.signature.as_ref().map_or("none".to_owned(), |s| {
            format!(
                "{}{}",
                s.format,
                if s.verified { ", verified" } else { "" }
            )
        });
        format!(
            "{}\n  id          {}\n  size        {} bytes\n  sha256      {}\n  file        {}\n  description {}\n  yanked      {}\n  signature   {}\n  uploaded    {}\n  downloads   {}",
            p.coordinates(),
            p.id,
            p.file_size,
            p.checksum,
            p.filename,
            p.description,
            if p.is_active { "no" } else { "yes" },
            signature,
            p.created_at,
            p.download_count
        )
    });
    Ok(())
}
