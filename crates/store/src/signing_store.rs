//! The signing store: signature bytes, trusted OpenPGP keys and Sigstore identity policies.

use std::sync::Arc;

use agentpkg_model::{
    KeyFingerprint, KeyPatterns, NewSignature, NewSigstoreIdentity, Package, SignatureFormat,
    SignatureInfo, SigstoreIdentity, TrustedKey,
};
use async_trait::async_trait;

use crate::{Health, StoreError};

/// Signatures of packages, and the keys trusted to make them.
#[async_trait]
pub trait SigningStore: Health {
    /// A package's signature bytes and their format, when it has one.
    async fn signature_bytes(
        &self,
        package_id: i64,
    ) -> Result<Option<(SignatureFormat, Vec<u8>)>, StoreError>;
    /// Attaches a signature to a package, or replaces its signature; a verified one only
    /// when `may_replace_verified`, decided in the same transaction.
    async fn attach_signature(
        &self,
        package_id: i64,
        signature: NewSignature,
        may_replace_verified: bool,
    ) -> Result<Attached, StoreError>;
    /// Registers a key, or updates the key with the same fingerprint; `true` when new.
    async fn upsert_key(&self, key: NewSigningKey) -> Result<(TrustedKey, bool), StoreError>;
    async fn signing_key(
        &self,
        fingerprint: &KeyFingerprint,
    ) -> Result<Option<TrustedKey>, StoreError>;
    async fn signing_keys(&self) -> Result<Vec<TrustedKey>, StoreError>;
    async fn delete_signing_key(&self, fingerprint: &KeyFingerprint) -> Result<bool, StoreError>;
    /// Adds a Sigstore identity policy.
    async fn add_sigstore_identity(
        &self,
        new: NewSigstoreIdentity,
    ) -> Result<SigstoreIdentity, StoreError>;
    async fn sigstore_identity(&self, id: i64) -> Result<Option<SigstoreIdentity>, StoreError>;
    async fn sigstore_identities(&self) -> Result<Vec<SigstoreIdentity>, StoreError>;
    async fn delete_sigstore_identity(&self, id: i64) -> Result<bool, StoreError>;
}

pub type DynSigningStore = Arc<dyn SigningStore>;

/// What attaching a signature did.
#[derive(Debug, Clone)]
pub enum Attached {
    Done {
        package: Package,
        /// The signature it replaced, if any.
        replaced: Option<SignatureInfo>,
    },
    NoPackage,
    /// The package has a verified signature, which only an admin may replace.
    VerifiedExists(Package),
}

/// A key to register (already parsed and checked by the caller).
#[derive(Debug, Clone)]
pub struct NewSigningKey {
    pub fingerprint: KeyFingerprint,
    pub armored: String,
    pub user_ids: Vec<String>,
    pub algorithm: String,
    pub key_created_at: Option<chrono::DateTime<chrono::Utc>>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked: bool,
    pub patterns: KeyPatterns,
    pub added_by: Option<i64>,
}
