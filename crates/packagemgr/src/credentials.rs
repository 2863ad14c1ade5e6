//! Who is calling: session tokens checked against the user's current state, and API tokens
//! for machines. Both are looked up in the database at most once a `freshness` interval per
//! replica (a small cache), so a revoked or changed credential stops working everywhere
//! within that interval, without a query on every request.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use agentpkg_model::{
    ApiToken, AuditAction, Entity, NameScope, NewAuditEvent, PackageName, Role, TokenScope,
    ValidationError,
};
use agentpkg_store::{DynTokenStore, NewToken, StoreError, UserState};
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::{Accounts, Error};

/// What every API token's secret starts with, so that secret scanners recognise one.
pub const TOKEN_PREFIX: &str = "apk_";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub user_id: i64,
    pub username: String,
    /// What the caller may do: the user's role, or for a token, the lesser of its scope and
    /// its owner's role.
    pub role: Role,
    /// Which package names the caller may touch.
    pub names: NameScope,
    /// The API token used, if any: its id and name.
    pub token: Option<(i64, String)>,
    /// The user's credentials version when this was checked (a session is valid only
    /// while it holds).
    pub version: i64,
}

/// Who asks for an operation, and from where: what an operation decides on, and what it
/// records in the audit log. A service embedding `packagemgr` makes one with
/// [`Caller::new`]; the API adds the client's address and the request's id.
#[derive(Debug, Clone)]
pub struct Caller {
    pub credential: Credential,
    pub address: Option<String>,
    pub request_id: Option<String>,
}

impl Caller {
    pub fn new(credential: Credential) -> Self {
        Self {
            credential,
            address: None,
            request_id: None,
        }
    }

    /// An audit event of `action` by this caller, from where it called.
    pub fn event(&self, action: AuditAction) -> NewAuditEvent {
        let mut event = self.credential.audit_event(action);
        event.address = self.address.clone();
        event.request_id = self.request_id.clone();
        event
    }
}

/// What a short-lived credential made from a caller's (an OpAMP offer's download header)
/// stays bound to: it works only while this does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holder {
    /// An API token: until it is revoked, expires, or its user is deleted.
    Token(i64),
    /// A user's session: until the user is deleted or their credentials change.
    Session { user_id: i64, version: i64 },
}

impl Credential {
    pub fn may_touch(&self, name: &PackageName) -> bool {
        self.names.allows(name)
    }

    /// What a credential derived from this one stays bound to.
    pub fn holder(&self) -> Holder {
        match &self.token {
            Some((id, _)) => Holder::Token(*id),
            None => Holder::Session {
                user_id: self.user_id,
                version: self.version,
            },
        }
    }

    /// An audit event of `action` by this caller: its user, and the API token used.
    pub fn audit_event(&self, action: AuditAction) -> NewAuditEvent {
        let mut event = NewAuditEvent::new(action);
        event.actor_id = Some(self.user_id);
        event.actor = Some(self.username.clone());
        event.token_name = self.token.as_ref().map(|(_, name)| name.clone());
        event
    }
}

/// A token to create.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub name: String,
    pub scope: TokenScope,
    pub packages: NameScope,
    pub expires_at: Option<DateTime<Utc>>,
}

const CACHE_ENTRIES: u64 = 10_000;

/// A bounded map whose entries are trusted for `ttl`. Concurrent misses of one key wait
/// for one load (moka's `try_get_with`): a thousand agents on one token whose entry just
/// expired cost one query, not a thousand queued on the blocking pool.
type FreshCache<K, V> = moka::future::Cache<K, V>;

fn fresh_cache<K, V>(ttl: Duration) -> FreshCache<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    moka::future::Cache::builder()
        .max_capacity(CACHE_ENTRIES)
        .time_to_live(ttl)
        .build()
}

/// A load's error, as each waiter gets it: the loader's own, or (shared with others) the
/// database as unavailable.
pub(crate) fn shared(e: Arc<StoreError>) -> Error {
    match Arc::try_unwrap(e) {
        Ok(e) => e.into(),
        Err(e) => Error::DatabaseUnavailable(StoreError::Unavailable(e.to_string())),
    }
}

