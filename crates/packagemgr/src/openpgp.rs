//! OpenPGP with the `pgp` crate (rpgp): reading trusted keys, judging whether a key may
//! sign now (expiry, revocation, signing subkeys), and verifying a detached signature over
//! bytes that were hashed while they streamed, so a package is never read twice to check
//! it.
//!
//! `pgp`'s own `Signature::verify` takes the data as a reader in one call. An upload
//! streams through the registry once, so the data's digest is computed as it passes
//! (reusing the upload's own SHA-256 state when the signature uses SHA-256, which GnuPG
//! does by default) and the signature is completed here from that digest, with the same
//! steps as `pgp`'s: salt (v6), data, the signature's hashed fields, trailer, the two-byte
//! check, then the public-key check.

use std::io::BufReader;

use agentpkg_model::{KeyFingerprint, Subkey};
use chrono::{DateTime, Utc};
use digest::DynDigest;
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, Signature, SignatureType, SignatureVersionSpecific};
use pgp::types::{KeyDetails, Tag, Timestamp, VerifyingKey};

/// A data digest in progress, as `pgp` hashes: boxed, of the signature's algorithm.
pub(crate) type Hasher = Box<dyn DynDigest + Send>;

/// A detached OpenPGP signature over binary data, parsed.
#[derive(Debug, Clone)]
pub(crate) struct ParsedSignature {
    signature: Signature,
}

/// Why signature data could not even be read (a 400), as opposed to a signature that
/// does not verify (a 422).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Malformed(pub String);

impl ParsedSignature {
    /// Reads one detached signature, ASCII-armoured or binary.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, Malformed> {
        let (detached, _) = DetachedSignature::from_reader_single(bytes)
            .map_err(|e| Malformed(format!("not an OpenPGP signature: {e}")))?;
        let signature = detached.signature;
        if signature.config().is_none() {
            return Err(Malformed(format!(
                "unsupported OpenPGP signature version {:?}",
                signature.version()
            )));
        }
        match signature.typ() {
            Some(SignatureType::Binary) => Ok(Self { signature }),
            Some(SignatureType::Text) => Err(Malformed(
                "a text-mode signature (gpg --textmode / --clearsign) cannot sign a package; \
                 sign the file as binary data (gpg --detach-sign)"
                    .into(),
            )),
            other => Err(Malformed(format!(
                "not a signature over data (signature type {other:?})"
            ))),
        }
    }

    pub(crate) fn hash_algorithm(&self) -> HashAlgorithm {
        self.config().hash_alg
    }

    fn config(&self) -> &pgp::packet::SignatureConfig {
        // NOTE: checked in `parse`.
        self.signature
            .config()
            .unwrap_or_else(|| unreachable!("parsed signatures have a config"))
    }

    /// Whether the upload's own SHA-256 state is this signature's data digest: a v4
    /// signature with SHA-256 hashes the data unsalted.
    pub(crate) fn uses_plain_sha256(&self) -> bool {
        self.hash_algorithm() == HashAlgorithm::Sha256
            && !matches!(
                self.config().version_specific,
                SignatureVersionSpecific::V6 { .. }
            )
    }

    /// A fresh data digest for this signature: its algorithm, salted for v6.
    pub(crate) fn data_hasher(&self) -> Result<Hasher, String> {
        let alg = self.hash_algorithm();
        if matches!(
            alg,
            HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160
        ) {
            return Err(format!(
                "the signature uses {alg:?}, which is too weak; sign with SHA-256 or stronger"
            ));
        }
        let mut hasher = alg
            .new_hasher()
            .map_err(|e| format!("unsupported hash algorithm {alg:?}: {e}"))?;
        if let SignatureVersionSpecific::V6 { salt } = &self.config().version_specific {
            hasher.update(salt.as_ref());
        }
        Ok(hasher)
    }

    /// Issuer fingerprints and key ids, upper-case hexadecimal, as the signature names
    /// them.
    fn issuers(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .signature
            .issuer_fingerprint()
            .into_iter()
            .map(|f| format!("{f:X}"))
            .collect();
        ids.extend(
            self.signature
                .issuer_key_id()
                .into_iter()
                .map(|k| hex::encode_upper(k.as_ref())),
        );
        ids
    }

    /// The first issuer it names, for messages.
    pub(crate) fn issuer(&self) -> String {
        self.issuers()
            .into_iter()
            .next()
            .unwrap_or_else(|| "an unnamed key".into())
    }

    fn created(&self) -> Option<DateTime<Utc>> {
        self.signature.created().map(to_utc)
    }

    /// Completes the verification from the digest of the data.
    fn verify_digest(&self, key: &impl VerifyingKey, mut hasher: Hasher) -> Result<(), String> {
        let config = self.config();
        let len = config
            .hash_signature_data(&mut hasher)
            .map_err(|e| format!("cannot hash the signature's fields: {e}"))?;
        let trailer = config
            .trailer(len)
            .map_err(|e| format!("cannot hash the signature's trailer: {e}"))?;
        hasher.update(&trailer);
        let hash = hasher.finalize();
        let expected = self
            .signature
            .signed_hash_value()
            .ok_or("the signature has no hash prefix")?;
        let bad = || "the signature does not match the package's bytes".to_owned();
        if hash.get(..2) != Some(&expected[..]) {
            return Err(bad());
        }
        let bytes = self.signature.signature().ok_or("the signature is empty")?;
        key.verify(config.hash_alg, &hash, bytes).map_err(|_| bad())
    }
}

