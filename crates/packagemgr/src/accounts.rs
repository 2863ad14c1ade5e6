//! User accounts: password hashing (Argon2id), login, user management, first admin.

use std::sync::Arc;
use std::time::Duration;

use agentpkg_model::{Entity, Password, Role, User, Username};
use std::net::IpAddr;

use agentpkg_store::{DynAccountStore, DynTokenStore, LoginLimit, StoreError};
use rand::distr::{Alphanumeric, SampleString};
use secrecy::{ExposeSecret, SecretString};

use crate::Error;
use crate::credentials::CredentialCache;
use crate::passwords::{HashingLimits, PasswordHasher};

/// How long a replica trusts what it read of a user or a token: a revoked or changed
/// credential stops working everywhere within this.
pub const DEFAULT_FRESHNESS: Duration = Duration::from_secs(1);

/// Accounts and their credentials.
#[derive(Clone)]
pub struct Accounts {
    pub(crate) store: DynAccountStore,
    pub(crate) tokens: Option<DynTokenStore>,
    hasher: PasswordHasher,
    pub(crate) cache: Arc<CredentialCache>,
    throttle: Option<LoginThrottle>,
    pub(crate) audit: Option<crate::AuditLog>,
}

/// Failed logins allowed per username from one address, and per address whatever the
/// username, before further attempts are refused for a while (`429`). Keyed by address,
/// so a guesser elsewhere never locks the real user out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    pub per_user: LoginLimit,
    pub per_address: LoginLimit,
}

/// A successful password check: the user, and the version of their credentials that a
/// session token must name.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    pub credentials_version: i64,
}

impl Accounts {
    /// Starts the password hashing threads (`limits`); they stop when the last clone of
    /// these accounts is dropped.
    pub fn new(store: DynAccountStore, limits: HashingLimits) -> Self {
        Self {
            store,
            tokens: None,
            hasher: PasswordHasher::start(limits),
            cache: CredentialCache::new(DEFAULT_FRESHNESS),
            throttle: None,
            audit: None,
        }
    }

    /// The same accounts recording what their gate decides in `audit`.
    pub fn with_audit(mut self, audit: crate::AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The same accounts, throttling failed logins.
    pub fn with_throttle(mut self, throttle: LoginThrottle) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// The same accounts with API tokens from `tokens`, and credential checks trusted for
    /// `freshness` (see [`DEFAULT_FRESHNESS`]).
    pub fn with_tokens(mut self, tokens: DynTokenStore, freshness: Duration) -> Self {
        self.tokens = Some(tokens);
        self.cache = CredentialCache::new(freshness);
        self
    }

    /// The user with this username and password, or [`Error::BadCredentials`]; or
    /// [`Error::Busy`] when too many passwords are being checked already. Not throttled:
    /// requests from clients go through [`Accounts::login_from`].
    pub async fn login(&self, username: &str, password: SecretString) -> Result<SignedIn, Error> {
        self.check_password(username, password).await
    }

    /// [`Accounts::login`] from a client address, throttled: once too many attempts
    /// failed, [`Error::Throttled`] until the block ends, before any password is checked.
    pub async fn login_from(
        &self,
        username: &str,
        password: SecretString,
        from: Option<IpAddr>,
    ) -> Result<SignedIn, Error> {
        let address = from.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let user_key = format!(
            "user:{}@{address}",
            username.chars().take(64).collect::<String>()
        );
        let address_key = format!("address:{address}");
        if let Some(throttle) = &self.throttle {
            let keys = [user_key.clone(), address_key.clone()];
            if let Some(until) = self.store.login_blocked(&keys).await? {
                return Err(Error::Throttled {
                    retry_after_secs: seconds_until(until),
                });
            }
            return match self.check_password(username, password).await {
                Err(Error::BadCredentials) => {
                    for (key, limit) in [
                        (&user_key, &throttle.per_user),
                        (&address_key, &throttle.per_address),
                    ] {
                        if let Some(until) = self.store.login_failed(key, limit).await? {
                            tracing::warn!(key = %key, seconds = seconds_until(until), "failed logins: further attempts refused for a while");
                        }
                    }
                    Err(Error::BadCredentials)
                }
                Ok(signed_in) => {
                    self.store.login_succeeded(&user_key).await?;
                    Ok(signed_in)
                }
                Err(e) => Err(e),
            };
        }
        self.check_password(username, password).await
    }

    async fn check_password(
        &self,
        username: &str,
        password: SecretString,
    ) -> Result<SignedIn, Error> {
        let found = self.store.user_credentials(username).await?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            // An unknown username costs the same work as a wrong password.
            None => (None, None),
        };
        let verified = self.hasher.verify(password, hash).await?;
        let user = match (user, verified) {
            (Some(user), true) => user,
            _ => return Err(Error::BadCredentials),
        };
        let state = self
            .store
            .user_state(user.id)
            .await?
            .ok_or(Error::BadCredentials)?;
        Ok(SignedIn {
            user,
            credentials_version: state.credentials_version,
        })
    }

