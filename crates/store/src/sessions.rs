//! Resumable upload sessions (see the `upload_sessions` migration). Expiry and leases are
//! judged by the database's clock, so replicas with different clocks agree.

use std::time::Duration;

use agentpkg_model::{
    Checksum, Coordinates, Description, DetachedSignature, FileName, ObjectKey, PackageName,
    SessionKind, SessionProgress, SessionTail, SessionTarget, SignatureBytes, StoredPart,
    UploadSession, UploadSessionId, Version,
};
use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::connection::write_transaction;
use crate::schema::upload_sessions as s;
use crate::uploads::db_now;
use crate::{DbConnection, Durability, SessionLease, StoreError, UploadQuota};
use diesel::expression::SqlLiteral;
use diesel::sql_types::{Bool, Nullable, Timestamp};

#[derive(Queryable, Selectable)]
#[diesel(table_name = s)]
struct Row {
    id: String,
    user_id: Option<i64>,
    kind: String,
    name: Option<String>,
    version: Option<String>,
    platform: Option<String>,
    arch: Option<String>,
    filename: Option<String>,
    description: String,
    checksum: Option<String>,
    signature_format: Option<String>,
    signature: Option<Vec<u8>>,
    metadata: String,
    parts_of: String,
    upload_length: i64,
    upload_offset: i64,
    storage_path: String,
    multipart_id: Option<String>,
    parts: String,
    tail_path: Option<String>,
    tail_size: i64,
    hash_state: Vec<u8>,
    package_id: Option<i64>,
    expires_at: NaiveDateTime,
}

impl TryFrom<Row> for UploadSession {
    type Error = StoreError;

    fn try_from(row: Row) -> Result<Self, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("upload session {}: {what}", row.id));
        let target = match (row.name, row.version, row.platform, row.arch) {
            (Some(name), Some(version), Some(platform), Some(arch)) => Some(SessionTarget {
                coordinates: Coordinates {
                    name: PackageName::parse(&name).map_err(|_| corrupt("name"))?,
                    version: Version::parse(&version).map_err(|_| corrupt("version"))?,
                    platform: platform.parse().map_err(|_| corrupt("platform"))?,
                    arch: arch.parse().map_err(|_| corrupt("arch"))?,
                },
                filename: row
                    .filename
                    .as_deref()
                    .map(FileName::parse)
                    .transpose()
                    .map_err(|_| corrupt("filename"))?,
                description: Description::parse(&row.description)
                    .map_err(|_| corrupt("description"))?,
                expected_sha256: row
                    .checksum
                    .as_deref()
                    .map(Checksum::parse)
                    .transpose()
                    .map_err(|_| corrupt("checksum"))?,
                signature: match (row.signature_format, row.signature) {
                    (Some(format), Some(bytes)) => Some(DetachedSignature {
                        format: format.parse().map_err(|_| corrupt("signature format"))?,
                        bytes: SignatureBytes::new(bytes).map_err(|_| corrupt("signature"))?,
                    }),
                    _ => None,
                },
            }),
            (None, None, None, None) => None,
            _ => return Err(corrupt("coordinates")),
        };
        let tail = match row.tail_path {
            Some(path) => Some(SessionTail {
                key: ObjectKey::parse(&path).map_err(|_| corrupt("tail_path"))?,
                size: u64::try_from(row.tail_size).map_err(|_| corrupt("tail_size"))?,
            }),
            None => None,
        };
        Ok(UploadSession {
            id: UploadSessionId::parse(&row.id).map_err(|_| corrupt("id"))?,
            user_id: row.user_id,
            kind: row
                .kind
                .parse::<SessionKind>()
                .map_err(|_| corrupt("kind"))?,
            target,
            metadata: row.metadata,
            parts_of: row
                .parts_of
                .split_whitespace()
                .map(UploadSessionId::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| corrupt("parts_of"))?,
            length: u64::try_from(row.upload_length).map_err(|_| corrupt("length"))?,
            storage_key: ObjectKey::parse(&row.storage_path)
                .map_err(|_| corrupt("storage_path"))?,
            progress: SessionProgress {
                offset: u64::try_from(row.upload_offset).map_err(|_| corrupt("offset"))?,
                multipart: row.multipart_id,
                parts: serde_json::from_str::<Vec<StoredPart>>(&row.parts)
                    .map_err(|_| corrupt("parts"))?,
                tail,
                hash_state: row.hash_state,
                package_id: row.package_id,
            },
            expires_at: row.expires_at.and_utc(),
        })
    }
}

