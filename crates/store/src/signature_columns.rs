//! How a package row holds its signature: the format, and when verified, by what.

use agentpkg_model::{KeyFingerprint, NewSignature, SignatureInfo, Verification, VerifiedBy};
use chrono::NaiveDateTime;

use crate::packages::microseconds;

/// A package row's signature columns: the format, and when verified, by what (a key's
/// fingerprint, or a Sigstore identity policy with the certificate's issuer and the
/// attested signing time), the signer and when.
#[derive(Default)]
pub(crate) struct SignatureColumns {
    pub(crate) format: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) signer: Option<String>,
    pub(crate) verified_at: Option<NaiveDateTime>,
    pub(crate) identity: Option<i64>,
    pub(crate) issuer: Option<String>,
    pub(crate) signed_at: Option<NaiveDateTime>,
}

impl SignatureColumns {
    pub(crate) fn of(signature: Option<&NewSignature>) -> Self {
        let Some(signature) = signature else {
            return Self::default();
        };
        let mut columns = Self {
            format: Some(signature.format.as_str().to_owned()),
            ..Self::default()
        };
        if let Some(v) = &signature.verified_by {
            columns.signer = Some(v.signer.clone());
            columns.verified_at = Some(v.verified_at.naive_utc());
            match &v.by {
                VerifiedBy::Key(key) => columns.key = Some(key.as_str().to_owned()),
                VerifiedBy::Sigstore {
                    identity,
                    issuer,
                    signed_at,
                } => {
                    columns.identity = Some(*identity);
                    columns.issuer = Some(issuer.clone());
                    columns.signed_at = Some(microseconds(*signed_at));
                }
            }
        }
        columns
    }
}

pub(crate) fn signature_info(
    c: SignatureColumns,
) -> Result<Option<SignatureInfo>, agentpkg_model::ValidationError> {
    let Some(format) = c.format else {
        return Ok(None);
    };
    let by = match (c.key, c.identity, c.issuer, c.signed_at) {
        (Some(key), _, _, _) => Some(VerifiedBy::Key(KeyFingerprint::parse(&key)?)),
        (None, Some(identity), Some(issuer), Some(signed_at)) => Some(VerifiedBy::Sigstore {
            identity,
            issuer,
            signed_at: signed_at.and_utc(),
        }),
        _ => None,
    };
    let verified_by = match (by, c.signer, c.verified_at) {
        (Some(by), Some(signer), Some(at)) => Some(Verification {
            by,
            signer,
            verified_at: at.and_utc(),
        }),
        _ => None,
    };
    Ok(Some(SignatureInfo {
        format: format.parse()?,
        verified_by,
    }))
}