    /// Changes user `id`'s role, on behalf of `actor`. Nobody changes their own role (the
    /// last admin cannot demote themselves by accident). Every session of the user ends.
    pub async fn change_role(&self, actor: i64, id: i64, role: Role) -> Result<User, Error> {
        if actor == id {
            return Err(Error::Conflict("you cannot change your own role".into()));
        }
        let user = self
            .store
            .set_role(id, role)
            .await?
            .ok_or(Error::NotFound(Entity::User))?;
        self.forget_user(id).await;
        tracing::info!(user_id = id, role = %role, by = actor, "role changed");
        Ok(user)
    }

    /// Changes user `id`'s password. Users changing their own must give the current one;
    /// an admin may reset another's without it. Every session of the user ends (their API
    /// tokens stay: they are revoked one by one).
    pub async fn change_password(
        &self,
        actor: &crate::Credential,
        id: i64,
        current: Option<SecretString>,
        new: &Password,
    ) -> Result<(), Error> {
        if actor.user_id == id {
            let current = current.ok_or_else(|| {
                agentpkg_model::ValidationError::new(
                    "current_password",
                    "is required to change your own password",
                )
            })?;
            let state = self
                .store
                .user_state(id)
                .await?
                .ok_or(Error::NotFound(Entity::User))?;
            match self.login(&state.username, current).await {
                Ok(_) => {}
                Err(Error::BadCredentials) => {
                    return Err(agentpkg_model::ValidationError::new(
                        "current_password",
                        "is not your current password",
                    )
                    .into());
                }
                Err(e) => return Err(e),
            }
        } else if actor.role != Role::Admin {
            return Err(Error::Forbidden(
                "only an admin changes another user's password".into(),
            ));
        }
        let hash = self
            .hasher
            .hash(SecretString::from(new.expose().to_owned()))
            .await?;
        if !self.store.set_password(id, hash).await? {
            return Err(Error::NotFound(Entity::User));
        }
        self.forget_user(id).await;
        tracing::info!(user_id = id, by = actor.user_id, "password changed");
        Ok(())
    }

    pub async fn create_user(
        &self,
        username: &Username,
        password: &Password,
        role: Role,
    ) -> Result<User, Error> {
        let hash = self
            .hasher
            .hash(SecretString::from(password.expose().to_owned()))
            .await?;
        match self.store.create_user(username, hash, role).await {
            Ok(user) => {
                tracing::info!(username = %user.username, role = %user.role, "user created");
                Ok(user)
            }
            Err(StoreError::Conflict) => Err(Error::Conflict(format!(
                "user {} already exists",
                username.as_str()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The user with this username.
    pub async fn find_user(&self, username: &str) -> Result<User, Error> {
        Ok(self
            .store
            .user_credentials(username)
            .await?
            .ok_or(Error::NotFound(Entity::User))?
            .0)
    }

    pub async fn list_users(&self) -> Result<Vec<User>, Error> {
        Ok(self.store.list_users().await?)
    }

    /// Deletes user `id` on behalf of user `actor`. Nobody deletes their own account, so
    /// the last admin cannot lock everyone out by accident.
    pub async fn delete_user(&self, actor: i64, id: i64) -> Result<(), Error> {
        if actor == id {
            return Err(Error::Conflict("you cannot delete your own account".into()));
        }
        if self.store.delete_user(id).await? {
            self.forget_user(id).await;
            tracing::info!(user_id = id, "user deleted");
            Ok(())
        } else {
            Err(Error::NotFound(Entity::User))
        }
    }

    /// On first start (no users at all) creates `admin` with the configured password, or
    /// with a random one that is returned for the caller to show once. There is no
    /// built-in default password.
    pub async fn ensure_admin(
        &self,
        configured: Option<&SecretString>,
    ) -> Result<Option<FirstAdmin>, Error> {
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let (password, generated) = match configured {
            Some(p) => (Password::parse(p.expose_secret())?, false),
            None => (generate_password()?, true),
        };
        let username = Username::parse("admin")?;
        let user = match self.create_user(&username, &password, Role::Admin).await {
            Ok(user) => user,
            // Another replica created it first.
            Err(Error::Conflict(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(FirstAdmin {
            user,
            generated_password: generated.then(|| SecretString::from(password.expose().to_owned())),
        }))
    }
}

/// The admin created on first start.
pub struct FirstAdmin {
    pub user: User,
    /// Set when no password was configured and one was generated.
    pub generated_password: Option<SecretString>,
}

/// A random password of 24 letters and digits (about 143 bits), for accounts created
/// without one.
pub fn generate_password() -> Result<Password, Error> {
    Ok(Password::parse(
        &Alphanumeric.sample_string(&mut rand::rng(), 24),
    )?)
}

/// Whole seconds from now until `until`, at least 1.
fn seconds_until(until: chrono::DateTime<chrono::Utc>) -> u64 {
    u64::try_from((until - chrono::Utc::now()).num_seconds())
        .unwrap_or(0)
        .max(1)
}
