//! Sigstore bundles, verified offline: the certificate chains to the trust root at the
//! time the bundle's transparency log entry or RFC 3161 timestamp attests, the log entry
//! and its inclusion proof check out, the signature covers the package's SHA-256, and an
//! identity policy for the name allows the certificate's issuer and identity.
//!
//! The cryptography is `sigstore-verify`'s (sigstore-rust); this module decides what is
//! trusted and says why not in words. Nothing here touches the network: the trust root is
//! the one compiled into `sigstore-trust-root` (Sigstore's public-good instance) or a
//! `trusted_root.json` the operator names.

use std::sync::Arc;

use agentpkg_model::{Checksum, PackageName, SigstoreIdentity};
use base64::Engine;
use chrono::{DateTime, Utc};
use sigstore_verify::trust_root::{SIGSTORE_PRODUCTION_TRUSTED_ROOT, TrustedRoot};
use sigstore_verify::types::{Artifact, Bundle, Sha256Hash, SignatureContent};
use sigstore_verify::{VerificationPolicy, Verifier};

/// The trust root bundles are verified against, prepared once.
#[derive(Clone)]
pub struct SigstoreTrust {
    verifier: Arc<Verifier>,
    source: String,
}

impl std::fmt::Debug for SigstoreTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigstoreTrust")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SigstoreTrust {
    /// Sigstore's public-good root as `sigstore-trust-root` ships it.
    pub fn public_good() -> Result<Self, String> {
        Self::from_json(
            SIGSTORE_PRODUCTION_TRUSTED_ROOT,
            "the Sigstore public-good trust root (embedded)",
        )
    }

    /// A `trusted_root.json` (Sigstore's trusted-root format); `source` says where it came
    /// from, for the log and error messages.
    pub fn from_json(json: &str, source: impl Into<String>) -> Result<Self, String> {
        let source = source.into();
        let root = TrustedRoot::from_json(json)
            .map_err(|e| format!("{source}: not a trusted root: {e}"))?;
        let verifier =
            Verifier::new(&root).map_err(|e| format!("{source}: unusable trusted root: {e}"))?;
        Ok(Self {
            verifier: Arc::new(verifier),
            source,
        })
    }

    /// Where the trust root came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Verifies `bundle` over the bytes whose SHA-256 is `checksum`, and finds a policy
    /// among `identities` that allows its signer to sign `name`.
    pub(crate) fn verify(
        &self,
        bundle: &Bundle,
        checksum: &Checksum,
        name: &PackageName,
        identities: &[SigstoreIdentity],
    ) -> Result<Signed, String> {
        let digest = Sha256Hash::from_hex(checksum.as_str())
            .map_err(|e| format!("the package's checksum: {e}"))?;
        // Whom to trust is decided below, against the policies; here everything else.
        let result = self
            .verifier
            .verify(
                Artifact::from_digest(digest),
                bundle,
                &VerificationPolicy::any_identity(),
            )
            .map_err(|e| format!("the Sigstore bundle does not verify: {e}"))?;
        let identity = result
            .identity()
            .map(|i| i.as_str().to_owned())
            .ok_or("the signing certificate names no identity")?;
        let issuer = result
            .issuer()
            .map(str::to_owned)
            .ok_or("the signing certificate names no OIDC issuer")?;
        let policy = identities
            .iter()
            .find(|p| p.allows(name, &issuer, &identity))
            .ok_or_else(|| untrusted(name, &issuer, &identity))?;
        let signed_at = result
            .verified_timestamps()
            .iter()
            .min()
            .and_then(|t| DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond() as u32))
            .ok_or("the bundle attests no signing time")?;
        Ok(Signed {
            identity,
            issuer,
            signed_at,
            policy: policy.id,
        })
    }
}

/// Who signed a verified bundle, and when.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub(crate) identity: String,
    pub(crate) issuer: String,
    pub(crate) signed_at: DateTime<Utc>,
    /// The identity policy that allowed it.
    pub(crate) policy: i64,
}

fn untrusted(name: &PackageName, issuer: &str, identity: &str) -> String {
    format!(
        "the bundle was signed by {identity} (issuer {issuer}), which no Sigstore identity \
         trusted for {name} allows"
    )
}

