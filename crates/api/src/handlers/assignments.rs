//! Assignments: which package each selected agent is offered over OpAMP.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use agentpkg_model::{
    Assignment, AssignmentPatch, InstallStatus, NewAssignment, OfferedSignature, PackageName,
    ValidationError, VersionChoice,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{Admin, ApiError, ApiState, RequestContext, Viewer};

/// An assignment.
#[derive(Serialize, ToSchema)]
pub(crate) struct AssignmentView {
    id: i64,
    package: String,
    /// `latest`, an exact version, or a requirement (`^0.115`).
    version: String,
    /// The name it is offered under: `""` is the top-level package, anything else an addon.
    offer_as: String,
    /// Attributes an agent must all have, with these values.
    selector: BTreeMap<String, String>,
    rollout_percent: u8,
    max_failure_ratio: f64,
    /// Versions offered as `v1.2.3`.
    v_prefix: bool,
    /// The signature its offers carry: `stored` (the package's own), `openpgp`,
    /// `sigstore-bundle`, `cosign-cert-sig` or `none`.
    signature: String,
    /// Why it is paused, or null.
    paused: Option<String>,
    /// Its latest progressive rollout, while that governs the agents it moved.
    rollout_id: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&Assignment> for AssignmentView {
    fn from(a: &Assignment) -> Self {
        Self {
            id: a.id,
            package: a.package.to_string(),
            version: a.version.to_string(),
            offer_as: a.offer_as.clone(),
            selector: a.selector.clone(),
            rollout_percent: a.rollout_percent,
            max_failure_ratio: a.max_failure_ratio,
            v_prefix: a.v_prefix,
            signature: a.signature.as_str().to_owned(),
            paused: a.paused.clone(),
            rollout_id: a.rollout_id,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

fn default_version() -> String {
    "latest".to_owned()
}

fn default_percent() -> u8 {
    100
}

fn default_ratio() -> f64 {
    0.2
}

/// A package to offer to the agents a selector picks.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAssignmentBody {
    #[schema(value_type = PackageName)]
    package: String,
    /// `latest` (the default), an exact version, or a requirement (`^0.115`).
    #[serde(default = "default_version")]
    version: String,
    /// `""` (the default): the top-level package; otherwise an addon's name.
    #[serde(default)]
    offer_as: String,
    /// Attributes (identifying or not) an agent must all have; none: every agent.
    #[serde(default)]
    selector: BTreeMap<String, String>,
    /// 0 to 100 (default 100).
    #[serde(default = "default_percent")]
    rollout_percent: u8,
    /// 0 to 1 (default 0.2).
    #[serde(default = "default_ratio")]
    max_failure_ratio: f64,
    /// Offer versions as `v1.2.3` (the Collector's supervisor expects it).
    #[serde(default)]
    v_prefix: bool,
    /// The signature the agents verify, which the offers carry: `stored` (the default:
    /// the package's own signature, whatever its format), `openpgp`, `sigstore-bundle`
    /// (the Collector's supervisor from v0.158), `cosign-cert-sig` (its older
    /// "certificate signature" form, made from a Sigstore bundle) or `none`. A package
    /// without that signature is not offered, and the agent's page says why.
    #[serde(default)]
    #[schema(example = "sigstore-bundle")]
    signature: Option<String>,
}

/// Assign a package to agents
///
/// Agents that accept packages and have every attribute of the selector are offered the
/// build of the package for their `os.type` and `host.arch`, in their complete desired
/// set. Needs the admin role.
#[utoipa::path(
    post,
    path = "/api/v1/assignments",
    tag = "fleet",
    request_body = NewAssignmentBody,
    responses(
        (status = 201, description = "The assignment", body = AssignmentView),
        (status = 400, description = "An invalid field", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn create(
    admin: Admin,
    ctx: RequestContext,
    state: web::Data<ApiState>,
    body: web::Json<NewAssignmentBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new = NewAssignment {
        package: PackageName::parse(&body.package)
            .map_err(|e| ValidationError::new("package", e.message))?,
        version: VersionChoice::parse(&body.version)?,
        offer_as: body.offer_as,
        selector: body.selector,
        rollout_percent: body.rollout_percent,
        max_failure_ratio: body.max_failure_ratio,
        v_prefix: body.v_prefix,
        signature: body
            .signature
            .as_deref()
            .map(OfferedSignature::parse)
            .transpose()?
            .unwrap_or_default(),
    };
    let created = state
        .fleet
        .assign(new, &ctx.caller(&admin.principal.0))
        .await?;
    Ok(HttpResponse::Created().json(AssignmentView::from(&created)))
}

/// List assignments
///
/// Oldest first; when two offer an agent the same name, the older wins. Only those of
/// packages within the caller's names. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/assignments",
    tag = "fleet",
    responses((status = 200, description = "Every assignment", body = Vec<AssignmentView>)),
)]
pub(crate) async fn list(
    viewer: Viewer,
    ctx: RequestContext,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let all = state
        .fleet
        .assignments_for(&ctx.caller(&viewer.principal.0))
        .await?;
    Ok(HttpResponse::Ok().json(all.iter().map(AssignmentView::from).collect::<Vec<_>>()))
}

/// Get an assignment
///
/// Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/assignments/{id}",
    tag = "fleet",
    params(("id" = i64, Path, description = "Assignment id")),
    responses(
        (status = 200, description = "The assignment", body = AssignmentView),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such assignment", body = ErrorBody),
    ),
)]
pub(crate) async fn get(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let found = state.fleet.assignment(*id).await?;
    Ok(HttpResponse::Ok().json(AssignmentView::from(&found)))
}

/// Changes to an assignment.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssignmentPatchBody {
    /// Another version (an older one rolls back).
    version: Option<String>,
    rollout_percent: Option<u8>,
    max_failure_ratio: Option<f64>,
    /// `true` pauses (no new agent is offered it), `false` resumes.
    paused: Option<bool>,
    /// Another signature format for the offers (as at creation). Agents download the
    /// package again: the offer's hash covers its signature.
    #[schema(example = "cosign-cert-sig")]
    signature: Option<String>,
}

