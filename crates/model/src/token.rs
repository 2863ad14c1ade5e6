//! API tokens: credentials for machines (pipelines, agents), scoped and optionally limited
//! to package names.

use chrono::{DateTime, Utc};

use crate::closed_set::closed_set;
use crate::{PackageName, Role, ValidationError};

closed_set!(
    /// What a token may do, at most: `read` as a viewer, `publish` as a publisher, `admin` as
    /// an admin. A token never does more than its owner's current role.
    TokenScope, "scope", {
        Read => "read",
        Publish => "publish",
        Admin => "admin",
    }
);

impl TokenScope {
    /// The role this scope acts as.
    pub fn role(self) -> Role {
        match self {
            Self::Read => Role::Viewer,
            Self::Publish => Role::Publisher,
            Self::Admin => Role::Admin,
        }
    }
}

/// A package name pattern: a name in which `*` stands for any run of characters
/// (`otelcol*`, `*-agent`, `*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamePattern(String);

impl NamePattern {
    /// Most `*` a pattern may hold. Matching is bounded whatever the pattern (see
    /// [`glob`]); a pattern is written by a person, and a dozen stars is a slip or an
    /// attack.
    pub const MAX_STARS: usize = 8;

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let pattern = Self::parse_stored(s)?;
        if pattern.0.bytes().filter(|&b| b == b'*').count() > Self::MAX_STARS {
            return Err(ValidationError::new(
                "packages",
                format!("a pattern holds at most {} '*'", Self::MAX_STARS),
            ));
        }
        Ok(pattern)
    }

    /// A pattern as stored, perhaps before the cap on stars existed: the same characters,
    /// any number of stars (matching stays bounded).
    pub fn parse_stored(s: &str) -> Result<Self, ValidationError> {
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

/// Whether `text` matches `pattern`, in which `*` is any run of bytes: two cursors, and on
/// a mismatch the last star swallows one more byte. Every step moves a cursor forward or
/// the last star's start one byte on, so the work is at most about
/// `pattern.len() × text.len()` comparisons (16 384 for names of 128 bytes) — never
/// exponential, as recursive backtracking was (`*a*a*a*a*a*a*a*a*a*a*b` against 120 `a`
/// ran for years).
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The last star's place in the pattern, and where in the text its match ends.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    p = sp + 1;
                    t = st + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Which names a credential may touch: every one, or those matching any pattern.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NameScope {
    #[default]
    All,
    Matching(Vec<NamePattern>),
}

impl NameScope {
    /// Most patterns one credential may name.
    pub const MAX_PATTERNS: usize = 32;

    /// The scope of a credential limited to `patterns`: at least one, at most
    /// [`Self::MAX_PATTERNS`], each with at most [`NamePattern::MAX_STARS`] stars.
    pub fn matching<S: AsRef<str>>(patterns: &[S]) -> Result<Self, ValidationError> {
        if patterns.is_empty() {
            return Err(ValidationError::new(
                "packages",
                "must name at least one pattern when present",
            ));
        }
        if patterns.len() > Self::MAX_PATTERNS {
            return Err(ValidationError::new(
                "packages",
                format!("at most {} patterns", Self::MAX_PATTERNS),
            ));
        }
        Ok(Self::Matching(
            patterns
                .iter()
                .map(|p| NamePattern::parse(p.as_ref()))
                .collect::<Result<_, _>>()?,
        ))
    }

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
    fn many_stars_against_a_long_name_answer_at_once() {
        // Recursive backtracking took exponential time on this pattern; one stored before
        // the cap may still hold that many stars.
        let p = NamePattern::parse_stored("*a*a*a*a*a*a*a*a*a*a*b").unwrap();
        let started = std::time::Instant::now();
        for _ in 0..100 {
            assert!(!p.matches(&name(&"a".repeat(128))));
            assert!(p.matches(&name(&format!("{}b", "a".repeat(127)))));
        }
        // Generous: a correct matcher takes microseconds, the old one years.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn patterns_and_scopes_are_capped() {
        assert!(NamePattern::parse("*a*a*a*a*a*a*a*a*a*a*b").is_err());
        assert!(NamePattern::parse("*a*b*c*d*e*f*g*").is_ok());
        assert!(NameScope::matching(&["a*"; 33]).is_err());
        assert!(NameScope::matching::<&str>(&[]).is_err());
        assert!(NameScope::matching(&["a*"; 32]).is_ok());
        assert!(NameScope::matching(&["**a**a**a**a**"]).is_err());
    }

    #[test]
    fn scopes_act_as_roles() {
        assert_eq!("read".parse::<TokenScope>().unwrap().role(), Role::Viewer);
        assert_eq!(TokenScope::Publish.role(), Role::Publisher);
        assert_eq!(TokenScope::Admin.role(), Role::Admin);
        assert!("write".parse::<TokenScope>().is_err());
    }
}
