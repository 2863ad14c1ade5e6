//! The audit log: every change and every refusal that matters, appended to the database and
//! written as one structured log line (target `agentpkg::audit`). Recording never undoes
//! or fails the action it records: that already happened.

use agentpkg_model::{AuditEvent, AuditQuery, NewAuditEvent, Page};
use agentpkg_store::DynAuditStore;

use crate::Error;

#[derive(Clone)]
pub struct AuditLog {
    store: DynAuditStore,
}

impl AuditLog {
    pub fn new(store: DynAuditStore) -> Self {
        Self { store }
    }

    /// Records `event`; a failure to store it is logged at error level with the event.
    pub async fn record(&self, event: NewAuditEvent) {
        Self::logged(&event);
        if let Err(e) = self.store.append_audit(event.clone()).await {
            tracing::error!(error = %e, action = %event.action, "could not record an audit event");
        }
    }

    /// Writes the log line of an event the store already recorded (in its change's
    /// transaction).
    pub(crate) fn logged(event: &NewAuditEvent) {
        tracing::info!(
            target: "agentpkg::audit",
            action = %event.action,
            actor = event.actor.as_deref(),
            token = event.token_name.as_deref(),
            package = event.package.as_deref(),
            package_id = event.package_id,
            subject = event.subject.as_deref(),
            address = event.address.as_deref(),
            request_id = event.request_id.as_deref(),
            detail = %event.detail,
            outcome = event.outcome.as_str(),
            "audit"
        );
    }

    /// Events, newest first.
    pub async fn list(&self, query: &AuditQuery) -> Result<Page<AuditEvent>, Error> {
        Ok(self.store.list_audit(query).await?)
    }

    /// Events, newest first, for `caller`: the audit log is the admins'.
    pub async fn list_for(
        &self,
        query: &AuditQuery,
        caller: &crate::Caller,
    ) -> Result<Page<AuditEvent>, Error> {
        caller.require(agentpkg_model::Role::Admin)?;
        self.list(query).await
    }
}
