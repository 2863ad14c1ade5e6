//! Agents: one row each, their reported state as JSON, and their package statuses one row
//! per package (what rollouts count).

use agentpkg_model::{
    Agent, AgentFilter, AgentHealth, AgentOwner, AgentPackageStatus, AgentUid, InstallStatus, Page,
    PageRequest,
};
use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::packages::now;
use crate::schema::agent_packages as ap;
use crate::schema::agents as a;
use crate::{DbConnection, StoreError};

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = a)]
#[diesel(treat_none_as_null = true)]
struct Row {
    instance_uid: String,
    sequence_num: i64,
    capabilities: i64,
    identifying: String,
    non_identifying: String,
    health: Option<String>,
    package_statuses: String,
    first_seen: NaiveDateTime,
    last_seen: NaiveDateTime,
    connected: bool,
    disconnects: i64,
    disconnected_at: Option<NaiveDateTime>,
    offered_hash: Option<String>,
    offer_note: Option<String>,
    owner: Option<String>,
    offered: String,
}

fn corrupt(uid: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("agent {uid}: {what}"))
}

impl TryFrom<Row> for Agent {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        let uid = &r.instance_uid;
        Ok(Agent {
            owner: r
                .owner
                .as_deref()
                .map(AgentOwner::parse)
                .transpose()
                .map_err(|_| corrupt(uid, "owner"))?,
            offered: serde_json::from_str(&r.offered).map_err(|_| corrupt(uid, "offered"))?,
            uid: AgentUid::parse(uid).map_err(|_| corrupt(uid, "instance_uid"))?,
            sequence_num: r.sequence_num as u64,
            capabilities: r.capabilities as u64,
            identifying: serde_json::from_str(&r.identifying)
                .map_err(|_| corrupt(uid, "identifying"))?,
            non_identifying: serde_json::from_str(&r.non_identifying)
                .map_err(|_| corrupt(uid, "non_identifying"))?,
            health: r
                .health
                .as_deref()
                .map(serde_json::from_str::<AgentHealth>)
                .transpose()
                .map_err(|_| corrupt(uid, "health"))?,
            package_statuses: serde_json::from_str::<Vec<AgentPackageStatus>>(&r.package_statuses)
                .map_err(|_| corrupt(uid, "package_statuses"))?,
            first_seen: r.first_seen.and_utc(),
            last_seen: r.last_seen.and_utc(),
            connected: r.connected,
            disconnects: r.disconnects.max(0) as u64,
            disconnected_at: r.disconnected_at.map(|t| t.and_utc()),
            offered_hash: r.offered_hash,
            offer_note: r.offer_note,
        })
    }
}

fn row(agent: &Agent) -> Result<Row, StoreError> {
    let json = |e: serde_json::Error| StoreError::Corrupt(format!("agent state: {e}"));
    // NOTE: sequence numbers and capabilities are u64 on the wire and BIGINT here: the
    // bits are kept as they are (a value past i64::MAX reads back the same).
    Ok(Row {
        instance_uid: agent.uid.to_string(),
        sequence_num: agent.sequence_num as i64,
        capabilities: agent.capabilities as i64,
        identifying: serde_json::to_string(&agent.identifying).map_err(json)?,
        non_identifying: serde_json::to_string(&agent.non_identifying).map_err(json)?,
        health: agent
            .health
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(json)?,
        package_statuses: serde_json::to_string(&agent.package_statuses).map_err(json)?,
        first_seen: agent.first_seen.naive_utc(),
        last_seen: agent.last_seen.naive_utc(),
        connected: agent.connected,
        disconnects: agent.disconnects as i64,
        disconnected_at: agent.disconnected_at.map(|t| t.naive_utc()),
        offered_hash: agent.offered_hash.clone(),
        offer_note: agent.offer_note.clone(),
        owner: agent.owner.map(|o| o.to_string()),
        offered: serde_json::to_string(&agent.offered).map_err(json)?,
    })
}

pub(crate) fn get(conn: &mut DbConnection, uid: &AgentUid) -> Result<Option<Agent>, StoreError> {
    a::table
        .find(uid.to_string())
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(Agent::try_from)
        .transpose()
}

