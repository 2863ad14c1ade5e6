//! What the package manager counts and times, for an embedding service to export. Metrics
//! are cheap shared handles; register them in a `prometheus_client` registry with
//! [`ManagerMetrics::register`].

use std::sync::Arc;

use agentpkg_store::{CallObserver, PoolStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::instrumented::{Latencies, Observed, latencies};

/// Labels of `agentpkg_package_reads`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CachedReadLabels {
    pub(crate) read: &'static str,
    /// `hit` or `miss`.
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug)]
pub struct ManagerMetrics {
    /// Stored objects deleted again because their upload failed.
    pub rollback_cleanups: Counter,
    /// Such deletions that failed (the object is orphaned until reconciliation).
    pub rollback_cleanup_failures: Counter,
    /// Orphaned objects removed by reconciliation.
    pub orphans_removed: Counter,
    pub(crate) db_latency: Latencies,
    pub(crate) storage_latency: Latencies,
    /// Package reads for readers, by what was read and whether memory answered.
    pub(crate) cached_reads: Family<CachedReadLabels, Counter>,
    db_pool_connections: Gauge,
    db_pool_idle: Gauge,
    db_pool_max: Gauge,
}

impl Default for ManagerMetrics {
    fn default() -> Self {
        Self {
            rollback_cleanups: Counter::default(),
            rollback_cleanup_failures: Counter::default(),
            orphans_removed: Counter::default(),
            db_latency: latencies(),
            storage_latency: latencies(),
            cached_reads: Family::default(),
            db_pool_connections: Gauge::default(),
            db_pool_idle: Gauge::default(),
            db_pool_max: Gauge::default(),
        }
    }
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
        registry.register(
            "agentpkg_db_operation_duration_seconds",
            "Metadata-store calls by operation and outcome (including the wait for a pooled connection)",
            self.db_latency.clone(),
        );
        registry.register(
            "agentpkg_storage_operation_duration_seconds",
            "Object-store calls by operation and outcome (a put includes streaming its body; a get ends when the stream opens)",
            self.storage_latency.clone(),
        );
        registry.register(
            "agentpkg_package_reads",
            "Package reads for readers with the read cache on, by read (id, coordinates, latest, versions) and outcome (hit: answered from memory; miss: asked of the database)",
            self.cached_reads.clone(),
        );
        registry.register(
            "agentpkg_db_pool_connections",
            "Open database connections, in use or idle",
            self.db_pool_connections.clone(),
        );
        registry.register(
            "agentpkg_db_pool_idle_connections",
            "Open database connections not in use",
            self.db_pool_idle.clone(),
        );
        registry.register(
            "agentpkg_db_pool_max_connections",
            "Most database connections the pool opens",
            self.db_pool_max.clone(),
        );
    }

    /// What the metadata store reports the duration of its calls to
    /// (`DieselStore::observed_by`), so that they show in
    /// `agentpkg_db_operation_duration_seconds`.
    pub fn database_observer(&self) -> Arc<dyn CallObserver> {
        Arc::new(Observed(self.db_latency.clone()))
    }

    /// What an object store reports the duration of its calls to (`S3Store::observed_by`,
    /// `FsStore::observed_by`), so that they show in
    /// `agentpkg_storage_operation_duration_seconds`.
    pub fn storage_observer(&self) -> Arc<dyn CallObserver> {
        Arc::new(Observed(self.storage_latency.clone()))
    }

    /// Records a snapshot of the connection pool (taken just before each scrape).
    pub(crate) fn set_pool(&self, status: PoolStatus) {
        self.db_pool_connections.set(i64::from(status.connections));
        self.db_pool_idle.set(i64::from(status.idle));
        self.db_pool_max.set(i64::from(status.max));
    }
}
