//! Download counts, storage usage and what retention needs.
//!
//! The aggregate queries are written once as SQL that both PostgreSQL and SQLite run
//! (sums cast to BIGINT, so neither backend's numeric type leaks out); only the
//! placeholders differ (`$1` against `?1`), see [`Sql`].

use agentpkg_model::{
    Checksum, DailyDownloads, DownloadIncrement, NameUsage, Package, PackageName,
    RetentionCandidate, StorageUsage, TopDownloads, TopEntry, TopQuery, UsageTotals, Version,
};
use async_trait::async_trait;
use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Nullable, Text, Timestamp};

use crate::connection::write_transaction;
use crate::packages::PackageRow;
use crate::schema::{package_downloads as d, packages as p};
use crate::{DbConnection, DieselStore, StoreError};

/// SQL whose placeholders suit the connection's backend.
struct Sql {
    postgres: bool,
}

impl Sql {
    fn of(conn: &DbConnection) -> Self {
        Self {
            postgres: matches!(conn, DbConnection::Pg(_)),
        }
    }

    /// Placeholder `n` (1-based).
    fn p(&self, n: u8) -> String {
        if self.postgres {
            format!("${n}")
        } else {
            format!("?{n}")
        }
    }
}

/// Runs a raw query on whichever backend the connection is.
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            DbConnection::Pg($c) => $body,
            DbConnection::Sqlite($c) => $body,
        }
    };
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Adds counted downloads, in one transaction. Increments of a package deleted since are
/// dropped. Returns how many increments found their package.
pub(crate) fn add_downloads(
    conn: &mut DbConnection,
    increments: &[DownloadIncrement],
) -> Result<u64, StoreError> {
    // Always the same order, so that two replicas flushing at once never deadlock.
    let mut sorted = increments.to_vec();
    sorted.sort_by_key(|i| (i.package_id, i.day));
    write_transaction(conn, |conn| {
        let sql = Sql::of(conn);
        let upsert_day = format!(
            "INSERT INTO package_downloads
                 (package_id, day, name, version, platform, arch, downloads, bytes)
             SELECT id, {day}, name, version, platform, arch, {n}, {bytes}
             FROM packages WHERE id = {id}
             ON CONFLICT (package_id, day) DO UPDATE SET
                 downloads = package_downloads.downloads + excluded.downloads,
                 bytes = package_downloads.bytes + excluded.bytes",
            id = sql.p(1),
            day = sql.p(2),
            n = sql.p(3),
            bytes = sql.p(4),
        );
        let add_total = format!(
            "UPDATE packages SET
                 download_count = download_count + {n},
                 last_downloaded_at = CASE
                     WHEN last_downloaded_at IS NULL OR last_downloaded_at < {at} THEN {at}
                     ELSE last_downloaded_at END
             WHERE id = {id}",
            id = sql.p(1),
            n = sql.p(2),
            at = sql.p(3),
        );
        let mut applied = 0;
        for i in &sorted {
            let (id, downloads, bytes) = (i.package_id, i64_of(i.downloads), i64_of(i.bytes));
            let at = i.last_at.naive_utc();
            let found = on_backend!(&mut *conn, |c| diesel::sql_query(&upsert_day)
                .bind::<BigInt, _>(id)
                .bind::<Date, _>(i.day)
                .bind::<BigInt, _>(downloads)
                .bind::<BigInt, _>(bytes)
                .execute(c))?;
            if found == 0 {
                continue;
            }
            applied += 1;
            if downloads > 0 {
                on_backend!(&mut *conn, |c| diesel::sql_query(&add_total)
                    .bind::<BigInt, _>(id)
                    .bind::<BigInt, _>(downloads)
                    .bind::<Timestamp, _>(at)
                    .execute(c))?;
            }
        }
        Ok(applied)
    })
}

/// A package's recorded days from `from` to `to`, oldest first (days without downloads
/// are absent).
pub(crate) fn daily(
    conn: &mut DbConnection,
    package_id: i64,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DailyDownloads>, StoreError> {
    let rows: Vec<(NaiveDate, i64, i64)> = d::table
        .filter(d::package_id.eq(package_id))
        .filter(d::day.ge(from))
        .filter(d::day.le(to))
        .order(d::day.asc())
        .select((d::day, d::downloads, d::bytes))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(day, downloads, bytes)| DailyDownloads {
            day,
            downloads: u64_of(downloads),
            bytes: u64_of(bytes),
        })
        .collect())
}

#[derive(QueryableByName)]
struct TopRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
    #[diesel(sql_type = BigInt)]
    downloads: i64,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

