//! Sigstore identity policies: which keyless signers (a certificate identity from an OIDC
//! issuer) the registry trusts to sign which package names.
//!
//! A Sigstore bundle carries a short-lived Fulcio certificate whose subject alternative
//! name is the signer's identity (a workflow URL, an email address) and whose issuer
//! extension names the OIDC provider that vouched for it. The bundle's cryptography is
//! checked against a trust root; whom to trust is this policy: an issuer, exactly, and a
//! regular expression the whole identity must match, for the names the patterns cover.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::{KeyPatterns, PackageName, ValidationError};

/// Longest issuer URL and identity pattern accepted, in bytes.
pub const MAX_POLICY_TEXT: usize = 1024;

/// An OIDC issuer, compared exactly with the one in the signing certificate: an
/// `https://` URL (`http://` is refused: no public issuer uses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIssuer(String);

impl OidcIssuer {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let invalid = |why: &str| ValidationError::new("issuer", why.to_owned());
        if s.len() > MAX_POLICY_TEXT {
            return Err(invalid("is too long"));
        }
        let Some(rest) = s.strip_prefix("https://") else {
            return Err(invalid(
                "must be the issuer's https:// URL, as in the certificate \
                 (https://token.actions.githubusercontent.com for GitHub Actions)",
            ));
        };
        if rest.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("must be a URL without spaces"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OidcIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A regular expression over the certificate's identity, anchored at both ends (`^…$`)
/// so that it says which identities it accepts rather than which it contains: an
/// unanchored `github.com/acme/` would also accept `github.com/evil/github.com/acme/`.
#[derive(Debug, Clone)]
pub struct IdentityPattern {
    source: String,
    compiled: regex::Regex,
}

impl IdentityPattern {
    /// Compiled size limit: a pattern is a policy, not a program.
    const SIZE_LIMIT: usize = 256 * 1024;

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let invalid = |why: String| ValidationError::new("san_regex", why);
        if s.len() > MAX_POLICY_TEXT {
            return Err(invalid(format!("is longer than {MAX_POLICY_TEXT} bytes")));
        }
        if !s.starts_with('^') || !s.ends_with('$') || s.ends_with("\\$") {
            return Err(invalid(
                "must be anchored: start with ^ and end with $, so that it matches whole \
                 identities (escape dots as \\.)"
                    .into(),
            ));
        }
        let compiled = regex::RegexBuilder::new(s)
            .size_limit(Self::SIZE_LIMIT)
            .build()
            .map_err(|e| invalid(format!("is not a valid regular expression: {e}")))?;
        Ok(Self {
            source: s.to_owned(),
            compiled,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, identity: &str) -> bool {
        self.compiled.is_match(identity)
    }
}

impl PartialEq for IdentityPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for IdentityPattern {}

/// A keyless signer the registry trusts for the names its patterns match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigstoreIdentity {
    pub id: i64,
    pub patterns: KeyPatterns,
    pub issuer: OidcIssuer,
    pub san: IdentityPattern,
    /// The admin who added it.
    pub added_by: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl SigstoreIdentity {
    /// Whether a certificate from `issuer` for `identity` may sign `name` under this policy.
    pub fn allows(&self, name: &PackageName, issuer: &str, identity: &str) -> bool {
        self.patterns.allows(name) && self.issuer.as_str() == issuer && self.san.matches(identity)
    }
}

/// A policy to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSigstoreIdentity {
    pub patterns: KeyPatterns,
    pub issuer: OidcIssuer,
    pub san: IdentityPattern,
    pub added_by: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NamePattern;

    const RELEASES: &str = "^https://github\\.com/open-telemetry/opentelemetry-collector-releases/\\.github/workflows/base-release\\.yaml@refs/tags/v[^/]*$";

    #[test]
    fn issuers_are_https_urls() {
        assert!(OidcIssuer::parse("https://token.actions.githubusercontent.com").is_ok());
        assert!(OidcIssuer::parse("http://token.actions.githubusercontent.com").is_err());
        assert!(OidcIssuer::parse("https://").is_err());
        assert!(OidcIssuer::parse("https://a b").is_err());
        assert!(OidcIssuer::parse("accounts.google.com").is_err());
    }

    #[test]
    fn identity_patterns_are_anchored_and_match_whole_identities() {
        let p = IdentityPattern::parse(RELEASES).unwrap();
        assert!(p.matches("https://github.com/open-telemetry/opentelemetry-collector-releases/.github/workflows/base-release.yaml@refs/tags/v0.158.0"));
        assert!(!p.matches("https://github.com/open-telemetry/opentelemetry-collector-releases/.github/workflows/base-release.yaml@refs/heads/main"));
        assert!(!p.matches("https://github.com/evil/x/https://github.com/open-telemetry/opentelemetry-collector-releases/.github/workflows/base-release.yaml@refs/tags/v1"));
        for unanchored in ["github\\.com/acme/.*$", "^github\\.com/acme/", "^a\\$", "x"] {
            let e = IdentityPattern::parse(unanchored).unwrap_err();
            assert_eq!(e.field, "san_regex", "{unanchored}");
        }
        assert!(IdentityPattern::parse("^(unclosed$").is_err());
        assert!(IdentityPattern::parse(&format!("^{}$", "a".repeat(MAX_POLICY_TEXT))).is_err());
    }

    #[test]
    fn a_policy_needs_name_issuer_and_identity_to_agree() {
        let policy = SigstoreIdentity {
            id: 1,
            patterns: KeyPatterns::new(vec![NamePattern::parse("otelcol*").unwrap()]).unwrap(),
            issuer: OidcIssuer::parse("https://token.actions.githubusercontent.com").unwrap(),
            san: IdentityPattern::parse("^https://github\\.com/acme/.*$").unwrap(),
            added_by: None,
            created_at: Utc::now(),
        };
        let name = PackageName::parse("otelcol-contrib").unwrap();
        let issuer = "https://token.actions.githubusercontent.com";
        let who = "https://github.com/acme/release.yml@refs/tags/v1";
        assert!(policy.allows(&name, issuer, who));
        assert!(!policy.allows(&PackageName::parse("vector").unwrap(), issuer, who));
        assert!(!policy.allows(&name, "https://accounts.google.com", who));
        assert!(!policy.allows(&name, issuer, "https://github.com/evil/release.yml"));
    }
}