/// Inserts or replaces the agent's row, and its package rows when `packages_changed`.
pub(crate) fn save(
    conn: &mut DbConnection,
    agent: &Agent,
    packages_changed: bool,
) -> Result<(), StoreError> {
    if !packages_changed {
        return save_row(conn, agent);
    }
    crate::connection::write_transaction(conn, |conn| {
        save_row(conn, agent)?;
        let uid = agent.uid.to_string();
        diesel::delete(ap::table.filter(ap::instance_uid.eq(&uid))).execute(conn)?;
        let at = now();
        for s in &agent.package_statuses {
            diesel::insert_into(ap::table)
                .values((
                    ap::instance_uid.eq(&uid),
                    ap::name.eq(text(&s.name)),
                    ap::offered_version.eq(text(&s.server_offered_version)),
                    ap::agent_has_version.eq(text(&s.agent_has_version)),
                    ap::status.eq(s.status.as_str()),
                    ap::error_message.eq(text(&s.error_message)),
                    ap::updated_at.eq(at),
                    ap::answers_offer.eq(s.answers(&agent.offered)),
                ))
                .execute(conn)?;
        }
        Ok(())
    })
}

/// An agent's string as a column holds it: PostgreSQL's text cannot hold NUL, which a
/// protobuf string may carry (JSON columns escape it).
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}").into()
    } else {
        s.into()
    }
}

