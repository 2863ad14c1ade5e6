//! Signatures: the keys the registry trusts, and the policy an upload's signature meets
//! before its package becomes visible.
//!
//! A signature is judged in two steps. Before the bytes (as soon as the signature and the
//! package name are known): it must parse, and name a signer trusted for the name — an
//! OpenPGP key whose patterns cover it, valid now (or its signing subkey), or for a
//! Sigstore bundle, a certificate whose issuer and identity a Sigstore identity policy
//! for the name allows. After the bytes: the signature must match their digest, computed
//! while they streamed (a bundle is verified in full then: chain, log entry, inclusion
//! proof, timestamps, at the signing time it attests). Either failure refuses the upload
//! like a checksum mismatch: no row, no object.

use agentpkg_model::{
    Actor, Checksum, DetachedSignature, Entity, KeyFingerprint, KeyPatterns, NewSignature,
    NewSigstoreIdentity, Package, PackageName, SignatureFormat, SigstoreIdentity, Subkey,
    TrustedKey, Verification, VerifiedBy,
};
use agentpkg_storage::DynObjectStore;
use agentpkg_store::{Attached, DynSigningStore, NewSigningKey};
use chrono::{DurationRound, Utc};
use futures_util::StreamExt;
use sha2::Sha256;

use crate::openpgp::{Hasher, ParsedKey, ParsedSignature};
use crate::sigstore::SigstoreTrust;
use crate::{Error, PackageManager};

/// Largest key accepted for registration, in bytes of armour.
pub const MAX_KEY_BYTES: usize = 256 * 1024;

/// What uploads must bring.
#[derive(Debug, Clone, Copy, Default)]
pub struct SigningPolicy {
    /// Every package needs a verified signature (`signing.required`): OpenPGP by a trusted
    /// key, or a Sigstore bundle by a trusted identity.
    pub required: bool,
}

/// The trusted keys and Sigstore identities, kept in the database so that every replica
/// trusts the same ones, and the Sigstore trust root (configuration, the same everywhere).
#[derive(Clone)]
pub struct Keyring {
    store: DynSigningStore,
    sigstore: Option<SigstoreTrust>,
}

impl Keyring {
    pub fn new(store: DynSigningStore) -> Self {
        Self {
            store,
            sigstore: None,
        }
    }

    /// Verifies Sigstore bundles against `trust`.
    pub fn with_sigstore(mut self, trust: SigstoreTrust) -> Self {
        self.sigstore = Some(trust);
        self
    }

    /// The Sigstore trust root, when bundles are verified.
    pub fn sigstore(&self) -> Option<&SigstoreTrust> {
        self.sigstore.as_ref()
    }

    /// Trusts a keyless signer (an issuer and an identity pattern) for the names the
    /// patterns match.
    pub async fn add_identity(&self, new: NewSigstoreIdentity) -> Result<SigstoreIdentity, Error> {
        let identity = self.store.add_sigstore_identity(new).await?;
        tracing::info!(
            identity = identity.id,
            issuer = %identity.issuer,
            san_regex = identity.san.as_str(),
            "sigstore identity trusted"
        );
        Ok(identity)
    }

    pub async fn identities(&self) -> Result<Vec<SigstoreIdentity>, Error> {
        Ok(self.store.sigstore_identities().await?)
    }

    pub async fn identity(&self, id: i64) -> Result<SigstoreIdentity, Error> {
        self.store
            .sigstore_identity(id)
            .await?
            .ok_or(Error::NotFound(Entity::SigstoreIdentity))
    }

    /// Stops trusting a signer for anything new; packages it verified keep the record.
    pub async fn remove_identity(&self, id: i64) -> Result<(), Error> {
        if !self.store.delete_sigstore_identity(id).await? {
            return Err(Error::NotFound(Entity::SigstoreIdentity));
        }
        tracing::info!(identity = id, "sigstore identity removed");
        Ok(())
    }

    /// The identity policies that cover `name`.
    async fn identities_for(&self, name: &PackageName) -> Result<Vec<SigstoreIdentity>, Error> {
        Ok(self
            .identities()
            .await?
            .into_iter()
            .filter(|p| p.patterns.allows(name))
            .collect())
    }

