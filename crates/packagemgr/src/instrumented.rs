//! Timing of every call into the object store and the metadata store, by operation and
//! outcome, in [`crate::ManagerMetrics`].
//!
//! Each backend times its own calls and reports them to the [`CallObserver`] it was given
//! (`DieselStore::observed_by`, `S3Store::observed_by`, `FsStore::observed_by`): a
//! forwarding decorator would need a method for every operation, and would silently skip a
//! backend's own version of any method added later with a default.

use std::time::Duration;

use agentpkg_model::CallObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OperationLabels {
    operation: &'static str,
    /// `ok` or `error`.
    outcome: &'static str,
}

pub(crate) type Latencies = Family<OperationLabels, Histogram, fn() -> Histogram>;

pub(crate) fn latencies() -> Latencies {
    // 0.1 ms to ~30 s.
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 19)))
}

fn record(latencies: &Latencies, operation: &'static str, ok: bool, elapsed: Duration) {
    latencies
        .get_or_create(&OperationLabels {
            operation,
            outcome: if ok { "ok" } else { "error" },
        })
        .observe(elapsed.as_secs_f64());
}

/// Records the calls a backend times itself into one histogram family.
pub(crate) struct Observed(pub(crate) Latencies);

impl CallObserver for Observed {
    fn observe(&self, operation: &'static str, ok: bool, elapsed: Duration) {
        record(&self.0, operation, ok, elapsed);
    }
}
