//! Leases of periodic jobs that must run on one replica at a time (the rollout engine):
//! one row per job, held by a replica until a time, taken over once that has passed.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::packages::{microseconds as naive, now};
use crate::schema::job_leases as jl;
use crate::{DbConnection, StoreError};

/// Takes or renews the lease `name` for `holder` until `until`; whether it holds it.
pub(crate) fn take_lease(
    conn: &mut DbConnection,
    name: &str,
    holder: &str,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let wall = now();
    let until = naive(until);
    let renewed = diesel::update(
        jl::table
            .find(name)
            .filter(jl::holder.eq(holder).or(jl::until.lt(wall))),
    )
    .set((jl::holder.eq(holder), jl::until.eq(until)))
    .execute(conn)?;
    if renewed == 1 {
        return Ok(true);
    }
    match diesel::insert_into(jl::table)
        .values((
            jl::name.eq(name),
            jl::holder.eq(holder),
            jl::until.eq(until),
        ))
        .execute(conn)
    {
        Ok(_) => Ok(true),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Gives the lease up (at shutdown), so another replica takes it at once.
pub(crate) fn drop_lease(
    conn: &mut DbConnection,
    name: &str,
    holder: &str,
) -> Result<(), StoreError> {
    diesel::delete(jl::table.find(name).filter(jl::holder.eq(holder))).execute(conn)?;
    Ok(())
}
