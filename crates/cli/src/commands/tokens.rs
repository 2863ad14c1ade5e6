//! `agentpkg tokens …`: your API tokens (list, create, revoke).

use agentpkg_model::TokenScope;
use clap::Subcommand;
use serde_json::json;

use super::Ctx;
use crate::args::one_of;
use crate::exit::Failure;

#[derive(Subcommand)]
pub enum Command {
    /// List your API tokens: id, name, scope and name limits (never the secret).
    Ls,
    /// Create a token; its secret is printed once.
    Create {
        name: String,
        #[arg(long, default_value = "read", value_parser = one_of::<TokenScope>())]
        scope: TokenScope,
        /// Limit it to these name patterns (`opamp-*`).
        #[arg(long = "package")]
        packages: Vec<String>,
    },
    /// Revoke a token (by the id `tokens ls` shows): it stops working on every server.
    Revoke { id: i64 },
}

pub async fn run(ctx: &Ctx, command: Command) -> Result<(), Failure> {
    let client = ctx.client()?;
    match command {
        Command::Ls => {
            let tokens = client.tokens().await?;
            ctx.out(json!(tokens), || {
                tokens
                    .iter()
                    .map(|t| {
                        let limits = t
                            .packages
                            .as_ref()
                            .map_or("every name".to_owned(), |p| p.join(", "));
                        format!("{:>5}  {:<24} {:<8} {limits}", t.id, t.name, t.scope)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Create {
            name,
            scope,
            packages,
        } => {
            let created = client.create_token(&name, scope, &packages).await?;
            ctx.out(json!(created), || {
                format!(
                    "Created token {} ({}), id {}. Its secret, shown once:\n{}",
                    created.token.name, created.token.scope, created.token.id, created.secret
                )
            });
        }
        Command::Revoke { id } => {
            client.revoke_token(id).await?;
            ctx.out(json!({"revoked": id}), || format!("Revoked token {id}"));
        }
    }
    Ok(())
}
