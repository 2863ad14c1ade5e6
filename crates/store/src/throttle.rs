//! Failed-login counters, shared by every replica.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::connection::write_transaction;
use crate::schema::login_failures;
use crate::{DbConnection, LoginLimit, StoreError};

/// The latest time until which any of `keys` is blocked, if one is blocked now.
pub(crate) fn blocked(
    conn: &mut DbConnection,
    keys: &[String],
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let now = Utc::now().naive_utc();
    let until: Option<Option<NaiveDateTime>> = login_failures::table
        .filter(login_failures::key.eq_any(keys))
        .filter(login_failures::blocked_until.gt(now))
        .select(diesel::dsl::max(login_failures::blocked_until))
        .first(conn)
        .optional()?;
    Ok(until.flatten().map(|t| t.and_utc()))
}

/// Counts a failure under `key`; returns the time it is now blocked until, when this
/// failure crossed (or is past) the limit.
pub(crate) fn failed(
    conn: &mut DbConnection,
    key: &str,
    limit: &LoginLimit,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    write_transaction(conn, |conn| {
        let now = Utc::now();
        let window = chrono::Duration::from_std(limit.window).unwrap_or(chrono::Duration::MAX);
        let row: Option<(i64, NaiveDateTime)> = login_failures::table
            .find(key)
            .select((login_failures::failures, login_failures::first_at))
            .first(conn)
            .optional()?;
        let failures = match row {
            Some((n, first)) if first.and_utc() + window > now => n + 1,
            _ => 1,
        };
        let blocked_until = (failures >= i64::from(limit.attempts)).then(|| {
            // Doubling from the base for each failure past the limit, at most an hour.
            let excess = u32::try_from(failures - i64::from(limit.attempts)).unwrap_or(u32::MAX);
            let secs = limit
                .backoff
                .as_secs()
                .saturating_mul(2u64.saturating_pow(excess.min(20)))
                .min(3600);
            now + chrono::Duration::seconds(i64::try_from(secs).unwrap_or(3600))
        });
        let first_at = match row {
            Some((_, first)) if failures > 1 => first,
            _ => now.naive_utc(),
        };
        // Counters whose window and block are over are forgotten, so that guessing many
        // usernames from many addresses leaves at most a window's worth of rows.
        let expired = (now - window).naive_utc();
        diesel::delete(
            login_failures::table
                .filter(login_failures::first_at.lt(expired))
                .filter(
                    login_failures::blocked_until
                        .is_null()
                        .or(login_failures::blocked_until.lt(now.naive_utc())),
                ),
        )
        .execute(conn)?;
        diesel::delete(login_failures::table.find(key)).execute(conn)?;
        diesel::insert_into(login_failures::table)
            .values((
                login_failures::key.eq(key),
                login_failures::failures.eq(failures),
                login_failures::first_at.eq(first_at),
                login_failures::blocked_until.eq(blocked_until.map(|t| t.naive_utc())),
            ))
            .execute(conn)?;
        Ok(blocked_until)
    })
}

pub(crate) fn succeeded(conn: &mut DbConnection, key: &str) -> Result<(), StoreError> {
    diesel::delete(login_failures::table.find(key)).execute(conn)?;
    Ok(())
}
