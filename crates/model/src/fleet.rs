//! Agents managed over OpAMP, as the fleet keeps them.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::closed_set::closed_set;
use crate::{PackageName, ValidationError, Version, VersionRequirement};

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

closed_set!(
    /// Where an agent says one package stands (OpAMP's `PackageStatusEnum`).
    #[derive(Default, PartialOrd, Ord)]
    InstallStatus, "package_status", {
        Installed => "installed",
        InstallPending => "install_pending",
        Installing => "installing",
        InstallFailed => "install_failed",
        Downloading => "downloading",
        /// A number this server does not know (a newer agent).
        #[default]
        Unknown => "unknown",
    }
);

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
    pub status: InstallStatus,
    pub error_message: String,
    pub download_percent: Option<f64>,
}

/// The credential an agent's instance uid belongs to: the API token, or the user of a
/// session, that sent its first message. Only that credential speaks for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentOwner {
    Token(i64),
    User(i64),
}

impl AgentOwner {
    /// `token:<id>` or `user:<id>`, as stored.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let invalid = || ValidationError::new("owner", "must be token:<id> or user:<id>");
        let (kind, id) = s.split_once(':').ok_or_else(invalid)?;
        let id = id.parse::<i64>().map_err(|_| invalid())?;
        match kind {
            "token" => Ok(Self::Token(id)),
            "user" => Ok(Self::User(id)),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for AgentOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(id) => write!(f, "token:{id}"),
            Self::User(id) => write!(f, "user:{id}"),
        }
    }
}

/// What the server offered an agent under one name: the version and the package hash
/// (hex) it sent. A report counts towards a rollout only when it names both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedBuild {
    pub version: String,
    pub hash: String,
    pub at: DateTime<Utc>,
}

/// What the registry knows of an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// The credential it is bound to; `None` only for an agent recorded before binding
    /// existed (its next message binds it).
    pub owner: Option<AgentOwner>,
    /// What the server last offered it, by name.
    pub offered: BTreeMap<String, OfferedBuild>,
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
    /// The `all_packages_hash` of the packages last offered to it (hex), once offered any.
    pub offered_hash: Option<String>,
    /// Why it is offered nothing though assignments select it (say, no `host.arch`).
    pub offer_note: Option<String>,
}

impl AgentPackageStatus {
    /// Whether this report is about what the server offered: the same version and the
    /// same package hash as the server's record. Only such reports steer a rollout.
    pub fn answers(&self, offered: &BTreeMap<String, OfferedBuild>) -> bool {
        offered.get(&self.name).is_some_and(|o| {
            o.version == self.server_offered_version && o.hash == self.server_offered_hash
        })
    }
}

impl Agent {
    /// An agent first seen `now`.
    pub fn new(uid: AgentUid, now: DateTime<Utc>) -> Self {
        Self {
            owner: None,
            offered: BTreeMap::new(),
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
            offered_hash: None,
            offer_note: None,
        }
    }
}

/// Which agents a listing shows: all conditions hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    /// Attributes (identifying or not) the agent has, with these values.
    pub attributes: Vec<(String, String)>,
    pub healthy: Option<bool>,
    pub connected: Option<bool>,
    /// A package status the agent reported for some package (`install_failed`, …).
    pub package_status: Option<InstallStatus>,
}

impl AgentFilter {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `agent` passes (what the database's query decides, for tests and fakes).
    pub fn passes(&self, agent: &Agent) -> bool {
        self.attributes.iter().all(|(k, v)| {
            agent.identifying.get(k) == Some(v) || agent.non_identifying.get(k) == Some(v)
        }) && self
            .healthy
            .is_none_or(|h| agent.health.as_ref().is_some_and(|x| x.healthy == h))
            && self.connected.is_none_or(|c| agent.connected == c)
            && self
                .package_status
                .as_ref()
                .is_none_or(|status| agent.package_statuses.iter().any(|s| &s.status == status))
    }
}

/// Which version of a package an assignment offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionChoice {
    /// The newest active stable version.
    Latest,
    Exact(Version),
    /// The newest active stable version matching a requirement (`^0.115`).
    Matching(VersionRequirement),
}

impl VersionChoice {
    /// `latest`, an exact version, or a requirement.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s == "latest" {
            return Ok(Self::Latest);
        }
        if let Ok(v) = Version::parse(s) {
            return Ok(Self::Exact(v));
        }
        VersionRequirement::parse(s)
            .map(Self::Matching)
            .map_err(|_| {
                ValidationError::new(
                    "version",
                    "must be \"latest\", a SemVer version or a requirement such as ^1.4",
                )
            })
    }
}

impl fmt::Display for VersionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::Exact(v) => write!(f, "{v}"),
            Self::Matching(r) => write!(f, "{r}"),
        }
    }
}

/// The signature an assignment's agents verify, and so the bytes its offers carry in
/// `DownloadableFile.signature`. A package carries one signature; a format it cannot give
/// is not offered (the agent would refuse it), and the offer says why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OfferedSignature {
    /// The package's own signature, whatever its format, or none (what offers carried
    /// before formats could be chosen).
    #[default]
    Stored,
    /// An OpenPGP detached signature.
    Openpgp,
    /// The Sigstore bundle JSON (`.sigstore.json`), as the Collector's supervisor reads
    /// it from v0.158 on.
    SigstoreBundle,
    /// The Collector supervisor's older cosign form: the signing certificate (PEM, base64)
    /// and the signature (base64), one space between, made from a Sigstore bundle.
    CosignCertSig,
    /// No signature, even when the package has one.
    None,
}

