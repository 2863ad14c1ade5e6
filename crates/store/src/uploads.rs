//! Markers of uploads in flight (see the `uploads_in_flight` migration). Every time here is
//! the database's, so replicas with different clocks agree on a marker's age.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::schema::{blobs, uploads_in_flight};
use crate::{DbConnection, StoreError, UploadInFlight};

pub(crate) fn begin(conn: &mut DbConnection, key: &str) -> Result<(), StoreError> {
    diesel::insert_into(uploads_in_flight::table)
        .values((
            uploads_in_flight::storage_path.eq(key),
            uploads_in_flight::started_at.eq(diesel::dsl::now),
            uploads_in_flight::touched_at.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
    Ok(())
}

pub(crate) fn touch(conn: &mut DbConnection, key: &str) -> Result<(), StoreError> {
    diesel::update(uploads_in_flight::table.find(key))
        .set(uploads_in_flight::touched_at.eq(diesel::dsl::now))
        .execute(conn)?;
    Ok(())
}

pub(crate) fn end(conn: &mut DbConnection, key: &str) -> Result<(), StoreError> {
    diesel::delete(uploads_in_flight::table.find(key)).execute(conn)?;
    Ok(())
}

/// The database's clock, which every replica shares.
pub(crate) fn db_now(conn: &mut DbConnection) -> Result<NaiveDateTime, StoreError> {
    Ok(diesel::select(diesel::dsl::now).get_result(conn)?)
}

fn idle_since(now: NaiveDateTime, touched: NaiveDateTime) -> Duration {
    (now - touched).to_std().unwrap_or(Duration::ZERO)
}

pub(crate) fn list(conn: &mut DbConnection) -> Result<Vec<UploadInFlight>, StoreError> {
    let rows: Vec<(String, NaiveDateTime)> = uploads_in_flight::table
        .select((
            uploads_in_flight::storage_path,
            uploads_in_flight::touched_at,
        ))
        .load(conn)?;
    let now = db_now(conn)?;
    let mut uploads: Vec<UploadInFlight> = rows
        .into_iter()
        .map(|(key, touched)| UploadInFlight {
            key,
            idle: idle_since(now, touched),
        })
        .collect();
    // A direct upload is in flight until it expires, however long the client takes.
    uploads.extend(
        crate::direct::pending_keys(conn)?
            .into_iter()
            .map(|key| UploadInFlight {
                key,
                idle: Duration::ZERO,
            }),
    );
    // So is a resumable upload session's, until it expires.
    uploads.extend(
        crate::sessions::pending_keys(conn)?
            .into_iter()
            .map(|key| UploadInFlight {
                key,
                idle: Duration::ZERO,
            }),
    );
    Ok(uploads)
}

/// Whether a blob names `key`, or an upload of it was touched within `stale_after`.
pub(crate) fn in_use(
    conn: &mut DbConnection,
    key: &str,
    stale_after: Duration,
) -> Result<bool, StoreError> {
    let blob: Option<String> = blobs::table
        .filter(blobs::storage_path.eq(key))
        .select(blobs::checksum)
        .first(conn)
        .optional()?;
    if blob.is_some()
        || crate::direct::names_key(conn, key)?
        || crate::sessions::names_key(conn, key)?
    {
        return Ok(true);
    }
    let touched: Option<NaiveDateTime> = uploads_in_flight::table
        .find(key)
        .select(uploads_in_flight::touched_at)
        .first(conn)
        .optional()?;
    match touched {
        None => Ok(false),
        Some(touched) => Ok(idle_since(db_now(conn)?, touched) < stale_after),
    }
}
