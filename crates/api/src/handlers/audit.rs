//! Reading the audit log (admins). Nothing in the API changes or deletes an entry.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use agentpkg_model::{AuditAction, AuditEvent, AuditOutcome, AuditQuery, PageRequest};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ErrorBody;
use crate::{Admin, ApiError, ApiState};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Only events by this username.
    actor: Option<String>,
    /// Only events of this action.
    #[param(value_type = Option<AuditAction>)]
    action: Option<String>,
    /// Only events done (`done`) or refused by the gate (`refused`).
    #[param(value_type = Option<AuditOutcome>)]
    outcome: Option<String>,
    /// Only events about this package name.
    package: Option<String>,
    /// Only events at or after this time.
    since: Option<DateTime<Utc>>,
    /// Only events before this time.
    until: Option<DateTime<Utc>>,
    /// Events per page, 1 to 100 (default 50).
    per_page: Option<u32>,
    /// Page number, from 1.
    page: Option<u32>,
}

/// Read the audit log
///
/// Every change the API, the web interface and the fleet make (packages, owners, teams,
/// users, roles, passwords, tokens, keys, signatures, assignments, agents, retention
/// runs, sign-ins and sign-outs), and every refusal of one by the gate (`outcome`
/// `refused`: a role, a name scope, ownership), with refused uploads, failed logins and
/// refused agents: who (user and token), what, which package or user, when, from which
/// address, with the request id. Newest first; the total is in `X-Total-Count`. Needs the
/// admin role.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, description = "One page of events", body = Vec<AuditEvent>, headers(
            ("X-Total-Count" = u64, description = "Events matching the filters, on all pages"),
        )),
        (status = 400, description = "Invalid filter", body = ErrorBody),
    ),
)]
pub(crate) async fn list(
    admin: Admin,
    ctx: crate::RequestContext,
    state: web::Data<ApiState>,
    params: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let query = AuditQuery {
        actor: params.actor,
        action: params.action.as_deref().map(str::parse).transpose()?,
        outcome: params.outcome.as_deref().map(str::parse).transpose()?,
        package: params.package,
        since: params.since,
        until: params.until,
        page: PageRequest::new(params.page, params.per_page),
    };
    let page = state
        .audit
        .list_for(&query, &ctx.caller(&admin.principal.0))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((
            header::HeaderName::from_static("x-total-count"),
            page.total.to_string(),
        ))
        .json(page.items))
}
