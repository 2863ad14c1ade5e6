//! Package queries. Each takes one connection, so callers can compose them in a
//! transaction.

use agentpkg_model::{
    Checksum, Coordinates, Description, FileName, LatestQuery, NewPackage, ObjectKey, Package,
    PackageName, PackagePatch, Version,
};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::signature_columns::SignatureColumns;

use crate::connection::write_transaction;
use crate::schema::{blobs, packages};
use crate::{DbConnection, Deleted, Inserted, StoreError};

#[derive(Queryable, Selectable)]
#[diesel(table_name = packages)]
pub(crate) struct PackageRow {
    id: i64,
    name: String,
    version: String,
    platform: String,
    arch: String,
    file_size: i64,
    checksum: String,
    storage_path: String,
    filename: String,
    description: String,
    is_active: bool,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    signature_format: Option<String>,
    signature_key: Option<String>,
    signature_signer: Option<String>,
    signature_verified_at: Option<NaiveDateTime>,
    download_count: i64,
    last_downloaded_at: Option<NaiveDateTime>,
    yanked_at: Option<NaiveDateTime>,
    signature_identity: Option<i64>,
    signature_issuer: Option<String>,
    signature_signed_at: Option<NaiveDateTime>,
}

impl TryFrom<PackageRow> for Package {
    type Error = StoreError;

    fn try_from(row: PackageRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("package {}: {what}", row.id));
        Ok(Package {
            id: row.id,
            name: PackageName::parse(&row.name).map_err(|_| corrupt("name"))?,
            version: Version::parse(&row.version).map_err(|_| corrupt("version"))?,
            platform: row.platform.parse().map_err(|_| corrupt("platform"))?,
            arch: row.arch.parse().map_err(|_| corrupt("arch"))?,
            file_size: u64::try_from(row.file_size).map_err(|_| corrupt("file_size"))?,
            checksum: Checksum::parse(&row.checksum).map_err(|_| corrupt("checksum"))?,
            // NOTE: a key this registry did not make is refused here, so a tampered row
            // cannot name an arbitrary path.
            storage_key: ObjectKey::parse(&row.storage_path)
                .map_err(|_| corrupt("storage_path"))?,
            filename: FileName::parse(&row.filename).map_err(|_| corrupt("filename"))?,
            description: Description::parse(&row.description)
                .map_err(|_| corrupt("description"))?,
            is_active: row.is_active,
            signature: crate::signature_columns::signature_info(SignatureColumns {
                format: row.signature_format,
                key: row.signature_key,
                signer: row.signature_signer,
                verified_at: row.signature_verified_at,
                identity: row.signature_identity,
                issuer: row.signature_issuer,
                signed_at: row.signature_signed_at,
            })
            .map_err(|_| corrupt("signature"))?,
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
            download_count: u64::try_from(row.download_count).unwrap_or(0),
            last_downloaded_at: row.last_downloaded_at.map(|t| t.and_utc()),
            yanked_at: row.yanked_at.map(|t| t.and_utc()),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = packages)]
struct NewPackageRow<'a> {
    name: &'a str,
    version: String,
    version_sort: String,
    prerelease: bool,
    platform: &'a str,
    arch: &'a str,
    file_size: i64,
    checksum: &'a str,
    storage_path: &'a str,
    filename: &'a str,
    description: &'a str,
    is_active: bool,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    signature_format: Option<&'a str>,
    signature_key: Option<&'a str>,
    signature_signer: Option<&'a str>,
    signature_verified_at: Option<NaiveDateTime>,
    signature_identity: Option<i64>,
    signature_issuer: Option<String>,
    signature_signed_at: Option<NaiveDateTime>,
}

pub(crate) fn now() -> NaiveDateTime {
    microseconds(Utc::now())
}

/// `at` to the microsecond: what PostgreSQL keeps, so a value reads back as written.
pub(crate) fn microseconds(at: chrono::DateTime<Utc>) -> NaiveDateTime {
    at.naive_utc().with_nanosecond_truncated()
}

trait TruncateNanos {
    fn with_nanosecond_truncated(self) -> Self;
}

impl TruncateNanos for NaiveDateTime {
    fn with_nanosecond_truncated(self) -> Self {
        use chrono::Timelike;
        let micros = self.nanosecond() / 1_000 * 1_000;
        self.with_nanosecond(micros).unwrap_or(self)
    }
}

/// Attempts of an insert that concurrent writers invalidated (see [`insert_once`]).
const RACE_ATTEMPTS: usize = 8;

pub(crate) fn insert(conn: &mut DbConnection, new: &NewPackage) -> Result<Inserted, StoreError> {
    for _ in 0..RACE_ATTEMPTS {
        match write_transaction(conn, |conn| insert_once(conn, new)) {
            Err(StoreError::Contention(_)) => continue,
            other => return other,
        }
    }
    Err(StoreError::Contention(
        "package insert kept racing blob changes",
    ))
}

