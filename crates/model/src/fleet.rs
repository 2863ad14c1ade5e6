//! Agents managed over OpAMP, as the fleet keeps them.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// An agent's instance uid: 16 bytes (a UUID), shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentUid([u8; 16]);

impl AgentUid {
    /// From the bytes of an OpAMP message's `instance_uid`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ValidationError> {
        <[u8; 16]>::try_from(bytes).map(Self).map_err(|_| {
            ValidationError::new(
                "instance_uid",
                format!("must be 16 bytes, is {}", bytes.len()),
            )
        })
    }

    /// From 32 hex digits (either case) or a hyphenated UUID.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let digits: String = s.chars().filter(|c| *c != '-').collect();
        let invalid = || ValidationError::new("uid", "must be 32 hexadecimal digits (a UUID)");
        if digits.len() != 32 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for AgentUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An agent's health, as it last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentHealth {
    pub healthy: bool,
    pub status: String,
    pub last_error: String,
}

/// One package status an agent reported.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgentPackageStatus {
    pub name: String,
    pub agent_has_version: String,
    /// Hex.
    pub agent_has_hash: String,
    pub server_offered_version: String,
    /// Hex.
    pub server_offered_hash: String,
    /// `installed`, `install_pending`, `installing`, `install_failed`, `downloading`.
    pub status: String,
    pub error_message: String,
    pub download_percent: Option<f64>,
}

/// What the registry knows of an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub uid: AgentUid,
    /// The last message's sequence number.
    pub sequence_num: u64,
    /// `AgentCapabilities` bits.
    pub capabilities: u64,
    /// Attributes, their values as text (strings as they are; other values as JSON).
    pub identifying: BTreeMap<String, String>,
    pub non_identifying: BTreeMap<String, String>,
    pub health: Option<AgentHealth>,
    pub package_statuses: Vec<AgentPackageStatus>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Whether its last message was not a disconnect.
    pub connected: bool,
    pub disconnects: u64,
    pub disconnected_at: Option<DateTime<Utc>>,
}

impl Agent {
    /// An agent first seen `now`.
    pub fn new(uid: AgentUid, now: DateTime<Utc>) -> Self {
        Self {
            uid,
            sequence_num: 0,
            capabilities: 0,
            identifying: BTreeMap::new(),
            non_identifying: BTreeMap::new(),
            health: None,
            package_statuses: Vec::new(),
            first_seen: now,
            last_seen: now,
            connected: true,
            disconnects: 0,
            disconnected_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_sixteen_bytes_shown_as_hex() {
        let uid = AgentUid::from_bytes(&[0xab; 16]).unwrap();
        assert_eq!(uid.to_string(), "ab".repeat(16));
        assert_eq!(AgentUid::parse(&"AB".repeat(16)).unwrap(), uid);
        assert_eq!(
            AgentUid::parse("01890a5d-ac96-774b-bcce-b302099a8057")
                .unwrap()
                .to_string(),
            "01890a5dac96774bbcceb302099a8057"
        );
        assert!(AgentUid::from_bytes(&[1, 2, 3]).is_err());
        assert!(AgentUid::parse("xyz").is_err());
        assert!(AgentUid::parse(&"g".repeat(32)).is_err());
    }
}
