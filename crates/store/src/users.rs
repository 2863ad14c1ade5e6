//! User queries.

use agentpkg_model::{Role, User, Username};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::schema::users;
use crate::{DbConnection, StoreError, UserState};

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
pub(crate) struct UserRow {
    id: i64,
    username: String,
    password_hash: String,
    role: String,
    created_at: NaiveDateTime,
    credentials_version: i64,
}

impl UserRow {
    pub(crate) fn state(&self) -> Result<UserState, StoreError> {
        Ok(UserState {
            id: self.id,
            username: self.username.clone(),
            role: self
                .role
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("user {}: role", self.id)))?,
            credentials_version: self.credentials_version,
        })
    }

    fn into_user(self) -> Result<(User, String), StoreError> {
        let role: Role = self
            .role
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("user {}: role", self.id)))?;
        Ok((
            User {
                id: self.id,
                username: self.username,
                role,
                created_at: self.created_at.and_utc(),
            },
            self.password_hash,
        ))
    }
}

pub(crate) fn create(
    conn: &mut DbConnection,
    username: &Username,
    password_hash: &str,
    role: Role,
) -> Result<User, StoreError> {
    conn.transaction(|conn| {
        diesel::insert_into(users::table)
            .values((
                users::username.eq(username.as_str()),
                users::password_hash.eq(password_hash),
                users::role.eq(role.as_str()),
                users::created_at.eq(Utc::now().naive_utc()),
            ))
            .execute(conn)?;
        credentials(conn, username.as_str())?
            .map(|(user, _)| user)
            .ok_or_else(|| StoreError::Corrupt("inserted user not found".into()))
    })
}

pub(crate) fn credentials(
    conn: &mut DbConnection,
    username: &str,
) -> Result<Option<(User, String)>, StoreError> {
    users::table
        .filter(users::username.eq(username))
        .select(UserRow::as_select())
        .first(conn)
        .optional()?
        .map(UserRow::into_user)
        .transpose()
}

pub(crate) fn list(conn: &mut DbConnection) -> Result<Vec<User>, StoreError> {
    users::table
        .order(users::id.asc())
        .select(UserRow::as_select())
        .load(conn)?
        .into_iter()
        .map(|r| r.into_user().map(|(u, _)| u))
        .collect()
}

pub(crate) fn delete(conn: &mut DbConnection, id: i64) -> Result<bool, StoreError> {
    Ok(diesel::delete(users::table.find(id)).execute(conn)? > 0)
}

pub(crate) fn count(conn: &mut DbConnection) -> Result<u64, StoreError> {
    let n: i64 = users::table.count().get_result(conn)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(crate) fn state(conn: &mut DbConnection, id: i64) -> Result<Option<UserState>, StoreError> {
    users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .optional()?
        .map(|row| row.state())
        .transpose()
}

/// Changes a role and every credential's version with it.
pub(crate) fn set_role(
    conn: &mut DbConnection,
    id: i64,
    role: Role,
) -> Result<Option<User>, StoreError> {
    let changed = diesel::update(users::table.find(id))
        .set((
            users::role.eq(role.as_str()),
            users::credentials_version.eq(users::credentials_version + 1),
        ))
        .execute(conn)?;
    if changed == 0 {
        return Ok(None);
    }
    users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .optional()?
        .map(|row| row.into_user().map(|(user, _)| user))
        .transpose()
}

/// Changes a password hash and every credential's version with it.
pub(crate) fn set_password(
    conn: &mut DbConnection,
    id: i64,
    hash: &str,
) -> Result<bool, StoreError> {
    Ok(diesel::update(users::table.find(id))
        .set((
            users::password_hash.eq(hash),
            users::credentials_version.eq(users::credentials_version + 1),
        ))
        .execute(conn)?
        > 0)
}

/// Records a signed-out session until it would have expired, and forgets those past it.
pub(crate) fn end_session(
    conn: &mut DbConnection,
    token_hash: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    use crate::schema::ended_sessions as e;
    crate::connection::write_transaction(conn, |conn| {
        diesel::delete(e::table.filter(e::expires_at.lt(crate::packages::now()))).execute(conn)?;
        if session_ended(conn, token_hash)? {
            return Ok(());
        }
        let inserted = diesel::insert_into(e::table)
            .values((
                e::token_hash.eq(token_hash),
                e::expires_at.eq(expires_at.naive_utc()),
            ))
            .execute(conn);
        match inserted {
            // Signed out twice at once: the first stands (nothing else in this transaction
            // matters if it is rolled back).
            Ok(_)
            | Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(()),
            Err(e) => Err(e.into()),
        }
    })
}

pub(crate) fn session_ended(conn: &mut DbConnection, token_hash: &str) -> Result<bool, StoreError> {
    use crate::schema::ended_sessions as e;
    let n: i64 = e::table
        .filter(e::token_hash.eq(token_hash))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}