    /// Registers an OpenPGP public key for the names `patterns` match, or updates the key
    /// with the same fingerprint (a renewed expiry, a revocation, a new subkey, other
    /// patterns). Returns the key and whether it is new.
    pub async fn add(
        &self,
        material: &str,
        patterns: KeyPatterns,
        added_by: Option<i64>,
    ) -> Result<(TrustedKey, bool), Error> {
        if material.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidKey(format!(
                "the key is larger than {MAX_KEY_BYTES} bytes"
            )));
        }
        if material.contains("PRIVATE KEY BLOCK") {
            return Err(Error::InvalidKey(
                "this is a secret key: send the public key (gpg --armor --export)".into(),
            ));
        }
        let parsed = ParsedKey::parse(material.as_bytes()).map_err(|e| Error::InvalidKey(e.0))?;
        let new = NewSigningKey {
            fingerprint: parsed.fingerprint.clone(),
            armored: material.trim().to_owned(),
            user_ids: parsed.user_ids.clone(),
            algorithm: parsed.algorithm.clone(),
            key_created_at: Some(parsed.created_at),
            expires_at: parsed.expires_at,
            revoked: parsed.revoked,
            patterns,
            added_by,
        };
        let (key, created) = self.store.upsert_key(new).await?;
        tracing::info!(
            fingerprint = %key.fingerprint,
            created,
            revoked = key.revoked,
            "signing key registered"
        );
        Ok((key, created))
    }

    pub async fn list(&self) -> Result<Vec<TrustedKey>, Error> {
        Ok(self.store.signing_keys().await?)
    }

    /// A trusted key's subkeys, read from its armour: which sign, which expired or were
    /// revoked. None when the stored armour no longer parses (logged).
    pub fn subkeys(key: &TrustedKey) -> Vec<Subkey> {
        match ParsedKey::parse(key.armored.as_bytes()) {
            Ok(parsed) => parsed.subkeys(),
            Err(e) => {
                tracing::error!(fingerprint = %key.fingerprint, error = %e, "a stored signing key no longer parses");
                Vec::new()
            }
        }
    }

    pub async fn get(&self, fingerprint: &KeyFingerprint) -> Result<TrustedKey, Error> {
        self.store
            .signing_key(fingerprint)
            .await?
            .ok_or(Error::NotFound(Entity::SigningKey))
    }

    /// Removes a key: it verifies nothing new. Packages it verified keep the record.
    pub async fn remove(&self, fingerprint: &KeyFingerprint) -> Result<(), Error> {
        if !self.store.delete_signing_key(fingerprint).await? {
            return Err(Error::NotFound(Entity::SigningKey));
        }
        tracing::info!(fingerprint = %fingerprint, "signing key removed");
        Ok(())
    }

    /// The trusted key that made `signature` and may sign `name`.
    async fn signer(
        &self,
        name: &PackageName,
        signature: &ParsedSignature,
    ) -> Result<(TrustedKey, ParsedKey), Error> {
        let mut untrusted_for_name = None;
        for trusted in self.store.signing_keys().await? {
            let parsed = match ParsedKey::parse(trusted.armored.as_bytes()) {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::error!(fingerprint = %trusted.fingerprint, error = %e, "a stored signing key no longer parses");
                    continue;
                }
            };
            if !parsed.is_issuer_of(signature) {
                continue;
            }
            if trusted.patterns.allows(name) {
                return Ok((trusted, parsed));
            }
            untrusted_for_name = Some(parsed);
        }
        Err(Error::SignatureInvalid(match untrusted_for_name {
            Some(key) => format!(
                "key {} ({}) is not trusted to sign {name}",
                key.fingerprint,
                key.signer()
            ),
            None => format!(
                "the signature was made by {}, which is not a trusted key",
                signature.issuer()
            ),
        }))
    }
}

/// A signature judged as far as it can be before the bytes.
pub(crate) enum Pending {
    /// An OpenPGP signature by a trusted key, waiting for the data's digest.
    OpenPgp {
        format: SignatureFormat,
        bytes: agentpkg_model::SignatureBytes,
        signature: ParsedSignature,
        key: Box<ParsedKey>,
    },
    /// A Sigstore bundle whose signer a policy allows, waiting for the data's digest.
    Sigstore {
        bytes: agentpkg_model::SignatureBytes,
        bundle: Box<sigstore_verify::types::Bundle>,
        identities: Vec<SigstoreIdentity>,
        trust: SigstoreTrust,
    },
    /// A format the registry keeps without verifying.
    Unverified(DetachedSignature),
}

/// The digests an upload computed as it streamed, for a signature to complete.
pub(crate) struct StreamDigests {
    /// The upload's SHA-256 before finalising: the data digest of a v4 SHA-256 signature.
    pub(crate) sha256: Sha256,
    /// The digest for a signature known before the bytes whose algorithm is another.
    pub(crate) extra: Option<Hasher>,
}