/// A trusted key, read from its armour, with what matters for signing now.
pub(crate) struct ParsedKey {
    key: SignedPublicKey,
    pub(crate) fingerprint: KeyFingerprint,
    /// User ids with a valid self-signature, the primary one first.
    pub(crate) user_ids: Vec<String>,
    pub(crate) algorithm: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) revoked: bool,
}

/// What went wrong with a key at registration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadKey(pub String);

impl ParsedKey {
    /// Reads one public key (ASCII armour as `gpg --armor --export` prints it, or binary)
    /// and checks its self-signatures.
    pub(crate) fn parse(material: &[u8]) -> Result<Self, BadKey> {
        let (key, _) = SignedPublicKey::from_reader_single(BufReader::new(material))
            .map_err(|e| BadKey(format!("not an OpenPGP public key: {e}")))?;
        let primary = &key.primary_key;
        let fingerprint = KeyFingerprint::parse(&format!("{:X}", primary.fingerprint()))
            .map_err(|_| BadKey("the key's fingerprint is of an unknown version".into()))?;
        let mut user_ids = Vec::new();
        // The newest valid self-certification decides the key's expiry.
        let mut newest: Option<&Signature> = None;
        let mut primary_uid_first = Vec::new();
        for user in &key.details.users {
            let valid: Vec<&Signature> = user
                .signatures
                .iter()
                .filter(|s| s.typ() != Some(SignatureType::CertRevocation))
                .filter(|s| {
                    s.verify_certification(primary, Tag::UserId, &user.id)
                        .is_ok()
                })
                .collect();
            let Some(latest) = valid.iter().copied().max_by_key(|s| s.created()) else {
                continue;
            };
            let id = String::from_utf8_lossy(user.id.id()).into_owned();
            if latest.is_primary() {
                primary_uid_first.push(id);
            } else {
                user_ids.push(id);
            }
            if newest.is_none_or(|n| latest.created() > n.created()) {
                newest = Some(latest);
            }
        }
        for direct in &key.details.direct_signatures {
            if direct.verify_key(primary).is_ok()
                && newest.is_none_or(|n| direct.created() > n.created())
            {
                newest = Some(direct);
            }
        }
        let Some(self_signature) = newest else {
            return Err(BadKey(
                "the key has no valid self-signature (no user id it certifies)".into(),
            ));
        };
        primary_uid_first.extend(user_ids);
        let created_at = to_utc(primary.created_at());
        let expires_at = expiry(primary.created_at(), self_signature);
        let revoked = key
            .details
            .revocation_signatures
            .iter()
            .any(|s| s.verify_key(primary).is_ok());
        Ok(Self {
            fingerprint,
            user_ids: primary_uid_first,
            algorithm: format!("{:?}", primary.algorithm()),
            created_at,
            expires_at,
            revoked,
            key,
        })
    }

    /// Whether this key (or one of its subkeys) is the signature's issuer.
    pub(crate) fn is_issuer_of(&self, signature: &ParsedSignature) -> bool {
        let ids = self.identifiers();
        signature.issuers().iter().any(|i| ids.contains(i))
    }

    fn identifiers(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let mut add = |fp: pgp::types::Fingerprint, id: pgp::types::KeyId| {
            ids.push(format!("{fp:X}"));
            ids.push(hex::encode_upper(id.as_ref()));
        };
        add(
            self.key.primary_key.fingerprint(),
            self.key.primary_key.legacy_key_id(),
        );
        for sub in &self.key.public_subkeys {
            add(sub.key.fingerprint(), sub.key.legacy_key_id());
        }
        ids
    }

    /// The primary user id, for records and messages.
    pub(crate) fn signer(&self) -> String {
        self.user_ids
            .first()
            .cloned()
            .unwrap_or_else(|| self.fingerprint.to_string())
    }

