//! Metadata at scale: packages inserted straight into PostgreSQL.

use diesel::{Connection, PgConnection, RunQueryDsl};

use agentpkg_bench::Result;

/// Inserts `n` packages (10 versions of n/10 names) straight into PostgreSQL.
pub(crate) fn populate(url: &str, n: u64) -> Result<()> {
    let mut conn = PgConnection::establish(url)?;
    // Every row needs a blob; these name objects that do not exist, which metadata reads
    // never touch.
    diesel::sql_query(format!(
        "INSERT INTO blobs (checksum, storage_path, file_size, created_at)
         SELECT lpad(to_hex(g), 64, '0'), 'packages/' || lpad(to_hex(g), 32, '0'), 1, now()
         FROM generate_series(1, {n}) AS g"
    ))
    .execute(&mut conn)?;
    diesel::sql_query(format!(
        "INSERT INTO packages (name, version, version_sort, prerelease, platform, arch, file_size,
                               checksum, storage_path, filename, description, is_active, created_at, updated_at)
         SELECT 'pkg-' || (g / 10), '1.' || (g % 10) || '.0',
                lpad('1', 20, '0') || '.' || lpad((g % 10)::text, 20, '0') || '.' || lpad('0', 20, '0') || '~',
                false, 'linux', 'amd64', 1, lpad(to_hex(g), 64, '0'), 'packages/' || lpad(to_hex(g), 32, '0'),
                'agent', '', true, now(), now()
         FROM generate_series(1, {n}) AS g"
    ))
    .execute(&mut conn)?;
    diesel::sql_query("ANALYZE").execute(&mut conn)?;
    Ok(())
}
