//! Package and user metadata, in PostgreSQL (production) or SQLite (the embedded
//! default), through one Diesel code path.
//!
//! The traits say what the business logic needs, one per concern: [`PackageStore`],
//! [`AccountStore`], and [`Health`] beneath both. [`DieselStore`] (feature `diesel`, on by
//! default) implements them all; a service embedding `agentpkg-packagemgr` with a store of
//! its own can turn the feature off and compile neither libpq nor SQLite.
//!
//! Every database call is blocking, so [`DieselStore`] runs each one on Tokio's blocking
//! pool: the async executor's threads never wait on the database. Each call is timed there,
//! by operation and outcome, for whichever [`CallObserver`] the store was given.

#[cfg(feature = "diesel")]
mod audit;
#[cfg(feature = "diesel")]
mod connection;
#[cfg(feature = "diesel")]
mod diesel_store;
#[cfg(feature = "diesel")]
mod direct;
mod error;
#[cfg(feature = "diesel")]
mod fleet;
mod mirror;
#[cfg(feature = "diesel")]
mod owners;
#[cfg(feature = "diesel")]
mod packages;
#[cfg(feature = "diesel")]
mod quota;
mod rollout;
#[cfg(feature = "diesel")]
mod schema;
mod session_store;
#[cfg(feature = "diesel")]
mod sessions;
#[cfg(feature = "diesel")]
mod signature_columns;
#[cfg(feature = "diesel")]
mod signing;
mod signing_store;
#[cfg(feature = "diesel")]
mod stats;
#[cfg(feature = "diesel")]
mod throttle;
#[cfg(feature = "diesel")]
mod tokens;
#[cfg(feature = "diesel")]
mod uploads;
#[cfg(feature = "diesel")]
mod users;

#[cfg(feature = "test-util")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use agentpkg_model::{
    Actor, ApiToken, AuditEvent, AuditQuery, Coordinates, DirectUpload, DirectUploadId,
    LatestQuery, ListQuery, NameScope, NewAuditEvent, NewPackage, ObjectKey, Package, PackageName,
    PackagePatch, Page, Role, TokenScope, User, Username,
};
use agentpkg_model::{
    DailyDownloads, DownloadIncrement, RetentionCandidate, StorageUsage, TopDownloads, TopQuery,
    UsageTotals,
};
use async_trait::async_trait;

#[cfg(feature = "diesel")]
pub use connection::{
    DatabaseUrl, DbConnection, DieselStore, MultiBackend, PoolOptions, UnsupportedDatabaseUrl,
};
pub use error::StoreError;
pub use mirror::MirrorStore;
pub use rollout::{Candidate, DynRolloutStore, RolloutStep, RolloutStore};
pub use session_store::{Durability, DynUploadSessionStore, SessionLease, UploadSessionStore};
pub use signing_store::{Attached, DynSigningStore, NewSigningKey, SigningStore};

/// Whether the database answers, and how busy its pool is.
#[async_trait]
pub trait Health: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), StoreError>;

    /// How busy the connection pool is, for metrics; `None` for a store without one.
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }
}

/// Packages and the blobs (distinct contents) they refer to.
#[async_trait]
pub trait PackageStore: Health {
    /// Records a package. A package with the same coordinates (by SemVer precedence) is a
    /// [`StoreError::Conflict`]. When another package already has the same bytes, the new
    /// one shares that object ([`Inserted::reused_object`]) and the caller's copy is spare.
    async fn insert_package(&self, new: NewPackage) -> Result<Inserted, StoreError>;
    async fn package_exists(&self, coordinates: &Coordinates) -> Result<bool, StoreError>;
    async fn get_package(&self, id: i64) -> Result<Option<Package>, StoreError>;
    /// The package at exactly these coordinates (by precedence), active or not.
    async fn find_package(&self, coordinates: &Coordinates) -> Result<Option<Package>, StoreError>;
    /// Every package of one name, active or not, newest version first.
    async fn package_versions(&self, name: &PackageName) -> Result<Vec<Package>, StoreError>;
    /// Applies a patch and returns the updated package, or `None` when there is none.
    async fn update_package(
        &self,
        id: i64,
        patch: PackagePatch,
    ) -> Result<Option<Package>, StoreError>;
    async fn list_packages(&self, query: &ListQuery) -> Result<Page<Package>, StoreError>;
    /// The active package of highest SemVer precedence that the query allows.
    async fn latest_package(&self, query: &LatestQuery) -> Result<Option<Package>, StoreError>;
    /// A number that moves on whenever a change a reader of packages can see is made (by
    /// any process): a publish, delete, yank or restore, description or signature; not a
    /// download count. It may move just before its change commits, and never goes back.
    /// Tells a read cache ([`PackageStore::get_package`] and the like, kept in memory)
    /// that it may be out of date. `None` from a store that keeps none: such a cache then
    /// learns only of the changes made through it.
    async fn package_revision(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }
    /// Deletes the row and returns it, or `None` when there was none.
    /// [`Deleted::object_released`] says whether it was the last package with its bytes, so
    /// that the object is now the caller's to delete.
    async fn delete_package(&self, id: i64) -> Result<Option<Deleted>, StoreError>;

