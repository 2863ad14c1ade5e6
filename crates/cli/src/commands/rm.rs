//! `agentpkg rm PACKAGE`: delete a build, its bytes and its record (admin).

use serde_json::json;

use super::{Ctx, package};
use crate::exit::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// An id, or name/version/platform/arch.
    package: String,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let client = ctx.client()?;
    let p = package(&client, &args.package).await?;
    client.delete(p.id).await?;
    ctx.out(json!({"deleted": p}), || {
        format!("Deleted {}", p.coordinates())
    });
    Ok(())
}
