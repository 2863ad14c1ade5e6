//! What the binary's commands other than `serve` do with the layers, without a running
//! server: `create-user` and `create-token` (the accounts), `gc`, `retention` and
//! `mirror --once`; and the mirror as `serve` wires it.

use agentpkg_packagemgr::Accounts;
use secrecy::SecretString;

use crate::settings::Settings;
use crate::wiring::{BuildError, Wired, connect, manager};

/// The accounts as the server wires them, for the commands that manage users and tokens
/// without a running server (`create-user`, `create-token`).
pub async fn accounts(settings: &Settings) -> Result<Accounts, BuildError> {
    Ok(manager(settings, connect(settings).await?).accounts)
}

/// `agentpkg-server create-token`: a token for `username`, made without signing in.
pub async fn create_token(
    settings: &Settings,
    username: &str,
    request: agentpkg_packagemgr::TokenRequest,
) -> Result<(agentpkg_model::ApiToken, SecretString), BuildError> {
    let accounts = accounts(settings).await?;
    let user = accounts.find_user(username).await?;
    Ok(accounts
        .create_token_for(user.id, user.role, false, request)
        .await?)
}

/// `agentpkg-server gc`: one reconciliation pass. The operator may pass limits below the
/// configured minimums (say, when no server is running, so that nothing can be in flight).
pub async fn reconcile_once(
    settings: &Settings,
    options: agentpkg_packagemgr::ReconcileOptions,
) -> Result<agentpkg_packagemgr::ReconcileReport, BuildError> {
    let packages = manager(settings, connect(settings).await?).packages;
    Ok(packages.reconcile_with(options).await?)
}

/// The mirror of upstream releases over these layers.
pub(crate) fn mirror(
    settings: &Settings,
    wired: &Wired,
) -> Result<agentpkg_mirror::Mirror, BuildError> {
    agentpkg_mirror::Mirror::new(
        &settings.mirror,
        wired.packages.clone(),
        wired.accounts.clone(),
        wired.audit.clone(),
        wired.mirror_store.clone(),
    )
    .map_err(|e| BuildError::Config(e.to_string()))
}

/// `agentpkg-server mirror --once`: one run of the configured sources (when no other
/// replica holds the mirror's lease), as JSON.
pub async fn mirror_once(settings: &Settings) -> Result<agentpkg_mirror::Report, BuildError> {
    let wired = manager(settings, connect(settings).await?);
    mirror(settings, &wired)?
        .run_once()
        .await
        .map_err(|e| BuildError::Config(e.to_string()))
}

/// `agentpkg-server retention`: one run of the configured policies, as JSON.
pub async fn retention_once(
    settings: &Settings,
    dry_run: bool,
) -> Result<agentpkg_stats::RetentionReport, BuildError> {
    settings.check().map_err(BuildError::Config)?;
    let stats = manager(settings, connect(settings).await?).stats;
    let mut by = agentpkg_model::NewAuditEvent::new(agentpkg_model::AuditAction::Delete);
    by.actor = Some("retention (agentpkg-server retention)".to_owned());
    Ok(stats
        .retention
        .run(
            &stats.policies,
            &agentpkg_model::NameScope::All,
            dry_run,
            &by,
        )
        .await?)
}
