//! Readiness: whether the database and object storage answer, checked at most once a
//! second however many probes ask.

use std::time::{Duration, Instant};

use agentpkg_storage::StorageError;
use agentpkg_store::StoreError;

use crate::{Error, PackageManager};

/// How long a readiness answer is reused: probes, and floods of them, cost at most one
/// database ping and one storage check per interval.
const READINESS_TTL: Duration = Duration::from_secs(1);

/// The outcome of a readiness check, kept to answer the next ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready,
    DatabaseDown(String),
    StorageDown(String),
}

impl Readiness {
    fn to_result(&self) -> Result<(), Error> {
        match self {
            Self::Ready => Ok(()),
            Self::DatabaseDown(why) => Err(Error::DatabaseUnavailable(StoreError::Unavailable(
                why.clone(),
            ))),
            Self::StorageDown(why) => Err(Error::StorageUnavailable(StorageError::Unavailable(
                why.clone(),
            ))),
        }
    }
}

impl PackageManager {
    /// Whether the database and the object store both answer, as checked at most
    /// [`READINESS_TTL`] ago: concurrent callers share one check. A change of state is
    /// logged once, not once per caller.
    pub async fn ready(&self) -> Result<(), Error> {
        let mut last = self.readiness.lock().await;
        if let Some((at, readiness)) = last.as_ref()
            && at.elapsed() < READINESS_TTL
        {
            return readiness.to_result();
        }
        // Any failure here means "not ready", whatever its kind: a missing bucket is an
        // unavailable store, not a missing package.
        let now = match self.store.ping().await {
            Err(e) => Readiness::DatabaseDown(e.to_string()),
            Ok(()) => match self.storage.check().await {
                Err(e) => Readiness::StorageDown(e.to_string()),
                Ok(()) => Readiness::Ready,
            },
        };
        let before = last.as_ref().map(|(_, r)| r);
        if before != Some(&now) {
            match &now {
                Readiness::Ready => tracing::info!("ready: the database and object storage answer"),
                Readiness::DatabaseDown(why) => {
                    tracing::warn!(error = %why, "not ready: the database does not answer")
                }
                Readiness::StorageDown(why) => {
                    tracing::warn!(error = %why, "not ready: object storage does not answer")
                }
            }
        }
        let result = now.to_result();
        *last = Some((Instant::now(), now));
        result
    }
}