impl OfferedSignature {
    pub const ALL: [Self; 5] = [
        Self::Stored,
        Self::Openpgp,
        Self::SigstoreBundle,
        Self::CosignCertSig,
        Self::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Openpgp => "openpgp",
            Self::SigstoreBundle => "sigstore-bundle",
            Self::CosignCertSig => "cosign-cert-sig",
            Self::None => "none",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "signature",
                    "must be one of: stored, openpgp, sigstore-bundle, cosign-cert-sig, none",
                )
            })
    }
}

impl fmt::Display for OfferedSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Attributes an agent must have (all of them, with these values) to be offered an
/// assignment's package.
pub type Selector = BTreeMap<String, String>;

/// A package offered to the agents an assignment selects.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub id: i64,
    pub package: PackageName,
    pub version: VersionChoice,
    /// The name it is offered under: `""` is the agent's top-level package, anything else
    /// an addon.
    pub offer_as: String,
    pub selector: Selector,
    /// Share of the selected agents offered it (0–100), chosen by their instance uid.
    pub rollout_percent: u8,
    /// Share of failed installs among the agents offered it past which it pauses itself.
    pub max_failure_ratio: f64,
    /// Offer the version as `v1.2.3` (the Collector's supervisor expects that).
    pub v_prefix: bool,
    /// The signature its offers carry.
    pub signature: OfferedSignature,
    /// Why it is paused, while it is.
    pub paused: Option<String>,
    /// Its latest progressive rollout, while that governs the agents it moved (from its
    /// creation until it completes or the version is changed by hand).
    pub rollout_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An assignment to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAssignment {
    pub package: PackageName,
    pub version: VersionChoice,
    pub offer_as: String,
    pub selector: Selector,
    pub rollout_percent: u8,
    pub max_failure_ratio: f64,
    pub v_prefix: bool,
    pub signature: OfferedSignature,
}

impl NewAssignment {
    /// Checks what types cannot: the name offered, the selector, the ratios.
    pub fn check(&self) -> Result<(), ValidationError> {
        check_offer_as(&self.offer_as)?;
        check_selector(&self.selector)?;
        check_rollout(self.rollout_percent)?;
        check_ratio(self.max_failure_ratio)
    }
}

/// Changes to an assignment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssignmentPatch {
    pub version: Option<VersionChoice>,
    pub rollout_percent: Option<u8>,
    pub max_failure_ratio: Option<f64>,
    /// `Some(None)` resumes; `Some(Some(reason))` pauses.
    pub paused: Option<Option<String>>,
    /// Another signature format for its offers (agents download again: the offer's hash
    /// covers the signature).
    pub signature: Option<OfferedSignature>,
}

pub fn check_offer_as(name: &str) -> Result<(), ValidationError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    if name.len() > 128 || !name.chars().all(ok) {
        return Err(ValidationError::new(
            "offer_as",
            "at most 128 characters of letters, digits, '.', '_', '-' and '/' (empty: the top-level package)",
        ));
    }
    Ok(())
}

fn check_selector(selector: &Selector) -> Result<(), ValidationError> {
    if selector.len() > 32
        || selector
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 256 || v.len() > 1024)
    {
        return Err(ValidationError::new(
            "selector",
            "at most 32 attributes, each key 1 to 256 characters and each value at most 1024",
        ));
    }
    Ok(())
}

pub fn check_rollout(percent: u8) -> Result<(), ValidationError> {
    if percent > 100 {
        return Err(ValidationError::new("rollout_percent", "must be 0 to 100"));
    }
    Ok(())
}

pub fn check_ratio(ratio: f64) -> Result<(), ValidationError> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(ValidationError::new("max_failure_ratio", "must be 0 to 1"));
    }
    Ok(())
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

    #[test]
    fn version_choices_and_assignment_checks() {
        assert_eq!(
            VersionChoice::parse("latest").unwrap(),
            VersionChoice::Latest
        );
        assert!(matches!(
            VersionChoice::parse("1.2.3").unwrap(),
            VersionChoice::Exact(_)
        ));
        assert!(matches!(
            VersionChoice::parse("^0.115").unwrap(),
            VersionChoice::Matching(_)
        ));
        assert!(VersionChoice::parse("newest please").is_err());
        assert_eq!(
            VersionChoice::parse("^0.115").unwrap().to_string(),
            "^0.115"
        );
        assert!(check_offer_as("").is_ok());
        assert!(check_offer_as("addons/tail").is_ok());
        assert!(check_offer_as("bad name").is_err());
        assert!(check_rollout(101).is_err());
        assert!(check_ratio(1.5).is_err());
        assert!(check_ratio(f64::NAN).is_err());
        for f in OfferedSignature::ALL {
            assert_eq!(OfferedSignature::parse(f.as_str()).unwrap(), f);
        }
        assert_eq!(OfferedSignature::default(), OfferedSignature::Stored);
        assert_eq!(
            OfferedSignature::parse("cosign").unwrap_err().field,
            "signature"
        );
    }
}
