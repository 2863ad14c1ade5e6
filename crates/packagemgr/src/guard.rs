//! Undo is structural: an object written for an upload is deleted unless the upload is
//! committed, whatever path the code takes out.

use agentpkg_model::ObjectKey;
use agentpkg_storage::DynObjectStore;

use crate::ManagerMetrics;

/// Deletes the object when dropped, unless [`ObjectGuard::disarm`] was called. Error paths
/// call [`ObjectGuard::discard`] to delete and wait; `Drop` covers the paths nobody
/// wrote (a cancelled future, a panic).
pub(crate) struct ObjectGuard {
    storage: DynObjectStore,
    metrics: ManagerMetrics,
    key: Option<ObjectKey>,
}

impl ObjectGuard {
    pub(crate) fn new(storage: DynObjectStore, metrics: ManagerMetrics, key: ObjectKey) -> Self {
        Self {
            storage,
            metrics,
            key: Some(key),
        }
    }

    pub(crate) fn key(&self) -> &ObjectKey {
        self.key
            .as_ref()
            .expect("guard holds its key until consumed")
    }

    /// The object now belongs to a committed row.
    pub(crate) fn disarm(mut self) -> ObjectKey {
        self.key.take().expect("guard holds its key until consumed")
    }

    /// Deletes a spare copy: the bytes are already stored under another key. Not a
    /// rollback, so not counted as one; a failure is still logged with the key.
    pub(crate) async fn delete_spare_copy(mut self) {
        if let Some(key) = self.key.take() {
            delete_logged(&self.storage, &key).await;
        }
    }

    /// Deletes the object now. A failure is logged with the key, for an operator or the
    /// reconciler to remove it: it is never silently dropped.
    pub(crate) async fn discard(mut self) {
        if let Some(key) = self.key.take() {
            rollback(&self.storage, &self.metrics, &key).await;
        }
    }
}

/// Deletes the object of a failed upload, counting the outcome.
async fn rollback(storage: &DynObjectStore, metrics: &ManagerMetrics, key: &ObjectKey) {
    if delete_logged(storage, key).await {
        metrics.rollback_cleanups.inc();
    } else {
        metrics.rollback_cleanup_failures.inc();
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
        let Some(key) = self.key.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let storage = self.storage.clone();
                let metrics = self.metrics.clone();
                handle.spawn(async move { rollback(&storage, &metrics, &key).await });
            }
            Err(_) => tracing::error!(
                object_key = %key,
                "no runtime to roll back the stored object; it is orphaned until removed"
            ),
        }
    }
}
