//! Direct uploads: a client sends a package's bytes straight to object storage through a
//! presigned `PUT`, then asks the registry to publish them.

use chrono::{DateTime, Utc};

use crate::{
    Checksum, Coordinates, Description, DetachedSignature, FileName, ObjectKey, ValidationError,
};

/// Declares an id made of 32 lowercase hexadecimal digits (a random UUID): nothing else
/// parses, so an id can name no path.
macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn new(random: [u8; 16]) -> Self {
                Self(random.iter().map(|b| format!("{b:02x}")).collect())
            }

            pub fn parse(s: &str) -> Result<Self, ValidationError> {
                if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(ValidationError::new(
                        "id",
                        "must be 32 lowercase hexadecimal digits",
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use random_id;

random_id!(
    /// The id of a direct upload.
    DirectUploadId
);

/// A direct upload granted and not yet completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectUpload {
    pub id: DirectUploadId,
    /// Who asked for it; only they (or an admin) complete it.
    pub user_id: Option<i64>,
    pub coordinates: Coordinates,
    pub size: u64,
    pub checksum: Checksum,
    pub filename: Option<FileName>,
    pub description: Description,
    /// The fresh object the presigned `PUT` writes.
    pub storage_key: ObjectKey,
    pub signature: Option<DetachedSignature>,
    /// After this the URL no longer works and the upload cannot be completed.
    pub expires_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_nothing_else() {
        let id = DirectUploadId::new([0xab; 16]);
        assert_eq!(id.as_str(), "ab".repeat(16));
        assert_eq!(DirectUploadId::parse(id.as_str()).unwrap(), id);
        assert!(DirectUploadId::parse("../../etc/passwd").is_err());
        assert!(DirectUploadId::parse(&"AB".repeat(16)).is_err());
    }
}
