//! Undo is structural: an object written for an upload is deleted unless the upload is
//! committed, whatever path the code takes out. And while it is being written, a marker in
//! the database tells reconciliation that it is in flight, touched at intervals for as long
//! as the upload works (see `docs/architecture.md`, "Uploads in flight").

use std::time::Duration;

use agentpkg_model::ObjectKey;
use agentpkg_storage::DynObjectStore;
use agentpkg_store::DynPackageStore;
use tokio::task::JoinHandle;

use crate::ManagerMetrics;

/// Touches an upload's marker every `every` until stopped (or dropped).
pub(crate) struct Keepalive(Option<JoinHandle<()>>);

impl Keepalive {
    pub(crate) fn start(store: DynPackageStore, key: ObjectKey, every: Duration) -> Self {
        let every = every.max(Duration::from_millis(100));
        Self(Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(e) = store.touch_upload(&key).await {
                    tracing::warn!(object_key = %key, error = %e, "could not touch the upload's in-flight marker");
                }
            }
        })))
    }

    fn stop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl Drop for Keepalive {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Deletes the object when dropped, unless [`ObjectGuard::disarm`] was called. Error paths
/// call [`ObjectGuard::discard`] to delete and wait; `Drop` covers the paths nobody
/// wrote (a cancelled future, a panic).
pub(crate) struct ObjectGuard {
    storage: DynObjectStore,
    store: DynPackageStore,
    metrics: ManagerMetrics,
    key: Option<ObjectKey>,
    keepalive: Keepalive,
}

impl ObjectGuard {
    pub(crate) fn new(
        storage: DynObjectStore,
        store: DynPackageStore,
        metrics: ManagerMetrics,
        key: ObjectKey,
        keepalive: Keepalive,
    ) -> Self {
        Self {
            storage,
            store,
            metrics,
            key: Some(key),
            keepalive,
        }
    }

    pub(crate) fn key(&self) -> &ObjectKey {
        self.key
            .as_ref()
            .expect("guard holds its key until consumed")
    }

    /// The object now belongs to a committed row (whose transaction removed the marker).
    pub(crate) fn disarm(mut self) -> ObjectKey {
        self.keepalive.stop();
        self.key.take().expect("guard holds its key until consumed")
    }

    /// Deletes a spare copy: the bytes are already stored under another key. Not a
    /// rollback, so not counted as one; a failure is still logged with the key.
    pub(crate) async fn delete_spare_copy(mut self) {
        self.keepalive.stop();
        if let Some(key) = self.key.take() {
            delete_logged(&self.storage, &key).await;
        }
    }

    /// Leaves the object and its marker to reconciliation: whether its row committed is
    /// unknown (the connection was lost during the commit, and the database cannot be
    /// asked). Once the marker is stale, reconciliation keeps the object if a row names it
    /// and deletes it otherwise.
    pub(crate) fn abandon(mut self) {
        self.keepalive.stop();
        if let Some(key) = self.key.take() {
            tracing::warn!(object_key = %key, "upload left to reconciliation: whether its row committed is unknown");
        }
    }

    /// Deletes the object now, then its marker. A failure is logged with the key, for an
    /// operator or the reconciler to remove it: it is never silently dropped.
    pub(crate) async fn discard(mut self) {
        self.keepalive.stop();
        if let Some(key) = self.key.take() {
            rollback(&self.storage, &self.store, &self.metrics, &key).await;
        }
    }
}

/// Deletes the object of a failed upload, counting the outcome, then its marker.
async fn rollback(
    storage: &DynObjectStore,
    store: &DynPackageStore,
    metrics: &ManagerMetrics,
    key: &ObjectKey,
) {
    if delete_logged(storage, key).await {
        metrics.rollback_cleanups.inc();
    } else {
        metrics.rollback_cleanup_failures.inc();
    }
    // Without the marker an object left behind is an ordinary orphan, removed after the
    // grace period; a marker left behind goes stale and is cleared by reconciliation.
    if let Err(e) = store.end_upload(key).await {
        tracing::warn!(object_key = %key, error = %e, "could not remove the upload's in-flight marker");
    }
}

/// Deletes an object; a failure is logged with the key. Returns whether it went.
pub(crate) async fn delete_logged(storage: &DynObjectStore, key: &ObjectKey) -> bool {
    match storage.delete(key).await {
        Ok(()) => {
            tracing::debug!(object_key = %key, "deleted stored object");
            true
        }
        Err(e) => {
            tracing::error!(
                object_key = %key,
                error = %e,
                "could not delete the stored object; it is orphaned until reconciliation removes it"
            );
            false
        }
    }
}

impl Drop for ObjectGuard {
    fn drop(&mut self) {
        self.keepalive.stop();
        let Some(key) = self.key.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let storage = self.storage.clone();
                let store = self.store.clone();
                let metrics = self.metrics.clone();
                handle.spawn(async move { rollback(&storage, &store, &metrics, &key).await });
            }
            Err(_) => tracing::error!(
                object_key = %key,
                "no runtime to roll back the stored object; it is orphaned until removed"
            ),
        }
    }
}
