//! The business logic of agentpkg: streaming uploads with SHA-256, rollback on every
//! failure, versions, downloads, deletion and accounts.
//!
//! This crate has no HTTP dependency: the REST API is one user of it, and any service
//! can embed it with its own [`agentpkg_store::MetadataStore`] and
//! [`agentpkg_storage::ObjectStore`].

mod accounts;
mod body;
mod error;
mod guard;
mod hashing;
mod instrumented;
mod manager;
mod metrics;
mod passwords;
mod reconcile;

pub use accounts::{Accounts, FirstAdmin};
pub use body::{BodyReader, BodySender, body_channel};
pub use error::Error;
pub use manager::{Download, ManagerConfig, PackageManager, StagedUpload, UploadMeta};
pub use metrics::ManagerMetrics;
pub use passwords::HashingLimits;
pub use reconcile::{MissingObject, ReconcileReport};

pub use agentpkg_model as model;