fn i64_of(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} exceeds i64")))
}

fn after(now: NaiveDateTime, ttl: Duration) -> NaiveDateTime {
    now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1))
}

/// Sessions of `user_id` that may still receive bytes.
fn live_count(conn: &mut DbConnection, user_id: i64) -> Result<i64, StoreError> {
    let now = db_now(conn)?;
    Ok(s::table
        .filter(s::user_id.eq(user_id))
        .filter(s::package_id.is_null())
        .filter(s::expires_at.gt(now))
        .count()
        .get_result(conn)?)
}

/// Records a new session, unless its user has `quota.max_uploads` sessions that may
/// still receive bytes (`Ok(None)`) or its bytes would pass `quota.max_bytes`. Its
/// expiry is `ttl` from now by the database's clock.
pub(crate) fn create(
    conn: &mut DbConnection,
    session: &UploadSession,
    ttl: Duration,
    quota: &UploadQuota,
) -> Result<Option<UploadSession>, StoreError> {
    write_transaction(conn, |conn| {
        // A final upload's bytes are its parts', counted when they were opened.
        if let Some(user) = session.user_id
            && session.kind != SessionKind::Final
            && !crate::quota::admit(conn, user, session.length, quota, |c| live_count(c, user))?
        {
            return Ok(None);
        }
        let now = db_now(conn)?;
        let t = session.target.as_ref();
        let c = t.map(|t| &t.coordinates);
        let p = &session.progress;
        diesel::insert_into(s::table)
            .values((
                s::id.eq(session.id.as_str()),
                s::user_id.eq(session.user_id),
                s::kind.eq(session.kind.as_str()),
                s::name.eq(c.map(|c| c.name.as_str())),
                s::version.eq(c.map(|c| c.version.to_string())),
                s::platform.eq(c.map(|c| c.platform.as_str())),
                s::arch.eq(c.map(|c| c.arch.as_str())),
                s::filename.eq(t.and_then(|t| t.filename.as_ref().map(FileName::as_str))),
                s::description.eq(t.map_or("", |t| t.description.as_str())),
                s::checksum.eq(t.and_then(|t| t.expected_sha256.as_ref().map(Checksum::as_str))),
                s::signature_format.eq(t
                    .and_then(|t| t.signature.as_ref())
                    .map(|sig| sig.format.as_str())),
                s::signature.eq(t
                    .and_then(|t| t.signature.as_ref())
                    .map(|sig| sig.bytes.as_bytes())),
                s::metadata.eq(&session.metadata),
                s::parts_of.eq(session
                    .parts_of
                    .iter()
                    .map(UploadSessionId::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")),
                s::upload_length.eq(i64_of(session.length, "length")?),
                s::storage_path.eq(session.storage_key.as_str()),
                s::created_at.eq(now),
                s::updated_at.eq(now),
                s::expires_at.eq(after(now, ttl)),
            ))
            .execute(conn)?;
        write_progress(conn, &session.id, None, p, ttl)?;
        get(conn, &session.id)
    })
}

/// A write's lease, and how its commit waits.
#[derive(Clone, Copy)]
struct Lease<'a> {
    token: &'a str,
    durability: Durability,
}

/// A condition every row meets that says how the statement's own transaction commits:
/// [`Durability::Applied`] on PostgreSQL turns `synchronous_commit` off for that transaction
/// only — the same round trip as the statement alone, where `SET LOCAL` needs a transaction
/// and three more. SQLite and [`Durability::Durable`] change nothing.
fn commit_waits(conn: &DbConnection, durability: Durability) -> SqlLiteral<Bool> {
    diesel::dsl::sql::<Bool>(match (conn, durability) {
        (DbConnection::Pg(_), Durability::Applied) => {
            "set_config('synchronous_commit', 'off', true) IS NOT NULL"
        }
        _ => "1 = 1",
    })
}

/// Writes a session's progress (only under `lease`, when given), releasing any lease, and
/// moves its expiry to `ttl` from now by the database's clock: the new expiry, or `None`
/// when the lease was lost. One statement.
fn write_progress(
    conn: &mut DbConnection,
    id: &UploadSessionId,
    lease: Option<Lease<'_>>,
    p: &SessionProgress,
    ttl: Duration,
) -> Result<Option<NaiveDateTime>, StoreError> {
    let parts =
        serde_json::to_string(&p.parts).map_err(|e| StoreError::Corrupt(format!("parts: {e}")))?;
    let changes = (
        s::upload_offset.eq(i64_of(p.offset, "offset")?),
        s::multipart_id.eq(p.multipart.as_deref()),
        s::parts.eq(parts),
        s::tail_path.eq(p.tail.as_ref().map(|t| t.key.as_str())),
        s::tail_size.eq(i64_of(p.tail.as_ref().map_or(0, |t| t.size), "tail")?),
        s::hash_state.eq(&p.hash_state),
        s::package_id.eq(p.package_id),
        s::lease_token.eq(None::<String>),
        s::lease_until.eq(None::<NaiveDateTime>),
        s::updated_at.eq(diesel::dsl::now),
        s::expires_at.eq(now_plus::<Timestamp>(conn, ttl)),
    );
    // Without a lease (a new session's first write), any row of that id.
    let (token, durability) = lease.map_or(("", Durability::Durable), |l| (l.token, l.durability));
    let row = s::table
        .find(id.as_str())
        .filter(
            s::lease_token
                .eq(token)
                .or(lease.is_none().into_sql::<Bool>()),
        )
        .filter(commit_waits(conn, durability));
    let update = diesel::update(row).set(changes).returning(s::expires_at);
    // RETURNING runs on the backend's own connection (the multi-backend one has none).
    Ok(match conn {
        DbConnection::Pg(c) => update.get_result(c).optional()?,
        DbConnection::Sqlite(c) => update.get_result(c).optional()?,
    })
}

/// `after` from now by the database's clock, as SQL (the same clock `diesel::dsl::now`
/// reads, in the column's format).
fn now_plus<T: diesel::sql_types::SingleValue>(
    conn: &DbConnection,
    after: Duration,
) -> SqlLiteral<T> {
    // Whole milliseconds, at most a century: a number, never text from outside.
    let ms = after.as_millis().min(100 * 365 * 24 * 3600 * 1000);
    diesel::dsl::sql::<T>(&match conn {
        DbConnection::Pg(_) => format!("(CURRENT_TIMESTAMP + interval '{ms} milliseconds')"),
        // Milliseconds kept (`datetime` would drop them); the text still sorts with
        // CURRENT_TIMESTAMP's.
        DbConnection::Sqlite(_) => format!(
            "strftime('%Y-%m-%d %H:%M:%f', CURRENT_TIMESTAMP, '+{}.{:03} seconds')",
            ms / 1000,
            ms % 1000
        ),
    })
}

/// The session, while it has not expired.
pub(crate) fn get(
    conn: &mut DbConnection,
    id: &UploadSessionId,
) -> Result<Option<UploadSession>, StoreError> {
    s::table
        .find(id.as_str())
        .filter(s::expires_at.gt(diesel::dsl::now))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(UploadSession::try_from)
        .transpose()
}

/// Takes the session for a write starting at `offset`: exactly one writer holds it at a
/// time, until it commits, releases it, or its lease runs out. One statement decides and
/// returns the session it took (the times by the database's clock); a read after it only
/// says why it did not take. Running it twice with the same `token` takes it once.
pub(crate) fn lease(
    conn: &mut DbConnection,
    id: &UploadSessionId,
    offset: u64,
    token: &str,
    lease: Duration,
    owner: Option<i64>,
) -> Result<SessionLease, StoreError> {
    let row = s::table
        .find(id.as_str())
        .filter(s::expires_at.gt(diesel::dsl::now))
        .filter(s::package_id.is_null())
        // An offset no row can hold (past i64) matches none: a mismatch, not an error.
        .filter(s::upload_offset.eq(i64::try_from(offset).unwrap_or(-1)))
        .filter(
            s::lease_until
                .is_null()
                .or(s::lease_until.le(diesel::dsl::now))
                // Taken again by the same writer: the statement may run twice when the
                // connection died before its answer came.
                .or(s::lease_token.eq(token)),
        )
        // A lease need not survive a crash (it would run out anyway).
        .filter(commit_waits(conn, Durability::Applied));
    let changes = (
        s::lease_token.eq(token),
        s::lease_until.eq(now_plus::<Nullable<Timestamp>>(conn, lease)),
    );
    // RETURNING runs on the backend's own connection (the multi-backend one has none).
    macro_rules! take {
        ($update:expr) => {
            match conn {
                DbConnection::Pg(c) => $update
                    .returning(Row::as_returning())
                    .get_result(c)
                    .optional()?,
                DbConnection::Sqlite(c) => $update
                    .returning(Row::as_returning())
                    .get_result(c)
                    .optional()?,
            }
        };
    }
    let taken: Option<Row> = match owner {
        Some(user) => take!(diesel::update(row.filter(s::user_id.eq(user))).set(changes)),
        None => take!(diesel::update(row).set(changes)),
    };
    if let Some(row) = taken {
        return Ok(SessionLease::Leased(Box::new(UploadSession::try_from(
            row,
        )?)));
    }
    let session = get(conn, id)?.filter(|s| owner.is_none() || s.user_id == owner);
    let Some(session) = session else {
        return Ok(SessionLease::Gone);
    };
    if session.progress.offset != offset || session.progress.package_id.is_some() {
        return Ok(SessionLease::Offset(session.progress.offset));
    }
    Ok(SessionLease::Busy)
}

/// Extends a lease still held; `false` when it was lost.
pub(crate) fn renew(
    conn: &mut DbConnection,
    id: &UploadSessionId,
    token: &str,
    lease: Duration,
) -> Result<bool, StoreError> {
    let until = now_plus::<Nullable<Timestamp>>(conn, lease);
    let renewed = diesel::update(s::table.find(id.as_str()).filter(s::lease_token.eq(token)))
        .set(s::lease_until.eq(until))
        .execute(conn)?;
    Ok(renewed == 1)
}

/// Commits a write under its lease, releasing it and moving the expiry on: the new expiry,
/// or `None` when the lease was lost (another writer took the session after it ran out).
/// One conditional update: it commits, or changes nothing.
pub(crate) fn commit(
    conn: &mut DbConnection,
    id: &UploadSessionId,
    token: &str,
    progress: &SessionProgress,
    ttl: Duration,
    durability: Durability,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    let lease = Lease { token, durability };
    Ok(write_progress(conn, id, Some(lease), progress, ttl)?.map(|t| t.and_utc()))
}

/// Gives a lease back without a change.
pub(crate) fn release(
    conn: &mut DbConnection,
    id: &UploadSessionId,
    token: &str,
) -> Result<(), StoreError> {
    diesel::update(s::table.find(id.as_str()).filter(s::lease_token.eq(token)))
        .set((
            s::lease_token.eq(None::<String>),
            s::lease_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)?;
    Ok(())
}

pub(crate) fn delete(conn: &mut DbConnection, id: &UploadSessionId) -> Result<bool, StoreError> {
    Ok(diesel::delete(s::table.find(id.as_str())).execute(conn)? == 1)
}

/// Sessions whose expiry has passed (and that no writer holds).
pub(crate) fn expired(conn: &mut DbConnection) -> Result<Vec<UploadSession>, StoreError> {
    let now = db_now(conn)?;
    s::table
        .filter(s::expires_at.le(now))
        .filter(s::lease_until.is_null().or(s::lease_until.le(now)))
        .select(Row::as_select())
        .load(conn)?
        .into_iter()
        .map(UploadSession::try_from)
        .collect()
}

/// Removes an expired session's row, unless it was written to since it was listed.
pub(crate) fn delete_expired(
    conn: &mut DbConnection,
    id: &UploadSessionId,
) -> Result<bool, StoreError> {
    let now = db_now(conn)?;
    Ok(diesel::delete(
        s::table
            .find(id.as_str())
            .filter(s::expires_at.le(now))
            .filter(s::lease_until.is_null().or(s::lease_until.le(now))),
    )
    .execute(conn)?
        == 1)
}

/// Objects of sessions that have not expired: in flight (a multipart write under
/// `storage_path`, the assembled object of a complete partial upload, a tail).
pub(crate) fn pending_keys(conn: &mut DbConnection) -> Result<Vec<String>, StoreError> {
    let now = db_now(conn)?;
    let rows: Vec<(String, Option<String>, Option<i64>)> = s::table
        .filter(s::expires_at.gt(now).or(s::lease_until.gt(now)))
        .select((s::storage_path, s::tail_path, s::package_id))
        .load(conn)?;
    let mut keys = Vec::with_capacity(rows.len());
    for (path, tail, package) in rows {
        if package.is_none() {
            keys.push(path);
        }
        keys.extend(tail);
    }
    Ok(keys)
}

pub(crate) fn names_key(conn: &mut DbConnection, key: &str) -> Result<bool, StoreError> {
    let now = db_now(conn)?;
    let found: Option<String> = s::table
        .filter(
            s::storage_path
                .eq(key)
                .and(s::package_id.is_null())
                .or(s::tail_path.eq(key)),
        )
        .filter(s::expires_at.gt(now).or(s::lease_until.gt(now)))
        .select(s::id)
        .first(conn)
        .optional()?;
    Ok(found.is_some())
}
