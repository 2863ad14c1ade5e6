//! The fleet's agents, as agents reported themselves over OpAMP: list, get, forget.

use actix_web::{HttpResponse, web};
use agentpkg_fleet::AgentFilter;
use agentpkg_model::{Agent, AgentUid, InstallStatus, PageRequest, ValidationError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use crate::{Admin, ApiError, ApiState, RequestContext, Viewer};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AgentsParams {
    /// Only agents with these attributes (identifying or not): `key=value`, several
    /// separated by commas.
    attributes: Option<String>,
    /// Only agents that last reported themselves healthy (`true`) or not (`false`).
    healthy: Option<bool>,
    /// Only agents connected (`true`) or that said they disconnect (`false`).
    connected: Option<bool>,
    /// Only agents that reported this status for some package.
    #[param(value_type = Option<InstallStatus>)]
    package_status: Option<String>,
    /// Agents per page, 1 to 100 (default 50; out of range: clamped).
    per_page: Option<u32>,
    /// Page number, from 1.
    page: Option<u32>,
}

/// An agent's reported health.
#[derive(Serialize, ToSchema)]
pub(crate) struct HealthView {
    healthy: bool,
    status: String,
    last_error: String,
}

/// One package status an agent reported.
#[derive(Serialize, ToSchema)]
pub(crate) struct PackageStatusView {
    name: String,
    agent_has_version: String,
    /// Hex.
    agent_has_hash: String,
    server_offered_version: String,
    /// Hex.
    server_offered_hash: String,
    status: InstallStatus,
    error_message: String,
    download_percent: Option<f64>,
}

/// An agent, as it last reported itself.
#[derive(Serialize, ToSchema)]
pub(crate) struct AgentView {
    /// The instance uid, 32 hex digits.
    instance_uid: String,
    sequence_num: u64,
    /// OpAMP `AgentCapabilities` bits.
    capabilities: u64,
    identifying_attributes: BTreeMap<String, String>,
    non_identifying_attributes: BTreeMap<String, String>,
    health: Option<HealthView>,
    package_statuses: Vec<PackageStatusView>,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    /// `false` after the agent said it disconnects.
    connected: bool,
    disconnects: u64,
    disconnected_at: Option<DateTime<Utc>>,
    /// The `all_packages_hash` last offered (hex), once any set was offered.
    offered_hash: Option<String>,
    /// Why assignments that select the agent offer it nothing (no `host.arch`, no build
    /// for its platform).
    offer_note: Option<String>,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        Self {
            instance_uid: a.uid.to_string(),
            sequence_num: a.sequence_num,
            capabilities: a.capabilities,
            identifying_attributes: a.identifying.clone(),
            non_identifying_attributes: a.non_identifying.clone(),
            health: a.health.as_ref().map(|h| HealthView {
                healthy: h.healthy,
                status: h.status.clone(),
                last_error: h.last_error.clone(),
            }),
            package_statuses: a
                .package_statuses
                .iter()
                .map(|s| PackageStatusView {
                    name: s.name.clone(),
                    agent_has_version: s.agent_has_version.clone(),
                    agent_has_hash: s.agent_has_hash.clone(),
                    server_offered_version: s.server_offered_version.clone(),
                    server_offered_hash: s.server_offered_hash.clone(),
                    status: s.status,
                    error_message: s.error_message.clone(),
                    download_percent: s.download_percent,
                })
                .collect(),
            first_seen: a.first_seen,
            last_seen: a.last_seen,
            connected: a.connected,
            disconnects: a.disconnects,
            disconnected_at: a.disconnected_at,
            offered_hash: a.offered_hash.clone(),
            offer_note: a.offer_note.clone(),
        }
    }
}

/// List agents
///
/// Agents that spoke OpAMP to any replica, most recently seen first, optionally only those
/// with some attributes, health, connection or package status; the total is in
/// `X-Total-Count`. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "fleet",
    params(AgentsParams),
    responses(
        (status = 200, description = "One page of agents", body = Vec<AgentView>, headers(
            ("X-Total-Count" = u64, description = "Agents on all pages"),
        )),
        (status = 400, description = "Invalid paging", body = ErrorBody),
    ),
)]
pub(crate) async fn list(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    params: web::Query<AgentsParams>,
) -> Result<HttpResponse, ApiError> {
    let page = PageRequest::new(params.page, params.per_page);
    let mut filter = AgentFilter {
        healthy: params.healthy,
        connected: params.connected,
        ..AgentFilter::default()
    };
    for pair in params.attributes.iter().flat_map(|a| a.split(',')) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            ValidationError::new("attributes", "each is key=value, separated by commas")
        })?;
        filter
            .attributes
            .push((key.trim().to_owned(), value.trim().to_owned()));
    }
    if let Some(status) = &params.package_status {
        filter.package_status = Some(status.parse()?);
    }

    let agents = state.fleet.agents(page, &filter).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("X-Total-Count", agents.total.to_string()))
        .json(agents.items.iter().map(AgentView::from).collect::<Vec<_>>()))
}

/// Forget an agent
///
/// Deletes what the registry knows of the agent and releases its binding to a credential:
/// its next message, under whichever credential sends it, registers it anew (the way to
/// move an agent to a new token). Audited. Needs the admin role.
#[utoipa::path(
    delete,
    path = "/api/v1/agents/{uid}",
    tag = "fleet",
    params(("uid" = String, Path, description = "Instance uid: 32 hex digits or a UUID")),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 400, description = "Not an instance uid", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub(crate) async fn forget(
    admin: Admin,
    ctx: RequestContext,
    state: web::Data<ApiState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uid = AgentUid::parse(&uid)?;
    state
        .fleet
        .forget(&uid, &ctx.caller(&admin.principal.0))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Get an agent
///
/// Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{uid}",
    tag = "fleet",
    params(("uid" = String, Path, description = "Instance uid: 32 hex digits or a UUID")),
    responses(
        (status = 200, description = "The agent", body = AgentView),
        (status = 400, description = "Not an instance uid", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub(crate) async fn get(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uid = AgentUid::parse(&uid)?;
    let agent = state.fleet.agent(&uid).await?;
    Ok(HttpResponse::Ok().json(AgentView::from(&agent)))
}
