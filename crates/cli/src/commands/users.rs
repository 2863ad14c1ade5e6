//! `agentpkg users …`: list, create and delete users (admin).

use agentpkg_client::NewUser;
use agentpkg_model::Role;
use clap::Subcommand;
use serde_json::json;

use super::{Ctx, read_secret};
use crate::args::one_of;
use crate::exit::Failure;

#[derive(Subcommand)]
pub enum Command {
    /// List the users: id, name and role.
    Ls,
    /// Create a user; the password is read from standard input.
    Create {
        username: String,
        #[arg(long, default_value = "viewer", value_parser = one_of::<Role>())]
        role: Role,
    },
    /// Delete a user (by the id `users ls` shows); not yourself.
    Rm { id: i64 },
}

pub async fn run(ctx: &Ctx, command: Command) -> Result<(), Failure> {
    let client = ctx.client()?;
    match command {
        Command::Ls => {
            let users = client.users().await?;
            ctx.out(json!(users), || {
                users
                    .iter()
                    .map(|u| format!("{:>5}  {:<24} {}", u.id, u.username, u.role))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Create { username, role } => {
            let password = read_secret("Password for the new user: ", false)?;
            let user = client
                .create_user(&NewUser {
                    username,
                    password,
                    role,
                })
                .await?;
            ctx.out(json!(user), || {
                format!("Created {} ({}), id {}", user.username, user.role, user.id)
            });
        }
        Command::Rm { id } => {
            client.delete_user(id).await?;
            ctx.out(json!({"deleted": id}), || format!("Deleted user {id}"));
        }
    }
    Ok(())
}
