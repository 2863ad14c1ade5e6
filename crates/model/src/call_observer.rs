//! How a backend (the metadata store, an object store) reports the duration of its calls,
//! without knowing who counts them: the package manager's metrics implement
//! [`CallObserver`], and the server hands it to each backend it opens.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Told how long each call took, by operation and outcome.
pub trait CallObserver: Send + Sync + 'static {
    fn observe(&self, operation: &'static str, ok: bool, elapsed: Duration);
}

/// Runs `call`, then tells `observer` (when there is one) how long `operation` took and
/// whether it succeeded.
pub async fn observe<T, E>(
    observer: Option<&Arc<dyn CallObserver>>,
    operation: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some(observer) = observer else {
        return call.await;
    };
    let started = Instant::now();
    let result = call.await;
    observer.observe(operation, result.is_ok(), started.elapsed());
    result
}
