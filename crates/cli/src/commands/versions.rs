//! `agentpkg versions NAME`: every version of a name, newest first, with its builds.

use serde_json::json;

use super::Ctx;
use crate::exit::Failure;

#[derive(clap::Args)]
pub struct Args {
    name: String,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let versions = ctx.client()?.versions(&args.name).await?;
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
    Ok(())
}
