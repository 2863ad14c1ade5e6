//! User accounts: password hashing (Argon2id), login, user management, first admin.

use std::sync::OnceLock;

use agentpkg_model::{Password, Role, User, Username};
use agentpkg_store::{DynStore, StoreError};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::distr::{Alphanumeric, SampleString};
use secrecy::{ExposeSecret, SecretString};

use crate::Error;

/// Verified against when the username is unknown, so that a login takes as long for a
/// missing user as for a wrong password. Made on first use, on the blocking pool.
static DECOY_HASH: OnceLock<Option<String>> = OnceLock::new();

/// Accounts and their credentials.
#[derive(Clone)]
pub struct Accounts {
    store: DynStore,
}

impl Accounts {
    pub fn new(store: DynStore) -> Self {
        Self { store }
    }

    /// The user with this username and password, or [`Error::BadCredentials`].
    pub async fn login(&self, username: &str, password: SecretString) -> Result<User, Error> {
        let found = self.store.user_credentials(username).await?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        let verified = tokio::task::spawn_blocking(move || {
            let hash = match hash {
                Some(h) => h,
                None => DECOY_HASH
                    .get_or_init(|| hash_blocking("decoy password never used to log in").ok())
                    .clone()?,
            };
            let parsed = PasswordHash::new(&hash).ok()?;
            Argon2::default()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .ok()
        })
        .await
        .map_err(|e| Error::Internal(format!("password check failed: {e}")))?;
        match (user, verified) {
            (Some(user), Some(())) => Ok(user),
            _ => Err(Error::BadCredentials),
        }
    }

    pub async fn create_user(
        &self,
        username: &Username,
        password: &Password,
        role: Role,
    ) -> Result<User, Error> {
        let secret = password.expose().to_owned();
        let hash = tokio::task::spawn_blocking(move || hash_blocking(&secret))
            .await
            .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))??;
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

    pub async fn delete_user(&self, id: i64) -> Result<(), Error> {
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
            None => (
                Password::parse(&Alphanumeric.sample_string(&mut rand::rng(), 24))?,
                true,
            ),
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

fn hash_blocking(password: &str) -> Result<String, Error> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| Error::Internal(format!("salt encoding failed: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
}