/// Parses a bundle's JSON (versions 0.1–0.3).
pub(crate) fn parse(bytes: &[u8]) -> Result<Bundle, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "a Sigstore bundle is JSON text")?;
    Bundle::from_json(text).map_err(|e| format!("not a Sigstore bundle: {e}"))
}

/// What can be told of a bundle's signer before the bytes: its certificate's issuer and
/// identity, checked against the policies for `name` (the full check follows the bytes).
pub(crate) fn precheck(
    bundle: &Bundle,
    name: &PackageName,
    identities: &[SigstoreIdentity],
) -> Result<(), String> {
    let Some(certificate) = bundle.signing_certificate() else {
        return Err("the bundle has no signing certificate (keyless signatures only)".into());
    };
    let info = sigstore_verify::crypto::parse_certificate_info(certificate)
        .map_err(|e| format!("the bundle's certificate: {e}"))?;
    let (Some(identity), Some(issuer)) = (info.identity, info.issuer) else {
        return Err("the signing certificate names no identity or no OIDC issuer".into());
    };
    if identities
        .iter()
        .any(|p| p.allows(name, &issuer, identity.as_str()))
    {
        Ok(())
    } else {
        Err(untrusted(name, &issuer, identity.as_str()))
    }
}

/// The form the OpenTelemetry Collector's supervisor reads from
/// `DownloadableFile.signature`: the signing certificate (PEM, base64) and the signature
/// (base64), one space between. Only a bundle with a plain message signature has one.
pub fn cosign_cert_sig(bundle_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let bundle = parse(bundle_bytes)?;
    let certificate = bundle
        .signing_certificate()
        .ok_or("the bundle has no signing certificate")?;
    let SignatureContent::MessageSignature(message) = &bundle.content else {
        return Err(
            "the bundle signs an attestation (DSSE), not the file: it has no cosign \
             certificate-and-signature form"
                .into(),
        );
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let mut out = engine.encode(certificate.to_pem()).into_bytes();
    out.push(b' ');
    out.extend_from_slice(message.signature.to_base64().as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use agentpkg_model::{IdentityPattern, KeyPatterns, NamePattern, OidcIssuer};
    use sha2::{Digest, Sha256};

    use super::*;

    const BEACON: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
    const GITHUB: &str = "https://token.actions.githubusercontent.com";

    fn vectors() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigstore-conformance")
    }

    fn policy(id: i64, patterns: &str, issuer: &str, identity: &str) -> SigstoreIdentity {
        SigstoreIdentity {
            id,
            patterns: KeyPatterns::new(vec![NamePattern::parse(patterns).unwrap()]).unwrap(),
            issuer: OidcIssuer::parse(issuer).unwrap(),
            san: IdentityPattern::parse(&format!("^{}$", regex::escape(identity))).unwrap(),
            added_by: None,
            created_at: Utc::now(),
        }
    }

    struct Case {
        name: String,
        trust: Result<SigstoreTrust, String>,
        bundle: Vec<u8>,
        checksum: Checksum,
        identity: String,
        issuer: String,
    }

    fn case(dir: &Path) -> Case {
        let read = |f: &str| std::fs::read(dir.join(f)).ok();
        let artifact =
            read("artifact").unwrap_or_else(|| std::fs::read(vectors().join("a.txt")).unwrap());
        let trust = match std::fs::read_to_string(dir.join("trusted_root.json")) {
            Ok(json) => SigstoreTrust::from_json(&json, "test root"),
            Err(_) => SigstoreTrust::public_good(),
        };
        let text = |f: &str, default: &str| {
            read(f).map_or(default.to_owned(), |b| {
                String::from_utf8(b).unwrap().trim().to_owned()
            })
        };
        Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            trust,
            bundle: read("bundle.sigstore.json").unwrap(),
            checksum: Checksum::parse(&hex::encode(Sha256::digest(&artifact))).unwrap(),
            identity: text("identity", BEACON),
            issuer: text("issuer", GITHUB),
        }
    }

    fn cases() -> Vec<Case> {
        let mut dirs: Vec<_> = std::fs::read_dir(vectors())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs.iter().map(|d| case(d)).collect()
    }

    fn check(c: &Case, identities: &[SigstoreIdentity]) -> Result<Signed, String> {
        let name = PackageName::parse("conformance").unwrap();
        let trust = c.trust.clone()?;
        let bundle = parse(&c.bundle)?;
        precheck(&bundle, &name, identities)?;
        trust.verify(&bundle, &c.checksum, &name, identities)
    }

    #[test]
    fn the_conformance_bundles_verify_or_are_refused_as_upstream_says() {
        let all = cases();
        assert!(
            all.len() >= 20,
            "the vectors are missing: {}",
            vectors().display()
        );
        for c in &all {
            let identities = [policy(7, "conf*", &c.issuer, &c.identity)];
            let result = check(c, &identities);
            if c.name.ends_with("_fail") {
                let why = result.expect_err(&c.name);
                assert!(!why.is_empty(), "{}: refused without a reason", c.name);
            } else {
                let signed = result.unwrap_or_else(|e| panic!("{}: {e}", c.name));
                assert_eq!(signed.identity, c.identity, "{}", c.name);
                assert_eq!(signed.issuer, c.issuer, "{}", c.name);
                assert_eq!(signed.policy, 7, "{}", c.name);
            }
        }
    }

    #[test]
    fn the_signing_time_is_the_bundles_not_the_clock() {
        // v0.1's Rekor entry was integrated on 2023-07-12; its certificate lived ten
        // minutes around then and has long expired, yet it verifies at that time.
        let c = case(&vectors().join("happy-path-v0.1"));
        let signed = check(&c, &[policy(1, "*", GITHUB, BEACON)]).unwrap();
        assert_eq!(
            signed.signed_at.format("%Y-%m-%d").to_string(),
            "2023-07-12"
        );
    }

    #[test]
    fn a_valid_bundle_by_an_untrusted_signer_is_refused_in_words() {
        let c = case(&vectors().join("happy-path-v0.3"));
        let other_identity = policy(
            1,
            "*",
            GITHUB,
            "https://github.com/acme/release.yml@refs/tags/v1",
        );
        let other_issuer = policy(2, "*", "https://accounts.google.com", BEACON);
        let other_names = policy(3, "otelcol*", GITHUB, BEACON);
        for (p, what) in [
            (other_identity, "identity"),
            (other_issuer, "issuer"),
            (other_names, "name"),
        ] {
            let why = check(&c, &[p]).expect_err(what);
            assert!(
                why.contains(BEACON) && why.contains("no Sigstore identity"),
                "{what}: {why}"
            );
        }
        // The same bundle over other bytes: refused whatever the policy says.
        let mut tampered = case(&vectors().join("happy-path-v0.3"));
        tampered.checksum = Checksum::parse(&hex::encode(Sha256::digest(b"other bytes"))).unwrap();
        let why = check(&tampered, &[policy(1, "*", GITHUB, BEACON)]).unwrap_err();
        assert!(why.contains("does not verify"), "{why}");
    }

    #[test]
    fn another_trust_root_refuses_the_public_good_bundles() {
        let mut c = case(&vectors().join("happy-path-v0.3"));
        let staging =
            std::fs::read_to_string(vectors().join("rekor2-happy-path/trusted_root.json")).unwrap();
        c.trust = SigstoreTrust::from_json(&staging, "staging");
        let why = check(&c, &[policy(1, "*", GITHUB, BEACON)]).unwrap_err();
        assert!(why.contains("does not verify"), "{why}");
        assert!(SigstoreTrust::from_json("{}", "empty").is_err());
    }

    #[test]
    fn the_supervisors_form_is_certificate_and_signature_in_base64() {
        let c = case(&vectors().join("happy-path-v0.3"));
        let form = String::from_utf8(cosign_cert_sig(&c.bundle).unwrap()).unwrap();
        let (cert, sig) = form.split_once(' ').unwrap();
        let engine = base64::engine::general_purpose::STANDARD;
        let pem = String::from_utf8(engine.decode(cert).unwrap()).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        let bundle: serde_json::Value = serde_json::from_slice(&c.bundle).unwrap();
        assert_eq!(
            sig,
            bundle["messageSignature"]["signature"].as_str().unwrap()
        );
        let dsse = case(&vectors().join("happy-path-intoto-in-dsse-v3"));
        assert!(cosign_cert_sig(&dsse.bundle).unwrap_err().contains("DSSE"));
    }
}
