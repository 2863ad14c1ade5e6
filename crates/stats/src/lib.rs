//! Download statistics, storage usage and retention policies of agentpkg. No HTTP: the
//! API and the server binary are its users, and a service embedding
//! `agentpkg-packagemgr` can use it the same way.
//!
//! - [`DownloadCounter`] counts downloads in memory and adds them to the database in
//!   batches (the counting definition is [`Answer`]'s);
//! - [`Statistics`] answers the reports (a package's days, the top lists, storage usage)
//!   and keeps the storage gauges;
//! - [`Retention`] applies [`agentpkg_model::RetentionPolicy`]s.

mod counter;
mod reports;
mod retention;

pub use counter::{Answer, CountedBody, DownloadCounter, Flushed, Flusher, SentBytes};
pub use reports::{DailySeries, MAX_REPORT_ROWS, Statistics};
pub use retention::{Retention, RetentionReport};
