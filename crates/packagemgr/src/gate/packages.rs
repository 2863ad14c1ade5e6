//! A package manager acting for one caller: packages, owners, teams, keys, uploads.

use agentpkg_model::{
    AuditAction, Coordinates, DetachedSignature, Entity, ErrorCode, IdentityPattern,
    KeyFingerprint, KeyPatterns, LatestQuery, ListQuery, NewAuditEvent, NewSigstoreIdentity,
    OidcIssuer, Package, PackageName, PackagePatch, Page, Role, SigstoreIdentity, TrustedKey,
    UploadSession, UploadSessionId, User, VerifiedBy, VersionBuilds,
};
use agentpkg_store::{Owner, Team};

use super::settle;
use crate::{AuditLog, Caller, Error, PackageManager};

/// A package manager acting for one caller; see the module's notes.
pub struct PackageGate<'a> {
    manager: &'a PackageManager,
    caller: &'a Caller,
}

impl PackageManager {
    /// The operations of `caller`, decided and recorded by the gate.
    pub fn gate<'a>(&'a self, caller: &'a Caller) -> PackageGate<'a> {
        PackageGate {
            manager: self,
            caller,
        }
    }

    /// The audit log the gate records in, when one is set up.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// A package by id for the holder of a download credential made for exactly it (an
    /// OpAMP offer's): any other id is "not found".
    pub async fn offered(&self, granted: i64, coordinates: &Coordinates) -> Result<Package, Error> {
        let package = self.find(coordinates).await?;
        if package.id == granted {
            Ok(package)
        } else {
            Err(Error::NotFound(Entity::Package))
        }
    }
}

