//! What identifies one package file, and its spelling in a URL.

use std::fmt;

use crate::{Arch, PackageName, Platform, ValidationError, Version};

/// What identifies one package file: one name, version, platform and architecture.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Coordinates {
    pub name: PackageName,
    pub version: Version,
    pub platform: Platform,
    pub arch: Arch,
}

impl fmt::Display for Coordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}/{}",
            self.name.as_str(),
            self.version,
            self.platform,
            self.arch
        )
    }
}

impl Coordinates {
    /// `name/version/platform/arch`, as in the package's URL.
    pub fn to_path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.name.as_str(),
            self.version,
            self.platform,
            self.arch
        )
    }

    /// Reads `name/version/platform/arch`, each part validated as on upload.
    pub fn parse_path(path: &str) -> Result<Self, ValidationError> {
        let parts: Vec<&str> = path.split('/').collect();
        let [name, version, platform, arch] = parts[..] else {
            return Err(ValidationError::new(
                "coordinates",
                "expected name/version/platform/arch",
            ));
        };
        Ok(Self {
            name: PackageName::parse(name)?,
            version: Version::parse(version)?,
            platform: platform.parse()?,
            arch: arch.parse()?,
        })
    }
}
