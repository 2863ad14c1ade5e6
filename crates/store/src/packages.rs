//! Package queries. Each takes one connection, so callers can compose them in a
//! transaction.

use agentpkg_model::{
    Activity, Checksum, Coordinates, Description, FileName, LatestQuery, ListFrom, ListQuery,
    NameScope, NewPackage, ObjectKey, Package, PackageName, PackagePatch, Page, Version,
};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::Bool;

use crate::connection::MultiBackend;
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

fn filtered(q: &ListQuery) -> Boxed<'_> {
    let mut query = packages::table.into_boxed();
    query = match q.activity {
        Activity::ActiveOnly => query.filter(packages::is_active.eq(true)),
        Activity::InactiveOnly => query.filter(packages::is_active.eq(false)),
        Activity::All => query,
    };
    if let Some(filter) = &q.name {
        query = query.filter(packages::name.eq(filter.name.as_str()));
    }
    if let Some(part) = &q.name_contains {
        // A substring of the name: `%`, `_` and `\` in it are themselves.
        let like = format!(
            "%{}%",
            part.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        query = query.filter(packages::name.like(like).escape('\\'));
    }
    if let Some(platform) = q.platform {
        query = query.filter(packages::platform.eq(platform.as_str()));
    }
    if let Some(arch) = q.arch {
        query = query.filter(packages::arch.eq(arch.as_str()));
    }
    if let NameScope::Matching(patterns) = &q.names {
        // Any pattern, as LIKE with `*` as `%`; `_` and `%` in a pattern are themselves.
        let mut any: Option<
            Box<dyn BoxableExpression<packages::table, MultiBackend, SqlType = Bool>>,
        > = None;
        for pattern in patterns {
            let like = pattern
                .as_str()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
                .replace('*', "%");
            let this = packages::name.like(like).escape('\\');
            any = Some(match any {
                None => Box::new(this),
                Some(before) => Box::new(before.or(this)),
            });
        }
        // No pattern at all matches nothing.
        query = match any {
            Some(any) => query.filter(any),
            None => query.filter(packages::id.lt(0)),
        };
    }
    query
}

type ListOrder = (
    diesel::helper_types::Asc<packages::name>,
    diesel::helper_types::Desc<packages::version_sort>,
    diesel::helper_types::Asc<packages::platform>,
    diesel::helper_types::Asc<packages::arch>,
);

/// By name, then newest version first.
fn list_order() -> ListOrder {
    (
        packages::name.asc(),
        packages::version_sort.desc(),
        packages::platform.asc(),
        packages::arch.asc(),
    )
}

/// Totals of package lists by their filters, each with the fleet revision it was counted
/// at: a publish, yank or delete moves the revision, so a total is counted again after one.
/// A revision moves before its transaction commits, so a total counted in between can
/// miss that change: entries also expire after [`TOTAL_TTL`], which bounds that lag.
pub(crate) type Totals = moka::sync::Cache<String, (i64, u64)>;

/// How long a counted total may serve, at most.
pub(crate) const TOTAL_TTL: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn totals() -> Totals {
    moka::sync::Cache::builder()
        .max_capacity(1024)
        .time_to_live(TOTAL_TTL)
        .build()
}

/// The number of packages `q` filters, counted or as counted at this revision.
fn total(conn: &mut DbConnection, q: &ListQuery, totals: &Totals) -> Result<u64, StoreError> {
    let key = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        q.name_contains, q.platform, q.arch, q.activity, q.names
    );
    let revision = crate::fleet::revision(conn)?;
    if q.name.is_none()
        && let Some((at, total)) = totals.get(&key)
        && at == revision
    {
        return Ok(total);
    }
    let counted: i64 = filtered(q).count().get_result(conn)?;
    let counted = u64::try_from(counted).unwrap_or(0);
    if q.name.is_none() {
        totals.insert(key, (revision, counted));
    }
    Ok(counted)
}

/// A package's place in the list's order: name, newest version first, platform, arch.
type Place = (String, std::cmp::Reverse<String>, String, String);

fn place_of(c: &Coordinates) -> Place {
    (
        c.name.as_str().to_owned(),
        std::cmp::Reverse(c.version.sort_key()),
        c.platform.as_str().to_owned(),
        c.arch.as_str().to_owned(),
    )
}

type Condition = Box<dyn BoxableExpression<packages::table, MultiBackend, SqlType = Bool>>;

