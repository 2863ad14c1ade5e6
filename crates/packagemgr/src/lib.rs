//! The business logic of agentpkg: streaming uploads with SHA-256, rollback on every
//! failure, versions, downloads, deletion and accounts.
//!
//! This crate has no HTTP dependency: the REST API is one user of it, and any service
//! can embed it with its own [`agentpkg_store::PackageStore`],
//! [`agentpkg_store::AccountStore`] and [`agentpkg_storage::ObjectStore`]. Its default
//! features bring the real backends (`diesel`: PostgreSQL and SQLite; `s3`); with
//! `default-features = false` it compiles neither (see `examples/embed.rs`).

mod accounts;
mod audit;
mod body;
mod credentials;
mod direct;
mod error;
mod form;
mod gate;
mod guard;
mod hashing;
mod instrumented;
mod manager;
mod metrics;
mod openpgp;
mod ownership;
mod passwords;
mod read_cache;
mod readiness;
mod reconcile;
mod resumable;
mod signing;
mod sigstore;
mod upload;

pub use accounts::{
    Accounts, DEFAULT_FRESHNESS, FirstAdmin, LoginThrottle, SignedIn, generate_password,
};
pub use agentpkg_store::{LoginLimit, Owner, Team};
pub use audit::AuditLog;
pub use body::{BodyReader, BodySender, body_channel};
pub use credentials::{Caller, Credential, Holder, TOKEN_PREFIX, TokenRequest};
pub use direct::{DirectGrant, MAX_DIRECT_BYTES};
pub use error::Error;
pub use form::{FormField, FormUpload};
pub use gate::{AccountGate, OwnerRef, PackageGate};
pub use manager::{Download, ManagerConfig, PackageManager};
pub use metrics::ManagerMetrics;
pub use passwords::HashingLimits;
pub use read_cache::ReadCacheConfig;
pub use reconcile::{MissingObject, ReconcileOptions, ReconcileReport};
pub use resumable::{Append, Appended, NewSession, RequestChecksum, ResumableConfig};
pub use signing::{Keyring, MAX_KEY_BYTES, SigningPolicy};
pub use sigstore::{SigstoreTrust, cosign_cert_sig};
pub use upload::{StagedUpload, UploadMeta};

pub use agentpkg_model as model;
pub use agentpkg_storage::ByteStream;
