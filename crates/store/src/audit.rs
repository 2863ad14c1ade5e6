//! Audit log queries: append and read, nothing else.

use agentpkg_model::{AuditEvent, AuditQuery, NewAuditEvent, Page};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::schema::audit_events;
use crate::{DbConnection, StoreError};

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_events)]
struct EventRow {
    id: i64,
    at: NaiveDateTime,
    actor_id: Option<i64>,
    actor: Option<String>,
    token_name: Option<String>,
    action: String,
    package: Option<String>,
    package_id: Option<i64>,
    subject: Option<String>,
    address: Option<String>,
    request_id: Option<String>,
    detail: String,
    outcome: String,
}

impl TryFrom<EventRow> for AuditEvent {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Self, StoreError> {
        Ok(AuditEvent {
            action: r
                .action
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("audit event {}: action", r.id)))?,
            id: r.id,
            at: r.at.and_utc(),
            actor_id: r.actor_id,
            actor: r.actor,
            token_name: r.token_name,
            package: r.package,
            package_id: r.package_id,
            subject: r.subject,
            address: r.address,
            request_id: r.request_id,
            detail: r.detail,
            outcome: r
                .outcome
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("audit event {}: outcome", r.id)))?,
        })
    }
}

pub(crate) fn append(conn: &mut DbConnection, e: &NewAuditEvent) -> Result<(), StoreError> {
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::at.eq(Utc::now().naive_utc()),
            audit_events::actor_id.eq(e.actor_id),
            audit_events::actor.eq(&e.actor),
            audit_events::token_name.eq(&e.token_name),
            audit_events::action.eq(e.action.as_str()),
            audit_events::package.eq(&e.package),
            audit_events::package_id.eq(e.package_id),
            audit_events::subject.eq(&e.subject),
            audit_events::address.eq(&e.address),
            audit_events::request_id.eq(&e.request_id),
            audit_events::detail.eq(&e.detail),
            audit_events::outcome.eq(e.outcome.as_str()),
        ))
        .execute(conn)?;
    Ok(())
}

type Boxed<'a> = audit_events::BoxedQuery<'a, crate::connection::MultiBackend>;

fn filtered(q: &AuditQuery) -> Boxed<'_> {
    let mut query = audit_events::table.into_boxed();
    if let Some(actor) = &q.actor {
        query = query.filter(audit_events::actor.eq(actor));
    }
    if let Some(action) = q.action {
        query = query.filter(audit_events::action.eq(action.as_str()));
    }
    if let Some(outcome) = q.outcome {
        query = query.filter(audit_events::outcome.eq(outcome.as_str()));
    }
    if let Some(package) = &q.package {
        query = query.filter(audit_events::package.eq(package));
    }
    if let Some(since) = q.since {
        query = query.filter(audit_events::at.ge(since.naive_utc()));
    }
    if let Some(until) = q.until {
        query = query.filter(audit_events::at.lt(until.naive_utc()));
    }
    query
}

pub(crate) fn list(
    conn: &mut DbConnection,
    q: &AuditQuery,
) -> Result<Page<AuditEvent>, StoreError> {
    let total: i64 = filtered(q).count().get_result(conn)?;
    let rows: Vec<EventRow> = filtered(q)
        .order(audit_events::id.desc())
        .limit(i64::from(q.page.per_page))
        .offset(i64::try_from(q.page.offset()).unwrap_or(i64::MAX))
        .select(EventRow::as_select())
        .load(conn)?;
    Ok(Page {
        items: rows
            .into_iter()
            .map(AuditEvent::try_from)
            .collect::<Result<_, _>>()?,
        total: u64::try_from(total).unwrap_or(0),
        page: q.page.page,
        per_page: q.page.per_page,
    })
}