/// One attempt: find or create the blob for these bytes, then the package row.
///
/// Two races end an attempt with [`StoreError::Contention`] (rolling it back) so that the
/// next attempt sees the winner:
/// - another upload of the same bytes created the blob first (unique violation on
///   `blobs`): the next attempt shares their blob;
/// - a delete removed the blob after it was read (foreign-key violation on `packages`):
///   the next attempt creates a blob from this upload's own object.
fn insert_once(conn: &mut DbConnection, new: &NewPackage) -> Result<Inserted, StoreError> {
    let c = &new.coordinates;
    if let Some(publisher) = &new.publisher {
        crate::owners::claim_or_check(conn, c.name.as_str(), publisher)?;
    }
    let file_size = i64::try_from(new.file_size)
        .map_err(|_| StoreError::Corrupt("file size exceeds i64".into()))?;
    let at = now();
    let existing: Option<String> = blobs::table
        .find(new.checksum.as_str())
        .select(blobs::storage_path)
        .first(conn)
        .optional()?;
    let reused_object = existing.is_some();
    if reused_object && !new.republish {
        let other: Option<String> = packages::table
            .filter(packages::name.eq(c.name.as_str()))
            .filter(packages::checksum.eq(new.checksum.as_str()))
            .filter(packages::version.ne(c.version.to_string()))
            .select(packages::version)
            .first(conn)
            .optional()?;
        if let Some(version) = other {
            return Err(StoreError::SameBytes(version));
        }
    }
    let storage_path = match existing {
        Some(path) => path,
        None => {
            let created = diesel::insert_into(blobs::table)
                .values((
                    blobs::checksum.eq(new.checksum.as_str()),
                    blobs::storage_path.eq(new.storage_key.as_str()),
                    blobs::file_size.eq(file_size),
                    blobs::created_at.eq(at),
                ))
                .execute(conn);
            match created {
                Ok(_) => new.storage_key.as_str().to_owned(),
                Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    return Err(StoreError::Contention("blob created concurrently"));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let signature = SignatureColumns::of(new.signature.as_ref());
    let row = NewPackageRow {
        name: c.name.as_str(),
        version: c.version.to_string(),
        version_sort: c.version.sort_key(),
        prerelease: c.version.is_prerelease(),
        platform: c.platform.as_str(),
        arch: c.arch.as_str(),
        file_size,
        checksum: new.checksum.as_str(),
        storage_path: &storage_path,
        filename: new.filename.as_str(),
        description: new.description.as_str(),
        is_active: true,
        created_at: at,
        updated_at: at,
        signature_format: signature.format.as_deref(),
        signature_key: signature.key.as_deref(),
        signature_signer: signature.signer.as_deref(),
        signature_verified_at: signature.verified_at,
        signature_identity: signature.identity,
        signature_issuer: signature.issuer,
        signature_signed_at: signature.signed_at,
    };
    match diesel::insert_into(packages::table)
        .values(&row)
        .execute(conn)
    {
        Ok(_) => {}
        Err(DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) => {
            return Err(StoreError::Contention("blob deleted concurrently"));
        }
        Err(e) => return Err(e.into()),
    }
    // The upload is no longer in flight: its object is now a blob's, or a spare copy that
    // the caller deletes.
    crate::uploads::end(conn, new.storage_key.as_str())?;
    // NOTE: Diesel's MultiConnection cannot map RETURNING onto a Selectable, so the row is
    // read back by its coordinates inside the same transaction.
    let package =
        find(conn, c)?.ok_or_else(|| StoreError::Corrupt("inserted package not found".into()))?;
    if let Some(signature) = &new.signature {
        crate::signing::insert_bytes(conn, package.id, &signature.bytes)?;
    }
    Ok(Inserted {
        package,
        reused_object,
    })
}

fn at(c: &Coordinates) -> Boxed<'static> {
    packages::table
        .filter(packages::name.eq(c.name.as_str().to_owned()))
        .filter(packages::platform.eq(c.platform.as_str()))
        .filter(packages::arch.eq(c.arch.as_str()))
        .filter(packages::version_sort.eq(c.version.sort_key()))
        .into_boxed()
}

pub(crate) fn exists(conn: &mut DbConnection, c: &Coordinates) -> Result<bool, StoreError> {
    let found = at(c).select(packages::id).first::<i64>(conn).optional()?;
    Ok(found.is_some())
}

pub(crate) fn find(
    conn: &mut DbConnection,
    c: &Coordinates,
) -> Result<Option<Package>, StoreError> {
    at(c)
        .select(PackageRow::as_select())
        .first(conn)
        .optional()?
        .map(Package::try_from)
        .transpose()
}

pub(crate) fn versions(
    conn: &mut DbConnection,
    name: &PackageName,
) -> Result<Vec<Package>, StoreError> {
    packages::table
        .filter(packages::name.eq(name.as_str()))
        .order((
            packages::version_sort.desc(),
            packages::platform.asc(),
            packages::arch.asc(),
        ))
        .select(PackageRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Package::try_from)
        .collect()
}

/// Applies `patch`, and appends `events` to the audit log in the same transaction.
pub(crate) fn update(
    conn: &mut DbConnection,
    id: i64,
    patch: &PackagePatch,
    events: &[agentpkg_model::NewAuditEvent],
) -> Result<Option<Package>, StoreError> {
    write_transaction(conn, |conn| {
        if get(conn, id)?.is_none() {
            return Ok(None);
        }
        let at = now();
        if let Some(active) = patch.is_active {
            // The yank time is kept while it stays yanked (yanking again changes nothing).
            diesel::update(
                packages::table
                    .find(id)
                    .filter(packages::is_active.ne(active)),
            )
            .set((
                packages::is_active.eq(active),
                packages::yanked_at.eq((!active).then_some(at)),
                packages::updated_at.eq(at),
            ))
            .execute(conn)?;
        }
        if let Some(description) = &patch.description {
            diesel::update(packages::table.find(id))
                .set((
                    packages::description.eq(description.as_str()),
                    packages::updated_at.eq(at),
                ))
                .execute(conn)?;
        }
        for event in events {
            crate::audit::append(conn, event)?;
        }
        get(conn, id)
    })
}

pub(crate) fn get(conn: &mut DbConnection, id: i64) -> Result<Option<Package>, StoreError> {
    packages::table
        .find(id)
        .select(PackageRow::as_select())
        .first(conn)
        .optional()?
        .map(Package::try_from)
        .transpose()
}

type Boxed<'a> = packages::BoxedQuery<'a, crate::connection::MultiBackend>;

/// The package revision: moved by every change a reader of packages can see.
pub(crate) fn revision(conn: &mut DbConnection) -> Result<i64, StoreError> {
    crate::fleet::counter(conn, "package_revision")
}

mod list;
pub(crate) use list::{Totals, list, totals};

pub(crate) fn latest(
    conn: &mut DbConnection,
    q: &LatestQuery,
) -> Result<Option<Package>, StoreError> {
    let candidates = || {
        let mut query = packages::table
            .filter(packages::name.eq(q.name.as_str()))
            .filter(packages::platform.eq(q.platform.as_str()))
            .filter(packages::arch.eq(q.arch.as_str()))
            .filter(packages::is_active.eq(true))
            .into_boxed::<crate::connection::MultiBackend>();
        if !q.include_prerelease {
            query = query.filter(packages::prerelease.eq(false));
        }
        query.order(packages::version_sort.desc())
    };
    let Some(requirement) = &q.requirement else {
        return candidates()
            .select(PackageRow::as_select())
            .first(conn)
            .optional()?
            .map(Package::try_from)
            .transpose();
    };
    // Newest first, a batch at a time, until one matches.
    const BATCH: i64 = 256;
    let mut offset = 0;
    loop {
        let rows: Vec<PackageRow> = candidates()
            .limit(BATCH)
            .offset(offset)
            .select(PackageRow::as_select())
            .load(conn)?;
        let fetched = rows.len() as i64;
        for row in rows {
            let package = Package::try_from(row)?;
            if requirement.matches(&package.version, q.include_prerelease) {
                return Ok(Some(package));
            }
        }
        if fetched < BATCH {
            return Ok(None);
        }
        offset += BATCH;
    }
}

/// Deletes a package, and its blob when no other package has the same bytes.
/// Deletes the row, and appends `events` to the audit log in the same transaction.
pub(crate) fn delete(
    conn: &mut DbConnection,
    id: i64,
    events: &[agentpkg_model::NewAuditEvent],
) -> Result<Option<Deleted>, StoreError> {
    write_transaction(conn, |conn| {
        let Some(package) = get(conn, id)? else {
            return Ok(None);
        };
        diesel::delete(packages::table.find(id)).execute(conn)?;
        for event in events {
            crate::audit::append(conn, event)?;
        }
        let others: i64 = packages::table
            .filter(packages::checksum.eq(package.checksum.as_str()))
            .count()
            .get_result(conn)?;
        let mut object_released = false;
        if others == 0 {
            // In a savepoint: an upload of the same bytes may have just referenced this blob
            // (not yet visible to the count). Then the foreign key refuses the delete, and
            // the blob — and its object — stay for that upload.
            let removed = conn.transaction(|conn| {
                diesel::delete(blobs::table.find(package.checksum.as_str())).execute(conn)
            });
            match removed {
                Ok(n) => object_released = n > 0,
                Err(DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(Deleted {
            package,
            object_released,
        }))
    })
}

pub(crate) fn blob_keys(conn: &mut DbConnection) -> Result<Vec<String>, StoreError> {
    Ok(blobs::table.select(blobs::storage_path).load(conn)?)
}

pub(crate) fn with_object(conn: &mut DbConnection, key: &str) -> Result<Vec<i64>, StoreError> {
    Ok(packages::table
        .filter(packages::storage_path.eq(key))
        .select(packages::id)
        .order(packages::id.asc())
        .load(conn)?)
}