    /// [`PackageStore::update_package`], with `events` appended to the audit log in the
    /// same transaction: the change and its record commit together or not at all. A store
    /// that keeps no audit log hands the events back for the caller to record (the
    /// default).
    async fn update_package_recorded(
        &self,
        id: i64,
        patch: PackagePatch,
        events: Vec<NewAuditEvent>,
    ) -> Result<(Option<Package>, Vec<NewAuditEvent>), StoreError> {
        Ok((self.update_package(id, patch).await?, events))
    }

    /// [`PackageStore::delete_package`], with `events` recorded as
    /// [`PackageStore::update_package_recorded`] records them.
    async fn delete_package_recorded(
        &self,
        id: i64,
        events: Vec<NewAuditEvent>,
    ) -> Result<(Option<Deleted>, Vec<NewAuditEvent>), StoreError> {
        Ok((self.delete_package(id).await?, events))
    }

    /// The object key of every blob: the objects that packages refer to.
    async fn blob_keys(&self) -> Result<Vec<String>, StoreError>;
    /// Ids of the packages whose bytes are the object at `key`.
    async fn packages_with_object(&self, key: &str) -> Result<Vec<i64>, StoreError>;

    /// Marks an upload to `key` as in flight, before its first byte is stored.
    /// [`PackageStore::insert_package`] removes the marker of its `storage_key` in the same
    /// transaction as the row.
    async fn begin_upload(&self, key: &ObjectKey) -> Result<(), StoreError>;
    /// Tells reconciliation that the upload to `key` is still being worked on.
    async fn touch_upload(&self, key: &ObjectKey) -> Result<(), StoreError>;
    /// Removes the marker (the upload's object was discarded).
    async fn end_upload(&self, key: &ObjectKey) -> Result<(), StoreError>;
    /// Every marker, with how long since it was last touched (by the database's clock).
    async fn uploads_in_flight(&self) -> Result<Vec<UploadInFlight>, StoreError>;
    /// Whether a blob names `key`, or an upload to it was touched within `stale_after`:
    /// asked again just before reconciliation deletes an object.
    async fn object_in_use(&self, key: &str, stale_after: Duration) -> Result<bool, StoreError>;
}

/// Who owns package names. The store's [`PackageStore::insert_package`] claims an
/// unclaimed name for its [`NewPackage::publisher`], or refuses one who is not an owner
/// ([`StoreError::NotOwner`]), in its own transaction.
#[async_trait]
pub trait OwnershipStore: Health {
    /// Whether `actor` may publish to or change `name`: an admin always, anyone while the
    /// name is unclaimed, otherwise its owners (the insert checks again).
    async fn may_act(&self, name: &PackageName, actor: &Actor) -> Result<bool, StoreError>;
    /// The owners of a claimed name, or `None` when nobody has claimed it.
    async fn owners(&self, name: &PackageName) -> Result<Option<Vec<Owner>>, StoreError>;
    /// Adds an owner to a claimed name; `false` when the name is unclaimed.
    async fn add_owner(&self, name: &PackageName, user_id: i64) -> Result<bool, StoreError>;
    /// Removes an owner ([`StoreError::Conflict`] for the last one); `false` when they were
    /// not one.
    async fn remove_owner(&self, name: &PackageName, user_id: i64) -> Result<bool, StoreError>;
    /// Makes a team an owner of a claimed name; `false` when the name is unclaimed.
    async fn add_team_owner(&self, name: &PackageName, team_id: i64) -> Result<bool, StoreError>;
    /// Removes a team from the owners ([`StoreError::Conflict`] for the last owner).
    async fn remove_team_owner(&self, name: &PackageName, team_id: i64)
    -> Result<bool, StoreError>;
    /// Creates a team with its creator as first member ([`StoreError::Conflict`] when the
    /// name is taken).
    async fn create_team(&self, name: &str, creator: i64) -> Result<Team, StoreError>;
    async fn team(&self, name: &str) -> Result<Option<Team>, StoreError>;
    async fn teams(&self) -> Result<Vec<Team>, StoreError>;
    async fn add_member(&self, team_id: i64, user_id: i64) -> Result<(), StoreError>;
    /// Removes a member ([`StoreError::Conflict`] for the last one).
    async fn remove_member(&self, team_id: i64, user_id: i64) -> Result<bool, StoreError>;
}

