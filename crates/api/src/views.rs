//! What the API shows of the domain's types: JSON views, kept apart from the model (as
//! crates.io keeps its database model apart from its JSON), so that the model knows
//! nothing of JSON and the JSON changes only here.

use agentpkg_model::{
    Arch, Package, Platform, SignatureFormat, SignatureInfo, VerifiedBy, VersionBuilds,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// A stored package, as the API shows it (the earlier registry's fields, plus `filename`).
#[derive(Serialize, ToSchema)]
#[schema(as = Package)]
pub(crate) struct PackageView<'a> {
    id: i64,
    #[schema(example = "opamp-agent")]
    name: &'a str,
    /// SemVer 2.0 version, as uploaded.
    #[schema(example = "1.4.2")]
    version: String,
    platform: Platform,
    arch: Arch,
    /// Size in bytes.
    file_size: u64,
    /// SHA-256 of the bytes, 64 lowercase hexadecimal characters; also the download's ETag.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    checksum: &'a str,
    /// Key of the object holding the bytes, inside the registry's bucket or directory.
    storage_path: &'a str,
    /// File name given to downloads (`Content-Disposition`).
    filename: &'a str,
    description: &'a str,
    /// `false` once yanked: hidden from lists and `latest`, still downloadable by id or
    /// exact version.
    is_active: bool,
    /// The package's detached signature, or null when it has none.
    signature: Option<SignatureView<'a>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Downloads counted so far: answers that carried the bytes from the first one, or
    /// redirected to them. Counts are written in batches, so this trails by up to
    /// `stats.flush_secs`.
    download_count: u64,
    /// When the package was last downloaded, or null.
    last_downloaded_at: Option<DateTime<Utc>>,
    /// When the package was yanked, while it is; null when active.
    yanked_at: Option<DateTime<Utc>>,
}

/// What the registry knows of a package's signature (the bytes are at `…/signature`).
#[derive(Serialize, ToSchema)]
pub(crate) struct SignatureView<'a> {
    format: SignatureFormat,
    /// Whether a trusted key verified it over the package's bytes (OpenPGP only; other
    /// formats are kept as sent, for agents to check).
    verified: bool,
    /// The verifying OpenPGP key's fingerprint (kept after the key is removed).
    #[schema(value_type = Option<String>)]
    key_fingerprint: Option<&'a str>,
    /// The verifying key's primary user id at the time, or the identity in a Sigstore
    /// bundle's signing certificate.
    signer: Option<&'a str>,
    verified_at: Option<DateTime<Utc>>,
    /// A Sigstore bundle: the identity policy that allowed its signer (kept after the
    /// policy is removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    sigstore_identity: Option<i64>,
    /// A Sigstore bundle: the OIDC issuer in its certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    issuer: Option<&'a str>,
    /// A Sigstore bundle: when it was signed, as its log entry or timestamp attests.
    #[serde(skip_serializing_if = "Option::is_none")]
    signed_at: Option<DateTime<Utc>>,
}

impl<'a> From<&'a SignatureInfo> for SignatureView<'a> {
    fn from(s: &'a SignatureInfo) -> Self {
        let v = s.verified_by.as_ref();
        let sigstore = v.and_then(|v| match &v.by {
            VerifiedBy::Sigstore {
                identity,
                issuer,
                signed_at,
            } => Some((*identity, issuer.as_str(), *signed_at)),
            VerifiedBy::Key(_) => None,
        });
        Self {
            format: s.format,
            verified: v.is_some(),
            key_fingerprint: v.and_then(|v| v.key()).map(|k| k.as_str()),
            signer: v.map(|v| v.signer.as_str()),
            verified_at: v.map(|v| v.verified_at),
            sigstore_identity: sigstore.map(|(id, _, _)| id),
            issuer: sigstore.map(|(_, issuer, _)| issuer),
            signed_at: sigstore.map(|(_, _, at)| at),
        }
    }
}

impl<'a> From<&'a Package> for PackageView<'a> {
    fn from(p: &'a Package) -> Self {
        Self {
            id: p.id,
            name: p.name.as_str(),
            version: p.version.to_string(),
            platform: p.platform,
            arch: p.arch,
            file_size: p.file_size,
            checksum: p.checksum.as_str(),
            storage_path: p.storage_key.as_str(),
            filename: p.filename.as_str(),
            description: p.description.as_str(),
            is_active: p.is_active,
            signature: p.signature.as_ref().map(SignatureView::from),
            created_at: p.created_at,
            updated_at: p.updated_at,
            download_count: p.download_count,
            last_downloaded_at: p.last_downloaded_at,
            yanked_at: p.yanked_at,
        }
    }
}

/// Views of many packages, in order.
pub(crate) fn packages(items: &[Package]) -> Vec<PackageView<'_>> {
    items.iter().map(PackageView::from).collect()
}

/// One version of a package and its builds, for `GET /packages/{name}/versions`.
#[derive(Serialize, ToSchema)]
pub(crate) struct VersionEntry<'a> {
    #[schema(example = "1.4.2")]
    version: String,
    prerelease: bool,
    /// The builds of this version, one per platform and architecture.
    packages: Vec<PackageView<'a>>,
}

impl<'a> From<&'a VersionBuilds> for VersionEntry<'a> {
    fn from(v: &'a VersionBuilds) -> Self {
        Self {
            version: v.version.to_string(),
            prerelease: v.version.is_prerelease(),
            packages: packages(&v.packages),
        }
    }
}
