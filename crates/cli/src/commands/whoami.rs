//! `agentpkg whoami`: who the credential is, on which registry.

use serde_json::json;

use super::Ctx;
use crate::exit::Failure;

pub async fn run(ctx: &Ctx) -> Result<(), Failure> {
    let client = ctx.client()?;
    let me = client.me().await?;
    ctx.out(
        json!({"server": client.base(), "username": me.username, "role": me.role, "token": me.token}),
        || match &me.token {
            Some(t) => format!(
                "{} ({}) with the token {t:?} at {}",
                me.username,
                me.role,
                client.base()
            ),
            None => format!("{} ({}) at {}", me.username, me.role, client.base()),
        },
    );
    Ok(())
}
