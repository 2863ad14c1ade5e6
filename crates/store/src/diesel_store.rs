//! [`DieselStore`] implements each store trait by running one query function of
//! `packages` or `users` on a pooled connection, named for the timing. The statistics,
//! fleet and signing traits are implemented beside their queries (`stats.rs`, `fleet/`,
//! `signing.rs`).

use std::time::Duration;

use agentpkg_model::{
    Actor, ApiToken, AuditEvent, AuditQuery, Coordinates, LatestQuery, ListQuery, NewAuditEvent,
    NewPackage, ObjectKey, Package, PackageName, PackagePatch, Page, Role, User, Username,
};
use async_trait::async_trait;
use diesel::r2d2::R2D2Connection;

use crate::{
    AccountStore, AuditStore, Deleted, DieselStore, Health, Inserted, LoginLimit, NewToken, Owner,
    OwnershipStore, PackageStore, PoolStatus, StoreError, Team, TokenStore, UploadInFlight,
    UserState, audit, owners, packages, throttle, tokens, uploads, users,
};
use crate::{DirectUploadStore, SessionLease, UploadQuota, UploadSessionStore, direct, sessions};
use agentpkg_model::{
    DirectUpload, DirectUploadId, SessionProgress, UploadSession, UploadSessionId,
};

#[async_trait]
impl Health for DieselStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.with_conn_read("ping", |c| c.ping().map_err(StoreError::from))
            .await
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        Some(DieselStore::pool_status(self))
    }
}

#[async_trait]
impl PackageStore for DieselStore {
    async fn insert_package(&self, new: NewPackage) -> Result<Inserted, StoreError> {
        self.with_conn("insert_package", move |c| packages::insert(c, &new))
            .await
    }

    async fn package_exists(&self, coordinates: &Coordinates) -> Result<bool, StoreError> {
        let coordinates = coordinates.clone();
        self.with_conn_read("package_exists", move |c| packages::exists(c, &coordinates))
            .await
    }

    async fn get_package(&self, id: i64) -> Result<Option<Package>, StoreError> {
        self.with_conn_read("get_package", move |c| packages::get(c, id))
            .await
    }

    async fn find_package(&self, coordinates: &Coordinates) -> Result<Option<Package>, StoreError> {
        let coordinates = coordinates.clone();
        self.with_conn_read("find_package", move |c| packages::find(c, &coordinates))
            .await
    }

    async fn package_versions(&self, name: &PackageName) -> Result<Vec<Package>, StoreError> {
        let name = name.clone();
        self.with_conn_read("package_versions", move |c| packages::versions(c, &name))
            .await
    }

    async fn update_package(
        &self,
        id: i64,
        patch: PackagePatch,
    ) -> Result<Option<Package>, StoreError> {
        self.with_conn("update_package", move |c| {
            packages::update(c, id, &patch, &[])
        })
        .await
    }

    async fn update_package_recorded(
        &self,
        id: i64,
        patch: PackagePatch,
        events: Vec<NewAuditEvent>,
    ) -> Result<(Option<Package>, Vec<NewAuditEvent>), StoreError> {
        let updated = self
            .with_conn("update_package", move |c| {
                packages::update(c, id, &patch, &events)
            })
            .await?;
        Ok((updated, Vec::new()))
    }

    async fn delete_package_recorded(
        &self,
        id: i64,
        events: Vec<NewAuditEvent>,
    ) -> Result<(Option<Deleted>, Vec<NewAuditEvent>), StoreError> {
        let deleted = self
            .with_conn("delete_package", move |c| packages::delete(c, id, &events))
            .await?;
        Ok((deleted, Vec::new()))
    }

    async fn list_packages(&self, query: &ListQuery) -> Result<Page<Package>, StoreError> {
        let query = query.clone();
        let totals = self.totals.clone();
        self.with_conn_read("list_packages", move |c| packages::list(c, &query, &totals))
            .await
    }