/// Parses a signature sent before the bytes, to know which digest to compute on the way;
/// `None` when the upload's SHA-256 will do (or there is nothing to verify).
pub(crate) fn stream_hasher(
    signature: Option<&DetachedSignature>,
) -> Result<Option<Hasher>, Error> {
    let Some(signature) = signature.filter(|s| s.format == SignatureFormat::Openpgp) else {
        return Ok(None);
    };
    let parsed = parse(signature)?;
    if parsed.uses_plain_sha256() {
        return Ok(None);
    }
    parsed
        .data_hasher()
        .map(Some)
        .map_err(Error::SignatureInvalid)
}

fn parse(signature: &DetachedSignature) -> Result<ParsedSignature, Error> {
    ParsedSignature::parse(signature.bytes.as_bytes()).map_err(|e| Error::SignatureMalformed(e.0))
}

/// The first step: policy, parsing, and the key, before any byte is read.
pub(crate) async fn judge(
    keyring: Option<&Keyring>,
    policy: SigningPolicy,
    name: &PackageName,
    signature: Option<&DetachedSignature>,
) -> Result<Option<Pending>, Error> {
    let Some(signature) = signature else {
        if policy.required {
            return Err(Error::SignatureRequired(format!(
                "this registry requires every package to be signed: attach an OpenPGP \
                 signature of {name} by a trusted key or a Sigstore bundle by a trusted \
                 identity"
            )));
        }
        return Ok(None);
    };
    match signature.format {
        SignatureFormat::Openpgp => {}
        SignatureFormat::SigstoreBundle => {
            return judge_bundle(keyring, name, signature).await.map(Some);
        }
        other => {
            if policy.required {
                return Err(Error::SignatureRequired(format!(
                    "this registry requires a verified signature (OpenPGP or a Sigstore \
                     bundle); {other} signatures are kept but not verified, so they do not \
                     meet the requirement"
                )));
            }
            return Ok(Some(Pending::Unverified(signature.clone())));
        }
    }
    let parsed = parse(signature)?;
    // A weak or unknown hash is refused before the bytes.
    parsed.data_hasher().map_err(Error::SignatureInvalid)?;
    let keyring = keyring.ok_or_else(|| {
        Error::SignatureInvalid("this registry has no trusted keys to verify with".into())
    })?;
    let (_, key) = keyring.signer(name, &parsed).await?;
    Ok(Some(Pending::OpenPgp {
        format: signature.format,
        bytes: signature.bytes.clone(),
        signature: parsed,
        key: Box::new(key),
    }))
}

/// A bundle before the bytes: it parses, and its certificate's signer is one a policy
/// for `name` allows.
async fn judge_bundle(
    keyring: Option<&Keyring>,
    name: &PackageName,
    signature: &DetachedSignature,
) -> Result<Pending, Error> {
    let bundle =
        crate::sigstore::parse(signature.bytes.as_bytes()).map_err(Error::SignatureMalformed)?;
    let (keyring, trust) = keyring
        .and_then(|k| Some((k, k.sigstore.clone()?)))
        .ok_or_else(|| {
            Error::SignatureInvalid("this registry does not verify Sigstore bundles".into())
        })?;
    let identities = keyring.identities_for(name).await?;
    if identities.is_empty() {
        return Err(Error::SignatureInvalid(format!(
            "no Sigstore identity is trusted to sign {name} (an admin adds one with \
             POST /api/v1/sigstore-identities)"
        )));
    }
    crate::sigstore::precheck(&bundle, name, &identities).map_err(Error::SignatureInvalid)?;
    Ok(Pending::Sigstore {
        bytes: signature.bytes.clone(),
        bundle: Box::new(bundle),
        identities,
        trust,
    })
}

