//! Package ownership: who may publish and change a name.

use agentpkg_model::Actor;
use chrono::Utc;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::connection::write_transaction;
use crate::schema::{package_names, package_owners, users};
use crate::{DbConnection, Owner, StoreError};

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
    let claimed: Option<String> = package_names::table
        .find(name)
        .select(package_names::name)
        .first(conn)
        .optional()?;
    if claimed.is_none() {
        return Ok(true);
    }
    is_owner(conn, name, actor.user_id)
}

fn is_owner(conn: &mut DbConnection, name: &str, user_id: i64) -> Result<bool, StoreError> {
    let found: Option<i64> = package_owners::table
        .find((name, user_id))
        .select(package_owners::user_id)
        .first(conn)
        .optional()?;
    Ok(found.is_some())
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
    let claimed: Option<String> = package_names::table
        .find(name)
        .select(package_names::name)
        .first(conn)
        .optional()?;
    if claimed.is_none() {
        return Ok(None);
    }
    let owners: Vec<(i64, String)> = package_owners::table
        .inner_join(users::table)
        .filter(package_owners::name.eq(name))
        .order(users::username.asc())
        .select((users::id, users::username))
        .load(conn)?;
    Ok(Some(
        owners
            .into_iter()
            .map(|(user_id, username)| Owner { user_id, username })
            .collect(),
    ))
}

/// Adds an owner to a claimed name; `Ok(false)` when the name is unclaimed.
pub(crate) fn add(conn: &mut DbConnection, name: &str, user_id: i64) -> Result<bool, StoreError> {
    write_transaction(conn, |conn| {
        let claimed: Option<String> = package_names::table
            .find(name)
            .select(package_names::name)
            .first(conn)
            .optional()?;
        if claimed.is_none() {
            return Ok(false);
        }
        if !is_owner(conn, name, user_id)? {
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
        if !is_owner(conn, name, user_id)? {
            return Ok(false);
        }
        let owners: i64 = package_owners::table
            .filter(package_owners::name.eq(name))
            .count()
            .get_result(conn)?;
        if owners <= 1 {
            return Err(StoreError::Conflict);
        }
        diesel::delete(package_owners::table.find((name, user_id))).execute(conn)?;
        Ok(true)
    })
}
