use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::closed_set::closed_set;
use crate::{Coordinates, ObjectKey, ValidationError, Version};

/// A package name: 1–128 characters of `[a-z0-9._-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackageName(String);

impl PackageName {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let field = "name";
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                field,
                format!("must be 1 to {} characters long", Self::MAX_LEN),
            ));
        }
        let allowed =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-');
        if !s.bytes().all(allowed) {
            return Err(ValidationError::new(
                field,
                "may only contain lowercase letters, digits, '.', '_' and '-'",
            ));
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(ValidationError::new(
                field,
                "must start with a letter or a digit",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

closed_set!(
    /// The operating system a package is built for.
    Platform, "platform", { Linux => "linux", Windows => "windows", Darwin => "darwin" }
);
closed_set!(
    /// The CPU architecture a package is built for.
    Arch, "arch", { Amd64 => "amd64", Arm64 => "arm64", I386 => "386" }
);

/// A SHA-256 digest as 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Checksum(String);

impl TryFrom<String> for Checksum {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Checksum> for String {
    fn from(c: Checksum) -> Self {
        c.0
    }
}

impl Checksum {
    /// Accepts upper- or lowercase hex (as `sha256sum` and other tools print) and keeps it
    /// lowercase.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(ValidationError::new(
                "sha256",
                "must be a SHA-256 digest: 64 hexadecimal characters",
            ))
        }
    }

    pub fn from_digest(digest: &[u8; 32]) -> Self {
        let mut s = String::with_capacity(64);
        for b in digest {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s)
    }

    /// The first 12 characters, enough to tell builds apart in a listing.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32 bytes of the digest.
    pub fn digest(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            // NOTE: `parse` and `from_digest` only ever keep 64 hexadecimal digits.
            *byte = u8::from_str_radix(&self.0[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        out
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Free text describing a package: at most 4096 characters, no control characters other
/// than tab and line breaks (PostgreSQL cannot store NUL in text at all).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 4096;

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "description",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if s.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(ValidationError::new(
                "description",
                "must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of the uploaded file, used for `Content-Disposition` on download: a plain
/// name, never a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName(String);

impl FileName {
    pub const MAX_BYTES: usize = 255;

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let field = "filename";
        if s.is_empty() || s.len() > Self::MAX_BYTES {
            return Err(ValidationError::new(
                field,
                format!("must be 1 to {} bytes long", Self::MAX_BYTES),
            ));
        }
        if s == "."
            || s.contains(['/', '\\'])
            || s.contains("..")
            || s.chars().any(char::is_control)
        {
            return Err(ValidationError::new(
                field,
                "must be a plain file name: not '.', and no '/', '\\', '..' or control characters",
            ));
        }
        if s.chars().any(is_invisible_format) {
            return Err(ValidationError::new(
                field,
                "must not contain invisible or direction-changing characters (U+200B-U+200F, \
                 U+202A-U+202E, U+2066-U+2069 and the like), which make a name read as another",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The value of a `Content-Disposition: attachment` header naming this file
    /// (RFC 6266): a quoted ASCII `filename`, in which any other character reads `_`, and
    /// when the name is not plain ASCII, the real name as `filename*` in percent-encoded
    /// UTF-8 (RFC 8187), which clients prefer.
    pub fn content_disposition(&self) -> String {
        let plain = |c: char| c.is_ascii() && c != '"' && c != '%';
        let fallback: String = self
            .0
            .chars()
            .map(|c| if plain(c) { c } else { '_' })
            .collect();
        if self.0.chars().all(plain) {
            return format!("attachment; filename=\"{fallback}\"");
        }
        let mut encoded = String::with_capacity(self.0.len() * 3);
        for b in self.0.bytes() {
            // RFC 8187 attr-char; everything else is percent-encoded.
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                encoded.push(char::from(b));
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters that change how text around them reads without showing themselves:
/// zero-width characters and marks, bidirectional embeddings, overrides and isolates, the
/// byte-order mark. In a file name they make `exe.gpj` read as `gpj.exe`.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{061C}'
            | '\u{FEFF}'
    )
}

/// Everything needed to record a package whose bytes are already stored.
#[derive(Debug, Clone)]
pub struct NewPackage {
    pub coordinates: Coordinates,
    pub filename: FileName,
    pub description: Description,
    pub file_size: u64,
    pub checksum: Checksum,
    pub storage_key: ObjectKey,
    /// Who publishes it, for package ownership; `None` where there are no users (a service
    /// embedding the package manager without accounts).
    pub publisher: Option<Actor>,
    /// Recorded in the same transaction as the package.
    pub signature: Option<crate::NewSignature>,
    /// Whether these bytes may be published although another version of the same name
    /// already has them (an admin's explicit choice). Otherwise the store refuses: a
    /// detached signature covers bytes, not a version, so last year's signed build must
    /// not become this year's `latest` by a new name tag.
    pub republish: bool,
}

/// A user acting on packages: their id, whether they are an admin (who may act on any
/// name), and the names their credential may touch (a token's patterns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: i64,
    pub admin: bool,
    pub names: crate::NameScope,
}

/// A change to a stored package: yank or restore it, or edit its description.
#[derive(Debug, Clone, Default)]
pub struct PackagePatch {
    pub is_active: Option<bool>,
    pub description: Option<Description>,
}

impl PackagePatch {
    pub fn is_empty(&self) -> bool {
        self.is_active.is_none() && self.description.is_none()
    }
}

/// A stored package: its row's values, each of its validated type. The API shows it through
/// a view of its own; this type knows nothing of JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub id: i64,
    pub name: PackageName,
    /// As uploaded (build metadata included).
    pub version: Version,
    pub platform: Platform,
    pub arch: Arch,
    /// Size in bytes.
    pub file_size: u64,
    pub checksum: Checksum,
    /// The object holding the bytes, inside the registry's bucket or directory.
    pub storage_key: ObjectKey,
    /// File name given to downloads (`Content-Disposition`).
    pub filename: FileName,
    pub description: Description,
    /// `false` once yanked: hidden from lists and `latest`, still downloadable by id or
    /// exact version.
    pub is_active: bool,
    /// Its detached signature, when one was attached (the bytes are fetched apart).
    pub signature: Option<crate::SignatureInfo>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Downloads counted so far (see the counting definition in the README); counts reach
    /// the database in batches, so this trails the latest downloads by up to a flush
    /// interval.
    pub download_count: u64,
    pub last_downloaded_at: Option<DateTime<Utc>>,
    /// When it was yanked, while it is.
    pub yanked_at: Option<DateTime<Utc>>,
}

impl Package {
    pub fn coordinates(&self) -> Coordinates {
        Coordinates {
            name: self.name.clone(),
            version: self.version.clone(),
            platform: self.platform,
            arch: self.arch,
        }
    }
}

/// One version of a package and its builds (one per platform and architecture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionBuilds {
    /// The version as the first of its builds was uploaded.
    pub version: Version,
    pub packages: Vec<Package>,
}

impl VersionBuilds {
    /// Groups packages sorted newest version first into one entry per version (by SemVer
    /// precedence, so `1.0.0+a` and `1.0.0+b` are one version).
    pub fn group(packages: Vec<Package>) -> Vec<VersionBuilds> {
        let mut entries: Vec<VersionBuilds> = Vec::new();
        for package in packages {
            match entries.last_mut() {
                Some(entry) if entry.version.precedence(&package.version).is_eq() => {
                    entry.packages.push(package);
                }
                _ => entries.push(VersionBuilds {
                    version: package.version.clone(),
                    packages: vec![package],
                }),
            }
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_alphabet() {
        for ok in [
            "opamp-agent",
            "a",
            "0day",
            "otel.collector_contrib",
            &"a".repeat(128),
        ] {
            assert!(PackageName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "Agent",
            "a/b",
            "../x",
            "a b",
            "a\0",
            "é",
            &"a".repeat(129),
        ] {
            assert_eq!(
                PackageName::parse(bad).unwrap_err().field,
                "name",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn platform_and_arch_are_closed_sets() {
        assert_eq!("linux".parse::<Platform>().unwrap(), Platform::Linux);
        assert_eq!("386".parse::<Arch>().unwrap(), Arch::I386);
        assert!("Linux".parse::<Platform>().is_err());
        assert!("x86_64".parse::<Arch>().is_err());
        assert_eq!(serde_json::to_string(&Arch::I386).unwrap(), "\"386\"");
        for p in Platform::ALL {
            assert_eq!(p.as_str().parse::<Platform>().unwrap(), *p);
        }
        for a in Arch::ALL {
            assert_eq!(a.as_str().parse::<Arch>().unwrap(), *a);
        }
    }

    #[test]
    fn checksums_are_64_hex_and_kept_lowercase() {
        let upper = "8DADF5F05F3F3774A9794A12EC91BD2CEA544C2150E51EEB3546602CC9A9A43C";
        assert_eq!(
            Checksum::parse(upper).unwrap().as_str(),
            upper.to_ascii_lowercase()
        );
        assert!(Checksum::parse(&upper[1..]).is_err());
        assert!(Checksum::parse(&format!("{}g", &upper[1..])).is_err());
        assert_eq!(Checksum::from_digest(&[0xab; 32]).as_str(), "ab".repeat(32));
    }

    #[test]
    fn checksums_round_trip_through_their_bytes() {
        let digest: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        let sum = Checksum::from_digest(&digest);
        assert_eq!(sum.digest(), digest);
        assert_eq!(
            Checksum::parse(&sum.as_str().to_uppercase())
                .unwrap()
                .digest(),
            digest
        );
    }

    #[test]
    fn descriptions_are_bounded_and_printable() {
        assert!(Description::parse("line one\nline two\tend").is_ok());
        assert!(Description::parse(&"é".repeat(4096)).is_ok());
        assert!(Description::parse(&"a".repeat(4097)).is_err());
        assert!(Description::parse("nul\0inside").is_err());
    }

    fn package(id: i64, version: &str, arch: Arch) -> Package {
        Package {
            id,
            name: PackageName::parse("agent").unwrap(),
            version: Version::parse(version).unwrap(),
            platform: Platform::Linux,
            arch,
            file_size: 1,
            checksum: Checksum::from_digest(&[0; 32]),
            storage_key: ObjectKey::for_new_package([0; 16]),
            filename: FileName::parse("agent").unwrap(),
            description: Description::default(),
            is_active: true,
            signature: None,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
            download_count: 0,
            last_downloaded_at: None,
            yanked_at: None,
        }
    }

    #[test]
    fn builds_are_grouped_by_version_precedence_in_order() {
        let grouped = VersionBuilds::group(vec![
            package(1, "2.0.0", Arch::Amd64),
            package(2, "2.0.0", Arch::Arm64),
            package(3, "1.0.0+a", Arch::Amd64),
            package(4, "1.0.0+b", Arch::Arm64),
            package(5, "1.0.0-rc.1", Arch::Amd64),
        ]);
        let shape: Vec<(String, Vec<i64>)> = grouped
            .iter()
            .map(|v| {
                (
                    v.version.to_string(),
                    v.packages.iter().map(|p| p.id).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("2.0.0".to_owned(), vec![1, 2]),
                ("1.0.0+a".to_owned(), vec![3, 4]),
                ("1.0.0-rc.1".to_owned(), vec![5]),
            ]
        );
        assert!(VersionBuilds::group(Vec::new()).is_empty());
    }

    #[test]
    fn filenames_that_read_as_another_are_refused() {
        for bad in [
            "inv\u{202E}gpj.exe",
            "a\u{200B}b",
            "x\u{2066}y\u{2069}",
            "\u{FEFF}agent",
            "a\u{200F}.tgz",
        ] {
            assert_eq!(
                FileName::parse(bad).unwrap_err().field,
                "filename",
                "{bad:?}"
            );
        }
        assert!(FileName::parse("агент.tgz").is_ok());
    }

    #[test]
    fn content_disposition_names_the_file_in_ascii_and_in_utf8() {
        let name = |s: &str| FileName::parse(s).unwrap().content_disposition();
        assert_eq!(
            name("agent-1.0.tgz"),
            "attachment; filename=\"agent-1.0.tgz\""
        );
        assert_eq!(
            name("агент.tgz"),
            "attachment; filename=\"_____.tgz\"; \
             filename*=UTF-8''%D0%B0%D0%B3%D0%B5%D0%BD%D1%82.tgz"
        );
        assert_eq!(
            name("say \"hi\" 100%.tgz"),
            "attachment; filename=\"say _hi_ 100_.tgz\"; \
             filename*=UTF-8''say%20%22hi%22%20100%25.tgz"
        );
    }

    #[test]
    fn filenames_are_plain_names() {
        for ok in ["agent", "agent-1.0.0.tar.gz", "otelcol.exe", "agent v1"] {
            assert!(FileName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "..",
            "x..y",
            "/abs",
            "a\0b",
            "a\nb",
            &"a".repeat(256),
        ] {
            assert_eq!(
                FileName::parse(bad).unwrap_err().field,
                "filename",
                "{bad:?}"
            );
        }
    }
}
