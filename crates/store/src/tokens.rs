//! API token queries.

use agentpkg_model::{ApiToken, NamePattern, NameScope};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::schema::{api_tokens, users};
use crate::users::UserRow;
use crate::{DbConnection, NewToken, StoreError, UserState};

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_tokens)]
struct TokenRow {
    id: i64,
    user_id: i64,
    name: String,
    scope: String,
    packages: String,
    created_at: NaiveDateTime,
    expires_at: Option<NaiveDateTime>,
    last_used_at: Option<NaiveDateTime>,
}

impl TryFrom<TokenRow> for ApiToken {
    type Error = StoreError;

    fn try_from(row: TokenRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("token {}: {what}", row.id));
        let packages = if row.packages.is_empty() {
            NameScope::All
        } else {
            NameScope::Matching(
                row.packages
                    .lines()
                    .map(NamePattern::parse_stored)
                    .collect::<Result<_, _>>()
                    .map_err(|_| corrupt("packages"))?,
            )
        };
        Ok(ApiToken {
            id: row.id,
            user_id: row.user_id,
            scope: row.scope.parse().map_err(|_| corrupt("scope"))?,
            name: row.name,
            packages,
            created_at: row.created_at.and_utc(),
            expires_at: row.expires_at.map(|t| t.and_utc()),
            last_used_at: row.last_used_at.map(|t| t.and_utc()),
        })
    }
}

fn packages_text(scope: &NameScope) -> String {
    match scope {
        NameScope::All => String::new(),
        NameScope::Matching(patterns) => patterns
            .iter()
            .map(NamePattern::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

pub(crate) fn create(conn: &mut DbConnection, new: &NewToken) -> Result<ApiToken, StoreError> {
    conn.transaction(|conn| {
        diesel::insert_into(api_tokens::table)
            .values((
                api_tokens::user_id.eq(new.user_id),
                api_tokens::name.eq(&new.name),
                api_tokens::scope.eq(new.scope.as_str()),
                api_tokens::packages.eq(packages_text(&new.packages)),
                api_tokens::secret_hash.eq(&new.secret_hash),
                api_tokens::created_at.eq(Utc::now().naive_utc()),
                api_tokens::expires_at.eq(new.expires_at.map(|t| t.naive_utc())),
            ))
            .execute(conn)?;
        api_tokens::table
            .filter(api_tokens::secret_hash.eq(&new.secret_hash))
            .select(TokenRow::as_select())
            .first(conn)?
            .try_into()
    })
}

pub(crate) fn list(
    conn: &mut DbConnection,
    user_id: Option<i64>,
) -> Result<Vec<ApiToken>, StoreError> {
    let mut query = api_tokens::table.into_boxed();
    if let Some(user) = user_id {
        query = query.filter(api_tokens::user_id.eq(user));
    }
    query
        .order(api_tokens::id.asc())
        .select(TokenRow::as_select())
        .load(conn)?
        .into_iter()
        .map(ApiToken::try_from)
        .collect()
}

pub(crate) fn get(conn: &mut DbConnection, id: i64) -> Result<Option<ApiToken>, StoreError> {
    api_tokens::table
        .find(id)
        .select(TokenRow::as_select())
        .first(conn)
        .optional()?
        .map(ApiToken::try_from)
        .transpose()
}

pub(crate) fn delete(conn: &mut DbConnection, id: i64) -> Result<bool, StoreError> {
    Ok(diesel::delete(api_tokens::table.find(id)).execute(conn)? > 0)
}

pub(crate) fn by_secret_hash(
    conn: &mut DbConnection,
    hash: &str,
) -> Result<Option<(ApiToken, UserState)>, StoreError> {
    let found: Option<(TokenRow, UserRow)> = api_tokens::table
        .inner_join(users::table)
        .filter(api_tokens::secret_hash.eq(hash))
        .select((TokenRow::as_select(), UserRow::as_select()))
        .first(conn)
        .optional()?;
    found
        .map(|(token, user)| Ok((ApiToken::try_from(token)?, user.state()?)))
        .transpose()
}

pub(crate) fn touch(conn: &mut DbConnection, id: i64) -> Result<(), StoreError> {
    diesel::update(api_tokens::table.find(id))
        .set(api_tokens::last_used_at.eq(Utc::now().naive_utc()))
        .execute(conn)?;
    Ok(())
}
