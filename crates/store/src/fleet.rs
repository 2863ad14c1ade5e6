//! Agents of the fleet: one row each, its reported state as JSON.

use agentpkg_model::{Agent, AgentHealth, AgentPackageStatus, AgentUid, Page, PageRequest};
use chrono::NaiveDateTime;
use diesel::prelude::*;

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
}

fn corrupt(uid: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("agent {uid}: {what}"))
}

impl TryFrom<Row> for Agent {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        let uid = &r.instance_uid;
        Ok(Agent {
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

/// Inserts or replaces the agent's row.
pub(crate) fn save(conn: &mut DbConnection, agent: &Agent) -> Result<(), StoreError> {
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

pub(crate) fn list(conn: &mut DbConnection, page: &PageRequest) -> Result<Page<Agent>, StoreError> {
    let total: i64 = a::table.count().get_result(conn)?;
    let rows: Vec<Row> = a::table
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
