//! User accounts: password hashing (Argon2id), login, user management, first admin.

use agentpkg_model::{Password, Role, User, Username};
use agentpkg_store::{DynAccountStore, StoreError};
use rand::distr::{Alphanumeric, SampleString};
use secrecy::{ExposeSecret, SecretString};

use crate::Error;
use crate::passwords::{HashingLimits, PasswordHasher};

/// Accounts and their credentials.
#[derive(Clone)]
pub struct Accounts {
    store: DynAccountStore,
    hasher: PasswordHasher,
}

impl Accounts {
    /// Starts the password hashing threads (`limits`); they stop when the last clone of
    /// these accounts is dropped.
    pub fn new(store: DynAccountStore, limits: HashingLimits) -> Self {
        Self {
            store,
            hasher: PasswordHasher::start(limits),
        }
    }

    /// The user with this username and password, or [`Error::BadCredentials`]; or
    /// [`Error::Busy`] when too many passwords are being checked already.
    pub async fn login(&self, username: &str, password: SecretString) -> Result<User, Error> {
        let found = self.store.user_credentials(username).await?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            // An unknown username costs the same work as a wrong password.
            None => (None, None),
        };
        let verified = self.hasher.verify(password, hash).await?;
        match (user, verified) {
            (Some(user), true) => Ok(user),
            _ => Err(Error::BadCredentials),
        }
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
