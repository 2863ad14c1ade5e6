//! Assignments: which package the agents a selector picks are offered.

use agentpkg_model::{
    Assignment, AssignmentPatch, NewAssignment, OfferedSignature, PackageName, VersionChoice,
};
use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::packages::now;
use crate::schema::assignments as asg;
use crate::{DbConnection, StoreError};

#[derive(Queryable, Selectable)]
#[diesel(table_name = asg)]
struct AssignmentRow {
    id: i64,
    package: String,
    version: String,
    offer_as: String,
    selector: String,
    rollout_percent: i32,
    max_failure_ratio: f64,
    v_prefix: bool,
    paused: Option<String>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    rollout_id: Option<i64>,
    signature: String,
}

impl TryFrom<AssignmentRow> for Assignment {
    type Error = StoreError;

    fn try_from(r: AssignmentRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("assignment {}: {what}", r.id));
        Ok(Assignment {
            id: r.id,
            package: PackageName::parse(&r.package).map_err(|_| corrupt("package"))?,
            version: VersionChoice::parse(&r.version).map_err(|_| corrupt("version"))?,
            offer_as: r.offer_as.clone(),
            selector: serde_json::from_str(&r.selector).map_err(|_| corrupt("selector"))?,
            rollout_percent: u8::try_from(r.rollout_percent).map_err(|_| corrupt("rollout"))?,
            max_failure_ratio: r.max_failure_ratio,
            v_prefix: r.v_prefix,
            signature: OfferedSignature::parse(&r.signature).map_err(|_| corrupt("signature"))?,
            paused: r.paused,
            rollout_id: r.rollout_id,
            created_at: r.created_at.and_utc(),
            updated_at: r.updated_at.and_utc(),
        })
    }
}

pub(crate) fn create_assignment(
    conn: &mut DbConnection,
    new: &NewAssignment,
) -> Result<Assignment, StoreError> {
    let at = now();
    let selector = serde_json::to_string(&new.selector)
        .map_err(|e| StoreError::Corrupt(format!("selector: {e}")))?;
    crate::connection::write_transaction(conn, |conn| {
        diesel::insert_into(asg::table)
            .values((
                asg::package.eq(new.package.as_str()),
                asg::version.eq(new.version.to_string()),
                asg::offer_as.eq(&new.offer_as),
                asg::selector.eq(&selector),
                asg::rollout_percent.eq(i32::from(new.rollout_percent)),
                asg::max_failure_ratio.eq(new.max_failure_ratio),
                asg::v_prefix.eq(new.v_prefix),
                asg::signature.eq(new.signature.as_str()),
                asg::created_at.eq(at),
                asg::updated_at.eq(at),
            ))
            .execute(conn)?;
        // NOTE: MultiConnection cannot map RETURNING: the newest row is ours, in this
        // transaction.
        asg::table
            .order(asg::id.desc())
            .select(AssignmentRow::as_select())
            .first(conn)?
            .try_into()
    })
}

pub(crate) fn assignments(conn: &mut DbConnection) -> Result<Vec<Assignment>, StoreError> {
    asg::table
        .order(asg::id.asc())
        .select(AssignmentRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Assignment::try_from)
        .collect()
}

pub(crate) fn assignment(
    conn: &mut DbConnection,
    id: i64,
) -> Result<Option<Assignment>, StoreError> {
    asg::table
        .find(id)
        .select(AssignmentRow::as_select())
        .first(conn)
        .optional()?
        .map(Assignment::try_from)
        .transpose()
}

pub(crate) fn update_assignment(
    conn: &mut DbConnection,
    id: i64,
    patch: &AssignmentPatch,
) -> Result<Option<Assignment>, StoreError> {
    crate::connection::write_transaction(conn, |conn| {
        let found = asg::table
            .find(id)
            .select(asg::id)
            .first::<i64>(conn)
            .optional()?;
        if found.is_none() {
            return Ok(None);
        }
        let target = asg::table.find(id);
        if let Some(version) = &patch.version {
            // A version chosen by hand ends the hold of the assignment's last rollout.
            diesel::update(target)
                .set((
                    asg::version.eq(version.to_string()),
                    asg::rollout_id.eq(None::<i64>),
                ))
                .execute(conn)?;
        }
        if let Some(percent) = patch.rollout_percent {
            diesel::update(target)
                .set(asg::rollout_percent.eq(i32::from(percent)))
                .execute(conn)?;
        }
        if let Some(ratio) = patch.max_failure_ratio {
            diesel::update(target)
                .set(asg::max_failure_ratio.eq(ratio))
                .execute(conn)?;
        }
        if let Some(paused) = &patch.paused {
            diesel::update(target)
                .set(asg::paused.eq(paused.as_deref()))
                .execute(conn)?;
        }
        if let Some(signature) = patch.signature {
            diesel::update(target)
                .set(asg::signature.eq(signature.as_str()))
                .execute(conn)?;
        }
        diesel::update(target)
            .set(asg::updated_at.eq(now()))
            .execute(conn)?;
        assignment(conn, id)
    })
}

pub(crate) fn delete_assignment(conn: &mut DbConnection, id: i64) -> Result<bool, StoreError> {
    Ok(diesel::delete(asg::table.find(id)).execute(conn)? > 0)
}
