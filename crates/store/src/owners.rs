//! Package ownership: who may publish and change a name.

use agentpkg_model::Actor;
use chrono::Utc;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::connection::write_transaction;
use crate::schema::{
    package_names, package_owners, package_team_owners, team_members, teams, users,
};
use crate::{DbConnection, Owner, StoreError, Team};

/// Whether `actor` may publish to or change `name`: an admin always, anyone while the name
/// is unclaimed, otherwise its owners.
pub(crate) fn may_act(
    conn: &mut DbConnection,
    name: &str,
    actor: &Actor,
) -> Result<bool, StoreError> {
    if actor.admin {
        return Ok(true);
    }
    if !is_claimed(conn, name)? {
        return Ok(true);
    }
    is_owner(conn, name, actor.user_id)
}

/// Whether `user_id` owns `name`, in person or through a team.
fn is_owner(conn: &mut DbConnection, name: &str, user_id: i64) -> Result<bool, StoreError> {
    if is_user_owner(conn, name, user_id)? {
        return Ok(true);
    }
    let through_team: Option<i64> = package_team_owners::table
        .inner_join(team_members::table.on(team_members::team_id.eq(package_team_owners::team_id)))
        .filter(package_team_owners::name.eq(name))
        .filter(team_members::user_id.eq(user_id))
        .select(team_members::user_id)
        .first(conn)
        .optional()?;
    Ok(through_team.is_some())
}

fn is_user_owner(conn: &mut DbConnection, name: &str, user_id: i64) -> Result<bool, StoreError> {
    let found: Option<i64> = package_owners::table
        .find((name, user_id))
        .select(package_owners::user_id)
        .first(conn)
        .optional()?;
    Ok(found.is_some())
}

fn team_owns(conn: &mut DbConnection, name: &str, team_id: i64) -> Result<bool, StoreError> {
    let found: Option<i64> = package_team_owners::table
        .find((name, team_id))
        .select(package_team_owners::team_id)
        .first(conn)
        .optional()?;
    Ok(found.is_some())
}

fn is_member(conn: &mut DbConnection, team_id: i64, user_id: i64) -> Result<bool, StoreError> {
    let found: Option<i64> = team_members::table
        .find((team_id, user_id))
        .select(team_members::user_id)
        .first(conn)
        .optional()?;
    Ok(found.is_some())
}

fn owner_count(conn: &mut DbConnection, name: &str) -> Result<i64, StoreError> {
    let users: i64 = package_owners::table
        .filter(package_owners::name.eq(name))
        .count()
        .get_result(conn)?;
    let teams: i64 = package_team_owners::table
        .filter(package_team_owners::name.eq(name))
        .count()
        .get_result(conn)?;
    Ok(users + teams)
}

fn is_claimed(conn: &mut DbConnection, name: &str) -> Result<bool, StoreError> {
    let claimed: Option<String> = package_names::table
        .find(name)
        .select(package_names::name)
        .first(conn)
        .optional()?;
    Ok(claimed.is_some())
}

