//! API tokens: credentials for machines (pipelines, agents), scoped and optionally limited
//! to package names.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{PackageName, Role, ValidationError};

/// What a token may do, at most: `read` as a viewer, `publish` as a publisher, `admin` as
/// an admin. A token never does more than its owner's current role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    Read,
    Publish,
    Admin,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Publish => "publish",
            Self::Admin => "admin",
        }
    }

    /// The role this scope acts as.
    pub fn role(self) -> Role {
        match self {
            Self::Read => Role::Viewer,
            Self::Publish => Role::Publisher,
            Self::Admin => Role::Admin,
        }
    }
}

impl FromStr for TokenScope {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Self::Read),
            "publish" => Ok(Self::Publish),
            "admin" => Ok(Self::Admin),
            _ => Err(ValidationError::new(
                "scope",
                "must be one of: read, publish, admin",
            )),
        }
    }
}

impl fmt::Display for TokenScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A package name pattern: a name in which `*` stands for any run of characters
/// (`otelcol*`, `*-agent`, `*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamePattern(String);

impl NamePattern {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let allowed = |b: u8| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'*')
        };
        if s.is_empty() || s.len() > PackageName::MAX_LEN || !s.bytes().all(allowed) {
            return Err(ValidationError::new(
                "packages",
                "each pattern is 1 to 128 characters of lowercase letters, digits, '.', '_', '-' and '*'",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches: `*` matches any run of characters, everything else itself.
    pub fn matches(&self, name: &PackageName) -> bool {
        glob(self.0.as_bytes(), name.as_str().as_bytes())
    }
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// Which names a credential may touch: every one, or those matching any pattern.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NameScope {
    #[default]
    All,
    Matching(Vec<NamePattern>),
}

impl NameScope {
    pub fn allows(&self, name: &PackageName) -> bool {
        match self {
            Self::All => true,
            Self::Matching(patterns) => patterns.iter().any(|p| p.matches(name)),
        }
    }
}

/// An API token as stored and listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub scope: TokenScope,
    pub packages: NameScope,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> PackageName {
        PackageName::parse(s).unwrap()
    }

    #[test]
    fn patterns_match_like_globs() {
        let p = |s: &str| NamePattern::parse(s).unwrap();
        assert!(p("otelcol*").matches(&name("otelcol")));
        assert!(p("otelcol*").matches(&name("otelcol-contrib")));
        assert!(!p("otelcol*").matches(&name("my-otelcol")));
        assert!(p("*-agent").matches(&name("opamp-agent")));
        assert!(p("*").matches(&name("anything")));
        assert!(p("a*b*c").matches(&name("a-x-b-y-c")));
        assert!(!p("a*b*c").matches(&name("a-x-c")));
        assert!(p("exact").matches(&name("exact")));
        assert!(!p("exact").matches(&name("exact2")));
        for bad in ["", "Upper*", "a/b", "%", &"a".repeat(129)] {
            assert!(NamePattern::parse(bad).is_err(), "{bad:?}");
        }
        let scope = NameScope::Matching(vec![p("a*"), p("b")]);
        assert!(scope.allows(&name("abc")) && scope.allows(&name("b")));
        assert!(!scope.allows(&name("c")));
        assert!(NameScope::All.allows(&name("c")));
    }

    #[test]
    fn scopes_act_as_roles() {
        assert_eq!("read".parse::<TokenScope>().unwrap().role(), Role::Viewer);
        assert_eq!(TokenScope::Publish.role(), Role::Publisher);
        assert_eq!(TokenScope::Admin.role(), Role::Admin);
        assert!("write".parse::<TokenScope>().is_err());
    }
}
