//! What one user's uploads in flight may hold: resumable sessions and direct-upload grants
//! that may still receive bytes, counted and summed (by their announced lengths) under a
//! lock on the user, so that concurrent requests cannot all slip under the limit.

use diesel::prelude::*;

use crate::schema::{direct_uploads as d, upload_sessions as s};
use crate::uploads::db_now;
use crate::{DbConnection, StoreError, UploadQuota};

/// Serialises the quota checks of `user_id` until the transaction ends. SQLite needs
/// nothing: a write transaction holds the database's write lock from its first statement.
fn lock_user(conn: &mut DbConnection, user_id: i64) -> Result<(), StoreError> {
    if matches!(conn, DbConnection::Pg(_)) {
        diesel::sql_query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
            .bind::<diesel::sql_types::BigInt, _>(user_id)
            .execute(conn)?;
    }
    Ok(())
}

/// Bytes announced by `user_id`'s open sessions and live direct grants.
fn bytes_in_flight(conn: &mut DbConnection, user_id: i64) -> Result<u64, StoreError> {
    let now = db_now(conn)?;
    // NOTE: the lengths are added here rather than by SUM (NUMERIC on PostgreSQL): a
    // user has at most a quota's number of each.
    let sessions: Vec<i64> = s::table
        .filter(s::user_id.eq(user_id))
        .filter(s::package_id.is_null())
        .filter(s::expires_at.gt(now))
        // A final upload's length is its parts': counted there.
        .filter(s::kind.ne("final"))
        .select(s::upload_length)
        .load(conn)?;
    let grants: Vec<i64> = d::table
        .filter(d::user_id.eq(user_id))
        .filter(d::expires_at.gt(now))
        .select(d::file_size)
        .load(conn)?;
    Ok(sessions
        .into_iter()
        .chain(grants)
        .map(|n| u64::try_from(n).unwrap_or(0))
        .fold(0u64, u64::saturating_add))
}

/// What is refused when `user_id` would pass `quota` by adding `bytes` in flight, with
/// `open` uploads of the kind already open: `Ok(false)` for one upload too many (the
/// caller's own error), [`StoreError::OverQuota`] for bytes. Takes the user's lock first.
pub(crate) fn admit(
    conn: &mut DbConnection,
    user_id: i64,
    bytes: u64,
    quota: &UploadQuota,
    open: impl FnOnce(&mut DbConnection) -> Result<i64, StoreError>,
) -> Result<bool, StoreError> {
    lock_user(conn, user_id)?;
    if u64::try_from(open(conn)?).unwrap_or(0) >= quota.max_uploads {
        return Ok(false);
    }
    let held = bytes_in_flight(conn, user_id)?;
    if held.saturating_add(bytes) > quota.max_bytes {
        return Err(StoreError::OverQuota {
            held,
            limit: quota.max_bytes,
        });
    }
    Ok(true)
}

/// Live direct grants of `user_id`.
pub(crate) fn live_grants(conn: &mut DbConnection, user_id: i64) -> Result<i64, StoreError> {
    let now = db_now(conn)?;
    Ok(d::table
        .filter(d::user_id.eq(user_id))
        .filter(d::expires_at.gt(now))
        .count()
        .get_result(conn)?)
}