/// Inside a package insert: claims an unclaimed name for `actor`, or checks that they may
/// publish to it. Racing first publishers are settled by the primary key: one claims the
/// name, the other is then checked against its owners.
pub(crate) fn claim_or_check(
    conn: &mut DbConnection,
    name: &str,
    actor: &Actor,
) -> Result<(), StoreError> {
    let claimed = conn.transaction(|conn| {
        diesel::insert_into(package_names::table)
            .values((
                package_names::name.eq(name),
                package_names::created_at.eq(Utc::now().naive_utc()),
            ))
            .execute(conn)
    });
    match claimed {
        Ok(_) => {
            diesel::insert_into(package_owners::table)
                .values((
                    package_owners::name.eq(name),
                    package_owners::user_id.eq(actor.user_id),
                ))
                .execute(conn)?;
            Ok(())
        }
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            if actor.admin || is_owner(conn, name, actor.user_id)? {
                Ok(())
            } else {
                Err(StoreError::NotOwner)
            }
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn list(conn: &mut DbConnection, name: &str) -> Result<Option<Vec<Owner>>, StoreError> {
    if !is_claimed(conn, name)? {
        return Ok(None);
    }
    let owners: Vec<(i64, String)> = package_owners::table
        .inner_join(users::table)
        .filter(package_owners::name.eq(name))
        .order(users::username.asc())
        .select((users::id, users::username))
        .load(conn)?;
    let team_owners: Vec<(i64, String)> = package_team_owners::table
        .inner_join(teams::table)
        .filter(package_team_owners::name.eq(name))
        .order(teams::name.asc())
        .select((teams::id, teams::name))
        .load(conn)?;
    Ok(Some(
        owners
            .into_iter()
            .map(|(user_id, username)| Owner::User { user_id, username })
            .chain(
                team_owners
                    .into_iter()
                    .map(|(team_id, name)| Owner::Team { team_id, name }),
            )
            .collect(),
    ))
}

/// Adds an owner to a claimed name; `Ok(false)` when the name is unclaimed.
pub(crate) fn add(conn: &mut DbConnection, name: &str, user_id: i64) -> Result<bool, StoreError> {
    write_transaction(conn, |conn| {
        if !is_claimed(conn, name)? {
            return Ok(false);
        }
        if !is_user_owner(conn, name, user_id)? {
            diesel::insert_into(package_owners::table)
                .values((
                    package_owners::name.eq(name),
                    package_owners::user_id.eq(user_id),
                ))
                .execute(conn)?;
        }
        Ok(true)
    })
}

/// Removes an owner; the last one cannot go ([`StoreError::Conflict`]). `Ok(false)` when
/// they were not an owner.
pub(crate) fn remove(
    conn: &mut DbConnection,
    name: &str,
    user_id: i64,
) -> Result<bool, StoreError> {
    write_transaction(conn, |conn| {
        if !is_user_owner(conn, name, user_id)? {
            return Ok(false);
        }
        if owner_count(conn, name)? <= 1 {
            return Err(StoreError::Conflict);
        }
        diesel::delete(package_owners::table.find((name, user_id))).execute(conn)?;
        Ok(true)
    })
}

/// Makes a team an owner of a claimed name; `Ok(false)` when the name is unclaimed.
pub(crate) fn add_team(
    conn: &mut DbConnection,
    name: &str,
    team_id: i64,
) -> Result<bool, StoreError> {
    write_transaction(conn, |conn| {
        if !is_claimed(conn, name)? {
            return Ok(false);
        }
        if !team_owns(conn, name, team_id)? {
            diesel::insert_into(package_team_owners::table)
                .values((
                    package_team_owners::name.eq(name),
                    package_team_owners::team_id.eq(team_id),
                ))
                .execute(conn)?;
        }
        Ok(true)
    })
}

/// Removes a team from the owners (not the last owner); `Ok(false)` when it was not one.
pub(crate) fn remove_team(
    conn: &mut DbConnection,
    name: &str,
    team_id: i64,
) -> Result<bool, StoreError> {
    write_transaction(conn, |conn| {
        if !team_owns(conn, name, team_id)? {
            return Ok(false);
        }
        if owner_count(conn, name)? <= 1 {
            return Err(StoreError::Conflict);
        }
        diesel::delete(package_team_owners::table.find((name, team_id))).execute(conn)?;
        Ok(true)
    })
}

pub(crate) fn create_team(
    conn: &mut DbConnection,
    team: &str,
    creator: i64,
) -> Result<Team, StoreError> {
    write_transaction(conn, |conn| {
        diesel::insert_into(teams::table)
            .values((
                teams::name.eq(team),
                teams::created_at.eq(Utc::now().naive_utc()),
            ))
            .execute(conn)?;
        let id: i64 = teams::table
            .filter(teams::name.eq(team))
            .select(teams::id)
            .first(conn)?;
        diesel::insert_into(team_members::table)
            .values((
                team_members::team_id.eq(id),
                team_members::user_id.eq(creator),
            ))
            .execute(conn)?;
        team_by_id(conn, id)?.ok_or_else(|| StoreError::Corrupt("team just made is gone".into()))
    })
}

fn team_by_id(conn: &mut DbConnection, id: i64) -> Result<Option<Team>, StoreError> {
    let name: Option<String> = teams::table
        .find(id)
        .select(teams::name)
        .first(conn)
        .optional()?;
    let Some(name) = name else { return Ok(None) };
    let members: Vec<(i64, String)> = team_members::table
        .inner_join(users::table)
        .filter(team_members::team_id.eq(id))
        .order(users::username.asc())
        .select((users::id, users::username))
        .load(conn)?;
    Ok(Some(Team { id, name, members }))
}

pub(crate) fn team(conn: &mut DbConnection, team: &str) -> Result<Option<Team>, StoreError> {
    let id: Option<i64> = teams::table
        .filter(teams::name.eq(team))
        .select(teams::id)
        .first(conn)
        .optional()?;
    match id {
        Some(id) => team_by_id(conn, id),
        None => Ok(None),
    }
}

pub(crate) fn teams(conn: &mut DbConnection) -> Result<Vec<Team>, StoreError> {
    let ids: Vec<i64> = teams::table
        .order(teams::name.asc())
        .select(teams::id)
        .load(conn)?;
    let mut all = Vec::with_capacity(ids.len());
    for id in ids {
        all.extend(team_by_id(conn, id)?);
    }
    Ok(all)
}

pub(crate) fn add_member(
    conn: &mut DbConnection,
    team_id: i64,
    user_id: i64,
) -> Result<(), StoreError> {
    write_transaction(conn, |conn| {
        if !is_member(conn, team_id, user_id)? {
            diesel::insert_into(team_members::table)
                .values((
                    team_members::team_id.eq(team_id),
                    team_members::user_id.eq(user_id),
                ))
                .execute(conn)?;
        }
        Ok(())
    })
}

/// Removes a member (not the last: a team always has one); `Ok(false)` when they were not
/// one.
pub(crate) fn remove_member(
    conn: &mut DbConnection,
    team_id: i64,
    user_id: i64,
) -> Result<bool, StoreError> {
    write_transaction(conn, |conn| {
        if !is_member(conn, team_id, user_id)? {
            return Ok(false);
        }
        let members: i64 = team_members::table
            .filter(team_members::team_id.eq(team_id))
            .count()
            .get_result(conn)?;
        if members <= 1 {
            return Err(StoreError::Conflict);
        }
        diesel::delete(team_members::table.find((team_id, user_id))).execute(conn)?;
        Ok(true)
    })
}
