//! `agentpkg ls [SEARCH]`: list packages, a page at a time.

use agentpkg_client::PackageQuery;
use agentpkg_model::{Arch, Platform};
use serde_json::json;

use super::{Ctx, line};
use crate::args::one_of;
use crate::exit::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Only names containing this.
    search: Option<String>,
    #[arg(long, value_parser = one_of::<Platform>())]
    platform: Option<Platform>,
    #[arg(long, value_parser = one_of::<Arch>())]
    arch: Option<Arch>,
    /// Yanked packages too.
    #[arg(long = "include-yanked", visible_alias = "all")]
    include_yanked: bool,
    #[arg(long, default_value_t = 1)]
    page: u32,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let (packages, total) = ctx
        .client()?
        .list(&PackageQuery {
            q: args.search,
            platform: args.platform,
            arch: args.arch,
            include_yanked: args.include_yanked.then_some(true),
            page: Some(args.page),
            per_page: Some(100),
            ..PackageQuery::default()
        })
        .await?;
    ctx.out(json!({"packages": packages, "total": total}), || {
        let mut text: Vec<String> = packages.iter().map(line).collect();
        text.push(format!("{} of {total} packages", packages.len()));
        text.join("\n")
    });
    Ok(())
}
