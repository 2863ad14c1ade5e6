use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ValidationError;
use crate::closed_set::closed_set;

closed_set!(
    /// What a user may do. Each role includes the ones below it:
    /// `viewer` lists, reads and downloads; `publisher` also uploads and edits;
    /// `admin` also deletes and manages users.
    #[derive(PartialOrd, Ord)]
    Role, "role", {
        Viewer => "viewer",
        Publisher => "publisher",
        Admin => "admin",
    }
);

impl Role {
    /// Whether this role may do what `required` may do.
    pub fn includes(self, required: Role) -> bool {
        self >= required
    }
}

/// A login name: 1–64 characters of `[a-z0-9._-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let allowed =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-');
        if s.is_empty()
            || s.len() > 64
            || !s.bytes().all(allowed)
            || !s.as_bytes()[0].is_ascii_alphanumeric()
        {
            return Err(ValidationError::new(
                "username",
                "must be 1 to 64 characters of lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password, as chosen by a person: long enough to resist guessing, short enough to
/// hash cheaply. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 12;
    pub const MAX_BYTES: usize = 1024;

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.chars().count() < Self::MIN_CHARS || s.len() > Self::MAX_BYTES {
            return Err(ValidationError::new(
                "password",
                format!(
                    "must be at least {} characters (and at most {} bytes)",
                    Self::MIN_CHARS,
                    Self::MAX_BYTES
                ),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A user account as the API shows it (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_below() {
        assert!(Role::Admin.includes(Role::Publisher));
        assert!(Role::Publisher.includes(Role::Viewer));
        assert!(!Role::Viewer.includes(Role::Publisher));
        assert!(!Role::Publisher.includes(Role::Admin));
        assert_eq!("publisher".parse::<Role>().unwrap(), Role::Publisher);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn passwords_are_never_printed_and_must_be_long() {
        let p = Password::parse("correct horse battery").unwrap();
        assert!(!format!("{p:?}").contains("horse"));
        assert!(Password::parse("short").is_err());
    }

    #[test]
    fn usernames_are_checked() {
        assert!(Username::parse("ci-bot").is_ok());
        assert!(Username::parse("").is_err());
        assert!(Username::parse("Admin").is_err());
        assert!(Username::parse("a' OR 1=1 --").is_err());
    }
}
