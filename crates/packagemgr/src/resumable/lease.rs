//! A request's hold on a session: renewed while it works, given back when it ends.

use std::time::Duration;

use agentpkg_model::UploadSessionId;
use agentpkg_store::DynUploadSessionStore;

/// Gives a lease back; a failure is logged (the lease then runs out by itself).
pub(super) async fn release_logged(
    store: &DynUploadSessionStore,
    id: &UploadSessionId,
    token: &str,
) {
    if let Err(e) = store.release_session(id, token).await {
        tracing::warn!(upload_session = %id, error = %e, "could not release a session's lease");
    }
}

/// Renews a session's lease while a request works on it.
pub(super) struct LeaseRenewal(tokio::task::JoinHandle<()>);

impl LeaseRenewal {
    pub(super) fn start(
        store: DynUploadSessionStore,
        id: UploadSessionId,
        token: String,
        lease: Duration,
    ) -> Self {
        let every = (lease / 3).max(Duration::from_millis(100));
        Self(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match store.renew_session_lease(&id, &token, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(upload_session = %id, "a session's lease was lost");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(upload_session = %id, error = %e, "could not renew a session's lease")
                    }
                }
            }
        }))
    }
}

impl Drop for LeaseRenewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}
