//! Undo is structural: an object written for an upload is deleted unless the upload is
//! committed, whatever path the code takes out.

use agentpkg_model::ObjectKey;
use agentpkg_storage::DynObjectStore;

/// Deletes the object when dropped, unless [`ObjectGuard::disarm`] was called. Error paths
/// call [`ObjectGuard::discard`] to delete and wait; `Drop` covers the paths nobody
/// wrote (a cancelled future, a panic).
pub(crate) struct ObjectGuard {
    storage: DynObjectStore,
    key: Option<ObjectKey>,
}

impl ObjectGuard {
    pub(crate) fn new(storage: DynObjectStore, key: ObjectKey) -> Self {
        Self {
            storage,
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

    /// Deletes the object now. A failure is logged with the key, for an operator or the
    /// reconciler to remove it: it is never silently dropped.
    pub(crate) async fn discard(mut self) {
        if let Some(key) = self.key.take() {
            delete_logged(&self.storage, &key).await;
        }
    }
}

pub(crate) async fn delete_logged(storage: &DynObjectStore, key: &ObjectKey) {
    match storage.delete(key).await {
        Ok(()) => tracing::debug!(object_key = %key, "rolled back stored object"),
        Err(e) => tracing::error!(
            object_key = %key,
            error = %e,
            "rollback could not delete the stored object; it is orphaned until removed"
        ),
    }
}

impl Drop for ObjectGuard {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let storage = self.storage.clone();
                handle.spawn(async move { delete_logged(&storage, &key).await });
            }
            Err(_) => tracing::error!(
                object_key = %key,
                "no runtime to roll back the stored object; it is orphaned until removed"
            ),
        }
    }
}
