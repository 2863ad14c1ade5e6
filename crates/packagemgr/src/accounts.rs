//! User accounts: password hashing (Argon2id), login, user management, first admin.

use std::sync::Arc;
use std::time::Duration;

use agentpkg_model::{Password, Role, User, Username};
use agentpkg_store::{DynAccountStore, DynTokenStore, StoreError};
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
        }
    }

    /// The same accounts with API tokens from `tokens`, and credential checks trusted for
    /// `freshness` (see [`DEFAULT_FRESHNESS`]).
    pub fn with_tokens(mut self, tokens: DynTokenStore, freshness: Duration) -> Self {
        self.tokens = Some(tokens);
        self.cache = CredentialCache::new(freshness);
        self
    }

    /// The user with this username and password, or [`Error::BadCredentials`]; or
    /// [`Error::Busy`] when too many passwords are being checked already.
    pub async fn login(&self, username: &str, password: SecretString) -> Result<SignedIn, Error> {
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
            .ok_or(Error::UserNotFound)?;
        self.forget_user(id);
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
                .ok_or(Error::UserNotFound)?;
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
            return Err(Error::UserNotFound);
        }
        self.forget_user(id);
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
            self.forget_user(id);
            tracing::info!(user_id = id, "user deleted");
            Ok(())
        } else {
            Err(Error::UserNotFound)
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