/// The most downloaded names, and names with versions, from `from` to `to`.
pub(crate) fn top(
    conn: &mut DbConnection,
    q: &TopQuery,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<TopDownloads, StoreError> {
    let sql = Sql::of(conn);
    let query = |by_version: bool| {
        // NOTE: versions that differ only in build metadata are one version; builds of
        // one version share its text unless uploaded as `1.0.0+a` and `1.0.0+b`, which
        // then show apart.
        let (select, group) = if by_version {
            ("name, version", "name, version")
        } else {
            ("name, CAST(NULL AS TEXT) AS version", "name")
        };
        format!(
            "SELECT {select},
                    CAST(SUM(downloads) AS BIGINT) AS downloads,
                    CAST(SUM(bytes) AS BIGINT) AS bytes
             FROM package_downloads
             WHERE day >= {from} AND day <= {to}
               AND (CAST({platform} AS TEXT) IS NULL OR platform = {platform})
               AND (CAST({arch} AS TEXT) IS NULL OR arch = {arch})
             GROUP BY {group}
             HAVING SUM(downloads) > 0
             ORDER BY downloads DESC, name ASC
             LIMIT {limit}",
            from = sql.p(1),
            to = sql.p(2),
            platform = sql.p(3),
            arch = sql.p(4),
            limit = q.limit,
        )
    };
    let platform = q.platform.map(|p| p.as_str());
    let arch = q.arch.map(|a| a.as_str());
    let mut lists = Vec::with_capacity(2);
    for by_version in [false, true] {
        let text = query(by_version);
        let rows: Vec<TopRow> = on_backend!(&mut *conn, |c| diesel::sql_query(&text)
            .bind::<Date, _>(from)
            .bind::<Date, _>(to)
            .bind::<Nullable<Text>, _>(platform)
            .bind::<Nullable<Text>, _>(arch)
            .load(c))?;
        let entries = rows
            .into_iter()
            .map(|r| {
                let corrupt = |what: &str| StoreError::Corrupt(format!("download row: {what}"));
                Ok(TopEntry {
                    name: PackageName::parse(&r.name).map_err(|_| corrupt("name"))?,
                    version: r
                        .version
                        .as_deref()
                        .map(Version::parse)
                        .transpose()
                        .map_err(|_| corrupt("version"))?,
                    downloads: u64_of(r.downloads),
                    bytes: u64_of(r.bytes),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        lists.push(entries);
    }
    let by_version = lists.pop().unwrap_or_default();
    let by_name = lists.pop().unwrap_or_default();
    Ok(TopDownloads {
        first_day: from,
        last_day: to,
        by_name,
        by_version,
    })
}

#[derive(QueryableByName)]
struct BlobTotals {
    #[diesel(sql_type = BigInt)]
    objects: i64,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

#[derive(QueryableByName)]
struct PackageTotals {
    #[diesel(sql_type = BigInt)]
    packages: i64,
    #[diesel(sql_type = BigInt)]
    active: i64,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
    #[diesel(sql_type = BigInt)]
    yanked_bytes: i64,
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    packages: i64,
    #[diesel(sql_type = BigInt)]
    active: i64,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
    #[diesel(sql_type = BigInt)]
    yanked_bytes: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

const PACKAGE_SUMS: &str = "COUNT(*) AS packages,
    CAST(COALESCE(SUM(CASE WHEN is_active THEN 1 ELSE 0 END), 0) AS BIGINT) AS active,
    CAST(COALESCE(SUM(file_size), 0) AS BIGINT) AS bytes,
    CAST(COALESCE(SUM(CASE WHEN is_active THEN 0 ELSE file_size END), 0) AS BIGINT) AS yanked_bytes";

fn blob_totals(conn: &mut DbConnection) -> Result<BlobTotals, StoreError> {
    Ok(diesel::sql_query(
        "SELECT COUNT(*) AS objects, CAST(COALESCE(SUM(file_size), 0) AS BIGINT) AS bytes
         FROM blobs",
    )
    .get_result(conn)?)
}

fn package_totals(conn: &mut DbConnection) -> Result<PackageTotals, StoreError> {
    Ok(diesel::sql_query(format!("SELECT {PACKAGE_SUMS} FROM packages")).get_result(conn)?)
}

/// Everything the registry stores, read in one snapshot.
pub(crate) fn storage(
    conn: &mut DbConnection,
    names: u32,
    largest: u32,
) -> Result<StorageUsage, StoreError> {
    read_snapshot(conn, |conn| {
        let blobs = blob_totals(conn)?;
        let totals = package_totals(conn)?;
        let name_rows: Vec<NameRow> = diesel::sql_query(format!(
            "SELECT name, {PACKAGE_SUMS} FROM packages GROUP BY name
             ORDER BY bytes DESC, name ASC LIMIT {names}"
        ))
        .load(conn)?;
        let names_total: Count =
            diesel::sql_query("SELECT COUNT(DISTINCT name) AS n FROM packages").get_result(conn)?;
        let largest: Vec<Package> = p::table
            .order((p::file_size.desc(), p::id.asc()))
            .limit(i64::from(largest))
            .select(PackageRow::as_select())
            .load(conn)?
            .into_iter()
            .map(Package::try_from)
            .collect::<Result<_, _>>()?;
        let names = name_rows
            .into_iter()
            .map(|r| {
                Ok(NameUsage {
                    name: PackageName::parse(&r.name)
                        .map_err(|_| StoreError::Corrupt(format!("package name {}", r.name)))?,
                    packages: u64_of(r.packages),
                    active: u64_of(r.active),
                    bytes: u64_of(r.bytes),
                    yanked_bytes: u64_of(r.yanked_bytes),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(StorageUsage {
            objects: u64_of(blobs.objects),
            stored_bytes: u64_of(blobs.bytes),
            referenced_bytes: u64_of(totals.bytes),
            active_packages: u64_of(totals.active),
            yanked_packages: u64_of(totals.packages - totals.active),
            yanked_bytes: u64_of(totals.yanked_bytes),
            names,
            names_total: u64_of(names_total.n),
            largest,
        })
    })
}

/// The figures metrics show.
pub(crate) fn totals(conn: &mut DbConnection) -> Result<UsageTotals, StoreError> {
    read_snapshot(conn, |conn| {
        let blobs = blob_totals(conn)?;
        let totals = package_totals(conn)?;
        Ok(UsageTotals {
            objects: u64_of(blobs.objects),
            stored_bytes: u64_of(blobs.bytes),
            active_packages: u64_of(totals.active),
            yanked_packages: u64_of(totals.packages - totals.active),
        })
    })
}

/// Several reads that see one state of the database.
fn read_snapshot<T>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.transaction(|conn| {
        if matches!(conn, DbConnection::Pg(_)) {
            diesel::sql_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(conn)?;
        }
        f(conn)
    })
}

type CandidateRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    String,
    bool,
    NaiveDateTime,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
);

/// Every package, as retention sees it.
pub(crate) fn retention_candidates(
    conn: &mut DbConnection,
) -> Result<Vec<RetentionCandidate>, StoreError> {
    let rows: Vec<CandidateRow> = p::table
        .order(p::id.asc())
        .select((
            p::id,
            p::name,
            p::version,
            p::platform,
            p::arch,
            p::file_size,
            p::checksum,
            p::is_active,
            p::created_at,
            p::yanked_at,
            p::last_downloaded_at,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(|r| {
            let corrupt = |what: &str| StoreError::Corrupt(format!("package {}: {what}", r.0));
            Ok(RetentionCandidate {
                id: r.0,
                name: PackageName::parse(&r.1).map_err(|_| corrupt("name"))?,
                version: Version::parse(&r.2).map_err(|_| corrupt("version"))?,
                platform: r.3.parse().map_err(|_| corrupt("platform"))?,
                arch: r.4.parse().map_err(|_| corrupt("arch"))?,
                file_size: u64_of(r.5),
                checksum: Checksum::parse(&r.6).map_err(|_| corrupt("checksum"))?,
                is_active: r.7,
                created_at: r.8.and_utc(),
                yanked_at: r.9.map(|t| t.and_utc()),
                last_downloaded_at: r.10.map(|t| t.and_utc()),
            })
        })
        .collect()
}

#[async_trait]
impl crate::StatsStore for DieselStore {
    async fn add_downloads(
        &self,
        increments: Vec<agentpkg_model::DownloadIncrement>,
    ) -> Result<u64, StoreError> {
        self.with_conn("add_downloads", move |c| add_downloads(c, &increments))
            .await
    }

    async fn daily_downloads(
        &self,
        package_id: i64,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<agentpkg_model::DailyDownloads>, StoreError> {
        self.with_conn_read("daily_downloads", move |c| daily(c, package_id, from, to))
            .await
    }

    async fn top_downloads(
        &self,
        query: &agentpkg_model::TopQuery,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<agentpkg_model::TopDownloads, StoreError> {
        let query = query.clone();
        self.with_conn_read("top_downloads", move |c| top(c, &query, from, to))
            .await
    }

    async fn storage_usage(
        &self,
        names: u32,
        largest: u32,
    ) -> Result<agentpkg_model::StorageUsage, StoreError> {
        self.with_conn_read("storage_usage", move |c| storage(c, names, largest))
            .await
    }

    async fn usage_totals(&self) -> Result<agentpkg_model::UsageTotals, StoreError> {
        self.with_conn_read("usage_totals", totals).await
    }

    async fn retention_candidates(
        &self,
    ) -> Result<Vec<agentpkg_model::RetentionCandidate>, StoreError> {
        self.with_conn_read("retention_candidates", retention_candidates)
            .await
    }
}