/// Change an assignment
///
/// Resume or pause it, change its rollout percentage or failure ratio, or roll back to a
/// previous version. Needs the admin role.
#[utoipa::path(
    patch,
    path = "/api/v1/assignments/{id}",
    tag = "fleet",
    params(("id" = i64, Path, description = "Assignment id")),
    request_body = AssignmentPatchBody,
    responses(
        (status = 200, description = "The changed assignment", body = AssignmentView),
        (status = 400, description = "An invalid field", body = ErrorBody),
        (status = 404, description = "No such assignment", body = ErrorBody),
    ),
)]
pub(crate) async fn patch(
    admin: Admin,
    ctx: RequestContext,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
    body: web::Json<AssignmentPatchBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let patch = AssignmentPatch {
        version: body
            .version
            .as_deref()
            .map(VersionChoice::parse)
            .transpose()?,
        rollout_percent: body.rollout_percent,
        max_failure_ratio: body.max_failure_ratio,
        paused: body
            .paused
            .map(|p| p.then(|| format!("paused by {}", admin.principal.0.username))),
        signature: body
            .signature
            .as_deref()
            .map(OfferedSignature::parse)
            .transpose()?,
    };
    let changed = state
        .fleet
        .change_assignment(*id, patch, &ctx.caller(&admin.principal.0))
        .await?;
    Ok(HttpResponse::Ok().json(AssignmentView::from(&changed)))
}

/// Delete an assignment
///
/// Its agents are offered their desired set without it (and remove the package). Needs
/// the admin role.
#[utoipa::path(
    delete,
    path = "/api/v1/assignments/{id}",
    tag = "fleet",
    params(("id" = i64, Path, description = "Assignment id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such assignment", body = ErrorBody),
    ),
)]
pub(crate) async fn delete(
    admin: Admin,
    ctx: RequestContext,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state
        .fleet
        .unassign(*id, &ctx.caller(&admin.principal.0))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Agents with one offered version and status.
#[derive(Serialize, ToSchema)]
pub(crate) struct VersionStatusView {
    /// The version offered (as offered: with its `v` when the assignment adds one).
    version: String,
    status: InstallStatus,
    agents: u64,
}

/// A failed install.
#[derive(Serialize, ToSchema)]
pub(crate) struct FailureView {
    instance_uid: String,
    version: String,
    error_message: String,
}

/// Where a rollout stands.
#[derive(Serialize, ToSchema)]
pub(crate) struct RolloutView {
    assignment: AssignmentView,
    /// Agents by offered version and reported status.
    agents: Vec<VersionStatusView>,
    failures: Vec<FailureView>,
}

/// Where an assignment's rollout stands
///
/// The agents that reported a status for its package, by offered version and status, and
/// every failed install with its message; `assignment.paused` says when and why it paused
/// itself. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/assignments/{id}/status",
    tag = "fleet",
    params(("id" = i64, Path, description = "Assignment id")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such assignment", body = ErrorBody),
    ),
)]
pub(crate) async fn status(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let rollout = state.fleet.rollout_status(*id).await?;
    Ok(HttpResponse::Ok().json(RolloutView {
        assignment: AssignmentView::from(&rollout.assignment),
        agents: rollout
            .counts
            .into_iter()
            .map(|((version, status), agents)| VersionStatusView {
                version,
                status,
                agents,
            })
            .collect(),
        failures: rollout
            .failures
            .into_iter()
            .map(|(instance_uid, version, error_message)| FailureView {
                instance_uid,
                version,
                error_message,
            })
            .collect(),
    }))
}
