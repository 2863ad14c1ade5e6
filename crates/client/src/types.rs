//! The API's JSON, as this client reads it (fields it does not know are ignored).

use agentpkg_model::{Arch, Checksum, Platform, Role, SignatureFormat, TokenScope};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A package, as `GET /api/v1/packages/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub id: i64,
    pub name: String,
    pub version: String,
    pub platform: Platform,
    pub arch: Arch,
    pub file_size: u64,
    pub checksum: Checksum,
    pub filename: String,
    pub description: String,
    pub is_active: bool,
    pub signature: Option<SignatureSummary>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub download_count: u64,
}

impl Package {
    /// `name/version/platform/arch`.
    pub fn coordinates(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.name, self.version, self.platform, self.arch
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureSummary {
    pub format: SignatureFormat,
    pub verified: bool,
    pub key_fingerprint: Option<String>,
}

/// A version and its builds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionEntry {
    pub version: String,
    pub prerelease: bool,
    pub packages: Vec<Package>,
}

/// Filters of `GET /api/v1/packages`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackageQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Names containing this text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    /// A SemVer requirement; needs `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Yanked packages too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_yanked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_page: Option<u32>,
}

/// Who a credential is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Me {
    pub username: String,
    pub role: Role,
    /// The API token used, if it is one.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub scope: TokenScope,
    pub packages: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: Token,
    /// Shown once.
    pub secret: String,
}