    async fn latest_package(&self, query: &LatestQuery) -> Result<Option<Package>, StoreError> {
        let query = query.clone();
        self.with_conn_read("latest_package", move |c| packages::latest(c, &query))
            .await
    }

    async fn package_revision(&self) -> Result<Option<i64>, StoreError> {
        self.with_conn_read("package_revision", packages::revision)
            .await
            .map(Some)
    }

    async fn delete_package(&self, id: i64) -> Result<Option<Deleted>, StoreError> {
        self.with_conn("delete_package", move |c| packages::delete(c, id, &[]))
            .await
    }

    async fn blob_keys(&self) -> Result<Vec<String>, StoreError> {
        self.with_conn("blob_keys", packages::blob_keys).await
    }

    async fn packages_with_object(&self, key: &str) -> Result<Vec<i64>, StoreError> {
        let key = key.to_owned();
        self.with_conn("packages_with_object", move |c| {
            packages::with_object(c, &key)
        })
        .await
    }

    async fn begin_upload(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let key = key.to_string();
        self.with_conn("begin_upload", move |c| uploads::begin(c, &key))
            .await
    }

    async fn touch_upload(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let key = key.to_string();
        self.with_conn("touch_upload", move |c| uploads::touch(c, &key))
            .await
    }

    async fn end_upload(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let key = key.to_string();
        self.with_conn("end_upload", move |c| uploads::end(c, &key))
            .await
    }

    async fn uploads_in_flight(&self) -> Result<Vec<UploadInFlight>, StoreError> {
        self.with_conn("uploads_in_flight", uploads::list).await
    }

    async fn object_in_use(&self, key: &str, stale_after: Duration) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.with_conn("object_in_use", move |c| {
            uploads::in_use(c, &key, stale_after)
        })
        .await
    }
}

#[async_trait]
impl AccountStore for DieselStore {
    async fn end_session(
        &self,
        token_hash: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        self.with_conn("end_session", move |c| {
            users::end_session(c, &token_hash, expires_at)
        })
        .await
    }

    async fn session_ended(&self, token_hash: &str) -> Result<bool, StoreError> {
        let token_hash = token_hash.to_owned();
        self.with_conn_read("session_ended", move |c| {
            users::session_ended(c, &token_hash)
        })
        .await
    }