impl PackageGate<'_> {
    fn audit(&self) -> Option<&AuditLog> {
        self.manager.audit.as_ref()
    }

    /// A package by id.
    pub async fn get(&self, id: i64) -> Result<Package, Error> {
        let package = self.manager.read_get(id).await?;
        self.caller.reads(&package.name)?;
        Ok(package)
    }

    /// The package at exactly these coordinates, active or yanked.
    pub async fn find(&self, coordinates: &Coordinates) -> Result<Package, Error> {
        self.caller.reads(&coordinates.name)?;
        self.manager.read_find(coordinates).await
    }

    /// The latest active package a query matches.
    pub async fn latest(&self, query: &LatestQuery) -> Result<Package, Error> {
        self.caller.reads(&query.name)?;
        self.manager.read_latest(query).await
    }

    /// Every version of a name, newest first.
    pub async fn history(&self, name: &PackageName) -> Result<Vec<VersionBuilds>, Error> {
        self.caller.reads(name)?;
        self.manager.read_history(name).await
    }

    /// One page of packages, among the names the caller reaches.
    pub async fn list(&self, query: &ListQuery) -> Result<Page<Package>, Error> {
        let mut query = query.clone();
        query.names = self.caller.credential.names.clone();
        self.manager.list(&query).await
    }

    /// The owners of a name.
    pub async fn owners(&self, name: &PackageName) -> Result<Vec<Owner>, Error> {
        self.caller.reads(name)?;
        self.manager.owners(name).await
    }

    /// Yanks, restores or describes a package (publisher, owner); one event per change,
    /// recorded in the change's transaction where the store keeps the audit log.
    pub async fn change(&self, id: i64, patch: PackagePatch) -> Result<Package, Error> {
        // A name out of the caller's reach is refused (403) by the write check, and
        // recorded.
        let package = self.manager.get(id).await?;
        let actions: Vec<AuditAction> = [
            patch.is_active.map(|active| {
                if active {
                    AuditAction::Restore
                } else {
                    AuditAction::Yank
                }
            }),
            patch.description.as_ref().map(|_| AuditAction::Describe),
        ]
        .into_iter()
        .flatten()
        .collect();
        let first = actions.first().copied().unwrap_or(AuditAction::Describe);
        let events = self.events(&actions, &package);
        let result = async {
            self.caller.require(Role::Publisher)?;
            self.manager
                .update_recorded(id, patch, Some(&self.caller.actor()), events.clone())
                .await
        }
        .await;
        self.committed(result, events, first, &package).await
    }

    /// Deletes a package (admin), its event recorded with the row's deletion where the
    /// store keeps the audit log.
    pub async fn delete(&self, id: i64) -> Result<Package, Error> {
        let package = self.manager.get(id).await?;
        let events = self.events(&[AuditAction::Delete], &package);
        let result = async {
            self.caller.require(Role::Admin)?;
            self.manager
                .ensure_may_act(&package.name, &self.caller.actor())
                .await?;
            self.manager.delete_recorded(id, events.clone()).await
        }
        .await;
        self.committed(result, events, AuditAction::Delete, &package)
            .await
    }

    /// The events of `actions` on `package`, when there is an audit log to record them.
    fn events(&self, actions: &[AuditAction], package: &Package) -> Vec<NewAuditEvent> {
        if self.audit().is_none() {
            return Vec::new();
        }
        actions
            .iter()
            .map(|action| self.caller.package_event(*action, package))
            .collect()
    }

    /// Settles a change whose `events` went to the store with it: logged when the store
    /// recorded them in the change's transaction, recorded now when it handed them back,
    /// and a refusal recorded as `attempted` on `package`.
    async fn committed(
        &self,
        result: Result<(Package, Vec<NewAuditEvent>), Error>,
        events: Vec<NewAuditEvent>,
        attempted: AuditAction,
        package: &Package,
    ) -> Result<Package, Error> {
        let Some(audit) = self.audit() else {
            return result.map(|(p, _)| p);
        };
        match result {
            Ok((changed, unrecorded)) => {
                if unrecorded.is_empty() {
                    events.iter().for_each(AuditLog::logged);
                } else {
                    for event in unrecorded {
                        audit.record(event).await;
                    }
                }
                Ok(changed)
            }
            Err(Error::Forbidden(reason)) => {
                let event = self.caller.package_event(attempted, package);
                audit.record(event.refused(reason.clone())).await;
                Err(Error::Forbidden(reason))
            }
            Err(e) => Err(e),
        }
    }

    /// Signs an existing package (publisher, owner; replacing a verified signature:
    /// admin).
    pub async fn attach_signature(
        &self,
        id: i64,
        signature: DetachedSignature,
    ) -> Result<Package, Error> {
        let package = self.manager.get(id).await?;
        let result = async {
            self.caller.require(Role::Publisher)?;
            self.manager
                .attach_signature(id, signature, Some(&self.caller.actor()))
                .await
        }
        .await;
        let signed = |p: &Package| {
            let mut event = self.caller.package_event(AuditAction::SignatureAttach, p);
            if let Some(v) = p.signature.as_ref().and_then(|s| s.verified_by.as_ref()) {
                match &v.by {
                    VerifiedBy::Key(key) => event.detail.push_str(&format!(" key:{key}")),
                    VerifiedBy::Sigstore { identity, .. } => event.detail.push_str(&format!(
                        " sigstore-identity:{identity} signer:{}",
                        v.signer
                    )),
                }
            }
            event
        };
        settle(self.audit(), result, signed, || {
            self.caller
                .package_event(AuditAction::SignatureAttach, &package)
        })
        .await
    }

    /// Adds or removes an owner of `name`: a user, or a team (publisher, owner).
    pub async fn change_owner(
        &self,
        name: &PackageName,
        owner: &OwnerRef,
        add: bool,
    ) -> Result<(), Error> {
        let action = if add {
            AuditAction::OwnerAdd
        } else {
            AuditAction::OwnerRemove
        };
        let event = || {
            let mut event = self.caller.event(action);
            event.package = Some(name.to_string());
            event.subject = Some(owner.to_string());
            event
        };
        let result = async {
            self.caller.require(Role::Publisher)?;
            let actor = self.caller.actor();
            let m = self.manager;
            match (owner, add) {
                (OwnerRef::Team(team), true) => m.add_team_owner(&actor, name, team).await,
                (OwnerRef::Team(team), false) => m.remove_team_owner(&actor, name, team).await,
                (OwnerRef::User(user), true) => m.add_owner(&actor, name, user.id).await,
                (OwnerRef::User(user), false) => m.remove_owner(&actor, name, user.id).await,
            }
        }
        .await;
        settle(self.audit(), result, |_| event(), event).await
    }

    /// Creates a team with the caller as its first member (publisher).
    pub async fn create_team(&self, name: &str) -> Result<Team, Error> {
        let event = || {
            let mut event = self.caller.event(AuditAction::TeamCreate);
            event.subject = Some(format!("team:{name}"));
            event
        };
        let result = async {
            self.caller.require(Role::Publisher)?;
            self.manager.create_team(&self.caller.actor(), name).await
        }
        .await;
        settle(self.audit(), result, |_| event(), event).await
    }

    /// Adds or removes a member of a team (a member, or an admin).
    pub async fn change_member(&self, team: &str, user: &User, add: bool) -> Result<Team, Error> {
        let action = if add {
            AuditAction::MemberAdd
        } else {
            AuditAction::MemberRemove
        };
        let event = || {
            let mut event = self.caller.event(action);
            event.subject = Some(user.username.to_string());
            event.detail = format!("team:{team}");
            event
        };
        let result = async {
            self.caller.require(Role::Publisher)?;
            self.manager
                .change_member(&self.caller.actor(), team, user.id, add)
                .await
        }
        .await;
        settle(self.audit(), result, |_| event(), event).await
    }

    /// Trusts an OpenPGP key for the names `patterns` match, or updates it (admin).
    pub async fn add_key(
        &self,
        material: &str,
        patterns: KeyPatterns,
    ) -> Result<(TrustedKey, bool), Error> {
        let result = async {
            self.caller.require(Role::Admin)?;
            let keyring = self
                .manager
                .keyring()
                .ok_or(Error::NotFound(Entity::SigningKey))?;
            keyring
                .add(material, patterns, Some(self.caller.credential.user_id))
                .await
        }
        .await;
        settle(
            self.audit(),
            result,
            |(key, created)| {
                let mut event = self.caller.event(AuditAction::KeyAdd);
                event.detail = format!(
                    "key {} {}",
                    key.fingerprint,
                    if *created { "trusted" } else { "updated" }
                );
                event
            },
            || self.caller.event(AuditAction::KeyAdd),
        )
        .await
    }

    /// Stops trusting a key (admin).
    pub async fn remove_key(&self, fingerprint: &KeyFingerprint) -> Result<(), Error> {
        let event = || {
            let mut event = self.caller.event(AuditAction::KeyRemove);
            event.detail = format!("key {fingerprint}");
            event
        };
        let result = async {
            self.caller.require(Role::Admin)?;
            let keyring = self
                .manager
                .keyring()
                .ok_or(Error::NotFound(Entity::SigningKey))?;
            keyring.remove(fingerprint).await
        }
        .await;
        settle(self.audit(), result, |_| event(), event).await
    }

    /// Trusts a keyless Sigstore signer for some names (admin).
    pub async fn add_sigstore_identity(
        &self,
        patterns: KeyPatterns,
        issuer: OidcIssuer,
        san: IdentityPattern,
    ) -> Result<SigstoreIdentity, Error> {
        let result = async {
            self.caller.require(Role::Admin)?;
            let keyring = self
                .manager
                .keyring()
                .ok_or(Error::NotFound(Entity::SigstoreIdentity))?;
            keyring
                .add_identity(NewSigstoreIdentity {
                    patterns,
                    issuer,
                    san,
                    added_by: Some(self.caller.credential.user_id),
                })
                .await
        }
        .await;
        settle(
            self.audit(),
            result,
            |identity| {
                let mut event = self.caller.event(AuditAction::SigstoreIdentityAdd);
                event.detail = format!(
                    "sigstore identity {}: issuer {} identity {}",
                    identity.id,
                    identity.issuer,
                    identity.san.as_str()
                );
                event
            },
            || self.caller.event(AuditAction::SigstoreIdentityAdd),
        )
        .await
    }

    /// Stops trusting a Sigstore signer (admin); what it verified keeps the record.
    pub async fn remove_sigstore_identity(&self, id: i64) -> Result<(), Error> {
        let event = || {
            let mut event = self.caller.event(AuditAction::SigstoreIdentityRemove);
            event.detail = format!("sigstore identity {id}");
            event
        };
        let result = async {
            self.caller.require(Role::Admin)?;
            let keyring = self
                .manager
                .keyring()
                .ok_or(Error::NotFound(Entity::SigstoreIdentity))?;
            keyring.remove_identity(id).await
        }
        .await;
        settle(self.audit(), result, |_| event(), event).await
    }

    /// Opens a resumable upload (publisher): recorded with its kind, length and target.
    pub async fn open_session(&self, new: crate::NewSession) -> Result<UploadSession, Error> {
        let detail = format!(
            "{} upload of {} bytes{}",
            new.kind.as_str(),
            new.length,
            new.target.as_ref().map_or_else(String::new, |t| format!(
                " for {} {} {}/{}",
                t.coordinates.name,
                t.coordinates.version,
                t.coordinates.platform,
                t.coordinates.arch
            ))
        );
        let name = new.target.as_ref().map(|t| t.coordinates.name.to_string());
        let event = || {
            let mut event = self.caller.event(AuditAction::UploadOpen);
            event.package.clone_from(&name);
            event.detail.clone_from(&detail);
            event
        };
        let result = async {
            self.caller.require(Role::Publisher)?;
            self.manager
                .create_session(new, Some(&self.caller.actor()))
                .await
        }
        .await;
        settle(
            self.audit(),
            result,
            |s| {
                let mut event = event();
                event.subject = Some(format!("upload {}", s.id));
                event
            },
            event,
        )
        .await
    }

    /// Cancels one's own resumable upload (or anyone's, as an admin).
    pub async fn cancel_session(&self, id: &UploadSessionId) -> Result<(), Error> {
        let event = || {
            let mut event = self.caller.event(AuditAction::UploadCancel);
            event.subject = Some(format!("upload {id}"));
            event
        };
        let result = async {
            self.caller.require(Role::Publisher)?;
            self.manager.terminate(id, Some(&self.caller.actor())).await
        }
        .await;
        settle(self.audit(), result, |_| event(), event).await
    }

    /// Grants a direct upload of `size` bytes (publisher): recorded with its target.
    pub async fn begin_direct(
        &self,
        meta: crate::UploadMeta,
        size: u64,
    ) -> Result<crate::DirectGrant, Error> {
        let c = meta.coordinates.clone();
        let event = || {
            let mut event = self.caller.event(AuditAction::UploadOpen);
            event.package = Some(c.name.to_string());
            event.detail = format!(
                "direct upload of {size} bytes for {} {} {}/{}",
                c.name, c.version, c.platform, c.arch
            );
            event
        };
        let result = async {
            self.caller.require(Role::Publisher)?;
            let mut meta = meta;
            meta.publisher = Some(self.caller.actor());
            self.manager.begin_direct(meta, size).await
        }
        .await;
        settle(
            self.audit(),
            result,
            |g| {
                let mut event = event();
                event.subject = Some(format!("upload {}", g.upload.id));
                event
            },
            event,
        )
        .await
    }

    /// Records how an upload by this caller ended, on any route (form, raw body, tus,
    /// direct): the package published, or the stable code it was refused with. The
    /// decision itself was taken by the upload (role, name scope, ownership, signature).
    pub async fn settle_upload(&self, outcome: Result<&Package, ErrorCode>) {
        let Some(audit) = self.audit() else {
            return;
        };
        let event = match outcome {
            Ok(package) => self.caller.package_event(AuditAction::Publish, package),
            Err(code) => {
                let mut event = self.caller.event(AuditAction::UploadRefused);
                event.detail = code.as_str().to_owned();
                event
            }
        };
        audit.record(event).await;
    }
}

/// An owner named in a change: a user, or a team.
#[derive(Debug, Clone)]
pub enum OwnerRef {
    User(User),
    Team(String),
}

impl std::fmt::Display for OwnerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OwnerRef::User(user) => f.write_str(user.username.as_str()),
            OwnerRef::Team(team) => write!(f, "team:{team}"),
        }
    }
}