/// Shared handle to an ownership store.
pub type DynOwnershipStore = Arc<dyn OwnershipStore>;

/// An owner of a package name: a user, or a team whose every member acts as an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    User { user_id: i64, username: String },
    Team { team_id: i64, name: String },
}

/// A team of users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: i64,
    pub name: String,
    /// Members by id and username.
    pub members: Vec<(i64, String)>,
}

/// An upload that has not finished, as its marker tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInFlight {
    pub key: String,
    /// Time since the uploader last touched the marker.
    pub idle: Duration,
}

/// User accounts and their password hashes.
#[async_trait]
pub trait AccountStore: Health {
    async fn create_user(
        &self,
        username: &Username,
        password_hash: String,
        role: Role,
    ) -> Result<User, StoreError>;
    /// The user and their password hash, for login.
    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError>;
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    async fn delete_user(&self, id: i64) -> Result<bool, StoreError>;
    async fn count_users(&self) -> Result<u64, StoreError>;
    /// What a credential check needs of a user: `None` once the user is deleted.
    async fn user_state(&self, id: i64) -> Result<Option<UserState>, StoreError>;
    /// Changes a role; every credential that names the user's version stops working.
    async fn set_role(&self, id: i64, role: Role) -> Result<Option<User>, StoreError>;
    /// Changes a password hash; every credential that names the user's version stops
    /// working. `false` when there is no such user.
    async fn set_password(&self, id: i64, password_hash: String) -> Result<bool, StoreError>;

