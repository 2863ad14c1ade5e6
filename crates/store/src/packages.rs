//! Package queries. Each takes one connection, so callers can compose them in a
//! transaction.

use agentpkg_model::{
    Arch, Coordinates, ListQuery, NewPackage, Package, PackageName, Page, Platform,
};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::schema::packages;
use crate::{DbConnection, StoreError};

#[derive(Queryable, Selectable)]
#[diesel(table_name = packages)]
struct PackageRow {
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
}

impl TryFrom<PackageRow> for Package {
    type Error = StoreError;

    fn try_from(row: PackageRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("package {}: {what}", row.id));
        Ok(Package {
            id: row.id,
            platform: row.platform.parse().map_err(|_| corrupt("platform"))?,
            arch: row.arch.parse().map_err(|_| corrupt("arch"))?,
            file_size: u64::try_from(row.file_size).map_err(|_| corrupt("file_size"))?,
            name: row.name,
            version: row.version,
            checksum: row.checksum,
            storage_path: row.storage_path,
            filename: row.filename,
            description: row.description,
            is_active: row.is_active,
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
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
}

fn now() -> NaiveDateTime {
    // Microsecond precision: what PostgreSQL keeps, so a value reads back as written.
    let now = Utc::now().naive_utc();
    now.with_nanosecond_truncated()
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

pub(crate) fn insert(conn: &mut DbConnection, new: &NewPackage) -> Result<Package, StoreError> {
    let c = &new.coordinates;
    let file_size = i64::try_from(new.file_size)
        .map_err(|_| StoreError::Corrupt("file size exceeds i64".into()))?;
    let at = now();
    let row = NewPackageRow {
        name: c.name.as_str(),
        version: c.version.to_string(),
        version_sort: c.version.sort_key(),
        prerelease: c.version.is_prerelease(),
        platform: c.platform.as_str(),
        arch: c.arch.as_str(),
        file_size,
        checksum: new.checksum.as_str(),
        storage_path: new.storage_key.as_str(),
        filename: new.filename.as_str(),
        description: new.description.as_str(),
        is_active: true,
        created_at: at,
        updated_at: at,
    };
    // NOTE: Diesel's MultiConnection cannot map RETURNING onto a Selectable, so the row is
    // read back by its unique storage_path inside the same transaction.
    conn.transaction(|conn| {
        diesel::insert_into(packages::table)
            .values(&row)
            .execute(conn)?;
        let inserted = packages::table
            .filter(packages::storage_path.eq(row.storage_path))
            .select(PackageRow::as_select())
            .first(conn)?;
        Package::try_from(inserted)
    })
}

pub(crate) fn exists(conn: &mut DbConnection, c: &Coordinates) -> Result<bool, StoreError> {
    let found = packages::table
        .filter(packages::name.eq(c.name.as_str()))
        .filter(packages::platform.eq(c.platform.as_str()))
        .filter(packages::arch.eq(c.arch.as_str()))
        .filter(packages::version_sort.eq(c.version.sort_key()))
        .select(packages::id)
        .first::<i64>(conn)
        .optional()?;
    Ok(found.is_some())
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
    let mut query = packages::table
        .filter(packages::is_active.eq(true))
        .into_boxed();
    if let Some(name) = &q.name {
        query = query.filter(packages::name.eq(name.as_str()));
    }
    if let Some(platform) = q.platform {
        query = query.filter(packages::platform.eq(platform.as_str()));
    }
    if let Some(arch) = q.arch {
        query = query.filter(packages::arch.eq(arch.as_str()));
    }
    query
}

pub(crate) fn list(conn: &mut DbConnection, q: &ListQuery) -> Result<Page<Package>, StoreError> {
    let total: i64 = filtered(q).count().get_result(conn)?;
    let offset = i64::try_from(q.page.offset()).unwrap_or(i64::MAX);
    let rows: Vec<PackageRow> = filtered(q)
        .order((
            packages::name.asc(),
            packages::version_sort.desc(),
            packages::platform.asc(),
            packages::arch.asc(),
        ))
        .limit(i64::from(q.page.per_page))
        .offset(offset)
        .select(PackageRow::as_select())
        .load(conn)?;
    Ok(Page {
        items: rows
            .into_iter()
            .map(Package::try_from)
            .collect::<Result<_, _>>()?,
        total: u64::try_from(total).unwrap_or(0),
        page: q.page.page,
        per_page: q.page.per_page,
    })
}

pub(crate) fn latest(
    conn: &mut DbConnection,
    name: &PackageName,
    platform: Platform,
    arch: Arch,
    include_prerelease: bool,
) -> Result<Option<Package>, StoreError> {
    let mut query = packages::table
        .filter(packages::name.eq(name.as_str()))
        .filter(packages::platform.eq(platform.as_str()))
        .filter(packages::arch.eq(arch.as_str()))
        .filter(packages::is_active.eq(true))
        .into_boxed::<crate::connection::MultiBackend>();
    if !include_prerelease {
        query = query.filter(packages::prerelease.eq(false));
    }
    query
        .order(packages::version_sort.desc())
        .select(PackageRow::as_select())
        .first(conn)
        .optional()?
        .map(Package::try_from)
        .transpose()
}

pub(crate) fn delete(conn: &mut DbConnection, id: i64) -> Result<Option<Package>, StoreError> {
    conn.transaction(|conn| {
        let Some(found) = get(conn, id)? else {
            return Ok(None);
        };
        diesel::delete(packages::table.find(id)).execute(conn)?;
        Ok(Some(found))
    })
}