/// The caches behind credential checks, shared by an [`Accounts`]'s clones.
pub(crate) struct CredentialCache {
    pub(crate) users: FreshCache<i64, Option<UserState>>,
    pub(crate) tokens: FreshCache<String, Option<(ApiToken, UserState)>>,
    /// Whether the token of an id still holds, for credentials derived from it.
    pub(crate) token_ids: FreshCache<i64, bool>,
    /// Whether a session (by its token's hash) was signed out.
    pub(crate) ended: FreshCache<String, bool>,
}

impl CredentialCache {
    pub(crate) fn new(freshness: Duration) -> Arc<Self> {
        Arc::new(Self {
            users: fresh_cache(freshness),
            tokens: fresh_cache(freshness),
            token_ids: fresh_cache(freshness),
            ended: fresh_cache(freshness),
        })
    }
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Accounts {
    fn tokens(&self) -> Result<&DynTokenStore, Error> {
        self.tokens
            .as_ref()
            .ok_or_else(|| Error::Internal("no token store configured".into()))
    }

    async fn user_state(&self, user_id: i64) -> Result<Option<UserState>, Error> {
        self.cache
            .users
            .try_get_with(user_id, self.store.user_state(user_id))
            .await
            .map_err(shared)
    }

    /// The caller of the session `token`, which names `user_id` at credentials `version`:
    /// refused once signed out ([`Accounts::end_session`], on every replica within the
    /// freshness interval), and as [`Accounts::session`] refuses.
    pub async fn signed_in(
        &self,
        token: &str,
        user_id: i64,
        version: i64,
    ) -> Result<Credential, Error> {
        if self.session_ended(token).await? {
            return Err(Error::Revoked);
        }
        self.session(user_id, version).await
    }

    /// Whether the session `token` was signed out (trusted for the freshness interval).
    pub async fn session_ended(&self, token: &str) -> Result<bool, Error> {
        let hash = secret_hash(token);
        self.cache
            .ended
            .try_get_with(hash.clone(), self.store.session_ended(&hash))
            .await
            .map_err(shared)
    }

    /// Signs the session `token` out for good, on every replica: it would have been valid
    /// until `expires_at`. Only its hash is kept.
    pub async fn end_session(&self, token: &str, expires_at: DateTime<Utc>) -> Result<(), Error> {
        let hash = secret_hash(token);
        self.store.end_session(hash.clone(), expires_at).await?;
        self.cache.ended.insert(hash, true).await;
        Ok(())
    }

    /// The caller a session token names, if its user still exists and its credentials have
    /// not changed since it was issued (`version`).
    pub async fn session(&self, user_id: i64, version: i64) -> Result<Credential, Error> {
        match self.user_state(user_id).await? {
            Some(user) if user.credentials_version == version => Ok(Credential {
                user_id,
                username: user.username,
                role: user.role,
                names: NameScope::All,
                token: None,
                version,
            }),
            _ => Err(Error::Revoked),
        }
    }

    /// The caller an API token's secret names.
    pub async fn authenticate_token(&self, secret: &str) -> Result<Credential, Error> {
        let hash = secret_hash(secret);
        let tokens = self.tokens()?;
        let load = async {
            let found = tokens.token_by_secret_hash(&hash).await?;
            if let Some((token, _)) = &found {
                // At most once a freshness interval per replica: cheap, and enough to
                // tell which tokens are still in use.
                if let Err(e) = tokens.touch_token(token.id).await {
                    tracing::warn!(token_id = token.id, error = %e, "could not record the token's use");
                }
            }
            Ok::<_, StoreError>(found)
        };
        let found = self
            .cache
            .tokens
            .try_get_with(hash.clone(), load)
            .await
            .map_err(shared)?;
        let Some((token, owner)) = found else {
            return Err(Error::Revoked);
        };
        if token.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(Error::TokenExpired);
        }
        Ok(Credential {
            user_id: owner.id,
            username: owner.username,
            role: token.scope.role().min(owner.role),
            names: token.packages.clone(),
            token: Some((token.id, token.name)),
            version: owner.credentials_version,
        })
    }

