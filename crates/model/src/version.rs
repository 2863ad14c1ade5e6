use std::cmp::Ordering;
use std::fmt;

use crate::ValidationError;

/// A SemVer 2.0 version, as the client wrote it (build metadata included).
///
/// Precedence follows SemVer: build metadata is ignored, so `1.0.0+a` and `1.0.0+b` are
/// the same version. [`Version::sort_key`] turns precedence into a string whose byte order
/// is SemVer order, so the database can sort and index it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(semver::Version);

impl Version {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "version",
                format!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        semver::Version::parse(s).map(Self).map_err(|e| {
            ValidationError::new(
                "version",
                format!("{s:?} is not a SemVer 2.0 version such as 1.4.2 or 2.0.0-rc.1 ({e})"),
            )
        })
    }

    pub fn as_semver(&self) -> &semver::Version {
        &self.0
    }

    pub fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }

    /// SemVer precedence (build metadata ignored).
    pub fn precedence(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.0, &other.0);
        (a.major, a.minor, a.patch, &a.pre).cmp(&(b.major, b.minor, b.patch, &b.pre))
    }

    /// A string whose byte-wise (C collation) order is SemVer precedence.
    ///
    /// `MAJOR.MINOR.PATCH` are zero-padded to 20 digits (u64 max); a release ends in `~`,
    /// which sorts above the `-` that starts a pre-release. Each pre-release identifier is
    /// `0` + three-digit length + digits when numeric (numeric < alphanumeric, shorter number
    /// < longer) or `1` + text when alphanumeric; identifiers are joined by a space, which
    /// sorts below every character an identifier may hold, so a shorter list of otherwise
    /// equal identifiers sorts first.
    pub fn sort_key(&self) -> String {
        let v = &self.0;
        let mut key = format!("{:020}.{:020}.{:020}", v.major, v.minor, v.patch);
        if v.pre.is_empty() {
            key.push('~');
            return key;
        }
        key.push('-');
        for (i, ident) in v.pre.as_str().split('.').enumerate() {
            if i > 0 {
                key.push(' ');
            }
            if ident.bytes().all(|b| b.is_ascii_digit()) {
                key.push_str(&format!("0{:03}{}", ident.len(), ident));
            } else {
                key.push('1');
                key.push_str(ident);
            }
        }
        key
    }
}

/// A SemVer requirement such as `^1.4`, `>=1.2, <2` or `=1.0.0`, as Cargo reads them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionRequirement(semver::VersionReq);

impl VersionRequirement {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.len() > Version::MAX_LEN {
            return Err(ValidationError::new("version", "requirement is too long"));
        }
        semver::VersionReq::parse(s).map(Self).map_err(|e| {
            ValidationError::new(
                "version",
                format!("{s:?} is not a SemVer requirement such as ^1.4 or >=1.2, <2 ({e})"),
            )
        })
    }

    /// Whether `version` satisfies the requirement. SemVer requirements never match a
    /// pre-release of another `MAJOR.MINOR.PATCH`; with `include_prerelease`, a pre-release
    /// also matches when its release would.
    pub fn matches(&self, version: &Version, include_prerelease: bool) -> bool {
        let v = &version.0;
        if self.0.matches(v) {
            return true;
        }
        if include_prerelease && !v.pre.is_empty() {
            let release = semver::Version::new(v.major, v.minor, v.patch);
            return self.0.matches(&release);
        }
        false
    }
}

impl fmt::Display for VersionRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn accepts_semver_and_refuses_the_rest() {
        for ok in [
            "1.0.0",
            "0.0.1",
            "2.1.0-rc.1+build.7",
            "10.20.30-alpha-beta.1",
        ] {
            assert!(Version::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "1", "1.0", "v1.0.0", "1.0.0.0", "01.0.0", "1.0.0-", "1.0.0-01", " 1.0.0", "latest",
        ] {
            let err = Version::parse(bad).unwrap_err();
            assert_eq!(err.field, "version", "{bad}");
        }
        assert!(Version::parse(&format!("1.0.0-{}", "a".repeat(200))).is_err());
    }

    #[test]
    fn sort_key_order_is_semver_precedence() {
        // The SemVer 2.0 specification's own example, plus the cases people get wrong.
        let ordered = [
            "0.9.0",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.2.0",
            "1.9.0",
            "1.10.0-a-b",
            "1.10.0-a-b.c",
            "1.10.0",
            "2.0.0",
            "18446744073709551615.0.0",
        ];
        let versions: Vec<Version> = ordered.iter().map(|s| v(s)).collect();
        for (i, a) in versions.iter().enumerate() {
            for (j, b) in versions.iter().enumerate() {
                assert_eq!(a.precedence(b), i.cmp(&j), "{a} vs {b}");
                assert_eq!(
                    a.sort_key().cmp(&b.sort_key()),
                    i.cmp(&j),
                    "{a} vs {b} by key"
                );
            }
        }
    }

    #[test]
    fn build_metadata_does_not_change_precedence() {
        assert_eq!(v("1.0.0+a").sort_key(), v("1.0.0+b").sort_key());
        assert_eq!(v("1.0.0+a").precedence(&v("1.0.0")), Ordering::Equal);
        assert_eq!(v("1.0.0+a").to_string(), "1.0.0+a");
    }

    #[test]
    fn requirements_match_like_cargo_and_take_prereleases_only_when_asked() {
        let req = VersionRequirement::parse("^1.4").unwrap();
        assert!(req.matches(&v("1.4.0"), false));
        assert!(req.matches(&v("1.10.2"), false));
        assert!(!req.matches(&v("2.0.0"), false));
        assert!(!req.matches(&v("1.3.9"), false));
        assert!(!req.matches(&v("1.5.0-rc.1"), false));
        assert!(req.matches(&v("1.5.0-rc.1"), true));
        assert!(!req.matches(&v("2.0.0-rc.1"), true));
        assert!(
            VersionRequirement::parse(">=1.2, <2")
                .unwrap()
                .matches(&v("1.9.9"), false)
        );
        assert!(VersionRequirement::parse("not a req").is_err());
    }

    #[test]
    fn prerelease_is_reported() {
        assert!(v("1.0.0-rc.1").is_prerelease());
        assert!(!v("1.0.0+build").is_prerelease());
    }
}
