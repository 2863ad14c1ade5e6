//! `[signing]` and `[signing.sigstore]`.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningSettings {
    /// Every upload needs a verified signature: OpenPGP by a trusted key
    /// (`POST /api/v1/keys`) or a Sigstore bundle by a trusted identity
    /// (`POST /api/v1/sigstore-identities`); without one it is refused with 422
    /// `signature_required`.
    pub required: bool,
    pub sigstore: SigstoreSettings,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigstoreSettings {
    /// A `trusted_root.json` (Sigstore's format) to verify bundles against, for sites
    /// with their own Sigstore instance or a pinned copy; without it, Sigstore's
    /// public-good root as compiled in. Read once at start; never fetched.
    pub trusted_root: Option<std::path::PathBuf>,
}

impl SigstoreSettings {
    /// The trust root bundles are verified against.
    pub fn trust(&self) -> Result<agentpkg_packagemgr::SigstoreTrust, String> {
        match &self.trusted_root {
            None => agentpkg_packagemgr::SigstoreTrust::public_good(),
            Some(path) => {
                let json = std::fs::read_to_string(path).map_err(|e| {
                    format!("signing.sigstore.trusted_root {}: {e}", path.display())
                })?;
                agentpkg_packagemgr::SigstoreTrust::from_json(
                    &json,
                    format!("signing.sigstore.trusted_root {}", path.display()),
                )
            }
        }
    }
}
