//! What the mirror of upstream releases did with each asset it follows.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::{Arch, Platform, ValidationError, Version};

/// Where one asset of a mirrored release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorState {
    /// Downloaded, checked against the checksums file and the bundle, and published.
    Published,
    /// The last attempt failed (the reason is beside it); the next run tries again.
    Failed,
}

impl MirrorState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "published" => Ok(Self::Published),
            "failed" => Ok(Self::Failed),
            _ => Err(ValidationError::new("state", "must be published or failed")),
        }
    }
}

impl fmt::Display for MirrorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One asset (a version's build for a platform) of a mirror source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorAsset {
    /// The source's name in the configuration.
    pub source: String,
    pub version: Version,
    pub platform: Platform,
    pub arch: Arch,
    /// Where it was downloaded from.
    pub url: String,
    pub state: MirrorState,
    /// What happened, in words (the failure's reason, or how it was verified).
    pub detail: String,
    /// The package it became, once published.
    pub package_id: Option<i64>,
    /// Attempts so far.
    pub attempts: u32,
    pub updated_at: DateTime<Utc>,
}