/// The rows after `c` in the list's order (or before it, `after` false).
fn beyond(c: &Coordinates, after: bool) -> Condition {
    let name = c.name.as_str().to_owned();
    let version = c.version.sort_key();
    let platform = c.platform.as_str().to_owned();
    let arch = c.arch.as_str().to_owned();
    if after {
        // The redundant `name >= …` lets the index start at the place.
        Box::new(
            packages::name.ge(name.clone()).and(
                packages::name
                    .gt(name.clone())
                    .or(packages::name.eq(name).and(
                        packages::version_sort
                            .lt(version.clone())
                            .or(packages::version_sort.eq(version).and(
                                packages::platform
                                    .gt(platform.clone())
                                    .or(packages::platform
                                        .eq(platform)
                                        .and(packages::arch.gt(arch))),
                            )),
                    )),
            ),
        )
    } else {
        Box::new(
            packages::name.le(name.clone()).and(
                packages::name
                    .lt(name.clone())
                    .or(packages::name.eq(name).and(
                        packages::version_sort
                            .gt(version.clone())
                            .or(packages::version_sort.eq(version).and(
                                packages::platform
                                    .lt(platform.clone())
                                    .or(packages::platform
                                        .eq(platform)
                                        .and(packages::arch.lt(arch))),
                            )),
                    )),
            ),
        )
    }
}

/// The list's order backwards, for a page before a place or the last page.
fn reverse_order() -> (
    diesel::helper_types::Desc<packages::name>,
    diesel::helper_types::Asc<packages::version_sort>,
    diesel::helper_types::Desc<packages::platform>,
    diesel::helper_types::Desc<packages::arch>,
) {
    (
        packages::name.desc(),
        packages::version_sort.asc(),
        packages::platform.desc(),
        packages::arch.desc(),
    )
}

/// One page of `items` (already in the list's order) as `q` asks.
fn page_of(items: Vec<Package>, q: &ListQuery) -> Vec<Package> {
    let per_page = q.page.per_page as usize;
    match &q.from {
        ListFrom::Number => {
            let offset = usize::try_from(q.page.offset()).unwrap_or(usize::MAX);
            items.into_iter().skip(offset).take(per_page).collect()
        }
        ListFrom::After(c) => {
            let at = place_of(c);
            items
                .into_iter()
                .filter(|p| place_of(&p.coordinates()) > at)
                .take(per_page)
                .collect()
        }
        ListFrom::Before(c) => {
            let at = place_of(c);
            let before: Vec<_> = items
                .into_iter()
                .filter(|p| place_of(&p.coordinates()) < at)
                .collect();
            let skip = before.len().saturating_sub(per_page);
            before.into_iter().skip(skip).collect()
        }
        ListFrom::End => {
            let skip = items.len().saturating_sub(per_page);
            items.into_iter().skip(skip).collect()
        }
    }
}

pub(crate) fn list(
    conn: &mut DbConnection,
    q: &ListQuery,
    totals: &Totals,
) -> Result<Page<Package>, StoreError> {
    if let Some(requirement) = q.name.as_ref().and_then(|f| f.version.as_ref()) {
        // NOTE: a requirement cannot be expressed on version_sort in SQL, so the rows of the
        // other filters are read and matched here. A requirement only comes with a name
        // (`NameFilter`), which keeps this to one package's versions.
        let mut matching = Vec::new();
        for row in filtered(q)
            .order(list_order())
            .select(PackageRow::as_select())
            .load(conn)?
        {
            let package = Package::try_from(row)?;
            if requirement.matches(&package.version, true) {
                matching.push(package);
            }
        }
        let total = matching.len() as u64;
        return Ok(Page {
            items: page_of(matching, q),
            total,
            page: q.page.page,
            per_page: q.page.per_page,
        });
    }
    let total = total(conn, q, totals)?;
    let limit = i64::from(q.page.per_page);
    let rows: Vec<PackageRow> = match &q.from {
        ListFrom::Number => filtered(q)
            .order(list_order())
            .limit(limit)
            .offset(i64::try_from(q.page.offset()).unwrap_or(i64::MAX))
            .select(PackageRow::as_select())
            .load(conn)?,
        ListFrom::After(c) => filtered(q)
            .filter(beyond(c, true))
            .order(list_order())
            .limit(limit)
            .select(PackageRow::as_select())
            .load(conn)?,
        ListFrom::Before(c) => {
            let mut rows = filtered(q)
                .filter(beyond(c, false))
                .order(reverse_order())
                .limit(limit)
                .select(PackageRow::as_select())
                .load(conn)?;
            rows.reverse();
            rows
        }
        ListFrom::End => {
            let mut rows = filtered(q)
                .order(reverse_order())
                .limit(limit)
                .select(PackageRow::as_select())
                .load(conn)?;
            rows.reverse();
            rows
        }
    };
    Ok(Page {
        items: rows
            .into_iter()
            .map(Package::try_from)
            .collect::<Result<_, _>>()?,
        total,
        page: q.page.page,
        per_page: q.page.per_page,
    })
}

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
