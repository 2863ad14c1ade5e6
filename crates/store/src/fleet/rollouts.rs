//! Progressive rollouts: the rollout row, its agents (one row each, with their phase), its
//! transitions, and the lease that lets one replica at a time evaluate them.
//!
//! A step is one transaction: the rollout's update finds the step it was read at, or
//! nothing is written — so two replicas that decide the same step take it once.

use agentpkg_model::{
    AgentUid, MemberPhase, NewAuditEvent, NewRollout, Rollout, RolloutMember, RolloutPlan,
    RolloutTransition, Version, WaveCounts,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::packages::{microseconds as naive, now};
use crate::schema::agent_packages as ap;
use crate::schema::agents as a;
use crate::schema::assignments as asg;
use crate::schema::rollout_agents as ra;
use crate::schema::rollout_transitions as rt;
use crate::schema::rollouts as r;
use crate::{DbConnection, RolloutStep, StoreError};

pub(crate) use crate::Candidate;

#[derive(Queryable, Selectable)]
#[diesel(table_name = r)]
struct Row {
    id: i64,
    assignment_id: i64,
    version: String,
    from_version: Option<String>,
    plan: String,
    state: String,
    cause: String,
    wave: i32,
    wave_started: bool,
    approved_wave: Option<i32>,
    step: i64,
    created_by: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl TryFrom<Row> for Rollout {
    type Error = StoreError;

    fn try_from(row: Row) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("rollout {}: {what}", row.id));
        let plan: RolloutPlan = serde_json::from_str(&row.plan).map_err(|_| corrupt("plan"))?;
        Ok(Rollout {
            id: row.id,
            assignment_id: row.assignment_id,
            version: Version::parse(&row.version).map_err(|_| corrupt("version"))?,
            from_version: row
                .from_version
                .as_deref()
                .map(Version::parse)
                .transpose()
                .map_err(|_| corrupt("from_version"))?,
            plan,
            state: row.state.parse().map_err(|_| corrupt("state"))?,
            cause: row.cause,
            wave: usize::try_from(row.wave).map_err(|_| corrupt("wave"))?,
            wave_started: row.wave_started,
            approved_wave: row
                .approved_wave
                .map(usize::try_from)
                .transpose()
                .map_err(|_| corrupt("approved_wave"))?,
            step: u64::try_from(row.step).map_err(|_| corrupt("step"))?,
            created_by: row.created_by,
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = ra)]
struct MemberRow {
    rollout_id: i64,
    instance_uid: String,
    wave: i32,
    previous_version: String,
    phase: String,
    attempts: i32,
    offered_at: NaiveDateTime,
    installed_at: Option<NaiveDateTime>,
    healthy_since: Option<NaiveDateTime>,
    last_report_at: Option<NaiveDateTime>,
    failure: Option<String>,
    failure_message: String,
    failed_at: Option<NaiveDateTime>,
    retry_at: Option<NaiveDateTime>,
    acknowledged: bool,
}

impl TryFrom<MemberRow> for RolloutMember {
    type Error = StoreError;

    fn try_from(m: MemberRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| {
            StoreError::Corrupt(format!(
                "rollout {} agent {}: {what}",
                m.rollout_id, m.instance_uid
            ))
        };
        Ok(RolloutMember {
            rollout_id: m.rollout_id,
            uid: AgentUid::parse(&m.instance_uid).map_err(|_| corrupt("instance_uid"))?,
            wave: usize::try_from(m.wave).map_err(|_| corrupt("wave"))?,
            previous_version: m.previous_version,
            phase: m.phase.parse().map_err(|_| corrupt("phase"))?,
            attempts: u32::try_from(m.attempts).map_err(|_| corrupt("attempts"))?,
            offered_at: m.offered_at.and_utc(),
            installed_at: m.installed_at.map(|t| t.and_utc()),
            healthy_since: m.healthy_since.map(|t| t.and_utc()),
            last_report_at: m.last_report_at.map(|t| t.and_utc()),
            failure: m.failure,
            failure_message: m.failure_message,
            failed_at: m.failed_at.map(|t| t.and_utc()),
            retry_at: m.retry_at.map(|t| t.and_utc()),
            acknowledged: m.acknowledged,
        })
    }
}

fn wave_i32(wave: usize) -> i32 {
    i32::try_from(wave).unwrap_or(i32::MAX)
}

pub(crate) fn create(
    conn: &mut DbConnection,
    new: &NewRollout,
    pin: Option<&str>,
    event: &NewAuditEvent,
) -> Result<Rollout, StoreError> {
    let at = now();
    let plan =
        serde_json::to_string(&new.plan).map_err(|e| StoreError::Corrupt(format!("plan: {e}")))?;
    crate::connection::write_transaction(conn, |conn| {
        diesel::insert_into(r::table)
            .values((
                r::assignment_id.eq(new.assignment_id),
                r::version.eq(new.version.to_string()),
                r::from_version.eq(new.from_version.as_ref().map(ToString::to_string)),
                r::plan.eq(&plan),
                r::state.eq(new.state.as_str()),
                r::cause.eq(&new.cause),
                r::step.eq(1),
                r::active.eq(new.state.is_active()),
                r::created_by.eq(&new.created_by),
                r::created_at.eq(at),
                r::updated_at.eq(at),
            ))
            .execute(conn)?;
        // NOTE: MultiConnection cannot map RETURNING: the newest row is ours, in this
        // transaction.
        let created: Rollout = r::table
            .order(r::id.desc())
            .select(Row::as_select())
            .first(conn)?
            .try_into()?;
        diesel::insert_into(rt::table)
            .values((
                rt::rollout_id.eq(created.id),
                rt::step.eq(1),
                rt::at.eq(at),
                rt::state.eq(new.state.as_str()),
                rt::wave.eq(0),
                rt::cause.eq(&new.cause),
                rt::actor.eq(Some(&new.created_by)),
            ))
            .execute(conn)?;
        let target = asg::table.find(new.assignment_id);
        diesel::update(target)
            .set((asg::rollout_id.eq(Some(created.id)), asg::updated_at.eq(at)))
            .execute(conn)?;
        if let Some(pin) = pin {
            diesel::update(target)
                .set(asg::version.eq(pin))
                .execute(conn)?;
        }
        let mut event = event.clone();
        event.subject = Some(format!("rollout {}", created.id));
        crate::audit::append(conn, &event)?;
        Ok(created)
    })
}

pub(crate) fn get(conn: &mut DbConnection, id: i64) -> Result<Option<Rollout>, StoreError> {
    r::table
        .find(id)
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(Rollout::try_from)
        .transpose()
}

pub(crate) fn of_assignment(
    conn: &mut DbConnection,
    assignment_id: i64,
) -> Result<Vec<Rollout>, StoreError> {
    r::table
        .filter(r::assignment_id.eq(assignment_id))
        .order(r::id.desc())
        .select(Row::as_select())
        .load(conn)?
        .into_iter()
        .map(Rollout::try_from)
        .collect()
}

pub(crate) fn active(conn: &mut DbConnection) -> Result<Vec<Rollout>, StoreError> {
    r::table
        .filter(r::active.eq(true))
        .order(r::id.asc())
        .select(Row::as_select())
        .load(conn)?
        .into_iter()
        .map(Rollout::try_from)
        .collect()
}

pub(crate) fn transitions(
    conn: &mut DbConnection,
    id: i64,
) -> Result<Vec<RolloutTransition>, StoreError> {
    let rows: Vec<(i64, NaiveDateTime, String, i32, String, Option<String>)> = rt::table
        .filter(rt::rollout_id.eq(id))
        .order(rt::step.asc())
        .select((rt::step, rt::at, rt::state, rt::wave, rt::cause, rt::actor))
        .load(conn)?;
    rows.into_iter()
        .map(|(step, at, state, wave, cause, actor)| {
            let corrupt = || StoreError::Corrupt(format!("rollout {id} step {step}"));
            Ok(RolloutTransition {
                step: u64::try_from(step).map_err(|_| corrupt())?,
                at: at.and_utc(),
                state: state.parse().map_err(|_| corrupt())?,
                wave: usize::try_from(wave).map_err(|_| corrupt())?,
                cause,
                actor,
            })
        })
        .collect()
}

/// Each wave's agents by phase (index = wave), in one grouped read (the baked ones counted
/// in the same pass): what the engine reads per tick, whatever the number of agents.
pub(crate) fn wave_counts(
    conn: &mut DbConnection,
    id: i64,
    baked_before: DateTime<Utc>,
    counted: &[&str],
) -> Result<(Vec<WaveCounts>, u64), StoreError> {
    use diesel::dsl::{case_when, count, count_star};
    let baked = ra::phase
        .eq(MemberPhase::Healthy.as_str())
        .and(ra::healthy_since.le(naive(baked_before)));
    let groups: Vec<(i32, String, Option<String>, bool, i64, i64)> = ra::table
        .filter(ra::rollout_id.eq(id))
        .group_by((ra::wave, ra::phase, ra::failure, ra::acknowledged))
        .select((
            ra::wave,
            ra::phase,
            ra::failure,
            ra::acknowledged,
            count_star(),
            count(case_when(baked, ra::wave)),
        ))
        .load(conn)?;
    let rows = groups.len() as u64;
    let mut waves: Vec<WaveCounts> = Vec::new();
    fn slot(
        waves: &mut Vec<WaveCounts>,
        id: i64,
        wave: i32,
    ) -> Result<&mut WaveCounts, StoreError> {
        let i = usize::try_from(wave)
            .map_err(|_| StoreError::Corrupt(format!("rollout {id}: wave {wave}")))?;
        if waves.len() <= i {
            waves.resize(i + 1, WaveCounts::default());
        }
        Ok(&mut waves[i])
    }
    for (wave, phase, failure, acknowledged, n, baked) in groups {
        let n = n as u64;
        let c = slot(&mut waves, id, wave)?;
        c.members += n;
        c.baked += baked as u64;
        let phase: MemberPhase = phase
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("rollout {id}: phase")))?;
        match phase {
            MemberPhase::Offered => c.offered += n,
            MemberPhase::Installed => c.installed += n,
            MemberPhase::Healthy => c.healthy += n,
            MemberPhase::Retrying => c.retrying += n,
            MemberPhase::Reverting => c.reverting += n,
            MemberPhase::Reverted => c.reverted += n,
            MemberPhase::Failed => {
                c.failed_all += n;
                let kind = failure.as_deref().unwrap_or("");
                match kind {
                    "install_failed" => c.install_failed += n,
                    "unhealthy_after_install" => c.unhealthy += n,
                    "no_report" => c.silent += n,
                    _ => {}
                }
                if !acknowledged && counted.contains(&kind) {
                    c.failed += n;
                }
            }
        }
    }
    Ok((waves, rows))
}

