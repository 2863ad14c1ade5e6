//! `[mirror]` and its `[[mirror.sources]]`: what to follow, where it is, whom to trust.

use agentpkg_model::{
    Arch, IdentityPattern, OidcIssuer, PackageName, Platform, ValidationError, VersionRequirement,
};
use serde::Deserialize;

/// The mirror's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorSettings {
    /// Seconds between runs on the replica holding the mirror's lease; 0: only
    /// `agentpkg-server mirror --once`.
    pub interval_secs: u64,
    /// An HTTP(S) proxy every download goes through (`http://proxy.example:3128`).
    pub proxy: Option<String>,
    /// Seconds a download may stall (no byte arriving) before it counts as interrupted.
    pub read_timeout_secs: u64,
    pub sources: Vec<SourceSettings>,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        Self {
            interval_secs: 3600,
            proxy: None,
            read_timeout_secs: 60,
            sources: Vec::new(),
        }
    }
}

/// One upstream release line. URL templates take `{version}` (without a `v`), `{os}` and
/// `{arch}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// The package name to publish under; also the source's name in the status.
    pub name: String,
    /// A release's JSON listing: GitHub's releases API (`[{"tag_name": "v0.158.0"}, …]`)
    /// or the same shape from elsewhere. Tags may carry a leading `v`.
    pub releases_url: String,
    /// The asset: `…/download/v{version}/otelcol-contrib_{version}_{os}_{arch}.tar.gz`.
    pub asset_url: String,
    /// Its Sigstore bundle (default: the asset's URL + `.sigstore.json`).
    pub bundle_url: Option<String>,
    /// The release's checksums file (`<sha256>  <file name>` per line).
    pub checksums_url: String,
    /// Versions to follow (a SemVer requirement, `>=0.158.0`); default: all.
    pub versions: Option<String>,
    /// Only the newest N of those; default: all.
    pub newest: Option<usize>,
    /// `os/arch` pairs as the registry names them (`linux/amd64`, `windows/arm64`).
    pub platforms: Vec<String>,
    /// The OIDC issuer the bundles' certificates must name.
    pub issuer: String,
    /// An anchored regular expression the certificates' identity must match.
    pub san_regex: String,
}

/// A source, checked.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: PackageName,
    pub releases_url: String,
    pub asset_url: String,
    pub bundle_url: String,
    pub checksums_url: String,
    pub versions: Option<VersionRequirement>,
    pub newest: Option<usize>,
    pub platforms: Vec<(Platform, Arch)>,
    pub issuer: OidcIssuer,
    pub san: IdentityPattern,
}

impl SourceSettings {
    /// Checks the source; the error names the setting.
    pub fn check(&self) -> Result<Source, ValidationError> {
        let url = |field: &'static str, value: &str| {
            if value.starts_with("https://") || value.starts_with("http://") {
                Ok(value.to_owned())
            } else {
                Err(ValidationError::new(field, "must be an http(s):// URL"))
            }
        };
        let platforms = self
            .platforms
            .iter()
            .map(|p| {
                let (os, arch) = p.split_once('/').ok_or_else(|| {
                    ValidationError::new("platforms", format!("{p}: write os/arch (linux/amd64)"))
                })?;
                Ok((os.parse()?, arch.parse()?))
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        if platforms.is_empty() {
            return Err(ValidationError::new(
                "platforms",
                "name at least one os/arch",
            ));
        }
        if self.newest == Some(0) {
            return Err(ValidationError::new("newest", "must be at least 1"));
        }
        let asset_url = url("asset_url", &self.asset_url)?;
        Ok(Source {
            name: PackageName::parse(&self.name)?,
            releases_url: url("releases_url", &self.releases_url)?,
            bundle_url: match &self.bundle_url {
                Some(u) => url("bundle_url", u)?,
                None => format!("{asset_url}.sigstore.json"),
            },
            asset_url,
            checksums_url: url("checksums_url", &self.checksums_url)?,
            versions: self
                .versions
                .as_deref()
                .map(VersionRequirement::parse)
                .transpose()?,
            newest: self.newest,
            platforms,
            issuer: OidcIssuer::parse(&self.issuer)?,
            san: IdentityPattern::parse(&self.san_regex)?,
        })
    }
}

/// A URL template filled in.
pub(crate) fn fill(template: &str, version: &str, platform: Platform, arch: Arch) -> String {
    template
        .replace("{version}", version)
        .replace("{os}", platform.as_str())
        .replace("{arch}", arch.as_str())
}