    /// Whether `holder` still holds: the token is not revoked or expired and its user
    /// exists; the session's user exists with the same credentials. Trusted for the same
    /// freshness interval as every credential check.
    pub async fn holds(&self, holder: Holder) -> Result<bool, Error> {
        match holder {
            Holder::Session { user_id, version } => Ok(self
                .user_state(user_id)
                .await?
                .is_some_and(|u| u.credentials_version == version)),
            Holder::Token(id) => {
                let tokens = self.tokens()?;
                let load = async {
                    Ok(match tokens.get_token(id).await? {
                        Some(token) => {
                            token.expires_at.is_none_or(|at| at > Utc::now())
                                && self.user_state(token.user_id).await?.is_some()
                        }
                        None => false,
                    })
                };
                self.cache
                    .token_ids
                    .try_get_with(id, load)
                    .await
                    .map_err(|e: Arc<Error>| match Arc::try_unwrap(e) {
                        Ok(e) => e,
                        Err(e) => {
                            Error::DatabaseUnavailable(StoreError::Unavailable(e.to_string()))
                        }
                    })
            }
        }
    }

    /// Creates a token for the caller. Its scope may not exceed the caller's role, and a
    /// caller signed in with a token cannot make more (a limited token could otherwise
    /// make an unlimited one). Returns the token and its secret, shown this once.
    pub async fn create_token(
        &self,
        caller: &Credential,
        request: TokenRequest,
    ) -> Result<(ApiToken, SecretString), Error> {
        self.create_token_for(caller.user_id, caller.role, caller.token.is_some(), request)
            .await
    }

    /// Creates a token for `user_id`, whose role is `role` (bootstrap: `create-token`).
    pub async fn create_token_for(
        &self,
        user_id: i64,
        role: Role,
        by_token: bool,
        request: TokenRequest,
    ) -> Result<(ApiToken, SecretString), Error> {
        if by_token {
            return Err(Error::Forbidden(
                "API tokens are created by signing in, not with another token".into(),
            ));
        }
        if !role.includes(request.scope.role()) {
            return Err(Error::Forbidden(format!(
                "a {} token needs the {} role; you have {role}",
                request.scope,
                request.scope.role()
            )));
        }
        let name = request.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "name",
                "must be 1 to 100 characters, without control characters",
            )
            .into());
        }
        if request.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(ValidationError::new("expires_at", "must be in the future").into());
        }
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            Alphanumeric.sample_string(&mut rand::rng(), 32)
        );
        let token = self
            .tokens()?
            .create_token(NewToken {
                user_id,
                name: name.to_owned(),
                scope: request.scope,
                packages: request.packages,
                secret_hash: secret_hash(&secret),
                expires_at: request.expires_at,
            })
            .await?;
        tracing::info!(user_id, token_id = token.id, token_name = %token.name, scope = %token.scope, "API token created");
        Ok((token, SecretString::from(secret)))
    }

    /// The caller's tokens; an admin's `everyone` lists every user's.
    pub async fn list_tokens(
        &self,
        caller: &Credential,
        everyone: bool,
    ) -> Result<Vec<ApiToken>, Error> {
        let user = if everyone && caller.role == Role::Admin {
            None
        } else {
            Some(caller.user_id)
        };
        Ok(self.tokens()?.list_tokens(user).await?)
    }

    /// Revokes a token of the caller's (any, for an admin). Someone else's token is "not
    /// found", so that ids reveal nothing.
    pub async fn revoke_token(&self, caller: &Credential, id: i64) -> Result<(), Error> {
        let tokens = self.tokens()?;
        let token = tokens
            .get_token(id)
            .await?
            .ok_or(Error::NotFound(Entity::Token))?;
        if token.user_id != caller.user_id && caller.role != Role::Admin {
            return Err(Error::NotFound(Entity::Token));
        }
        // As a token cannot make tokens, it cannot unmake its siblings: a fleet's read token
        // limited to a few names must not revoke its owner's CI token.
        if let Some((own, _)) = &caller.token
            && *own != id
        {
            return Err(Error::Forbidden(
                "a token may revoke only itself; sign in to revoke other tokens".into(),
            ));
        }
        if !tokens.delete_token(id).await? {
            return Err(Error::NotFound(Entity::Token));
        }
        self.cache.token_ids.invalidate(&id).await;
        tracing::info!(
            token_id = id,
            owner = token.user_id,
            by = caller.user_id,
            "API token revoked"
        );
        Ok(())
    }

    /// Forgets what this replica knows of a user, after changing them here (other replicas
    /// forget within the freshness interval).
    pub(crate) async fn forget_user(&self, user_id: i64) {
        self.cache.users.invalidate(&user_id).await;
    }
}
