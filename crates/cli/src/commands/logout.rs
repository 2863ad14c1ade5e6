//! `agentpkg logout`: forget the stored credential, and end its session on the server.

use agentpkg_client::Client;
use serde_json::json;

use super::Ctx;
use crate::config;
use crate::exit::Failure;

pub async fn run(ctx: &Ctx) -> Result<(), Failure> {
    // A password sign-in's session ends on the server too; an API token stays valid until
    // it is revoked (`tokens revoke`).
    let mut ended = None;
    if let Some(stored) = config::load().filter(|s| !s.token.starts_with("apk_")) {
        let client = Client::new(&stored.server, Some(stored.token))?;
        ended = Some(match client.logout().await {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "agentpkg: the session was not ended on the server ({e}); it works until it expires"
                );
                false
            }
        });
    }
    let removed = config::remove()?;
    ctx.out(json!({"removed": removed, "session_ended": ended}), || {
        match (removed, ended) {
            (false, _) => "Not signed in.",
            (true, Some(true)) => "Signed out; the session is ended on the server.",
            (true, _) => "Signed out on this machine.",
        }
        .to_owned()
    });
    Ok(())
}
