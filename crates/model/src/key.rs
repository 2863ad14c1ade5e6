use std::fmt;

use crate::ValidationError;

/// The one place that decides where a package's bytes live in object storage.
///
/// Keys are opaque (`packages/<uuid>`): they never contain client input, so no name,
/// version or filename can steer a write outside its place, and the bytes can be
/// stored before the metadata fields of a multipart form have been read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

const PACKAGE_PREFIX: &str = "packages/";

impl ObjectKey {
    /// What every package key starts with: a listing under it sees only agentpkg's objects.
    pub const PREFIX: &'static str = PACKAGE_PREFIX;

    /// A key for a new package object, named by a fresh random id.
    pub fn for_new_package(id: [u8; 16]) -> Self {
        let mut s = String::with_capacity(PACKAGE_PREFIX.len() + 32);
        s.push_str(PACKAGE_PREFIX);
        for b in id {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s)
    }

    /// Re-reads a key stored earlier (in a database row). Anything that this crate did
    /// not produce is refused, so a tampered row cannot name an arbitrary path.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok = s.strip_prefix(PACKAGE_PREFIX).is_some_and(|id| {
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "storage_path",
                "not an object key made by agentpkg",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's path segments, for backends that map keys onto directories.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_round_trips_through_parse() {
        let key = ObjectKey::for_new_package([0xab; 16]);
        assert_eq!(key.as_str(), format!("packages/{}", "ab".repeat(16)));
        assert_eq!(ObjectKey::parse(key.as_str()).unwrap(), key);
    }

    #[test]
    fn parse_refuses_anything_that_could_escape() {
        for bad in [
            "",
            "packages/",
            "packages/../../etc/passwd",
            "/etc/passwd",
            "packages/ABABABABABABABABABABABABABABABAB",
            "other/abababababababababababababababab",
            "packages/abababababababababababababababab/x",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