    /// The latest time until which any of `keys` is blocked from logging in, if one is.
    async fn login_blocked(
        &self,
        keys: &[String],
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError>;
    /// Counts a failed login under `key`; returns the time it is blocked until, once the
    /// failures in the window reach the limit.
    async fn login_failed(
        &self,
        key: &str,
        limit: &LoginLimit,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError>;
    /// Clears the failures counted under `key`.
    async fn login_succeeded(&self, key: &str) -> Result<(), StoreError>;

    /// Records that the session whose token hashes to `token_hash` was signed out; it would
    /// have been valid until `expires_at`. Sessions ended earlier and expired since go.
    async fn end_session(
        &self,
        token_hash: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError>;
    /// Whether that session was signed out.
    async fn session_ended(&self, token_hash: &str) -> Result<bool, StoreError>;
}

/// How many failed logins a key may make in a window before it is blocked, and the first
/// block's length (each further failure doubles it, up to an hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimit {
    pub attempts: u32,
    pub window: Duration,
    pub backoff: Duration,
}

/// A user as every request's credential check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserState {
    pub id: i64,
    pub username: String,
    pub role: Role,
    /// Changes whenever the user's role or password does: a session token naming another
    /// version is no longer valid.
    pub credentials_version: i64,
}

/// API tokens, stored by the hash of their secret.
#[async_trait]
pub trait TokenStore: Health {
    async fn create_token(&self, new: NewToken) -> Result<ApiToken, StoreError>;
    /// Every token, or one user's.
    async fn list_tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiToken>, StoreError>;
    async fn get_token(&self, id: i64) -> Result<Option<ApiToken>, StoreError>;
    /// Revokes a token; `false` when there was none.
    async fn delete_token(&self, id: i64) -> Result<bool, StoreError>;
    /// The token whose secret hashes to `secret_hash`, and its owner.
    async fn token_by_secret_hash(
        &self,
        secret_hash: &str,
    ) -> Result<Option<(ApiToken, UserState)>, StoreError>;
    /// Records that the token was just used.
    async fn touch_token(&self, id: i64) -> Result<(), StoreError>;
}

/// The audit log: appended to, read, never changed.
#[async_trait]
pub trait AuditStore: Health {
    async fn append_audit(&self, event: NewAuditEvent) -> Result<(), StoreError>;
    async fn list_audit(&self, query: &AuditQuery) -> Result<Page<AuditEvent>, StoreError>;
}

/// Shared handle to an audit store.
pub type DynAuditStore = Arc<dyn AuditStore>;

/// Direct uploads: granted, then completed once, or expired.
#[async_trait]
pub trait DirectUploadStore: Health {
    /// Records a grant, unless its user has `quota.max_uploads` live grants (then
    /// `false`), or its bytes would pass `quota.max_bytes` ([`StoreError::OverQuota`]).
    async fn create_direct_upload(
        &self,
        upload: DirectUpload,
        quota: UploadQuota,
    ) -> Result<bool, StoreError>;
    /// The upload, while it has not expired (by the database's clock).
    async fn direct_upload(&self, id: &DirectUploadId) -> Result<Option<DirectUpload>, StoreError>;
    /// Removes the upload and marks its object in flight, in one transaction: exactly one
    /// caller gets it. `None` when it is gone or expired.
    async fn claim_direct_upload(
        &self,
        id: &DirectUploadId,
    ) -> Result<Option<DirectUpload>, StoreError>;
    /// Forgets expired uploads and returns their object keys.
    async fn remove_expired_direct_uploads(&self) -> Result<Vec<String>, StoreError>;
}

pub type DynDirectUploadStore = Arc<dyn DirectUploadStore>;

/// What one user's uploads in flight (open resumable sessions, live direct grants) may
/// hold: uploads of one kind open at once, and bytes announced by both kinds together.
/// Checked atomically with the insert: concurrent requests cannot all slip under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadQuota {
    pub max_uploads: u64,
    pub max_bytes: u64,
}

impl UploadQuota {
    /// No limit (a caller that counted already).
    pub const UNLIMITED: UploadQuota = UploadQuota {
        max_uploads: u64::MAX,
        max_bytes: u64::MAX,
    };
}

