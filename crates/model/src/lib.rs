//! Domain types of agentpkg and their validation.
//!
//! Parse, don't check: every type here can only be built through a constructor that
//! validates its input, so a value that exists past the edge of the system is valid.
//! This crate does no I/O.

mod audit;
mod call_observer;
mod closed_set;
mod coordinates;
mod direct;
mod error;
mod error_code;
mod fleet;
mod key;
mod mirror;
#[cfg(feature = "openapi")]
mod openapi;
mod package;
mod query;
mod resumable;
mod rollout;
mod signature;
mod sigstore;
mod stats;
mod token;
mod user;
mod version;

pub use audit::{AuditAction, AuditEvent, AuditOutcome, AuditQuery, NewAuditEvent};
pub use call_observer::{CallObserver, observe};
pub use closed_set::ClosedSet;
pub use coordinates::Coordinates;
pub use direct::{DirectUpload, DirectUploadId};
pub use error::ValidationError;
pub use error_code::{Entity, ErrorCode};
pub use fleet::{
    Agent, AgentFilter, AgentHealth, AgentOwner, AgentPackageStatus, AgentUid, Assignment,
    AssignmentPatch, InstallStatus, NewAssignment, OfferedBuild, OfferedSignature, Selector,
    VersionChoice, check_offer_as, check_ratio, check_rollout,
};
pub use key::ObjectKey;
pub use mirror::{MirrorAsset, MirrorState};
pub use package::{
    Actor, Arch, Checksum, Description, FileName, NewPackage, Package, PackageName, PackagePatch,
    Platform, VersionBuilds,
};
pub use query::{Activity, LatestQuery, ListFrom, ListQuery, NameFilter, Page, PageRequest};
pub use resumable::{
    SessionKind, SessionProgress, SessionTail, SessionTarget, StoredPart, UploadSession,
    UploadSessionId,
};
pub use rollout::{
    Approval, FailureKind, FailureRule, MAX_WAVES, MemberPhase, NewRollout, OnFailure, Retry,
    Rollout, RolloutClock, RolloutMember, RolloutPlan, RolloutState, RolloutTransition,
    SuccessRule, WaveCounts, WaveSize, Window,
};
pub use signature::{
    DetachedSignature, KeyFingerprint, KeyPatterns, MAX_SIGNATURE_BYTES, NewSignature,
    SignatureBytes, SignatureFormat, SignatureInfo, Subkey, TrustedKey, Verification, VerifiedBy,
};
pub use sigstore::{
    IdentityPattern, MAX_POLICY_TEXT, NewSigstoreIdentity, OidcIssuer, SigstoreIdentity,
};
pub use stats::{
    DailyDownloads, DownloadIncrement, NameUsage, RetentionCandidate, RetentionDeletion,
    RetentionPolicy, RetentionPolicySpec, RetentionRule, RetentionRuleKind, StorageUsage,
    TopDownloads, TopEntry, TopQuery, UsageTotals, bytes_freed, first_day, plan_retention, window,
};
pub use token::{ApiToken, NamePattern, NameScope, TokenScope, glob};
pub use user::{Password, Role, User, Username};
pub use version::{Version, VersionRequirement};
