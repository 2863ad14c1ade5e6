//! `agentpkg yank PACKAGE` and `agentpkg restore PACKAGE`: hide a build from lists and
//! `latest` (pinned downloads still work), or show it again.

use serde_json::json;

use super::{Ctx, package};
use crate::exit::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// An id, or name/version/platform/arch.
    package: String,
}

pub async fn run(ctx: &Ctx, args: Args, restore: bool) -> Result<(), Failure> {
    let client = ctx.client()?;
    let p = package(&client, &args.package).await?;
    let p = client.set_active(p.id, restore).await?;
    ctx.out(json!(p), || {
        format!(
            "{} {}",
            if restore { "Restored" } else { "Yanked" },
            p.coordinates()
        )
    });
    Ok(())
}