    async fn create_user(
        &self,
        username: &Username,
        password_hash: String,
        role: Role,
    ) -> Result<User, StoreError> {
        let username = username.clone();
        self.with_conn("create_user", move |c| {
            users::create(c, &username, &password_hash, role)
        })
        .await
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        let username = username.to_owned();
        self.with_conn_read("user_credentials", move |c| {
            users::credentials(c, &username)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.with_conn("list_users", users::list).await
    }

    async fn delete_user(&self, id: i64) -> Result<bool, StoreError> {
        self.with_conn("delete_user", move |c| users::delete(c, id))
            .await
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        self.with_conn("count_users", users::count).await
    }

    async fn user_state(&self, id: i64) -> Result<Option<UserState>, StoreError> {
        self.with_conn_read("user_state", move |c| users::state(c, id))
            .await
    }

    async fn set_role(&self, id: i64, role: Role) -> Result<Option<User>, StoreError> {
        self.with_conn("set_role", move |c| users::set_role(c, id, role))
            .await
    }

    async fn set_password(&self, id: i64, password_hash: String) -> Result<bool, StoreError> {
        self.with_conn("set_password", move |c| {
            users::set_password(c, id, &password_hash)
        })
        .await
    }

    async fn login_blocked(
        &self,
        keys: &[String],
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let keys = keys.to_vec();
        self.with_conn("login_blocked", move |c| throttle::blocked(c, &keys))
            .await
    }

    async fn login_failed(
        &self,
        key: &str,
        limit: &LoginLimit,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let (key, limit) = (key.to_owned(), *limit);
        self.with_conn("login_failed", move |c| throttle::failed(c, &key, &limit))
            .await
    }

    async fn login_succeeded(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.with_conn("login_succeeded", move |c| throttle::succeeded(c, &key))
            .await
    }
}

#[async_trait]
impl TokenStore for DieselStore {
    async fn create_token(&self, new: NewToken) -> Result<ApiToken, StoreError> {
        self.with_conn("create_token", move |c| tokens::create(c, &new))
            .await
    }

    async fn list_tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiToken>, StoreError> {
        self.with_conn("list_tokens", move |c| tokens::list(c, user_id))
            .await
    }

    async fn get_token(&self, id: i64) -> Result<Option<ApiToken>, StoreError> {
        self.with_conn("get_token", move |c| tokens::get(c, id))
            .await
    }

    async fn delete_token(&self, id: i64) -> Result<bool, StoreError> {
        self.with_conn("delete_token", move |c| tokens::delete(c, id))
            .await
    }

    async fn token_by_secret_hash(
        &self,
        secret_hash: &str,
    ) -> Result<Option<(ApiToken, UserState)>, StoreError> {
        let hash = secret_hash.to_owned();
        self.with_conn_read("token_by_secret_hash", move |c| {
            tokens::by_secret_hash(c, &hash)
        })
        .await
    }

    async fn touch_token(&self, id: i64) -> Result<(), StoreError> {
        self.with_conn("touch_token", move |c| tokens::touch(c, id))
            .await
    }
}

#[async_trait]
impl DirectUploadStore for DieselStore {
    async fn create_direct_upload(
        &self,
        upload: DirectUpload,
        quota: UploadQuota,
    ) -> Result<bool, StoreError> {
        self.with_conn("create_direct_upload", move |c| {
            direct::create(c, &upload, &quota)
        })
        .await
    }

    async fn direct_upload(&self, id: &DirectUploadId) -> Result<Option<DirectUpload>, StoreError> {
        let id = id.clone();
        self.with_conn_read("direct_upload", move |c| direct::get(c, &id))
            .await
    }

    async fn claim_direct_upload(
        &self,
        id: &DirectUploadId,
    ) -> Result<Option<DirectUpload>, StoreError> {
        let id = id.clone();
        self.with_conn("claim_direct_upload", move |c| direct::claim(c, &id))
            .await
    }

    async fn remove_expired_direct_uploads(&self) -> Result<Vec<String>, StoreError> {
        self.with_conn("remove_expired_direct_uploads", direct::remove_expired)
            .await
    }
}

#[async_trait]
impl UploadSessionStore for DieselStore {
    async fn create_session(
        &self,
        session: UploadSession,
        ttl: Duration,
        quota: UploadQuota,
    ) -> Result<Option<UploadSession>, StoreError> {
        self.with_conn("create_session", move |c| {
            sessions::create(c, &session, ttl, &quota)
        })
        .await
    }

    async fn upload_session(
        &self,
        id: &UploadSessionId,
    ) -> Result<Option<UploadSession>, StoreError> {
        let id = id.clone();
        self.with_conn_read("upload_session", move |c| sessions::get(c, &id))
            .await
    }

    async fn lease_session(
        &self,
        id: &UploadSessionId,
        offset: u64,
        token: &str,
        lease: Duration,
        owner: Option<i64>,
    ) -> Result<SessionLease, StoreError> {
        let (id, token) = (id.clone(), token.to_owned());
        // Safe to run again on another connection when one died: the same token takes
        // the lease once.
        self.with_conn_read("lease_session", move |c| {
            sessions::lease(c, &id, offset, &token, lease, owner)
        })
        .await
    }

    async fn renew_session_lease(
        &self,
        id: &UploadSessionId,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let (id, token) = (id.clone(), token.to_owned());
        self.with_conn("renew_session_lease", move |c| {
            sessions::renew(c, &id, &token, lease)
        })
        .await
    }

    async fn commit_session(
        &self,
        id: &UploadSessionId,
        token: &str,
        progress: SessionProgress,
        ttl: Duration,
        durability: crate::Durability,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let (id, token) = (id.clone(), token.to_owned());
        self.with_conn("commit_session", move |c| {
            sessions::commit(c, &id, &token, &progress, ttl, durability)
        })
        .await
    }

    async fn release_session(&self, id: &UploadSessionId, token: &str) -> Result<(), StoreError> {
        let (id, token) = (id.clone(), token.to_owned());
        self.with_conn("release_session", move |c| {
            sessions::release(c, &id, &token)
        })
        .await
    }

    async fn delete_session(&self, id: &UploadSessionId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.with_conn("delete_session", move |c| sessions::delete(c, &id))
            .await
    }

    async fn expired_sessions(&self) -> Result<Vec<UploadSession>, StoreError> {
        self.with_conn_read("expired_sessions", sessions::expired)
            .await
    }

    async fn delete_expired_session(&self, id: &UploadSessionId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.with_conn("delete_expired_session", move |c| {
            sessions::delete_expired(c, &id)
        })
        .await
    }
}

#[async_trait]
impl AuditStore for DieselStore {
    async fn append_audit(&self, event: NewAuditEvent) -> Result<(), StoreError> {
        self.with_conn("append_audit", move |c| audit::append(c, &event))
            .await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Page<AuditEvent>, StoreError> {
        let query = query.clone();
        self.with_conn("list_audit", move |c| audit::list(c, &query))
            .await
    }
}

#[async_trait]
impl OwnershipStore for DieselStore {
    async fn may_act(&self, name: &PackageName, actor: &Actor) -> Result<bool, StoreError> {
        let (name, actor) = (name.to_string(), actor.clone());
        self.with_conn_read("may_act", move |c| owners::may_act(c, &name, &actor))
            .await
    }

    async fn owners(&self, name: &PackageName) -> Result<Option<Vec<Owner>>, StoreError> {
        let name = name.to_string();
        self.with_conn_read("owners", move |c| owners::list(c, &name))
            .await
    }

    async fn add_owner(&self, name: &PackageName, user_id: i64) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.with_conn("add_owner", move |c| owners::add(c, &name, user_id))
            .await
    }

    async fn remove_owner(&self, name: &PackageName, user_id: i64) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.with_conn("remove_owner", move |c| owners::remove(c, &name, user_id))
            .await
    }

    async fn add_team_owner(&self, name: &PackageName, team_id: i64) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.with_conn("add_team_owner", move |c| {
            owners::add_team(c, &name, team_id)
        })
        .await
    }

    async fn remove_team_owner(
        &self,
        name: &PackageName,
        team_id: i64,
    ) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.with_conn("remove_team_owner", move |c| {
            owners::remove_team(c, &name, team_id)
        })
        .await
    }

    async fn create_team(&self, name: &str, creator: i64) -> Result<Team, StoreError> {
        let name = name.to_owned();
        self.with_conn("create_team", move |c| {
            owners::create_team(c, &name, creator)
        })
        .await
    }

    async fn team(&self, name: &str) -> Result<Option<Team>, StoreError> {
        let name = name.to_owned();
        self.with_conn("team", move |c| owners::team(c, &name))
            .await
    }

    async fn teams(&self) -> Result<Vec<Team>, StoreError> {
        self.with_conn("teams", owners::teams).await
    }

    async fn add_member(&self, team_id: i64, user_id: i64) -> Result<(), StoreError> {
        self.with_conn("add_member", move |c| {
            owners::add_member(c, team_id, user_id)
        })
        .await
    }

    async fn remove_member(&self, team_id: i64, user_id: i64) -> Result<bool, StoreError> {
        self.with_conn("remove_member", move |c| {
            owners::remove_member(c, team_id, user_id)
        })
        .await
    }
}
