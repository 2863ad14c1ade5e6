//! The gate: the one place where "may this caller do this, to this package or
//! resource?" is decided, and where the answer is recorded.
//!
//! [`PackageManager::gate`] (`packages.rs`) and [`Accounts::gate`] (`accounts.rs`) give
//! the operations of one caller. Every read checks the caller's name scope (a name out of
//! reach is "not found", so a limited token learns nothing of the others); every change
//! checks the caller's role, name scope and ownership, and records its audit event —
//! done, or refused with the reason. The REST API, the web interface and an embedding
//! service all act through here; the API's handlers never decide or record on their own
//! (a test of the API crate keeps it so).

mod accounts;
mod packages;

pub use accounts::AccountGate;
pub use packages::{OwnerRef, PackageGate};

use agentpkg_model::{Actor, AuditAction, Entity, NewAuditEvent, Package, PackageName, Role};

use crate::{AuditLog, Caller, Error};

impl Caller {
    /// Fails with [`Error::Forbidden`] unless the caller holds `role`.
    pub fn require(&self, role: Role) -> Result<(), Error> {
        let c = &self.credential;
        if c.role.includes(role) {
            return Ok(());
        }
        Err(Error::Forbidden(format!(
            "this needs the {role} role; {} has {}",
            c.token.as_ref().map_or_else(
                || c.username.clone(),
                |(_, name)| format!("the token {name:?}")
            ),
            c.role
        )))
    }

    /// A package the credential may not touch is "not found" to it.
    pub fn reads(&self, name: &PackageName) -> Result<(), Error> {
        if self.credential.names.allows(name) {
            Ok(())
        } else {
            Err(Error::NotFound(Entity::Package))
        }
    }

    /// The caller as an actor on packages: ownership and name scope.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.credential.user_id,
            admin: self.credential.role == Role::Admin,
            names: self.credential.names.clone(),
        }
    }

    /// Whether the caller holds `role` and reaches `name`: what a page shows a button
    /// for. The operation behind the button still decides (ownership too).
    pub fn permits(&self, role: Role, name: &PackageName) -> bool {
        self.credential.role.includes(role) && self.credential.names.allows(name)
    }

    /// An audit event of `action` on `package`: its coordinates, and its bytes' checksum
    /// when they came or went.
    pub fn package_event(&self, action: AuditAction, package: &Package) -> NewAuditEvent {
        let mut event = self.event(action);
        event.package = Some(package.name.to_string());
        event.package_id = Some(package.id);
        event.detail = format!("{} {}/{}", package.version, package.platform, package.arch);
        if matches!(action, AuditAction::Publish | AuditAction::Delete) {
            event
                .detail
                .push_str(&format!(" sha256:{}", package.checksum));
        }
        event
    }
}

/// Records `event` as done when `result` is, as refused when the gate said no
/// ([`Error::Forbidden`]); other failures change nothing and are not recorded.
pub(super) async fn settle<T>(
    audit: Option<&AuditLog>,
    result: Result<T, Error>,
    done: impl FnOnce(&T) -> NewAuditEvent,
    attempted: impl FnOnce() -> NewAuditEvent,
) -> Result<T, Error> {
    if let Some(audit) = audit {
        match &result {
            Ok(value) => audit.record(done(value)).await,
            Err(Error::Forbidden(reason)) => audit.record(attempted().refused(reason)).await,
            Err(_) => {}
        }
    }
    result
}