/// The second step: the signature against the digest of the bytes, streamed or (when the
/// signature came after them with another hash algorithm) read back from storage once. A
/// bundle needs only `checksum`, the SHA-256 of the bytes, already checked.
pub(crate) async fn complete(
    pending: Pending,
    digests: Option<StreamDigests>,
    stored: (&DynObjectStore, &agentpkg_model::ObjectKey),
    (name, checksum): (&PackageName, &Checksum),
) -> Result<NewSignature, Error> {
    let (format, bytes, signature, key) = match pending {
        Pending::Unverified(s) => {
            return Ok(NewSignature {
                format: s.format,
                bytes: s.bytes,
                verified_by: None,
            });
        }
        Pending::Sigstore {
            bytes,
            bundle,
            identities,
            trust,
        } => {
            let (name, checksum) = (name.clone(), checksum.clone());
            // A few signature checks and a Merkle path: CPU, off the async threads.
            let signed = tokio::task::spawn_blocking(move || {
                trust.verify(&bundle, &checksum, &name, &identities)
            })
            .await
            .map_err(|e| Error::Internal(format!("bundle verification: {e}")))?
            .map_err(Error::SignatureInvalid)?;
            return Ok(NewSignature {
                format: SignatureFormat::SigstoreBundle,
                bytes,
                verified_by: Some(Verification {
                    by: VerifiedBy::Sigstore {
                        identity: signed.policy,
                        issuer: signed.issuer,
                        signed_at: signed.signed_at,
                    },
                    signer: signed.identity,
                    verified_at: now_micros(),
                }),
            });
        }
        Pending::OpenPgp {
            format,
            bytes,
            signature,
            key,
        } => (format, bytes, signature, key),
    };
    let hasher: Hasher = match digests {
        Some(d) if signature.uses_plain_sha256() => Box::new(d.sha256),
        Some(StreamDigests {
            extra: Some(extra), ..
        }) => extra,
        _ => reread(stored.0, stored.1, &signature).await?,
    };
    let now = now_micros();
    key.verify(&signature, hasher, now)
        .map_err(Error::SignatureInvalid)?;
    Ok(NewSignature {
        format,
        bytes,
        verified_by: Some(Verification {
            by: VerifiedBy::Key(key.fingerprint.clone()),
            signer: key.signer(),
            verified_at: now,
        }),
    })
}

/// Now, in microseconds: what PostgreSQL keeps, so the record reads back as it was made.
fn now_micros() -> chrono::DateTime<Utc> {
    Utc::now()
        .duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap_or_else(|_| Utc::now())
}

impl PackageManager {
    /// A package's signature: its format and bytes, as the publisher sent them.
    pub async fn signature(&self, package: &Package) -> Result<(SignatureFormat, Vec<u8>), Error> {
        if package.signature.is_none() {
            return Err(Error::NotFound(Entity::Signature));
        }
        let store = self
            .signatures
            .as_ref()
            .ok_or(Error::NotFound(Entity::Signature))?;
        store
            .signature_bytes(package.id)
            .await?
            .ok_or(Error::NotFound(Entity::Signature))
    }

    /// Signs an existing package: the signature is judged and verified (over the stored
    /// bytes, read once) exactly as at upload. Replacing a verified signature needs an
    /// admin (`actor` `None` is a trusted caller).
    pub async fn attach_signature(
        &self,
        id: i64,
        signature: DetachedSignature,
        actor: Option<&Actor>,
    ) -> Result<Package, Error> {
        let package = self.get(id).await?;
        if let Some(actor) = actor {
            self.ensure_may_act(&package.name, actor).await?;
        }
        let store = self.signatures.as_ref().ok_or_else(|| {
            Error::SignatureInvalid("this registry does not keep signatures".into())
        })?;
        let pending = judge(
            self.keyring.as_ref(),
            self.signing,
            &package.name,
            Some(&signature),
        )
        .await?
        .ok_or_else(|| Error::Internal("a signature judged as absent".into()))?;
        // The upload's digests are long gone: the stored bytes are read once to check.
        let new = complete(
            pending,
            None,
            (&self.storage, &package.storage_key),
            (&package.name, &package.checksum),
        )
        .await?;
        let may_replace_verified = actor.is_none_or(|a| a.admin);
        let attached = store.attach_signature(id, new, may_replace_verified).await;
        self.reads.forget();
        match attached? {
            Attached::Done { package, replaced } => {
                tracing::info!(
                    package_id = id,
                    verified = package
                        .signature
                        .as_ref()
                        .is_some_and(|s| s.verified_by.is_some()),
                    replaced = replaced.is_some(),
                    "package signature attached"
                );
                Ok(package)
            }
            Attached::NoPackage => Err(Error::NotFound(Entity::Package)),
            Attached::VerifiedExists(_) => Err(Error::Forbidden(
                "the package has a verified signature; only an admin may replace it".into(),
            )),
        }
    }
}

/// Hashes a stored object for `signature`: the one case that reads bytes twice.
async fn reread(
    storage: &DynObjectStore,
    key: &agentpkg_model::ObjectKey,
    signature: &ParsedSignature,
) -> Result<Hasher, Error> {
    let mut hasher = signature.data_hasher().map_err(Error::SignatureInvalid)?;
    let mut body = storage.get(key).await?;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| Error::StorageUnavailable(agentpkg_storage::StorageError::Io(e)))?;
        hasher.update(&chunk);
    }
    tracing::debug!(object_key = %key, "stored package read again to verify its signature");
    Ok(hasher)
}
