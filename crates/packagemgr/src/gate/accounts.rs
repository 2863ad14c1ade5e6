//! Accounts acting for one caller: users, roles, passwords, tokens, sessions.

use agentpkg_model::{AuditAction, NewAuditEvent, Password, Role, User, Username};
use secrecy::SecretString;

use super::settle;
use crate::{Accounts, AuditLog, Caller, Credential, Error, SignedIn, TokenRequest};

/// Accounts acting for one caller; see the module's notes.
pub struct AccountGate<'a> {
    accounts: &'a Accounts,
    caller: &'a Caller,
}

impl Accounts {
    /// The operations of `caller` on users, tokens and sessions, decided and recorded by
    /// the gate.
    pub fn gate<'a>(&'a self, caller: &'a Caller) -> AccountGate<'a> {
        AccountGate {
            accounts: self,
            caller,
        }
    }

    /// The audit log the gate records in, when one is set up.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// Checks a username and password from `address` (throttled per address), and
    /// records the outcome: a success under the user, a failure under the name tried
    /// (never the password). The API and the web interface both sign in through it.
    pub async fn sign_in(
        &self,
        username: &str,
        password: SecretString,
        address: Option<std::net::IpAddr>,
        request_id: Option<String>,
    ) -> Result<SignedIn, Error> {
        let result = self.login_from(username, password, address).await;
        if let Some(audit) = &self.audit {
            let action = match &result {
                Ok(_) => AuditAction::Login,
                Err(Error::BadCredentials) => AuditAction::LoginFailed,
                Err(_) => return result,
            };
            let mut event = NewAuditEvent::new(action);
            event.address = address.map(|a| a.to_string());
            event.request_id = request_id;
            // The account signed in to (or tried).
            event.subject = Some(username.chars().take(64).collect());
            match &result {
                Ok(signed_in) => {
                    event.actor_id = Some(signed_in.user.id);
                    event.actor = Some(signed_in.user.username.to_string());
                }
                Err(_) => event.actor = Some(username.chars().take(64).collect()),
            }
            audit.record(event).await;
        }
        result
    }
}

impl AccountGate<'_> {
    fn audit(&self) -> Option<&AuditLog> {
        self.accounts.audit.as_ref()
    }

    /// Refuses, and records the refusal of, a request that needs `role` the caller does
    /// not hold; `what` names the request (`DELETE /api/v1/users/{id}`). Requests that
    /// change nothing (`changes` false) are refused without a record.
    ///
    /// NOTE: the refusal is answered at once and recorded beside it (a task on the
    /// runtime): a request's other parts (its body) must not be read, or answered, first.
    pub fn require(&self, role: Role, what: &str, changes: bool) -> Result<(), Error> {
        let result = self.caller.require(role);
        if changes && let (Err(Error::Forbidden(reason)), Some(audit)) = (&result, self.audit()) {
            let mut event = self.caller.event(AuditAction::AccessDenied).refused(reason);
            event.subject = Some(what.to_owned());
            let audit = audit.clone();
            tokio::spawn(async move { audit.record(event).await });
        }
        result
    }

    /// Creates a user (admin).
    pub async fn create_user(
        &self,
        username: &Username,
        password: &Password,
        role: Role,
    ) -> Result<User, Error> {
        let result = async {
            self.caller.require(Role::Admin)?;
            self.accounts.create_user(username, password, role).await
        }
        .await;
        let event = |detail: String| {
            let mut event = self.caller.event(AuditAction::UserCreate);
            event.subject = Some(username.as_str().to_owned());
            event.detail = detail;
            event
        };
        settle(
            self.audit(),
            result,
            |u| event(u.role.to_string()),
            || event(role.to_string()),
        )
        .await
    }

    /// Deletes a user (admin; not oneself).
    pub async fn delete_user(&self, id: i64) -> Result<(), Error> {
        let event = || {
            let mut event = self.caller.event(AuditAction::UserDelete);
            event.subject = Some(format!("user {id}"));
            event
        };
        let result = async {
            self.caller.require(Role::Admin)?;
            self.accounts
                .delete_user(self.caller.credential.user_id, id)
                .await
        }
        .await;
        settle(self.audit(), result, |_| event(), event).await
    }

    /// Changes a user's role (admin; not one's own).
    pub async fn change_role(&self, id: i64, role: Role) -> Result<User, Error> {
        let event = |subject: String| {
            let mut event = self.caller.event(AuditAction::RoleChange);
            event.subject = Some(subject);
            event.detail = role.to_string();
            event
        };
        let result = async {
            self.caller.require(Role::Admin)?;
            self.accounts
                .change_role(self.caller.credential.user_id, id, role)
                .await
        }
        .await;
        settle(
            self.audit(),
            result,
            |u| event(u.username.to_string()),
            || event(format!("user {id}")),
        )
        .await
    }

    /// Changes a password: one's own with the current one, another's as an admin.
    pub async fn change_password(
        &self,
        id: i64,
        current: Option<SecretString>,
        new: &Password,
    ) -> Result<(), Error> {
        let event = || {
            let mut event = self.caller.event(AuditAction::PasswordChange);
            event.subject = Some(format!("user {id}"));
            event
        };
        let own = &self.caller.credential;
        let result = if own.user_id == id && own.token.is_some() {
            Err(Error::Forbidden(
                "a password is changed by a signed-in user, not with an API token".into(),
            ))
        } else {
            self.accounts.change_password(own, id, current, new).await
        };
        settle(self.audit(), result, |_| event(), event).await
    }

    /// Creates an API token for the caller (a signed-in user, not another token).
    pub async fn create_token(
        &self,
        request: TokenRequest,
    ) -> Result<(agentpkg_model::ApiToken, SecretString), Error> {
        let name = request.name.clone();
        let result = self
            .accounts
            .create_token(&self.caller.credential, request)
            .await;
        settle(
            self.audit(),
            result,
            |(token, _)| {
                let mut event = self.caller.event(AuditAction::TokenCreate);
                event.detail = format!("token {} {:?} ({})", token.id, token.name, token.scope);
                event
            },
            || {
                let mut event = self.caller.event(AuditAction::TokenCreate);
                event.detail = format!("token {name:?}");
                event
            },
        )
        .await
    }

    /// Revokes a token: one's own (the token itself, or any of one's own from a session),
    /// or anyone's as an admin.
    pub async fn revoke_token(&self, id: i64) -> Result<(), Error> {
        let event = || {
            let mut event = self.caller.event(AuditAction::TokenRevoke);
            event.detail = format!("token {id}");
            event
        };
        let result = self
            .accounts
            .revoke_token(&self.caller.credential, id)
            .await;
        settle(self.audit(), result, |_| event(), event).await
    }

    /// Ends the caller's session `token` (valid until `expires_at`) on every replica.
    pub async fn sign_out(
        &self,
        token: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), Error> {
        let result = self.accounts.end_session(token, expires_at).await;
        let event = || {
            let mut event = self.caller.event(AuditAction::Logout);
            event.subject = Some(self.caller.credential.username.clone());
            event
        };
        settle(self.audit(), result, |_| event(), event).await
    }

    /// The caller's credential.
    pub fn credential(&self) -> &Credential {
        &self.caller.credential
    }
}