fn save_row(conn: &mut DbConnection, agent: &Agent) -> Result<(), StoreError> {
    let row = row(agent)?;
    let updated = diesel::update(a::table.find(&row.instance_uid))
        .set(&row)
        .execute(conn)?;
    if updated == 0 {
        match diesel::insert_into(a::table).values(&row).execute(conn) {
            Ok(_) => {}
            // Two replicas saw its first message at once: the other row stands, this
            // one's state goes over it.
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => {
                diesel::update(a::table.find(&row.instance_uid))
                    .set(&row)
                    .execute(conn)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

type AgentQuery = a::BoxedQuery<'static, crate::connection::MultiBackend>;

/// Whether the text column `column` contains `needle`, byte for byte (LIKE would ignore
/// case on SQLite): `strpos` on PostgreSQL, `instr` on SQLite.
fn contains(pg: bool, column: &'static str, needle: String) -> AgentCondition {
    let function = if pg { "strpos" } else { "instr" };
    Box::new(
        diesel::dsl::sql::<diesel::sql_types::Bool>(&format!("{function}({column}, "))
            .bind::<diesel::sql_types::Text, _>(needle)
            .sql(") > 0"),
    )
}

type AgentCondition = Box<
    dyn BoxableExpression<
            a::table,
            crate::connection::MultiBackend,
            SqlType = diesel::sql_types::Bool,
        >,
>;

/// The agents `filter` passes, as a query. Attributes are JSON objects in their rows, as
/// serde_json writes them: `"key":"value"` (both escaped) appears in the text exactly when
/// the object has that key with that value, since a quote inside a key or value is
/// escaped and `":"` occurs only between a key and its value.
fn filtered(pg: bool, filter: &AgentFilter) -> AgentQuery {
    let mut query = a::table.into_boxed();
    for (key, value) in &filter.attributes {
        let pair = format!(
            "{}:{}",
            serde_json::Value::from(key.as_str()),
            serde_json::Value::from(value.as_str()),
        );
        query = query.filter(contains(pg, "identifying", pair.clone()).or(contains(
            pg,
            "non_identifying",
            pair,
        )));
    }
    if let Some(healthy) = filter.healthy {
        // serde_json writes the struct's fields in order: `healthy` first.
        query = query.filter(contains(pg, "health", format!("{{\"healthy\":{healthy},")));
    }
    if let Some(connected) = filter.connected {
        query = query.filter(a::connected.eq(connected));
    }
    if let Some(status) = &filter.package_status {
        query = query.filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>(
                "instance_uid IN (SELECT instance_uid FROM agent_packages WHERE status = ",
            )
            .bind::<diesel::sql_types::Text, _>(status.as_str())
            .sql(")"),
        );
    }
    query
}

pub(crate) fn list(
    conn: &mut DbConnection,
    page: &PageRequest,
    filter: &AgentFilter,
) -> Result<Page<Agent>, StoreError> {
    let pg = matches!(conn, DbConnection::Pg(_));
    let total: i64 = filtered(pg, filter).count().get_result(conn)?;
    let rows: Vec<Row> = filtered(pg, filter)
        .order((a::last_seen.desc(), a::instance_uid.asc()))
        .limit(i64::from(page.per_page))
        .offset(i64::try_from(page.offset()).unwrap_or(i64::MAX))
        .select(Row::as_select())
        .load(conn)?;
    Ok(Page {
        items: rows
            .into_iter()
            .map(Agent::try_from)
            .collect::<Result<_, _>>()?,
        total: u64::try_from(total).unwrap_or(0),
        page: page.page,
        per_page: page.per_page,
    })
}

/// How many agents pass `filter`.
pub(crate) fn count(conn: &mut DbConnection, filter: &AgentFilter) -> Result<u64, StoreError> {
    let pg = matches!(conn, DbConnection::Pg(_));
    let n: i64 = filtered(pg, filter).count().get_result(conn)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The versions agents report having, by name, most agents first.
pub(crate) fn versions(conn: &mut DbConnection) -> Result<Vec<(String, String, u64)>, StoreError> {
    let rows: Vec<(String, String, i64)> = ap::table
        .filter(ap::agent_has_version.ne(""))
        .group_by((ap::name, ap::agent_has_version))
        .select((ap::name, ap::agent_has_version, diesel::dsl::count_star()))
        .order(diesel::dsl::count_star().desc())
        .limit(100)
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(n, v, c)| (n, v, u64::try_from(c).unwrap_or(0)))
        .collect())
}

/// How many agents are bound to `owner`.
pub(crate) fn count_owned(conn: &mut DbConnection, owner: &AgentOwner) -> Result<u64, StoreError> {
    let n: i64 = a::table
        .filter(a::owner.eq(owner.to_string()))
        .count()
        .get_result(conn)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Forgets one agent (its package rows go with it); whether it was known.
pub(crate) fn forget(conn: &mut DbConnection, uid: &AgentUid) -> Result<bool, StoreError> {
    Ok(diesel::delete(a::table.find(uid.to_string())).execute(conn)? > 0)
}

/// Forgets the agents last seen before `before`; how many.
pub(crate) fn forget_silent(
    conn: &mut DbConnection,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<u64, StoreError> {
    let n = diesel::delete(a::table.filter(a::last_seen.lt(before.naive_utc()))).execute(conn)?;
    Ok(n as u64)
}

/// Agents the server offered `version` under `name` whose report names that offer, and
/// how many of them reported a failed install. A report about anything the server did not
/// offer that agent counts for nothing.
pub(crate) fn outcomes(
    conn: &mut DbConnection,
    name: &str,
    version: &str,
) -> Result<(u64, u64), StoreError> {
    let rows: Vec<String> = ap::table
        .filter(ap::name.eq(name))
        .filter(ap::offered_version.eq(version))
        .filter(ap::answers_offer.eq(true))
        .select(ap::status)
        .load(conn)?;
    let failed = rows
        .iter()
        .filter(|s| *s == InstallStatus::InstallFailed.as_str())
        .count();
    Ok((rows.len() as u64, failed as u64))
}

/// Every agent's status for the package `name`, in uid order.
pub(crate) fn statuses(
    conn: &mut DbConnection,
    name: &str,
) -> Result<Vec<crate::PackageStatusRow>, StoreError> {
    let rows: Vec<(String, String, String, String, String)> = ap::table
        .filter(ap::name.eq(name))
        .order(ap::instance_uid.asc())
        .select((
            ap::instance_uid,
            ap::offered_version,
            ap::agent_has_version,
            ap::status,
            ap::error_message,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(
            |(uid, offered_version, has_version, status, error_message)| {
                Ok(crate::PackageStatusRow {
                    status: status
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("agent {uid}: package status")))?,
                    uid,
                    offered_version,
                    has_version,
                    error_message,
                })
            },
        )
        .collect()
}

/// Moves sequence numbers and last-seen times forward, in uid order (two replicas flushing
/// at once never deadlock).
pub(crate) fn touch(
    conn: &mut DbConnection,
    seen: &[(AgentUid, u64, chrono::DateTime<chrono::Utc>)],
) -> Result<(), StoreError> {
    let mut sorted = seen.to_vec();
    sorted.sort_by_key(|(uid, ..)| *uid);
    crate::connection::write_transaction(conn, |conn| {
        for (uid, seq, at) in &sorted {
            diesel::update(
                a::table
                    .find(uid.to_string())
                    .filter(a::last_seen.lt(at.naive_utc())),
            )
            .set((
                a::sequence_num.eq(*seq as i64),
                a::last_seen.eq(at.naive_utc()),
            ))
            .execute(conn)?;
        }
        Ok(())
    })
}
