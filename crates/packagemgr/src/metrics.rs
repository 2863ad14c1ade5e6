//! What the package manager counts, for an embedding service to export. Counters are
//! cheap shared handles; register them in a `prometheus_client` registry with
//! [`ManagerMetrics::register`].

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Default)]
pub struct ManagerMetrics {
    /// Stored objects deleted again because their upload failed.
    pub rollback_cleanups: Counter,
    /// Such deletions that failed (the object is orphaned until reconciliation).
    pub rollback_cleanup_failures: Counter,
    /// Orphaned objects removed by reconciliation.
    pub orphans_removed: Counter,
}

impl ManagerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "agentpkg_rollback_cleanups",
            "Stored objects deleted because their upload failed",
            self.rollback_cleanups.clone(),
        );
        registry.register(
            "agentpkg_rollback_cleanup_failures",
            "Rollback deletions that failed, leaving an orphan for reconciliation",
            self.rollback_cleanup_failures.clone(),
        );
        registry.register(
            "agentpkg_orphans_removed",
            "Orphaned objects removed by reconciliation",
            self.orphans_removed.clone(),
        );
    }
}
