//! Package signatures and the keys trusted to make them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::closed_set::closed_set;
use crate::{NamePattern, PackageName, ValidationError};

/// Largest signature accepted, in bytes (armoured or binary).
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

closed_set!(
    /// How a signature is encoded. OpenPGP signatures are verified against the registry's
    /// trusted keys and Sigstore bundles against its trust root and identity policies; the
    /// others are kept and served as they came, marked unverified, for agents that check
    /// them themselves.
    SignatureFormat, "signature_format", {
        Openpgp => "openpgp",
        Minisign => "minisign",
        Cosign => "cosign",
        SigstoreBundle => "sigstore-bundle",
    }
);

impl SignatureFormat {
    /// Whether the registry verifies signatures of this format itself.
    pub fn verifiable(self) -> bool {
        matches!(self, Self::Openpgp | Self::SigstoreBundle)
    }
}

/// The bytes of a detached signature: not empty, at most [`MAX_SIGNATURE_BYTES`].
#[derive(Clone, PartialEq, Eq)]
pub struct SignatureBytes(Vec<u8>);

impl SignatureBytes {
    pub fn new(bytes: Vec<u8>) -> Result<Self, ValidationError> {
        if bytes.is_empty() {
            return Err(ValidationError::new("signature", "is empty"));
        }
        if bytes.len() > MAX_SIGNATURE_BYTES {
            return Err(ValidationError::new(
                "signature",
                format!("is larger than {MAX_SIGNATURE_BYTES} bytes"),
            ));
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureBytes({} bytes)", self.0.len())
    }
}

/// A signature as a publisher sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedSignature {
    pub format: SignatureFormat,
    pub bytes: SignatureBytes,
}

/// The fingerprint of an OpenPGP key: 40 (v4) or 64 (v6) hexadecimal digits, kept in
/// upper case as GnuPG prints it. Spaces (as in `gpg --fingerprint`) are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9A-F]{40}([0-9A-F]{24})?$"))]
pub struct KeyFingerprint(String);

impl KeyFingerprint {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let compact: String = s.chars().filter(|c| *c != ' ').collect();
        let valid =
            matches!(compact.len(), 40 | 64) && compact.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(ValidationError::new(
                "fingerprint",
                "must be 40 or 64 hexadecimal digits",
            ));
        }
        Ok(Self(compact.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the registry knows of a package's signature, shown with the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureInfo {
    pub format: SignatureFormat,
    /// Set when a trusted key verified the signature over the package's bytes.
    pub verified_by: Option<Verification>,
}

/// Who verified a signature, and when. Kept after the key or policy is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub by: VerifiedBy,
    /// For people reading the record: the key's primary user id at the time, or the
    /// identity in the Sigstore signing certificate.
    pub signer: String,
    pub verified_at: DateTime<Utc>,
}

/// What vouched for a verified signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedBy {
    /// A trusted OpenPGP (primary) key.
    Key(KeyFingerprint),
    /// A Sigstore bundle, chained to the trust root and allowed by an identity policy.
    Sigstore {
        /// The identity policy that allowed the signer (its id; kept after it is removed).
        identity: i64,
        /// The OIDC issuer in the certificate.
        issuer: String,
        /// When it was signed, as the bundle's transparency log or timestamp authority
        /// attests (not the wall clock).
        signed_at: DateTime<Utc>,
    },
}

impl Verification {
    /// The trusted key's fingerprint, for an OpenPGP verification.
    pub fn key(&self) -> Option<&KeyFingerprint> {
        match &self.by {
            VerifiedBy::Key(key) => Some(key),
            VerifiedBy::Sigstore { .. } => None,
        }
    }
}

/// A signature to record with a package (or to attach to one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSignature {
    pub format: SignatureFormat,
    pub bytes: SignatureBytes,
    pub verified_by: Option<Verification>,
}

impl NewSignature {
    pub fn info(&self) -> SignatureInfo {
        SignatureInfo {
            format: self.format,
            verified_by: self.verified_by.clone(),
        }
    }
}

/// Which names a key may sign: at least one pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPatterns(Vec<NamePattern>);

impl KeyPatterns {
    pub fn new(patterns: Vec<NamePattern>) -> Result<Self, ValidationError> {
        if patterns.is_empty() {
            return Err(ValidationError::new(
                "patterns",
                "must name at least one package name pattern (\"*\" for every name)",
            ));
        }
        Ok(Self(patterns))
    }

    pub fn allows(&self, name: &PackageName) -> bool {
        self.0.iter().any(|p| p.matches(name))
    }

    pub fn patterns(&self) -> &[NamePattern] {
        &self.0
    }
}

/// A subkey of a trusted key, as its binding to the key describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subkey {
    pub fingerprint: String,
    pub algorithm: String,
    /// Bound as a signing key, with the back-signature a signing subkey needs: signatures
    /// it makes verify for the key's patterns.
    pub signs: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked by the primary key.
    pub revoked: bool,
}

/// An OpenPGP key the registry trusts to sign the names its patterns match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The primary key's fingerprint.
    pub fingerprint: KeyFingerprint,
    /// The key as it was registered, in ASCII armour.
    pub armored: String,
    pub user_ids: Vec<String>,
    pub algorithm: String,
    pub key_created_at: Option<DateTime<Utc>>,
    /// When the key stops verifying, as of its latest self-signature.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether the key holds a valid revocation of itself.
    pub revoked: bool,
    pub patterns: KeyPatterns,
    /// The admin who registered it.
    pub added_by: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalised_and_checked() {
        let fp =
            KeyFingerprint::parse("69be f1f1 1b6c 5e2d 0bc0  1157 eeaa 4d06 02df 1aaa").unwrap();
        assert_eq!(fp.as_str(), "69BEF1F11B6C5E2D0BC01157EEAA4D0602DF1AAA");
        assert!(KeyFingerprint::parse("69BEF1F11B6C5E2D").is_err());
        assert!(KeyFingerprint::parse(&"G".repeat(40)).is_err());
        assert!(KeyFingerprint::parse("../../etc/passwd").is_err());
    }

    #[test]
    fn signature_bytes_are_bounded() {
        assert!(SignatureBytes::new(Vec::new()).is_err());
        assert!(SignatureBytes::new(vec![0; MAX_SIGNATURE_BYTES]).is_ok());
        assert!(SignatureBytes::new(vec![0; MAX_SIGNATURE_BYTES + 1]).is_err());
    }

    #[test]
    fn formats_round_trip() {
        for f in SignatureFormat::ALL {
            assert_eq!(f.as_str().parse::<SignatureFormat>().unwrap(), *f);
        }
        assert!("gpg".parse::<SignatureFormat>().is_err());
    }

    #[test]
    fn key_patterns_need_one_and_match_any() {
        assert!(KeyPatterns::new(vec![]).is_err());
        let p = KeyPatterns::new(vec![
            NamePattern::parse("otelcol*").unwrap(),
            NamePattern::parse("fluent-bit").unwrap(),
        ])
        .unwrap();
        assert!(p.allows(&PackageName::parse("otelcol-contrib").unwrap()));
        assert!(p.allows(&PackageName::parse("fluent-bit").unwrap()));
        assert!(!p.allows(&PackageName::parse("vector").unwrap()));
    }
}
