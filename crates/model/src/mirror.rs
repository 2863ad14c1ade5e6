//! What the mirror of upstream releases did with each asset it follows.

use chrono::{DateTime, Utc};

use crate::closed_set::closed_set;
use crate::{Arch, Platform, Version};

closed_set!(
    /// Where one asset of a mirrored release stands.
    MirrorState, "state", {
        /// Downloaded, checked against the checksums file and the bundle, and published.
        Published => "published",
        /// The last attempt failed (the reason is beside it); the next run tries again.
        Failed => "failed",
    }
);

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