/// The agents of the fleet (OpAMP), one record each.
#[async_trait]
pub trait FleetStore: Health {
    async fn agent(
        &self,
        uid: &agentpkg_model::AgentUid,
    ) -> Result<Option<agentpkg_model::Agent>, StoreError>;
    /// Records the agent's state, replacing what was recorded (its package statuses'
    /// rows too when `packages_changed`).
    async fn save_agent(
        &self,
        agent: agentpkg_model::Agent,
        packages_changed: bool,
    ) -> Result<(), StoreError>;
    /// Moves agents' sequence numbers and last-seen times forward (never back), in one
    /// transaction: heartbeats that changed nothing else, written in batches.
    async fn touch_agents(
        &self,
        seen: Vec<(agentpkg_model::AgentUid, u64, chrono::DateTime<chrono::Utc>)>,
    ) -> Result<(), StoreError>;
    /// How many agents were offered `version` under `name`, and how many of them failed
    /// to install it.
    async fn offer_outcomes(&self, name: &str, version: &str) -> Result<(u64, u64), StoreError>;
    /// Every agent's reported status for the package offered as `name`.
    async fn package_statuses(&self, name: &str) -> Result<Vec<PackageStatusRow>, StoreError>;
    /// Agents that pass `filter`, most recently seen first (filtered and paged by the
    /// database).
    async fn list_agents(
        &self,
        page: agentpkg_model::PageRequest,
        filter: agentpkg_model::AgentFilter,
    ) -> Result<Page<agentpkg_model::Agent>, StoreError>;
    /// How many agents are bound to `owner`.
    async fn count_agents_of(&self, owner: agentpkg_model::AgentOwner) -> Result<u64, StoreError>;
    /// How many agents pass `filter` (counted by the database).
    async fn count_agents(&self, filter: agentpkg_model::AgentFilter) -> Result<u64, StoreError>;
    /// The versions agents report having, by package name: (name, version, agents), most
    /// agents first, at most 100.
    async fn running_versions(&self) -> Result<Vec<(String, String, u64)>, StoreError>;
    /// Forgets an agent and its package statuses; whether it was known.
    async fn forget_agent(&self, uid: &agentpkg_model::AgentUid) -> Result<bool, StoreError>;
    /// Forgets every agent last seen before `before`; how many went.
    async fn forget_silent_agents(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError>;
    async fn create_assignment(
        &self,
        new: agentpkg_model::NewAssignment,
    ) -> Result<agentpkg_model::Assignment, StoreError>;
    /// Every assignment, oldest first.
    async fn assignments(&self) -> Result<Vec<agentpkg_model::Assignment>, StoreError>;
    async fn assignment(&self, id: i64) -> Result<Option<agentpkg_model::Assignment>, StoreError>;
    async fn update_assignment(
        &self,
        id: i64,
        patch: agentpkg_model::AssignmentPatch,
    ) -> Result<Option<agentpkg_model::Assignment>, StoreError>;
    async fn delete_assignment(&self, id: i64) -> Result<bool, StoreError>;
    /// A number that moves on whenever an assignment, or which packages exist or are
    /// active, changes (by any replica): when it moves, agents' offers may have changed.
    /// It may move before the change it counts is committed, and never goes back.
    async fn fleet_revision(&self) -> Result<i64, StoreError>;
}

pub type DynFleetStore = Arc<dyn FleetStore>;

/// One agent's status for one package, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageStatusRow {
    /// The agent's instance uid (hex).
    pub uid: String,
    /// The version the server offered it (as offered: `v1.2.0` when the assignment
    /// prefixes a `v`).
    pub offered_version: String,
    /// The version it says it has.
    pub has_version: String,
    pub status: agentpkg_model::InstallStatus,
    pub error_message: String,
}

/// Download counts, storage usage, and what retention needs to choose.
#[async_trait]
pub trait StatsStore: Health {
    /// Adds counted downloads in one transaction (increments of packages deleted since are
    /// dropped); how many found their package. A failure adds nothing.
    async fn add_downloads(&self, increments: Vec<DownloadIncrement>) -> Result<u64, StoreError>;
    /// A package's days with downloads from `from` to `to` (UTC), oldest first.
    async fn daily_downloads(
        &self,
        package_id: i64,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<DailyDownloads>, StoreError>;
    /// The most downloaded names, and names with versions, from `from` to `to`.
    async fn top_downloads(
        &self,
        query: &TopQuery,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<TopDownloads, StoreError>;
    /// Objects, bytes, the `names` names holding most and the `largest` largest packages.
    async fn storage_usage(&self, names: u32, largest: u32) -> Result<StorageUsage, StoreError>;
    /// The totals that metrics show.
    async fn usage_totals(&self) -> Result<UsageTotals, StoreError>;
    /// Every package, as retention sees it.
    async fn retention_candidates(&self) -> Result<Vec<RetentionCandidate>, StoreError>;
}

pub type DynStatsStore = Arc<dyn StatsStore>;

/// A token to record: its secret only as a hash.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub user_id: i64,
    pub name: String,
    pub scope: TokenScope,
    pub packages: NameScope,
    pub secret_hash: String,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Told how long each database call took. `agentpkg-packagemgr`'s metrics implement it;
/// [`DieselStore::observed_by`] hands it to the store, which times every call in the one
/// place they all pass through.
pub use agentpkg_model::CallObserver;

/// A snapshot of a connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open, in use or idle.
    pub connections: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// Most connections the pool opens.
    pub max: u32,
}

/// A recorded package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    pub package: Package,
    /// The bytes were already stored for another package: the package points at that
    /// object, and the object stored for this upload is not referenced.
    pub reused_object: bool,
}

/// A deleted package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub package: Package,
    /// No package refers to the object any more: delete it.
    pub object_released: bool,
}

/// Shared handle to a package store.
pub type DynPackageStore = Arc<dyn PackageStore>;
/// Shared handle to an account store.
pub type DynAccountStore = Arc<dyn AccountStore>;
/// Shared handle to a token store.
pub type DynTokenStore = Arc<dyn TokenStore>;
