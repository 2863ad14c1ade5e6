//! `agentpkg login`: sign in and keep the credential (mode 0600).

use agentpkg_client::Client;
use serde_json::json;

use super::{Ctx, read_secret};
use crate::config;
use crate::exit::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The username (asked when not given).
    #[arg(long, short)]
    username: Option<String>,
    /// Read the password from standard input instead of asking for it.
    #[arg(long)]
    password_stdin: bool,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let client = ctx.client()?;
    let (token, who) = match &ctx.token {
        Some(token) => (token.clone(), None),
        None => {
            let username = match args.username {
                Some(u) => u,
                None => {
                    eprint!("Username: ");
                    let mut u = String::new();
                    std::io::stdin().read_line(&mut u)?;
                    u.trim().to_owned()
                }
            };
            let password = read_secret("Password: ", args.password_stdin)?;
            (client.login(&username, &password).await?, Some(username))
        }
    };
    let checked = Client::new(client.base(), Some(token.clone()))?;
    let me = checked.me().await?;
    let path = config::save(&config::Stored {
        server: client.base().to_owned(),
        token,
        username: who.or(Some(me.username.clone())),
    })?;
    ctx.out(
        json!({"server": client.base(), "username": me.username, "role": me.role}),
        || {
            format!(
                "Signed in to {} as {} ({}); credential in {}",
                client.base(),
                me.username,
                me.role,
                path.display()
            )
        },
    );
    Ok(())
}