    /// The key's subkeys as their bindings describe them, for people to read.
    pub(crate) fn subkeys(&self) -> Vec<Subkey> {
        let primary = &self.key.primary_key;
        self.key
            .public_subkeys
            .iter()
            .map(|sub| {
                let binding = subkey_binding(primary, sub);
                let (signs, expires_at) = match binding {
                    Binding::Bound {
                        signs,
                        backed,
                        expires_at,
                    } => (signs && backed, expires_at),
                    Binding::Revoked | Binding::Missing => (false, None),
                };
                Subkey {
                    fingerprint: format!("{:X}", sub.key.fingerprint()),
                    algorithm: format!("{:?}", sub.key.algorithm()),
                    signs,
                    expires_at,
                    revoked: matches!(binding, Binding::Revoked),
                }
            })
            .collect()
    }

    /// Verifies `signature` over data whose digest is `hasher`, as of `now`: the issuing
    /// (sub)key must be valid, able to sign, neither expired nor revoked, and the
    /// signature itself neither from the future nor expired.
    pub(crate) fn verify(
        &self,
        signature: &ParsedSignature,
        hasher: Hasher,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let name = format!("key {} ({})", self.fingerprint, self.signer());
        if self.revoked {
            return Err(format!("{name} is revoked"));
        }
        if let Some(at) = self.expires_at
            && at <= now
        {
            return Err(format!("{name} expired at {}", at.to_rfc3339()));
        }
        if let Some(created) = signature.created() {
            if created > now + chrono::Duration::minutes(5) {
                return Err(format!(
                    "the signature claims to be made in the future ({})",
                    created.to_rfc3339()
                ));
            }
            if let Some(valid_for) = signature.signature.signature_expiration_time()
                && valid_for.as_secs() > 0
                && created + chrono::Duration::seconds(i64::from(valid_for.as_secs())) <= now
            {
                return Err("the signature has expired".into());
            }
        }
        let issuers = signature.issuers();
        let primary = &self.key.primary_key;
        let primary_ids = [
            format!("{:X}", primary.fingerprint()),
            hex::encode_upper(primary.legacy_key_id().as_ref()),
        ];
        if issuers.iter().any(|i| primary_ids.contains(i)) {
            return signature.verify_digest(primary, hasher);
        }
        for sub in &self.key.public_subkeys {
            let ids = [
                format!("{:X}", sub.key.fingerprint()),
                hex::encode_upper(sub.key.legacy_key_id().as_ref()),
            ];
            if !issuers.iter().any(|i| ids.contains(i)) {
                continue;
            }
            let sub_name = format!("signing subkey {} of {name}", ids[0]);
            match subkey_binding(primary, sub) {
                Binding::Revoked => return Err(format!("{sub_name} is revoked")),
                Binding::Missing => {
                    return Err(format!("{sub_name} has no valid binding to its key"));
                }
                Binding::Bound { signs: false, .. } => {
                    return Err(format!("{sub_name} is not a signing key"));
                }
                Binding::Bound { backed: false, .. } => {
                    return Err(format!(
                        "{sub_name} lacks a valid back-signature (cross-certification)"
                    ));
                }
                Binding::Bound {
                    expires_at: Some(at),
                    ..
                } if at <= now => {
                    return Err(format!("{sub_name} expired at {}", at.to_rfc3339()));
                }
                Binding::Bound { .. } => {}
            }
            return signature.verify_digest(&sub.key, hasher);
        }
        Err(format!("{name} did not make this signature"))
    }
}

/// What a subkey's signatures make of it.
enum Binding {
    /// Revoked by its primary key.
    Revoked,
    /// No binding signature by its primary key.
    Missing,
    /// Bound by its newest valid binding: whether that binding lets it sign, whether the
    /// subkey signed the binding back (required of a signing subkey), and its expiry.
    Bound {
        signs: bool,
        backed: bool,
        expires_at: Option<DateTime<Utc>>,
    },
}

fn subkey_binding(primary: &PublicKey, sub: &SignedPublicSubKey) -> Binding {
    let revoked = sub.signatures.iter().any(|s| {
        s.typ() == Some(SignatureType::SubkeyRevocation)
            && s.verify_subkey_binding(primary, &sub.key).is_ok()
    });
    if revoked {
        return Binding::Revoked;
    }
    let Some(binding) = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .filter(|s| s.verify_subkey_binding(primary, &sub.key).is_ok())
        .max_by_key(|s| s.created())
    else {
        return Binding::Missing;
    };
    Binding::Bound {
        signs: binding.key_flags().sign(),
        backed: binding
            .embedded_signature()
            .is_some_and(|back| back.verify_primary_key_binding(&sub.key, primary).is_ok()),
        expires_at: expiry(sub.key.created_at(), binding),
    }
}

/// When a key made at `created` expires by `signature` (a self-signature or binding).
fn expiry(created: Timestamp, signature: &Signature) -> Option<DateTime<Utc>> {
    let secs = signature.key_expiration_time()?.as_secs();
    (secs > 0).then(|| to_utc(created) + chrono::Duration::seconds(i64::from(secs)))
}

fn to_utc(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(t.as_secs()), 0).unwrap_or_default()
}
