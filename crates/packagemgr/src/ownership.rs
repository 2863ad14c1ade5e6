//! Package ownership and teams: who may publish to and change a name.

use agentpkg_model::{Actor, Entity, NameScope, PackageName, Username, ValidationError};
use agentpkg_store::{Owner, StoreError, Team};

use crate::{Error, PackageManager};

impl PackageManager {
    /// Fails with [`Error::Forbidden`] unless `actor` may publish to or change `name`: an
    /// admin, anyone while the name is unclaimed, otherwise its owners.
    /// A credential limited to names that do not reach `name` may not either.
    pub async fn ensure_may_act(&self, name: &PackageName, actor: &Actor) -> Result<(), Error> {
        if !actor.names.allows(name) {
            return Err(Error::Forbidden(format!(
                "this token may not touch the package {name}"
            )));
        }
        let Some(ownership) = &self.ownership else {
            return Ok(());
        };
        if ownership.may_act(name, actor).await? {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{name} belongs to its owners: only they (or an admin) may publish to or change it"
            )))
        }
    }

    /// The owners of a package name; [`Error::NotFound`] while nobody has claimed it.
    pub async fn owners(&self, name: &PackageName) -> Result<Vec<Owner>, Error> {
        self.ownership()?
            .owners(name)
            .await?
            .ok_or(Error::NotFound(Entity::Package))
    }

    /// Makes user `user_id` an owner of `name`, on behalf of `actor` (an owner or an admin).
    pub async fn add_owner(
        &self,
        actor: &Actor,
        name: &PackageName,
        user_id: i64,
    ) -> Result<(), Error> {
        self.owners(name).await?;
        self.ensure_may_act(name, actor).await?;
        if !self.ownership()?.add_owner(name, user_id).await? {
            return Err(Error::NotFound(Entity::Package));
        }
        tracing::info!(name = %name, user_id, by = actor.user_id, "package owner added");
        Ok(())
    }

    /// Removes user `user_id` from the owners of `name`, on behalf of `actor` (an owner or
    /// an admin). The last owner stays: a name always has one. An admin transfers a name
    /// by adding the new owner, then removing the old.
    pub async fn remove_owner(
        &self,
        actor: &Actor,
        name: &PackageName,
        user_id: i64,
    ) -> Result<(), Error> {
        self.owners(name).await?;
        self.ensure_may_act(name, actor).await?;
        match self.ownership()?.remove_owner(name, user_id).await {
            Ok(true) => {
                tracing::info!(name = %name, user_id, by = actor.user_id, "package owner removed");
                Ok(())
            }
            Ok(false) => Err(Error::NotFound(Entity::User)),
            Err(StoreError::Conflict) => Err(Error::Conflict(format!(
                "{name} must keep at least one owner: add another first"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes team `team` an owner of `name`, on behalf of `actor` (an owner or an admin).
    pub async fn add_team_owner(
        &self,
        actor: &Actor,
        name: &PackageName,
        team: &str,
    ) -> Result<(), Error> {
        self.owners(name).await?;
        self.ensure_may_act(name, actor).await?;
        let team = self.team(team).await?;
        if !self.ownership()?.add_team_owner(name, team.id).await? {
            return Err(Error::NotFound(Entity::Package));
        }
        tracing::info!(name = %name, team = %team.name, by = actor.user_id, "package owner team added");
        Ok(())
    }

    /// Removes team `team` from the owners of `name` (never the last owner).
    pub async fn remove_team_owner(
        &self,
        actor: &Actor,
        name: &PackageName,
        team: &str,
    ) -> Result<(), Error> {
        self.owners(name).await?;
        self.ensure_may_act(name, actor).await?;
        let team = self.team(team).await?;
        match self.ownership()?.remove_team_owner(name, team.id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::NotFound(Entity::Team)),
            Err(StoreError::Conflict) => Err(Error::Conflict(format!(
                "{name} must keep at least one owner: add another first"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses a credential limited to some names: a team owns names beyond them.
    fn ensure_may_change_teams(actor: &Actor) -> Result<(), Error> {
        if actor.names == NameScope::All {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "a token limited to some names cannot change teams (a team owns other names too)"
                    .into(),
            ))
        }
    }

    /// Creates a team whose first member is its creator.
    pub async fn create_team(&self, actor: &Actor, name: &str) -> Result<Team, Error> {
        Self::ensure_may_change_teams(actor)?;
        let valid = Username::parse(name)
            .map_err(|_| ValidationError::new("name", "a team name is 1 to 64 characters of lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"))?;
        match self
            .ownership()?
            .create_team(valid.as_str(), actor.user_id)
            .await
        {
            Ok(team) => Ok(team),
            Err(StoreError::Conflict) => {
                Err(Error::Conflict(format!("a team named {name} exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn team(&self, name: &str) -> Result<Team, Error> {
        self.ownership()?
            .team(name)
            .await?
            .ok_or(Error::NotFound(Entity::Team))
    }

    pub async fn teams(&self) -> Result<Vec<Team>, Error> {
        Ok(self.ownership()?.teams().await?)
    }

    /// Adds or removes a member of `team`, on behalf of `actor` (a member or an admin). A
    /// team keeps at least one member.
    pub async fn change_member(
        &self,
        actor: &Actor,
        team: &str,
        user_id: i64,
        add: bool,
    ) -> Result<Team, Error> {
        Self::ensure_may_change_teams(actor)?;
        let found = self.team(team).await?;
        if !actor.admin && !found.members.iter().any(|(id, _)| *id == actor.user_id) {
            return Err(Error::Forbidden(format!(
                "only the members of {team} (or an admin) change it"
            )));
        }
        let ownership = self.ownership()?;
        if add {
            ownership.add_member(found.id, user_id).await?;
        } else {
            match ownership.remove_member(found.id, user_id).await {
                Ok(true) => {}
                Ok(false) => return Err(Error::NotFound(Entity::User)),
                Err(StoreError::Conflict) => {
                    return Err(Error::Conflict(format!(
                        "{team} must keep at least one member"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.team(team).await
    }
}