pub(crate) fn members(
    conn: &mut DbConnection,
    id: i64,
    phase: Option<MemberPhase>,
    limit: i64,
) -> Result<Vec<RolloutMember>, StoreError> {
    let mut query = ra::table
        .filter(ra::rollout_id.eq(id))
        .select(MemberRow::as_select())
        .order((ra::wave.asc(), ra::instance_uid.asc()))
        .limit(limit)
        .into_boxed();
    if let Some(phase) = phase {
        query = query.filter(ra::phase.eq(phase.as_str()));
    }
    query
        .load(conn)?
        .into_iter()
        .map(RolloutMember::try_from)
        .collect()
}

pub(crate) fn memberships(
    conn: &mut DbConnection,
    uid: &AgentUid,
    rollouts: &[i64],
) -> Result<Vec<RolloutMember>, StoreError> {
    ra::table
        .filter(ra::instance_uid.eq(uid.to_string()))
        .filter(ra::rollout_id.eq_any(rollouts))
        .select(MemberRow::as_select())
        .load(conn)?
        .into_iter()
        .map(RolloutMember::try_from)
        .collect()
}

/// Writes what an agent's report changed, unless the engine moved the agent since it was
/// read (its phase or attempts differ): then the next report decides again.
pub(crate) fn observe(
    conn: &mut DbConnection,
    was: &RolloutMember,
    now: &RolloutMember,
) -> Result<bool, StoreError> {
    let n = diesel::update(
        ra::table
            .find((was.rollout_id, was.uid.to_string()))
            .filter(ra::phase.eq(was.phase.as_str()))
            .filter(ra::attempts.eq(i32::try_from(was.attempts).unwrap_or(i32::MAX))),
    )
    .set((
        ra::phase.eq(now.phase.as_str()),
        ra::installed_at.eq(now.installed_at.map(naive)),
        ra::healthy_since.eq(now.healthy_since.map(naive)),
        ra::last_report_at.eq(now.last_report_at.map(naive)),
        ra::failure.eq(now.failure.as_deref()),
        ra::failure_message.eq(&now.failure_message),
        ra::failed_at.eq(now.failed_at.map(naive)),
        ra::retry_at.eq(now.retry_at.map(naive)),
        ra::acknowledged.eq(now.acknowledged),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

pub(crate) fn step(
    conn: &mut DbConnection,
    s: &RolloutStep,
) -> Result<Option<Rollout>, StoreError> {
    let at = naive(s.at);
    let wall = now();
    crate::connection::write_transaction(conn, |conn| {
        let next = i64::try_from(s.expected_step + 1).unwrap_or(i64::MAX);
        let taken = diesel::update(r::table.find(s.rollout_id).filter(r::step.eq(next - 1)))
            .set((
                r::state.eq(s.state.as_str()),
                r::cause.eq(&s.cause),
                r::wave.eq(wave_i32(s.wave)),
                r::wave_started.eq(s.wave_started),
                r::approved_wave.eq(s.approved_wave.map(wave_i32)),
                r::step.eq(next),
                r::active.eq(s.state.is_active()),
                r::updated_at.eq(wall),
            ))
            .execute(conn)?;
        if taken == 0 {
            return Ok(None);
        }
        diesel::insert_into(rt::table)
            .values((
                rt::rollout_id.eq(s.rollout_id),
                rt::step.eq(next),
                rt::at.eq(at),
                rt::state.eq(s.state.as_str()),
                rt::wave.eq(wave_i32(s.wave)),
                rt::cause.eq(&s.cause),
                rt::actor.eq(s.actor.as_deref()),
            ))
            .execute(conn)?;
        // 6 values a row: within SQLite's 32 766 and PostgreSQL's 65 535 parameters.
        for chunk in s.new_members.chunks(5000) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|(uid, previous)| {
                    (
                        ra::rollout_id.eq(s.rollout_id),
                        ra::instance_uid.eq(uid.to_string()),
                        ra::wave.eq(wave_i32(s.wave)),
                        ra::previous_version.eq(previous.clone()),
                        ra::phase.eq(MemberPhase::Offered.as_str()),
                        ra::offered_at.eq(at),
                    )
                })
                .collect();
            // NOTE: MultiConnection cannot batch an insert: each backend does it.
            let insert = diesel::insert_into(ra::table).values(rows);
            match conn {
                DbConnection::Pg(c) => insert.execute(c)?,
                DbConnection::Sqlite(c) => insert.execute(c)?,
            };
        }
        let members = ra::table.filter(ra::rollout_id.eq(s.rollout_id));
        if s.acknowledge_failures {
            diesel::update(members.filter(ra::phase.eq(MemberPhase::Failed.as_str())))
                .set(ra::acknowledged.eq(true))
                .execute(conn)?;
        }
        if s.revert_members {
            diesel::update(members.filter(ra::phase.ne_all([
                MemberPhase::Reverting.as_str(),
                MemberPhase::Reverted.as_str(),
            ])))
            .set((
                ra::phase.eq(MemberPhase::Reverting.as_str()),
                ra::healthy_since.eq(None::<NaiveDateTime>),
                ra::retry_at.eq(None::<NaiveDateTime>),
                ra::last_report_at.eq(Some(at)),
            ))
            .execute(conn)?;
        }
        if let Some((assignment, version)) = &s.complete_assignment {
            diesel::update(
                asg::table
                    .find(assignment)
                    .filter(asg::rollout_id.eq(s.rollout_id)),
            )
            .set((
                asg::version.eq(version.to_string()),
                asg::rollout_id.eq(None::<i64>),
                asg::updated_at.eq(wall),
            ))
            .execute(conn)?;
        }
        let mut event = s.event.clone();
        event.subject = Some(format!("rollout {}", s.rollout_id));
        crate::audit::append(conn, &event)?;
        get(conn, s.rollout_id)
    })
}

/// Agents that did not report the version installed within the time allowed after its
/// offer, or stopped reporting for that long after: failed, as silent.
pub(crate) fn mark_silent(
    conn: &mut DbConnection,
    id: i64,
    before: DateTime<Utc>,
    at: DateTime<Utc>,
    message: &str,
) -> Result<u64, StoreError> {
    let before = naive(before);
    let set = (
        ra::phase.eq(MemberPhase::Failed.as_str()),
        ra::failure.eq(Some("no_report")),
        ra::failure_message.eq(message),
        ra::failed_at.eq(Some(naive(at))),
        ra::healthy_since.eq(None::<NaiveDateTime>),
        ra::acknowledged.eq(false),
    );
    let members = ra::table.filter(ra::rollout_id.eq(id));
    let never = diesel::update(
        members
            .filter(ra::phase.eq(MemberPhase::Offered.as_str()))
            .filter(ra::offered_at.lt(before)),
    )
    .set(set)
    .execute(conn)?;
    let stopped = diesel::update(
        members
            .filter(ra::phase.eq_any([
                MemberPhase::Installed.as_str(),
                MemberPhase::Healthy.as_str(),
            ]))
            .filter(ra::last_report_at.lt(before)),
    )
    .set(set)
    .execute(conn)?;
    Ok((never + stopped) as u64)
}

/// Failed installs whose pause is over are offered again (one more attempt).
pub(crate) fn retry_due(
    conn: &mut DbConnection,
    id: i64,
    at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let at = naive(at);
    Ok(diesel::update(
        ra::table
            .filter(ra::rollout_id.eq(id))
            .filter(ra::phase.eq(MemberPhase::Retrying.as_str()))
            .filter(ra::retry_at.le(at)),
    )
    .set((
        ra::phase.eq(MemberPhase::Offered.as_str()),
        ra::attempts.eq(ra::attempts + 1),
        ra::retry_at.eq(None::<NaiveDateTime>),
        ra::offered_at.eq(at),
    ))
    .execute(conn)? as u64)
}

/// Agents by uid after `after`, at most `limit`, with the version each reports of
/// `offer_as`: what a wave chooses from.
pub(crate) fn candidates(
    conn: &mut DbConnection,
    id: i64,
    offer_as: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Candidate>, StoreError> {
    let mut query = a::table
        .left_join(
            ap::table.on(ap::instance_uid
                .eq(a::instance_uid)
                .and(ap::name.eq(offer_as))),
        )
        // Whether each is already the rollout's: its primary key, one probe per agent.
        .left_join(
            ra::table.on(ra::instance_uid
                .eq(a::instance_uid)
                .and(ra::rollout_id.eq(id))),
        )
        .select((
            a::instance_uid,
            a::identifying,
            a::non_identifying,
            ap::agent_has_version.nullable(),
            ra::wave.nullable(),
        ))
        .order(a::instance_uid.asc())
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(a::instance_uid.gt(after.to_owned()));
    }
    let rows: Vec<CandidateRow> = query.load(conn)?;
    Ok(rows
        .into_iter()
        .map(|row| Candidate {
            uid: row.uid,
            identifying: row.identifying,
            non_identifying: row.non_identifying,
            has_version: row.has_version,
            member: row.member_wave.is_some(),
        })
        .collect())
}

/// A candidate as read: its wave in the rollout, when it is already one of its agents.
#[derive(Queryable)]
struct CandidateRow {
    uid: String,
    identifying: String,
    non_identifying: String,
    has_version: Option<String>,
    member_wave: Option<i32>,
}
